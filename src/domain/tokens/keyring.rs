//! The keys of one moment: the newest signs, all of them verify, and the
//! JWK Set (RFC 7517) that publishes them.

use std::collections::HashMap;

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::keys::{ALGORITHM_NAME, SigningKey, usable_private_key};
use crate::domain::{error::Result, key_encryption::KeyEncryptionKey};

/// RFC 7638: SHA-256 over the required members in lexicographic order.
pub(super) fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

pub(super) struct Verifier {
    pub(super) key: DecodingKey,
}

/// The keys of one moment: the newest signs, all of them verify.
pub(super) struct KeyRing {
    /// Tells rings apart, so that what was verified with an older ring (whose
    /// keys may since have been retired) is not taken on trust.
    pub(super) generation: u64,
    pub(super) signer_kid: String,
    pub(super) signer: EncodingKey,
    pub(super) verifiers: HashMap<String, Verifier>,
    pub(super) jwks_json: String,
    /// One per key, newest first: secrets that every replica derives alike.
    pub(super) page_token_keys: Zeroizing<Vec<[u8; 32]>>,
}

#[derive(Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    crv: &'static str,
    x: String,
    kid: &'a str,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
}

#[derive(Serialize)]
struct JwkSet<'a> {
    keys: Vec<Jwk<'a>>,
}

impl KeyRing {
    /// `rows` newest first, as `store::keys::live` returns them.
    pub(super) fn new(
        rows: &[SigningKey],
        kek: Option<&KeyEncryptionKey>,
        generation: u64,
    ) -> Result<Self> {
        let newest = rows
            .first()
            .ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        let mut page_token_keys = Zeroizing::new(Vec::new());
        let mut signer = None;
        for row in rows {
            // A damaged row (a public key of the wrong length, a private
            // key that does not match it) stops the start here.
            let private_der = usable_private_key(kek, row)?;
            page_token_keys.push(derive_secret(&private_der, b"warden page token v1"));
            if signer.is_none() {
                signer = Some(EncodingKey::from_ed_der(&private_der));
            }
            let x = URL_SAFE_NO_PAD.encode(&row.public_key);
            let key = DecodingKey::from_ed_components(&x)
                .with_context(|| format!("public key {} is not Ed25519", row.kid))?;
            verifiers.insert(row.kid.clone(), Verifier { key });
            jwks.push(Jwk {
                kty: "OKP",
                crv: "Ed25519",
                x,
                kid: &row.kid,
                alg: ALGORITHM_NAME,
                use_: "sig",
            });
        }
        let jwks_json = serde_json::to_string(&JwkSet { keys: jwks }).context("JWKS")?;
        Ok(Self {
            generation,
            signer_kid: newest.kid.clone(),
            signer: signer.ok_or_else(|| anyhow::anyhow!("no signing key"))?,
            verifiers,
            jwks_json,
            page_token_keys,
        })
    }
}

/// A secret for another purpose, derived from a signing key (HMAC-SHA256
/// keyed with the private key, over a label), so replicas need no other
/// shared secret.
fn derive_secret(private_key: &[u8], label: &[u8]) -> [u8; 32] {
    // hmac 0.12 keeps the padded key in its state without wiping it; the
    // state lives only for this call.
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(private_key).unwrap_or_else(|_| unreachable!());
    mac.update(label);
    mac.finalize().into_bytes().into()
}

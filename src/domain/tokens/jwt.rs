//! Access tokens: EdDSA (Ed25519) JWTs with `typ: at+jwt` (RFC 9068):
//! issuing, and verifying with the key ring of the moment (remembering what
//! a signature vouched for, so that a token presented again is not verified
//! again).

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{
    keyring::KeyRing,
    keys::{KEY_RELOAD_INTERVAL, SigningKey, switch_within},
};
use crate::domain::{
    error::{Error, Result},
    key_encryption::KeyEncryptionKey,
};

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated on `exp` and `nbf` (API.md: at most 5 s).
pub const LEEWAY_SECONDS: i64 = 5;
/// Ours are about 400 bytes; anything far larger is not ours and is refused
/// before any parsing work.
pub(super) const MAX_TOKEN_BYTES: usize = 4096;

/// What warden puts in an access token. Roles and account status are
/// deliberately absent: warden reads them from the database on every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The organisation the session acts for; absent for none. Informative
    /// for local verifiers: warden itself reads the session's organisation
    /// and the membership from the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
}

/// An access token whose signature, issuer, audience and times hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// How many verified tokens are remembered. A token is about 400 bytes but
/// is remembered by its SHA-256, so this is about 2 MiB at most; at 15
/// minutes per token it covers some 18 new tokens a second before the
/// oldest are forgotten (and then only verified again).
const VERIFIED_CACHE_CAPACITY: usize = 16_384;

/// What the signature of a token vouched for, remembered so that a token
/// presented again (every call of a client carries the same one until it
/// expires) is not verified again: an Ed25519 verification is most of the
/// cost of a token check. Only what the token itself says is remembered;
/// the times are checked against `now` on every use, and the session and
/// the account are read from the database by the caller on every call, so
/// the cache never lets a revoked session or a demoted admin through.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vouched {
    token: VerifiedToken,
    not_before: i64,
    expires: i64,
    /// The key ring that verified it.
    generation: u64,
}

/// Issues and verifies access tokens.
pub struct TokenService {
    pub(super) kek: Option<KeyEncryptionKey>,
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) ttl: Duration,
    pub(super) reload_interval: Duration,
    /// `switch_within` of this replica, as it reports it.
    pub(super) switch_within: Duration,
    /// This process among the replicas that sign (`store::keys::report_replica`).
    pub(super) replica_id: Uuid,
    pub(super) validation: Validation,
    pub(super) ring: RwLock<Arc<KeyRing>>,
    /// Keyed by the SHA-256 of the whole token: a token that differs in any
    /// byte is another key, so nothing unverified is ever found here.
    pub(super) vouched: quick_cache::sync::Cache<[u8; 32], Vouched>,
    pub(super) signature_checks: AtomicU64,
}

impl TokenService {
    pub fn new(
        issuer: String,
        audience: String,
        ttl: Duration,
        keys: &[SigningKey],
        kek: Option<KeyEncryptionKey>,
    ) -> Result<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Times are checked against the caller's `now` below, not the
        // library's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let ring = RwLock::new(Arc::new(KeyRing::new(keys, kek.as_ref(), 0)?));
        Ok(Self {
            kek,
            issuer,
            audience,
            ttl,
            reload_interval: KEY_RELOAD_INTERVAL,
            switch_within: switch_within(KEY_RELOAD_INTERVAL, Duration::ZERO),
            replica_id: Uuid::new_v4(),
            validation,
            ring,
            vouched: quick_cache::sync::Cache::new(VERIFIED_CACHE_CAPACITY),
            signature_checks: AtomicU64::new(0),
        })
    }

    pub(super) fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn access_token_ttl(&self) -> Duration {
        self.ttl
    }

    /// A token of a session that acts for no organisation.
    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken> {
        self.issue_for(user_id, session_id, None, now)
    }

    /// A token of a session, with `org_id` when it acts for an organisation.
    pub fn issue_for(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        organization_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken> {
        let ring = self.ring();
        let ttl = TimeDelta::from_std(self.ttl).context("access token TTL")?;
        let expires_at = now + ttl;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(ring.signer_kid.clone());
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::new_v4().to_string(),
            org_id: organization_id.map(|id| id.to_string()),
        };
        let token = jsonwebtoken::encode(&header, &claims, &ring.signer).context("signing")?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Checks everything a token carries: algorithm pinned to EdDSA, `typ`,
    /// a known `kid`, the signature, `iss`, `aud`, `exp` and `nbf` (with
    /// `LEEWAY_SECONDS`). Session and account state are the caller's part.
    /// A token seen before with the same keys is not verified again; its
    /// times are checked all the same.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Error::TokenInvalid);
        }
        let ring = self.ring();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let vouched = match self.vouched.get(&digest) {
            Some(v) if v.generation == ring.generation => v,
            _ => {
                let v = self.verify_signature(&ring, token)?;
                self.vouched.insert(digest, v);
                v
            }
        };
        let now = now.timestamp();
        if now > vouched.expires.saturating_add(LEEWAY_SECONDS) {
            return Err(Error::TokenExpired);
        }
        if now.saturating_add(LEEWAY_SECONDS) < vouched.not_before {
            return Err(Error::TokenInvalid);
        }
        Ok(vouched.token)
    }

    /// The signature and every claim that does not depend on the time.
    fn verify_signature(&self, ring: &KeyRing, token: &str) -> Result<Vouched> {
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::TokenInvalid)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
                || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if header.alg != Algorithm::EdDSA || !typ_ok {
            return Err(Error::TokenInvalid);
        }
        let verifier = header
            .kid
            .as_deref()
            .and_then(|kid| ring.verifiers.get(kid))
            .ok_or(Error::TokenInvalid)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &self.validation)
            .map_err(|_| Error::TokenInvalid)?
            .claims;
        let user_id = Uuid::try_parse(&claims.sub).map_err(|_| Error::TokenInvalid)?;
        let session_id = Uuid::try_parse(&claims.sid).map_err(|_| Error::TokenInvalid)?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or(Error::TokenInvalid)?;
        Ok(Vouched {
            token: VerifiedToken {
                user_id,
                session_id,
                expires_at,
            },
            not_before: claims.nbf,
            expires: claims.exp,
            generation: ring.generation,
        })
    }

    /// How many tokens had their signature checked since start (the rest
    /// were remembered).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// Keys for page tokens: the first seals, any opens.
    pub fn page_token_keys(&self) -> Zeroizing<Vec<[u8; 32]>> {
        self.ring().page_token_keys.clone()
    }

    /// The public keys as an RFC 7517 JWK Set.
    pub fn jwks_json(&self) -> String {
        self.ring().jwks_json.clone()
    }
}

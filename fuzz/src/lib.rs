//! What the fuzz targets share: fixed signing keys (so that a crash found
//! once replays the same way), a token service built from them, and the
//! fuzzer's notion of "now".

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey, pkcs8::EncodePrivateKey as _};
use warden::domain::tokens::{self, TokenService};

pub const ISSUER: &str = "warden";
pub const AUDIENCE: &str = "warden";
pub const TTL_SECONDS: i64 = 900;

/// 2026-11-22T12:00:00Z: tokens of the harness are issued then.
pub fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_348_800, 0).expect("a valid time")
}

/// Which key signs a token the harness makes.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The newest key of the service: it signs what the service issues.
    Current,
    /// An older key the service still verifies with.
    Previous,
    /// A key the service has never seen.
    Foreign,
}

pub struct Key {
    pub kid: &'static str,
    pub signing: SigningKey,
}

impl Key {
    fn new(kid: &'static str, seed: u8) -> Self {
        Self {
            kid,
            signing: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    pub fn verifying(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    fn row(&self, created_at: DateTime<Utc>) -> tokens::SigningKey {
        tokens::SigningKey {
            kid: self.kid.to_owned(),
            algorithm: "EdDSA".to_owned(),
            private_key: self
                .signing
                .to_pkcs8_der()
                .expect("PKCS#8 encoding")
                .as_bytes()
                .to_vec(),
            public_key: self.verifying().to_bytes().to_vec(),
            created_at,
            retired_at: None,
            retire_after: None,
        }
    }
}

pub static CURRENT: LazyLock<Key> = LazyLock::new(|| Key::new("fuzz-current", 1));
pub static PREVIOUS: LazyLock<Key> = LazyLock::new(|| Key::new("fuzz-previous", 2));
pub static FOREIGN: LazyLock<Key> = LazyLock::new(|| Key::new("fuzz-foreign", 3));

impl Signer {
    pub fn key(self) -> &'static Key {
        match self {
            Signer::Current => &CURRENT,
            Signer::Previous => &PREVIOUS,
            Signer::Foreign => &FOREIGN,
        }
    }
}

/// The key the service would verify a token with `kid` by, if any.
pub fn known_key(kid: &str) -> Option<&'static Key> {
    [&*CURRENT, &*PREVIOUS].into_iter().find(|k| k.kid == kid)
}

/// One service for the whole run, as in the server: whatever state it keeps
/// between calls (a cache of verified tokens, say) is exercised too.
pub static SERVICE: LazyLock<TokenService> = LazyLock::new(|| {
    let rows = [
        CURRENT.row(base_time() - TimeDelta::hours(1)),
        PREVIOUS.row(base_time() - TimeDelta::hours(2)),
    ];
    TokenService::new(
        ISSUER.to_owned(),
        AUDIENCE.to_owned(),
        std::time::Duration::from_secs(TTL_SECONDS as u64),
        &rows,
        None,
    )
    .expect("a token service")
});

/// A moment to verify at: near the harness's tokens, or anywhere at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Now {
    /// Seconds after `base_time()`.
    Near(i32),
    /// Seconds since the epoch (out-of-range values fall back to the base).
    Anywhere(i64),
}

impl Now {
    pub fn at(self) -> DateTime<Utc> {
        match self {
            Now::Near(offset) => base_time() + TimeDelta::seconds(offset.into()),
            Now::Anywhere(secs) => DateTime::from_timestamp(secs, 0).unwrap_or_else(base_time),
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

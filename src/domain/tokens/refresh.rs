//! Refresh tokens: 256 random bits, stored only as a SHA-256 hash.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::domain::error::Result;

/// A refresh token as handed to the client, and the hash that is stored.
pub struct RefreshToken {
    pub token: SecretString,
    pub hash: Vec<u8>,
}

impl RefreshToken {
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash_refresh_token(&token);
        Ok(Self {
            token: SecretString::from(token),
            hash,
        })
    }
}

/// SHA-256 is enough here (no salt, no argon2): the token has 256 bits of
/// entropy, so the hash cannot be reversed by guessing.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

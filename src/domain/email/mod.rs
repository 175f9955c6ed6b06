//! Mail (API.md, "Email: verification, password reset, invitations"): the
//! one-time tokens, the mails that carry them or tell of a change, and the
//! sender that drains the outbox.
//!
//! Every mail goes through the outbox (`store::mail_outbox`): written in the
//! same transaction as the token it carries, delivered by `sender` on
//! whichever replica claims it first. The organisations' CreateInvitation
//! queues its mail the same way: `EmailSettings::invitation_mail` composes
//! it, and `store::mail_outbox::queue` writes it in the invitation's
//! transaction.

pub mod messages;
pub mod sender;

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::{
    error::Result,
    types::{EmailTokenPurpose, EmailTokenRecord},
};

/// The link templates of the mails that carry a token (`{token}` in each
/// is replaced); `None`: the mail carries the bare token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkTemplates {
    pub verify_email: Option<String>,
    pub reset_password: Option<String>,
    pub invitation: Option<String>,
}

/// What the mail flows run with, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// `WARDEN_SMTP_URL` is set: warden sends mail. Unset, no mail row is
    /// ever written (IssueEmailToken still works).
    pub mail_enabled: bool,
    pub links: LinkTemplates,
    pub verification_ttl: Duration,
    pub reset_ttl: Duration,
    /// At most one mail of each kind (verification, reset) per account per
    /// this time.
    pub cooldown: Duration,
    /// `WARDEN_REQUIRE_VERIFIED_EMAIL`: Login needs a verified email.
    pub require_verified: bool,
}

impl Default for EmailSettings {
    /// The contract's defaults, without mail.
    fn default() -> Self {
        Self {
            mail_enabled: false,
            links: LinkTemplates::default(),
            verification_ttl: Duration::from_secs(24 * 3600),
            reset_ttl: Duration::from_secs(3600),
            cooldown: Duration::from_secs(60),
            require_verified: false,
        }
    }
}

impl EmailSettings {
    pub fn ttl(&self, purpose: EmailTokenPurpose) -> Duration {
        match purpose {
            EmailTokenPurpose::VerifyEmail => self.verification_ttl,
            EmailTokenPurpose::ResetPassword => self.reset_ttl,
        }
    }
}

/// A new one-time token: what goes to the user, and its stored record.
pub struct NewEmailToken {
    pub token: SecretString,
    pub record: EmailTokenRecord,
}

impl std::fmt::Debug for NewEmailToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewEmailToken([redacted])")
    }
}

impl NewEmailToken {
    /// 256 random bits, URL-safe base64 (so it goes into a link as it is),
    /// stored only as SHA-256, bound to `purpose`, the user and `email`.
    pub fn generate(
        purpose: EmailTokenPurpose,
        user_id: uuid::Uuid,
        email: &str,
        mailed: bool,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let ttl = TimeDelta::from_std(ttl).map_err(|_| anyhow::anyhow!("token TTL too long"))?;
        Ok(Self {
            record: EmailTokenRecord {
                token_hash: hash_email_token(&token),
                purpose,
                user_id,
                email: email.to_owned(),
                mailed,
                created_at: now,
                expires_at: now + ttl,
                used_at: None,
            },
            token: SecretString::from(token),
        })
    }
}

/// SHA-256 without salt is enough: the token has 256 bits of entropy, so
/// the hash cannot be reversed by guessing.
pub fn hash_email_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn tokens_are_256_bits_of_url_safe_base64_stored_as_sha256() {
        let now = Utc::now();
        let a = NewEmailToken::generate(
            EmailTokenPurpose::VerifyEmail,
            uuid::Uuid::nil(),
            "a@example.com",
            true,
            Duration::from_secs(60),
            now,
        )
        .unwrap();
        let b = NewEmailToken::generate(
            EmailTokenPurpose::VerifyEmail,
            uuid::Uuid::nil(),
            "a@example.com",
            true,
            Duration::from_secs(60),
            now,
        )
        .unwrap();
        let text = a.token.expose_secret();
        assert_eq!(URL_SAFE_NO_PAD.decode(text).unwrap().len(), 32);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(text, b.token.expose_secret());
        assert_eq!(
            a.record.token_hash,
            Sha256::digest(text.as_bytes()).to_vec()
        );
        assert_eq!(a.record.expires_at, now + TimeDelta::seconds(60));
        assert!(!format!("{a:?}").contains(text));
    }
}

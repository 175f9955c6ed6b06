//! Login, and the per-call check of a bearer token.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::Accounts;
use crate::{
    domain::{
        error::{Error, FieldViolation, Result},
        input::{Device, Email},
        rules::sessions::session_expiry,
        tokens::{RefreshToken, VerifiedToken},
        types::{
            Account, ClientInfo, Principal, RefreshRecord, Session, TokenPair, User, UserStatus,
        },
    },
    store::{sessions, users},
};

const USER_AGENT_MAX_CHARS: usize = 512;

pub struct LoginAttempt {
    pub email: String,
    pub password: SecretString,
    /// The raw device fields (id, name, type), if the client sent any.
    pub device: Option<(String, String, String)>,
    pub client: ClientInfo,
}

pub struct LoginOutcome {
    pub tokens: TokenPair,
    pub user: User,
    pub session_id: Uuid,
}

impl Accounts {
    /// Only approved accounts get tokens. An unknown email and a wrong
    /// password take the same path, with the same argon2 work, to the same
    /// error; the account's status is revealed only to someone who knows
    /// its password.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, attempt: LoginAttempt, now: DateTime<Utc>) -> Result<LoginOutcome> {
        let mut violations = Vec::new();
        if attempt.email.trim().is_empty() {
            violations.push(FieldViolation::new("email", "must not be empty"));
        }
        if attempt.password.expose_secret().is_empty() {
            violations.push(FieldViolation::new("password", "must not be empty"));
        }
        let device = match &attempt.device {
            Some((id, name, kind)) => Device::parse(id, name, kind).unwrap_or_else(|v| {
                violations.extend(v);
                Device::default()
            }),
            None => Device::default(),
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }

        // An overloaded server refuses before it reads the database.
        let place = self.hasher.queue()?;
        // The attempt takes its place in the email's failure count before
        // any hashing: locked out, right password or not, it ends here.
        let lockout = self.begin_attempt(&attempt.email, now).await?;
        // An address that could never have been registered simply has no
        // account.
        let account = match Email::parse("email", &attempt.email) {
            Ok(email) => users::find_by_email(&self.db, email.as_str()).await?,
            Err(_) => None,
        };
        let stored_hash = account.as_ref().map(|a| a.password_hash.0.clone());
        let matched = self
            .hasher
            .verify_queued(Some(place), &attempt.password, stored_hash.as_deref())
            .await?;
        // A right password is a success even if the login is refused below
        // (pending, disabled): the streak ends.
        self.settle_attempt(lockout, matched).await?;
        let account = match account {
            Some(account) if matched => account,
            _ => return Err(Error::InvalidCredentials),
        };
        self.rehash_if_outdated(&account, &attempt.password).await;
        match account.user.status {
            UserStatus::Approved => {}
            UserStatus::Pending => return Err(Error::AccountPending),
            UserStatus::Disabled => return Err(Error::AccountDisabled),
        }
        if self.email.require_verified && !account.user.email_verified {
            return Err(Error::EmailNotVerified);
        }

        let refresh = RefreshToken::generate()?;
        let expires_at = session_expiry(now, now, self.refresh_ttl, self.session_max_lifetime);
        let session = Session {
            id: Uuid::now_v7(),
            user_id: account.user.id,
            device,
            user_agent: attempt
                .client
                .user_agent
                .chars()
                .take(USER_AGENT_MAX_CHARS)
                .collect(),
            ip_address: attempt.client.ip_address,
            created_at: now,
            last_used_at: now,
            expires_at,
            revoked_at: None,
        };
        let token = RefreshRecord {
            token_hash: refresh.hash,
            session_id: session.id,
            created_at: now,
            expires_at,
            rotated_at: None,
        };
        sessions::insert_with_refresh_token(&self.db, &session, &token).await?;
        let tokens =
            self.token_pair(account.user.id, session.id, refresh.token, expires_at, now)?;
        tracing::info!(user_id = %account.user.id, session_id = %session.id, "login");
        Ok(LoginOutcome {
            tokens,
            user: account.user,
            session_id: session.id,
        })
    }

    /// When the argon2 parameters changed since this hash was made, store a
    /// hash with the current ones, now that the password is at hand. A
    /// failure here must not fail the login: it is logged and retried at the
    /// next one.
    async fn rehash_if_outdated(&self, account: &Account, password: &SecretString) {
        if !self.hasher.needs_rehash(&account.password_hash.0) {
            return;
        }
        let id = account.user.id;
        let result = async {
            let hash = crate::domain::types::PasswordHash(self.hasher.rehash(password).await?);
            users::set_password_hash(&self.db, id, &hash, None).await?;
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(user_id = %id, "password re-hashed with the current parameters")
            }
            Err(e) => tracing::warn!(user_id = %id, error = %e, "re-hashing failed"),
        }
    }

    /// A fresh access token for the session, with the refresh token that
    /// goes with it.
    pub(super) fn token_pair(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        refresh_token: SecretString,
        refresh_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<TokenPair> {
        let access = self.tokens.issue(user_id, session_id, now)?;
        Ok(TokenPair {
            access_token: SecretString::from(access.token),
            refresh_token,
            expires_in: self.tokens.access_token_ttl(),
            refresh_expires_at,
        })
    }

    /// The database half of a bearer check, for a token whose signature and
    /// claims already hold: the session must exist, be live and belong to the
    /// token's user, and that user must be approved. Read on every call, so a
    /// revocation or a disabled account takes effect at once.
    pub async fn authorize(&self, token: &VerifiedToken, now: DateTime<Utc>) -> Result<Principal> {
        let found = self
            .bearer_lookups
            .find(token.session_id)
            .await?
            .ok_or(Error::SessionRevoked)?;
        if found.user.id != token.user_id {
            return Err(Error::TokenInvalid);
        }
        if found.revoked_at.is_some()
            || found.expires_at <= now
            || found.user.status != UserStatus::Approved
        {
            return Err(Error::SessionRevoked);
        }
        Ok(Principal {
            session_id: found.session_id,
            user: found.user,
            token: *token,
        })
    }

    /// ValidateToken: `None` for any token that is not good now. Only a
    /// failure of warden itself (say, the database) is an error.
    pub async fn introspect(&self, token: &str, now: DateTime<Utc>) -> Result<Option<Principal>> {
        let verified = match self.tokens.verify(token, now) {
            Ok(verified) => verified,
            Err(_) => return Ok(None),
        };
        match self.authorize(&verified, now).await {
            Ok(principal) => Ok(Some(principal)),
            Err(
                e @ (Error::DatabaseUnavailable { .. }
                | Error::Overloaded { .. }
                | Error::Conflict(_)
                | Error::Unexpected(_)),
            ) => Err(e),
            Err(_) => Ok(None),
        }
    }
}

//! Login, and the per-call check of a bearer token.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::Accounts;
use crate::{
    domain::{
        error::{Error, FieldViolation, Result},
        input::{Device, Email, parse_id},
        rules::{orgs::login_organization, sessions::session_expiry},
        tokens::{RefreshToken, VerifiedToken},
        types::{
            Account, ClientInfo, OrgMembership, Principal, RefreshRecord, Session, TokenPair, User,
            UserStatus,
        },
    },
    store::{orgs, sessions, users},
};

const USER_AGENT_MAX_CHARS: usize = 512;

pub struct LoginAttempt {
    pub email: String,
    pub password: SecretString,
    /// The raw device fields (id, name, type), if the client sent any.
    pub device: Option<(String, String, String)>,
    pub client: ClientInfo,
    /// The organisation to act for, as sent; `None` when absent.
    pub organization_id: Option<String>,
}

pub struct LoginOutcome {
    pub tokens: TokenPair,
    pub user: User,
    pub session_id: Uuid,
    /// The organisation the session acts for, with the user's place in it.
    pub membership: Option<OrgMembership>,
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
        let requested_org = match attempt
            .organization_id
            .as_deref()
            .map(|raw| parse_id("organization_id", raw))
        {
            Some(Ok(id)) => Some(id),
            Some(Err(v)) => {
                violations.push(v);
                None
            }
            None => None,
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
        // Only to someone who knows the password: which organisations exist
        // for this account.
        let memberships = orgs::memberships_of_user(&self.db, account.user.id).await?;
        let ids: Vec<Uuid> = memberships.iter().map(|m| m.organization.id).collect();
        let organization_id = login_organization(requested_org, &ids)?;
        let membership = memberships
            .into_iter()
            .find(|m| Some(m.organization.id) == organization_id);

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
            organization_id,
        };
        let token = RefreshRecord {
            token_hash: refresh.hash,
            session_id: session.id,
            created_at: now,
            expires_at,
            rotated_at: None,
        };
        sessions::insert_with_refresh_token(&self.db, &session, &token).await?;
        let tokens = self.token_pair(
            account.user.id,
            session.id,
            organization_id,
            refresh.token,
            expires_at,
            now,
        )?;
        tracing::info!(user_id = %account.user.id, session_id = %session.id, "login");
        Ok(LoginOutcome {
            tokens,
            user: account.user,
            session_id: session.id,
            membership,
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
    pub(crate) fn token_pair(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        organization_id: Option<Uuid>,
        refresh_token: SecretString,
        refresh_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<TokenPair> {
        let access = self
            .tokens
            .issue_for(user_id, session_id, organization_id, now)?;
        Ok(TokenPair {
            access_token: SecretString::from(access.token),
            refresh_token,
            expires_in: self.tokens.access_token_ttl(),
            refresh_expires_at,
        })
    }

    /// The database half of a bearer check, for a token whose signature and
    /// claims already hold: the session must exist, be live and belong to the
    /// token's user, and that user must be approved; a session that acts for
    /// an organisation needs the user's membership of it (read in the same
    /// query). Read on every call, so a revocation, a disabled account or a
    /// removal from the organisation takes effect at once.
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
            || (found.organization_id.is_some() && found.membership.is_none())
        {
            return Err(Error::SessionRevoked);
        }
        Ok(Principal {
            session_id: found.session_id,
            user: found.user,
            token: *token,
            organization: found.membership,
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

//! Registration, login and the per-call check of a bearer token.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{DatabaseConnection, DbErr, SqlErr};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    ClientInfo, User, UserStatus,
    input::{Device, DisplayName, Email},
    lockout::LockoutPolicy,
    password::{Hasher, PasswordPolicy},
    sessions::session_expiry,
    tokens::{RefreshToken, TokenService, VerifiedToken},
};
use crate::{
    error::{Error, FieldViolation, Result},
    store::{
        self,
        bearer_lookups::BearerLookups,
        entities::{refresh_token, session, user},
        sessions, users,
    },
};

const USER_AGENT_MAX_CHARS: usize = 512;

pub struct NewAccount {
    pub email: String,
    pub password: SecretString,
    pub display_name: String,
}

pub struct LoginAttempt {
    pub email: String,
    pub password: SecretString,
    /// The raw device fields (id, name, type), if the client sent any.
    pub device: Option<(String, String, String)>,
    pub client: ClientInfo,
}

pub struct TokenPair {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub expires_in: Duration,
    pub refresh_expires_at: DateTime<Utc>,
}

pub struct LoginOutcome {
    pub tokens: TokenPair,
    pub user: User,
    pub session_id: Uuid,
}

/// The caller of a bearer RPC after every check: token, session, account.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub session_id: Uuid,
    pub token: VerifiedToken,
}

/// The rules accounts live by, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct AccountSettings {
    pub policy: PasswordPolicy,
    pub refresh_ttl: Duration,
    /// `WARDEN_SESSION_MAX_LIFETIME`: no session lasts longer from login.
    pub session_max_lifetime: Duration,
    pub failure_limit: u32,
    pub lockout: Duration,
    /// `WARDEN_FIRST_USER_ADMIN`.
    pub first_user_admin: bool,
}

/// Accounts, sessions and tokens: the operations of the `Auth` and
/// `UserAdmin` services, spread over this module, `sessions.rs`,
/// `profile.rs`, `lockout.rs` and `admin.rs`.
pub struct Accounts {
    pub(super) db: DatabaseConnection,
    bearer_lookups: BearerLookups,
    pub(super) hasher: Hasher,
    pub(super) policy: PasswordPolicy,
    pub(super) tokens: Arc<TokenService>,
    pub(super) refresh_ttl: TimeDelta,
    pub(super) session_max_lifetime: TimeDelta,
    pub(super) lockout: LockoutPolicy,
    first_user_admin: bool,
}

impl Accounts {
    pub fn new(
        db: DatabaseConnection,
        hasher: Hasher,
        tokens: Arc<TokenService>,
        settings: AccountSettings,
    ) -> Result<Self> {
        Ok(Self {
            bearer_lookups: BearerLookups::new(db.clone()),
            db,
            hasher,
            policy: settings.policy,
            tokens,
            refresh_ttl: TimeDelta::from_std(settings.refresh_ttl).context("refresh token TTL")?,
            session_max_lifetime: TimeDelta::from_std(settings.session_max_lifetime)
                .context("session maximum lifetime")?,
            lockout: LockoutPolicy {
                failure_limit: settings.failure_limit,
                first_lockout: TimeDelta::from_std(settings.lockout).context("lockout duration")?,
            },
            first_user_admin: settings.first_user_admin,
        })
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Who a new account becomes is `first_account_role`'s rule. Whether it
    /// is the first is checked in the insert's serializable transaction, so
    /// concurrent first registrations make exactly one admin.
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, account: NewAccount, now: DateTime<Utc>) -> Result<User> {
        let (email, display_name) = parse_profile(&account.email, &account.display_name)?;
        let password = self.policy.check("password", &account.password, &email)?;
        // An overloaded server refuses before it reads the database.
        let place = self.hasher.queue()?;
        // Cheap refusal before the expensive hash; the unique constraint
        // below still decides races.
        if users::email_exists(&self.db, email.as_str()).await? {
            return Err(Error::EmailTaken);
        }
        let hash = self.hasher.hash_queued(Some(place), &password).await?;
        let first_user_admin = self.first_user_admin;
        let row = store::serializable(&self.db, |txn| {
            let (email, display_name, hash) = (email.clone(), display_name.clone(), hash.clone());
            Box::pin(async move {
                let first = !users::any(txn).await?;
                let (is_admin, status) = first_account_role(first, first_user_admin);
                let approved = status == UserStatus::Approved;
                let row = new_user_row(email, display_name, hash, is_admin, approved, now);
                users::insert(txn, row).await.map_err(email_taken_if_unique)
            })
        })
        .await?;
        tracing::info!(user_id = %row.id, admin = row.is_admin, "account registered");
        Ok(row.into())
    }

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
        let stored_hash = account.as_ref().map(|u| u.password_hash.0.clone());
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
        match account.status {
            UserStatus::Approved => {}
            UserStatus::Pending => return Err(Error::AccountPending),
            UserStatus::Disabled => return Err(Error::AccountDisabled),
        }

        let session_id = Uuid::now_v7();
        let refresh = RefreshToken::generate()?;
        let expires_at = session_expiry(now, now, self.refresh_ttl, self.session_max_lifetime);
        let session_row = session::Model {
            id: session_id,
            user_id: account.id,
            device_id: device.id,
            device_name: device.name,
            device_type: device.kind,
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
        let token_row = refresh_token::Model {
            token_hash: refresh.hash,
            session_id,
            created_at: now,
            expires_at,
            rotated_at: None,
        };
        sessions::insert_with_refresh_token(&self.db, session_row, token_row).await?;
        let tokens = self.token_pair(account.id, session_id, refresh.token, expires_at, now)?;
        tracing::info!(user_id = %account.id, %session_id, "login");
        Ok(LoginOutcome {
            tokens,
            user: account.into(),
            session_id,
        })
    }

    /// When the argon2 parameters changed since this hash was made, store a
    /// hash with the current ones, now that the password is at hand. A
    /// failure here must not fail the login: it is logged and retried at the
    /// next one.
    async fn rehash_if_outdated(&self, account: &user::Model, password: &SecretString) {
        if !self.hasher.needs_rehash(&account.password_hash.0) {
            return;
        }
        let result = async {
            let hash = self.hasher.rehash(password).await?;
            let change = user::ActiveModel {
                id: sea_orm::ActiveValue::Set(account.id),
                password_hash: sea_orm::ActiveValue::Set(user::PasswordHash(hash)),
                ..Default::default()
            };
            users::update(&self.db, change).await?;
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(user_id = %account.id, "password re-hashed with the current parameters")
            }
            Err(e) => tracing::warn!(user_id = %account.id, error = %e, "re-hashing failed"),
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
        if found.user_id != token.user_id {
            return Err(Error::TokenInvalid);
        }
        if found.revoked_at.is_some()
            || found.expires_at <= now
            || found.status != UserStatus::Approved
        {
            return Err(Error::SessionRevoked);
        }
        Ok(Principal {
            session_id: found.session_id,
            user: User {
                id: found.user_id,
                email: found.email,
                display_name: found.display_name,
                is_admin: found.is_admin,
                status: found.status,
                created_at: found.created_at,
                updated_at: found.updated_at,
                approved_at: found.approved_at,
                approved_by: found.approved_by,
            },
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
                e @ (Error::DatabaseUnavailable(_)
                | Error::Overloaded { .. }
                | Error::Unexpected(_)),
            ) => Err(e),
            Err(_) => Ok(None),
        }
    }
}

/// What a registered account becomes. The first account ever is an
/// approved admin, so that a fresh install can be run without a console;
/// with `first_user_admin` off (`WARDEN_FIRST_USER_ADMIN=false`) the first
/// is pending like every other, so that whoever reaches a new server first
/// cannot take it over, and admins come from `create-admin`.
pub fn first_account_role(is_first: bool, first_user_admin: bool) -> (bool, UserStatus) {
    if is_first && first_user_admin {
        (true, UserStatus::Approved)
    } else {
        (false, UserStatus::Pending)
    }
}

/// Whether any account exists, for the start-up warning about the first
/// registration.
pub async fn any_account(db: &DatabaseConnection) -> Result<bool> {
    Ok(users::any(db).await?)
}

/// An approved admin, whatever else exists (the `create-admin` command).
pub async fn create_admin(
    db: &DatabaseConnection,
    hasher: &Hasher,
    policy: &PasswordPolicy,
    email: &str,
    display_name: &str,
    password: &SecretString,
    now: DateTime<Utc>,
) -> Result<User> {
    let (email, display_name) = parse_profile(email, display_name)?;
    let password = policy.check("password", password, &email)?;
    if users::email_exists(db, email.as_str()).await? {
        return Err(Error::EmailTaken);
    }
    let hash = hasher.hash(&password).await?;
    let row = new_user_row(email, display_name, hash, true, true, now);
    let row = users::insert(db, row)
        .await
        .map_err(email_taken_if_unique)?;
    tracing::info!(user_id = %row.id, "admin created");
    Ok(row.into())
}

pub(super) fn parse_profile(email: &str, display_name: &str) -> Result<(Email, DisplayName)> {
    match (
        Email::parse("email", email),
        DisplayName::parse("display_name", display_name),
    ) {
        (Ok(email), Ok(name)) => Ok((email, name)),
        (email, name) => Err(Error::InvalidArgument(
            [email.err(), name.err()].into_iter().flatten().collect(),
        )),
    }
}

/// The optional email and display name of a change; each that is present
/// must be valid.
pub(super) fn parse_profile_change(
    email: Option<String>,
    display_name: Option<String>,
) -> Result<(Option<Email>, Option<DisplayName>)> {
    let email = email.map(|e| Email::parse("email", &e)).transpose();
    let name = display_name
        .map(|n| DisplayName::parse("display_name", &n))
        .transpose();
    match (email, name) {
        (Ok(email), Ok(name)) => Ok((email, name)),
        (email, name) => Err(Error::InvalidArgument(
            [email.err(), name.err()].into_iter().flatten().collect(),
        )),
    }
}

pub(super) fn new_user_row(
    email: Email,
    display_name: DisplayName,
    password_hash: String,
    is_admin: bool,
    approved: bool,
    now: DateTime<Utc>,
) -> user::Model {
    user::Model {
        id: Uuid::now_v7(),
        email: email.into_string(),
        display_name: display_name.into_string(),
        password_hash: user::PasswordHash(password_hash),
        is_admin,
        status: if approved {
            UserStatus::Approved
        } else {
            UserStatus::Pending
        },
        created_at: now,
        updated_at: now,
        approved_at: approved.then_some(now),
        approved_by: None,
    }
}

/// The only unique key a new user row can break is its email.
pub(super) fn email_taken_if_unique(err: DbErr) -> Error {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => Error::EmailTaken,
        _ => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_account_is_an_approved_admin_by_default() {
        assert_eq!(first_account_role(true, true), (true, UserStatus::Approved));
    }

    #[test]
    fn every_later_account_waits_for_approval_without_admin_rights() {
        assert_eq!(
            first_account_role(false, true),
            (false, UserStatus::Pending)
        );
        assert_eq!(
            first_account_role(false, false),
            (false, UserStatus::Pending)
        );
    }

    #[test]
    fn without_first_user_admin_the_first_account_is_pending_like_every_other() {
        assert_eq!(
            first_account_role(true, false),
            (false, UserStatus::Pending)
        );
    }
}

//! Accounts, sessions and tokens: the operations of the `Auth` and
//! `UserAdmin` services. Each one reads what a rule (`domain::rules`) needs,
//! asks it, and writes what it decided.
//!
//! - `create`: the one way an account comes to exist (Register, CreateUser,
//!   `warden create-admin`).
//! - `login`: login and the per-call check of a bearer token.
//! - `sessions`: refresh with rotation, logout, listing and revoking.
//! - `profile`: what users change about themselves.
//! - `admin`: what admins do; every operation takes an `Admin`.
//! - `lockout`: the failure counts behind the lockout rules.
//! - `email`: verification, password reset by mail, one-time tokens for
//!   backends, and the mails other operations queue.

mod admin;
mod create;
mod email;
mod lockout;
mod login;
mod profile;
mod sessions;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::TimeDelta;
use tokio::sync::Notify;

pub(in crate::domain) use admin::page_limit;
pub use admin::{
    DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, NewUser, UserPage, UserQuery, UserUpdateRequest,
};
pub use create::{NewAccount, Registration, any_account, create_admin};
pub use login::{LoginAttempt, LoginOutcome};
pub use profile::ProfileChange;
pub use sessions::RETENTION;

use super::{
    email::EmailSettings,
    error::Result,
    password::{Hasher, PasswordPolicy},
    rules::lockout::LockoutPolicy,
    tokens::TokenService,
};
use crate::store::{Db, bearer_lookups::BearerLookups};

/// The rules accounts live by, from the configuration.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub policy: PasswordPolicy,
    pub refresh_ttl: Duration,
    /// `WARDEN_SESSION_MAX_LIFETIME`: no session lasts longer from login.
    pub session_max_lifetime: Duration,
    pub failure_limit: u32,
    pub lockout: Duration,
    /// `WARDEN_FIRST_USER_ADMIN`.
    pub first_user_admin: bool,
    /// `WARDEN_INVITATION_TTL`.
    pub invitation_ttl: Duration,
    pub email: EmailSettings,
}

/// The service behind Auth, UserAdmin and Organizations (whose operations
/// live in `domain::orgs`, hence the fields visible in `domain`).
pub struct Accounts {
    pub(in crate::domain) db: Db,
    bearer_lookups: BearerLookups,
    hasher: Hasher,
    policy: PasswordPolicy,
    pub(in crate::domain) tokens: Arc<TokenService>,
    refresh_ttl: TimeDelta,
    session_max_lifetime: TimeDelta,
    lockout: LockoutPolicy,
    first_user_admin: bool,
    pub(in crate::domain) invitation_ttl: TimeDelta,
    email: EmailSettings,
    /// Woken when a transaction that queued mail has committed, so that
    /// this replica's sender does not wait for its next poll.
    mail_queued: Arc<Notify>,
}

impl Accounts {
    pub fn new(
        db: Db,
        hasher: Hasher,
        tokens: Arc<TokenService>,
        settings: AccountSettings,
    ) -> Result<Self> {
        let delta = |d: Duration, what: &str| {
            TimeDelta::from_std(d).with_context(|| format!("{what} is too long"))
        };
        Ok(Self {
            bearer_lookups: BearerLookups::new(db.clone()),
            db,
            hasher,
            policy: settings.policy,
            tokens,
            refresh_ttl: delta(settings.refresh_ttl, "refresh token TTL")?,
            session_max_lifetime: delta(settings.session_max_lifetime, "session maximum lifetime")?,
            lockout: LockoutPolicy {
                failure_limit: settings.failure_limit,
                first_lockout: delta(settings.lockout, "lockout duration")?,
            },
            first_user_admin: settings.first_user_admin,
            invitation_ttl: delta(settings.invitation_ttl, "invitation TTL")?,
            email: settings.email,
            mail_queued: Arc::new(Notify::new()),
        })
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    pub(in crate::domain) fn refresh_ttl(&self) -> TimeDelta {
        self.refresh_ttl
    }

    pub(in crate::domain) fn session_max_lifetime(&self) -> TimeDelta {
        self.session_max_lifetime
    }

    /// What the mail sender waits on between polls.
    pub fn mail_queued(&self) -> Arc<Notify> {
        self.mail_queued.clone()
    }

    pub fn email_settings(&self) -> &EmailSettings {
        &self.email
    }
}

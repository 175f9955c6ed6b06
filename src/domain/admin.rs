//! What admins do to accounts (the `UserAdmin` service). Admin rights are
//! read from the database on every call, never from the token.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, DbErr};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    Session, User, UserStatus,
    accounts::{
        Accounts, Principal, email_taken_if_unique, new_user_row, parse_profile,
        parse_profile_change,
    },
    input::{Email, parse_id},
    page_token::{self, Cursor},
    tokens::VerifiedToken,
};
use crate::{
    error::{Error, FieldViolation, Result},
    store::{
        self,
        entities::user,
        sessions,
        users::{self, UserFilter},
    },
};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;
const EMAIL_FILTER_MAX_CHARS: usize = 254;

pub struct NewUser {
    pub email: String,
    pub password: SecretString,
    pub display_name: String,
    pub is_admin: bool,
}

/// Only the fields that are `Some` change.
#[derive(Default)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub is_admin: Option<bool>,
    pub status: Option<UserStatus>,
}

pub struct UserQuery {
    pub page_size: i32,
    pub page_token: String,
    pub status: Option<UserStatus>,
    pub email_contains: String,
}

pub struct UserPage {
    pub users: Vec<User>,
    pub next_page_token: String,
    pub total_size: u64,
}

fn id(field: &'static str, raw: &str) -> Result<Uuid> {
    parse_id(field, raw).map_err(|v| Error::InvalidArgument(vec![v]))
}

fn is_approved_admin(row: &user::Model) -> bool {
    row.is_admin && row.status == UserStatus::Approved
}

/// A user row that vanished between reading and writing it.
fn not_found_if_gone(err: DbErr) -> Error {
    match err {
        DbErr::RecordNotUpdated | DbErr::RecordNotFound(_) => Error::UserNotFound,
        other => email_taken_if_unique(other),
    }
}

impl Accounts {
    /// A bearer check that also needs an approved admin.
    pub async fn authorize_admin(
        &self,
        token: &VerifiedToken,
        now: DateTime<Utc>,
    ) -> Result<Principal> {
        let caller = self.authorize(token, now).await?;
        if !caller.user.is_admin {
            return Err(Error::AdminRequired);
        }
        Ok(caller)
    }

    /// Newest first, ties by id; keyset pages behind opaque tokens.
    pub async fn list_users(&self, query: UserQuery) -> Result<UserPage> {
        let mut violations = Vec::new();
        let limit = match query.page_size {
            n if n < 0 => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                DEFAULT_PAGE_SIZE
            }
            0 => DEFAULT_PAGE_SIZE,
            n => u64::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        let email_contains = query.email_contains.trim().to_lowercase();
        if email_contains.chars().count() > EMAIL_FILTER_MAX_CHARS {
            violations.push(FieldViolation::new(
                "email_contains",
                format!("must be at most {EMAIL_FILTER_MAX_CHARS} characters"),
            ));
        }
        let filter = UserFilter {
            status: query.status,
            email_contains: (!email_contains.is_empty()).then_some(email_contains),
        };
        let keys = self.tokens.page_token_keys();
        let after = if query.page_token.is_empty() {
            None
        } else {
            match page_token::open(&keys, &query.page_token, &filter) {
                Ok(cursor) => Some((cursor.created_at, cursor.id)),
                Err(v) => {
                    violations.push(v);
                    None
                }
            }
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }

        // One more than asked tells whether another page follows.
        let mut rows = users::page(&self.db, &filter, after, limit + 1).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match (more, rows.last(), keys.first()) {
            (true, Some(last), Some(key)) => page_token::seal(
                key,
                Cursor {
                    created_at: last.created_at,
                    id: last.id,
                },
                &filter,
            ),
            _ => String::new(),
        };
        let total_size = users::count_matching(&self.db, &filter).await?;
        Ok(UserPage {
            users: rows.into_iter().map(User::from).collect(),
            next_page_token,
            total_size,
        })
    }

    pub async fn get_user(&self, user_id: &str) -> Result<User> {
        let id = id("user_id", user_id)?;
        users::find(&self.db, id)
            .await?
            .map(User::from)
            .ok_or(Error::UserNotFound)
    }

    /// An account created by an admin is approved, by that admin.
    #[tracing::instrument(skip_all)]
    pub async fn create_user(
        &self,
        caller: &Principal,
        new: NewUser,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let (email, display_name) = parse_profile(&new.email, &new.display_name)?;
        let password = self.policy.check("password", &new.password, &email)?;
        if users::email_exists(&self.db, email.as_str()).await? {
            return Err(Error::EmailTaken);
        }
        let hash = self.hasher.hash(&password).await?;
        let mut row = new_user_row(email, display_name, hash, new.is_admin, true, now);
        row.approved_by = Some(caller.user.id);
        let row = users::insert(&self.db, row)
            .await
            .map_err(email_taken_if_unique)?;
        tracing::info!(user_id = %row.id, admin = row.is_admin, by = %caller.user.id, "user created");
        Ok(row.into())
    }

    /// Changes the present fields. Approval records when and by whom (once);
    /// any other status change revokes the user's sessions; nothing may leave
    /// the system without an approved admin.
    #[tracing::instrument(skip_all)]
    pub async fn update_user(
        &self,
        caller: &Principal,
        user_id: &str,
        update: UserUpdate,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let target = id("user_id", user_id)?;
        let (email, display_name) = parse_profile_change(update.email, update.display_name)?;
        let (is_admin, status, approver) = (update.is_admin, update.status, caller.user.id);
        let (row, revoked) = store::serializable(&self.db, |txn| {
            let (email, display_name) = (email.clone(), display_name.clone());
            Box::pin(async move {
                let current = users::find(txn, target).await?.ok_or(Error::UserNotFound)?;
                let mut change = user::ActiveModel {
                    id: Set(target),
                    ..Default::default()
                };
                let mut changed = false;
                if let Some(email) = email.filter(|e| e.as_str() != current.email) {
                    change.email = Set(email.into_string());
                    changed = true;
                }
                if let Some(name) = display_name.filter(|n| n.as_str() != current.display_name) {
                    change.display_name = Set(name.into_string());
                    changed = true;
                }
                if let Some(is_admin) = is_admin.filter(|a| *a != current.is_admin) {
                    change.is_admin = Set(is_admin);
                    changed = true;
                }
                let mut revoke = false;
                if let Some(status) = status.filter(|s| *s != current.status) {
                    change.status = Set(status);
                    changed = true;
                    if status == UserStatus::Approved {
                        change.approved_at = Set(Some(now));
                        change.approved_by = Set(Some(approver));
                    } else {
                        revoke = true;
                    }
                }
                if !changed {
                    return Ok((current, 0));
                }
                change.updated_at = Set(now);
                let updated = users::update(txn, change)
                    .await
                    .map_err(not_found_if_gone)?;
                if is_approved_admin(&current)
                    && !is_approved_admin(&updated)
                    && users::count_approved_admins(txn).await? == 0
                {
                    return Err(Error::LastAdmin);
                }
                let revoked = if revoke {
                    sessions::revoke_all_for_user(txn, target, None, now).await?
                } else {
                    0
                };
                Ok((updated, revoked))
            })
        })
        .await?;
        if status == Some(UserStatus::Approved) {
            self.lift_lockout(&row.email).await?;
        }
        tracing::info!(user_id = %row.id, by = %approver, revoked, "user updated");
        Ok(row.into())
    }

    /// Deletes the user and, by cascade, their sessions.
    #[tracing::instrument(skip_all)]
    pub async fn delete_user(&self, caller: &Principal, user_id: &str) -> Result<()> {
        let target = id("user_id", user_id)?;
        store::serializable(&self.db, |txn| {
            Box::pin(async move {
                let current = users::find(txn, target).await?.ok_or(Error::UserNotFound)?;
                if users::delete(txn, target).await? == 0 {
                    return Err(Error::UserNotFound);
                }
                if is_approved_admin(&current) && users::count_approved_admins(txn).await? == 0 {
                    return Err(Error::LastAdmin);
                }
                Ok(())
            })
        })
        .await?;
        tracing::info!(user_id = %target, by = %caller.user.id, "user deleted");
        Ok(())
    }

    /// A new password chosen by an admin; all the user's sessions end.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(
        &self,
        caller: &Principal,
        user_id: &str,
        new_password: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let target = id("user_id", user_id)?;
        if new_password.expose_secret().is_empty() {
            return Err(Error::invalid("new_password", "must not be empty"));
        }
        let row = users::find(&self.db, target)
            .await?
            .ok_or(Error::UserNotFound)?;
        let email =
            Email::parse("email", &row.email).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let password = self.policy.check("new_password", new_password, &email)?;
        let hash = self.hasher.hash(&password).await?;
        let revoked = store::serializable(&self.db, |txn| {
            let hash = hash.clone();
            Box::pin(async move {
                let change = user::ActiveModel {
                    id: Set(target),
                    password_hash: Set(user::PasswordHash(hash)),
                    updated_at: Set(now),
                    ..Default::default()
                };
                users::update(txn, change)
                    .await
                    .map_err(not_found_if_gone)?;
                Ok(sessions::revoke_all_for_user(txn, target, None, now).await?)
            })
        })
        .await?;
        self.lift_lockout(&row.email).await?;
        tracing::info!(user_id = %target, by = %caller.user.id, revoked, "password reset");
        Ok(revoked)
    }

    pub async fn count_pending(&self) -> Result<u64> {
        let filter = UserFilter {
            status: Some(UserStatus::Pending),
            email_contains: None,
        };
        Ok(users::count_matching(&self.db, &filter).await?)
    }

    pub async fn user_sessions(
        &self,
        user_id: &str,
        include_inactive: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>> {
        let target = id("user_id", user_id)?;
        users::find(&self.db, target)
            .await?
            .ok_or(Error::UserNotFound)?;
        Ok(sessions::list_for_user(&self.db, target, include_inactive, now).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn revoke_user_sessions(
        &self,
        caller: &Principal,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let target = id("user_id", user_id)?;
        users::find(&self.db, target)
            .await?
            .ok_or(Error::UserNotFound)?;
        let revoked = sessions::revoke_all_for_user(&self.db, target, None, now).await?;
        tracing::info!(user_id = %target, by = %caller.user.id, revoked, "sessions revoked");
        Ok(revoked)
    }
}

//! What admins do to accounts (the `UserAdmin` service). Every operation
//! takes an `Admin`, which only `authorize_admin` hands out: admin rights are
//! read from the database on every call, never from the token.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{Accounts, create::email_taken_if_unique};
use crate::{
    domain::{
        error::{Error, FieldViolation, Result},
        input::{DisplayName, Email, parse_id},
        page_token::{self, Cursor},
        rules::{
            accounts::{UserUpdate, keep_an_admin, plan_user_update},
            orgs::{OnUserDeleted, on_user_deleted},
        },
        tokens::VerifiedToken,
        types::{Admin, OrgRole, PasswordHash, Session, User, UserFilter, UserStatus},
    },
    store::{self, StoreError, email_tokens, mail_outbox, orgs, sessions, users},
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

/// An UpdateUser as it arrives: only the fields that are `Some` change.
#[derive(Default)]
pub struct UserUpdateRequest {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub is_admin: Option<bool>,
    pub status: Option<UserStatus>,
    pub email_verified: Option<bool>,
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

pub(super) fn id(field: &'static str, raw: &str) -> Result<Uuid> {
    parse_id(field, raw).map_err(|v| Error::InvalidArgument(vec![v]))
}

/// A user row that vanished between reading and writing it.
fn not_found_if_gone(err: StoreError) -> Error {
    match err {
        StoreError::NotFound => Error::UserNotFound,
        other => email_taken_if_unique(other),
    }
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

/// `page_size`: 0 means the default, negative is refused, above the
/// maximum is clamped.
pub(in crate::domain) fn page_limit(page_size: i32, violations: &mut Vec<FieldViolation>) -> u64 {
    match page_size {
        n if n < 0 => {
            violations.push(FieldViolation::new("page_size", "must not be negative"));
            DEFAULT_PAGE_SIZE
        }
        0 => DEFAULT_PAGE_SIZE,
        n => u64::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
    }
}

impl Accounts {
    /// A bearer check that also needs an approved admin.
    pub async fn authorize_admin(
        &self,
        token: &VerifiedToken,
        now: DateTime<Utc>,
    ) -> Result<Admin> {
        Admin::check(self.authorize(token, now).await?)
    }

    /// Newest first, ties by id; keyset pages behind opaque tokens.
    pub async fn list_users(&self, _admin: &Admin, query: UserQuery) -> Result<UserPage> {
        let mut violations = Vec::new();
        let limit = page_limit(query.page_size, &mut violations);
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
        let mut users = users::page(&self.db, &filter, after, limit + 1).await?;
        let more = users.len() as u64 > limit;
        users.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match (more, users.last(), keys.first()) {
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
            users,
            next_page_token,
            total_size,
        })
    }

    pub async fn get_user(&self, _admin: &Admin, user_id: &str) -> Result<User> {
        let id = id("user_id", user_id)?;
        users::find(&self.db, id).await?.ok_or(Error::UserNotFound)
    }

    /// Changes the present fields, as `rules::accounts::plan_user_update`
    /// decides; nothing may leave the system without an approved admin.
    #[tracing::instrument(skip_all)]
    pub async fn update_user(
        &self,
        admin: &Admin,
        user_id: &str,
        request: UserUpdateRequest,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let target = id("user_id", user_id)?;
        let (email, display_name) = parse_profile_change(request.email, request.display_name)?;
        let update = UserUpdate {
            email,
            display_name,
            is_admin: request.is_admin,
            status: request.status,
            email_verified: request.email_verified,
        };
        let approver = admin.id();
        let (user, revoked, lift_lockout) = store::serializable(&self.db, |txn| {
            let update = update.clone();
            Box::pin(async move {
                let current = users::find(txn, target).await?.ok_or(Error::UserNotFound)?;
                let plan = plan_user_update(&current, &update, approver, now);
                let Some(changes) = plan.changes else {
                    return Ok((current, 0, plan.lift_lockout));
                };
                let updated = users::update(txn, target, &changes)
                    .await
                    .map_err(not_found_if_gone)?;
                keep_an_admin(
                    &current,
                    Some(&updated),
                    users::count_approved_admins(txn).await?,
                )?;
                let revoked = if plan.revoke_sessions {
                    sessions::revoke_all_for_user(txn, target, None, now).await?
                } else {
                    0
                };
                if plan.kill_email_tokens {
                    email_tokens::kill_for_user(txn, target, None, now).await?;
                }
                Ok::<_, Error>((updated, revoked, plan.lift_lockout))
            })
        })
        .await?;
        if lift_lockout {
            self.lift_lockout(&user.email).await?;
        }
        tracing::info!(user_id = %user.id, by = %approver, revoked, "user updated");
        Ok(user)
    }

    /// Deletes the user and, by cascade, their sessions and memberships;
    /// organisations where the user was the only member go with them. Nor
    /// the last approved admin (checked first), nor the only owner of an
    /// organisation that has other members, may be deleted.
    #[tracing::instrument(skip_all)]
    pub async fn delete_user(&self, admin: &Admin, user_id: &str) -> Result<()> {
        let target = id("user_id", user_id)?;
        store::serializable(&self.db, |txn| {
            Box::pin(async move {
                let current = users::find(txn, target).await?.ok_or(Error::UserNotFound)?;
                let mut plans = Vec::new();
                for m in orgs::memberships_of(txn, target).await? {
                    let others = orgs::count_members(txn, m.organization_id)
                        .await?
                        .saturating_sub(1);
                    let owners = orgs::count_owners(txn, m.organization_id).await?;
                    let other_owners = owners.saturating_sub(u64::from(m.role == OrgRole::Owner));
                    plans.push((
                        m.organization_id,
                        on_user_deleted(m.role, others, other_owners),
                    ));
                }
                // Explicitly rather than by cascade, so that the member
                // counts follow.
                for (organization_id, _) in &plans {
                    orgs::delete_membership(txn, target, *organization_id).await?;
                }
                if users::delete(txn, target).await? == 0 {
                    return Err(Error::UserNotFound);
                }
                keep_an_admin(&current, None, users::count_approved_admins(txn).await?)?;
                for (organization_id, plan) in plans {
                    if plan? == OnUserDeleted::DeleteOrganization {
                        orgs::delete_organization(txn, organization_id).await?;
                    }
                }
                Ok(())
            })
        })
        .await?;
        tracing::info!(user_id = %target, by = %admin.id(), "user deleted");
        Ok(())
    }

    /// A new password chosen by an admin; all the user's sessions end.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(
        &self,
        admin: &Admin,
        user_id: &str,
        new_password: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let target = id("user_id", user_id)?;
        if new_password.expose_secret().is_empty() {
            return Err(Error::invalid("new_password", "must not be empty"));
        }
        let user = users::find(&self.db, target)
            .await?
            .ok_or(Error::UserNotFound)?;
        let email =
            Email::parse("email", &user.email).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let password = self.policy.check("new_password", new_password, &email)?;
        let hash = PasswordHash(self.hasher.hash(&password).await?);
        let notice = self.email.password_notice(&user, now);
        let queued = notice.clone();
        let revoked = store::serializable(&self.db, move |txn| {
            let (hash, notice) = (hash.clone(), queued.clone());
            Box::pin(async move {
                users::set_password_hash(txn, target, &hash, Some(now))
                    .await
                    .map_err(not_found_if_gone)?;
                if let Some(notice) = &notice {
                    mail_outbox::queue(txn, notice).await?;
                }
                Ok::<_, Error>(sessions::revoke_all_for_user(txn, target, None, now).await?)
            })
        })
        .await?;
        if notice.is_some() {
            self.mail_queued.notify_one();
        }
        self.lift_lockout(&user.email).await?;
        tracing::info!(user_id = %target, by = %admin.id(), revoked, "password reset");
        Ok(revoked)
    }

    pub async fn count_pending(&self, _admin: &Admin) -> Result<u64> {
        let filter = UserFilter {
            status: Some(UserStatus::Pending),
            email_contains: None,
        };
        Ok(users::count_matching(&self.db, &filter).await?)
    }

    pub async fn user_sessions(
        &self,
        _admin: &Admin,
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
        admin: &Admin,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let target = id("user_id", user_id)?;
        users::find(&self.db, target)
            .await?
            .ok_or(Error::UserNotFound)?;
        let revoked = sessions::revoke_all_for_user(&self.db, target, None, now).await?;
        tracing::info!(user_id = %target, by = %admin.id(), revoked, "sessions revoked");
        Ok(revoked)
    }
}

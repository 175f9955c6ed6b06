//! Changes a user makes to their own account.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use secrecy::{ExposeSecret, SecretString};

use super::{
    User,
    accounts::{Accounts, Principal, email_taken_if_unique, parse_profile_change},
    input::Email,
};
use crate::{
    error::{Error, FieldViolation, Result},
    store::{self, entities::user, sessions, users},
};

pub struct ProfileChange {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub current_password: SecretString,
}

impl Accounts {
    /// Changes the caller's display name and/or email. A new email needs the
    /// current password and must be free. Nothing changed, nothing written.
    #[tracing::instrument(skip_all)]
    pub async fn update_me(
        &self,
        caller: &Principal,
        change: ProfileChange,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let (email, name) = parse_profile_change(change.email, change.display_name)?;
        let current = &caller.user;
        let name = name.filter(|n| n.as_str() != current.display_name);
        let email = email.filter(|e| e.as_str() != current.email);
        if name.is_none() && email.is_none() {
            return Ok(current.clone());
        }
        if email.is_some() {
            self.check_current_password(caller, &change.current_password, now)
                .await?;
        }
        let mut row = user::ActiveModel {
            id: Set(current.id),
            updated_at: Set(now),
            ..Default::default()
        };
        if let Some(name) = name {
            row.display_name = Set(name.into_string());
        }
        if let Some(email) = email {
            row.email = Set(email.into_string());
        }
        let updated = users::update(&self.db, row)
            .await
            .map_err(email_taken_if_unique)?;
        tracing::info!(user_id = %updated.id, "profile updated");
        Ok(updated.into())
    }

    /// Sets a new password after checking the current one, and revokes every
    /// other session of the user (the caller's stays). Returns how many.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        caller: &Principal,
        current_password: &SecretString,
        new_password: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut violations = Vec::new();
        if current_password.expose_secret().is_empty() {
            violations.push(FieldViolation::new("current_password", "must not be empty"));
        }
        if new_password.expose_secret().is_empty() {
            violations.push(FieldViolation::new("new_password", "must not be empty"));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let email = Email::parse("email", &caller.user.email)
            .map_err(|v| Error::InvalidArgument(vec![v]))?;
        let new_password = self.policy.check("new_password", new_password, &email)?;
        self.check_current_password(caller, current_password, now)
            .await?;
        let hash = self.hasher.hash(&new_password).await?;
        let (user_id, keep) = (caller.user.id, caller.session_id);
        let revoked = store::serializable(&self.db, |txn| {
            let hash = hash.clone();
            Box::pin(async move {
                let row = user::ActiveModel {
                    id: Set(user_id),
                    password_hash: Set(user::PasswordHash(hash)),
                    updated_at: Set(now),
                    ..Default::default()
                };
                users::update(txn, row).await?;
                Ok(sessions::revoke_all_for_user(txn, user_id, Some(keep), now).await?)
            })
        })
        .await?;
        tracing::info!(%user_id, revoked, "password changed");
        Ok(revoked)
    }

    /// WRONG_PASSWORD unless `password` is the caller's; a missing one is a
    /// missing field. A wrong one counts as a failed login of the account,
    /// so a locked-out account cannot probe passwords here either.
    async fn check_current_password(
        &self,
        caller: &Principal,
        password: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if password.expose_secret().is_empty() {
            return Err(Error::invalid(
                "current_password",
                "is required for this change",
            ));
        }
        let attempt = self.begin_attempt(&caller.user.email, now).await?;
        let row = users::find(&self.db, caller.user.id)
            .await?
            .ok_or(Error::SessionRevoked)?;
        let matched = self
            .hasher
            .verify(password, Some(&row.password_hash.0))
            .await?;
        self.settle_attempt(attempt, matched).await?;
        if matched {
            Ok(())
        } else {
            Err(Error::WrongPassword)
        }
    }
}

//! Changes a user makes to their own account.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::{
    Accounts,
    admin::parse_profile_change,
    create::email_taken_if_unique,
    email::{recipient, write_token},
};
use crate::{
    domain::{
        error::{Error, FieldViolation, Result},
        input::Email,
        rules::accounts::{UserChanges, verification_after_update},
        types::{PasswordHash, Principal, User},
    },
    store::{self, StoreError, email_tokens, mail_outbox, sessions, users},
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
        // A new address is unverified, the tokens sent to the old one die,
        // and with mail configured the new one is sent a verification mail
        // and the old one a notice, all in the transaction of the change.
        let moved = email.is_some();
        let changes = UserChanges {
            email_verified: email
                .as_ref()
                .and_then(|_| verification_after_update(current, true, None, now)),
            email: email.map(Email::into_string),
            display_name: name.map(|n| n.into_string()),
            updated_at: Some(now),
            ..UserChanges::default()
        };
        let mails = match &changes.email {
            Some(new_email) if self.email.mail_enabled => {
                let addressee = User {
                    email: new_email.clone(),
                    ..current.clone()
                };
                let verification = self.email.verification_for(&addressee, now)?;
                let notice = self
                    .email
                    .email_changed_notice(recipient(current), new_email, now);
                Some((verification, notice))
            }
            _ => None,
        };
        let user_id = current.id;
        let queued = mails.as_ref().map(|(verification, notice)| {
            (
                verification.token.record.clone(),
                verification.mail.clone(),
                notice.clone(),
            )
        });
        let mailing = queued.is_some();
        let updated = store::serializable(&self.db, move |txn| {
            let (changes, mails) = (changes.clone(), queued.clone());
            Box::pin(async move {
                let updated = users::update(txn, user_id, &changes)
                    .await
                    .map_err(|e| match e {
                        // Deleted while the call ran.
                        StoreError::NotFound => Error::SessionRevoked,
                        other => email_taken_if_unique(other),
                    })?;
                if moved {
                    email_tokens::kill_for_user(txn, user_id, None, now).await?;
                }
                if let Some((record, verification, notice)) = &mails {
                    write_token(txn, record, Some(verification)).await?;
                    mail_outbox::queue(txn, notice).await?;
                }
                Ok::<_, Error>(updated)
            })
        })
        .await?;
        if mailing {
            self.mail_queued.notify_one();
        }
        tracing::info!(user_id = %updated.id, email_changed = moved, "profile updated");
        Ok(updated)
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
        let hash = PasswordHash(self.hasher.hash(&new_password).await?);
        let (user_id, keep) = (caller.user.id, caller.session_id);
        let notice = self.email.password_notice(&caller.user, now);
        let queued = notice.clone();
        let revoked = store::serializable(&self.db, move |txn| {
            let (hash, notice) = (hash.clone(), queued.clone());
            Box::pin(async move {
                users::set_password_hash(txn, user_id, &hash, Some(now))
                    .await
                    .map_err(|e| match e {
                        StoreError::NotFound => Error::SessionRevoked,
                        other => other.into(),
                    })?;
                if let Some(notice) = &notice {
                    mail_outbox::queue(txn, notice).await?;
                }
                Ok::<_, Error>(sessions::revoke_all_for_user(txn, user_id, Some(keep), now).await?)
            })
        })
        .await?;
        if notice.is_some() {
            self.mail_queued.notify_one();
        }
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
        let row = users::find_account(&self.db, caller.user.id)
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

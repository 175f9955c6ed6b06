//! Verification, password reset by mail, one-time tokens for backends
//! (API.md, "Email"), and the helpers other operations use to queue their
//! mails in their own transactions.

use std::sync::Arc;

use super::Accounts;
use crate::{
    domain::{
        email::{EmailSettings, NewEmailToken, hash_email_token, messages::Recipient},
        error::{Error, FieldViolation, Result},
        input::{Email, one_time_token, parse_id},
        rules::{
            accounts::UserChanges,
            email::{check_token, cooldown_left},
            lockout::lockout_key,
        },
        types::{
            Admin, EmailTokenPurpose, EmailTokenRecord, OutgoingMail, PasswordHash, Principal,
            User, UserStatus,
        },
    },
    store::{
        self, Db, StoreError, StoreResult, Txn, email_tokens, login_failures, mail_outbox,
        sessions, users,
    },
};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Notify;

/// A token and the mail that carries it, written together.
pub(super) struct TokenMail {
    pub token: NewEmailToken,
    pub mail: OutgoingMail,
}

/// Writes a new token (killing the user's older ones of its purpose) and,
/// if given, its mail, in the caller's transaction.
pub(super) async fn write_token(
    txn: &Txn,
    record: &EmailTokenRecord,
    mail: Option<&OutgoingMail>,
) -> StoreResult<()> {
    email_tokens::kill_for_user(txn, record.user_id, Some(record.purpose), record.created_at)
        .await?;
    email_tokens::insert(txn, record).await?;
    if let Some(mail) = mail {
        mail_outbox::queue(txn, mail).await?;
    }
    Ok(())
}

pub(super) fn recipient(user: &User) -> Recipient<'_> {
    Recipient {
        email: &user.email,
        name: &user.display_name,
    }
}

impl EmailSettings {
    /// A verification token for `user`'s address and its mail.
    pub(super) fn verification_for(&self, user: &User, now: DateTime<Utc>) -> Result<TokenMail> {
        let token = NewEmailToken::generate(
            EmailTokenPurpose::VerifyEmail,
            user.id,
            &user.email,
            true,
            self.verification_ttl,
            now,
        )?;
        let mail = self.verification_mail(recipient(user), &token.token, now);
        Ok(TokenMail { token, mail })
    }

    /// "Your password was changed", when mail is configured.
    pub(super) fn password_notice(&self, user: &User, now: DateTime<Utc>) -> Option<OutgoingMail> {
        self.mail_enabled
            .then(|| self.password_changed_notice(recipient(user), now))
    }
}

/// What a reset request needs, owned, so that it can run after the answer.
struct ResetRequest {
    db: Db,
    settings: EmailSettings,
    mail_queued: Arc<Notify>,
}

impl ResetRequest {
    /// A reset mail to an existing account that is not disabled, unless one
    /// went out within the cooldown; for any other address, nothing.
    async fn run(self, email: Email, now: DateTime<Utc>) -> Result<()> {
        let Some(account) = users::find_by_email(&self.db, email.as_str()).await? else {
            return Ok(());
        };
        let user = account.user;
        if user.status == UserStatus::Disabled {
            return Ok(());
        }
        let token = NewEmailToken::generate(
            EmailTokenPurpose::ResetPassword,
            user.id,
            &user.email,
            true,
            self.settings.reset_ttl,
            now,
        )?;
        let mail = self
            .settings
            .reset_mail(recipient(&user), &token.token, now);
        let cooldown = self.settings.cooldown;
        let (record, queued_mail) = (token.record.clone(), mail.clone());
        let user_id = user.id;
        let queued = store::serializable(&self.db, move |txn| {
            let (record, mail) = (record.clone(), queued_mail.clone());
            Box::pin(async move {
                let last =
                    email_tokens::last_mailed(txn, user_id, EmailTokenPurpose::ResetPassword)
                        .await?;
                if cooldown_left(last, cooldown, now).is_some() {
                    return Ok::<_, Error>(false);
                }
                write_token(txn, &record, Some(&mail)).await?;
                Ok(true)
            })
        })
        .await?;
        if queued {
            self.mail_queued.notify_one();
            tracing::info!(user_id = %user.id, mail_id = %mail.id, "password reset mail queued");
        } else {
            tracing::info!(user_id = %user.id, "password reset mail held back by the cooldown");
        }
        Ok(())
    }
}

impl Accounts {
    /// SendVerificationEmail: a new token to the caller's address (older
    /// ones die), at most one per cooldown.
    #[tracing::instrument(skip_all)]
    pub async fn send_verification_email(
        &self,
        caller: &Principal,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !self.email.mail_enabled {
            return Err(Error::MailNotConfigured);
        }
        if caller.user.email_verified {
            return Err(Error::EmailAlreadyVerified);
        }
        let planned = self.email.verification_for(&caller.user, now)?;
        let (user_id, cooldown) = (caller.user.id, self.email.cooldown);
        let (record, mail) = (planned.token.record.clone(), planned.mail.clone());
        store::serializable(&self.db, move |txn| {
            let (record, mail) = (record.clone(), mail.clone());
            Box::pin(async move {
                let last =
                    email_tokens::last_mailed(txn, user_id, EmailTokenPurpose::VerifyEmail).await?;
                if let Some(retry_after) = cooldown_left(last, cooldown, now) {
                    return Err(Error::RateLimited { retry_after });
                }
                write_token(txn, &record, Some(&mail)).await?;
                Ok(())
            })
        })
        .await?;
        self.mail_queued.notify_one();
        tracing::info!(%user_id, mail_id = %planned.mail.id, "verification mail queued");
        Ok(())
    }

    /// VerifyEmail: the token's user has proved control of the address it
    /// was sent to. Already verified: it stays as it was.
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, token: &SecretString, now: DateTime<Utc>) -> Result<User> {
        let raw = one_time_token("token", token.expose_secret())
            .map_err(|v| Error::InvalidArgument(vec![v]))?;
        let hash = hash_email_token(raw);
        let user = store::read_committed(&self.db, move |txn| {
            let hash = hash.clone();
            Box::pin(async move {
                let user = use_token(txn, &hash, EmailTokenPurpose::VerifyEmail, now).await?;
                if user.email_verified {
                    return Ok::<_, Error>(user);
                }
                let changes = UserChanges {
                    email_verified: Some((true, Some(now))),
                    updated_at: Some(now),
                    ..UserChanges::default()
                };
                users::update(txn, user.id, &changes)
                    .await
                    .map_err(token_invalid_if_gone)
            })
        })
        .await?;
        tracing::info!(user_id = %user.id, "email verified");
        Ok(user)
    }

    /// RequestPasswordReset: OK at once for every valid address, before any
    /// database work, so that neither the answer nor its time tells whether
    /// an account exists; the mail, if any, is queued after the answer.
    #[tracing::instrument(skip_all)]
    pub fn request_password_reset(&self, email: &str, now: DateTime<Utc>) -> Result<()> {
        let email = Email::parse("email", email).map_err(|v| Error::InvalidArgument(vec![v]))?;
        if !self.email.mail_enabled {
            return Ok(());
        }
        let request = ResetRequest {
            db: self.db.clone(),
            settings: self.email.clone(),
            mail_queued: self.mail_queued.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = request.run(email, now).await {
                tracing::warn!(error = %e, "a password reset request failed");
            }
        });
        Ok(())
    }

    /// ConfirmPasswordReset: a new password (input rules apply), every
    /// session revoked, the lockout cleared, the address verified, a notice
    /// mailed. Does not log in.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_password_reset(
        &self,
        token: &SecretString,
        new_password: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut violations = Vec::new();
        let raw = one_time_token("token", token.expose_secret())
            .map_err(|v| violations.push(v))
            .ok();
        if new_password.expose_secret().is_empty() {
            violations.push(FieldViolation::new("new_password", "must not be empty"));
        }
        let (Some(raw), true) = (raw, violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations));
        };
        let hash = hash_email_token(raw);
        // Read first, so that the password rules (which know the address)
        // and the hashing run before the token is used; the use itself is
        // the conditional update below, which one caller wins.
        let record = email_tokens::find(&self.db, &hash).await?;
        let owner = match &record {
            Some(record) => users::find(&self.db, record.user_id).await?,
            None => None,
        };
        check_token(
            record.as_ref(),
            EmailTokenPurpose::ResetPassword,
            owner.as_ref(),
            now,
        )?;
        let owner = owner.ok_or(Error::EmailTokenInvalid)?;
        let email =
            Email::parse("email", &owner.email).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let password = self.policy.check("new_password", new_password, &email)?;
        let password_hash = PasswordHash(self.hasher.hash(&password).await?);
        let settings = self.email.clone();
        let (user, revoked) = store::read_committed(&self.db, move |txn| {
            let (hash, password_hash, settings) =
                (hash.clone(), password_hash.clone(), settings.clone());
            Box::pin(async move {
                let user = use_token(txn, &hash, EmailTokenPurpose::ResetPassword, now).await?;
                users::set_password_hash(txn, user.id, &password_hash, Some(now))
                    .await
                    .map_err(token_invalid_if_gone)?;
                if !user.email_verified {
                    let changes = UserChanges {
                        email_verified: Some((true, Some(now))),
                        ..UserChanges::default()
                    };
                    users::update(txn, user.id, &changes)
                        .await
                        .map_err(token_invalid_if_gone)?;
                }
                email_tokens::kill_for_user(
                    txn,
                    user.id,
                    Some(EmailTokenPurpose::ResetPassword),
                    now,
                )
                .await?;
                let revoked = sessions::revoke_all_for_user(txn, user.id, None, now).await?;
                login_failures::clear(txn, &lockout_key(&user.email)).await?;
                if let Some(notice) = settings.password_notice(&user, now) {
                    mail_outbox::queue(txn, &notice).await?;
                }
                Ok::<_, Error>((user, revoked))
            })
        })
        .await?;
        self.mail_queued.notify_one();
        tracing::info!(user_id = %user.id, revoked, "password reset by mail");
        Ok(revoked)
    }

    /// IssueEmailToken: a token like a mailed one, returned once; nothing is
    /// mailed, and the cooldown does not count it.
    #[tracing::instrument(skip_all)]
    pub async fn issue_email_token(
        &self,
        admin: &Admin,
        user_id: &str,
        purpose: Option<EmailTokenPurpose>,
        now: DateTime<Utc>,
    ) -> Result<(SecretString, DateTime<Utc>)> {
        let mut violations = Vec::new();
        let target = parse_id("user_id", user_id)
            .map_err(|v| violations.push(v))
            .ok();
        if purpose.is_none() {
            violations.push(FieldViolation::new(
                "purpose",
                "must be EMAIL_TOKEN_PURPOSE_VERIFY_EMAIL or EMAIL_TOKEN_PURPOSE_RESET_PASSWORD",
            ));
        }
        let (Some(target), Some(purpose)) = (target, purpose) else {
            return Err(Error::InvalidArgument(violations));
        };
        let ttl = self.email.ttl(purpose);
        // Read in the transaction that writes the token: it is bound to the
        // address the account has when it is issued.
        let token = store::serializable(&self.db, |txn| {
            Box::pin(async move {
                let user = users::find(txn, target).await?.ok_or(Error::UserNotFound)?;
                let token =
                    NewEmailToken::generate(purpose, user.id, &user.email, false, ttl, now)?;
                write_token(txn, &token.record, None).await?;
                Ok::<_, Error>(token)
            })
        })
        .await?;
        tracing::info!(user_id = %target, by = %admin.id(), ?purpose, "email token issued");
        let expires_at = token.record.expires_at;
        Ok((token.token, expires_at))
    }
}

impl Accounts {
    /// Deletes tokens that expired more than a day ago, used or not.
    pub async fn prune_email_tokens(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(email_tokens::prune(&self.db, now - chrono::TimeDelta::days(1)).await?)
    }
}

/// Uses a token of `purpose` in `txn`: checks it against its user (bound to
/// the address it was sent to), then takes it with the conditional update
/// that only one caller wins.
async fn use_token(
    txn: &Txn,
    hash: &[u8],
    purpose: EmailTokenPurpose,
    now: DateTime<Utc>,
) -> Result<User> {
    let record = email_tokens::find(txn, hash).await?;
    let user = match &record {
        Some(record) => users::find(txn, record.user_id).await?,
        None => None,
    };
    check_token(record.as_ref(), purpose, user.as_ref(), now)?;
    if !email_tokens::consume(txn, hash, purpose, now).await? {
        return Err(Error::EmailTokenInvalid);
    }
    user.ok_or(Error::EmailTokenInvalid)
}

/// The token's user vanished meanwhile: the token is no good.
fn token_invalid_if_gone(err: StoreError) -> Error {
    match err {
        StoreError::NotFound => Error::EmailTokenInvalid,
        other => other.into(),
    }
}

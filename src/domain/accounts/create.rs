//! The one way an account comes to exist: Register, an admin's CreateUser
//! and `warden create-admin` all go through `Creator::create`; who the
//! account becomes is `rules::accounts::new_account_role`'s decision.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::{
    Accounts,
    admin::{NewUser, parse_profile},
    email::write_token,
};
use crate::{
    domain::{
        email::EmailSettings,
        error::{Error, Result},
        password::{Hasher, PasswordPolicy},
        rules::accounts::{Creation, new_account_role},
        types::{Account, Admin, PasswordHash, User, UserStatus},
    },
    store::{self, Db, StoreError, users},
};

pub struct NewAccount {
    pub email: String,
    pub password: SecretString,
    pub display_name: String,
}

/// What creating an account needs besides the request.
struct Creator<'a> {
    db: &'a Db,
    hasher: &'a Hasher,
    policy: PasswordPolicy,
    first_user_admin: bool,
    /// Mail is configured: a registration is sent a verification mail.
    email: Option<&'a EmailSettings>,
}

impl Creator<'_> {
    /// Checks the request, hashes the password (in a place in the hashing
    /// queue taken before any database work, so that an overloaded server
    /// refuses at once) and inserts the account. Whether a registration is
    /// the first is read in the insert's serializable transaction, so
    /// concurrent first registrations make exactly one admin.
    async fn create(
        &self,
        account: NewAccount,
        creation: Creation,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let (email, display_name) = parse_profile(&account.email, &account.display_name)?;
        let password = self.policy.check("password", &account.password, &email)?;
        let place = self.hasher.queue()?;
        // Cheap refusal before the expensive hash; the unique constraint
        // below still decides races.
        if users::email_exists(self.db, email.as_str()).await? {
            return Err(Error::EmailTaken);
        }
        let hash = PasswordHash(self.hasher.hash_queued(Some(place), &password).await?);
        let first_user_admin = self.first_user_admin;
        let id = Uuid::now_v7();
        // A registration with mail configured gets its verification mail in
        // the transaction that creates the account.
        let verification = match (creation, self.email) {
            (Creation::Registration, Some(settings)) => {
                let addressee = User {
                    id,
                    email: email.as_str().to_owned(),
                    display_name: display_name.as_str().to_owned(),
                    is_admin: false,
                    status: UserStatus::Pending,
                    created_at: now,
                    updated_at: now,
                    approved_at: None,
                    approved_by: None,
                    email_verified: false,
                    email_verified_at: None,
                };
                Some(settings.verification_for(&addressee, now)?)
            }
            _ => None,
        };
        let verification = verification.map(|planned| (planned.token.record, planned.mail));
        let user = store::serializable(self.db, |txn| {
            let (email, display_name, hash) = (email.clone(), display_name.clone(), hash.clone());
            let verification = verification.clone();
            Box::pin(async move {
                let is_first = match creation {
                    Creation::Registration => !users::any(txn).await?,
                    _ => false,
                };
                let role = new_account_role(creation, is_first, first_user_admin, now);
                let account = Account {
                    user: User {
                        id,
                        email: email.into_string(),
                        display_name: display_name.into_string(),
                        is_admin: role.is_admin,
                        status: role.status,
                        created_at: now,
                        updated_at: now,
                        approved_at: role.approved_at,
                        approved_by: role.approved_by,
                        email_verified: role.email_verified_at.is_some(),
                        email_verified_at: role.email_verified_at,
                    },
                    password_hash: hash,
                };
                let user = users::insert(txn, &account)
                    .await
                    .map_err(email_taken_if_unique)?;
                if let Some((record, mail)) = &verification {
                    write_token(txn, record, Some(mail)).await?;
                }
                Ok::<_, Error>(user)
            })
        })
        .await?;
        tracing::info!(user_id = %user.id, admin = user.is_admin, ?creation, "account created");
        Ok(user)
    }
}

impl Accounts {
    fn creator(&self) -> Creator<'_> {
        Creator {
            db: &self.db,
            hasher: &self.hasher,
            policy: self.policy,
            first_user_admin: self.first_user_admin,
            email: self.email.mail_enabled.then_some(&self.email),
        }
    }

    /// Register: anyone may; the first account may become an admin. With
    /// mail configured, a verification mail goes to the address.
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, account: NewAccount, now: DateTime<Utc>) -> Result<User> {
        let user = self
            .creator()
            .create(account, Creation::Registration, now)
            .await?;
        if self.email.mail_enabled {
            self.mail_queued.notify_one();
        }
        Ok(user)
    }

    /// CreateUser: approved, by the calling admin.
    #[tracing::instrument(skip_all)]
    pub async fn create_user(
        &self,
        admin: &Admin,
        new: NewUser,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let creation = Creation::ByAdmin {
            admin: admin.id(),
            is_admin: new.is_admin,
        };
        let account = NewAccount {
            email: new.email,
            password: new.password,
            display_name: new.display_name,
        };
        self.creator().create(account, creation, now).await
    }
}

/// `warden create-admin`: an approved admin, whatever else exists.
pub async fn create_admin(
    db: &Db,
    hasher: &Hasher,
    policy: PasswordPolicy,
    account: NewAccount,
    now: DateTime<Utc>,
) -> Result<User> {
    let creator = Creator {
        db,
        hasher,
        policy,
        first_user_admin: false,
        email: None,
    };
    creator.create(account, Creation::Bootstrap, now).await
}

/// Whether any account exists (for the start-up warning about the first
/// registration).
pub async fn any_account(db: &Db) -> Result<bool> {
    Ok(users::any(db).await?)
}

/// The only unique key a user row can break is its email.
pub(super) fn email_taken_if_unique(err: StoreError) -> Error {
    match err {
        StoreError::Unique(_) => Error::EmailTaken,
        other => other.into(),
    }
}

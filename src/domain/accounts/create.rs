//! The one way an account comes to exist: Register, an admin's CreateUser
//! and `warden create-admin` all go through `Creator::create`; who the
//! account becomes is `rules::accounts::new_account_role`'s decision.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
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
        input::{OrganizationName, check_token},
        password::{Hasher, PasswordPolicy},
        rules::{
            accounts::{Creation, new_account_role},
            orgs::{invitation_acceptable, own_organization_name},
        },
        tokens::hash_refresh_token,
        types::{
            Account, Admin, Membership, OrgRole, Organization, PasswordHash, User, UserStatus,
        },
    },
    store::{self, Db, StoreError, orgs, users},
};

pub struct NewAccount {
    pub email: String,
    pub password: SecretString,
    pub display_name: String,
}

/// A registration: the account, and the name of its own organisation or
/// the invitation it joins another with.
pub struct Registration {
    pub account: NewAccount,
    /// `None` when the field was absent.
    pub organization_name: Option<String>,
    /// Empty when none.
    pub invitation_token: SecretString,
}

/// Which organisation a new account joins, if any.
#[derive(Clone)]
enum Tenancy {
    /// CreateUser and `create-admin`: none (a backend adds memberships).
    None,
    /// Register: an organisation of its own, named so, as OWNER.
    Own(Option<OrganizationName>),
    /// Register with an invitation: the SHA-256 of its token.
    Invited(Vec<u8>),
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
        tenancy: Tenancy,
        now: DateTime<Utc>,
    ) -> Result<(User, Option<Organization>)> {
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
        let (user, organization) = store::serializable(self.db, |txn| {
            let (email, display_name, hash) = (email.clone(), display_name.clone(), hash.clone());
            let verification = verification.clone();
            let tenancy = tenancy.clone();
            Box::pin(async move {
                let org_name = match &tenancy {
                    Tenancy::Own(name) => {
                        Some(own_organization_name(name.clone(), &display_name, &email))
                    }
                    _ => None,
                };
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
                let organization = match tenancy {
                    Tenancy::None => None,
                    Tenancy::Own(_) => {
                        let org = Organization {
                            id: Uuid::now_v7(),
                            name: org_name.unwrap_or_default(),
                            created_at: now,
                            updated_at: now,
                        };
                        let org = orgs::insert_organization(txn, &org).await?;
                        orgs::insert_membership(
                            txn,
                            &Membership {
                                user_id: user.id,
                                organization_id: org.id,
                                role: OrgRole::Owner,
                                roles: Vec::new(),
                                joined_at: now,
                            },
                        )
                        .await?;
                        Some(org)
                    }
                    Tenancy::Invited(hash) => {
                        // Anything wrong with the invitation rolls the account
                        // back with it: INVITATION_INVALID creates nothing.
                        let invitation = orgs::find_invitation_by_hash(txn, &hash)
                            .await?
                            .filter(|i| invitation_acceptable(i, &user.email, now))
                            .ok_or(Error::InvitationInvalid)?;
                        if !orgs::claim_invitation(txn, invitation.id, now).await? {
                            return Err(Error::InvitationInvalid);
                        }
                        orgs::insert_membership(
                            txn,
                            &Membership {
                                user_id: user.id,
                                organization_id: invitation.organization_id,
                                role: invitation.role,
                                roles: invitation.roles,
                                joined_at: now,
                            },
                        )
                        .await?;
                        None
                    }
                };
                if let Some((record, mail)) = &verification {
                    write_token(txn, record, Some(mail)).await?;
                }
                Ok::<_, Error>((user, organization))
            })
        })
        .await?;
        tracing::info!(user_id = %user.id, admin = user.is_admin, ?creation, "account created");
        Ok((user, organization))
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

    /// Register: anyone may; the first account may become an admin. The
    /// account gets its own organisation, as OWNER, in the same transaction;
    /// or, with an invitation, joins the inviting one instead. With mail
    /// configured, a verification mail goes to the address.
    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        registration: Registration,
        now: DateTime<Utc>,
    ) -> Result<(User, Option<Organization>)> {
        let token = registration.invitation_token.expose_secret();
        let tenancy = if token.is_empty() {
            let name = registration
                .organization_name
                .map(|n| OrganizationName::parse("organization_name", &n))
                .transpose()
                .map_err(|v| Error::InvalidArgument(vec![v]))?;
            Tenancy::Own(name)
        } else {
            check_token("invitation_token", token).map_err(|v| Error::InvalidArgument(vec![v]))?;
            Tenancy::Invited(hash_refresh_token(token))
        };
        let created = self
            .creator()
            .create(registration.account, Creation::Registration, tenancy, now)
            .await?;
        if self.email.mail_enabled {
            self.mail_queued.notify_one();
        }
        Ok(created)
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
        let (user, _) = self
            .creator()
            .create(account, creation, Tenancy::None, now)
            .await?;
        Ok(user)
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
    let (user, _) = creator
        .create(account, Creation::Bootstrap, Tenancy::None, now)
        .await?;
    Ok(user)
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

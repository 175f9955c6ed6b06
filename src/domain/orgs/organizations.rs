//! Organisations: create, list, get, rename, delete, and switching the
//! caller's session to one.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Access, Who, access, id};
use crate::{
    domain::{
        accounts::{Accounts, page_limit},
        error::{Error, FieldViolation, Result},
        input::OrganizationName,
        page_token::{self, Cursor, Scope},
        rules::{orgs::OrgAction, sessions::session_expiry},
        tokens::RefreshToken,
        types::{Admin, Membership, OrgMembership, OrgRole, Organization, Principal, TokenPair},
    },
    store::{self, orgs, refresh_tokens, sessions},
};

const NAME_FILTER_MAX_CHARS: usize = 100;

/// An UpdateOrganization: only the fields that are `Some` change.
#[derive(Debug, Default)]
pub struct OrganizationUpdate {
    pub name: Option<String>,
}

pub struct OrganizationPage {
    pub organizations: Vec<Organization>,
    pub next_page_token: String,
    pub total_size: u64,
}

impl Accounts {
    /// CreateOrganization: the caller becomes its OWNER.
    #[tracing::instrument(skip_all)]
    pub async fn create_organization(
        &self,
        caller: &Principal,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<OrgMembership> {
        let name = OrganizationName::parse("name", name)
            .map_err(|v| Error::InvalidArgument(vec![v]))?
            .into_string();
        let user_id = caller.user.id;
        let created = store::serializable(&self.db, |txn| {
            let name = name.clone();
            Box::pin(async move {
                let organization = orgs::insert_organization(
                    txn,
                    &Organization {
                        id: Uuid::now_v7(),
                        name,
                        created_at: now,
                        updated_at: now,
                    },
                )
                .await?;
                let membership = orgs::insert_membership(
                    txn,
                    &Membership {
                        user_id,
                        organization_id: organization.id,
                        role: OrgRole::Owner,
                        roles: Vec::new(),
                        joined_at: now,
                    },
                )
                .await?;
                Ok::<_, Error>(OrgMembership {
                    organization,
                    membership,
                })
            })
        })
        .await?;
        tracing::info!(organization_id = %created.organization.id, %user_id, "organization created");
        Ok(created)
    }

    /// ListMyOrganizations: oldest membership first.
    pub async fn my_organizations(&self, caller: &Principal) -> Result<Vec<OrgMembership>> {
        Ok(orgs::memberships_of_user(&self.db, caller.user.id).await?)
    }

    /// GetOrganization: MEMBER; the caller's membership, unless an admin who
    /// is not one.
    pub async fn get_organization(
        &self,
        caller: &Principal,
        organization_id: &str,
    ) -> Result<(Organization, Option<Membership>)> {
        let org = id("organization_id", organization_id)?;
        let Access {
            organization,
            membership,
            ..
        } = access(&self.db, Who::from(caller), org, OrgAction::Read).await?;
        Ok((organization, membership))
    }

    /// UpdateOrganization: ADMIN. A change to nothing leaves `updated_at`.
    #[tracing::instrument(skip_all)]
    pub async fn update_organization(
        &self,
        caller: &Principal,
        organization_id: &str,
        update: OrganizationUpdate,
        now: DateTime<Utc>,
    ) -> Result<Organization> {
        let org = id("organization_id", organization_id)?;
        let name = update
            .name
            .map(|n| OrganizationName::parse("name", &n))
            .transpose()
            .map_err(|v| Error::InvalidArgument(vec![v]))?
            .map(OrganizationName::into_string);
        let who = Who::from(caller);
        store::serializable(&self.db, |txn| {
            let name = name.clone();
            Box::pin(async move {
                let Access { organization, .. } = access(txn, who, org, OrgAction::Manage).await?;
                match name {
                    Some(name) if name != organization.name => {
                        Ok(orgs::rename_organization(txn, org, &name, now).await?)
                    }
                    _ => Ok::<_, Error>(organization),
                }
            })
        })
        .await
    }

    /// DeleteOrganization: OWNER. Its memberships and invitations go with
    /// it, and every session that acts for it is revoked.
    #[tracing::instrument(skip_all)]
    pub async fn delete_organization(
        &self,
        caller: &Principal,
        organization_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let org = id("organization_id", organization_id)?;
        let who = Who::from(caller);
        let revoked = store::serializable(&self.db, |txn| {
            Box::pin(async move {
                access(txn, who, org, OrgAction::Delete).await?;
                let revoked = orgs::revoke_organization_sessions(txn, org, now).await?;
                orgs::delete_organization(txn, org).await?;
                Ok::<_, Error>(revoked)
            })
        })
        .await?;
        tracing::info!(organization_id = %org, by = %caller.user.id, revoked, "organization deleted");
        Ok(())
    }

    /// SwitchOrganization: the caller's session acts for an organisation
    /// the caller is a member of (a session only ever acts for one of its
    /// user's memberships, as at login); a new pair, and the session's
    /// refresh token rotated.
    #[tracing::instrument(skip_all)]
    pub async fn switch_organization(
        &self,
        caller: &Principal,
        organization_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenPair> {
        let org = id("organization_id", organization_id)?;
        let session_id = caller.session_id;
        let (ttl, max_lifetime) = (self.refresh_ttl(), self.session_max_lifetime());
        let who = Who::from(caller);
        let (next, expires_at) = store::read_committed(&self.db, |txn| {
            Box::pin(async move {
                let Access { membership, .. } = access(txn, who, org, OrgAction::Read).await?;
                if membership.is_none() {
                    return Err(Error::OrganizationNotFound);
                }
                let session = sessions::find(txn, session_id)
                    .await?
                    .ok_or(Error::SessionRevoked)?;
                if !orgs::switch_session(txn, session_id, org, now).await? {
                    return Err(Error::SessionRevoked);
                }
                let expires_at = session_expiry(session.created_at, now, ttl, max_lifetime);
                let next = RefreshToken::generate()?;
                refresh_tokens::insert(
                    txn,
                    &crate::domain::types::RefreshRecord {
                        token_hash: next.hash.clone(),
                        session_id,
                        created_at: now,
                        expires_at,
                        rotated_at: None,
                    },
                )
                .await?;
                sessions::touch(txn, session_id, now, expires_at).await?;
                Ok::<_, Error>((next, expires_at))
            })
        })
        .await?;
        tracing::info!(%session_id, organization_id = %org, "session switched organization");
        self.token_pair(
            caller.user.id,
            session_id,
            Some(org),
            next.token,
            expires_at,
            now,
        )
    }

    /// ListOrganizations (admins): newest first, ties by id; keyset pages.
    pub async fn list_organizations(
        &self,
        _admin: &Admin,
        page_size: i32,
        page_token: &str,
        name_contains: &str,
    ) -> Result<OrganizationPage> {
        let mut violations = Vec::new();
        let limit = page_limit(page_size, &mut violations);
        let name = name_contains.trim().to_lowercase();
        if name.chars().count() > NAME_FILTER_MAX_CHARS {
            violations.push(FieldViolation::new(
                "name_contains",
                format!("must be at most {NAME_FILTER_MAX_CHARS} characters"),
            ));
        }
        let name = (!name.is_empty()).then_some(name);
        let scope = Scope::Organizations(name.as_deref());
        let keys = self.tokens.page_token_keys();
        let after = if page_token.is_empty() {
            None
        } else {
            match page_token::open_scoped(&keys, page_token, &scope) {
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
        let mut organizations =
            orgs::page_organizations(&self.db, name.as_deref(), after, limit + 1).await?;
        let more = organizations.len() as u64 > limit;
        organizations.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match (more, organizations.last(), keys.first()) {
            (true, Some(last), Some(key)) => page_token::seal_scoped(
                key,
                Cursor {
                    created_at: last.created_at,
                    id: last.id,
                },
                &scope,
            ),
            _ => String::new(),
        };
        let total_size = orgs::count_organizations(&self.db, name.as_deref()).await?;
        Ok(OrganizationPage {
            organizations,
            next_page_token,
            total_size,
        })
    }
}

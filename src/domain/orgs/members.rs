//! Members: listing, changing, removing (and leaving), and adding by an
//! admin. The last-owner invariant is counted in the serializable
//! transaction of the change, as the last-admin one is.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Access, Who, access, id, membership_error};
use crate::{
    domain::{
        accounts::{Accounts, page_limit},
        error::{Error, Result},
        input::parse_roles,
        page_token::{self, Cursor, Scope},
        rules::orgs::{OrgAction, authorize, keep_an_owner},
        types::{Admin, Member, Membership, OrgRole, Principal},
    },
    store::{self, Txn, orgs, users},
};

pub struct MemberPage {
    pub members: Vec<Member>,
    pub next_page_token: String,
    pub total_size: u64,
}

/// An UpdateMember: only what is `Some` changes; `roles` are the raw
/// application roles, checked here.
#[derive(Debug, Default, Clone)]
pub struct MemberUpdate {
    pub role: Option<OrgRole>,
    pub roles: Option<Vec<String>>,
}

/// An AddMember.
pub struct NewMember {
    pub organization_id: String,
    pub user_id: String,
    pub role: OrgRole,
    pub roles: Vec<String>,
}

/// The member as it is now in `txn`.
async fn member_now(txn: &Txn, organization_id: Uuid, user_id: Uuid) -> Result<Member> {
    orgs::find_member(txn, organization_id, user_id)
        .await?
        .ok_or(Error::MemberNotFound)
}

impl Accounts {
    /// ListMembers: MEMBER. Newest joined first, ties by user id; keyset
    /// pages behind tokens bound to the organisation.
    pub async fn list_members(
        &self,
        caller: &Principal,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<MemberPage> {
        let mut violations = Vec::new();
        let org = super::super::input::parse_id("organization_id", organization_id)
            .map_err(|v| violations.push(v))
            .ok();
        let limit = page_limit(page_size, &mut violations);
        let keys = self.tokens.page_token_keys();
        let after = match (org, page_token.is_empty()) {
            (Some(org), false) => {
                match page_token::open_scoped(&keys, page_token, &Scope::Members(org)) {
                    Ok(cursor) => Some((cursor.created_at, cursor.id)),
                    Err(v) => {
                        violations.push(v);
                        None
                    }
                }
            }
            _ => None,
        };
        let Some(org) = org.filter(|_| violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations));
        };
        access(&self.db, Who::from(caller), org, OrgAction::Read).await?;
        let mut members = orgs::page_members(&self.db, org, after, limit + 1).await?;
        let more = members.len() as u64 > limit;
        members.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match (more, members.last(), keys.first()) {
            (true, Some(last), Some(key)) => page_token::seal_scoped(
                key,
                Cursor {
                    created_at: last.membership.joined_at,
                    id: last.membership.user_id,
                },
                &Scope::Members(org),
            ),
            _ => String::new(),
        };
        let total_size = orgs::count_members(&self.db, org).await?;
        Ok(MemberPage {
            members,
            next_page_token,
            total_size,
        })
    }

    /// UpdateMember: ADMIN; OWNER to grant or take OWNER. Never leaves an
    /// organisation with members but no owner.
    #[tracing::instrument(skip_all)]
    pub async fn update_member(
        &self,
        caller: &Principal,
        organization_id: &str,
        user_id: &str,
        update: MemberUpdate,
    ) -> Result<Member> {
        let org = id("organization_id", organization_id)?;
        let target = id("user_id", user_id)?;
        let roles = update
            .roles
            .as_deref()
            .map(|r| parse_roles("roles", r))
            .transpose()
            .map_err(|v| Error::InvalidArgument(vec![v]))?;
        let new_role = update.role;
        let who = Who::from(caller);
        let member = store::serializable(&self.db, |txn| {
            let roles = roles.clone();
            Box::pin(async move {
                let Access { caller: rights, .. } = access(txn, who, org, OrgAction::Read).await?;
                let before = orgs::find_membership(txn, target, org)
                    .await?
                    .ok_or(Error::MemberNotFound)?;
                let after = new_role.unwrap_or(before.role);
                authorize(
                    rights,
                    OrgAction::UpdateMember {
                        from: before.role,
                        to: after,
                    },
                )?;
                let role = (after != before.role).then_some(after);
                let roles = roles.filter(|r| *r != before.roles);
                orgs::update_membership(txn, target, org, role, roles.as_deref())
                    .await
                    .map_err(membership_error)?;
                keep_an_owner(
                    before.role,
                    Some(after),
                    orgs::count_owners(txn, org).await?,
                    orgs::count_members(txn, org).await?,
                )?;
                member_now(txn, org, target).await
            })
        })
        .await?;
        tracing::info!(organization_id = %org, user_id = %target, by = %caller.user.id, "member updated");
        Ok(member)
    }

    /// RemoveMember: ADMIN; OWNER to remove an OWNER; anyone to leave. The
    /// removed user's sessions that act for the organisation are revoked;
    /// when the last member goes, so does the organisation.
    #[tracing::instrument(skip_all)]
    pub async fn remove_member(
        &self,
        caller: &Principal,
        organization_id: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let org = id("organization_id", organization_id)?;
        let target = id("user_id", user_id)?;
        let who = Who::from(caller);
        let revoked = store::serializable(&self.db, |txn| {
            Box::pin(async move {
                let Access { caller: rights, .. } = access(txn, who, org, OrgAction::Read).await?;
                let removed = orgs::find_membership(txn, target, org)
                    .await?
                    .ok_or(Error::MemberNotFound)?;
                let action = if target == who.user_id {
                    OrgAction::Leave
                } else {
                    OrgAction::RemoveMember {
                        target: removed.role,
                    }
                };
                authorize(rights, action)?;
                if orgs::delete_membership(txn, target, org).await? == 0 {
                    return Err(Error::MemberNotFound);
                }
                let members = orgs::count_members(txn, org).await?;
                keep_an_owner(
                    removed.role,
                    None,
                    orgs::count_owners(txn, org).await?,
                    members,
                )?;
                let revoked = orgs::revoke_member_sessions(txn, target, org, now).await?;
                if members == 0 {
                    orgs::delete_organization(txn, org).await?;
                }
                Ok::<_, Error>(revoked)
            })
        })
        .await?;
        tracing::info!(organization_id = %org, user_id = %target, by = %caller.user.id, revoked, "member removed");
        Ok(())
    }

    /// AddMember (admins): an existing user joins an organisation directly.
    #[tracing::instrument(skip_all)]
    pub async fn add_member(
        &self,
        admin: &Admin,
        new: NewMember,
        now: DateTime<Utc>,
    ) -> Result<Member> {
        let org = super::super::input::parse_id("organization_id", &new.organization_id);
        let user = super::super::input::parse_id("user_id", &new.user_id);
        let roles = parse_roles("roles", &new.roles);
        let (org, user, roles) = match (org, user, roles) {
            (Ok(org), Ok(user), Ok(roles)) => (org, user, roles),
            (org, user, roles) => {
                return Err(Error::InvalidArgument(
                    [org.err(), user.err(), roles.err()]
                        .into_iter()
                        .flatten()
                        .collect(),
                ));
            }
        };
        let role = new.role;
        let member = store::serializable(&self.db, |txn| {
            let roles = roles.clone();
            Box::pin(async move {
                orgs::find_organization(txn, org)
                    .await?
                    .ok_or(Error::OrganizationNotFound)?;
                users::find(txn, user).await?.ok_or(Error::UserNotFound)?;
                if orgs::find_membership(txn, user, org).await?.is_some() {
                    return Err(Error::AlreadyMember);
                }
                orgs::insert_membership(
                    txn,
                    &Membership {
                        user_id: user,
                        organization_id: org,
                        role,
                        roles,
                        joined_at: now,
                    },
                )
                .await
                .map_err(membership_error)?;
                member_now(txn, org, user).await
            })
        })
        .await?;
        tracing::info!(organization_id = %org, user_id = %user, by = %admin.id(), "member added");
        Ok(member)
    }
}

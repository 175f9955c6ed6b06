//! Organisations, memberships and invitations.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
    prelude::*,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};

use super::{
    StoreError, StoreResult,
    entities::{invitation, membership, organization, refresh_token, session, user},
};
use crate::domain::types::{Invitation, Member, Membership, OrgMembership, OrgRole, Organization};

impl From<membership::Role> for OrgRole {
    fn from(role: membership::Role) -> Self {
        match role {
            membership::Role::Member => Self::Member,
            membership::Role::Admin => Self::Admin,
            membership::Role::Owner => Self::Owner,
        }
    }
}

impl From<OrgRole> for membership::Role {
    fn from(role: OrgRole) -> Self {
        match role {
            OrgRole::Member => Self::Member,
            OrgRole::Admin => Self::Admin,
            OrgRole::Owner => Self::Owner,
        }
    }
}

/// Application roles as stored: sorted, separated by one space.
pub(super) fn roles_from_column(column: &str) -> Vec<String> {
    column
        .split(' ')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

fn roles_column(roles: &[String]) -> String {
    roles.join(" ")
}

impl From<organization::Model> for Organization {
    fn from(row: organization::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl From<membership::Model> for Membership {
    fn from(row: membership::Model) -> Self {
        Self {
            user_id: row.user_id,
            organization_id: row.organization_id,
            role: row.role.into(),
            roles: roles_from_column(&row.roles),
            joined_at: row.joined_at,
        }
    }
}

impl From<invitation::Model> for Invitation {
    fn from(row: invitation::Model) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            email: row.email,
            role: row.role.into(),
            roles: roles_from_column(&row.roles),
            token_hash: row.token_hash,
            invited_by: row.invited_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            accepted_at: row.accepted_at,
            revoked_at: row.revoked_at,
        }
    }
}

// Organisations.

pub async fn insert_organization<C: ConnectionTrait>(
    db: &C,
    org: &Organization,
) -> StoreResult<Organization> {
    Ok(organization::ActiveModel::from(organization::Model {
        id: org.id,
        name: org.name.clone(),
        created_at: org.created_at,
        updated_at: org.updated_at,
        member_count: 0,
    })
    .insert(db)
    .await?
    .into())
}

pub async fn find_organization<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> StoreResult<Option<Organization>> {
    Ok(organization::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(Organization::from))
}

/// `StoreError::NotFound` if it is gone.
pub async fn rename_organization<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    name: &str,
    now: DateTime<Utc>,
) -> StoreResult<Organization> {
    let row = organization::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(id),
        name: sea_orm::ActiveValue::Set(name.to_owned()),
        updated_at: sea_orm::ActiveValue::Set(now),
        ..Default::default()
    };
    Ok(row.update(db).await?.into())
}

/// Deletes it with (by cascade) its memberships and invitations.
pub async fn delete_organization<C: ConnectionTrait>(db: &C, id: Uuid) -> StoreResult<u64> {
    Ok(organization::Entity::delete_by_id(id)
        .exec(db)
        .await?
        .rows_affected)
}

fn name_condition(name_contains: Option<&str>) -> Condition {
    let mut condition = Condition::all();
    if let Some(part) = name_contains {
        // Matched literally, case-insensitively: `part` is lower-case.
        let escaped = part
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = LikeExpr::new(format!("%{escaped}%")).escape('\\');
        condition = condition.add(
            Expr::expr(Func::lower(Expr::col((
                organization::Entity,
                organization::Column::Name,
            ))))
            .like(pattern),
        );
    }
    condition
}

/// Up to `limit` organisations, newest first (ties by id, descending),
/// strictly after the cursor `(created_at, id)` when given.
pub async fn page_organizations<C: ConnectionTrait>(
    db: &C,
    name_contains: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u64,
) -> StoreResult<Vec<Organization>> {
    let mut query = organization::Entity::find().filter(name_condition(name_contains));
    if let Some((created_at, id)) = after {
        let key = Expr::tuple([
            Expr::col((organization::Entity, organization::Column::CreatedAt)),
            Expr::col((organization::Entity, organization::Column::Id)),
        ]);
        query = query.filter(key.lt(Expr::tuple([Expr::value(created_at), Expr::value(id)])));
    }
    Ok(query
        .order_by_desc(organization::Column::CreatedAt)
        .order_by_desc(organization::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(Organization::from)
        .collect())
}

pub async fn count_organizations<C: ConnectionTrait>(
    db: &C,
    name_contains: Option<&str>,
) -> StoreResult<u64> {
    Ok(organization::Entity::find()
        .filter(name_condition(name_contains))
        .count(db)
        .await?)
}

// Memberships.

/// Moves an organisation's member count, in the transaction that adds or
/// removes memberships.
async fn count_in<C: ConnectionTrait>(db: &C, organization_id: Uuid, by: i64) -> StoreResult<()> {
    organization::Entity::update_many()
        .col_expr(
            organization::Column::MemberCount,
            Expr::col(organization::Column::MemberCount).add(by),
        )
        .filter(organization::Column::Id.eq(organization_id))
        .exec(db)
        .await?;
    Ok(())
}

/// `StoreError::Unique` if the user is a member already. Counts it in the
/// organisation's member count (the same transaction, so a failure undoes
/// both).
pub async fn insert_membership<C: ConnectionTrait>(
    db: &C,
    m: &Membership,
) -> StoreResult<Membership> {
    // A composite primary key: sea-orm's insert would read the row back by
    // a key it cannot name, so insert and return what was written.
    membership::Entity::insert(membership::ActiveModel::from(membership::Model {
        user_id: m.user_id,
        organization_id: m.organization_id,
        role: m.role.into(),
        roles: roles_column(&m.roles),
        joined_at: m.joined_at,
    }))
    .exec_without_returning(db)
    .await?;
    count_in(db, m.organization_id, 1).await?;
    Ok(m.clone())
}

pub async fn find_membership<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    organization_id: Uuid,
) -> StoreResult<Option<Membership>> {
    Ok(membership::Entity::find_by_id((user_id, organization_id))
        .one(db)
        .await?
        .map(Membership::from))
}

/// A user's memberships with their organisations, oldest first.
pub async fn memberships_of_user<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
) -> StoreResult<Vec<OrgMembership>> {
    let rows = membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .find_also_related(organization::Entity)
        .order_by_asc(membership::Column::JoinedAt)
        .order_by_asc(membership::Column::OrganizationId)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(m, o)| {
            o.map(|o| OrgMembership {
                organization: o.into(),
                membership: m.into(),
            })
        })
        .collect())
}

/// Writes the role and roles given; `StoreError::NotFound` if the
/// membership is gone.
pub async fn update_membership<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    organization_id: Uuid,
    role: Option<OrgRole>,
    roles: Option<&[String]>,
) -> StoreResult<()> {
    let mut update = membership::Entity::update_many()
        .filter(membership::Column::UserId.eq(user_id))
        .filter(membership::Column::OrganizationId.eq(organization_id));
    if let Some(role) = role {
        update = update.col_expr(
            membership::Column::Role,
            Expr::value(membership::Role::from(role)),
        );
    }
    if let Some(roles) = roles {
        update = update.col_expr(membership::Column::Roles, Expr::value(roles_column(roles)));
    }
    if role.is_none() && roles.is_none() {
        return Ok(());
    }
    match update.exec(db).await?.rows_affected {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// Removes a membership and uncounts it.
pub async fn delete_membership<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    organization_id: Uuid,
) -> StoreResult<u64> {
    let deleted = membership::Entity::delete_many()
        .filter(membership::Column::UserId.eq(user_id))
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .exec(db)
        .await?
        .rows_affected;
    if deleted > 0 {
        count_in(db, organization_id, -i64::try_from(deleted).unwrap_or(1)).await?;
    }
    Ok(deleted)
}

/// An organisation's members, from its member count: one row, however many
/// members (0 for an organisation that is gone).
pub async fn count_members<C: ConnectionTrait>(db: &C, organization_id: Uuid) -> StoreResult<u64> {
    let count = organization::Entity::find_by_id(organization_id)
        .select_only()
        .column(organization::Column::MemberCount)
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(count.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

pub async fn count_owners<C: ConnectionTrait>(db: &C, organization_id: Uuid) -> StoreResult<u64> {
    Ok(membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .filter(membership::Column::Role.eq(membership::Role::Owner))
        .count(db)
        .await?)
}

/// A user's memberships, without their organisations.
pub async fn memberships_of<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
) -> StoreResult<Vec<Membership>> {
    Ok(membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id))
        .all(db)
        .await?
        .into_iter()
        .map(Membership::from)
        .collect())
}

fn member(row: membership::Model, user: user::Model) -> Member {
    Member {
        membership: row.into(),
        email: user.email,
        display_name: user.display_name,
    }
}

pub async fn find_member<C: ConnectionTrait>(
    db: &C,
    organization_id: Uuid,
    user_id: Uuid,
) -> StoreResult<Option<Member>> {
    let found = membership::Entity::find_by_id((user_id, organization_id))
        .find_also_related(user::Entity)
        .one(db)
        .await?;
    Ok(found.and_then(|(m, u)| u.map(|u| member(m, u))))
}

/// Up to `limit` members of an organisation, newest joined first (ties by
/// user id, descending), strictly after the cursor `(joined_at, user_id)`;
/// answered from the (organization_id, joined_at, user_id) index.
pub async fn page_members<C: ConnectionTrait>(
    db: &C,
    organization_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u64,
) -> StoreResult<Vec<Member>> {
    let mut query =
        membership::Entity::find().filter(membership::Column::OrganizationId.eq(organization_id));
    if let Some((joined_at, user_id)) = after {
        let key = Expr::tuple([
            Expr::col((membership::Entity, membership::Column::JoinedAt)),
            Expr::col((membership::Entity, membership::Column::UserId)),
        ]);
        query = query.filter(key.lt(Expr::tuple([Expr::value(joined_at), Expr::value(user_id)])));
    }
    let rows = query
        .find_also_related(user::Entity)
        .order_by_desc(membership::Column::JoinedAt)
        .order_by_desc(membership::Column::UserId)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(m, u)| u.map(|u| member(m, u)))
        .collect())
}

// Sessions acting for organisations.

fn live_sessions(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(session::Column::RevokedAt.is_null())
        .add(session::Column::ExpiresAt.gt(now))
}

/// Revokes the user's live sessions that act for the organisation.
pub async fn revoke_member_sessions<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    organization_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    Ok(session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::OrganizationId.eq(organization_id))
        .filter(live_sessions(now))
        .exec(db)
        .await?
        .rows_affected)
}

/// Revokes every live session that acts for the organisation.
pub async fn revoke_organization_sessions<C: ConnectionTrait>(
    db: &C,
    organization_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    Ok(session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::OrganizationId.eq(organization_id))
        .filter(live_sessions(now))
        .exec(db)
        .await?
        .rows_affected)
}

/// Points a live session at another organisation and marks its unused
/// refresh tokens rotated (presenting one again is then reuse); false if
/// the session is no longer live.
pub async fn switch_session<C: ConnectionTrait>(
    db: &C,
    session_id: Uuid,
    organization_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let switched = session::Entity::update_many()
        .col_expr(
            session::Column::OrganizationId,
            Expr::value(organization_id),
        )
        .filter(session::Column::Id.eq(session_id))
        .filter(live_sessions(now))
        .exec(db)
        .await?
        .rows_affected;
    if switched == 0 {
        return Ok(false);
    }
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
        .filter(refresh_token::Column::SessionId.eq(session_id))
        .filter(refresh_token::Column::RotatedAt.is_null())
        .exec(db)
        .await?;
    Ok(true)
}

// Invitations.

pub async fn insert_invitation<C: ConnectionTrait>(db: &C, i: &Invitation) -> StoreResult<()> {
    invitation::ActiveModel::from(invitation::Model {
        id: i.id,
        organization_id: i.organization_id,
        email: i.email.clone(),
        role: i.role.into(),
        roles: roles_column(&i.roles),
        token_hash: i.token_hash.clone(),
        invited_by: i.invited_by,
        created_at: i.created_at,
        expires_at: i.expires_at,
        accepted_at: i.accepted_at,
        revoked_at: i.revoked_at,
    })
    .insert(db)
    .await?;
    Ok(())
}

fn pending(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(invitation::Column::AcceptedAt.is_null())
        .add(invitation::Column::RevokedAt.is_null())
        .add(invitation::Column::ExpiresAt.gt(now))
}

/// Revokes the pending invitations of an organisation for an email (a new
/// one replaces them).
pub async fn revoke_pending_invitations<C: ConnectionTrait>(
    db: &C,
    organization_id: Uuid,
    email: &str,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    Ok(invitation::Entity::update_many()
        .col_expr(invitation::Column::RevokedAt, Expr::value(now))
        .filter(invitation::Column::OrganizationId.eq(organization_id))
        .filter(invitation::Column::Email.eq(email))
        .filter(pending(now))
        .exec(db)
        .await?
        .rows_affected)
}

pub async fn find_invitation_by_hash<C: ConnectionTrait>(
    db: &C,
    hash: &[u8],
) -> StoreResult<Option<Invitation>> {
    Ok(invitation::Entity::find()
        .filter(invitation::Column::TokenHash.eq(hash.to_vec()))
        .one(db)
        .await?
        .map(Invitation::from))
}

pub async fn find_invitation<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> StoreResult<Option<Invitation>> {
    Ok(invitation::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(Invitation::from))
}

/// An organisation's invitations, newest first; only pending ones unless
/// `include_inactive`.
pub async fn list_invitations<C: ConnectionTrait>(
    db: &C,
    organization_id: Uuid,
    include_inactive: bool,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Invitation>> {
    let mut query =
        invitation::Entity::find().filter(invitation::Column::OrganizationId.eq(organization_id));
    if !include_inactive {
        query = query.filter(pending(now));
    }
    Ok(query
        .order_by_desc(invitation::Column::CreatedAt)
        .order_by_desc(invitation::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(Invitation::from)
        .collect())
}

/// Revokes an invitation if it is still pending.
pub async fn revoke_invitation<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    Ok(invitation::Entity::update_many()
        .col_expr(invitation::Column::RevokedAt, Expr::value(now))
        .filter(invitation::Column::Id.eq(id))
        .filter(pending(now))
        .exec(db)
        .await?
        .rows_affected)
}

/// Marks a pending invitation accepted. True for the one caller that did:
/// the condition in the UPDATE makes one winner at any isolation level.
pub async fn claim_invitation<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = invitation::Entity::update_many()
        .col_expr(invitation::Column::AcceptedAt, Expr::value(now))
        .filter(invitation::Column::Id.eq(id))
        .filter(pending(now))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, TransactionSession, TransactionTrait, prelude::*,
    sea_query::Expr,
};

use super::{
    StoreResult, batches,
    entities::{refresh_token, session, user},
    refresh_tokens,
};
use crate::domain::{
    input::Device,
    types::{RefreshRecord, Session, User},
};

impl From<session::Model> for Session {
    fn from(row: session::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            device: Device {
                id: row.device_id,
                name: row.device_name,
                kind: row.device_type,
            },
            user_agent: row.user_agent,
            ip_address: row.ip_address,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            organization_id: row.organization_id,
        }
    }
}

fn row(s: &Session) -> session::Model {
    session::Model {
        id: s.id,
        user_id: s.user_id,
        device_id: s.device.id.clone(),
        device_name: s.device.name.clone(),
        device_type: s.device.kind.clone(),
        user_agent: s.user_agent.clone(),
        ip_address: s.ip_address.clone(),
        created_at: s.created_at,
        last_used_at: s.last_used_at,
        expires_at: s.expires_at,
        revoked_at: s.revoked_at,
        organization_id: s.organization_id,
    }
}

/// A new session together with its first refresh token, in one
/// transaction: a session without its token (a cut between the two) would
/// be a login that can never be refreshed.
pub async fn insert_with_refresh_token<C: TransactionTrait>(
    db: &C,
    session: &Session,
    token: &RefreshRecord,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    session::ActiveModel::from(row(session))
        .insert(&txn)
        .await?;
    refresh_tokens::insert(&txn, token).await?;
    txn.commit().await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(db: &C, id: Uuid) -> StoreResult<Option<Session>> {
    Ok(session::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(Session::from))
}

/// A session and its user, in one round trip: what every bearer call checks.
pub async fn find_with_user<C: ConnectionTrait>(
    db: &C,
    session_id: Uuid,
) -> StoreResult<Option<(Session, User)>> {
    let found = session::Entity::find_by_id(session_id)
        .find_also_related(user::Entity)
        .one(db)
        .await?;
    Ok(found.and_then(|(s, u)| u.map(|u| (s.into(), u.into()))))
}

/// Not revoked and not expired at `now`.
fn live(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(session::Column::RevokedAt.is_null())
        .add(session::Column::ExpiresAt.gt(now))
}

/// A user's sessions, newest first; only the live ones unless
/// `include_inactive`.
pub async fn list_for_user<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    include_inactive: bool,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Session>> {
    let mut query = session::Entity::find().filter(session::Column::UserId.eq(user_id));
    if !include_inactive {
        query = query.filter(live(now));
    }
    Ok(query
        .order_by_desc(session::Column::CreatedAt)
        .order_by_desc(session::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(Session::from)
        .collect())
}

/// Revokes one session if it is still live; how many were revoked (0 or 1).
pub async fn revoke<C: ConnectionTrait>(db: &C, id: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
    let result = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::Id.eq(id))
        .filter(live(now))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Revokes every live session of a user, except `keep`; how many.
pub async fn revoke_all_for_user<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut update = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::UserId.eq(user_id))
        .filter(live(now));
    if let Some(keep) = keep {
        update = update.filter(session::Column::Id.ne(keep));
    }
    Ok(update.exec(db).await?.rows_affected)
}

/// Sliding expiry: a session used now lives until `expires_at`.
pub async fn touch<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> StoreResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::LastUsedAt, Expr::value(now))
        .col_expr(session::Column::ExpiresAt, Expr::value(expires_at))
        .filter(session::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Sessions that ended (expired or revoked) before `cutoff`.
fn ended_before(cutoff: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(session::Column::ExpiresAt.lt(cutoff))
        .add(session::Column::RevokedAt.lt(cutoff))
}

/// Deletes sessions that ended (expired or revoked) before `cutoff`, with
/// their refresh tokens, and rotated refresh tokens that expired before it;
/// in bounded batches (`batches`), so that a large backlog is pruned
/// however long it takes, never by one statement that times out. How many
/// sessions and tokens went.
pub async fn prune<C: ConnectionTrait>(db: &C, cutoff: DateTime<Utc>) -> StoreResult<(u64, u64)> {
    // The tokens of ended sessions go first, so that deleting a session
    // cascades to nothing: a session holds one rotated token per refresh,
    // thousands over its life, and a batch of sessions must not mean
    // millions of token rows in one statement.
    let ended_sessions = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .filter(ended_before(cutoff))
        .into_query();
    let mut tokens = batches::delete_in_batches::<refresh_token::Entity, _>(
        db,
        refresh_token::Column::TokenHash,
        Condition::all().add(refresh_token::Column::SessionId.in_subquery(ended_sessions)),
    )
    .await?;
    let sessions = batches::delete_in_batches::<session::Entity, _>(
        db,
        session::Column::Id,
        ended_before(cutoff),
    )
    .await?;
    tokens += batches::delete_in_batches::<refresh_token::Entity, _>(
        db,
        refresh_token::Column::TokenHash,
        Condition::all()
            .add(refresh_token::Column::RotatedAt.is_not_null())
            .add(refresh_token::Column::ExpiresAt.lt(cutoff)),
    )
    .await?;
    Ok((sessions, tokens))
}

/// Sessions neither revoked nor expired.
pub async fn count_live<C: ConnectionTrait>(db: &C, now: DateTime<Utc>) -> StoreResult<u64> {
    Ok(session::Entity::find().filter(live(now)).count(db).await?)
}

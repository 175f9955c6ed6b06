use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryFilter, prelude::*, sea_query::Expr,
};

use super::{StoreResult, entities::refresh_token};
use crate::domain::types::RefreshRecord;

impl From<refresh_token::Model> for RefreshRecord {
    fn from(row: refresh_token::Model) -> Self {
        Self {
            token_hash: row.token_hash,
            session_id: row.session_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            rotated_at: row.rotated_at,
        }
    }
}

pub async fn find<C: ConnectionTrait>(db: &C, hash: &[u8]) -> StoreResult<Option<RefreshRecord>> {
    Ok(refresh_token::Entity::find_by_id(hash.to_vec())
        .one(db)
        .await?
        .map(RefreshRecord::from))
}

/// Marks the token rotated if nobody did yet. True for the one caller that
/// did: the condition in the UPDATE makes this safe against concurrent
/// callers on any isolation level.
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    hash: &[u8],
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(hash.to_vec()))
        .filter(refresh_token::Column::RotatedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn insert<C: ConnectionTrait>(db: &C, token: &RefreshRecord) -> StoreResult<()> {
    refresh_token::ActiveModel::from(refresh_token::Model {
        token_hash: token.token_hash.clone(),
        session_id: token.session_id,
        created_at: token.created_at,
        expires_at: token.expires_at,
        rotated_at: token.rotated_at,
    })
    .insert(db)
    .await?;
    Ok(())
}

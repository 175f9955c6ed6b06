use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryFilter, prelude::*, sea_query::Expr,
};

use super::entities::refresh_token;

pub async fn find<C: ConnectionTrait>(
    db: &C,
    hash: &[u8],
) -> Result<Option<refresh_token::Model>, DbErr> {
    refresh_token::Entity::find_by_id(hash.to_vec())
        .one(db)
        .await
}

/// Marks the token rotated if nobody did yet. True for the one caller that
/// did: the condition in the UPDATE makes this safe against concurrent
/// callers on any isolation level.
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    hash: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(hash.to_vec()))
        .filter(refresh_token::Column::RotatedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn insert<C: ConnectionTrait>(db: &C, row: refresh_token::Model) -> Result<(), DbErr> {
    refresh_token::ActiveModel::from(row).insert(db).await?;
    Ok(())
}

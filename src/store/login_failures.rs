use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    prelude::*,
};

use super::entities::login_failure;

pub async fn find<C: ConnectionTrait>(
    db: &C,
    email_hash: &[u8],
) -> Result<Option<login_failure::Model>, DbErr> {
    login_failure::Entity::find_by_id(email_hash.to_vec())
        .one(db)
        .await
}

/// Inserts or replaces the row of `row.email_hash`.
pub async fn save<C: ConnectionTrait>(
    db: &C,
    row: login_failure::Model,
    exists: bool,
) -> Result<(), DbErr> {
    if exists {
        row.into_active_model().reset_all().update(db).await?;
    } else {
        row.into_active_model().reset_all().insert(db).await?;
    }
    Ok(())
}

pub async fn clear<C: ConnectionTrait>(db: &C, email_hash: &[u8]) -> Result<(), DbErr> {
    login_failure::Entity::delete_by_id(email_hash.to_vec())
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes entries whose last failure is older than `cutoff` and that hold
/// no lock past `now`.
pub async fn prune<C: ConnectionTrait>(
    db: &C,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let result = login_failure::Entity::delete_many()
        .filter(login_failure::Column::LastFailureAt.lt(cutoff))
        .filter(
            Condition::any()
                .add(login_failure::Column::LockedUntil.is_null())
                .add(login_failure::Column::LockedUntil.lte(now)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

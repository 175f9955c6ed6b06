use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, prelude::*, sea_query::Expr,
};

use std::time::Duration;

use super::{
    StoreResult,
    entities::{signing_key, signing_replica},
};
use crate::domain::tokens::SigningKey;

impl From<signing_key::Model> for SigningKey {
    fn from(row: signing_key::Model) -> Self {
        Self {
            kid: row.kid,
            algorithm: row.algorithm,
            private_key: row.private_key,
            public_key: row.public_key,
            created_at: row.created_at,
            retired_at: row.retired_at,
            retire_after: row.retire_after,
        }
    }
}

impl From<SigningKey> for signing_key::Model {
    fn from(key: SigningKey) -> Self {
        Self {
            kid: key.kid,
            algorithm: key.algorithm,
            private_key: key.private_key,
            public_key: key.public_key,
            created_at: key.created_at,
            retired_at: key.retired_at,
            retire_after: key.retire_after,
        }
    }
}

/// Keys not yet retired, newest first.
pub async fn live<C: ConnectionTrait>(db: &C) -> StoreResult<Vec<SigningKey>> {
    Ok(signing_key::Entity::find()
        .filter(signing_key::Column::RetiredAt.is_null())
        .order_by_desc(signing_key::Column::CreatedAt)
        .order_by_desc(signing_key::Column::Kid)
        .all(db)
        .await?
        .into_iter()
        .map(SigningKey::from)
        .collect())
}

/// Every key, retired or not, newest first.
pub async fn all<C: ConnectionTrait>(db: &C) -> StoreResult<Vec<SigningKey>> {
    Ok(signing_key::Entity::find()
        .order_by_desc(signing_key::Column::CreatedAt)
        .order_by_desc(signing_key::Column::Kid)
        .all(db)
        .await?
        .into_iter()
        .map(SigningKey::from)
        .collect())
}

pub async fn insert<C: ConnectionTrait>(db: &C, key: SigningKey) -> StoreResult<SigningKey> {
    Ok(
        signing_key::ActiveModel::from(signing_key::Model::from(key))
            .insert(db)
            .await?
            .into(),
    )
}

/// Stores when a replaced key may be deleted, unless a later time is
/// stored already: of replicas that set it at once, the latest time wins,
/// and no replica ever brings it forward.
pub async fn postpone_retirement<C: ConnectionTrait>(
    db: &C,
    kid: &str,
    retire_after: DateTime<Utc>,
) -> StoreResult<()> {
    signing_key::Entity::update_many()
        .col_expr(signing_key::Column::RetireAfter, Expr::value(retire_after))
        .filter(signing_key::Column::Kid.eq(kid))
        .filter(
            Condition::any()
                .add(signing_key::Column::RetireAfter.is_null())
                .add(signing_key::Column::RetireAfter.lt(retire_after)),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Removes a key for good if its stored retire-after time has passed at
/// `now` (checked by the database, against what is stored now); 0 or 1.
pub async fn delete_retired<C: ConnectionTrait>(
    db: &C,
    kid: &str,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    Ok(signing_key::Entity::delete_many()
        .filter(signing_key::Column::Kid.eq(kid))
        .filter(signing_key::Column::RetireAfter.is_not_null())
        .filter(signing_key::Column::RetireAfter.lte(now))
        .exec(db)
        .await?
        .rows_affected)
}

/// Whether the database is a server that replicas share (PostgreSQL), not
/// a file of one process (SQLite).
pub fn is_shared_database(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

pub async fn set_private_key<C: ConnectionTrait>(
    db: &C,
    kid: &str,
    private_key: Vec<u8>,
) -> StoreResult<()> {
    signing_key::ActiveModel {
        kid: sea_orm::ActiveValue::Unchanged(kid.to_owned()),
        private_key: sea_orm::ActiveValue::Set(private_key),
        ..Default::default()
    }
    .update(db)
    .await?;
    Ok(())
}

/// Says that replica `id` runs, and signs with a newly committed key within
/// `switch_within`; forgets replicas not seen for twice their own bound and
/// a minute (stopped ones). Returns the longest bound of the replicas that
/// still run, this one included.
pub async fn report_replica<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    switch_within: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Duration> {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    signing_replica::Entity::insert(signing_replica::ActiveModel {
        replica_id: sea_orm::ActiveValue::Set(id),
        switch_within_ms: sea_orm::ActiveValue::Set(millis(switch_within)),
        seen_at: sea_orm::ActiveValue::Set(now),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(signing_replica::Column::ReplicaId)
            .update_columns([
                signing_replica::Column::SwitchWithinMs,
                signing_replica::Column::SeenAt,
            ])
            .to_owned(),
    )
    .exec(db)
    .await?;
    let mut longest = switch_within;
    for row in signing_replica::Entity::find().all(db).await? {
        let bound = Duration::from_millis(u64::try_from(row.switch_within_ms).unwrap_or(0));
        let forget_after = chrono::TimeDelta::from_std(bound.saturating_mul(2))
            .unwrap_or(chrono::TimeDelta::MAX)
            .checked_add(&chrono::TimeDelta::minutes(1))
            .unwrap_or(chrono::TimeDelta::MAX);
        let gone = row
            .seen_at
            .checked_add_signed(forget_after)
            .is_some_and(|until| until < now);
        if gone {
            signing_replica::Entity::delete_by_id(row.replica_id)
                .exec(db)
                .await?;
        } else {
            longest = longest.max(bound);
        }
    }
    Ok(longest)
}

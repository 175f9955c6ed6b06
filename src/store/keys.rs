use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, prelude::*,
};

use super::{StoreResult, entities::signing_key};

/// Keys not yet retired, newest first.
pub async fn live<C: ConnectionTrait>(db: &C) -> StoreResult<Vec<signing_key::Model>> {
    Ok(signing_key::Entity::find()
        .filter(signing_key::Column::RetiredAt.is_null())
        .order_by_desc(signing_key::Column::CreatedAt)
        .order_by_desc(signing_key::Column::Kid)
        .all(db)
        .await?)
}

pub async fn insert<C: ConnectionTrait>(
    db: &C,
    row: signing_key::Model,
) -> StoreResult<signing_key::Model> {
    Ok(signing_key::ActiveModel::from(row).insert(db).await?)
}

/// Removes a key for good.
pub async fn delete<C: ConnectionTrait>(db: &C, kid: &str) -> StoreResult<u64> {
    Ok(signing_key::Entity::delete_by_id(kid.to_owned())
        .exec(db)
        .await?
        .rows_affected)
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

use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, prelude::*,
};

use super::entities::signing_key;

/// Keys not yet retired, newest first.
pub async fn live<C: ConnectionTrait>(db: &C) -> Result<Vec<signing_key::Model>, DbErr> {
    signing_key::Entity::find()
        .filter(signing_key::Column::RetiredAt.is_null())
        .order_by_desc(signing_key::Column::CreatedAt)
        .order_by_desc(signing_key::Column::Kid)
        .all(db)
        .await
}

pub async fn insert<C: ConnectionTrait>(
    db: &C,
    row: signing_key::Model,
) -> Result<signing_key::Model, DbErr> {
    signing_key::ActiveModel::from(row).insert(db).await
}

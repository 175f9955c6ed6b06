use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, prelude::*,
};

use super::entities::user;

pub async fn find_by_email<C: ConnectionTrait>(
    db: &C,
    email: &str,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(db)
        .await
}

pub async fn email_exists<C: ConnectionTrait>(db: &C, email: &str) -> Result<bool, DbErr> {
    let found = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::Email.eq(email))
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// Whether any account exists at all.
pub async fn any<C: ConnectionTrait>(db: &C) -> Result<bool, DbErr> {
    let found = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    Ok(found.is_some())
}

pub async fn insert<C: ConnectionTrait>(db: &C, row: user::Model) -> Result<user::Model, DbErr> {
    user::ActiveModel::from(row).insert(db).await
}

pub async fn find<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id).one(db).await
}

/// Writes the changed columns of `row` (an active model with only those set).
pub async fn update<C: ConnectionTrait>(
    db: &C,
    row: user::ActiveModel,
) -> Result<user::Model, DbErr> {
    row.update(db).await
}

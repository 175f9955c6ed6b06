use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, prelude::*};

use super::entities::{refresh_token, session, user};

/// A new session together with its first refresh token.
pub async fn insert_with_refresh_token<C: ConnectionTrait>(
    db: &C,
    session_row: session::Model,
    token_row: refresh_token::Model,
) -> Result<session::Model, DbErr> {
    let inserted = session::ActiveModel::from(session_row).insert(db).await?;
    refresh_token::ActiveModel::from(token_row)
        .insert(db)
        .await?;
    Ok(inserted)
}

/// A session and its user, in one round trip: what every bearer call checks.
pub async fn find_with_user<C: ConnectionTrait>(
    db: &C,
    session_id: Uuid,
) -> Result<Option<(session::Model, user::Model)>, DbErr> {
    let found = session::Entity::find_by_id(session_id)
        .find_also_related(user::Entity)
        .one(db)
        .await?;
    Ok(found.and_then(|(s, u)| u.map(|u| (s, u))))
}

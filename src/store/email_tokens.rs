//! One-time email tokens (verification, password reset): stored only as
//! SHA-256, used once by one conditional update.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    prelude::*, sea_query::Expr,
};

use super::{StoreResult, entities::email_token};
use crate::domain::types::{EmailTokenPurpose, EmailTokenRecord};

impl From<EmailTokenPurpose> for email_token::Purpose {
    fn from(purpose: EmailTokenPurpose) -> Self {
        match purpose {
            EmailTokenPurpose::VerifyEmail => Self::VerifyEmail,
            EmailTokenPurpose::ResetPassword => Self::ResetPassword,
        }
    }
}

impl From<email_token::Purpose> for EmailTokenPurpose {
    fn from(purpose: email_token::Purpose) -> Self {
        match purpose {
            email_token::Purpose::VerifyEmail => Self::VerifyEmail,
            email_token::Purpose::ResetPassword => Self::ResetPassword,
        }
    }
}

impl From<email_token::Model> for EmailTokenRecord {
    fn from(row: email_token::Model) -> Self {
        Self {
            token_hash: row.token_hash,
            purpose: row.purpose.into(),
            user_id: row.user_id,
            email: row.email,
            mailed: row.mailed,
            created_at: row.created_at,
            expires_at: row.expires_at,
            used_at: row.used_at,
        }
    }
}

pub async fn insert<C: ConnectionTrait>(db: &C, token: &EmailTokenRecord) -> StoreResult<()> {
    email_token::ActiveModel::from(email_token::Model {
        token_hash: token.token_hash.clone(),
        purpose: token.purpose.into(),
        user_id: token.user_id,
        email: token.email.clone(),
        mailed: token.mailed,
        created_at: token.created_at,
        expires_at: token.expires_at,
        used_at: token.used_at,
    })
    .insert(db)
    .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(
    db: &C,
    hash: &[u8],
) -> StoreResult<Option<EmailTokenRecord>> {
    Ok(email_token::Entity::find_by_id(hash.to_vec())
        .one(db)
        .await?
        .map(EmailTokenRecord::from))
}

/// Ends the user's unused tokens of `purpose` (every purpose: `None`), as
/// a newer token of that purpose or a new address does; how many.
pub async fn kill_for_user<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    purpose: Option<EmailTokenPurpose>,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut update = email_token::Entity::update_many()
        .col_expr(email_token::Column::UsedAt, Expr::value(now))
        .filter(email_token::Column::UserId.eq(user_id))
        .filter(email_token::Column::UsedAt.is_null());
    if let Some(purpose) = purpose {
        update =
            update.filter(email_token::Column::Purpose.eq(email_token::Purpose::from(purpose)));
    }
    Ok(update.exec(db).await?.rows_affected)
}

/// Uses the token: true for the one caller whose update found it unused
/// and unexpired. Of concurrent uses exactly one wins, on any isolation
/// level (PostgreSQL re-checks the condition on the row a concurrent
/// update left; SQLite has one writer).
pub async fn consume<C: ConnectionTrait>(
    db: &C,
    hash: &[u8],
    purpose: EmailTokenPurpose,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = email_token::Entity::update_many()
        .col_expr(email_token::Column::UsedAt, Expr::value(now))
        .filter(email_token::Column::TokenHash.eq(hash.to_vec()))
        .filter(email_token::Column::Purpose.eq(email_token::Purpose::from(purpose)))
        .filter(email_token::Column::UsedAt.is_null())
        .filter(email_token::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// When the user was last mailed a token of `purpose` (the cooldown).
pub async fn last_mailed<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    purpose: EmailTokenPurpose,
) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(email_token::Entity::find()
        .select_only()
        .column(email_token::Column::CreatedAt)
        .filter(email_token::Column::UserId.eq(user_id))
        .filter(email_token::Column::Purpose.eq(email_token::Purpose::from(purpose)))
        .filter(email_token::Column::Mailed.eq(true))
        .order_by_desc(email_token::Column::CreatedAt)
        .limit(1)
        .into_tuple::<DateTimeUtc>()
        .one(db)
        .await?)
}

/// Deletes tokens that expired before `cutoff` (used or not); how many.
pub async fn prune<C: ConnectionTrait>(db: &C, cutoff: DateTime<Utc>) -> StoreResult<u64> {
    Ok(email_token::Entity::delete_many()
        .filter(email_token::Column::ExpiresAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}

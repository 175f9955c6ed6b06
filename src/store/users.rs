use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{Set, Unchanged},
    Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    prelude::*,
    sea_query::{Expr, ExprTrait, LikeExpr},
};

use super::{
    StoreError, StoreResult,
    entities::{user, user_count},
};
use crate::domain::{
    rules::accounts::UserChanges,
    types::{Account, PasswordHash, User, UserFilter, UserStatus},
};

impl From<user::Status> for UserStatus {
    fn from(status: user::Status) -> Self {
        match status {
            user::Status::Pending => Self::Pending,
            user::Status::Approved => Self::Approved,
            user::Status::Disabled => Self::Disabled,
        }
    }
}

impl From<UserStatus> for user::Status {
    fn from(status: UserStatus) -> Self {
        match status {
            UserStatus::Pending => Self::Pending,
            UserStatus::Approved => Self::Approved,
            UserStatus::Disabled => Self::Disabled,
        }
    }
}

impl From<user::Model> for Account {
    fn from(row: user::Model) -> Self {
        Self {
            password_hash: PasswordHash(row.password_hash.0),
            user: User {
                id: row.id,
                email: row.email,
                display_name: row.display_name,
                is_admin: row.is_admin,
                status: row.status.into(),
                created_at: row.created_at,
                updated_at: row.updated_at,
                approved_at: row.approved_at,
                approved_by: row.approved_by,
                email_verified: row.email_verified,
                email_verified_at: row.email_verified_at,
            },
        }
    }
}

impl From<user::Model> for User {
    fn from(row: user::Model) -> Self {
        Account::from(row).user
    }
}

pub async fn find_by_email<C: ConnectionTrait>(
    db: &C,
    email: &str,
) -> StoreResult<Option<Account>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(db)
        .await?
        .map(Account::from))
}

pub async fn email_exists<C: ConnectionTrait>(db: &C, email: &str) -> StoreResult<bool> {
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
pub async fn any<C: ConnectionTrait>(db: &C) -> StoreResult<bool> {
    let found = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// A new account; `StoreError::Unique` if its email is taken.
pub async fn insert<C: ConnectionTrait>(db: &C, account: &Account) -> StoreResult<User> {
    let u = &account.user;
    let row = user::Model {
        id: u.id,
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        password_hash: user::PasswordHash(account.password_hash.0.clone()),
        is_admin: u.is_admin,
        status: u.status.into(),
        created_at: u.created_at,
        updated_at: u.updated_at,
        approved_at: u.approved_at,
        approved_by: u.approved_by,
        email_verified: u.email_verified,
        email_verified_at: u.email_verified_at,
    };
    Ok(user::ActiveModel::from(row).insert(db).await?.into())
}

pub async fn find<C: ConnectionTrait>(db: &C, id: Uuid) -> StoreResult<Option<User>> {
    Ok(user::Entity::find_by_id(id).one(db).await?.map(User::from))
}

/// The account with its password hash.
pub async fn find_account<C: ConnectionTrait>(db: &C, id: Uuid) -> StoreResult<Option<Account>> {
    Ok(user::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(Account::from))
}

/// Writes the columns `changes` names; `StoreError::NotFound` if the account
/// is gone, `StoreError::Unique` if a new email is taken.
pub async fn update<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    changes: &UserChanges,
) -> StoreResult<User> {
    let mut row = user::ActiveModel {
        id: Unchanged(id),
        ..Default::default()
    };
    if let Some(email) = &changes.email {
        row.email = Set(email.clone());
    }
    if let Some(name) = &changes.display_name {
        row.display_name = Set(name.clone());
    }
    if let Some(is_admin) = changes.is_admin {
        row.is_admin = Set(is_admin);
    }
    if let Some(status) = changes.status {
        row.status = Set(status.into());
    }
    if let Some((at, by)) = changes.approved {
        row.approved_at = Set(Some(at));
        row.approved_by = Set(Some(by));
    }
    if let Some((verified, at)) = changes.email_verified {
        row.email_verified = Set(verified);
        row.email_verified_at = Set(at);
    }
    if let Some(at) = changes.updated_at {
        row.updated_at = Set(at);
    }
    if !row.is_changed() {
        return find(db, id).await?.ok_or(StoreError::NotFound);
    }
    Ok(row.update(db).await?.into())
}

/// A new password hash (and `updated_at`, when given); `StoreError::NotFound`
/// if the account is gone.
pub async fn set_password_hash<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    hash: &PasswordHash,
    updated_at: Option<DateTimeUtc>,
) -> StoreResult<()> {
    let mut row = user::ActiveModel {
        id: Unchanged(id),
        password_hash: Set(user::PasswordHash(hash.0.clone())),
        ..Default::default()
    };
    if let Some(at) = updated_at {
        row.updated_at = Set(at);
    }
    row.update(db).await?;
    Ok(())
}

pub async fn delete<C: ConnectionTrait>(db: &C, id: Uuid) -> StoreResult<u64> {
    Ok(user::Entity::delete_by_id(id).exec(db).await?.rows_affected)
}

/// Admins who may act as admins: the last-admin invariant counts these.
pub async fn count_approved_admins<C: ConnectionTrait>(db: &C) -> StoreResult<u64> {
    Ok(user::Entity::find()
        .filter(user::Column::IsAdmin.eq(true))
        .filter(user::Column::Status.eq(user::Status::Approved))
        .count(db)
        .await?)
}

/// The rows `filter` selects.
fn condition(filter: &UserFilter) -> Condition {
    let mut condition = Condition::all();
    if let Some(status) = filter.status {
        condition = condition.add(user::Column::Status.eq(user::Status::from(status)));
    }
    if let Some(part) = &filter.email_contains {
        // `%` and `_` are valid in email addresses: match them literally.
        let escaped = part
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = LikeExpr::new(format!("%{escaped}%")).escape('\\');
        condition = condition.add(Expr::col((user::Entity, user::Column::Email)).like(pattern));
    }
    condition
}

/// How many users a listing has in all. Without a text filter this is read
/// from the counts the triggers keep per status: one small row per status
/// instead of a scan of the table. A text filter has to look at every email.
pub async fn count_matching<C: ConnectionTrait>(db: &C, filter: &UserFilter) -> StoreResult<u64> {
    if filter.email_contains.is_some() {
        return Ok(user::Entity::find()
            .filter(condition(filter))
            .count(db)
            .await?);
    }
    let mut query = user_count::Entity::find();
    if let Some(status) = filter.status {
        query = query.filter(user_count::Column::Status.eq(user::Status::from(status)));
    }
    let totals = query.all(db).await?;
    Ok(totals
        .iter()
        .map(|row| u64::try_from(row.total).unwrap_or(0))
        .sum())
}

/// Up to `limit` users, newest first (ties by id, descending), strictly
/// after the cursor `(created_at, id)` when given. Keyset pagination: pages
/// stay correct while users are added, and every page costs the same.
pub async fn page<C: ConnectionTrait>(
    db: &C,
    filter: &UserFilter,
    after: Option<(DateTimeUtc, Uuid)>,
    limit: u64,
) -> StoreResult<Vec<User>> {
    let mut query = user::Entity::find().filter(condition(filter));
    if let Some((created_at, id)) = after {
        // A row comparison, which both databases answer from the
        // (created_at, id) index; the equivalent OR of two conditions made
        // PostgreSQL filter every row before the cursor (16 ms deep into
        // 100,000 users).
        let key = Expr::tuple([
            Expr::col((user::Entity, user::Column::CreatedAt)),
            Expr::col((user::Entity, user::Column::Id)),
        ]);
        query = query.filter(key.lt(Expr::tuple([Expr::value(created_at), Expr::value(id)])));
    }
    Ok(query
        .order_by_desc(user::Column::CreatedAt)
        .order_by_desc(user::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(User::from)
        .collect())
}

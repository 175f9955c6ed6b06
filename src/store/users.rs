use sea_orm::{
    ActiveModelTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
    prelude::*,
    sea_query::{Expr, ExprTrait, LikeExpr},
};

use super::entities::{user, user_count};

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

pub async fn delete<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<u64, DbErr> {
    Ok(user::Entity::delete_by_id(id).exec(db).await?.rows_affected)
}

/// Admins who may act as admins: the last-admin invariant counts these.
pub async fn count_approved_admins<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    user::Entity::find()
        .filter(user::Column::IsAdmin.eq(true))
        .filter(user::Column::Status.eq(user::Status::Approved))
        .count(db)
        .await
}

/// Which users a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub status: Option<user::Status>,
    /// Lower-case substring of the (lower-case) email.
    pub email_contains: Option<String>,
}

impl UserFilter {
    fn condition(&self) -> Condition {
        let mut condition = Condition::all();
        if let Some(status) = self.status {
            condition = condition.add(user::Column::Status.eq(status));
        }
        if let Some(part) = &self.email_contains {
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
}

/// How many users a listing has in all. Without a text filter this is read
/// from the counts the triggers keep per status: one small row per status
/// instead of a scan of the table. A text filter has to look at every email.
pub async fn count_matching<C: ConnectionTrait>(db: &C, filter: &UserFilter) -> Result<u64, DbErr> {
    if filter.email_contains.is_some() {
        return user::Entity::find()
            .filter(filter.condition())
            .count(db)
            .await;
    }
    let mut query = user_count::Entity::find();
    if let Some(status) = filter.status {
        query = query.filter(user_count::Column::Status.eq(status));
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
) -> Result<Vec<user::Model>, DbErr> {
    let mut query = user::Entity::find().filter(filter.condition());
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
    query
        .order_by_desc(user::Column::CreatedAt)
        .order_by_desc(user::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

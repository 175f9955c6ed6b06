//! The transactional outbox: a mail row is written in the transaction of
//! whatever it tells of (the token it carries, the change it reports), so
//! that a mail exists exactly when its cause was committed. Senders on every
//! replica claim due rows with a lease and delete them once delivered.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, prelude::*, sea_query::Expr,
};

use super::{StoreResult, entities::mail_outbox};
use crate::domain::types::{MailKind, OutgoingMail};

/// Queues `mail`, due at once.
pub async fn queue<C: ConnectionTrait>(db: &C, mail: &OutgoingMail) -> StoreResult<()> {
    mail_outbox::ActiveModel::from(mail_outbox::Model {
        id: mail.id,
        kind: mail.kind.as_str().to_owned(),
        recipient: mail.to.clone(),
        recipient_name: mail.to_name.clone(),
        subject: mail.subject.clone(),
        body: mail.body.clone(),
        created_at: mail.created_at,
        due_at: mail.created_at,
        attempts: 0,
        lease_id: None,
        lease_until: None,
        last_error: None,
    })
    .insert(db)
    .await?;
    Ok(())
}

/// Claims up to `limit` due rows that nobody holds (or whose holder's lease
/// ran out) for `lease` until `lease_until`, and returns them. One update
/// decides: its condition is checked again on each row it changes, so two
/// senders never both claim a row (PostgreSQL re-evaluates it on the row
/// version a concurrent claim left, and skips rows another claim has
/// locked; SQLite has one writer).
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    lease: Uuid,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<OutgoingMail>> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "UPDATE mail_outbox SET lease_id = $1, lease_until = $2 \
             WHERE id IN (SELECT id FROM mail_outbox \
                          WHERE due_at <= $3 AND (lease_until IS NULL OR lease_until <= $4) \
                          ORDER BY due_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
             AND due_at <= $6 AND (lease_until IS NULL OR lease_until <= $7)"
        }
        _ => {
            "UPDATE mail_outbox SET lease_id = ?, lease_until = ? \
             WHERE id IN (SELECT id FROM mail_outbox \
                          WHERE due_at <= ? AND (lease_until IS NULL OR lease_until <= ?) \
                          ORDER BY due_at LIMIT ?) \
             AND due_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
        }
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let values: Vec<sea_orm::Value> = vec![
        lease.into(),
        lease_until.into(),
        now.into(),
        now.into(),
        limit.into(),
        now.into(),
        now.into(),
    ];
    let claimed = db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?
        .rows_affected();
    if claimed == 0 {
        return Ok(Vec::new());
    }
    let rows = mail_outbox::Entity::find()
        .filter(mail_outbox::Column::LeaseId.eq(lease))
        .order_by_asc(mail_outbox::Column::DueAt)
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(outgoing).collect())
}

fn outgoing(row: mail_outbox::Model) -> Option<OutgoingMail> {
    let Some(kind) = MailKind::parse(&row.kind) else {
        tracing::warn!(mail_id = %row.id, kind = row.kind, "mail of an unknown kind left in the outbox");
        return None;
    };
    Some(OutgoingMail {
        id: row.id,
        kind,
        to: row.recipient,
        to_name: row.recipient_name,
        subject: row.subject,
        body: row.body,
        created_at: row.created_at,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
    })
}

/// Deletes a row this lease holds (delivered, or given up): its body, which
/// may hold a token, goes with it.
pub async fn delivered<C: ConnectionTrait>(db: &C, id: Uuid, lease: Uuid) -> StoreResult<()> {
    mail_outbox::Entity::delete_many()
        .filter(mail_outbox::Column::Id.eq(id))
        .filter(mail_outbox::Column::LeaseId.eq(lease))
        .exec(db)
        .await?;
    Ok(())
}

/// Puts a failed row back, due again at `due_at`.
pub async fn retry_at<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    lease: Uuid,
    attempts: u32,
    due_at: DateTime<Utc>,
    error: &str,
) -> StoreResult<()> {
    let error: String = error.chars().take(500).collect();
    mail_outbox::Entity::update_many()
        .col_expr(
            mail_outbox::Column::Attempts,
            Expr::value(i32::try_from(attempts).unwrap_or(i32::MAX)),
        )
        .col_expr(mail_outbox::Column::DueAt, Expr::value(due_at))
        .col_expr(
            mail_outbox::Column::LeaseId,
            Expr::value(Option::<Uuid>::None),
        )
        .col_expr(
            mail_outbox::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(mail_outbox::Column::LastError, Expr::value(Some(error)))
        .filter(mail_outbox::Column::Id.eq(id))
        .filter(mail_outbox::Column::LeaseId.eq(lease))
        .exec(db)
        .await?;
    Ok(())
}

/// Gives rows this lease holds back unsent, due as they were.
pub async fn release<C: ConnectionTrait>(db: &C, lease: Uuid, ids: &[Uuid]) -> StoreResult<()> {
    mail_outbox::Entity::update_many()
        .col_expr(
            mail_outbox::Column::LeaseId,
            Expr::value(Option::<Uuid>::None),
        )
        .col_expr(
            mail_outbox::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(mail_outbox::Column::Id.is_in(ids.to_vec()))
        .filter(mail_outbox::Column::LeaseId.eq(lease))
        .exec(db)
        .await?;
    Ok(())
}

/// How many mails wait, and since when the oldest.
pub async fn backlog<C: ConnectionTrait>(db: &C) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
    let queued = mail_outbox::Entity::find().count(db).await?;
    let oldest = mail_outbox::Entity::find()
        .select_only()
        .column(mail_outbox::Column::CreatedAt)
        .order_by_asc(mail_outbox::Column::CreatedAt)
        .limit(1)
        .into_tuple::<DateTimeUtc>()
        .one(db)
        .await?;
    Ok((queued, oldest))
}

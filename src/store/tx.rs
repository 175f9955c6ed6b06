//! Transactions that retry when the database reports a conflict with a
//! concurrent one. The closure returns the caller's own error type, which
//! says which of its errors are such conflicts (`TxError`).

use std::{future::Future, pin::Pin, time::Duration};

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

use super::StoreError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error a retried transaction can return: built from the store's, and
/// able to say whether it is a conflict worth another try.
pub trait TxError: From<StoreError> {
    fn is_conflict(&self) -> bool;
}

impl TxError for StoreError {
    fn is_conflict(&self) -> bool {
        StoreError::is_conflict(self)
    }
}

/// Runs `op` in a transaction that behaves as if it ran alone, retrying when
/// the database reports a conflict with a concurrent one: SERIALIZABLE on
/// PostgreSQL, `BEGIN IMMEDIATE` (one writer at a time) on SQLite. `op` may
/// therefore run more than once and must not have effects outside `txn`.
pub async fn serializable<T, E, F>(db: &DatabaseConnection, op: F) -> Result<T, E>
where
    E: TxError,
    F: for<'c> FnMut(&'c DatabaseTransaction) -> BoxFuture<'c, Result<T, E>>,
{
    retried_transaction(db, IsolationLevel::Serializable, op).await
}

/// Runs `op` in a transaction at PostgreSQL's default isolation, READ
/// COMMITTED (`BEGIN IMMEDIATE` on SQLite, as above), retried like
/// `serializable` on deadlocks. For operations whose correctness rests on
/// row locks and conditional updates (`UPDATE … WHERE rotated_at IS NULL`
/// has one winner at any isolation level): under SERIALIZABLE, PostgreSQL's
/// page-level predicate locks made unrelated refreshes conflict, and 64 of
/// them at once retried until some gave up.
pub async fn read_committed<T, E, F>(db: &DatabaseConnection, op: F) -> Result<T, E>
where
    E: TxError,
    F: for<'c> FnMut(&'c DatabaseTransaction) -> BoxFuture<'c, Result<T, E>>,
{
    retried_transaction(db, IsolationLevel::ReadCommitted, op).await
}

async fn retried_transaction<T, E, F>(
    db: &DatabaseConnection,
    isolation: IsolationLevel,
    mut op: F,
) -> Result<T, E>
where
    E: TxError,
    F: for<'c> FnMut(&'c DatabaseTransaction) -> BoxFuture<'c, Result<T, E>>,
{
    const MAX_ATTEMPTS: u32 = 30;
    let options = match db.get_database_backend() {
        DbBackend::Sqlite => TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        },
        _ => TransactionOptions {
            isolation_level: Some(isolation),
            ..Default::default()
        },
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result: Result<T, E> = async {
            let txn = db
                .begin_with_options(options)
                .await
                .map_err(|e| E::from(StoreError::from(e)))?;
            let value = op(&txn).await?;
            txn.commit()
                .await
                .map_err(|e| E::from(StoreError::from(e)))?;
            Ok(value)
        }
        .await;
        match result {
            Err(e) if e.is_conflict() && attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, "transaction conflict, retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            other => return other,
        }
    }
}

/// A short, jittered pause so that transactions that collided do not collide
/// again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let mut byte = [0u8; 1];
    let jitter = if getrandom::fill(&mut byte).is_ok() {
        u64::from(byte[0] % 8)
    } else {
        0
    };
    Duration::from_millis((u64::from(attempt.min(10)) * 2 + jitter).min(50))
}

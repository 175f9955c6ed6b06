//! Persistence: sea-orm entities and the queries the domain needs. Nothing
//! here knows about gRPC or about the rules of the domain.

pub mod bearer_lookups;
pub mod entities;
pub mod keys;
pub mod login_failures;
pub mod refresh_tokens;
pub mod sessions;
pub mod users;

use std::{future::Future, pin::Pin, time::Duration};

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    IsolationLevel, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::SqliteJournalMode,
};
use warden_migrations::{Migrator, MigratorTrait};

use crate::error::Result;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a statement may wait for SQLite's write lock, and a query for a
/// pooled connection, before the caller gets an error instead of a hang.
const WAIT_LIMIT: Duration = Duration::from_secs(5);

/// Connects with settings that suit a server: SQLite in WAL mode with a busy
/// timeout (readers never block the writer), foreign keys enforced.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(WAIT_LIMIT)
        .acquire_timeout(WAIT_LIMIT);
    if url.starts_with("sqlite:") {
        // Every connection to an in-memory database is a database of its
        // own, so one connection must serve them all, and never close.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory {
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            options.max_connections(8).min_connections(1);
        }
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(WAIT_LIMIT)
                .foreign_keys(true)
        });
    } else {
        options.max_connections(16).min_connections(1);
    }
    Database::connect(options).await
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Connections in the pool: (open, idle).
pub fn pool_stats(db: &DatabaseConnection) -> (u32, usize) {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    }
}

/// Whether the database answers at all.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.ping().await
}

/// Runs `op` in a transaction that behaves as if it ran alone, retrying when
/// the database reports a conflict with a concurrent one: SERIALIZABLE on
/// PostgreSQL, `BEGIN IMMEDIATE` (one writer at a time) on SQLite. `op` may
/// therefore run more than once and must not have effects outside `txn`.
pub async fn serializable<T, F>(db: &DatabaseConnection, mut op: F) -> Result<T>
where
    F: for<'c> FnMut(&'c DatabaseTransaction) -> BoxFuture<'c, Result<T>>,
{
    const MAX_ATTEMPTS: u32 = 30;
    let options = match db.get_database_backend() {
        DbBackend::Sqlite => TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        },
        _ => TransactionOptions {
            isolation_level: Some(IsolationLevel::Serializable),
            ..Default::default()
        },
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result: Result<T> = async {
            let txn = db.begin_with_options(options).await?;
            let value = op(&txn).await?;
            txn.commit().await?;
            Ok(value)
        }
        .await;
        match result {
            Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
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

//! Persistence: sea-orm entities and the queries the domain needs. Nothing
//! here knows about gRPC or about the rules of the domain.

pub mod backup;
pub mod batches;
pub mod bearer_lookups;
pub mod email_tokens;
pub mod entities;
mod error;
pub mod keys;
pub mod login_failures;
pub mod mail_outbox;
pub mod open;
pub mod orgs;
pub mod refresh_tokens;
pub mod sessions;
pub mod tx;
pub mod users;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    sqlx::{self, Executor as _, sqlite::SqliteJournalMode},
};
use warden_migrations::{IntoSchemaManagerConnection, Migrator, MigratorTrait, SchemaManager};

pub use error::{StoreError, StoreResult};
pub use open::OpenError;
pub use tx::{BoxFuture, read_committed, serializable};

/// A pool of connections to warden's database (SQLite or PostgreSQL), cheap
/// to clone: what the layers above hold, without knowing the ORM behind it.
pub type Db = DatabaseConnection;
/// A transaction on it, as the retried transactions hand it to their work.
pub type Txn = sea_orm::DatabaseTransaction;
/// Either of them, for domain code that reads the same way inside a
/// transaction and out.
pub use sea_orm::ConnectionTrait as Connection;

/// How long a pooled PostgreSQL connection may sit idle before it is
/// pinged again before use.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// Connects with settings that suit a server. `timeout` bounds every wait on
/// the database, so that a call meets an error instead of a hang: opening a
/// connection, waiting for a pooled one, and (PostgreSQL) one statement, or
/// (SQLite) waiting for the write lock. On PostgreSQL a transaction left
/// idle that long is ended by the server too, so a stalled process cannot
/// hold row locks. SQLite runs in WAL mode (readers never block the
/// writer), with foreign keys enforced.
pub async fn connect(url: &str, timeout: Duration) -> StoreResult<DatabaseConnection> {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(timeout)
        .acquire_timeout(timeout);
    // sqlx pings a pooled connection every time it is handed out unless
    // told otherwise: one more round trip per query (on SQLite, one more
    // hop to the connection's worker thread and back). A connection to a
    // file does not go stale; one to a server is pinged only after it sat
    // idle, when the server or something in between may have dropped it.
    // One that broke while in use fails its query and is closed.
    if url.starts_with("sqlite:") {
        options.test_before_acquire(false);
    } else {
        options.test_before_acquire_if_idle_for(STALE_AFTER);
    }
    if url.starts_with("sqlite:") {
        // Every connection to an in-memory database is a database of its
        // own, so one connection must serve them all, and never close:
        // not even when SQLite ended a transaction by itself (see
        // `pool_only_outside_transactions`). Alone, it blocks no other
        // connection, and it reads its own writes.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory {
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            options
                .max_connections(8)
                .min_connections(1)
                .map_sqlx_sqlite_pool_opts(pool_only_outside_transactions);
        }
        options.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(timeout)
                .foreign_keys(true)
        });
    } else {
        let millis = timeout.as_millis().to_string();
        options
            .max_connections(16)
            .min_connections(1)
            .statement_timeout(timeout)
            .map_sqlx_postgres_opts(move |o| {
                o.options([("idle_in_transaction_session_timeout", millis.as_str())])
            });
    }
    Ok(Database::connect(options).await?)
}

/// `connect`, with a failure explained for an operator (see `open`).
pub async fn open(url: &str, timeout: Duration) -> Result<DatabaseConnection, OpenError> {
    match connect(url, timeout).await {
        Ok(db) => Ok(db),
        Err(e) => Err(open::explain(url, &e).await),
    }
}

/// Closes a SQLite connection that comes back to the pool still counted as
/// inside a transaction, instead of pooling it.
///
/// A write that fails on a full disk, at a statement or at `COMMIT`, makes
/// SQLite roll the whole transaction back by itself (on `SQLITE_IOERR`
/// always, on `SQLITE_FULL` unless undoing the statement is enough). sqlx
/// counts the transaction as open until a `COMMIT` or
/// `ROLLBACK` of its own succeeds, and the `ROLLBACK` sent when the
/// transaction is dropped then fails ("no transaction is active"), so the
/// count stays at one. Reused, such a connection opens its next
/// transactions as savepoints: not `BEGIN IMMEDIATE`, and a savepoint
/// rolled back leaves the transaction open. The idle connection then keeps
/// an old snapshot (its writes fail with `SQLITE_BUSY_SNAPSHOT`) or holds
/// the one write lock (every other writer times out with `SQLITE_BUSY`),
/// and what it writes afterwards, acknowledged, is never committed.
/// Closing it ends whatever SQLite still holds for it; the pool opens
/// another when needed.
///
/// PostgreSQL needs none of this: sqlx counts its transaction as ended as
/// soon as it queues the `ROLLBACK` (which PostgreSQL accepts outside a
/// transaction too), and a connection cut mid-transaction fails the ping
/// sqlx sends on release and is closed.
fn pool_only_outside_transactions(
    pool: sqlx::pool::PoolOptions<sqlx::Sqlite>,
) -> sqlx::pool::PoolOptions<sqlx::Sqlite> {
    pool.after_release(|conn, _| {
        Box::pin(async move {
            use sqlx::Connection as _;
            // Commands still queued can only lower the count (the worker
            // itself rolls back a BEGIN that nobody waits for).
            if !conn.is_in_transaction() {
                return Ok(true);
            }
            // A dropped transaction queues its ROLLBACK on the connection's
            // worker: the count is known once the worker has answered.
            conn.ping().await?;
            if !conn.is_in_transaction() {
                return Ok(true);
            }
            tracing::warn!(
                "closing a database connection whose transaction SQLite had already ended \
                 (after a failed write)"
            );
            Ok(false)
        })
    })
}

/// The lock that lets one process at a time migrate a PostgreSQL database;
/// its key is derived from this name.
const MIGRATION_LOCK: &str = "warden schema migrations";

/// Applies every pending migration, safely when several processes start at
/// once: PostgreSQL serialises them with an advisory lock held on a
/// connection of its own, SQLite with its write lock (`BEGIN IMMEDIATE`
/// around the whole run). A database that is up to date is only read, so a
/// read-only database still starts. A database migrated by a newer release
/// (it lists migrations this binary does not know) is left as it is: that
/// is an older replica during a rolling upgrade, or a rollback.
pub async fn migrate(db: &DatabaseConnection) -> StoreResult<()> {
    match check_schema(db).await? {
        Schema::Current => return Ok(()),
        Schema::Newer(unknown) => {
            tracing::warn!(
                migrations = %unknown.join(", "),
                "the database schema is newer than this release; running on it unchanged"
            );
            return Ok(());
        }
        Schema::Behind => {}
    }
    match db.get_database_backend() {
        DbBackend::Postgres => migrate_postgres(db).await?,
        _ => migrate_sqlite(db).await?,
    }
    Ok(())
}

enum Schema {
    Current,
    Behind,
    /// Applied migrations this binary does not know.
    Newer(Vec<String>),
}

/// Where the database stands, read without writing anything.
async fn check_schema<'c>(db: impl IntoSchemaManagerConnection<'c>) -> Result<Schema, DbErr> {
    use sea_orm::sea_query::{Alias, Query};
    let manager = SchemaManager::new(db);
    let table = Migrator::migration_table_name();
    let mut recorded = HashSet::new();
    if manager.has_table(table.to_string()).await? {
        let query = Query::select()
            .column(Alias::new("version"))
            .from(table)
            .to_owned();
        for row in manager.get_connection().query_all(&query).await? {
            recorded.insert(row.try_get::<String>("", "version")?);
        }
    }
    let known: HashSet<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let mut unknown: Vec<String> = recorded.difference(&known).cloned().collect();
    unknown.sort();
    let pending = known.iter().any(|k| !recorded.contains(k));
    match (unknown.is_empty(), pending) {
        (true, false) => Ok(Schema::Current),
        (true, true) => Ok(Schema::Behind),
        (false, false) => Ok(Schema::Newer(unknown)),
        (false, true) => Err(DbErr::Migration(format!(
            "the database lists migrations this release does not know ({}) and lacks some it \
             does: it was migrated by a different line of releases",
            unknown.join(", ")
        ))),
    }
}

/// Under a session-level advisory lock, held on a connection of its own and
/// released when it is closed, whatever happens. Migrations run on another
/// connection of their own, without the statement timeout: building an
/// index on a large table may take long.
async fn migrate_postgres(db: &DatabaseConnection) -> Result<(), DbErr> {
    let conn_err = |e: sqlx::Error| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()));
    let options = (*db.get_postgres_connection_pool().connect_options()).clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0",
                )
                .await
                .map(|_| ())
            })
        })
        .connect_with(options)
        .await
        .map_err(conn_err)?;
    let result = async {
        let lock = sqlx::postgres::PgAdvisoryLock::new(MIGRATION_LOCK);
        let conn = pool.acquire().await.map_err(conn_err)?;
        let guard = match lock.try_acquire(conn).await.map_err(conn_err)? {
            sqlx::Either::Left(guard) => guard,
            sqlx::Either::Right(conn) => {
                tracing::info!("another process is migrating the database; waiting for it");
                lock.acquire(conn).await.map_err(conn_err)?
            }
        };
        let migrations = DatabaseConnection::from(pool.clone());
        // Another process may have migrated while this one waited, maybe
        // a newer release.
        let applied = match check_schema(&migrations).await {
            Ok(Schema::Behind) => Migrator::up(&migrations, None).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        let released = guard.release_now().await.map_err(conn_err);
        applied?;
        released.map(drop)
    }
    .await;
    pool.close().await;
    result
}

/// Inside one `BEGIN IMMEDIATE` transaction: SQLite's single write lock is
/// the migration lock, and DDL is transactional there, so a run that fails
/// leaves nothing half done.
async fn migrate_sqlite(db: &DatabaseConnection) -> Result<(), DbErr> {
    loop {
        let outcome = serializable(db, |txn| {
            Box::pin(async move {
                // Another process may have migrated while this one waited.
                if let Schema::Behind = check_schema(txn).await? {
                    Migrator::up(txn, None).await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .await;
        match outcome {
            Ok(()) => return Ok(()),
            // The write lock stayed taken for a whole busy timeout: another
            // process is migrating (or writing); wait on, as PostgreSQL
            // waits for its lock.
            Err(StoreError::Unavailable {
                kind: error::Unavailability::Busy,
                ..
            }) => {
                tracing::info!("the database is locked by another process; waiting for it");
            }
            Err(StoreError::Unavailable { source, .. } | StoreError::Other(source)) => {
                return Err(source);
            }
            Err(other) => return Err(DbErr::Migration(format!("{other:#}"))),
        }
    }
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
pub async fn ping(db: &DatabaseConnection) -> StoreResult<()> {
    Ok(db.ping().await?)
}

/// What closing the database left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Nothing: PostgreSQL, or SQLite without a write-ahead log (in memory).
    Plain,
    /// SQLite: the log was folded into the database file, and removed
    /// unless another process still has the database open.
    LogFoldedIn,
    /// SQLite: recent writes are still only in the log next to the file.
    LogRemains { wal: PathBuf, reason: String },
}

/// Closes every connection of the pool, waiting for those in use to come
/// back; afterwards nothing can use `db` (every query fails with "pool
/// closed").
///
/// On SQLite the last connection to close folds the write-ahead log into
/// the database file and deletes it, but says nothing when that fails. So
/// the log is first checkpointed explicitly (`TRUNCATE`: every frame copied
/// into the file and the log emptied), which reports whether it could; and
/// after the close the log file is looked at, so that a log that stayed is
/// never silent.
pub async fn close(db: &DatabaseConnection) -> StoreResult<Closed> {
    if db.get_database_backend() != DbBackend::Sqlite {
        db.close_by_ref().await?;
        return Ok(Closed::Plain);
    }
    let file = main_file(db).await;
    let checkpoint = checkpoint(db).await;
    db.close_by_ref().await?;
    let wal = match file {
        Ok(Some(file)) => wal_path(&file),
        // In memory: no file, no log.
        Ok(None) => return Ok(Closed::Plain),
        Err(e) => {
            return Ok(Closed::LogRemains {
                wal: PathBuf::new(),
                reason: format!("cannot tell where the database file is: {e}"),
            });
        }
    };
    let log_left = tokio::fs::metadata(&wal).await.is_ok_and(|m| m.len() > 0);
    let reason = match checkpoint {
        Ok(Checkpoint::NotWal) => return Ok(Closed::Plain),
        Ok(_) if !log_left => return Ok(Closed::LogFoldedIn),
        Ok(Checkpoint::Complete) => "written to after the checkpoint, by another process that \
                                     has the database open or by a call cut off by the drain \
                                     timeout"
            .to_owned(),
        Ok(Checkpoint::Busy) => "another process has the database open and was using it".to_owned(),
        Err(e) => format!("the checkpoint failed: {e}"),
    };
    Ok(Closed::LogRemains { wal, reason })
}

/// How long the checkpoint at close waits for other processes on the same
/// file (it holds off their writers meanwhile). Past it, it copies what it
/// can without waiting, and the log stays for the last one to close.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(1);

enum Checkpoint {
    Complete,
    /// Another connection's reader or writer held it off.
    Busy,
    /// The database keeps no write-ahead log.
    NotWal,
}

async fn checkpoint(db: &DatabaseConnection) -> Result<Checkpoint, DbErr> {
    let conn_err = |e: sqlx::Error| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()));
    let mut conn = db
        .get_sqlite_connection_pool()
        .acquire()
        .await
        .map_err(conn_err)?;
    let outcome = async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {}",
            CHECKPOINT_WAIT.as_millis()
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await
    }
    .await;
    // Not back into the pool with another busy timeout.
    let _ = conn.close().await;
    let (busy, log, _) = outcome.map_err(conn_err)?;
    Ok(match (busy, log) {
        (_, -1) => Checkpoint::NotWal,
        (0, _) => Checkpoint::Complete,
        _ => Checkpoint::Busy,
    })
}

/// The file of a SQLite database's main schema; `None` in memory.
pub(crate) async fn main_file(db: &DatabaseConnection) -> Result<Option<PathBuf>, DbErr> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA database_list",
        ))
        .await?;
    for row in rows {
        let name: String = row.try_get("", "name")?;
        if name == "main" {
            let file: String = row.try_get("", "file")?;
            return Ok((!file.is_empty()).then(|| PathBuf::from(file)));
        }
    }
    Ok(None)
}

/// SQLite's write-ahead log: the database file's name with `-wal` appended.
pub fn wal_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};

    use super::*;

    async fn written(dir: &Path) -> (DatabaseConnection, PathBuf, String) {
        let file = dir.join("warden.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let db = connect(&url, Duration::from_secs(5)).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('a');")
            .await
            .unwrap();
        assert!(std::fs::metadata(wal_path(&file)).unwrap().len() > 0);
        (db, file, url)
    }

    #[tokio::test]
    async fn closing_folds_the_log_into_the_file_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, file, _) = written(dir.path()).await;
        assert_eq!(close(&db).await.unwrap(), Closed::LogFoldedIn);
        assert!(!wal_path(&file).exists());
        assert!(db.ping().await.is_err(), "nothing uses it afterwards");
    }

    /// Another process reading keeps the log: the close says so, and why.
    #[tokio::test]
    async fn a_log_that_stays_is_reported_not_silent() {
        let dir = tempfile::tempdir().unwrap();
        let (db, file, url) = written(dir.path()).await;
        let other = connect(&url, Duration::from_secs(5)).await.unwrap();
        let reading = other.begin().await.unwrap();
        reading.execute_unprepared("SELECT * FROM t").await.unwrap();
        db.execute_unprepared("INSERT INTO t VALUES ('b')")
            .await
            .unwrap();
        match close(&db).await.unwrap() {
            Closed::LogRemains { wal, reason } => {
                assert_eq!(wal, wal_path(&file));
                assert!(reason.contains("another process"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        reading.rollback().await.unwrap();
        other.close().await.unwrap();
    }

    #[tokio::test]
    async fn an_in_memory_database_just_closes() {
        let db = connect("sqlite::memory:", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(close(&db).await.unwrap(), Closed::Plain);
    }
}

//! What can go wrong in the database, sorted into what callers act on: the
//! database is unavailable (the server's condition, not the request's), a
//! concurrent transaction conflicted (retry it), a unique key was taken, a
//! row to change is gone, or anything else. The SQLite and PostgreSQL error
//! codes are read here and nowhere else.

use sea_orm::{DbErr, RuntimeErr};

pub use crate::domain::error::Unavailability;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{}", .kind.describe())]
    Unavailable {
        kind: Unavailability,
        #[source]
        source: DbErr,
    },
    /// A serialization failure or deadlock (PostgreSQL), a locked table or a
    /// stale snapshot (SQLite): worth another try.
    #[error("the transaction conflicted with a concurrent one")]
    Conflict(#[source] DbErr),
    /// A unique constraint (or primary key) refused the row.
    #[error("a unique key is taken")]
    Unique(#[source] DbErr),
    /// The row to update or delete is not there (any more).
    #[error("the row is gone")]
    NotFound,
    #[error(transparent)]
    Other(DbErr),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if let Some(kind) = unavailability(&err) {
            return Self::Unavailable { kind, source: err };
        }
        if is_serialization_failure(&err) {
            return Self::Conflict(err);
        }
        if is_unique_violation(&err) {
            return Self::Unique(err);
        }
        match err {
            DbErr::RecordNotUpdated | DbErr::RecordNotFound(_) => Self::NotFound,
            other => Self::Other(other),
        }
    }
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// The database's own error code: a SQLSTATE on PostgreSQL, the extended
/// result code (as decimal text) on SQLite.
fn sqlx_database_code(err: &DbErr) -> Option<String> {
    match sqlx_error(err)? {
        sea_orm::sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A SQLite result code, as (primary, extended): the primary code is the low
/// byte of the extended one. PostgreSQL's SQLSTATEs are always five
/// characters (`08006`, `57P01`); SQLite's codes are at most four digits.
fn sqlite_code(code: &str) -> Option<(i32, i32)> {
    if code.len() >= 5 {
        return None;
    }
    code.parse::<i32>().ok().map(|c| (c & 0xff, c))
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_BUSY_SNAPSHOT: i32 = SQLITE_BUSY | (2 << 8);

/// unique_violation (PostgreSQL); SQLITE_CONSTRAINT_UNIQUE and
/// SQLITE_CONSTRAINT_PRIMARYKEY.
fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        sqlx_database_code(err).as_deref(),
        Some("23505" | "2067" | "1555")
    )
}

fn is_serialization_failure(err: &DbErr) -> bool {
    let Some(code) = sqlx_database_code(err) else {
        return false;
    };
    match code.as_str() {
        // PostgreSQL: serialization_failure, deadlock_detected.
        "40001" | "40P01" => true,
        // SQLite: a table locked by another connection of the process, or a
        // read snapshot gone stale before its write: worth another try. A
        // plain SQLITE_BUSY comes only after the busy timeout was spent
        // waiting, so it is an unavailable database instead (below).
        other => sqlite_code(other).is_some_and(|(primary, extended)| {
            primary == SQLITE_LOCKED || extended == SQLITE_BUSY_SNAPSHOT
        }),
    }
}

/// Why the database cannot serve a call, when that is the cause of `err`:
/// the database is unreachable, shutting down, out of a resource, out of
/// time, or its storage refuses writes. Each of these is the server's
/// condition, not the request's, and clears without a change to the request.
pub fn unavailability(err: &DbErr) -> Option<Unavailability> {
    use sea_orm::sqlx::Error as Sqlx;
    // No connection at all: the pool could not hand one out, or making one
    // failed (refused, the database gone or misconfigured, sea-orm's
    // "Disconnected").
    if matches!(err, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return Some(Unavailability::Unreachable);
    }
    match sqlx_error(err)? {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed
        | Sqlx::Protocol(_) => Some(Unavailability::Unreachable),
        Sqlx::Database(db) => {
            let code = db.code()?;
            if let Some((primary, extended)) = sqlite_code(&code) {
                return match primary {
                    SQLITE_FULL => Some(Unavailability::StorageFull),
                    SQLITE_READONLY => Some(Unavailability::ReadOnly),
                    SQLITE_IOERR | SQLITE_CANTOPEN => Some(Unavailability::StorageError),
                    SQLITE_BUSY if extended != SQLITE_BUSY_SNAPSHOT => Some(Unavailability::Busy),
                    _ => None,
                };
            }
            postgres_unavailability(&code)
        }
        _ => None,
    }
}

/// PostgreSQL SQLSTATEs (Appendix A of its manual) that mean "not now".
fn postgres_unavailability(sqlstate: &str) -> Option<Unavailability> {
    match sqlstate {
        // disk_full
        "53100" => Some(Unavailability::StorageFull),
        // Class 53, insufficient resources (out of memory, too many
        // connections, …); class 58, system error (I/O error).
        s if s.starts_with("53") || s.starts_with("58") => Some(Unavailability::StorageError),
        // read_only_sql_transaction: a standby, or a server forced read-only.
        "25006" => Some(Unavailability::ReadOnly),
        // Class 08, connection exception; admin_shutdown, crash_shutdown,
        // cannot_connect_now, database_dropped, idle_session_timeout;
        // idle_in_transaction_session_timeout.
        s if s.starts_with("08") => Some(Unavailability::Unreachable),
        "57P01" | "57P02" | "57P03" | "57P04" | "57P05" | "25P03" => {
            Some(Unavailability::Unreachable)
        }
        // query_canceled: the statement timeout (or an operator) stopped it.
        "57014" => Some(Unavailability::Busy),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::{borrow::Cow, sync::Arc};

    use sea_orm::sqlx::{self, error::DatabaseError};

    use super::*;
    use crate::domain::error::Error;

    /// A database error with a given code, as a driver reports it.
    #[derive(Debug)]
    pub(in crate::store) struct Coded(pub &'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl DatabaseError for Coded {
        fn message(&self) -> &str {
            "error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn exec(err: sqlx::Error) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
    }

    fn coded(code: &'static str) -> DbErr {
        exec(sqlx::Error::Database(Box::new(Coded(code))))
    }

    fn is_unavailable(err: DbErr) -> bool {
        matches!(
            Error::from(StoreError::from(err)),
            Error::DatabaseUnavailable { .. }
        )
    }

    #[test]
    fn a_broken_or_missing_connection_is_an_unavailable_database() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [
            exec(sqlx::Error::Io(io())),
            DbErr::Conn(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Io(io())))),
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::PoolTimedOut))),
            exec(sqlx::Error::PoolClosed),
            exec(sqlx::Error::WorkerCrashed),
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed),
            // sea-orm's own, and a connection refused at login.
            DbErr::Conn(RuntimeErr::Internal("Disconnected".to_owned())),
            DbErr::Conn(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Database(
                Box::new(Coded("28P01")),
            )))),
        ] {
            let shown = err.to_string();
            assert!(is_unavailable(err), "{shown}");
        }
    }

    #[test]
    fn postgres_connection_and_shutdown_states_are_an_unavailable_database() {
        for code in [
            "08000", "08003", "08006", "08001", "08004", "57P01", "57P02", "57P03", "57014",
            "25P03", "53100", "53200", "53300", "58030", "25006",
        ] {
            assert!(is_unavailable(coded(code)), "{code}");
        }
        assert_eq!(
            unavailability(&coded("53100")),
            Some(Unavailability::StorageFull)
        );
    }

    #[test]
    fn sqlite_full_read_only_and_io_errors_are_an_unavailable_database() {
        // SQLITE_FULL, SQLITE_READONLY, SQLITE_READONLY_DIRECTORY,
        // SQLITE_IOERR_WRITE, SQLITE_IOERR_SHMSIZE, SQLITE_CANTOPEN, SQLITE_BUSY.
        for code in ["13", "8", "1544", "778", "4874", "14", "5"] {
            assert!(is_unavailable(coded(code)), "{code}");
        }
        assert_eq!(
            unavailability(&coded("13")),
            Some(Unavailability::StorageFull)
        );
        assert_eq!(unavailability(&coded("8")), Some(Unavailability::ReadOnly));
        let message = Error::from(StoreError::from(coded("8"))).to_string();
        assert_eq!(message, "Database unavailable: the database is read-only");
    }

    #[test]
    fn request_errors_stay_what_they_are() {
        // unique_violation, check_violation, SQLITE_CONSTRAINT_UNIQUE.
        for code in ["23505", "23514", "2067"] {
            assert!(!is_unavailable(coded(code)), "{code}");
        }
        assert!(!is_unavailable(DbErr::RecordNotFound("x".into())));
    }

    #[test]
    fn unique_violations_and_vanished_rows_are_told_apart() {
        assert!(matches!(
            StoreError::from(coded("23505")),
            StoreError::Unique(_)
        ));
        assert!(matches!(
            StoreError::from(coded("2067")),
            StoreError::Unique(_)
        ));
        assert!(matches!(
            StoreError::from(DbErr::RecordNotUpdated),
            StoreError::NotFound
        ));
    }

    #[test]
    fn conflicts_are_retried_and_nothing_else_is() {
        let retryable = |err: DbErr| StoreError::from(err).is_conflict();
        // serialization_failure, deadlock_detected, SQLITE_LOCKED,
        // SQLITE_BUSY_SNAPSHOT.
        for code in ["40001", "40P01", "6", "517"] {
            assert!(retryable(coded(code)), "{code}");
        }
        // A plain SQLITE_BUSY: the busy timeout is spent already.
        for code in ["5", "23505", "57P01"] {
            assert!(!retryable(coded(code)), "{code}");
        }
    }
}

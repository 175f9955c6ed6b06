//! The one error type of warden's domain. Each variant is a situation of the
//! contract (API.md, "Errors"); `grpc::status` maps it to a gRPC status once.

use std::time::Duration;

use sea_orm::{DbErr, RuntimeErr};

/// One bad field of a request, for `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.description)
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("Password rejected: {0}")]
    WeakPassword(FieldViolation),
    #[error("Email already registered")]
    EmailTaken,
    #[error("Incorrect email or password")]
    InvalidCredentials,
    #[error("Account pending approval")]
    AccountPending,
    #[error("Account disabled")]
    AccountDisabled,
    #[error("Missing bearer token")]
    TokenMissing,
    #[error("Invalid access token")]
    TokenInvalid,
    #[error("Access token expired")]
    TokenExpired,
    #[error("Session revoked")]
    SessionRevoked,
    #[error("Invalid or expired refresh token")]
    RefreshTokenInvalid,
    #[error("Refresh token already used; session revoked")]
    RefreshTokenReused,
    #[error("Admin rights required")]
    AdminRequired,
    #[error("User not found")]
    UserNotFound,
    #[error("Session not found")]
    SessionNotFound,
    #[error("Cannot remove last admin")]
    LastAdmin,
    #[error("Current password is incorrect")]
    WrongPassword,
    #[error("Too many attempts")]
    RateLimited { retry_after: Duration },
    #[error("Database unavailable")]
    DatabaseUnavailable(#[source] DbErr),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The database said "try again": a serialization failure or deadlock
    /// (PostgreSQL), or a busy or locked database (SQLite).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unexpected(e) => e
                .downcast_ref::<DbErr>()
                .is_some_and(is_serialization_failure),
            _ => false,
        }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if is_connection_failure(&err) {
            Self::DatabaseUnavailable(err)
        } else {
            Self::Unexpected(anyhow::Error::new(err))
        }
    }
}

fn sqlx_database_code(err: &DbErr) -> Option<String> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match &**e {
                sea_orm::sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_serialization_failure(err: &DbErr) -> bool {
    let Some(code) = sqlx_database_code(err) else {
        return false;
    };
    match code.as_str() {
        // PostgreSQL: serialization_failure, deadlock_detected.
        "40001" | "40P01" => true,
        // SQLite: extended result codes; the low byte is the primary code,
        // SQLITE_BUSY (5) or SQLITE_LOCKED (6).
        other => other
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
    }
}

fn is_connection_failure(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                &**e,
                sea_orm::sqlx::Error::Io(_)
                    | sea_orm::sqlx::Error::Tls(_)
                    | sea_orm::sqlx::Error::PoolTimedOut
                    | sea_orm::sqlx::Error::PoolClosed
                    | sea_orm::sqlx::Error::WorkerCrashed
            )
        }
        _ => false,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

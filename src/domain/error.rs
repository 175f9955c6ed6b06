//! The one error type of warden's domain. Each variant is a situation of the
//! contract (docs/api.md, "Errors"); `grpc::status` maps it to a gRPC status
//! once. Nothing here knows the database: the store sorts its errors into a
//! `StoreError`, which becomes one of these.

use std::time::Duration;

use crate::store::{StoreError, tx::TxError};

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
    /// The server is busy (the hashing queue is full, too many calls in
    /// flight), which is not the same as an account being locked: clients
    /// tell the two apart by the reason.
    #[error("Server overloaded, retry later")]
    Overloaded { retry_after: Duration },
    #[error("Database unavailable: {}", .kind.describe())]
    DatabaseUnavailable {
        kind: Unavailability,
        #[source]
        cause: StoreError,
    },
    // Organizations (API.md, "service Organizations").
    /// No such organisation, or the caller is not a member: the same answer,
    /// so that ids of other organisations reveal nothing.
    #[error("Organization not found")]
    OrganizationNotFound,
    #[error("Organization role required")]
    OrgRoleRequired,
    #[error("Member not found")]
    MemberNotFound,
    #[error("Invitation not found")]
    InvitationNotFound,
    #[error("Already a member")]
    AlreadyMember,
    #[error("Cannot remove last owner")]
    LastOwner,
    #[error("Invitation invalid")]
    InvitationInvalid,
    // End of Organizations.
    /// A transaction kept conflicting with concurrent ones after every retry.
    #[error("The database kept refusing a transaction as conflicting")]
    Conflict(#[source] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),

    // Email (API.md, "Email: verification, password reset, invitations").
    /// Unknown, used, expired, killed by a newer one, or sent to an address
    /// the account no longer has: one answer for all, so a token reveals
    /// nothing about why it failed.
    #[error("Invalid or expired email token")]
    EmailTokenInvalid,
    #[error("Email already verified")]
    EmailAlreadyVerified,
    #[error("Email not verified")]
    EmailNotVerified,
    #[error("Mail is not configured")]
    MailNotConfigured,
}

impl Error {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable { kind, .. } => Self::DatabaseUnavailable { kind, cause: err },
            StoreError::Conflict(_) => Self::Conflict(err),
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

impl TxError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

/// Why the database is unavailable, for the log and the client's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// Cannot connect, the connection broke, or the server is shutting down.
    Unreachable,
    /// No answer within the database timeout (a lock held, a slow server).
    Busy,
    /// No space left to write.
    StorageFull,
    /// The database (file, volume or server) does not accept writes.
    ReadOnly,
    /// The storage reports an I/O error, or a resource is exhausted.
    StorageError,
}

impl Unavailability {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unreachable => "cannot reach the database",
            Self::Busy => "the database did not answer in time",
            Self::StorageFull => "the database has no space left",
            Self::ReadOnly => "the database is read-only",
            Self::StorageError => "the database reports a storage or resource error",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

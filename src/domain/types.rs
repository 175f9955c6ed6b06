//! The values warden's domain works with. They belong to the domain: the
//! store maps its rows to and from them, the transport maps them to and from
//! protobuf messages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::{
    error::{Error, Result},
    input::Device,
    tokens::VerifiedToken,
};

/// Where an account stands in the approval workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserStatus {
    /// Registered, waiting for an admin.
    Pending,
    /// May log in.
    Approved,
    /// May not log in; its sessions were revoked.
    Disabled,
}

/// An account as the rest of the service sees it: without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub is_admin: bool,
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub approved_at: Option<DateTime<Utc>>,
    pub approved_by: Option<Uuid>,
    /// The owner proved control of `email`, or an admin said so.
    pub email_verified: bool,
    pub email_verified_at: Option<DateTime<Utc>>,
}

impl User {
    /// An admin who may act as one: what the last-admin invariant counts.
    pub fn is_approved_admin(&self) -> bool {
        self.is_admin && self.status == UserStatus::Approved
    }
}

/// An argon2id PHC string. Its own type so that `Debug` of an account can
/// never put a hash into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// A user with the password hash that only login and password changes see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: User,
    pub password_hash: PasswordHash,
}

/// A login on one device: what refresh tokens and revocation act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub device: Device,
    pub user_agent: String,
    pub ip_address: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The organisation its tokens act for; `None` for none.
    pub organization_id: Option<Uuid>,
}

impl Session {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// A refresh token as stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub token_hash: Vec<u8>,
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

/// What a bearer check reads of a session and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCheck {
    pub session_id: Uuid,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub user: User,
    /// The organisation the session acts for.
    pub organization_id: Option<Uuid>,
    /// The user's membership in it, as it is now; `None` if there is none
    /// (any more).
    pub membership: Option<OrgAccess>,
}

/// Who is calling, as far as the transport can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub user_agent: String,
    pub ip_address: String,
}

/// The caller of a bearer RPC after every check: token, session, account.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub session_id: Uuid,
    pub token: VerifiedToken,
    /// The organisation the session acts for, with the user's place in it
    /// as it is now.
    pub organization: Option<OrgAccess>,
}

/// An approved admin with a live session: the capability every admin
/// operation of the domain asks for. `Admin::check` is its only way in, so
/// holding one means the rights were read from the database for this call.
#[derive(Debug, Clone)]
pub struct Admin(Principal);

impl Admin {
    pub fn check(caller: Principal) -> Result<Self> {
        if caller.user.is_admin {
            Ok(Self(caller))
        } else {
            Err(Error::AdminRequired)
        }
    }

    pub fn id(&self) -> Uuid {
        self.0.user.id
    }

    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

/// A new access token and the refresh token that goes with it.
pub struct TokenPair {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub expires_in: Duration,
    pub refresh_expires_at: DateTime<Utc>,
}

/// Which users a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub status: Option<UserStatus>,
    /// Lower-case substring of the (lower-case) email, matched literally.
    pub email_contains: Option<String>,
}

/// A user's place in an organisation, lowest first (so `>=` reads "at
/// least").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrgRole {
    /// Reads the organisation and its members.
    Member,
    /// And manages MEMBER and ADMIN members and invitations, renames.
    Admin,
    /// And manages owners, deletes the organisation.
    Owner,
}

/// The organisation a session acts for, with the user's role and
/// application roles in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgAccess {
    pub organization_id: Uuid,
    pub role: OrgRole,
    /// Sorted, no duplicates.
    pub roles: Vec<String>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user's membership of an organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: OrgRole,
    /// Sorted, no duplicates.
    pub roles: Vec<String>,
    pub joined_at: DateTime<Utc>,
}

/// A membership with its organisation: one of a user's organisations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgMembership {
    pub organization: Organization,
    pub membership: Membership,
}

/// A member as the other members see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub membership: Membership,
    pub email: String,
    pub display_name: String,
}

/// An invitation as stored: the token only as its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub role: OrgRole,
    pub roles: Vec<String>,
    pub token_hash: Vec<u8>,
    pub invited_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Invitation {
    /// Neither accepted, revoked (or replaced) nor expired at `now`.
    pub fn is_pending(&self, now: DateTime<Utc>) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What a one-time email token is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailTokenPurpose {
    /// VerifyEmail.
    VerifyEmail,
    /// ConfirmPasswordReset.
    ResetPassword,
}

/// A one-time email token as stored: only its hash, with what it is bound
/// to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailTokenRecord {
    pub token_hash: Vec<u8>,
    pub purpose: EmailTokenPurpose,
    pub user_id: Uuid,
    /// The address it was sent (or, by IssueEmailToken, issued) for.
    pub email: String,
    /// Mailed by warden (the cooldown counts these), or handed to a backend.
    pub mailed: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When it was used, or killed by a newer token or an address change.
    pub used_at: Option<DateTime<Utc>>,
}

/// The kinds of mail warden sends (API.md, Email). `Invitation` is composed
/// here for the organisations' CreateInvitation to queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKind {
    VerifyEmail,
    EmailChanged,
    ResetPassword,
    PasswordChanged,
    Invitation,
}

impl MailKind {
    pub const ALL: [Self; 5] = [
        Self::VerifyEmail,
        Self::EmailChanged,
        Self::ResetPassword,
        Self::PasswordChanged,
        Self::Invitation,
    ];

    /// The name stored in the outbox, logged and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::EmailChanged => "email_changed",
            Self::ResetPassword => "reset_password",
            Self::PasswordChanged => "password_changed",
            Self::Invitation => "invitation",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A mail in the outbox. Its body may hold a token: never in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub id: Uuid,
    pub kind: MailKind,
    pub to: String,
    /// The recipient's display name, for the `To` header.
    pub to_name: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
}

impl std::fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

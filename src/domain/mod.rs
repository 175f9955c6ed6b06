//! What warden does: accounts, sessions, tokens, passwords and input rules.
//! Plain Rust in and out; no tonic, no protobuf.

pub mod accounts;
pub mod admin;
pub mod clock;
pub mod input;
pub mod key_encryption;
pub mod lockout;
pub mod page_token;
pub mod password;
pub mod profile;
pub mod sessions;
pub mod tokens;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::store::entities::session::Model as Session;
use crate::store::entities::user;
pub use crate::store::entities::user::Status as UserStatus;

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
}

impl From<user::Model> for User {
    fn from(row: user::Model) -> Self {
        Self {
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            is_admin: row.is_admin,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            approved_at: row.approved_at,
            approved_by: row.approved_by,
        }
    }
}

/// Who is calling, as far as the transport can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub user_agent: String,
    pub ip_address: String,
}

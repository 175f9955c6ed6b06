//! What warden does: accounts, sessions, tokens, passwords and input rules.
//! Plain Rust in and out; no tonic, no protobuf, no ORM.
//!
//! - `types`: the values the domain owns (users, sessions, the caller).
//! - `rules`: the contract's rules as pure functions.
//! - `accounts`: the operations of the Auth and UserAdmin services, which
//!   read what a rule needs from the store, ask it, and write its decision.
//! - `tokens`, `password`, `input`: access and refresh tokens, the password
//!   policy and hasher, request fields checked once on construction.

pub mod accounts;
pub mod clock;
pub mod email;
pub mod error;
pub mod input;
pub mod key_encryption;
pub mod orgs;
pub mod page_token;
pub mod password;
pub mod rules;
pub mod tokens;
pub mod types;

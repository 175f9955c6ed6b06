//! Passwords: the policy a new one must meet, and the argon2id hasher that
//! stores and checks them.

mod hasher;
mod policy;

pub use hasher::{Hasher, HashingCost, Place};
pub use policy::{MAX_PASSWORD_CHARS, NewPassword, PasswordPolicy, normalize};

pub mod login_failure;
pub mod refresh_token;
pub mod session;
pub mod signing_key;
pub mod signing_replica;
pub mod user;
pub mod user_count;

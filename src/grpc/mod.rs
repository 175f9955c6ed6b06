//! Transport: tonic service implementations, the bearer interceptor,
//! protobuf conversion, and the one mapping from domain errors to statuses.

pub mod auth;
pub mod bearer;
pub mod client;
pub mod convert;
pub mod observe;
pub mod organizations;
pub mod status;
pub mod user_admin;

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

use tonic::{Request, Response, Status};

use crate::{domain::types::Principal, state::AppState};

/// What every handler answers.
type Reply<T> = Result<Response<T>, Status>;

/// The caller of a bearer RPC, after the token, session and account
/// checks (the membership of the organisation the session acts for
/// included).
async fn caller<T>(
    state: &AppState,
    request: &Request<T>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Principal, Status> {
    let token = bearer::bearer(request)?;
    Ok(state.accounts.authorize(&token, now).await?)
}

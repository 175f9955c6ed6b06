//! `warden.v1.Auth`.

use std::sync::Arc;

use secrecy::SecretString;
use tonic::{Request, Response, Status};

use super::{bearer::bearer, client::client_info, convert::timestamp};
use crate::{
    app::AppState,
    domain::accounts::{LoginAttempt, NewAccount},
    proto::v1::{self as pb, auth_server::Auth},
};

pub struct AuthApi {
    state: Arc<AppState>,
}

impl AuthApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Auth for AuthApi {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Reply<pb::RegisterResponse> {
        let now = self.state.clock.now();
        let req = request.into_inner();
        let account = NewAccount {
            email: req.email,
            password: SecretString::from(req.password),
            display_name: req.display_name,
        };
        let user = self.state.accounts.register(account, now).await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user.into()),
        }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let now = self.state.clock.now();
        let client = client_info(&request, &self.state.trusted_proxies);
        let req = request.into_inner();
        let attempt = LoginAttempt {
            email: req.email,
            password: SecretString::from(req.password),
            device: req
                .device
                .map(|d| (d.device_id, d.device_name, d.device_type)),
            client,
        };
        let outcome = self.state.accounts.login(attempt, now).await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(outcome.tokens.into()),
            user: Some(outcome.user.into()),
            session_id: outcome.session_id.to_string(),
        }))
    }

    async fn refresh(&self, _request: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        Err(Status::unimplemented("Refresh is not implemented yet"))
    }

    async fn logout(&self, _request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        Err(Status::unimplemented("Logout is not implemented yet"))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Reply<pb::GetMeResponse> {
        let now = self.state.clock.now();
        let token = bearer(&request)?;
        let principal = self.state.accounts.authorize(&token, now).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(principal.user.into()),
        }))
    }

    async fn update_me(
        &self,
        _request: Request<pb::UpdateMeRequest>,
    ) -> Reply<pb::UpdateMeResponse> {
        Err(Status::unimplemented("UpdateMe is not implemented yet"))
    }

    async fn change_password(
        &self,
        _request: Request<pb::ChangePasswordRequest>,
    ) -> Reply<pb::ChangePasswordResponse> {
        Err(Status::unimplemented(
            "ChangePassword is not implemented yet",
        ))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::ListSessionsRequest>,
    ) -> Reply<pb::ListSessionsResponse> {
        Err(Status::unimplemented("ListSessions is not implemented yet"))
    }

    async fn revoke_session(
        &self,
        _request: Request<pb::RevokeSessionRequest>,
    ) -> Reply<pb::RevokeSessionResponse> {
        Err(Status::unimplemented(
            "RevokeSession is not implemented yet",
        ))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Reply<pb::ValidateTokenResponse> {
        let now = self.state.clock.now();
        let req = request.into_inner();
        let response = match self
            .state
            .accounts
            .introspect(&req.access_token, now)
            .await?
        {
            Some(p) => pb::ValidateTokenResponse {
                active: true,
                user_id: p.user.id.to_string(),
                email: p.user.email,
                is_admin: p.user.is_admin,
                session_id: p.session.id.to_string(),
                expires_at: Some(timestamp(p.token.expires_at)),
            },
            None => pb::ValidateTokenResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: self.state.tokens.jwks_json(),
        }))
    }
}

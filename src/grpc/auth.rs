//! `warden.v1.Auth`.

use std::sync::Arc;

use secrecy::SecretString;
use tonic::{Request, Response};

use super::{Reply, caller};
use super::{
    client::client_info,
    convert::{count, org_role, session, timestamp},
};
use crate::{
    domain::accounts::{LoginAttempt, NewAccount, ProfileChange, Registration},
    proto::v1::{self as pb, auth_server::Auth},
    state::AppState,
};

pub struct AuthApi {
    state: Arc<AppState>,
}

impl AuthApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Auth for AuthApi {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Reply<pb::RegisterResponse> {
        let now = self.state.clock.now();
        let req = request.into_inner();
        let registration = Registration {
            account: NewAccount {
                email: req.email,
                password: SecretString::from(req.password),
                display_name: req.display_name,
            },
            organization_name: req.organization_name,
            invitation_token: SecretString::from(req.invitation_token),
        };
        let (user, organization) = self.state.accounts.register(registration, now).await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user.into()),
            organization: organization.map(Into::into),
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
            organization_id: req.organization_id,
        };
        let result = self.state.accounts.login(attempt, now).await;
        self.state.metrics.observe_login(match &result {
            Ok(_) => "success",
            Err(e) => super::status::reason(e),
        });
        let outcome = result?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(outcome.tokens.into()),
            user: Some(outcome.user.into()),
            session_id: outcome.session_id.to_string(),
            membership: outcome.membership.map(Into::into),
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        let now = self.state.clock.now();
        let token = SecretString::from(request.into_inner().refresh_token);
        let tokens = self.state.accounts.refresh(&token, now).await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(tokens.into()),
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let all = request.into_inner().all_sessions;
        let revoked = self.state.accounts.logout(&caller, all, now).await?;
        Ok(Response::new(pb::LogoutResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Reply<pb::GetMeResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(caller.user.into()),
        }))
    }

    async fn update_me(
        &self,
        request: Request<pb::UpdateMeRequest>,
    ) -> Reply<pb::UpdateMeResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        let change = ProfileChange {
            display_name: req.display_name,
            email: req.email,
            current_password: SecretString::from(req.current_password),
        };
        let user = self.state.accounts.update_me(&caller, change, now).await?;
        Ok(Response::new(pb::UpdateMeResponse {
            user: Some(user.into()),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Reply<pb::ChangePasswordResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        let (current, new) = (
            SecretString::from(req.current_password),
            SecretString::from(req.new_password),
        );
        let revoked = self
            .state
            .accounts
            .change_password(&caller, &current, &new, now)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Reply<pb::ListSessionsResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let include_inactive = request.into_inner().include_inactive;
        let sessions = self
            .state
            .accounts
            .sessions(&caller, include_inactive, now)
            .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| session(s, caller.session_id))
                .collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Reply<pb::RevokeSessionResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let session_id = request.into_inner().session_id;
        self.state
            .accounts
            .revoke_session(&caller, &session_id, now)
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
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
            Some(p) => {
                let (organization_id, role, roles) = match p.organization {
                    Some(o) => (
                        o.organization_id.to_string(),
                        org_role(o.role).into(),
                        o.roles,
                    ),
                    None => (String::new(), pb::OrgRole::Unspecified.into(), Vec::new()),
                };
                pb::ValidateTokenResponse {
                    active: true,
                    user_id: p.user.id.to_string(),
                    email: p.user.email,
                    is_admin: p.user.is_admin,
                    session_id: p.session_id.to_string(),
                    expires_at: Some(timestamp(p.token.expires_at)),
                    email_verified: p.user.email_verified,
                    organization_id,
                    org_role: role,
                    roles,
                }
            }
            None => pb::ValidateTokenResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: self.state.tokens.jwks_json(),
        }))
    }

    async fn send_verification_email(
        &self,
        request: Request<pb::SendVerificationEmailRequest>,
    ) -> Reply<pb::SendVerificationEmailResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        self.state
            .accounts
            .send_verification_email(&caller, now)
            .await?;
        Ok(Response::new(pb::SendVerificationEmailResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Reply<pb::VerifyEmailResponse> {
        let now = self.state.clock.now();
        let token = SecretString::from(request.into_inner().token);
        let user = self.state.accounts.verify_email(&token, now).await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            user: Some(user.into()),
        }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Reply<pb::RequestPasswordResetResponse> {
        let now = self.state.clock.now();
        let email = request.into_inner().email;
        self.state.accounts.request_password_reset(&email, now)?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn confirm_password_reset(
        &self,
        request: Request<pb::ConfirmPasswordResetRequest>,
    ) -> Reply<pb::ConfirmPasswordResetResponse> {
        let now = self.state.clock.now();
        let req = request.into_inner();
        let (token, password) = (
            SecretString::from(req.token),
            SecretString::from(req.new_password),
        );
        let revoked = self
            .state
            .accounts
            .confirm_password_reset(&token, &password, now)
            .await?;
        Ok(Response::new(pb::ConfirmPasswordResetResponse {
            revoked_sessions: count(revoked),
        }))
    }
}

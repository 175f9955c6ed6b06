//! `warden.v1.UserAdmin`. The interceptor has already refused calls without
//! a good token; each handler then checks, in the database, that the caller
//! is an approved admin with a live session.

use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use tonic::{Request, Response, Status};

use super::Reply;
use super::{
    bearer::bearer,
    convert::{
        count, email_token_purpose, new_org_role, new_status, session, status_filter, timestamp,
    },
};
use crate::{
    domain::{
        accounts::{NewUser, UserQuery, UserUpdateRequest},
        orgs::NewMember,
        types::Admin,
    },
    proto::v1::{self as pb, user_admin_server::UserAdmin},
    state::AppState,
};

pub struct UserAdminApi {
    state: Arc<AppState>,
}

impl UserAdminApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    async fn admin<T>(
        &self,
        request: &Request<T>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Admin, Status> {
        let token = bearer(request)?;
        Ok(self.state.accounts.authorize_admin(&token, now).await?)
    }
}

#[tonic::async_trait]
impl UserAdmin for UserAdminApi {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Reply<pb::ListUsersResponse> {
        let now = self.state.clock.now();
        let admin = self.admin(&request, now).await?;
        let req = request.into_inner();
        let query = UserQuery {
            page_size: req.page_size,
            page_token: req.page_token,
            status: status_filter("status", req.status)?,
            email_contains: req.email_contains,
        };
        let page = self.state.accounts.list_users(&admin, query).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.users.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
            total_size: count(page.total_size),
        }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::GetUserResponse> {
        let now = self.state.clock.now();
        let admin = self.admin(&request, now).await?;
        let user = self
            .state
            .accounts
            .get_user(&admin, &request.into_inner().user_id)
            .await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Reply<pb::CreateUserResponse> {
        let now = self.state.clock.now();
        let caller = self.admin(&request, now).await?;
        let req = request.into_inner();
        let new = NewUser {
            email: req.email,
            password: SecretString::from(req.password),
            display_name: req.display_name,
            is_admin: req.is_admin,
        };
        let user = self.state.accounts.create_user(&caller, new, now).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Reply<pb::UpdateUserResponse> {
        let now = self.state.clock.now();
        let caller = self.admin(&request, now).await?;
        let req = request.into_inner();
        let update = UserUpdateRequest {
            email: req.email,
            display_name: req.display_name,
            is_admin: req.is_admin,
            status: req.status.map(|s| new_status("status", s)).transpose()?,
            email_verified: req.email_verified,
        };
        let user = self
            .state
            .accounts
            .update_user(&caller, &req.user_id, update, now)
            .await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Reply<pb::DeleteUserResponse> {
        let now = self.state.clock.now();
        let caller = self.admin(&request, now).await?;
        self.state
            .accounts
            .delete_user(&caller, &request.into_inner().user_id)
            .await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Reply<pb::ResetPasswordResponse> {
        let now = self.state.clock.now();
        let caller = self.admin(&request, now).await?;
        let req = request.into_inner();
        let password = SecretString::from(req.new_password);
        let revoked = self
            .state
            .accounts
            .reset_password(&caller, &req.user_id, &password, now)
            .await?;
        Ok(Response::new(pb::ResetPasswordResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn count_pending_users(
        &self,
        request: Request<pb::CountPendingUsersRequest>,
    ) -> Reply<pb::CountPendingUsersResponse> {
        let now = self.state.clock.now();
        let admin = self.admin(&request, now).await?;
        let pending = self.state.accounts.count_pending(&admin).await?;
        Ok(Response::new(pb::CountPendingUsersResponse {
            count: i64::try_from(pending).unwrap_or(i64::MAX),
        }))
    }

    async fn list_user_sessions(
        &self,
        request: Request<pb::ListUserSessionsRequest>,
    ) -> Reply<pb::ListUserSessionsResponse> {
        let now = self.state.clock.now();
        let caller = self.admin(&request, now).await?;
        let req = request.into_inner();
        let sessions = self
            .state
            .accounts
            .user_sessions(&caller, &req.user_id, req.include_inactive, now)
            .await?;
        Ok(Response::new(pb::ListUserSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| session(s, caller.principal().session_id))
                .collect(),
        }))
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Reply<pb::RevokeUserSessionsResponse> {
        let now = self.state.clock.now();
        let caller = self.admin(&request, now).await?;
        let user_id = request.into_inner().user_id;
        let revoked = self
            .state
            .accounts
            .revoke_user_sessions(&caller, &user_id, now)
            .await?;
        Ok(Response::new(pb::RevokeUserSessionsResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn issue_email_token(
        &self,
        request: Request<pb::IssueEmailTokenRequest>,
    ) -> Reply<pb::IssueEmailTokenResponse> {
        let now = self.state.clock.now();
        let caller = self.admin(&request, now).await?;
        let req = request.into_inner();
        let (token, expires_at) = self
            .state
            .accounts
            .issue_email_token(&caller, &req.user_id, email_token_purpose(req.purpose), now)
            .await?;
        Ok(Response::new(pb::IssueEmailTokenResponse {
            token: token.expose_secret().to_owned(),
            expires_at: Some(timestamp(expires_at)),
        }))
    }

    // Organizations.

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Reply<pb::ListOrganizationsResponse> {
        let now = self.state.clock.now();
        let admin = self.admin(&request, now).await?;
        let req = request.into_inner();
        let page = self
            .state
            .accounts
            .list_organizations(&admin, req.page_size, &req.page_token, &req.name_contains)
            .await?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: page.organizations.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
            total_size: count(page.total_size),
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Reply<pb::AddMemberResponse> {
        let now = self.state.clock.now();
        let admin = self.admin(&request, now).await?;
        let req = request.into_inner();
        let new = NewMember {
            role: new_org_role("role", req.role)?,
            organization_id: req.organization_id,
            user_id: req.user_id,
            roles: req.roles,
        };
        let member = self.state.accounts.add_member(&admin, new, now).await?;
        Ok(Response::new(pb::AddMemberResponse {
            member: Some(member.into()),
        }))
    }
}

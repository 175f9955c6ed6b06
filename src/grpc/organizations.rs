//! `warden.v1.Organizations`. The interceptor has already refused calls
//! without a good token; each handler checks the session in the database,
//! and the domain reads the caller's membership for the rights.

use std::sync::Arc;

use secrecy::SecretString;
use tonic::{Request, Response};

use super::convert::{count, membership, new_org_role};
use super::{Reply, caller};
use crate::{
    domain::orgs::{InvitationRequest, MemberUpdate, OrganizationUpdate},
    proto::v1::{self as pb, organizations_server::Organizations},
    state::AppState,
};

pub struct OrganizationsApi {
    state: Arc<AppState>,
}

impl OrganizationsApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Organizations for OrganizationsApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Reply<pb::CreateOrganizationResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let name = request.into_inner().name;
        let created = self
            .state
            .accounts
            .create_organization(&caller, &name, now)
            .await?;
        Ok(Response::new(pb::CreateOrganizationResponse {
            organization: Some(created.organization.into()),
        }))
    }

    async fn list_my_organizations(
        &self,
        request: Request<pb::ListMyOrganizationsRequest>,
    ) -> Reply<pb::ListMyOrganizationsResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let memberships = self.state.accounts.my_organizations(&caller).await?;
        Ok(Response::new(pb::ListMyOrganizationsResponse {
            memberships: memberships.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Reply<pb::GetOrganizationResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let org = request.into_inner().organization_id;
        let (organization, mine) = self.state.accounts.get_organization(&caller, &org).await?;
        Ok(Response::new(pb::GetOrganizationResponse {
            membership: mine.map(|m| membership(organization.clone(), m)),
            organization: Some(organization.into()),
        }))
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Reply<pb::UpdateOrganizationResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        let update = OrganizationUpdate { name: req.name };
        let organization = self
            .state
            .accounts
            .update_organization(&caller, &req.organization_id, update, now)
            .await?;
        Ok(Response::new(pb::UpdateOrganizationResponse {
            organization: Some(organization.into()),
        }))
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Reply<pb::DeleteOrganizationResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let org = request.into_inner().organization_id;
        self.state
            .accounts
            .delete_organization(&caller, &org, now)
            .await?;
        Ok(Response::new(pb::DeleteOrganizationResponse {}))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Reply<pb::ListMembersResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        let page = self
            .state
            .accounts
            .list_members(
                &caller,
                &req.organization_id,
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: page.members.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
            total_size: count(page.total_size),
        }))
    }

    async fn update_member(
        &self,
        request: Request<pb::UpdateMemberRequest>,
    ) -> Reply<pb::UpdateMemberResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        let update = MemberUpdate {
            role: req.role.map(|r| new_org_role("role", r)).transpose()?,
            roles: req.roles.map(|r| r.values),
        };
        let member = self
            .state
            .accounts
            .update_member(&caller, &req.organization_id, &req.user_id, update)
            .await?;
        Ok(Response::new(pb::UpdateMemberResponse {
            member: Some(member.into()),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::RemoveMemberResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        self.state
            .accounts
            .remove_member(&caller, &req.organization_id, &req.user_id, now)
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Reply<pb::CreateInvitationResponse> {
        use secrecy::ExposeSecret as _;
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        let invitation = InvitationRequest {
            role: new_org_role("role", req.role)?,
            organization_id: req.organization_id,
            email: req.email,
            roles: req.roles,
        };
        let issued = self
            .state
            .accounts
            .create_invitation(&caller, invitation, now)
            .await?;
        Ok(Response::new(pb::CreateInvitationResponse {
            invitation: Some(issued.invitation.into()),
            invitation_token: issued.token.expose_secret().to_owned(),
        }))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Reply<pb::ListInvitationsResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        let invitations = self
            .state
            .accounts
            .list_invitations(&caller, &req.organization_id, req.include_inactive, now)
            .await?;
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: invitations.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Reply<pb::RevokeInvitationResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let req = request.into_inner();
        self.state
            .accounts
            .revoke_invitation(&caller, &req.organization_id, &req.invitation_id, now)
            .await?;
        Ok(Response::new(pb::RevokeInvitationResponse {}))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Reply<pb::AcceptInvitationResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let token = SecretString::from(request.into_inner().invitation_token);
        let joined = self
            .state
            .accounts
            .accept_invitation(&caller, &token, now)
            .await?;
        Ok(Response::new(pb::AcceptInvitationResponse {
            membership: Some(joined.into()),
        }))
    }

    async fn switch_organization(
        &self,
        request: Request<pb::SwitchOrganizationRequest>,
    ) -> Reply<pb::SwitchOrganizationResponse> {
        let now = self.state.clock.now();
        let caller = caller(&self.state, &request, now).await?;
        let org = request.into_inner().organization_id;
        let tokens = self
            .state
            .accounts
            .switch_organization(&caller, &org, now)
            .await?;
        Ok(Response::new(pb::SwitchOrganizationResponse {
            tokens: Some(tokens.into()),
        }))
    }
}

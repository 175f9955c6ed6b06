//! Invitations: 256-bit tokens stored only as their SHA-256, single-use
//! (consumed by one conditional UPDATE), expiring after
//! `WARDEN_INVITATION_TTL`, bound to the organisation and the invited
//! address. Creating one never looks at the accounts, so its answer is the
//! same whether or not the address has one.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{Who, access, id, membership_error};
use crate::{
    domain::{
        accounts::Accounts,
        email::messages::Recipient,
        error::{Error, Result},
        input::{Email, check_token, parse_id, parse_roles},
        rules::orgs::{OrgAction, invitation_acceptable},
        tokens::{RefreshToken, hash_refresh_token},
        types::{Invitation, Membership, OrgMembership, OrgRole, Principal},
    },
    store::{self, mail_outbox, orgs},
};

/// A CreateInvitation as it arrives (the role already a real one).
pub struct InvitationRequest {
    pub organization_id: String,
    pub email: String,
    pub role: OrgRole,
    pub roles: Vec<String>,
}

/// A new invitation and its token, shown only once.
pub struct IssuedInvitation {
    pub invitation: Invitation,
    pub token: SecretString,
}

impl Accounts {
    /// CreateInvitation: ADMIN; OWNER to invite an OWNER. A pending
    /// invitation for the same address is replaced (its token dies).
    #[tracing::instrument(skip_all)]
    pub async fn create_invitation(
        &self,
        caller: &Principal,
        request: InvitationRequest,
        now: DateTime<Utc>,
    ) -> Result<IssuedInvitation> {
        let org = parse_id("organization_id", &request.organization_id);
        let email = Email::parse("email", &request.email);
        let roles = parse_roles("roles", &request.roles);
        let (org, email, roles) = match (org, email, roles) {
            (Ok(org), Ok(email), Ok(roles)) => (org, email, roles),
            (org, email, roles) => {
                return Err(Error::InvalidArgument(
                    [org.err(), email.err(), roles.err()]
                        .into_iter()
                        .flatten()
                        .collect(),
                ));
            }
        };
        let role = request.role;
        let expires_at = now + self.invitation_ttl;
        let token = RefreshToken::generate()?;
        let invitation = Invitation {
            id: Uuid::now_v7(),
            organization_id: org,
            email: email.into_string(),
            role,
            roles,
            token_hash: token.hash.clone(),
            invited_by: caller.user.id,
            created_at: now,
            expires_at,
            accepted_at: None,
            revoked_at: None,
        };
        let who = Who::from(caller);
        // With mail configured, the invitation mail is queued in the
        // transaction that stores the invitation: both or neither.
        let mail_enabled = self.email_settings().mail_enabled;
        let invitation_ttl = self.invitation_ttl;
        let email_settings = self.email_settings().clone();
        store::serializable(&self.db, |txn| {
            let invitation = invitation.clone();
            let (email_settings, secret) = (email_settings.clone(), token.token.clone());
            Box::pin(async move {
                let granted = access(txn, who, org, OrgAction::Invite { role }).await?;
                orgs::revoke_pending_invitations(txn, org, &invitation.email, now).await?;
                orgs::insert_invitation(txn, &invitation).await?;
                if mail_enabled {
                    let mail = email_settings.invitation_mail(
                        Recipient {
                            email: &invitation.email,
                            name: "",
                        },
                        &granted.organization.name,
                        &secret,
                        invitation_ttl.to_std().unwrap_or_default(),
                        now,
                    );
                    mail_outbox::queue(txn, &mail).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .await?;
        if mail_enabled {
            self.mail_queued().notify_one();
        }
        tracing::info!(organization_id = %org, invitation_id = %invitation.id, by = %caller.user.id, "invitation created");
        Ok(IssuedInvitation {
            invitation,
            token: token.token,
        })
    }

    /// ListInvitations: ADMIN. Newest first; only pending ones unless
    /// `include_inactive`.
    pub async fn list_invitations(
        &self,
        caller: &Principal,
        organization_id: &str,
        include_inactive: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Invitation>> {
        let org = id("organization_id", organization_id)?;
        access(&self.db, Who::from(caller), org, OrgAction::Manage).await?;
        Ok(orgs::list_invitations(&self.db, org, include_inactive, now).await?)
    }

    /// RevokeInvitation: ADMIN. One that is no longer pending stays as it is.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_invitation(
        &self,
        caller: &Principal,
        organization_id: &str,
        invitation_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let org = parse_id("organization_id", organization_id);
        let invitation = parse_id("invitation_id", invitation_id);
        let (org, invitation) = match (org, invitation) {
            (Ok(org), Ok(invitation)) => (org, invitation),
            (org, invitation) => {
                return Err(Error::InvalidArgument(
                    [org.err(), invitation.err()]
                        .into_iter()
                        .flatten()
                        .collect(),
                ));
            }
        };
        let who = Who::from(caller);
        store::serializable(&self.db, |txn| {
            Box::pin(async move {
                access(txn, who, org, OrgAction::Manage).await?;
                match orgs::find_invitation(txn, invitation).await? {
                    Some(found) if found.organization_id == org => {
                        orgs::revoke_invitation(txn, invitation, now).await?;
                        Ok(())
                    }
                    _ => Err(Error::InvitationNotFound),
                }
            })
        })
        .await
    }

    /// AcceptInvitation: the caller, whose email must be the invitation's,
    /// joins with its role and roles. Of two concurrent accepts one wins.
    #[tracing::instrument(skip_all)]
    pub async fn accept_invitation(
        &self,
        caller: &Principal,
        token: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<OrgMembership> {
        let raw = token.expose_secret();
        check_token("invitation_token", raw).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let hash = hash_refresh_token(raw);
        let user = caller.user.clone();
        let joined = store::read_committed(&self.db, |txn| {
            let (hash, user) = (hash.clone(), user.clone());
            Box::pin(async move {
                let invitation = orgs::find_invitation_by_hash(txn, &hash)
                    .await?
                    .filter(|i| invitation_acceptable(i, &user.email, now))
                    .ok_or(Error::InvitationInvalid)?;
                let org = invitation.organization_id;
                if orgs::find_membership(txn, user.id, org).await?.is_some() {
                    return Err(Error::AlreadyMember);
                }
                // The one conditional UPDATE that makes the token single-use.
                if !orgs::claim_invitation(txn, invitation.id, now).await? {
                    return Err(Error::InvitationInvalid);
                }
                let membership = orgs::insert_membership(
                    txn,
                    &Membership {
                        user_id: user.id,
                        organization_id: org,
                        role: invitation.role,
                        roles: invitation.roles,
                        joined_at: now,
                    },
                )
                .await
                .map_err(membership_error)?;
                let organization = orgs::find_organization(txn, org)
                    .await?
                    .ok_or(Error::InvitationInvalid)?;
                Ok::<_, Error>(OrgMembership {
                    organization,
                    membership,
                })
            })
        })
        .await?;
        tracing::info!(organization_id = %joined.organization.id, user_id = %caller.user.id, "invitation accepted");
        Ok(joined)
    }
}

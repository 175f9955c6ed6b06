//! Domain values to protobuf messages.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::{
    domain::error::Error,
    domain::types::{
        EmailTokenPurpose, Invitation, Member, Membership, OrgMembership, OrgRole, Organization,
        Session, TokenPair, User, UserStatus,
    },
    proto::v1 as pb,
};
use secrecy::ExposeSecret;

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        // Always below 10^9, so it fits.
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn status(s: UserStatus) -> pb::UserStatus {
    match s {
        UserStatus::Pending => pb::UserStatus::Pending,
        UserStatus::Approved => pb::UserStatus::Approved,
        UserStatus::Disabled => pb::UserStatus::Disabled,
    }
}

/// A status filter: UNSPECIFIED means "any"; a number the contract does not
/// know is a bad argument.
pub fn status_filter(field: &'static str, value: i32) -> Result<Option<UserStatus>, Error> {
    match pb::UserStatus::try_from(value) {
        Ok(pb::UserStatus::Unspecified) => Ok(None),
        Ok(known) => Ok(domain_status(known)),
        Err(_) => Err(Error::invalid(
            field,
            format!("{value} is not a UserStatus"),
        )),
    }
}

/// A status to set: it must be a real one.
pub fn new_status(field: &'static str, value: i32) -> Result<UserStatus, Error> {
    status_filter(field, value)?
        .ok_or_else(|| Error::invalid(field, "must not be USER_STATUS_UNSPECIFIED"))
}

fn domain_status(s: pb::UserStatus) -> Option<UserStatus> {
    match s {
        pb::UserStatus::Unspecified => None,
        pb::UserStatus::Pending => Some(UserStatus::Pending),
        pb::UserStatus::Approved => Some(UserStatus::Approved),
        pb::UserStatus::Disabled => Some(UserStatus::Disabled),
    }
}

impl From<User> for pb::User {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email,
            display_name: u.display_name,
            is_admin: u.is_admin,
            status: status(u.status).into(),
            created_at: Some(timestamp(u.created_at)),
            updated_at: Some(timestamp(u.updated_at)),
            approved_at: u.approved_at.map(timestamp),
            approved_by: u.approved_by.map(|id| id.to_string()).unwrap_or_default(),
            email_verified: u.email_verified,
            email_verified_at: u.email_verified_at.map(timestamp),
        }
    }
}

impl From<TokenPair> for pb::TokenPair {
    fn from(t: TokenPair) -> Self {
        Self {
            access_token: t.access_token.expose_secret().to_owned(),
            refresh_token: t.refresh_token.expose_secret().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: i64::try_from(t.expires_in.as_secs()).unwrap_or(i64::MAX),
            refresh_expires_at: Some(timestamp(t.refresh_expires_at)),
        }
    }
}

/// A session as its owner sees it; `current` marks the caller's own.
pub fn session(s: Session, current: uuid::Uuid) -> pb::Session {
    pb::Session {
        current: s.id == current,
        id: s.id.to_string(),
        device: Some(pb::DeviceInfo {
            device_id: s.device.id,
            device_name: s.device.name,
            device_type: s.device.kind,
        }),
        user_agent: s.user_agent,
        ip_address: s.ip_address,
        created_at: Some(timestamp(s.created_at)),
        last_used_at: Some(timestamp(s.last_used_at)),
        expires_at: Some(timestamp(s.expires_at)),
        revoked_at: s.revoked_at.map(timestamp),
        organization_id: s
            .organization_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

/// The purpose of an IssueEmailToken; `None` for UNSPECIFIED or a number
/// the contract does not know (the domain names the field).
pub fn email_token_purpose(value: i32) -> Option<EmailTokenPurpose> {
    match pb::EmailTokenPurpose::try_from(value) {
        Ok(pb::EmailTokenPurpose::VerifyEmail) => Some(EmailTokenPurpose::VerifyEmail),
        Ok(pb::EmailTokenPurpose::ResetPassword) => Some(EmailTokenPurpose::ResetPassword),
        _ => None,
    }
}

/// Counts go out as int32; they never come near its limit.
pub fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

// Organizations.

pub fn org_role(role: OrgRole) -> pb::OrgRole {
    match role {
        OrgRole::Member => pb::OrgRole::Member,
        OrgRole::Admin => pb::OrgRole::Admin,
        OrgRole::Owner => pb::OrgRole::Owner,
    }
}

/// A role to give: it must be a real one; UNSPECIFIED or a number the
/// contract does not know is a bad argument.
pub fn new_org_role(field: &'static str, value: i32) -> Result<OrgRole, Error> {
    match pb::OrgRole::try_from(value) {
        Ok(pb::OrgRole::Member) => Ok(OrgRole::Member),
        Ok(pb::OrgRole::Admin) => Ok(OrgRole::Admin),
        Ok(pb::OrgRole::Owner) => Ok(OrgRole::Owner),
        Ok(pb::OrgRole::Unspecified) => {
            Err(Error::invalid(field, "must not be ORG_ROLE_UNSPECIFIED"))
        }
        Err(_) => Err(Error::invalid(field, format!("{value} is not an OrgRole"))),
    }
}

impl From<Organization> for pb::Organization {
    fn from(o: Organization) -> Self {
        Self {
            id: o.id.to_string(),
            name: o.name,
            created_at: Some(timestamp(o.created_at)),
            updated_at: Some(timestamp(o.updated_at)),
        }
    }
}

/// A membership of the caller, with its organisation.
pub fn membership(organization: Organization, m: Membership) -> pb::Membership {
    pb::Membership {
        organization: Some(organization.into()),
        role: org_role(m.role).into(),
        roles: m.roles,
        joined_at: Some(timestamp(m.joined_at)),
    }
}

impl From<OrgMembership> for pb::Membership {
    fn from(m: OrgMembership) -> Self {
        membership(m.organization, m.membership)
    }
}

impl From<Member> for pb::Member {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.membership.user_id.to_string(),
            email: m.email,
            display_name: m.display_name,
            role: org_role(m.membership.role).into(),
            roles: m.membership.roles,
            joined_at: Some(timestamp(m.membership.joined_at)),
        }
    }
}

impl From<Invitation> for pb::Invitation {
    fn from(i: Invitation) -> Self {
        Self {
            id: i.id.to_string(),
            organization_id: i.organization_id.to_string(),
            email: i.email,
            role: org_role(i.role).into(),
            roles: i.roles,
            invited_by: i.invited_by.to_string(),
            created_at: Some(timestamp(i.created_at)),
            expires_at: Some(timestamp(i.expires_at)),
            accepted_at: i.accepted_at.map(timestamp),
            revoked_at: i.revoked_at.map(timestamp),
        }
    }
}

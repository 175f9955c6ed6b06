//! The operations of the `Organizations` service, and the tenancy parts of
//! `UserAdmin` (ListOrganizations, AddMember). Each reads what a rule of
//! `rules::orgs` needs, asks it, and writes what it decided; rights come
//! from the caller's membership as it is in the database, read in the
//! transaction that acts on them.
//!
//! - `organizations`: create, list, get, rename, delete, switch to.
//! - `members`: list, change, remove (and leave), add (admins).
//! - `invitations`: create, list, revoke, accept.

mod invitations;
mod members;
mod organizations;

use uuid::Uuid;

pub use invitations::{InvitationRequest, IssuedInvitation};
pub use members::{MemberPage, MemberUpdate, NewMember};
pub use organizations::{OrganizationPage, OrganizationUpdate};

use crate::{
    domain::{
        error::{Error, Result},
        input::parse_id,
        rules::orgs::{OrgAction, OrgCaller, authorize},
        types::{Membership, Organization, Principal},
    },
    store::{Connection, StoreError, orgs},
};

fn id(field: &'static str, raw: &str) -> Result<Uuid> {
    parse_id(field, raw).map_err(|v| Error::InvalidArgument(vec![v]))
}

/// Who calls, as much as the rights need: copied, so that a retried
/// transaction can hold it.
#[derive(Debug, Clone, Copy)]
struct Who {
    user_id: Uuid,
    is_admin: bool,
}

impl From<&Principal> for Who {
    fn from(p: &Principal) -> Self {
        Self {
            user_id: p.user.id,
            is_admin: p.user.is_admin,
        }
    }
}

/// An organisation as the caller may see it, with the caller's membership.
struct Access {
    organization: Organization,
    membership: Option<Membership>,
    caller: OrgCaller,
}

/// Reads the organisation and the caller's membership of it (both, always,
/// so that an unknown id and someone else's organisation take the same
/// path), and applies the rights table to `action`.
async fn access<C: Connection>(
    db: &C,
    who: Who,
    organization_id: Uuid,
    action: OrgAction,
) -> Result<Access> {
    let membership = orgs::find_membership(db, who.user_id, organization_id).await?;
    let organization = orgs::find_organization(db, organization_id).await?;
    let Some(organization) = organization else {
        return Err(Error::OrganizationNotFound);
    };
    let caller = OrgCaller {
        role: membership.as_ref().map(|m| m.role),
        platform_admin: who.is_admin,
    };
    authorize(caller, action)?;
    Ok(Access {
        organization,
        membership,
        caller,
    })
}

/// A membership row that vanished, or one that is there already.
fn membership_error(err: StoreError) -> Error {
    match err {
        StoreError::NotFound => Error::MemberNotFound,
        StoreError::Unique(_) => Error::AlreadyMember,
        other => other.into(),
    }
}

//! Tenancy rules: who may do what in an organisation (the rights table of
//! API.md), the last-owner invariant, which organisation a login acts for,
//! and what a new account's organisation is called.

use uuid::Uuid;

use crate::domain::{
    error::{Error, Result},
    input::{DisplayName, Email, OrganizationName},
    types::{Invitation, OrgRole},
};

/// What a caller asks to do in an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgAction {
    /// GetOrganization, ListMembers, SwitchOrganization.
    Read,
    /// UpdateOrganization, ListInvitations, RevokeInvitation.
    Manage,
    /// DeleteOrganization.
    Delete,
    /// UpdateMember: the target's role before and after.
    UpdateMember { from: OrgRole, to: OrgRole },
    /// RemoveMember of someone else, whose role this is.
    RemoveMember { target: OrgRole },
    /// RemoveMember of oneself.
    Leave,
    /// CreateInvitation with this role.
    Invite { role: OrgRole },
}

/// Who is asking: their membership's role, if any, and whether they are a
/// platform admin (who acts as OWNER everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgCaller {
    pub role: Option<OrgRole>,
    pub platform_admin: bool,
}

impl OrgCaller {
    /// The role the caller acts with: an admin's is OWNER.
    pub fn acting_role(self) -> Option<OrgRole> {
        if self.platform_admin {
            Some(OrgRole::Owner)
        } else {
            self.role
        }
    }
}

/// The least role `action` needs.
pub fn required_role(action: OrgAction) -> OrgRole {
    let owner_if = |owner_involved: bool| {
        if owner_involved {
            OrgRole::Owner
        } else {
            OrgRole::Admin
        }
    };
    match action {
        OrgAction::Read | OrgAction::Leave => OrgRole::Member,
        OrgAction::Manage => OrgRole::Admin,
        OrgAction::Delete => OrgRole::Owner,
        // Granting or taking OWNER; an owner's application roles are an
        // admin's to change.
        OrgAction::UpdateMember { from, to } => {
            owner_if(from != to && (from == OrgRole::Owner || to == OrgRole::Owner))
        }
        OrgAction::RemoveMember { target } => owner_if(target == OrgRole::Owner),
        OrgAction::Invite { role } => owner_if(role == OrgRole::Owner),
    }
}

/// The rights table. Someone who is neither a member nor an admin learns
/// nothing, not even that the organisation exists: ORGANIZATION_NOT_FOUND,
/// as for an unknown id. A member without the role needed:
/// ORG_ROLE_REQUIRED.
pub fn authorize(caller: OrgCaller, action: OrgAction) -> Result<()> {
    match caller.acting_role() {
        None => Err(Error::OrganizationNotFound),
        Some(role) if role >= required_role(action) => Ok(()),
        Some(_) => Err(Error::OrgRoleRequired),
    }
}

/// The last-owner invariant: a change that takes an owner away (demotion,
/// removal: `after` is `None`) must leave an owner in an organisation that
/// still has members, both counted after the change in the same
/// transaction. A disabled owner still counts.
pub fn keep_an_owner(
    before: OrgRole,
    after: Option<OrgRole>,
    owners_after: u64,
    members_after: u64,
) -> Result<()> {
    let loses_one = before == OrgRole::Owner && after != Some(OrgRole::Owner);
    if loses_one && owners_after == 0 && members_after > 0 {
        Err(Error::LastOwner)
    } else {
        Ok(())
    }
}

/// What DeleteUser does to one organisation of the user it deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUserDeleted {
    /// The user was its only member: it goes with them.
    DeleteOrganization,
    /// Others stay, one of them an owner (or the user was not one).
    LeaveIt,
}

/// DeleteUser must not leave an organisation with members but no owner.
/// `other_members` and `other_owners` exclude the user.
pub fn on_user_deleted(
    role: OrgRole,
    other_members: u64,
    other_owners: u64,
) -> Result<OnUserDeleted> {
    if other_members == 0 {
        return Ok(OnUserDeleted::DeleteOrganization);
    }
    keep_an_owner(role, None, other_owners, other_members)?;
    Ok(OnUserDeleted::LeaveIt)
}

/// The organisation a login acts for: the one asked for, which must be one
/// of the user's (else ORGANIZATION_NOT_FOUND); without one, the oldest
/// membership (`memberships` oldest first); with none, no organisation.
pub fn login_organization(requested: Option<Uuid>, memberships: &[Uuid]) -> Result<Option<Uuid>> {
    match requested {
        Some(id) if memberships.contains(&id) => Ok(Some(id)),
        Some(_) => Err(Error::OrganizationNotFound),
        None => Ok(memberships.first().copied()),
    }
}

/// The name of a new account's own organisation: the one asked for, else
/// the display name, else the email's local part.
pub fn own_organization_name(
    requested: Option<OrganizationName>,
    display_name: &DisplayName,
    email: &Email,
) -> String {
    requested
        .or_else(|| OrganizationName::fallback(display_name.as_str()))
        .or_else(|| OrganizationName::fallback(email.local_part()))
        .map_or_else(
            || email.local_part().to_owned(),
            OrganizationName::into_string,
        )
}

/// Whether an invitation can be accepted by the account with `email` at
/// `now`: pending (not used, revoked, replaced or expired) and for that
/// address.
pub fn invitation_acceptable(
    invitation: &Invitation,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    invitation.is_pending(now) && invitation.email == email
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;
    use OrgRole::{Admin, Member, Owner};

    const MEMBER: OrgCaller = OrgCaller {
        role: Some(Member),
        platform_admin: false,
    };
    const ADMIN: OrgCaller = OrgCaller {
        role: Some(Admin),
        platform_admin: false,
    };
    const OWNER: OrgCaller = OrgCaller {
        role: Some(Owner),
        platform_admin: false,
    };
    const OUTSIDER: OrgCaller = OrgCaller {
        role: None,
        platform_admin: false,
    };
    const PLATFORM_ADMIN: OrgCaller = OrgCaller {
        role: None,
        platform_admin: true,
    };

    /// Each action × caller: true if allowed; an outsider always gets
    /// ORGANIZATION_NOT_FOUND, a member lacking the role ORG_ROLE_REQUIRED.
    #[test]
    fn the_rights_table() {
        let table: &[(OrgAction, [bool; 3])] = &[
            // MEMBER, ADMIN, OWNER
            (OrgAction::Read, [true, true, true]),
            (OrgAction::Leave, [true, true, true]),
            (OrgAction::Manage, [false, true, true]),
            (OrgAction::Delete, [false, false, true]),
            (
                OrgAction::UpdateMember {
                    from: Member,
                    to: Admin,
                },
                [false, true, true],
            ),
            (
                OrgAction::UpdateMember {
                    from: Admin,
                    to: Owner,
                },
                [false, false, true],
            ),
            (
                OrgAction::UpdateMember {
                    from: Owner,
                    to: Member,
                },
                [false, false, true],
            ),
            (
                OrgAction::UpdateMember {
                    from: Owner,
                    to: Owner,
                },
                [false, true, true],
            ),
            (
                OrgAction::RemoveMember { target: Admin },
                [false, true, true],
            ),
            (
                OrgAction::RemoveMember { target: Owner },
                [false, false, true],
            ),
            (OrgAction::Invite { role: Admin }, [false, true, true]),
            (OrgAction::Invite { role: Owner }, [false, false, true]),
        ];
        for (action, allowed) in table {
            for (caller, ok) in [MEMBER, ADMIN, OWNER].into_iter().zip(allowed) {
                let got = authorize(caller, *action);
                if *ok {
                    assert!(got.is_ok(), "{caller:?} {action:?}");
                } else {
                    assert!(
                        matches!(got, Err(Error::OrgRoleRequired)),
                        "{caller:?} {action:?}: {got:?}"
                    );
                }
            }
            assert!(matches!(
                authorize(OUTSIDER, *action),
                Err(Error::OrganizationNotFound)
            ));
            assert!(authorize(PLATFORM_ADMIN, *action).is_ok(), "{action:?}");
        }
    }

    #[test]
    fn the_last_owner_cannot_be_taken_away_while_members_remain() {
        assert!(matches!(
            keep_an_owner(Owner, Some(Admin), 0, 2),
            Err(Error::LastOwner)
        ));
        assert!(matches!(
            keep_an_owner(Owner, None, 0, 1),
            Err(Error::LastOwner)
        ));
        assert!(keep_an_owner(Owner, Some(Admin), 1, 2).is_ok());
        assert!(keep_an_owner(Owner, None, 0, 0).is_ok(), "the last member");
        assert!(keep_an_owner(Admin, None, 0, 3).is_ok(), "not an owner");
        assert!(keep_an_owner(Owner, Some(Owner), 0, 3).is_ok(), "no change");
    }

    #[test]
    fn deleting_a_user_deletes_their_lone_organisations_and_keeps_owners_elsewhere() {
        assert_eq!(
            on_user_deleted(Owner, 0, 0).unwrap(),
            OnUserDeleted::DeleteOrganization
        );
        assert!(matches!(
            on_user_deleted(Owner, 2, 0),
            Err(Error::LastOwner)
        ));
        assert_eq!(
            on_user_deleted(Owner, 2, 1).unwrap(),
            OnUserDeleted::LeaveIt
        );
        assert_eq!(
            on_user_deleted(Member, 2, 0).unwrap(),
            OnUserDeleted::LeaveIt
        );
    }

    #[test]
    fn a_login_acts_for_the_organisation_asked_for_or_the_oldest() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(login_organization(None, &[a, b]).unwrap(), Some(a));
        assert_eq!(login_organization(Some(b), &[a, b]).unwrap(), Some(b));
        assert!(matches!(
            login_organization(Some(Uuid::now_v7()), &[a, b]),
            Err(Error::OrganizationNotFound)
        ));
        assert_eq!(login_organization(None, &[]).unwrap(), None);
    }

    #[test]
    fn an_own_organisation_is_named_as_asked_else_by_display_name_else_local_part() {
        let email = Email::parse("email", "jo.doe@example.com").unwrap();
        let name = DisplayName::parse("display_name", "Jo Doe").unwrap();
        let none = DisplayName::parse("display_name", "   ").unwrap();
        let asked = OrganizationName::parse("organization_name", "Acme").ok();
        assert_eq!(own_organization_name(asked, &name, &email), "Acme");
        assert_eq!(own_organization_name(None, &name, &email), "Jo Doe");
        assert_eq!(own_organization_name(None, &none, &email), "jo.doe");
    }

    #[test]
    fn only_a_pending_invitation_for_the_same_email_can_be_accepted() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let invitation = Invitation {
            id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            email: "a@example.com".into(),
            role: Member,
            roles: vec![],
            token_hash: vec![0; 32],
            invited_by: Uuid::now_v7(),
            created_at: now,
            expires_at: now + TimeDelta::hours(1),
            accepted_at: None,
            revoked_at: None,
        };
        assert!(invitation_acceptable(&invitation, "a@example.com", now));
        assert!(!invitation_acceptable(&invitation, "b@example.com", now));
        assert!(!invitation_acceptable(
            &invitation,
            "a@example.com",
            now + TimeDelta::hours(1)
        ));
        let used = Invitation {
            accepted_at: Some(now),
            ..invitation.clone()
        };
        assert!(!invitation_acceptable(&used, "a@example.com", now));
        let revoked = Invitation {
            revoked_at: Some(now),
            ..invitation
        };
        assert!(!invitation_acceptable(&revoked, "a@example.com", now));
    }
}

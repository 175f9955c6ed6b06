//! Who a new account becomes, what an admin's change does, and the
//! last-admin invariant.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    error::{Error, Result},
    input::{DisplayName, Email},
    types::{User, UserStatus},
};

/// How an account comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// Register: anyone.
    Registration,
    /// CreateUser: an admin, who also decides on admin rights.
    ByAdmin { admin: Uuid, is_admin: bool },
    /// `warden create-admin`: the operator, at the console.
    Bootstrap,
}

/// The status and rights of a new account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAccountRole {
    pub is_admin: bool,
    pub status: UserStatus,
    pub approved_at: Option<DateTime<Utc>>,
    pub approved_by: Option<Uuid>,
    /// `create-admin` accounts are verified (API.md, Email): the operator
    /// at the console vouches for the address.
    pub email_verified_at: Option<DateTime<Utc>>,
}

/// What a new account becomes. The first account ever to register is an
/// approved admin, so that a fresh install can be run without a console;
/// with `first_user_admin` off (`WARDEN_FIRST_USER_ADMIN=false`) it is
/// pending like every later registration, so that whoever reaches a new
/// server first cannot take it over. An admin's account is approved by that
/// admin; the console's is an approved admin.
pub fn new_account_role(
    creation: Creation,
    is_first: bool,
    first_user_admin: bool,
    now: DateTime<Utc>,
) -> NewAccountRole {
    let approved = |is_admin, by| NewAccountRole {
        is_admin,
        status: UserStatus::Approved,
        approved_at: Some(now),
        approved_by: by,
        email_verified_at: None,
    };
    match creation {
        Creation::Registration if is_first && first_user_admin => approved(true, None),
        Creation::Registration => NewAccountRole {
            is_admin: false,
            status: UserStatus::Pending,
            approved_at: None,
            approved_by: None,
            email_verified_at: None,
        },
        Creation::ByAdmin { admin, is_admin } => approved(is_admin, Some(admin)),
        Creation::Bootstrap => NewAccountRole {
            email_verified_at: Some(now),
            ..approved(true, None)
        },
    }
}

/// An admin's change to an account, its fields already valid. Only the
/// fields that are `Some` are asked to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub is_admin: Option<bool>,
    pub status: Option<UserStatus>,
    /// An admin's say on whether the address is verified.
    pub email_verified: Option<bool>,
}

/// The columns of an account to write; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub is_admin: Option<bool>,
    pub status: Option<UserStatus>,
    /// When and by whom it was approved.
    pub approved: Option<(DateTime<Utc>, Uuid)>,
    /// Whether the email is verified, and since when.
    pub email_verified: Option<(bool, Option<DateTime<Utc>>)>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// What an UpdateUser does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePlan {
    /// `None` when nothing would change: nothing is written and
    /// `updated_at` stays.
    pub changes: Option<UserChanges>,
    /// A change to any status but APPROVED ends every session.
    pub revoke_sessions: bool,
    /// Approving (even an account approved already) lifts a lockout.
    pub lift_lockout: bool,
    /// A new address: the email tokens sent to the old one die.
    pub kill_email_tokens: bool,
}

/// Decides an admin's change of `current`: only fields whose value differs
/// change; approval records when and by whom, once (approving an approved
/// account keeps its approval metadata); any other status change revokes
/// the account's sessions.
pub fn plan_user_update(
    current: &User,
    update: &UserUpdate,
    approver: Uuid,
    now: DateTime<Utc>,
) -> UpdatePlan {
    let mut changes = UserChanges {
        email: update
            .email
            .as_ref()
            .filter(|e| e.as_str() != current.email)
            .map(|e| e.as_str().to_owned()),
        display_name: update
            .display_name
            .as_ref()
            .filter(|n| n.as_str() != current.display_name)
            .map(|n| n.as_str().to_owned()),
        is_admin: update.is_admin.filter(|a| *a != current.is_admin),
        status: update.status.filter(|s| *s != current.status),
        ..UserChanges::default()
    };
    let revoke_sessions = changes
        .status
        .is_some_and(|status| status != UserStatus::Approved);
    if changes.status == Some(UserStatus::Approved) {
        changes.approved = Some((now, approver));
    }
    changes.email_verified =
        verification_after_update(current, changes.email.is_some(), update.email_verified, now);
    let changed = changes != UserChanges::default();
    UpdatePlan {
        kill_email_tokens: changes.email.is_some(),
        changes: changed.then_some(UserChanges {
            updated_at: Some(now),
            ..changes
        }),
        revoke_sessions,
        lift_lockout: update.status == Some(UserStatus::Approved),
    }
}

/// What an admin's UpdateUser does to `email_verified` (API.md, Email): a
/// new address is unverified unless the same call says it is verified; an
/// explicit value is taken as it is, with `email_verified_at` = now when it
/// becomes (or, with a new address, stays) true. `None`: no change.
pub fn verification_after_update(
    current: &User,
    email_changes: bool,
    asked: Option<bool>,
    now: DateTime<Utc>,
) -> Option<(bool, Option<DateTime<Utc>>)> {
    match (asked, email_changes) {
        (Some(true), true) => Some((true, Some(now))),
        (Some(wanted), false) if wanted == current.email_verified => None,
        (Some(wanted), false) => Some((wanted, wanted.then_some(now))),
        (None, true) | (Some(false), true) => {
            (current.email_verified || current.email_verified_at.is_some()).then_some((false, None))
        }
        (None, false) => None,
    }
}

/// The last-admin invariant: a change that takes an approved admin away
/// (demotion, disabling, deletion: `after` is `None`) must leave at least one
/// approved admin, counted after the change in the same transaction.
pub fn keep_an_admin(
    before: &User,
    after: Option<&User>,
    approved_admins_after: u64,
) -> Result<()> {
    let loses_one = before.is_approved_admin() && !after.is_some_and(User::is_approved_admin);
    if loses_one && approved_admins_after == 0 {
        return Err(Error::LastAdmin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn user(is_admin: bool, status: UserStatus) -> User {
        User {
            id: Uuid::from_u128(1),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            is_admin,
            status,
            created_at: now(),
            updated_at: now(),
            approved_at: None,
            approved_by: None,
            email_verified: false,
            email_verified_at: None,
        }
    }

    #[test]
    fn the_first_registered_account_is_an_approved_admin() {
        let role = new_account_role(Creation::Registration, true, true, now());
        assert!(role.is_admin);
        assert_eq!(role.status, UserStatus::Approved);
        assert_eq!((role.approved_at, role.approved_by), (Some(now()), None));
    }

    #[test]
    fn every_later_registration_waits_for_approval_without_admin_rights() {
        for first_user_admin in [true, false] {
            let role = new_account_role(Creation::Registration, false, first_user_admin, now());
            assert!(!role.is_admin);
            assert_eq!(role.status, UserStatus::Pending);
            assert_eq!(role.approved_at, None);
        }
    }

    #[test]
    fn without_first_user_admin_the_first_registration_is_pending_like_every_other() {
        let role = new_account_role(Creation::Registration, true, false, now());
        assert!(!role.is_admin);
        assert_eq!(role.status, UserStatus::Pending);
    }

    #[test]
    fn an_account_an_admin_creates_is_approved_by_that_admin() {
        let admin = Uuid::from_u128(7);
        for is_admin in [true, false] {
            let role = new_account_role(Creation::ByAdmin { admin, is_admin }, false, true, now());
            assert_eq!(role.is_admin, is_admin);
            assert_eq!(role.status, UserStatus::Approved);
            assert_eq!(role.approved_by, Some(admin));
        }
    }

    #[test]
    fn the_console_creates_an_approved_admin_whatever_exists() {
        for is_first in [true, false] {
            let role = new_account_role(Creation::Bootstrap, is_first, false, now());
            assert!(role.is_admin);
            assert_eq!(role.status, UserStatus::Approved);
        }
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        let current = user(false, UserStatus::Approved);
        let same = UserUpdate {
            email: Some(Email::parse("email", "ADA@example.com").unwrap()),
            display_name: Some(DisplayName::parse("display_name", "Ada").unwrap()),
            is_admin: Some(false),
            status: Some(UserStatus::Approved),
            email_verified: Some(false),
        };
        let plan = plan_user_update(&current, &same, Uuid::from_u128(9), now());
        assert_eq!(plan.changes, None);
        assert!(!plan.revoke_sessions);
    }

    #[test]
    fn approving_records_when_and_by_whom_and_lifts_a_lockout() {
        let current = user(false, UserStatus::Pending);
        let approver = Uuid::from_u128(9);
        let update = UserUpdate {
            status: Some(UserStatus::Approved),
            ..UserUpdate::default()
        };
        let plan = plan_user_update(&current, &update, approver, now());
        let changes = plan.changes.unwrap();
        assert_eq!(changes.status, Some(UserStatus::Approved));
        assert_eq!(changes.approved, Some((now(), approver)));
        assert_eq!(changes.updated_at, Some(now()));
        assert!(plan.lift_lockout);
        assert!(!plan.revoke_sessions);
    }

    #[test]
    fn approving_an_approved_account_keeps_its_approval_but_lifts_a_lockout() {
        let current = user(false, UserStatus::Approved);
        let update = UserUpdate {
            status: Some(UserStatus::Approved),
            ..UserUpdate::default()
        };
        let plan = plan_user_update(&current, &update, Uuid::from_u128(9), now());
        assert_eq!(plan.changes, None);
        assert!(plan.lift_lockout);
    }

    #[test]
    fn any_status_change_but_approval_revokes_every_session() {
        for (from, to) in [
            (UserStatus::Approved, UserStatus::Disabled),
            (UserStatus::Approved, UserStatus::Pending),
            (UserStatus::Pending, UserStatus::Disabled),
        ] {
            let update = UserUpdate {
                status: Some(to),
                ..UserUpdate::default()
            };
            let plan = plan_user_update(&user(false, from), &update, Uuid::from_u128(9), now());
            assert!(plan.revoke_sessions, "{from:?} -> {to:?}");
            assert_eq!(plan.changes.unwrap().approved, None);
        }
    }

    #[test]
    fn the_console_vouches_for_the_address_and_nobody_else_does() {
        let bootstrap = new_account_role(Creation::Bootstrap, false, true, now());
        assert_eq!(bootstrap.email_verified_at, Some(now()));
        for creation in [
            Creation::Registration,
            Creation::ByAdmin {
                admin: Uuid::from_u128(7),
                is_admin: true,
            },
        ] {
            let role = new_account_role(creation, true, true, now());
            assert_eq!(role.email_verified_at, None, "{creation:?}");
        }
    }

    fn verified() -> User {
        User {
            email_verified: true,
            email_verified_at: Some(now() - chrono::TimeDelta::days(3)),
            ..user(false, UserStatus::Approved)
        }
    }

    fn new_email() -> Option<Email> {
        Some(Email::parse("email", "lovelace@example.com").unwrap())
    }

    #[test]
    fn an_admins_email_change_unverifies_unless_the_same_call_verifies() {
        let change = UserUpdate {
            email: new_email(),
            ..UserUpdate::default()
        };
        let plan = plan_user_update(&verified(), &change, Uuid::from_u128(9), now());
        assert!(plan.kill_email_tokens);
        assert_eq!(plan.changes.unwrap().email_verified, Some((false, None)));

        let verifying = UserUpdate {
            email_verified: Some(true),
            ..change
        };
        let plan = plan_user_update(&verified(), &verifying, Uuid::from_u128(9), now());
        assert_eq!(
            plan.changes.unwrap().email_verified,
            Some((true, Some(now())))
        );
    }

    #[test]
    fn an_admin_sets_email_verified_and_the_same_value_changes_nothing() {
        let set = |current: &User, value| {
            let update = UserUpdate {
                email_verified: Some(value),
                ..UserUpdate::default()
            };
            plan_user_update(current, &update, Uuid::from_u128(9), now())
        };
        assert_eq!(set(&verified(), true).changes, None);
        let unverified = user(false, UserStatus::Approved);
        assert_eq!(set(&unverified, false).changes, None);
        assert_eq!(
            set(&unverified, true).changes.unwrap().email_verified,
            Some((true, Some(now())))
        );
        assert_eq!(
            set(&verified(), false).changes.unwrap().email_verified,
            Some((false, None))
        );
        assert!(!set(&verified(), false).kill_email_tokens);
    }

    #[test]
    fn the_last_approved_admin_cannot_be_demoted_disabled_or_deleted() {
        let admin = user(true, UserStatus::Approved);
        let demoted = user(false, UserStatus::Approved);
        let disabled = user(true, UserStatus::Disabled);
        for after in [Some(&demoted), Some(&disabled), None] {
            assert!(matches!(
                keep_an_admin(&admin, after, 0),
                Err(Error::LastAdmin)
            ));
            assert!(keep_an_admin(&admin, after, 1).is_ok(), "another remains");
        }
    }

    #[test]
    fn changes_that_take_no_approved_admin_away_are_always_allowed() {
        let pending_admin = user(true, UserStatus::Pending);
        let member = user(false, UserStatus::Approved);
        assert!(keep_an_admin(&pending_admin, None, 0).is_ok());
        assert!(keep_an_admin(&member, None, 0).is_ok());
        let admin = user(true, UserStatus::Approved);
        assert!(keep_an_admin(&admin, Some(&admin), 0).is_ok());
    }
}

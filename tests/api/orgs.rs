//! Organizations: tenancy at registration, the organisation a session acts
//! for, the rights table, the last-owner invariant, invitations.

use std::time::Duration;

use tonic::Code;
use warden::proto::v1::{self as pb, OrgRole};

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, TestApp, assert_bad_field, assert_error, claims, spawn_app,
    spawn_app_with,
};

/// An organisation with an owner, an admin and a member (accounts made by
/// the platform admin, each logged in), and someone from outside.
struct Org {
    id: String,
    owner: (String, String),
    admin: (String, String),
    member: (String, String),
    outsider: (String, String),
}

async fn org_with_roles(app: &TestApp, platform: &str, tag: &str) -> Org {
    let owner = app
        .approved_user(platform, &format!("owner-{tag}@example.com"))
        .await;
    let org = app
        .as_member(&owner.1)
        .create(&format!("Org {tag}"))
        .await
        .unwrap();
    let as_platform = app.as_member(platform);
    let admin = app
        .approved_user(platform, &format!("admin-{tag}@example.com"))
        .await;
    as_platform
        .add_member(&org.id, &admin.0, OrgRole::Admin)
        .await
        .unwrap();
    let member = app
        .approved_user(platform, &format!("member-{tag}@example.com"))
        .await;
    as_platform
        .add_member(&org.id, &member.0, OrgRole::Member)
        .await
        .unwrap();
    let outsider = app
        .approved_user(platform, &format!("outsider-{tag}@example.com"))
        .await;
    Org {
        id: org.id,
        owner,
        admin,
        member,
        outsider,
    }
}

/// Login with PASSWORD, asking for the session to act for `org`.
async fn login_to(app: &TestApp, email: &str, org: &str) -> pb::LoginResponse {
    app.auth
        .clone()
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            organization_id: Some(org.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn role_of(members: &[pb::Member], user: &str) -> Option<OrgRole> {
    members.iter().find(|m| m.user_id == user).map(|m| m.role())
}

#[tokio::test]
async fn registration_creates_an_organisation_with_the_user_as_owner_named_by_the_fallbacks() {
    let app = spawn_app().await;
    let first = app
        .auth
        .clone()
        .register(pb::RegisterRequest {
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            display_name: "Ada".into(),
            organization_name: Some("  Acme  ".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let org = first.organization.expect("the first user gets one too");
    assert_eq!(org.name, "Acme");
    let admin = app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let token = admin.tokens.unwrap().access_token;
    let mine = app.as_member(&token).mine().await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].organization.as_ref().unwrap().id, org.id);
    assert_eq!(mine[0].role(), OrgRole::Owner);
    assert_eq!(admin.membership.unwrap().organization.unwrap().id, org.id);

    for (display_name, email, expected) in [
        ("Bob Builder", "bob@example.com", "Bob Builder"),
        ("", "carol.c@example.com", "carol.c"),
        ("   ", "dave@example.com", "dave"),
    ] {
        let reply = app
            .auth
            .clone()
            .register(pb::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: display_name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let org = reply.organization.expect("an organisation");
        assert_eq!(org.name, expected);
        // Pending, so looked at by the platform admin.
        let members = app.as_member(&token).members(&org.id).await.unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].user_id, reply.user.unwrap().id);
        assert_eq!(members[0].role(), OrgRole::Owner);
    }
    // CreateUser makes none.
    let (_, created) = app.approved_user(&token, "made@example.com").await;
    assert!(app.as_member(&created).mine().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_organisation_name_or_invitation_token_at_registration_is_refused_before_anything() {
    let app = spawn_app().await;
    let register = |name: Option<&str>, token: &str| {
        let mut auth = app.auth.clone();
        let request = pb::RegisterRequest {
            email: "x@example.com".into(),
            password: PASSWORD.into(),
            organization_name: name.map(str::to_owned),
            invitation_token: token.into(),
            ..Default::default()
        };
        async move { auth.register(request).await }
    };
    assert_bad_field(
        register(Some("   "), "").await,
        "INVALID_ARGUMENT",
        "organization_name",
    );
    assert_bad_field(
        register(Some(&"n".repeat(101)), "").await,
        "INVALID_ARGUMENT",
        "organization_name",
    );
    assert_bad_field(
        register(None, &"t".repeat(257)).await,
        "INVALID_ARGUMENT",
        "invitation_token",
    );
    assert_error(
        register(None, "no-such-token").await,
        Code::FailedPrecondition,
        "INVITATION_INVALID",
    );
    // Nothing was created: the email is still free.
    register(None, "").await.expect("the email is free");
}

#[tokio::test]
async fn a_session_acts_for_the_oldest_membership_or_the_one_asked_for_and_its_tokens_say_so() {
    let app = spawn_app().await;
    let (_, admin) = app.admin_session().await;
    let own = app.as_member(&admin).mine().await.unwrap()[0]
        .organization
        .clone()
        .unwrap();
    let second = app.as_member(&admin).create("Second").await.unwrap();

    let login = app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let tokens = login.tokens.unwrap();
    assert_eq!(claims(&tokens.access_token)["org_id"], own.id.as_str());
    let sessions = app
        .list_sessions(&tokens.access_token, false)
        .await
        .unwrap();
    let current = sessions.iter().find(|s| s.current).unwrap();
    assert_eq!(current.organization_id, own.id);

    let asked = login_to(&app, ADMIN_EMAIL, &second.id).await;
    assert_eq!(
        asked.membership.unwrap().organization.unwrap().id,
        second.id
    );
    let asked_tokens = asked.tokens.unwrap();
    assert_eq!(
        claims(&asked_tokens.access_token)["org_id"],
        second.id.as_str()
    );
    // Refresh keeps it.
    let refreshed = app.refresh(&asked_tokens.refresh_token).await.unwrap();
    assert_eq!(
        claims(&refreshed.access_token)["org_id"],
        second.id.as_str()
    );

    let login_for = |org: &str| {
        let mut auth = app.auth.clone();
        let request = pb::LoginRequest {
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            organization_id: Some(org.into()),
            ..Default::default()
        };
        async move { auth.login(request).await }
    };
    assert_error(
        login_for(&uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
        "ORGANIZATION_NOT_FOUND",
    );
    assert_bad_field(
        login_for("nope").await,
        "INVALID_ARGUMENT",
        "organization_id",
    );

    // No membership: a session that acts for none, and no claim.
    let (_, lone) = app.approved_user(&admin, "lone@example.com").await;
    assert!(claims(&lone).get("org_id").is_none());
    let v = app.validate(&lone).await.unwrap();
    assert!(v.active);
    assert_eq!(v.organization_id, "");
    assert_eq!(v.org_role(), OrgRole::Unspecified);
}

#[tokio::test]
async fn switching_organisation_rotates_the_refresh_token_and_changes_the_claim() {
    let app = spawn_app().await;
    let (_, _) = app.admin_session().await;
    let login = app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let tokens = login.tokens.unwrap();
    let second = app
        .as_member(&tokens.access_token)
        .create("Second")
        .await
        .unwrap();
    let switched = app
        .as_member(&tokens.access_token)
        .switch(&second.id)
        .await
        .unwrap();
    assert_eq!(claims(&switched.access_token)["org_id"], second.id.as_str());
    assert_eq!(
        claims(&switched.access_token)["sid"],
        claims(&tokens.access_token)["sid"],
        "the same session"
    );
    let v = app.validate(&switched.access_token).await.unwrap();
    assert_eq!(v.organization_id, second.id);
    assert_eq!(v.org_role(), OrgRole::Owner);
    // The refresh token from before the switch is rotated: reuse.
    assert_error(
        app.refresh(&tokens.refresh_token).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_REUSED",
    );

    let app = spawn_app().await;
    let (_, admin) = app.admin_session().await;
    let other = app.approved_user(&admin, "other@example.com").await;
    let theirs = app.as_member(&other.1).create("Theirs").await.unwrap();
    let (_, me) = app.approved_user(&admin, "me@example.com").await;
    assert_error(
        app.as_member(&me).switch(&theirs.id).await,
        Code::NotFound,
        "ORGANIZATION_NOT_FOUND",
    );
    assert_bad_field(
        app.as_member(&me).switch("x").await,
        "INVALID_ARGUMENT",
        "organization_id",
    );
}

#[tokio::test]
async fn validate_token_reports_the_membership_as_it_is_now() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "v").await;
    let member = login_to(&app, "member-v@example.com", &org.id)
        .await
        .tokens
        .unwrap()
        .access_token;
    let v = app.validate(&member).await.unwrap();
    assert!(v.active);
    assert_eq!(v.organization_id, org.id);
    assert_eq!(v.org_role(), OrgRole::Member);
    assert!(v.roles.is_empty());

    let owner = app.as_member(&org.owner.1);
    owner
        .set_roles(&org.id, &org.member.0, &["agent", "billing:read", "agent"])
        .await
        .unwrap();
    owner
        .set_role(&org.id, &org.member.0, OrgRole::Admin)
        .await
        .unwrap();
    let v = app.validate(&member).await.unwrap();
    assert_eq!(v.org_role(), OrgRole::Admin, "at the next call");
    assert_eq!(v.roles, ["agent", "billing:read"]);
}

#[tokio::test]
async fn removal_revokes_exactly_the_sessions_that_act_for_that_organisation() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "r").await;
    let own = app.as_member(&org.member.1).create("Own").await.unwrap();
    let login_for = |org: &str| {
        let org = org.to_owned();
        let auth = app.auth.clone();
        async move {
            auth.clone()
                .login(pb::LoginRequest {
                    email: "member-r@example.com".into(),
                    password: PASSWORD.into(),
                    organization_id: Some(org),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .tokens
                .unwrap()
                .access_token
        }
    };
    let in_org = login_for(&org.id).await;
    let in_own = login_for(&own.id).await;
    app.as_member(&org.admin.1)
        .remove(&org.id, &org.member.0)
        .await
        .unwrap();
    let left = app
        .as_member(&org.admin.1)
        .members_page(&org.id, 0, "")
        .await
        .unwrap();
    assert_eq!(
        (left.members.len(), left.total_size),
        (2, 2),
        "the count follows"
    );
    assert_error(
        app.get_me(&in_org).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!app.validate(&in_org).await.unwrap().active);
    app.get_me(&in_own)
        .await
        .expect("a session of another organisation lives on");
    assert!(app.validate(&in_own).await.unwrap().active);

    // Deleting an organisation ends the sessions of everyone acting for it.
    let admin_in_org = login_to(&app, "admin-r@example.com", &org.id)
        .await
        .tokens
        .unwrap()
        .access_token;
    app.as_member(&org.owner.1).delete(&org.id).await.unwrap();
    assert_error(
        app.get_me(&admin_in_org).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!app.validate(&admin_in_org).await.unwrap().active);
    assert_error(
        app.as_member(&org.owner.1).get(&org.id).await,
        Code::NotFound,
        "ORGANIZATION_NOT_FOUND",
    );
}

/// What a call answered: OK, or its reason.
fn outcome<T>(result: Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "OK".to_owned(),
        Err(status) => crate::helpers::describe(&status)
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Every RPC that names an organisation, called by a MEMBER, an ADMIN, an
/// OWNER, a non-member and a platform admin, each on an organisation of its
/// own (the calls change it).
#[tokio::test]
async fn the_rights_table_for_every_rpc_and_role() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    const OK: &str = "OK";
    const DENIED: &str = "ORG_ROLE_REQUIRED";
    const HIDDEN: &str = "ORGANIZATION_NOT_FOUND";
    // Per RPC: the answers for MEMBER, ADMIN, OWNER, outsider, platform admin.
    let expected: [(&str, [&str; 5]); 14] = [
        ("GetOrganization", [OK, OK, OK, HIDDEN, OK]),
        ("ListMembers", [OK, OK, OK, HIDDEN, OK]),
        ("UpdateOrganization", [DENIED, OK, OK, HIDDEN, OK]),
        ("ListInvitations", [DENIED, OK, OK, HIDDEN, OK]),
        ("CreateInvitation(MEMBER)", [DENIED, OK, OK, HIDDEN, OK]),
        ("CreateInvitation(OWNER)", [DENIED, DENIED, OK, HIDDEN, OK]),
        ("RevokeInvitation", [DENIED, OK, OK, HIDDEN, OK]),
        ("UpdateMember(MEMBER->ADMIN)", [DENIED, OK, OK, HIDDEN, OK]),
        ("UpdateMember(->OWNER)", [DENIED, DENIED, OK, HIDDEN, OK]),
        ("RemoveMember(MEMBER)", [DENIED, OK, OK, HIDDEN, OK]),
        ("RemoveMember(OWNER)", [DENIED, DENIED, OK, HIDDEN, OK]),
        // A session acts only for one of its user's memberships.
        ("SwitchOrganization", [OK, OK, OK, HIDDEN, HIDDEN]),
        ("DeleteOrganization", [DENIED, DENIED, OK, HIDDEN, OK]),
        // Leaving. The owner's session acted for the organisation it
        // deleted (it switched to it above): it is revoked with it.
        (
            "RemoveMember(self)",
            [OK, OK, "SESSION_REVOKED", HIDDEN, HIDDEN],
        ),
    ];
    for (column, who) in ["MEMBER", "ADMIN", "OWNER", "outsider", "platform admin"]
        .iter()
        .enumerate()
    {
        let tag = format!("t{column}");
        let org = org_with_roles(&app, &platform, &tag).await;
        let as_platform = app.as_member(&platform);
        // Targets of the changes, so that every caller has its own.
        let spare = |n: &str| format!("spare{n}-{tag}@example.com");
        let mut targets = Vec::new();
        for n in ["1", "2", "3"] {
            let (id, _) = app.approved_user(&platform, &spare(n)).await;
            as_platform
                .add_member(&org.id, &id, OrgRole::Member)
                .await
                .unwrap();
            targets.push(id);
        }
        let (second_owner, _) = app.approved_user(&platform, &spare("o")).await;
        as_platform
            .add_member(&org.id, &second_owner, OrgRole::Owner)
            .await
            .unwrap();
        let (pending, _) = app
            .as_member(&org.owner.1)
            .invite(&org.id, "invitee@example.com", OrgRole::Member)
            .await
            .unwrap();
        let (caller_id, token) = match column {
            0 => org.member.clone(),
            1 => org.admin.clone(),
            2 => org.owner.clone(),
            3 => org.outsider.clone(),
            _ => (
                claims(&platform)["sub"].as_str().unwrap().to_owned(),
                platform.clone(),
            ),
        };
        let c = app.as_member(&token);
        let id = org.id.as_str();
        let got = [
            outcome(c.get(id).await),
            outcome(c.members(id).await),
            outcome(c.rename(id, "Renamed").await),
            outcome(c.invitations(id, true).await),
            outcome(c.invite(id, "m@example.com", OrgRole::Member).await),
            outcome(c.invite(id, "o@example.com", OrgRole::Owner).await),
            outcome(c.revoke_invitation(id, &pending.id).await),
            outcome(c.set_role(id, &targets[0], OrgRole::Admin).await),
            outcome(c.set_role(id, &targets[1], OrgRole::Owner).await),
            outcome(c.remove(id, &targets[2]).await),
            outcome(c.remove(id, &second_owner).await),
            outcome(c.switch(id).await),
            outcome(c.delete(id).await),
            outcome(c.remove(id, &caller_id).await),
        ];
        for ((rpc, answers), got) in expected.iter().zip(&got) {
            assert_eq!(got, answers[column], "{rpc} by {who}");
        }
    }
}

#[tokio::test]
async fn the_last_owner_cannot_be_demoted_or_removed_or_leave() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "l").await;
    let owner = app.as_member(&org.owner.1);
    assert_error(
        owner.set_role(&org.id, &org.owner.0, OrgRole::Admin).await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
    let status = assert_error(
        owner.remove(&org.id, &org.owner.0).await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
    assert_eq!(status.message(), "Cannot remove last owner");
    assert_error(
        app.as_member(&platform).remove(&org.id, &org.owner.0).await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
    // A disabled owner still counts.
    app.as_member(&platform)
        .add_member(&org.id, &org.outsider.0, OrgRole::Owner)
        .await
        .unwrap();
    app.as_admin(&platform)
        .set_status(&org.outsider.0, pb::UserStatus::Disabled)
        .await
        .unwrap();
    owner
        .remove(&org.id, &org.owner.0)
        .await
        .expect("another owner remains");
    // The last member leaving takes the organisation with it.
    let lone = app.as_member(&org.member.1).create("Lone").await.unwrap();
    app.as_member(&org.member.1)
        .remove(&lone.id, &org.member.0)
        .await
        .unwrap();
    assert_error(
        app.as_member(&platform).get(&lone.id).await,
        Code::NotFound,
        "ORGANIZATION_NOT_FOUND",
    );
}

/// Two owners demote or remove each other, or themselves, at the same
/// moment, 20 times: one owner always stays.
#[tokio::test]
async fn two_owners_taking_each_other_away_at_once_leave_one_owner() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "race").await;
    let (b, b_token) = app
        .approved_user(&platform, "owner2-race@example.com")
        .await;
    let as_platform = app.as_member(&platform);
    as_platform
        .add_member(&org.id, &b, OrgRole::Owner)
        .await
        .unwrap();
    let a = org.owner.0.clone();
    let (ca, cb) = (app.as_member(&org.owner.1), app.as_member(&b_token));
    for round in 0..20 {
        // Each other, then themselves (each call alone is allowed: the other
        // owner remains), demoting, then removing.
        let (ra, rb) = match round % 4 {
            0 => {
                let (x, y) = tokio::join!(
                    ca.set_role(&org.id, &b, OrgRole::Admin),
                    cb.set_role(&org.id, &a, OrgRole::Admin)
                );
                (x.map(drop), y.map(drop))
            }
            1 => tokio::join!(ca.remove(&org.id, &b), cb.remove(&org.id, &a)),
            2 => {
                let (x, y) = tokio::join!(
                    ca.set_role(&org.id, &a, OrgRole::Admin),
                    cb.set_role(&org.id, &b, OrgRole::Admin)
                );
                (x.map(drop), y.map(drop))
            }
            _ => tokio::join!(ca.remove(&org.id, &a), cb.remove(&org.id, &b)),
        };
        for r in [&ra, &rb] {
            if let Err(status) = r {
                let reason = crate::helpers::describe(status);
                assert!(
                    reason.starts_with("LAST_OWNER")
                        || reason.starts_with("ORG_ROLE_REQUIRED")
                        || reason.starts_with("ORGANIZATION_NOT_FOUND")
                        || reason.starts_with("MEMBER_NOT_FOUND"),
                    "round {round}: {reason}"
                );
            }
        }
        let members = as_platform.members(&org.id).await.unwrap();
        let owners = members
            .iter()
            .filter(|m| m.role() == OrgRole::Owner)
            .count();
        assert_eq!(owners, 1, "round {round}: {members:?}");
        // Both back as owners for the next round.
        for user in [&a, &b] {
            match role_of(&members, user) {
                None => {
                    as_platform
                        .add_member(&org.id, user, OrgRole::Owner)
                        .await
                        .unwrap();
                }
                Some(OrgRole::Owner) => {}
                Some(_) => {
                    as_platform
                        .set_role(&org.id, user, OrgRole::Owner)
                        .await
                        .unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn delete_user_refuses_a_last_owner_and_takes_lone_organisations_along() {
    let app = spawn_app().await;
    let (admin_user, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "d").await;
    let users = app.as_admin(&platform);
    assert_error(
        users.delete(&org.owner.0).await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
    // Alone in an organisation: it goes with the user.
    let lone = app.as_member(&org.outsider.1).create("Lone").await.unwrap();
    users.delete(&org.outsider.0).await.unwrap();
    assert_error(
        app.as_member(&platform).get(&lone.id).await,
        Code::NotFound,
        "ORGANIZATION_NOT_FOUND",
    );
    // With another owner, the owner may go.
    app.as_member(&platform)
        .set_role(&org.id, &org.admin.0, OrgRole::Owner)
        .await
        .unwrap();
    users.delete(&org.owner.0).await.unwrap();
    let left = app
        .as_member(&platform)
        .members_page(&org.id, 0, "")
        .await
        .unwrap();
    assert_eq!(
        (left.members.len(), left.total_size),
        (2, 2),
        "the count follows"
    );
    // LAST_ADMIN is checked first: the only admin is also the only owner
    // of an organisation with members.
    let platform_org = app.as_member(&platform).mine().await.unwrap()[0]
        .organization
        .clone()
        .unwrap();
    app.as_member(&platform)
        .add_member(&platform_org.id, &org.member.0, OrgRole::Member)
        .await
        .unwrap();
    assert_error(
        users.delete(&admin_user.id).await,
        Code::FailedPrecondition,
        "LAST_ADMIN",
    );
}

#[tokio::test]
async fn invitations_end_to_end() {
    let app = spawn_app_with(|c| c.invitation_ttl = Duration::from_secs(60)).await;
    let (_, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "i").await;
    let admin = app.as_member(&org.admin.1);

    // The same answer whether or not the email has an account.
    let (for_account, token) = admin
        .invite(&org.id, "outsider-i@example.com", OrgRole::Member)
        .await
        .unwrap();
    let (for_nobody, _) = admin
        .invite(&org.id, "nobody@example.com", OrgRole::Member)
        .await
        .unwrap();
    assert_eq!(for_account.role(), for_nobody.role());
    assert_eq!(for_account.expires_at, for_nobody.expires_at);
    assert!(for_account.accepted_at.is_none() && for_nobody.accepted_at.is_none());

    // Wrong email.
    assert_error(
        app.as_member(&org.member.1).accept(&token).await,
        Code::FailedPrecondition,
        "INVITATION_INVALID",
    );
    // Accepted by the invited user; then reused.
    let outsider = app.as_member(&org.outsider.1);
    let joined = outsider.accept(&token).await.unwrap();
    assert_eq!(joined.organization.as_ref().unwrap().id, org.id);
    assert_eq!(joined.role(), OrgRole::Member);
    assert_error(
        outsider.accept(&token).await,
        Code::FailedPrecondition,
        "INVITATION_INVALID",
    );
    // Already a member: inviting is allowed, accepting says so.
    let (_, again) = admin
        .invite(&org.id, "outsider-i@example.com", OrgRole::Admin)
        .await
        .unwrap();
    assert_error(
        outsider.accept(&again).await,
        Code::AlreadyExists,
        "ALREADY_MEMBER",
    );

    // A new invitation replaces a pending one.
    let (first, first_token) = admin
        .invite(&org.id, "later@example.com", OrgRole::Member)
        .await
        .unwrap();
    let (_, second_token) = admin
        .invite(&org.id, "later@example.com", OrgRole::Admin)
        .await
        .unwrap();
    let listed = admin.invitations(&org.id, true).await.unwrap();
    assert!(
        listed
            .iter()
            .find(|i| i.id == first.id)
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(
        !admin
            .invitations(&org.id, false)
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == first.id)
    );

    // Register with an invitation: joins the inviting organisation, no own one.
    let register = |token: &str, email: &str| {
        let mut auth = app.auth.clone();
        let request = pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            invitation_token: token.into(),
            ..Default::default()
        };
        async move { auth.register(request).await }
    };
    assert_error(
        register(&first_token, "later@example.com").await,
        Code::FailedPrecondition,
        "INVITATION_INVALID",
    );
    assert_error(
        register(&second_token, "other@example.com").await,
        Code::FailedPrecondition,
        "INVITATION_INVALID",
    );
    let registered = register(&second_token, "later@example.com")
        .await
        .unwrap()
        .into_inner();
    assert!(registered.organization.is_none());
    let user = registered.user.unwrap();
    let members = admin.members(&org.id).await.unwrap();
    assert_eq!(role_of(&members, &user.id), Some(OrgRole::Admin));
    assert_eq!(
        user.status(),
        pb::UserStatus::Pending,
        "still waits for approval"
    );

    // Expiry.
    let (_, expiring) = admin
        .invite(&org.id, "member-i@example.com", OrgRole::Member)
        .await
        .unwrap();
    let (_, also) = admin
        .invite(&org.id, "admin-i@example.com", OrgRole::Member)
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(61));
    assert_error(
        app.as_member(&org.member.1).accept(&expiring).await,
        Code::FailedPrecondition,
        "INVITATION_INVALID",
    );
    let _ = also;

    // Revoking: a revoked one again changes nothing; an unknown one is not found.
    let (pending, pending_token) = admin
        .invite(&org.id, "p@example.com", OrgRole::Member)
        .await
        .unwrap();
    admin.revoke_invitation(&org.id, &pending.id).await.unwrap();
    admin.revoke_invitation(&org.id, &pending.id).await.unwrap();
    assert_error(
        admin
            .revoke_invitation(&org.id, &uuid::Uuid::now_v7().to_string())
            .await,
        Code::NotFound,
        "INVITATION_NOT_FOUND",
    );
    assert_error(
        register(&pending_token, "p@example.com").await,
        Code::FailedPrecondition,
        "INVITATION_INVALID",
    );
}

#[tokio::test]
async fn of_two_concurrent_accepts_of_one_invitation_one_wins() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "c").await;
    for round in 0..5 {
        let email = format!("c{round}@example.com");
        let (_, token) = app.approved_user(&platform, &email).await;
        let (_, invitation) = app
            .as_member(&org.owner.1)
            .invite(&org.id, &email, OrgRole::Member)
            .await
            .unwrap();
        let (one, two) = (app.as_member(&token), app.as_member(&token));
        let (a, b) = tokio::join!(one.accept(&invitation), two.accept(&invitation));
        assert_eq!(
            usize::from(a.is_ok()) + usize::from(b.is_ok()),
            1,
            "round {round}: {a:?} {b:?}"
        );
    }
}

#[tokio::test]
async fn every_new_field_is_checked_before_any_existence_check() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let c = app.as_member(&platform);
    let org = c.mine().await.unwrap()[0].organization.clone().unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_bad_field(c.get("nope").await, "INVALID_ARGUMENT", "organization_id");
    assert_bad_field(c.create("  ").await, "INVALID_ARGUMENT", "name");
    assert_bad_field(c.create("a\u{202E}b").await, "INVALID_ARGUMENT", "name");
    assert_bad_field(c.rename(&unknown, "").await, "INVALID_ARGUMENT", "name");
    assert_bad_field(c.members("1").await, "INVALID_ARGUMENT", "organization_id");
    assert_bad_field(
        c.members_page(&org.id, -1, "").await,
        "INVALID_ARGUMENT",
        "page_size",
    );
    assert_bad_field(
        c.members_page(&org.id, 0, "forged").await,
        "INVALID_ARGUMENT",
        "page_token",
    );
    assert_bad_field(
        c.set_role(&unknown, "x", OrgRole::Admin).await,
        "INVALID_ARGUMENT",
        "user_id",
    );
    assert_bad_field(
        c.set_role(&unknown, &unknown, OrgRole::Unspecified).await,
        "INVALID_ARGUMENT",
        "role",
    );
    assert_bad_field(
        c.update_member(pb::UpdateMemberRequest {
            organization_id: unknown.clone(),
            user_id: unknown.clone(),
            role: Some(42),
            roles: None,
        })
        .await,
        "INVALID_ARGUMENT",
        "role",
    );
    assert_bad_field(
        c.set_roles(&unknown, &unknown, &["Agent"]).await,
        "INVALID_ARGUMENT",
        "roles",
    );
    assert_bad_field(
        c.set_roles(&unknown, &unknown, &[" agent"]).await,
        "INVALID_ARGUMENT",
        "roles",
    );
    assert_bad_field(c.remove(&unknown, "").await, "INVALID_ARGUMENT", "user_id");
    assert_bad_field(
        c.invite(&unknown, "not-an-email", OrgRole::Member).await,
        "INVALID_ARGUMENT",
        "email",
    );
    assert_bad_field(
        c.invite(&unknown, "a@example.com", OrgRole::Unspecified)
            .await,
        "INVALID_ARGUMENT",
        "role",
    );
    assert_bad_field(
        c.revoke_invitation(&unknown, "x").await,
        "INVALID_ARGUMENT",
        "invitation_id",
    );
    assert_bad_field(c.accept("").await, "INVALID_ARGUMENT", "invitation_token");
    assert_bad_field(
        c.accept(&"a".repeat(257)).await,
        "INVALID_ARGUMENT",
        "invitation_token",
    );
    assert_bad_field(
        c.add_member(&unknown, "x", OrgRole::Member).await,
        "INVALID_ARGUMENT",
        "user_id",
    );
    assert_bad_field(
        c.add_member(&unknown, &unknown, OrgRole::Unspecified).await,
        "INVALID_ARGUMENT",
        "role",
    );
    // Well-formed but unknown.
    assert_error(
        c.get(&unknown).await,
        Code::NotFound,
        "ORGANIZATION_NOT_FOUND",
    );
    assert_error(
        c.add_member(&org.id, &unknown, OrgRole::Member).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_error(
        c.set_role(&org.id, &unknown, OrgRole::Member).await,
        Code::NotFound,
        "MEMBER_NOT_FOUND",
    );
    let me = claims(&platform)["sub"].as_str().unwrap().to_owned();
    assert_error(
        c.add_member(&org.id, &me, OrgRole::Member).await,
        Code::AlreadyExists,
        "ALREADY_MEMBER",
    );
}

#[tokio::test]
async fn members_and_organisations_page_like_list_users() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let c = app.as_member(&platform);
    let org = c.create("Paged").await.unwrap();
    let mut joined = Vec::new();
    for i in 0..4 {
        let (id, _) = app
            .approved_user(&platform, &format!("p{i}@example.com"))
            .await;
        c.add_member(&org.id, &id, OrgRole::Member).await.unwrap();
        joined.push(id);
        app.clock.advance(Duration::from_millis(5));
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c.members_page(&org.id, 2, &token).await.unwrap();
        assert_eq!(page.total_size, 5);
        seen.extend(page.members.into_iter().map(|m| m.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let newest_first: Vec<_> = joined.iter().rev().cloned().collect();
    assert_eq!(&seen[..4], &newest_first[..]);
    // A token of one organisation's members is refused by another's.
    let first = c.members_page(&org.id, 1, "").await.unwrap();
    let other = c.mine().await.unwrap()[0].organization.clone().unwrap();
    assert_bad_field(
        c.members_page(&other.id, 1, &first.next_page_token).await,
        "INVALID_ARGUMENT",
        "page_token",
    );

    let all = c
        .all_organizations(pb::ListOrganizationsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.total_size, 2);
    assert_eq!(all.organizations[0].id, org.id, "newest first");
    let next = c
        .all_organizations(pb::ListOrganizationsRequest {
            page_size: 1,
            page_token: all.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.organizations[0].id, other.id);
    assert!(next.next_page_token.is_empty());
    let named = c
        .all_organizations(pb::ListOrganizationsRequest {
            name_contains: "PAG".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(named.organizations.len(), 1);
    assert_eq!(named.organizations[0].id, org.id);
    let literal = c
        .all_organizations(pb::ListOrganizationsRequest {
            name_contains: "%".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(literal.organizations.is_empty(), "matched literally");
    // Not for members.
    let (_, user) = app.approved_user(&platform, "plain@example.com").await;
    assert_error(
        app.as_member(&user)
            .all_organizations(pb::ListOrganizationsRequest::default())
            .await,
        Code::PermissionDenied,
        "ADMIN_REQUIRED",
    );
}

#[tokio::test]
async fn update_organization_changes_only_what_is_given() {
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let c = app.as_member(&platform);
    let org = c.create("Same").await.unwrap();
    app.clock.advance(Duration::from_secs(2));
    let same = c.rename(&org.id, "Same").await.unwrap();
    assert_eq!(same.updated_at, org.updated_at);
    let renamed = c.rename(&org.id, "Other").await.unwrap();
    assert_eq!(renamed.name, "Other");
    assert_ne!(renamed.updated_at, org.updated_at);
    let got = c.get(&org.id).await.unwrap();
    assert_eq!(got.organization.unwrap().name, "Other");
    assert_eq!(got.membership.unwrap().role(), OrgRole::Owner);
}

/// The bearer check reads the membership with the session (one query): a
/// session whose membership is gone is refused even if nothing revoked it.
#[tokio::test]
async fn a_session_whose_membership_is_gone_is_refused_by_the_token_check_itself() {
    use sea_orm::EntityTrait as _;
    use warden::store::entities::membership;
    let app = spawn_app().await;
    let (_, platform) = app.admin_session().await;
    let org = org_with_roles(&app, &platform, "j").await;
    let login = login_to(&app, "member-j@example.com", &org.id).await;
    let token = login.tokens.unwrap().access_token;
    assert!(app.validate(&token).await.unwrap().active);
    // Behind warden's back: only the membership row goes.
    let deleted = membership::Entity::delete_by_id((
        org.member.0.parse::<uuid::Uuid>().unwrap(),
        org.id.parse::<uuid::Uuid>().unwrap(),
    ))
    .exec(app.db())
    .await
    .unwrap()
    .rows_affected;
    assert_eq!(deleted, 1);
    assert_error(
        app.get_me(&token).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!app.validate(&token).await.unwrap().active);
    // The member's other sessions (acting for no organisation) live on.
    app.get_me(&org.member.1)
        .await
        .expect("a session for no organisation");
}

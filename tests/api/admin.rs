use std::{collections::HashSet, time::Duration};

use tonic::{Code, Status};
use warden::{
    proto::v1::{self as pb, UserStatus},
    store::entities::user,
};

use crate::helpers::{
    AsAdmin, PASSWORD, TestApp, assert_bad_field, assert_error, spawn_app, with_bearer,
};

/// A fresh server with its first account logged in as admin.
async fn setup() -> (TestApp, AsAdmin, pb::User) {
    let app = spawn_app().await;
    let (user, token) = app.admin_session().await;
    let admin = app.as_admin(&token);
    (app, admin, user)
}

async fn access_token(app: &TestApp, email: &str) -> String {
    app.login(email, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token
}

/// Approved admins left, as the database says.
async fn approved_admins(app: &TestApp) -> usize {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    user::Entity::find()
        .filter(user::Column::IsAdmin.eq(true))
        .filter(user::Column::Status.eq(user::Status::Approved))
        .all(app.db())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn callers_without_a_good_token_are_refused_before_any_handler() {
    let app = spawn_app_with_ttl(Duration::from_secs(60)).await;
    let (_, token) = app.admin_session().await;
    let mut client = app.admin.clone();
    assert_error(
        client
            .count_pending_users(pb::CountPendingUsersRequest {})
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_error(
        client
            .list_users(with_bearer(pb::ListUsersRequest::default(), "not.a.token"))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    app.clock.advance(Duration::from_secs(60 + 6));
    assert_error(
        client
            .get_user(with_bearer(pb::GetUserRequest::default(), &token))
            .await,
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    );
}

async fn spawn_app_with_ttl(ttl: Duration) -> TestApp {
    crate::helpers::spawn_app_with(|c| c.access_token_ttl = ttl).await
}

#[tokio::test]
async fn a_user_who_is_not_an_admin_gets_admin_required() {
    let (app, admin, _) = setup().await;
    admin.create("plain@example.com", false).await.unwrap();
    let plain = app.as_admin(&access_token(&app, "plain@example.com").await);
    let status = assert_error(
        plain.count_pending().await,
        Code::PermissionDenied,
        "ADMIN_REQUIRED",
    );
    assert!(!status.message().is_empty());
    assert_error(
        plain.list(Default::default()).await,
        Code::PermissionDenied,
        "ADMIN_REQUIRED",
    );
}

#[tokio::test]
async fn a_demoted_admin_loses_access_on_the_very_next_call() {
    let (app, root, _) = setup().await;
    let second = root.create("second@example.com", true).await.unwrap();
    let second_admin = app.as_admin(&access_token(&app, "second@example.com").await);
    assert!(second_admin.count_pending().await.is_ok());
    root.set_admin(&second.id, false).await.unwrap();
    assert_error(
        second_admin.count_pending().await,
        Code::PermissionDenied,
        "ADMIN_REQUIRED",
    );
}

#[tokio::test]
async fn a_disabled_admin_loses_access_on_the_very_next_call() {
    let (app, root, _) = setup().await;
    let second = root.create("second@example.com", true).await.unwrap();
    let second_admin = app.as_admin(&access_token(&app, "second@example.com").await);
    root.set_status(&second.id, UserStatus::Disabled)
        .await
        .unwrap();
    assert_error(
        second_admin.count_pending().await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
}

#[tokio::test]
async fn get_user_finds_by_id_and_refuses_bad_ids() {
    let (_app, admin, me) = setup().await;
    assert_eq!(admin.get(&me.id).await.unwrap(), me);
    assert_error(
        admin.get(&uuid::Uuid::new_v4().to_string()).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    for bad in ["", "123", "not-a-uuid"] {
        assert_bad_field(admin.get(bad).await, "INVALID_ARGUMENT", "user_id");
    }
}

#[tokio::test]
async fn created_users_are_approved_by_their_creator_and_can_log_in() {
    let (app, admin, me) = setup().await;
    let now = app.now();
    let created = admin
        .create("  New.User@Example.com ", false)
        .await
        .unwrap();
    assert_eq!(created.email, "new.user@example.com");
    assert_eq!(created.status(), UserStatus::Approved);
    assert!(!created.is_admin);
    assert_eq!(created.approved_by, me.id);
    assert_eq!(created.approved_at.unwrap().seconds, now.timestamp());
    assert!(app.login("new.user@example.com", PASSWORD).await.is_ok());
    let as_admin = admin.create("boss@example.com", true).await.unwrap();
    assert!(as_admin.is_admin);
}

#[tokio::test]
async fn create_user_follows_the_input_rules() {
    let (_app, admin, _) = setup().await;
    admin.create("taken@example.com", false).await.unwrap();
    assert_error(
        admin.create("TAKEN@example.com", false).await,
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    assert_bad_field(
        admin.create("nope", false).await,
        "INVALID_ARGUMENT",
        "email",
    );
    let weak = pb::CreateUserRequest {
        email: "weak@example.com".into(),
        password: "short".into(),
        display_name: String::new(),
        is_admin: false,
    };
    let result = admin
        .client
        .clone()
        .create_user(with_bearer(weak, &admin.token))
        .await;
    assert_bad_field(result, "WEAK_PASSWORD", "password");
}

#[tokio::test]
async fn approving_a_pending_user_records_when_and_by_whom() {
    let (app, admin, me) = setup().await;
    let pending = app.register("pending@example.com", PASSWORD).await.unwrap();
    assert_eq!(admin.count_pending().await.unwrap(), 1);
    app.clock.advance(Duration::from_secs(30));
    let approved = admin
        .set_status(&pending.id, UserStatus::Approved)
        .await
        .unwrap();
    assert_eq!(approved.status(), UserStatus::Approved);
    assert_eq!(approved.approved_by, me.id);
    assert_eq!(approved.approved_at.unwrap().seconds, app.now().timestamp());
    assert_eq!(approved.updated_at, approved.approved_at);
    assert_eq!(admin.count_pending().await.unwrap(), 0);
    assert!(app.login("pending@example.com", PASSWORD).await.is_ok());

    // Approving again changes nothing, not even updated_at.
    app.clock.advance(Duration::from_secs(30));
    let again = admin
        .set_status(&pending.id, UserStatus::Approved)
        .await
        .unwrap();
    assert_eq!(again, approved);
}

#[tokio::test]
async fn only_present_fields_change() {
    let (app, admin, _) = setup().await;
    let user = admin.create("someone@example.com", false).await.unwrap();
    app.clock.advance(Duration::from_secs(5));
    let renamed = admin
        .update(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            display_name: Some("Renamed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(renamed.display_name, "Renamed");
    assert_eq!(
        (renamed.email.as_str(), renamed.is_admin),
        (user.email.as_str(), user.is_admin)
    );
    assert_eq!(renamed.status, user.status);
    assert!(renamed.updated_at.unwrap().seconds > user.updated_at.unwrap().seconds);

    let moved = admin
        .update(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("Moved@Example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved.email, "moved@example.com");
    assert_eq!(moved.display_name, "Renamed");

    app.clock.advance(Duration::from_secs(5));
    let untouched = admin
        .update(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        untouched, moved,
        "an update that changes nothing leaves updated_at alone"
    );
}

#[tokio::test]
async fn update_user_refuses_bad_fields() {
    let (_app, admin, _) = setup().await;
    let user = admin.create("someone@example.com", false).await.unwrap();
    admin.create("taken@example.com", false).await.unwrap();
    let update = |f: fn(&mut pb::UpdateUserRequest)| {
        let mut request = pb::UpdateUserRequest {
            user_id: user.id.clone(),
            ..Default::default()
        };
        f(&mut request);
        admin.update(request)
    };
    assert_error(
        update(|r| r.email = Some("taken@example.com".into())).await,
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    assert_bad_field(
        update(|r| r.email = Some("bad".into())).await,
        "INVALID_ARGUMENT",
        "email",
    );
    assert_bad_field(
        update(|r| r.display_name = Some("\u{1b}[31m".into())).await,
        "INVALID_ARGUMENT",
        "display_name",
    );
    assert_bad_field(
        update(|r| r.status = Some(0)).await,
        "INVALID_ARGUMENT",
        "status",
    );
    assert_bad_field(
        update(|r| r.status = Some(42)).await,
        "INVALID_ARGUMENT",
        "status",
    );
    assert_bad_field(
        update(|r| r.user_id = "x".into()).await,
        "INVALID_ARGUMENT",
        "user_id",
    );
    assert_error(
        update(|r| r.user_id = uuid::Uuid::nil().to_string()).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_eq!(admin.get(&user.id).await.unwrap(), user, "nothing changed");
}

#[tokio::test]
async fn disabling_a_user_revokes_their_sessions_and_refuses_login() {
    let (app, admin, _) = setup().await;
    let user = admin.create("user@example.com", false).await.unwrap();
    let token = access_token(&app, "user@example.com").await;
    let disabled = admin
        .set_status(&user.id, UserStatus::Disabled)
        .await
        .unwrap();
    assert_eq!(disabled.status(), UserStatus::Disabled);
    assert!(!app.validate(&token).await.unwrap().active);
    assert_error(
        app.login("user@example.com", PASSWORD).await,
        Code::PermissionDenied,
        "ACCOUNT_DISABLED",
    );
    assert!(admin.sessions(&user.id, false).await.unwrap().is_empty());
}

#[tokio::test]
async fn moving_an_approved_user_back_to_pending_revokes_their_sessions() {
    let (app, admin, _) = setup().await;
    let user = admin.create("user@example.com", false).await.unwrap();
    let token = access_token(&app, "user@example.com").await;
    admin
        .set_status(&user.id, UserStatus::Pending)
        .await
        .unwrap();
    assert!(!app.validate(&token).await.unwrap().active);
}

#[tokio::test]
async fn deleting_a_user_removes_them_and_their_sessions() {
    let (app, admin, _) = setup().await;
    let user = admin.create("gone@example.com", false).await.unwrap();
    let token = access_token(&app, "gone@example.com").await;
    admin.delete(&user.id).await.unwrap();
    assert_error(admin.get(&user.id).await, Code::NotFound, "USER_NOT_FOUND");
    assert_error(
        app.get_me(&token).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert_error(
        app.login("gone@example.com", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert_error(
        admin.delete(&user.id).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_bad_field(admin.delete("nope").await, "INVALID_ARGUMENT", "user_id");
}

#[tokio::test]
async fn resetting_a_password_ends_every_session_of_the_user() {
    let (app, admin, _) = setup().await;
    let user = admin.create("user@example.com", false).await.unwrap();
    let tokens = [
        access_token(&app, "user@example.com").await,
        access_token(&app, "user@example.com").await,
    ];
    let new_password = "a brand new passphrase";
    assert_eq!(
        admin.reset_password(&user.id, new_password).await.unwrap(),
        2
    );
    for token in &tokens {
        assert!(!app.validate(token).await.unwrap().active);
    }
    assert_error(
        app.login("user@example.com", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert!(app.login("user@example.com", new_password).await.is_ok());
    assert_bad_field(
        admin.reset_password(&user.id, "short").await,
        "WEAK_PASSWORD",
        "new_password",
    );
    assert_bad_field(
        admin.reset_password(&user.id, "").await,
        "INVALID_ARGUMENT",
        "new_password",
    );
    assert_error(
        admin
            .reset_password(&uuid::Uuid::new_v4().to_string(), new_password)
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
}

#[tokio::test]
async fn an_admin_lists_and_revokes_the_sessions_of_a_user() {
    let (app, admin, me) = setup().await;
    let user = admin.create("user@example.com", false).await.unwrap();
    let first = access_token(&app, "user@example.com").await;
    let _second = access_token(&app, "user@example.com").await;
    app.logout(&first, false).await.unwrap();
    assert_eq!(admin.sessions(&user.id, false).await.unwrap().len(), 1);
    let all = admin.sessions(&user.id, true).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all.iter().all(|s| !s.current),
        "the admin's own session is not among them"
    );
    assert_eq!(admin.revoke_sessions(&user.id).await.unwrap(), 1);
    assert!(admin.sessions(&user.id, false).await.unwrap().is_empty());
    assert_eq!(admin.revoke_sessions(&user.id).await.unwrap(), 0);
    // The admin's own sessions: the calling one is marked.
    let mine = admin.sessions(&me.id, false).await.unwrap();
    assert_eq!(mine.iter().filter(|s| s.current).count(), 1);
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(
        admin.sessions(&unknown, false).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_error(
        admin.revoke_sessions(&unknown).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
}

#[tokio::test]
async fn approved_by_survives_the_deletion_of_the_approving_admin() {
    let (app, root, _) = setup().await;
    let helper = root.create("helper@example.com", true).await.unwrap();
    let helper_admin = app.as_admin(&access_token(&app, "helper@example.com").await);
    let pending = app.register("pending@example.com", PASSWORD).await.unwrap();
    helper_admin
        .set_status(&pending.id, UserStatus::Approved)
        .await
        .unwrap();
    root.delete(&helper.id).await.unwrap();
    let approved = root.get(&pending.id).await.unwrap();
    assert_eq!(approved.approved_by, helper.id);
    assert!(root.list(Default::default()).await.is_ok());
    assert!(app.login("pending@example.com", PASSWORD).await.is_ok());
    // Updating and deleting the user still work.
    root.set_status(&pending.id, UserStatus::Disabled)
        .await
        .unwrap();
    root.delete(&pending.id).await.unwrap();
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed() {
    let (_app, admin, me) = setup().await;
    let attempts = [
        admin.set_admin(&me.id, false).await,
        admin.set_status(&me.id, UserStatus::Disabled).await,
        admin.set_status(&me.id, UserStatus::Pending).await,
    ];
    for attempt in attempts {
        let status = assert_error(attempt, Code::FailedPrecondition, "LAST_ADMIN");
        assert_eq!(status.message(), "Cannot remove last admin");
    }
    assert_error(
        admin.delete(&me.id).await,
        Code::FailedPrecondition,
        "LAST_ADMIN",
    );
    assert_eq!(admin.get(&me.id).await.unwrap(), me, "nothing changed");
}

#[tokio::test]
async fn an_admin_may_step_down_while_another_remains() {
    let (app, root, me) = setup().await;
    let other = root.create("other@example.com", true).await.unwrap();
    let demoted = root.set_admin(&me.id, false).await.unwrap();
    assert!(!demoted.is_admin);
    let other_admin = app.as_admin(&access_token(&app, "other@example.com").await);
    assert_error(
        other_admin.set_admin(&other.id, false).await,
        Code::FailedPrecondition,
        "LAST_ADMIN",
    );
    // A non-approved admin does not count.
    other_admin.set_admin(&me.id, true).await.unwrap();
    other_admin
        .set_status(&me.id, UserStatus::Disabled)
        .await
        .unwrap();
    assert_error(
        other_admin.delete(&other.id).await,
        Code::FailedPrecondition,
        "LAST_ADMIN",
    );
}

/// The outcome of one side of a race: done, or refused for a reason that
/// the race explains.
fn refused_sensibly(result: &Result<impl std::fmt::Debug, Status>, allowed: &[&str]) -> bool {
    use tonic_types::StatusExt as _;
    match result {
        Ok(_) => true,
        Err(status) => status
            .get_details_error_info()
            .is_some_and(|info| allowed.contains(&info.reason.as_str())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let (app, root, me) = setup().await;
    let other = root.create("other@example.com", true).await.unwrap();
    let other_admin = app.as_admin(&access_token(&app, "other@example.com").await);
    for round in 0..20 {
        let (a, b) = tokio::join!(
            root.set_admin(&other.id, false),
            other_admin.set_admin(&me.id, false)
        );
        assert_eq!(
            approved_admins(&app).await,
            1,
            "round {round}: exactly one admin left"
        );
        assert!(
            a.is_ok() != b.is_ok(),
            "round {round}: one demotion won: {a:?} {b:?}"
        );
        for result in [&a, &b] {
            assert!(
                refused_sensibly(result, &["LAST_ADMIN", "ADMIN_REQUIRED"]),
                "round {round}: {result:?}"
            );
        }
        // Restore two admins for the next round.
        let (survivor, demoted) = if a.is_ok() {
            (&root, &other.id)
        } else {
            (&other_admin, &me.id)
        };
        survivor.set_admin(demoted, true).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_admins_deleting_each_other_at_once_leave_one_admin() {
    let (app, root, me) = setup().await;
    let (mut survivor, mut survivor_id) = (root, me.id);
    for round in 0..10 {
        let email = format!("peer{round}@example.com");
        let peer = survivor.create(&email, true).await.unwrap();
        let peer_admin = app.as_admin(&access_token(&app, &email).await);
        let (x, y) = tokio::join!(survivor.delete(&peer.id), peer_admin.delete(&survivor_id));
        assert_eq!(
            approved_admins(&app).await,
            1,
            "round {round}: exactly one admin left"
        );
        assert!(
            x.is_ok() != y.is_ok(),
            "round {round}: one deletion won: {x:?} {y:?}"
        );
        for result in [&x, &y] {
            assert!(
                refused_sensibly(result, &["LAST_ADMIN", "SESSION_REVOKED"]),
                "round {round}: {result:?}"
            );
        }
        if y.is_ok() {
            survivor = peer_admin;
            survivor_id = peer.id;
        }
    }
}

#[tokio::test]
async fn pagination_covers_every_user_once_while_others_register() {
    let (app, admin, me) = setup().await;
    let mut existing = HashSet::from([me.id.clone()]);
    for i in 0..125 {
        if i % 10 == 0 {
            app.clock.advance(Duration::from_millis(1500));
        }
        existing.insert(
            app.register(&format!("user{i:03}@example.com"), PASSWORD)
                .await
                .unwrap()
                .id,
        );
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut extra = 0;
    loop {
        let page = admin
            .list(pb::ListUsersRequest {
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.users.len() <= 10);
        assert!(page.total_size >= 126);
        seen.extend(page.users);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Newcomers between pages, some at the same instant as the last page.
        for _ in 0..3 {
            app.register(&format!("late{extra}@example.com"), PASSWORD)
                .await
                .unwrap();
            extra += 1;
        }
        app.clock.advance(Duration::from_millis(700));
    }

    let ids: Vec<_> = seen.iter().map(|u| u.id.clone()).collect();
    let unique: HashSet<_> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "no user twice");
    assert!(
        existing.is_subset(&unique),
        "no user missing: {} of {}",
        existing.intersection(&unique).count(),
        existing.len()
    );
    let key = |u: &pb::User| {
        let t = u.created_at.unwrap();
        (t.seconds, t.nanos, uuid::Uuid::parse_str(&u.id).unwrap())
    };
    assert!(
        seen.windows(2).all(|w| key(&w[0]) > key(&w[1])),
        "newest first, ties by id descending"
    );
}

/// Totals per status are kept by the database as users come, change and go;
/// each must equal a count of the users themselves.
#[tokio::test]
async fn total_sizes_follow_every_kind_of_change() {
    let (app, admin, _) = setup().await;
    let total = async |status: UserStatus| {
        admin
            .list(pb::ListUsersRequest {
                status: status.into(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .total_size
    };
    let expect = async |all, pending, approved, disabled| {
        assert_eq!(
            (
                total(UserStatus::Unspecified).await,
                total(UserStatus::Pending).await,
                total(UserStatus::Approved).await,
                total(UserStatus::Disabled).await,
                admin.count_pending().await.unwrap(),
            ),
            (all, pending, approved, disabled, i64::from(pending))
        );
    };
    expect(1, 0, 1, 0).await;
    let a = app.register("a@example.com", PASSWORD).await.unwrap();
    let b = app.register("b@example.com", PASSWORD).await.unwrap();
    admin.create("c@example.com", false).await.unwrap();
    expect(4, 2, 2, 0).await;
    admin.set_status(&a.id, UserStatus::Approved).await.unwrap();
    admin.set_status(&a.id, UserStatus::Approved).await.unwrap();
    expect(4, 1, 3, 0).await;
    admin.set_status(&b.id, UserStatus::Disabled).await.unwrap();
    admin
        .update(pb::UpdateUserRequest {
            user_id: a.id.clone(),
            display_name: Some("Renamed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    expect(4, 0, 3, 1).await;
    admin.delete(&b.id).await.unwrap();
    admin.delete(&a.id).await.unwrap();
    expect(2, 0, 2, 0).await;
}

#[tokio::test]
async fn users_are_filtered_by_status_and_email() {
    let (app, admin, _) = setup().await;
    app.register("a_1@Example.org", PASSWORD).await.unwrap();
    app.register("ax1@example.org", PASSWORD).await.unwrap();
    app.register("b@example.net", PASSWORD).await.unwrap();
    let page = admin
        .list(pb::ListUsersRequest {
            status: UserStatus::Pending.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.users.len(), 3);
    assert_eq!(page.total_size, 3);
    let page = admin
        .list(pb::ListUsersRequest {
            email_contains: "EXAMPLE.ORG".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total_size, 2, "case-insensitive");
    let page = admin
        .list(pb::ListUsersRequest {
            email_contains: "a_".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let emails: Vec<_> = page.users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(
        emails,
        ["a_1@example.org"],
        "`_` matches itself, not any character"
    );
    let page = admin
        .list(pb::ListUsersRequest {
            status: UserStatus::Approved.into(),
            email_contains: "example.net".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total_size, 0);
}

#[tokio::test]
async fn list_users_refuses_bad_arguments() {
    let (app, admin, _) = setup().await;
    for i in 0..3 {
        app.register(&format!("u{i}@example.com"), PASSWORD)
            .await
            .unwrap();
    }
    let list = |request: pb::ListUsersRequest| admin.list(request);
    assert_bad_field(
        list(pb::ListUsersRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "INVALID_ARGUMENT",
        "page_size",
    );
    assert_bad_field(
        list(pb::ListUsersRequest {
            status: 9,
            ..Default::default()
        })
        .await,
        "INVALID_ARGUMENT",
        "status",
    );
    assert_bad_field(
        list(pb::ListUsersRequest {
            page_token: "made-up".into(),
            ..Default::default()
        })
        .await,
        "INVALID_ARGUMENT",
        "page_token",
    );
    let first = list(pb::ListUsersRequest {
        page_size: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!first.next_page_token.is_empty());
    // A token belongs to the filters it was issued for.
    let mismatched = pb::ListUsersRequest {
        page_size: 1,
        page_token: first.next_page_token.clone(),
        status: UserStatus::Pending.into(),
        ..Default::default()
    };
    assert_bad_field(list(mismatched).await, "INVALID_ARGUMENT", "page_token");
    // A changed page size is fine.
    let next = pb::ListUsersRequest {
        page_size: 2,
        page_token: first.next_page_token,
        ..Default::default()
    };
    assert_eq!(list(next).await.unwrap().users.len(), 2);
}

#[tokio::test]
async fn page_size_defaults_to_50_and_is_clamped_to_500() {
    use sea_orm::{ActiveModelTrait, IntoActiveModel};
    let (app, admin, me) = setup().await;
    let template = {
        use sea_orm::EntityTrait;
        user::Entity::find_by_id(uuid::Uuid::parse_str(&me.id).unwrap())
            .one(app.db())
            .await
            .unwrap()
            .unwrap()
    };
    for i in 0..505 {
        let mut row = template.clone();
        row.id = uuid::Uuid::now_v7();
        row.email = format!("bulk{i}@example.com");
        row.is_admin = false;
        row.into_active_model()
            .reset_all()
            .insert(app.db())
            .await
            .unwrap();
    }
    let default = admin.list(Default::default()).await.unwrap();
    assert_eq!(default.users.len(), 50);
    assert_eq!(default.total_size, 506);
    let clamped = admin
        .list(pb::ListUsersRequest {
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(clamped.users.len(), 500);
    assert!(!clamped.next_page_token.is_empty());
    let rest = admin
        .list(pb::ListUsersRequest {
            page_size: 10_000,
            page_token: clamped.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.users.len(), 6);
    assert!(rest.next_page_token.is_empty());
}

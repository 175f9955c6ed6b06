use std::time::Duration;

use sea_orm::{EntityTrait, PaginatorTrait};
use tonic::Code;
use tonic_types::StatusExt as _;
use warden::{
    domain::password::HashingCost,
    proto::v1::{self as pb, UserStatus, user_admin_client::UserAdminClient},
    store::entities::{login_failure, user},
};

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, TestApp, assert_error, channel, spawn_app_on, spawn_app_with,
    with_bearer,
};

const WRONG: &str = "definitely not the passphrase";
const LOCKOUT: Duration = Duration::from_secs(60);

async fn app_with_limit_3() -> TestApp {
    spawn_app_with(|c| {
        c.login_failure_limit = 3;
        c.login_lockout = LOCKOUT;
    })
    .await
}

#[track_caller]
fn assert_rate_limited<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Duration {
    let status = assert_error(result, Code::ResourceExhausted, "RATE_LIMITED");
    status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay")
}

#[tokio::test]
async fn the_failure_that_reaches_the_limit_locks_the_account_for_the_lockout() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for _ in 0..3 {
        assert_error(
            app.login(ADMIN_EMAIL, WRONG).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    // Right password or not, until the lockout has passed.
    let delay = assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await);
    assert_eq!(delay, LOCKOUT);
    assert_rate_limited(app.login(ADMIN_EMAIL, WRONG).await);
    app.clock.advance(Duration::from_secs(45));
    assert_eq!(
        assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await),
        Duration::from_secs(15)
    );
    app.clock.advance(Duration::from_secs(15));
    assert!(app.login(ADMIN_EMAIL, PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_lockout_costs_no_hashing() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for _ in 0..3 {
        let _ = app.login(ADMIN_EMAIL, WRONG).await;
    }
    let before = app.state.accounts.hasher().verifications();
    assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await);
    assert_eq!(app.state.accounts.hasher().verifications(), before);
}

#[tokio::test]
async fn a_success_resets_the_count() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for _ in 0..2 {
        let _ = app.login(ADMIN_EMAIL, WRONG).await;
    }
    assert!(app.login(ADMIN_EMAIL, PASSWORD).await.is_ok());
    for _ in 0..2 {
        assert_error(
            app.login(ADMIN_EMAIL, WRONG).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert!(app.login(ADMIN_EMAIL, PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_count_with_no_new_failure_for_a_lockout_period_starts_again() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for _ in 0..2 {
        let _ = app.login(ADMIN_EMAIL, WRONG).await;
    }
    app.clock.advance(LOCKOUT + Duration::from_secs(1));
    for _ in 0..2 {
        assert_error(
            app.login(ADMIN_EMAIL, WRONG).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert!(
        app.login(ADMIN_EMAIL, PASSWORD).await.is_ok(),
        "two failures, not four"
    );
}

#[tokio::test]
async fn every_spelling_of_an_email_counts_alike() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for email in [
        "ADMIN@example.com",
        " admin@EXAMPLE.com",
        "Admin@Example.Com",
    ] {
        let _ = app.login(email, WRONG).await;
    }
    assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await);
}

#[tokio::test]
async fn an_email_with_no_account_locks_the_same_way_and_its_state_expires() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for _ in 0..3 {
        assert_error(
            app.login("nobody@example.com", WRONG).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert_eq!(
        assert_rate_limited(app.login("nobody@example.com", WRONG).await),
        LOCKOUT
    );
    for i in 0..20 {
        let _ = app.login(&format!("guess{i}@example.com"), WRONG).await;
    }
    let stored = || login_failure::Entity::find().count(app.db());
    assert_eq!(stored().await.unwrap(), 21);
    // Nothing is pruned while it still counts.
    assert_eq!(
        app.state
            .accounts
            .prune_login_failures(app.now())
            .await
            .unwrap(),
        0
    );
    app.clock.advance(LOCKOUT + Duration::from_secs(1));
    assert_eq!(
        app.state
            .accounts
            .prune_login_failures(app.now())
            .await
            .unwrap(),
        21
    );
    assert_eq!(stored().await.unwrap(), 0);
    assert_error(
        app.login("nobody@example.com", WRONG).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

#[tokio::test]
async fn a_wrong_current_password_counts_as_a_failed_login() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let token = app
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    for _ in 0..3 {
        assert_error(
            app.change_password(&token, WRONG, "a new and long passphrase")
                .await,
            Code::PermissionDenied,
            "WRONG_PASSWORD",
        );
    }
    assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await);
    assert_rate_limited(
        app.change_password(&token, PASSWORD, "a new and long passphrase")
            .await,
    );
    let update = pb::UpdateMeRequest {
        email: Some("new@example.com".into()),
        current_password: PASSWORD.into(),
        ..Default::default()
    };
    assert_rate_limited(app.update_me(&token, update).await);
}

async fn admin_client(app: &TestApp) -> (UserAdminClient<tonic::transport::Channel>, String) {
    let (_, token) = app.admin_session().await;
    (UserAdminClient::new(channel(app.addr).await), token)
}

#[tokio::test]
async fn an_admin_reset_of_the_password_lifts_a_lockout() {
    let app = app_with_limit_3().await;
    let (mut admin, token) = admin_client(&app).await;
    let user = app.register("locked@example.com", PASSWORD).await.unwrap();
    crate::login::set_status(&app, &user.id, user::Status::Approved).await;
    for _ in 0..3 {
        let _ = app.login("locked@example.com", WRONG).await;
    }
    assert_rate_limited(app.login("locked@example.com", PASSWORD).await);
    let reset = pb::ResetPasswordRequest {
        user_id: user.id,
        new_password: "the reset passphrase".into(),
    };
    admin
        .reset_password(with_bearer(reset, &token))
        .await
        .unwrap();
    assert!(
        app.login("locked@example.com", "the reset passphrase")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_approval_lifts_a_lockout_and_keeps_earlier_approval_metadata() {
    let app = app_with_limit_3().await;
    let (mut admin, token) = admin_client(&app).await;
    let pending = app.register("pending@example.com", PASSWORD).await.unwrap();
    for _ in 0..3 {
        let _ = app.login("pending@example.com", WRONG).await;
    }
    let approve = |id: &str| pb::UpdateUserRequest {
        user_id: id.into(),
        status: Some(UserStatus::Approved.into()),
        ..Default::default()
    };
    let approved = admin
        .update_user(with_bearer(approve(&pending.id), &token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(app.login("pending@example.com", PASSWORD).await.is_ok());

    for _ in 0..3 {
        let _ = app.login("pending@example.com", WRONG).await;
    }
    assert_rate_limited(app.login("pending@example.com", PASSWORD).await);
    app.clock.advance(Duration::from_secs(5));
    let again = admin
        .update_user(with_bearer(approve(&pending.id), &token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        again, approved,
        "an already approved user keeps approved_at and approved_by"
    );
    assert!(app.login("pending@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_lockout_reached_across_two_replicas_holds_on_both() {
    let a = app_with_limit_3().await;
    a.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let b = spawn_app_on(a.database.share(), |c| {
        c.login_failure_limit = 3;
        c.login_lockout = LOCKOUT;
    })
    .await;
    let _ = a.login(ADMIN_EMAIL, WRONG).await;
    let _ = b.login(ADMIN_EMAIL, WRONG).await;
    let _ = a.login(ADMIN_EMAIL, WRONG).await;
    assert_rate_limited(b.login(ADMIN_EMAIL, PASSWORD).await);
    assert_rate_limited(a.login(ADMIN_EMAIL, PASSWORD).await);
}

#[tokio::test]
async fn a_login_rehashes_a_password_made_with_older_parameters() {
    let old = spawn_app_with(|_| {}).await;
    old.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let stored = |app: &TestApp| {
        let db = app.db().clone();
        async move {
            user::Entity::find()
                .one(&db)
                .await
                .unwrap()
                .unwrap()
                .password_hash
                .0
        }
    };
    assert!(
        stored(&old)
            .await
            .starts_with("$argon2id$v=19$m=64,t=1,p=1$")
    );

    let upgraded = spawn_app_on(old.database.share(), |c| {
        c.hashing = HashingCost {
            memory_kib: 256,
            iterations: 2,
            parallelism: 1,
        };
    })
    .await;
    assert!(upgraded.login(ADMIN_EMAIL, PASSWORD).await.is_ok());
    assert!(
        stored(&upgraded)
            .await
            .starts_with("$argon2id$v=19$m=256,t=2,p=1$")
    );
    assert!(
        upgraded.login(ADMIN_EMAIL, PASSWORD).await.is_ok(),
        "the new hash verifies"
    );
    assert_error(
        upgraded.login(ADMIN_EMAIL, WRONG).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

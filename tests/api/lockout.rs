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
const DAY: Duration = Duration::from_secs(86_400);

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
async fn a_failure_streak_outlives_the_lockout_period_and_is_forgotten_after_a_day() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for _ in 0..2 {
        let _ = app.login(ADMIN_EMAIL, WRONG).await;
    }
    // Consecutive failures count however slowly they come...
    app.clock.advance(LOCKOUT + Duration::from_secs(1));
    assert_error(
        app.login(ADMIN_EMAIL, WRONG).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await);
    // ...until a day after the later of the last failure and the lockout.
    app.clock.advance(LOCKOUT + DAY);
    for _ in 0..2 {
        assert_error(
            app.login(ADMIN_EMAIL, WRONG).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert!(
        app.login(ADMIN_EMAIL, PASSWORD).await.is_ok(),
        "two failures in the new streak, not five"
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
    // A day after the lockout ended, everything is forgotten.
    app.clock.advance(LOCKOUT + DAY - Duration::from_secs(1));
    assert_eq!(
        app.state
            .accounts
            .prune_login_failures(app.now())
            .await
            .unwrap(),
        20,
        "the guesses went a day after their last failure; the lockout is younger"
    );
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        app.state
            .accounts
            .prune_login_failures(app.now())
            .await
            .unwrap(),
        1
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
    (app.admin.clone(), token)
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

/// What a burst of simultaneous wrong logins came to.
#[derive(Debug, Default)]
struct Burst {
    invalid: usize,
    rate_limited: usize,
    other: Vec<String>,
}

/// `n` wrong-password logins for `email`, each on a connection of its own,
/// spread over the `apps` (replicas), sent at the same moment.
async fn burst(apps: &[&TestApp], email: &str, n: usize) -> Burst {
    let mut clients = Vec::new();
    for i in 0..n {
        let app = apps[i % apps.len()];
        clients.push(pb::auth_client::AuthClient::new(channel(app.addr).await));
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let calls: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (start, email) = (start.clone(), email.to_owned());
            tokio::spawn(async move {
                start.wait().await;
                client
                    .login(pb::LoginRequest {
                        organization_id: None,
                        email,
                        password: WRONG.into(),
                        device: None,
                    })
                    .await
            })
        })
        .collect();
    let mut outcome = Burst::default();
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => outcome.other.push("a wrong password logged in".into()),
            Err(status) => {
                let reason = status
                    .get_details_error_info()
                    .map(|i| i.reason)
                    .unwrap_or_default();
                match reason.as_str() {
                    "INVALID_CREDENTIALS" => outcome.invalid += 1,
                    "RATE_LIMITED" => {
                        assert!(status.get_details_retry_info().is_some(), "RetryInfo");
                        outcome.rate_limited += 1;
                    }
                    _ => outcome.other.push(crate::helpers::describe(&status)),
                }
            }
        }
    }
    outcome
}

/// Password checks run by all of `apps` so far.
fn verifications(apps: &[&TestApp]) -> u64 {
    apps.iter()
        .map(|a| a.state.accounts.hasher().verifications())
        .sum()
}

#[tokio::test]
async fn of_forty_simultaneous_wrong_logins_at_most_the_limit_get_a_password_check() {
    let app = spawn_app_with(|c| {
        c.login_failure_limit = 5;
        c.login_lockout = LOCKOUT;
    })
    .await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for email in [ADMIN_EMAIL, "nobody@example.com"] {
        let before = verifications(&[&app]);
        let outcome = burst(&[&app], email, 40).await;
        assert!(outcome.other.is_empty(), "{email}: {:?}", outcome.other);
        assert!((1..=5).contains(&outcome.invalid), "{email}: {outcome:?}");
        assert_eq!(outcome.invalid + outcome.rate_limited, 40, "{email}");
        assert_eq!(
            verifications(&[&app]) - before,
            outcome.invalid as u64,
            "{email}: refused attempts cost no hash"
        );
    }
    assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await);
}

#[tokio::test]
async fn three_bursts_in_a_row_each_get_at_most_the_limit_of_checks() {
    let app = spawn_app_with(|c| {
        c.login_failure_limit = 5;
        c.login_lockout = LOCKOUT;
    })
    .await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let mut lockout = LOCKOUT;
    for round in 0..3 {
        let outcome = burst(&[&app], ADMIN_EMAIL, 40).await;
        assert!(
            outcome.other.is_empty(),
            "round {round}: {:?}",
            outcome.other
        );
        assert!(
            (1..=5).contains(&outcome.invalid),
            "round {round}: {outcome:?}"
        );
        assert_eq!(
            assert_rate_limited(app.login(ADMIN_EMAIL, PASSWORD).await),
            lockout
        );
        app.clock.advance(lockout);
        lockout *= 2;
    }
}

#[tokio::test]
async fn simultaneous_wrong_logins_across_two_replicas_share_one_limit() {
    let a = spawn_app_with(|c| {
        c.login_failure_limit = 5;
        c.login_lockout = LOCKOUT;
    })
    .await;
    a.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let b = spawn_app_on(a.database.share(), |c| {
        c.login_failure_limit = 5;
        c.login_lockout = LOCKOUT;
    })
    .await;
    for email in [ADMIN_EMAIL, "nobody@example.com"] {
        let before = verifications(&[&a, &b]);
        let outcome = burst(&[&a, &b], email, 40).await;
        assert!(outcome.other.is_empty(), "{email}: {:?}", outcome.other);
        assert!((1..=5).contains(&outcome.invalid), "{email}: {outcome:?}");
        assert_eq!(verifications(&[&a, &b]) - before, outcome.invalid as u64);
    }
}

#[tokio::test]
async fn lockouts_in_a_row_double_and_a_successful_login_ends_the_streak() {
    let app = spawn_app_with(|c| {
        c.login_failure_limit = 2;
        c.login_lockout = Duration::from_secs(2);
    })
    .await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let lock = || async {
        for _ in 0..2 {
            assert_error(
                app.login(ADMIN_EMAIL, WRONG).await,
                Code::Unauthenticated,
                "INVALID_CREDENTIALS",
            );
        }
        assert_rate_limited(app.login(ADMIN_EMAIL, WRONG).await)
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let delay = lock().await;
        seen.push(delay.as_secs());
        app.clock.advance(delay);
    }
    assert_eq!(seen, [2, 4, 8]);
    assert!(app.login(ADMIN_EMAIL, PASSWORD).await.is_ok());
    assert_eq!(lock().await, Duration::from_secs(2), "a new streak");
}

#[tokio::test]
async fn a_hundred_failures_in_a_row_lock_until_an_admin_resets_the_password() {
    let app = spawn_app_with(|c| {
        c.login_failure_limit = 1_000_000;
        c.login_lockout = LOCKOUT;
    })
    .await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let user = app.register("target@example.com", PASSWORD).await.unwrap();
    crate::login::set_status(&app, &user.id, user::Status::Approved).await;
    for _ in 0..100 {
        assert_error(
            app.login("target@example.com", WRONG).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    assert_rate_limited(app.login("target@example.com", PASSWORD).await);
    // Neither time nor forgetting lifts it.
    app.clock.advance(DAY * 30);
    app.state
        .accounts
        .prune_login_failures(app.now())
        .await
        .unwrap();
    assert_rate_limited(app.login("target@example.com", PASSWORD).await);
    let (mut admin, token) = (
        app.admin.clone(),
        app.login(ADMIN_EMAIL, PASSWORD)
            .await
            .unwrap()
            .tokens
            .unwrap()
            .access_token,
    );
    let reset = pb::ResetPasswordRequest {
        user_id: user.id,
        new_password: "the reset passphrase".into(),
    };
    admin
        .reset_password(with_bearer(reset, &token))
        .await
        .unwrap();
    assert!(
        app.login("target@example.com", "the reset passphrase")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn simultaneous_wrong_current_passwords_take_their_places_like_logins() {
    let app = app_with_limit_3().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let token = app
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    let before = verifications(&[&app]);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut auth = app.auth.clone();
            let token = token.clone();
            tokio::spawn(async move {
                auth.change_password(with_bearer(
                    pb::ChangePasswordRequest {
                        current_password: WRONG.into(),
                        new_password: "a new and long passphrase".into(),
                    },
                    &token,
                ))
                .await
            })
        })
        .collect();
    let (mut wrong, mut limited) = (0, 0);
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        match status.get_details_error_info().unwrap().reason.as_str() {
            "WRONG_PASSWORD" => wrong += 1,
            "RATE_LIMITED" => limited += 1,
            other => panic!("{other}"),
        }
    }
    assert!((1..=3).contains(&wrong), "{wrong} checks");
    assert_eq!(wrong + limited, 20);
    assert_eq!(verifications(&[&app]) - before, wrong as u64);
}

use futures::future::join_all;
use tonic::Code;
use warden::proto::v1::{self as pb, UserStatus};

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, assert_bad_field, assert_error, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn the_first_account_is_an_approved_admin() {
    let app = spawn_app().await;
    let user = app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert!(user.is_admin);
    assert_eq!(user.status(), UserStatus::Approved);
    assert!(uuid::Uuid::try_parse(&user.id).is_ok());
    assert_eq!(user.email, ADMIN_EMAIL);
    let approved_at = user.approved_at.expect("approved_at is set");
    assert_eq!(Some(approved_at), user.created_at);
    assert_eq!(user.created_at, user.updated_at);
    assert_eq!(user.approved_by, "", "the first user approved themself");
}

#[tokio::test]
async fn later_accounts_wait_for_approval() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let user = app.register("second@example.com", PASSWORD).await.unwrap();
    assert!(!user.is_admin);
    assert_eq!(user.status(), UserStatus::Pending);
    assert_eq!(user.approved_at, None);
    assert_eq!(user.approved_by, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_first_registrations_make_exactly_one_admin() {
    // A race shows itself only sometimes; three empty databases make a
    // regression all but certain to be seen.
    for _ in 0..3 {
        let app = spawn_app().await;
        let attempts = (0..16).map(|i| {
            let app = &app;
            async move {
                app.register(&format!("racer{i}@example.com"), PASSWORD)
                    .await
            }
        });
        let users: Vec<pb::User> = join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.expect("every registration succeeds"))
            .collect();
        let admins: Vec<_> = users.iter().filter(|u| u.is_admin).collect();
        assert_eq!(admins.len(), 1, "exactly one admin");
        assert_eq!(admins[0].status(), UserStatus::Approved);
        let pending = users
            .iter()
            .filter(|u| u.status() == UserStatus::Pending)
            .count();
        assert_eq!(pending, 15);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_email_make_one_account() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| app.register("twin@example.com", PASSWORD))
        .collect();
    let results = join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.into_iter().filter(Result::is_err) {
        assert_error(r, Code::AlreadyExists, "EMAIL_TAKEN");
    }
}

#[tokio::test]
async fn emails_are_trimmed_lower_cased_and_unique_whatever_their_case() {
    let app = spawn_app().await;
    let user = app
        .register("  Grace.Hopper@Example.COM ", PASSWORD)
        .await
        .unwrap();
    assert_eq!(user.email, "grace.hopper@example.com");
    let status = assert_error(
        app.register("GRACE.HOPPER@example.com", PASSWORD).await,
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    assert_eq!(status.message(), "Email already registered");
}

#[tokio::test]
async fn the_display_name_is_kept() {
    let app = spawn_app().await;
    let user = app
        .auth
        .clone()
        .register(pb::RegisterRequest {
            organization_name: None,
            invitation_token: String::new(),
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            display_name: "Ada Lovelace 👩‍💻".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.display_name, "Ada Lovelace 👩‍💻");
}

#[tokio::test]
async fn malformed_emails_are_invalid_arguments() {
    let app = spawn_app().await;
    let too_long = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
    for email in [
        "",
        "   ",
        "plain",
        "a@",
        "@b.c",
        "a b@c.d",
        "a@b..c",
        "é@b.c",
        too_long.as_str(),
    ] {
        let status = assert_bad_field(
            app.register(email, PASSWORD).await,
            "INVALID_ARGUMENT",
            "email",
        );
        assert!(!status.message().contains(PASSWORD));
    }
}

async fn register_named(
    app: &crate::helpers::TestApp,
    display_name: String,
) -> Result<pb::User, tonic::Status> {
    app.auth
        .clone()
        .register(pb::RegisterRequest {
            organization_name: None,
            invitation_token: String::new(),
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            display_name,
        })
        .await
        .map(|r| r.into_inner().user.unwrap())
}

#[tokio::test]
async fn display_names_are_bounded_and_printable() {
    let app = spawn_app().await;
    for bad in [
        "x".repeat(101),
        "line\nbreak".to_owned(),
        "nul\0".to_owned(),
    ] {
        assert_bad_field(
            register_named(&app, bad).await,
            "INVALID_ARGUMENT",
            "display_name",
        );
    }
    assert!(register_named(&app, "é".repeat(100)).await.is_ok());
}

#[tokio::test]
async fn weak_passwords_are_refused_with_the_reason() {
    let app = spawn_app().await;
    let cases = [
        "short but ok".to_owned(),             // 12 characters < 15
        "x".repeat(129),                       // over 128
        "admin".to_owned() + "-and-more-text", // contains the local part
        "admin@example.com".to_owned(),        // the email itself
    ];
    for password in &cases {
        let status = assert_bad_field(
            app.register(ADMIN_EMAIL, password).await,
            "WEAK_PASSWORD",
            "password",
        );
        assert!(
            !status.message().contains(password.as_str()),
            "the password is not echoed"
        );
    }
    assert_bad_field(
        app.register(ADMIN_EMAIL, "").await,
        "INVALID_ARGUMENT",
        "password",
    );
}

#[tokio::test]
async fn common_passwords_are_refused_in_any_case() {
    let app = spawn_app_with(|c| c.password_min_length = 8).await;
    for password in ["password1", "PASSWORD1", "Qwerty123", "iloveyou"] {
        assert_bad_field(
            app.register(ADMIN_EMAIL, password).await,
            "WEAK_PASSWORD",
            "password",
        );
    }
}

#[tokio::test]
async fn the_minimum_length_is_configurable_and_counts_characters() {
    let app = spawn_app_with(|c| c.password_min_length = 8).await;
    // Eight characters, sixteen bytes.
    assert!(app.register(ADMIN_EMAIL, "ñøþæßðÿü").await.is_ok());
    assert_bad_field(
        app.register("b@example.com", "ñøþæßðÿ").await,
        "WEAK_PASSWORD",
        "password",
    );
}

#[tokio::test]
async fn a_failed_registration_leaves_no_account() {
    let app = spawn_app().await;
    assert_error(
        app.register(ADMIN_EMAIL, "too short").await,
        Code::InvalidArgument,
        "WEAK_PASSWORD",
    );
    // The first valid registration is still the first account.
    let user = app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert!(user.is_admin);
}

#[tokio::test]
async fn without_first_user_admin_the_first_account_is_pending_and_not_admin() {
    let app = spawn_app_with(|c| c.first_user_admin = false).await;
    let first = app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert_eq!(first.status(), UserStatus::Pending);
    assert!(!first.is_admin);
    assert!(first.approved_at.is_none());
    assert_error(
        app.login(ADMIN_EMAIL, PASSWORD).await,
        Code::PermissionDenied,
        "ACCOUNT_PENDING",
    );
}

/// Right-to-left overrides and isolates, which make text read as other
/// text (CVE-2021-42574, "Trojan Source").
pub const BIDI_CONTROLS: [char; 9] = [
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}',
];

#[tokio::test]
async fn display_names_refuse_bidi_overrides_and_isolates() {
    let app = spawn_app().await;
    for c in BIDI_CONTROLS {
        assert_bad_field(
            register_named(&app, format!("Ada{c}nimda")).await,
            "INVALID_ARGUMENT",
            "display_name",
        );
    }
    // Right-to-left text itself, with its marks, is a name like any other.
    assert!(register_named(&app, "שלום\u{200F}".into()).await.is_ok());
}

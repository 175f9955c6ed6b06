use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use tonic::{Code, Request};
use warden::{
    proto::v1::{self as pb, UserStatus},
    store::entities::{session, user},
};

use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, assert_bad_field, assert_error, spawn_app};

fn time(ts: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(ts.seconds, ts.nanos as u32).unwrap()
}

pub async fn set_status(app: &TestApp, user_id: &str, status: user::Status) {
    let id = uuid::Uuid::parse_str(user_id).unwrap();
    let mut row: user::ActiveModel = user::Entity::find_by_id(id)
        .one(app.db())
        .await
        .unwrap()
        .unwrap()
        .into();
    row.status = Set(status);
    row.update(app.db()).await.unwrap();
}

#[tokio::test]
async fn an_approved_user_gets_a_token_pair_and_a_session() {
    let app = spawn_app().await;
    let registered = app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let now = app.now();
    let login = app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();

    assert_eq!(login.user.as_ref().unwrap(), &registered);
    let tokens = login.tokens.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 15 * 60);
    assert_eq!(tokens.access_token.split('.').count(), 3, "a JWT");
    assert!(tokens.refresh_token.len() >= 43, "256 bits, base64url");
    assert_eq!(
        time(tokens.refresh_expires_at.as_ref().unwrap()),
        now + TimeDelta::days(30)
    );
    let session_id = uuid::Uuid::parse_str(&login.session_id).unwrap();
    let stored = session::Entity::find_by_id(session_id)
        .one(app.db())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.user_id.to_string(), registered.id);
    assert_eq!(stored.revoked_at, None);
    assert_eq!(stored.last_used_at, now);
    assert_eq!(stored.expires_at, now + TimeDelta::days(30));
}

#[tokio::test]
async fn a_session_records_device_user_agent_and_address() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let mut request = Request::new(pb::LoginRequest {
        organization_id: None,
        email: ADMIN_EMAIL.into(),
        password: PASSWORD.into(),
        device: Some(pb::DeviceInfo {
            device_id: "device-42".into(),
            device_name: "Ada's laptop".into(),
            device_type: "web".into(),
        }),
    });
    request
        .metadata_mut()
        .insert("user-agent", "warden-tests/1.0".parse().unwrap());
    let login = app.auth.clone().login(request).await.unwrap().into_inner();

    let id = uuid::Uuid::parse_str(&login.session_id).unwrap();
    let stored = session::Entity::find_by_id(id)
        .one(app.db())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.device_id, "device-42");
    assert_eq!(stored.device_name, "Ada's laptop");
    assert_eq!(stored.device_type, "web");
    assert!(
        stored.user_agent.starts_with("warden-tests/1.0"),
        "{}",
        stored.user_agent
    );
    assert_eq!(stored.ip_address, "127.0.0.1");
}

#[tokio::test]
async fn a_session_without_device_info_is_of_unknown_type() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let login = app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let id = uuid::Uuid::parse_str(&login.session_id).unwrap();
    let stored = session::Entity::find_by_id(id)
        .one(app.db())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.device_type, "unknown");
}

#[tokio::test]
async fn the_email_at_login_is_trimmed_and_case_insensitive() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert!(app.login("  ADMIN@Example.com ", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_pending_user_cannot_log_in() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    app.register("pending@example.com", PASSWORD).await.unwrap();
    let status = assert_error(
        app.login("pending@example.com", PASSWORD).await,
        Code::PermissionDenied,
        "ACCOUNT_PENDING",
    );
    assert_eq!(status.message(), "Account pending approval");
}

#[tokio::test]
async fn a_disabled_user_cannot_log_in() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let user = app.register("gone@example.com", PASSWORD).await.unwrap();
    set_status(&app, &user.id, user::Status::Disabled).await;
    let status = assert_error(
        app.login("gone@example.com", PASSWORD).await,
        Code::PermissionDenied,
        "ACCOUNT_DISABLED",
    );
    assert_eq!(status.message(), "Account disabled");
}

#[tokio::test]
async fn a_wrong_password_is_invalid_credentials() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let status = assert_error(
        app.login(ADMIN_EMAIL, "correct horse battery stapler")
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert_eq!(status.message(), "Incorrect email or password");
}

#[tokio::test]
async fn an_unknown_email_fails_like_a_wrong_password_after_the_same_work() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let hasher = app.state.accounts.hasher();

    let before = hasher.verifications();
    let wrong = app.login(ADMIN_EMAIL, "not the right passphrase").await;
    assert_eq!(
        hasher.verifications(),
        before + 1,
        "a wrong password runs one verification"
    );
    let unknown = app
        .login("nobody@example.com", "not the right passphrase")
        .await;
    assert_eq!(
        hasher.verifications(),
        before + 2,
        "an unknown email runs one too"
    );

    let wrong = assert_error(wrong, Code::Unauthenticated, "INVALID_CREDENTIALS");
    let unknown = assert_error(unknown, Code::Unauthenticated, "INVALID_CREDENTIALS");
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(wrong.details(), unknown.details());
}

#[tokio::test]
async fn a_pending_or_disabled_account_is_revealed_only_with_its_password() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    app.register("pending@example.com", PASSWORD).await.unwrap();
    let disabled = app
        .register("disabled@example.com", PASSWORD)
        .await
        .unwrap();
    set_status(&app, &disabled.id, user::Status::Disabled).await;
    for email in ["pending@example.com", "disabled@example.com"] {
        assert_error(
            app.login(email, "some other passphrase").await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
}

#[tokio::test]
async fn a_malformed_email_at_login_is_just_an_unknown_account() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert_error(
        app.login("not-an-email", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

#[tokio::test]
async fn an_empty_email_or_password_is_an_invalid_argument() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert_bad_field(app.login("", PASSWORD).await, "INVALID_ARGUMENT", "email");
    assert_bad_field(
        app.login(" \t ", PASSWORD).await,
        "INVALID_ARGUMENT",
        "email",
    );
    assert_bad_field(
        app.login(ADMIN_EMAIL, "").await,
        "INVALID_ARGUMENT",
        "password",
    );
}

#[tokio::test]
async fn oversized_device_fields_are_invalid_arguments() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let result = app
        .auth
        .clone()
        .login(pb::LoginRequest {
            organization_id: None,
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            device: Some(pb::DeviceInfo {
                device_id: "x".repeat(129),
                device_name: "ok".into(),
                device_type: "web".into(),
            }),
        })
        .await;
    assert_bad_field(result, "INVALID_ARGUMENT", "device.device_id");
}

#[tokio::test]
async fn an_account_approved_later_can_log_in() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let user = app.register("later@example.com", PASSWORD).await.unwrap();
    assert_eq!(user.status(), UserStatus::Pending);
    set_status(&app, &user.id, user::Status::Approved).await;
    assert!(app.login("later@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn device_fields_refuse_bidi_overrides_and_isolates() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let status = app
        .auth
        .clone()
        .login(pb::LoginRequest {
            organization_id: None,
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            device: Some(pb::DeviceInfo {
                device_id: "id".into(),
                device_name: "phone\u{202E}".into(),
                device_type: "ios".into(),
            }),
        })
        .await;
    assert_bad_field(status, "INVALID_ARGUMENT", "device.device_name");
}

use std::time::Duration;

use tonic::Code;
use warden::proto::v1 as pb;

use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, assert_bad_field, assert_error, spawn_app};

const NEW_PASSWORD: &str = "a completely different passphrase";

async fn admin_with_sessions(count: usize) -> (TestApp, Vec<String>) {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..count {
        tokens.push(
            app.login(ADMIN_EMAIL, PASSWORD)
                .await
                .unwrap()
                .tokens
                .unwrap()
                .access_token,
        );
    }
    (app, tokens)
}

#[tokio::test]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let (app, tokens) = admin_with_sessions(3).await;
    let revoked = app
        .change_password(&tokens[0], PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    assert!(
        app.validate(&tokens[0]).await.unwrap().active,
        "the caller's session stays"
    );
    for other in &tokens[1..] {
        assert!(!app.validate(other).await.unwrap().active);
    }
    assert_error(
        app.login(ADMIN_EMAIL, PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert!(app.login(ADMIN_EMAIL, NEW_PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_wrong_current_password_changes_nothing() {
    let (app, tokens) = admin_with_sessions(2).await;
    let status = assert_error(
        app.change_password(&tokens[0], "not my current passphrase", NEW_PASSWORD)
            .await,
        Code::PermissionDenied,
        "WRONG_PASSWORD",
    );
    assert_eq!(status.message(), "Current password is incorrect");
    assert!(app.validate(&tokens[1]).await.unwrap().active);
    assert!(app.login(ADMIN_EMAIL, PASSWORD).await.is_ok());
}

#[tokio::test]
async fn the_new_password_must_meet_the_policy() {
    let (app, tokens) = admin_with_sessions(1).await;
    let status = assert_bad_field(
        app.change_password(&tokens[0], PASSWORD, "too short").await,
        "WEAK_PASSWORD",
        "new_password",
    );
    assert!(!status.message().contains("too short"));
    assert_bad_field(
        app.change_password(&tokens[0], PASSWORD, "").await,
        "INVALID_ARGUMENT",
        "new_password",
    );
    assert_bad_field(
        app.change_password(&tokens[0], "", NEW_PASSWORD).await,
        "INVALID_ARGUMENT",
        "current_password",
    );
    assert!(
        app.login(ADMIN_EMAIL, PASSWORD).await.is_ok(),
        "the password is unchanged"
    );
}

fn change(
    display_name: Option<&str>,
    email: Option<&str>,
    current_password: &str,
) -> pb::UpdateMeRequest {
    pb::UpdateMeRequest {
        display_name: display_name.map(Into::into),
        email: email.map(Into::into),
        current_password: current_password.into(),
    }
}

#[tokio::test]
async fn the_display_name_changes_without_a_password() {
    let (app, tokens) = admin_with_sessions(1).await;
    let before = app
        .get_me_with(Some(&format!("Bearer {}", tokens[0])))
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(10));
    let after = app
        .update_me(&tokens[0], change(Some("Grace"), None, ""))
        .await
        .unwrap();
    assert_eq!(after.display_name, "Grace");
    assert_eq!(after.email, before.email);
    assert!(after.updated_at.unwrap().seconds > before.updated_at.unwrap().seconds);
    assert_eq!(after.created_at, before.created_at);
}

#[tokio::test]
async fn an_update_that_changes_nothing_leaves_updated_at_alone() {
    let (app, tokens) = admin_with_sessions(1).await;
    let before = app
        .get_me_with(Some(&format!("Bearer {}", tokens[0])))
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(10));
    let same = app
        .update_me(
            &tokens[0],
            change(Some(&before.display_name), Some("ADMIN@example.com"), ""),
        )
        .await
        .unwrap();
    assert_eq!(same, before);
    assert_eq!(
        app.update_me(&tokens[0], change(None, None, ""))
            .await
            .unwrap(),
        before
    );
}

#[tokio::test]
async fn changing_the_email_needs_the_current_password() {
    let (app, tokens) = admin_with_sessions(1).await;
    assert_bad_field(
        app.update_me(&tokens[0], change(None, Some("new@example.com"), ""))
            .await,
        "INVALID_ARGUMENT",
        "current_password",
    );
    assert_error(
        app.update_me(
            &tokens[0],
            change(None, Some("new@example.com"), "a wrong passphrase"),
        )
        .await,
        Code::PermissionDenied,
        "WRONG_PASSWORD",
    );
    let user = app
        .update_me(
            &tokens[0],
            change(None, Some(" New@Example.com "), PASSWORD),
        )
        .await
        .unwrap();
    assert_eq!(user.email, "new@example.com");
    assert!(app.login("new@example.com", PASSWORD).await.is_ok());
    assert_error(
        app.login(ADMIN_EMAIL, PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

#[tokio::test]
async fn the_new_email_must_be_free() {
    let (app, tokens) = admin_with_sessions(1).await;
    app.register("taken@example.com", PASSWORD).await.unwrap();
    let status = assert_error(
        app.update_me(
            &tokens[0],
            change(None, Some("Taken@example.com"), PASSWORD),
        )
        .await,
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    assert_eq!(status.message(), "Email already registered");
}

#[tokio::test]
async fn profile_fields_follow_the_input_rules() {
    let (app, tokens) = admin_with_sessions(1).await;
    assert_bad_field(
        app.update_me(&tokens[0], change(None, Some("not an email"), PASSWORD))
            .await,
        "INVALID_ARGUMENT",
        "email",
    );
    assert_bad_field(
        app.update_me(&tokens[0], change(None, Some("  "), PASSWORD))
            .await,
        "INVALID_ARGUMENT",
        "email",
    );
    assert_bad_field(
        app.update_me(&tokens[0], change(Some(&"n".repeat(101)), None, ""))
            .await,
        "INVALID_ARGUMENT",
        "display_name",
    );
}

#[tokio::test]
async fn update_me_refuses_display_names_with_bidi_overrides_or_isolates() {
    let (app, tokens) = admin_with_sessions(1).await;
    for c in crate::register::BIDI_CONTROLS {
        let name = format!("Ada{c}nimda");
        assert_bad_field(
            app.update_me(&tokens[0], change(Some(&name), None, ""))
                .await,
            "INVALID_ARGUMENT",
            "display_name",
        );
    }
    let me = app
        .get_me_with(Some(&format!("Bearer {}", tokens[0])))
        .await
        .unwrap();
    assert!(
        !me.display_name
            .chars()
            .any(|c| crate::register::BIDI_CONTROLS.contains(&c))
    );
}

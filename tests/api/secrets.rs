//! Passwords, tokens and hashes never reach the logs, even at trace level.

use sea_orm::EntityTrait;
use warden::{
    proto::v1::{self as pb, auth_client::AuthClient, user_admin_client::UserAdminClient},
    store::entities::user,
};

use crate::helpers::{ServerProcess, TestDatabase, channel, with_bearer};

#[tokio::test]
async fn no_secret_of_a_full_flow_appears_in_trace_logs() {
    let db = TestDatabase::create().await;
    let server = ServerProcess::start(
        &db,
        &[
            ("WARDEN_LOG", "trace"),
            ("WARDEN_ARGON2_MEMORY_KIB", "64"),
            ("WARDEN_ARGON2_ITERATIONS", "1"),
        ],
    )
    .await;
    let mut auth = AuthClient::new(channel(server.addr).await);
    let mut admin = UserAdminClient::new(channel(server.addr).await);
    let mut secrets: Vec<String> = Vec::new();
    let mut remember = |s: &str| {
        secrets.push(s.to_owned());
        s.to_owned()
    };

    let first = remember("first secret passphrase");
    let wrong = remember("wrong secret passphrase");
    let second = remember("second secret passphrase");
    let created = remember("created secret passphrase");
    let reset = remember("reset secret passphrase");

    let register = |email: &str, password: &str| pb::RegisterRequest {
        organization_name: None,
        invitation_token: String::new(),
        email: email.into(),
        password: password.into(),
        display_name: "Secretive".into(),
    };
    auth.register(register("owner@example.com", &first))
        .await
        .unwrap();
    let login = |email: &str, password: &str| pb::LoginRequest {
        organization_id: None,
        email: email.into(),
        password: password.into(),
        device: None,
    };
    assert!(
        auth.login(login("owner@example.com", &wrong))
            .await
            .is_err()
    );
    let tokens = auth
        .login(login("owner@example.com", &first))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let access = remember(&tokens.access_token);
    let refresh = remember(&tokens.refresh_token);

    auth.get_me(with_bearer(pb::GetMeRequest {}, &access))
        .await
        .unwrap();
    auth.validate_token(pb::ValidateTokenRequest {
        access_token: access.clone(),
    })
    .await
    .unwrap();
    let rotated = auth
        .refresh(pb::RefreshRequest {
            refresh_token: refresh.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    remember(&rotated.access_token);
    remember(&rotated.refresh_token);
    assert!(
        auth.refresh(pb::RefreshRequest {
            refresh_token: refresh.clone()
        })
        .await
        .is_err(),
        "reuse"
    );

    let tokens = auth
        .login(login("owner@example.com", &first))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let access = remember(&tokens.access_token);
    remember(&tokens.refresh_token);
    let change = pb::ChangePasswordRequest {
        current_password: first.clone(),
        new_password: second.clone(),
    };
    auth.change_password(with_bearer(change, &access))
        .await
        .unwrap();
    let create = pb::CreateUserRequest {
        email: "made@example.com".into(),
        password: created.clone(),
        display_name: String::new(),
        is_admin: false,
    };
    let made = admin
        .create_user(with_bearer(create, &access))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let reset_request = pb::ResetPasswordRequest {
        user_id: made.id,
        new_password: reset.clone(),
    };
    admin
        .reset_password(with_bearer(reset_request, &access))
        .await
        .unwrap();
    let weak = pb::ChangePasswordRequest {
        current_password: second.clone(),
        new_password: remember("short-7f3a"),
    };
    assert!(
        auth.change_password(with_bearer(weak, &access))
            .await
            .is_err()
    );

    // The stored hashes are secrets too.
    let conn = sea_orm::Database::connect(db.url()).await.unwrap();
    for row in user::Entity::find().all(&conn).await.unwrap() {
        remember(&row.password_hash.0);
    }
    conn.close().await.ok();

    let (code, logs) = server.stop().await;
    assert_eq!(code, Some(0));
    let text = logs.join("\n");
    // The flow was logged in detail, so the check below means something.
    for event in [
        "login",
        "refresh token reused",
        "password changed",
        "password reset",
        "account created",
    ] {
        assert!(text.contains(event), "`{event}` is logged");
    }
    assert!(
        logs.len() > 200,
        "trace logging was on: {} lines",
        logs.len()
    );
    for secret in &secrets {
        // Long secrets must not appear even in part (a token cut in two).
        let probe = &secret[..secret.len().min(24)];
        assert!(
            !text.contains(probe),
            "a secret appears in the logs: {probe:.6}…"
        );
    }
}

/// Every mail flow, with trace logging and a real relay: the tokens mailed
/// or issued, and the passwords set with them, never reach the logs.
#[tokio::test]
async fn no_token_of_a_mail_flow_appears_in_trace_logs() {
    use crate::{helpers::PASSWORD, mail::MailSink};

    let Some(sink) = MailSink::start().await else {
        return;
    };
    let db = TestDatabase::create().await;
    let url = sink.url();
    let server = ServerProcess::start(
        &db,
        &[
            ("WARDEN_LOG", "trace"),
            ("WARDEN_ARGON2_MEMORY_KIB", "64"),
            ("WARDEN_ARGON2_ITERATIONS", "1"),
            ("WARDEN_SMTP_URL", url.as_str()),
            ("WARDEN_MAIL_COOLDOWN", "1s"),
        ],
    )
    .await;
    let client = server.client().await;
    let mut secrets: Vec<String> = Vec::new();
    let owner = "owner@example.com";

    client.register(owner, PASSWORD).await.unwrap();
    let verification = sink
        .wait_for(owner, "Verify your email")
        .await
        .token()
        .unwrap();
    secrets.push(verification.clone());
    client
        .auth
        .clone()
        .verify_email(pb::VerifyEmailRequest {
            token: verification,
        })
        .await
        .unwrap();

    client
        .auth
        .clone()
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: owner.into(),
        })
        .await
        .unwrap();
    let reset = sink
        .wait_for(owner, "Reset your password")
        .await
        .token()
        .unwrap();
    secrets.push(reset.clone());
    let after_reset = "password chosen by mail reset".to_owned();
    secrets.push(after_reset.clone());
    client
        .auth
        .clone()
        .confirm_password_reset(pb::ConfirmPasswordResetRequest {
            token: reset,
            new_password: after_reset.clone(),
        })
        .await
        .unwrap();
    sink.wait_for(owner, "Your password was changed").await;

    let access = client
        .login(owner, &after_reset)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    secrets.push(access.clone());
    let changed = "password chosen by a change".to_owned();
    secrets.push(changed.clone());
    client
        .change_password(&access, &after_reset, &changed)
        .await
        .unwrap();
    client
        .update_me(
            &access,
            pb::UpdateMeRequest {
                email: Some("moved@example.com".into()),
                current_password: changed.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let moved = sink
        .wait_for("moved@example.com", "Verify your email")
        .await
        .token()
        .unwrap();
    secrets.push(moved);
    sink.wait_for(owner, "Your email was changed").await;

    let me = client.get_me(&access).await.unwrap();
    for purpose in [
        pb::EmailTokenPurpose::VerifyEmail,
        pb::EmailTokenPurpose::ResetPassword,
    ] {
        let issued = client
            .admin
            .clone()
            .issue_email_token(with_bearer(
                pb::IssueEmailTokenRequest {
                    user_id: me.id.clone(),
                    purpose: purpose.into(),
                },
                &access,
            ))
            .await
            .unwrap()
            .into_inner();
        secrets.push(issued.token);
    }
    // A bad token is refused without echoing it.
    let guessed = "guessed-token-guessed-token-guessed-token-1".to_owned();
    secrets.push(guessed.clone());
    let refused = client
        .auth
        .clone()
        .verify_email(pb::VerifyEmailRequest { token: guessed })
        .await
        .unwrap_err();
    assert!(!refused.message().contains("guessed-token"));

    let (code, logs) = server.stop().await;
    assert_eq!(code, Some(0));
    let text = logs.join("\n");
    for event in [
        "mail delivered",
        "email verified",
        "password reset mail queued",
        "password reset by mail",
        "email token issued",
    ] {
        assert!(text.contains(event), "`{event}` is logged");
    }
    for secret in &secrets {
        let probe = &secret[..secret.len().min(24)];
        assert!(
            !text.contains(probe),
            "a secret appears in the logs: {probe:.6}…"
        );
    }
}

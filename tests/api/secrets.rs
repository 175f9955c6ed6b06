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

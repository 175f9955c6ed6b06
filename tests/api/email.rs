//! Email (API.md, "Email: verification, password reset, invitations"),
//! through the real server and a real SMTP server (`mail.rs`): every token
//! is read out of the mail that carried it.

use std::time::Duration;

use futures::future::join_all;
use tonic::Code;
use tonic_types::StatusExt as _;
use warden::proto::v1::{self as pb, EmailTokenPurpose, UserStatus};

use crate::{
    helpers::{
        ADMIN_EMAIL, CHEAP_HASHING_ENV, Client, PASSWORD, ServerProcess, TestApp, TestDatabase,
        assert_bad_field, assert_error, count, spawn_app, spawn_app_with, warden, with_bearer,
    },
    mail::{MailSink, SinkOptions},
};

const NEW_PASSWORD: &str = "a brand new passphrase for mail";
const VERIFY: &str = "Verify your email";
const RESET: &str = "Reset your password";
const PASSWORD_CHANGED: &str = "Your password was changed";
const EMAIL_CHANGED: &str = "Your email was changed";

/// An in-process server that mails through `sink`.
async fn app_with_mail(sink: &MailSink) -> TestApp {
    app_with_mail_and(sink, |_| {}).await
}

async fn app_with_mail_and(
    sink: &MailSink,
    configure: impl FnOnce(&mut warden::config::Config),
) -> TestApp {
    spawn_app_with(|config| {
        sink.configure(config, None);
        configure(config);
    })
    .await
}

/// Waits (up to 20 s) until a delivery attempt has failed.
async fn wait_for_a_failed_attempt(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(
        app.db(),
        "SELECT COUNT(*) FROM mail_outbox WHERE attempts > 0",
    )
    .await
        < 1
    {
        assert!(tokio::time::Instant::now() < deadline, "no attempt failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn verify(client: &Client, token: &str) -> Result<pb::User, tonic::Status> {
    client
        .auth
        .clone()
        .verify_email(pb::VerifyEmailRequest {
            token: token.into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn send_verification(client: &Client, access: &str) -> Result<(), tonic::Status> {
    client
        .auth
        .clone()
        .send_verification_email(with_bearer(pb::SendVerificationEmailRequest {}, access))
        .await
        .map(|_| ())
}

async fn request_reset(client: &Client, email: &str) -> Result<(), tonic::Status> {
    client
        .auth
        .clone()
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
        .map(|r| {
            let _: pb::RequestPasswordResetResponse = r.into_inner();
        })
}

async fn confirm_reset(client: &Client, token: &str, password: &str) -> Result<i32, tonic::Status> {
    client
        .auth
        .clone()
        .confirm_password_reset(pb::ConfirmPasswordResetRequest {
            token: token.into(),
            new_password: password.into(),
        })
        .await
        .map(|r| r.into_inner().revoked_sessions)
}

async fn issue(
    client: &Client,
    admin: &str,
    user_id: &str,
    purpose: EmailTokenPurpose,
) -> Result<pb::IssueEmailTokenResponse, tonic::Status> {
    client
        .admin
        .clone()
        .issue_email_token(with_bearer(
            pb::IssueEmailTokenRequest {
                user_id: user_id.into(),
                purpose: purpose.into(),
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner())
}

/// An admin's token and an approved user (`email`) with a session.
async fn admin_and_user(app: &TestApp, email: &str) -> (String, pb::User, String) {
    let (_, admin) = app.admin_session().await;
    let user = app.register(email, PASSWORD).await.unwrap();
    app.as_admin(&admin)
        .set_status(&user.id, UserStatus::Approved)
        .await
        .unwrap();
    let access = app
        .login(email, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    (admin, user, access)
}

#[tokio::test]
async fn registration_mails_a_verification_token_that_verifies_the_address_once() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail(&sink).await;
    let user = app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert!(!user.email_verified && user.email_verified_at.is_none());

    let mail = sink.wait_for(ADMIN_EMAIL, VERIFY).await;
    assert_eq!(mail.mail_from, "warden@localhost");
    assert!(mail.header("Date").is_some(), "{}", mail.data);
    assert!(
        mail.header("Message-ID")
            .is_some_and(|id| id.ends_with("@localhost>"))
    );
    assert_eq!(mail.header("From").as_deref(), Some("warden@localhost"));
    let token = mail.token().expect("a token in the mail");
    // Delivered: the row that held the token goes (right after the relay
    // said yes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(app.db(), "SELECT COUNT(*) FROM mail_outbox").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivered row stays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let login = app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let access = login.tokens.unwrap().access_token;
    assert!(!app.validate(&access).await.unwrap().email_verified);

    let verified = verify(&app, &token).await.unwrap();
    assert!(verified.email_verified);
    assert_eq!(
        verified.email_verified_at.map(|t| t.seconds),
        Some(app.now().timestamp())
    );
    assert!(app.get_me(&access).await.unwrap().email_verified);
    assert!(app.validate(&access).await.unwrap().email_verified);
    let listed = app.list_users(&access).await.unwrap();
    assert!(listed[0].email_verified);

    assert_error(
        verify(&app, &token).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    assert_error(
        send_verification(&app, &access).await,
        Code::FailedPrecondition,
        "EMAIL_ALREADY_VERIFIED",
    );
}

#[tokio::test]
async fn bad_tokens_are_invalid_arguments_or_invalid_tokens() {
    let app = spawn_app().await;
    assert_bad_field(verify(&app, "").await, "INVALID_ARGUMENT", "token");
    assert_bad_field(
        verify(&app, &"a".repeat(257)).await,
        "INVALID_ARGUMENT",
        "token",
    );
    assert_bad_field(
        confirm_reset(&app, "", PASSWORD).await,
        "INVALID_ARGUMENT",
        "token",
    );
    assert_bad_field(
        confirm_reset(&app, "abc", "").await,
        "INVALID_ARGUMENT",
        "new_password",
    );
    assert_error(
        verify(&app, "no-such-token-no-such-token-no-such-token-0").await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    assert_error(
        confirm_reset(&app, "no-such-token", NEW_PASSWORD).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    assert_bad_field(
        request_reset(&app, "not an email").await,
        "INVALID_ARGUMENT",
        "email",
    );
}

#[tokio::test]
async fn without_mail_nothing_is_mailed_and_send_verification_says_so() {
    let app = spawn_app().await;
    let (_, access) = app.admin_session().await;
    assert_error(
        send_verification(&app, &access).await,
        Code::FailedPrecondition,
        "MAIL_NOT_CONFIGURED",
    );
    request_reset(&app, ADMIN_EMAIL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(app.db(), "SELECT COUNT(*) FROM mail_outbox").await, 0);
    assert_eq!(
        count(app.db(), "SELECT COUNT(*) FROM email_tokens").await,
        0
    );
}

#[tokio::test]
async fn a_password_reset_by_mail_ends_every_session_lifts_the_lockout_and_verifies() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    const LINK: &str = "https://accounts.example.com/reset-your-password/confirm?token=";
    let app = app_with_mail_and(&sink, |c| {
        c.login_failure_limit = 2;
        c.mail.links.reset_password = Some(format!("{LINK}{{token}}"));
    })
    .await;
    let (_admin, user, access) = admin_and_user(&app, "ada@example.com").await;
    for _ in 0..2 {
        let _ = app
            .login("ada@example.com", "wrong wrong wrong wrong")
            .await;
    }
    assert_error(
        app.login("ada@example.com", PASSWORD).await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );

    request_reset(&app, "  ADA@example.com ").await.unwrap();
    let mail = sink.wait_for("ada@example.com", RESET).await;
    let token = mail.token().unwrap();
    assert!(
        mail.body().contains(&format!("{LINK}{token}")),
        "{}",
        mail.body()
    );
    assert_bad_field(
        confirm_reset(&app, &token, "short").await,
        "WEAK_PASSWORD",
        "new_password",
    );
    assert_eq!(confirm_reset(&app, &token, NEW_PASSWORD).await.unwrap(), 1);
    assert_error(
        app.get_me(&access).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert_error(
        confirm_reset(&app, &token, NEW_PASSWORD).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );

    sink.wait_for("ada@example.com", PASSWORD_CHANGED).await;
    assert_error(
        app.login("ada@example.com", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    let login = app.login("ada@example.com", NEW_PASSWORD).await.unwrap();
    let me = login.user.unwrap();
    assert_eq!(me.id, user.id);
    assert!(me.email_verified, "a reset proves the address");
}

#[tokio::test]
async fn reset_requests_answer_alike_and_mail_only_existing_accounts_not_disabled() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail(&sink).await;
    let (admin, _, _) = admin_and_user(&app, "real@example.com").await;
    app.register("pending@example.com", PASSWORD).await.unwrap();
    let disabled = app
        .register("disabled@example.com", PASSWORD)
        .await
        .unwrap();
    app.as_admin(&admin)
        .set_status(&disabled.id, UserStatus::Disabled)
        .await
        .unwrap();
    let registered = sink.wait_for_count(4, Duration::from_secs(20)).await.len();
    assert_eq!(
        registered, 4,
        "the verification mails of the four registrations"
    );

    let mut answers = Vec::new();
    for email in [
        "real@example.com",
        "pending@example.com",
        "disabled@example.com",
        "nobody@example.com",
    ] {
        let response = app
            .auth
            .clone()
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: email.into(),
            })
            .await
            .unwrap();
        answers.push(format!("{:?}", response.into_inner()));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    sink.wait_for("real@example.com", RESET).await;
    sink.wait_for("pending@example.com", RESET).await;
    let resets: Vec<_> = sink
        .mails_to("disabled@example.com", Duration::from_millis(1500))
        .await
        .into_iter()
        .chain(sink.mails_to("nobody@example.com", Duration::ZERO).await)
        .filter(|m| m.subject() == RESET)
        .collect();
    assert!(resets.is_empty(), "{resets:?}");
}

#[tokio::test]
async fn one_mail_of_a_kind_per_cooldown_and_a_new_token_kills_the_older() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail_and(&sink, |c| c.mail.cooldown = Duration::from_secs(60)).await;
    let (_, user, access) = admin_and_user(&app, "ada@example.com").await;
    let first = sink
        .wait_for("ada@example.com", VERIFY)
        .await
        .token()
        .unwrap();

    // Registration mailed one a moment ago.
    let status = assert_error(
        send_verification(&app, &access).await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(60)));

    app.clock.advance(Duration::from_secs(61));
    send_verification(&app, &access).await.unwrap();
    let mails = sink.wait_for_count(3, Duration::from_secs(20)).await;
    let second = mails
        .iter()
        .filter(|m| m.is_to("ada@example.com") && m.subject() == VERIFY)
        .nth(1)
        .expect("a second verification mail")
        .token()
        .unwrap();
    assert_ne!(first, second);
    assert_error(
        verify(&app, &first).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    assert_eq!(verify(&app, &second).await.unwrap().id, user.id);

    // Resets are held back silently, and do not hold verification up.
    request_reset(&app, "ada@example.com").await.unwrap();
    sink.wait_for("ada@example.com", RESET).await;
    request_reset(&app, "ada@example.com").await.unwrap();
    let resets = sink
        .mails_to("ada@example.com", Duration::from_millis(1500))
        .await;
    assert_eq!(resets.iter().filter(|m| m.subject() == RESET).count(), 1);
}

#[tokio::test]
async fn tokens_expire_after_their_ttl() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail_and(&sink, |c| {
        c.mail.email_verification_ttl = Duration::from_secs(2);
        c.mail.password_reset_ttl = Duration::from_secs(2);
    })
    .await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let verification = sink.wait_for(ADMIN_EMAIL, VERIFY).await.token().unwrap();
    request_reset(&app, ADMIN_EMAIL).await.unwrap();
    let reset = sink.wait_for(ADMIN_EMAIL, RESET).await.token().unwrap();
    app.clock.advance(Duration::from_secs(2));
    assert_error(
        verify(&app, &verification).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    assert_error(
        confirm_reset(&app, &reset, NEW_PASSWORD).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
}

#[tokio::test]
async fn an_email_change_unverifies_kills_old_tokens_mails_both_addresses() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail(&sink).await;
    let (_, _, access) = admin_and_user(&app, "ada@example.com").await;
    let old_token = sink
        .wait_for("ada@example.com", VERIFY)
        .await
        .token()
        .unwrap();
    let changed = app
        .update_me(
            &access,
            pb::UpdateMeRequest {
                email: Some("lovelace@example.com".into()),
                current_password: PASSWORD.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!changed.email_verified);
    let notice = sink.wait_for("ada@example.com", EMAIL_CHANGED).await;
    assert!(notice.token().is_none());
    assert!(notice.body().contains("lovelace@example.com"));
    let new_token = sink
        .wait_for("lovelace@example.com", VERIFY)
        .await
        .token()
        .unwrap();
    assert_error(
        verify(&app, &old_token).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    let verified = verify(&app, &new_token).await.unwrap();
    assert!(verified.email_verified);
    assert_eq!(verified.email, "lovelace@example.com");
}

#[tokio::test]
async fn password_changes_send_a_notice_without_a_token() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail(&sink).await;
    let (admin, user, access) = admin_and_user(&app, "ada@example.com").await;
    app.change_password(&access, PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();
    let notice = sink.wait_for("ada@example.com", PASSWORD_CHANGED).await;
    assert!(notice.token().is_none());
    app.as_admin(&admin)
        .reset_password(&user.id, PASSWORD)
        .await
        .unwrap();
    let mails = sink
        .mails_to("ada@example.com", Duration::from_millis(1500))
        .await;
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.subject() == PASSWORD_CHANGED)
            .count(),
        2,
        "ChangePassword and the admin's ResetPassword"
    );
}

#[tokio::test]
async fn of_two_concurrent_resets_with_one_token_exactly_one_wins() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail(&sink).await;
    admin_and_user(&app, "ada@example.com").await;
    request_reset(&app, "ada@example.com").await.unwrap();
    let token = sink
        .wait_for("ada@example.com", RESET)
        .await
        .token()
        .unwrap();
    let passwords = [
        "first concurrent passphrase",
        "second concurrent passphrase",
    ];
    let outcomes = join_all(passwords.iter().map(|p| confirm_reset(&app, &token, p))).await;
    let won: Vec<_> = outcomes.iter().filter(|o| o.is_ok()).collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    for lost in outcomes.into_iter().filter(Result::is_err) {
        assert_error(lost, Code::FailedPrecondition, "EMAIL_TOKEN_INVALID");
    }
    let logged_in = join_all(passwords.iter().map(|p| app.login("ada@example.com", p))).await;
    assert_eq!(logged_in.iter().filter(|l| l.is_ok()).count(), 1);
}

#[tokio::test]
async fn issued_tokens_work_like_mailed_ones_and_nothing_is_mailed() {
    let app = spawn_app().await;
    let (_, admin) = app.admin_session().await;
    let user = app.register("ada@example.com", PASSWORD).await.unwrap();
    let first = issue(&app, &admin, &user.id, EmailTokenPurpose::VerifyEmail)
        .await
        .unwrap();
    assert!(first.expires_at.unwrap().seconds > app.now().timestamp() + 23 * 3600);
    let second = issue(&app, &admin, &user.id, EmailTokenPurpose::VerifyEmail)
        .await
        .unwrap();
    assert_error(
        verify(&app, &first.token).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    assert!(verify(&app, &second.token).await.unwrap().email_verified);

    let reset = issue(&app, &admin, &user.id, EmailTokenPurpose::ResetPassword)
        .await
        .unwrap();
    assert_error(
        verify(&app, &reset.token).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    assert_eq!(
        confirm_reset(&app, &reset.token, NEW_PASSWORD)
            .await
            .unwrap(),
        0
    );
    assert_eq!(count(app.db(), "SELECT COUNT(*) FROM mail_outbox").await, 0);

    assert_bad_field(
        issue(&app, &admin, &user.id, EmailTokenPurpose::Unspecified).await,
        "INVALID_ARGUMENT",
        "purpose",
    );
    assert_bad_field(
        issue(&app, &admin, "not-a-uuid", EmailTokenPurpose::VerifyEmail).await,
        "INVALID_ARGUMENT",
        "user_id",
    );
    assert_error(
        issue(
            &app,
            &admin,
            &uuid::Uuid::now_v7().to_string(),
            EmailTokenPurpose::VerifyEmail,
        )
        .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    // The reset took: the new password is the one checked now.
    let login = app.login("ada@example.com", NEW_PASSWORD).await;
    assert_error(login, Code::PermissionDenied, "ACCOUNT_PENDING");
}

#[tokio::test]
async fn an_admin_sets_email_verified_and_an_admins_email_change_unverifies() {
    let app = spawn_app().await;
    let (_, admin) = app.admin_session().await;
    let user = app.register("ada@example.com", PASSWORD).await.unwrap();
    let admin_api = app.as_admin(&admin);
    let verified = admin_api
        .update(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email_verified: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(verified.email_verified && verified.email_verified_at.is_some());
    let token = issue(&app, &admin, &user.id, EmailTokenPurpose::ResetPassword)
        .await
        .unwrap();
    let moved = admin_api
        .update(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("lovelace@example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!moved.email_verified && moved.email_verified_at.is_none());
    assert_error(
        confirm_reset(&app, &token.token, NEW_PASSWORD).await,
        Code::FailedPrecondition,
        "EMAIL_TOKEN_INVALID",
    );
    let kept = admin_api
        .update(pb::UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("ada@example.com".into()),
            email_verified: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(kept.email_verified);
}

#[tokio::test]
async fn required_verification_refuses_login_until_the_address_is_verified() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail_and(&sink, |c| c.mail.require_verified_email = true).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let status = assert_error(
        app.login(ADMIN_EMAIL, PASSWORD).await,
        Code::FailedPrecondition,
        "EMAIL_NOT_VERIFIED",
    );
    assert_eq!(status.message(), "Email not verified");
    // After the password check, like ACCOUNT_PENDING.
    assert_error(
        app.login(ADMIN_EMAIL, "a wrong passphrase here").await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    let token = sink.wait_for(ADMIN_EMAIL, VERIFY).await.token().unwrap();
    verify(&app, &token).await.unwrap();
    app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
}

#[tokio::test]
async fn required_verification_without_a_relay_stops_the_server_with_exit_code_2() {
    let output = warden()
        .args(["serve"])
        .env("WARDEN_REQUIRE_VERIFIED_EMAIL", "true")
        .env("WARDEN_DATABASE_URL", "sqlite::memory:")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WARDEN_REQUIRE_VERIFIED_EMAIL"), "{stderr}");
    assert!(stderr.contains("WARDEN_SMTP_URL"), "{stderr}");
}

#[tokio::test]
async fn mail_queued_while_the_relay_is_down_arrives_once_it_is_up() {
    let Some(mut sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail(&sink).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    sink.wait_for(ADMIN_EMAIL, VERIFY).await;
    sink.down().await;
    for n in 0..3 {
        app.register(&format!("user{n}@example.com"), PASSWORD)
            .await
            .unwrap();
    }
    // Attempts fail (nothing listens) and are put back for later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(
        app.db(),
        "SELECT COUNT(*) FROM mail_outbox WHERE attempts > 0",
    )
    .await
        < 3
    {
        assert!(tokio::time::Instant::now() < deadline, "no attempt failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(app.db(), "SELECT COUNT(*) FROM mail_outbox").await, 3);
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("warden_mail_retried_total{kind=\"verify_email\"}"),
        "{metrics}"
    );

    sink.up().await;
    app.clock.advance(Duration::from_secs(600));
    let mails = sink.wait_for_count(4, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 4);
    let after = sink
        .mails_to("user0@example.com", Duration::from_secs(2))
        .await;
    assert_eq!(after.len(), 1, "delivered exactly once");
    assert_eq!(sink.received().len(), 4);
    assert_eq!(count(app.db(), "SELECT COUNT(*) FROM mail_outbox").await, 0);
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("warden_mail_sent_total{kind=\"verify_email\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_mail_failing_for_a_day_is_given_up() {
    let Some(sink) = MailSink::stopped(SinkOptions::default()) else {
        return;
    };
    let app = app_with_mail(&sink).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    wait_for_a_failed_attempt(&app).await;
    app.clock.advance(Duration::from_secs(24 * 3600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(app.db(), "SELECT COUNT(*) FROM mail_outbox").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never given up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.http_get("/metrics").await.1;
    assert!(
        metrics.contains("warden_mail_failed_total{kind=\"verify_email\"} 1"),
        "{metrics}"
    );
}

fn mail_env(sink: &MailSink) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = CHEAP_HASHING_ENV
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    env.push(("WARDEN_SMTP_URL", sink.url()));
    env
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn two_replicas_sharing_the_outbox_send_each_mail_once() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let db = TestDatabase::create().await;
    let env = mail_env(&sink);
    let a = ServerProcess::start(&db, &as_refs(&env)).await;
    let b = ServerProcess::start(&db, &as_refs(&env)).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let total = 12;
    let registrations = (0..total).map(|n| {
        let client = if n % 2 == 0 { ca.clone() } else { cb.clone() };
        async move {
            client
                .register(&format!("user{n}@example.com"), PASSWORD)
                .await
        }
    });
    for outcome in join_all(registrations).await {
        outcome.unwrap();
    }
    let mails = sink.wait_for_count(total, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), total);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = sink.received();
    assert_eq!(mails.len(), total, "no mail twice");
    let mut ids: Vec<_> = mails
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total);
    for server in [a, b] {
        assert_eq!(server.stop().await.0, Some(0));
    }
}

#[tokio::test]
async fn mail_queued_before_a_restart_is_sent_after_it() {
    let Some(mut sink) = MailSink::stopped(SinkOptions::default()) else {
        return;
    };
    let db = TestDatabase::create().await;
    let env = mail_env(&sink);
    let first = ServerProcess::start(&db, &as_refs(&env)).await;
    first
        .client()
        .await
        .register(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap();
    let (code, _) = first.stop().await;
    assert_eq!(code, Some(0));
    sink.up().await;
    let second = ServerProcess::start(&db.share(), &as_refs(&env)).await;
    let mail = sink.wait_for(ADMIN_EMAIL, VERIFY).await;
    assert!(mail.token().is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 1);
    assert_eq!(second.stop().await.0, Some(0));
}

#[tokio::test]
async fn mail_goes_over_starttls_to_a_relay_with_a_private_ca_and_authentication() {
    let pki = crate::ecosystem::test_pki();
    let options = SinkOptions {
        tls: Some((pki.server_cert.clone(), pki.server_key.clone())),
        auth: Some(("warden".into(), "relay-secret".into())),
    };
    let Some(sink) = MailSink::start_with(options).await else {
        return;
    };
    let app = spawn_app_with(|config| sink.configure(config, Some(&pki.ca))).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let mail = sink.wait_for(ADMIN_EMAIL, VERIFY).await;
    assert!(mail.tls, "sent after STARTTLS");
    assert!(mail.authenticated);
    assert!(mail.token().is_some());
}

#[tokio::test]
async fn a_relay_whose_certificate_is_not_trusted_gets_nothing() {
    let pki = crate::ecosystem::test_pki();
    let options = SinkOptions {
        tls: Some((pki.server_cert.clone(), pki.server_key.clone())),
        auth: None,
    };
    let Some(sink) = MailSink::start_with(options).await else {
        return;
    };
    // The private CA is not given: the handshake must fail.
    let app = spawn_app_with(|config| sink.configure(config, None)).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    wait_for_a_failed_attempt(&app).await;
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn an_invitation_is_mailed_with_its_token_and_the_mailed_token_joins() {
    let Some(sink) = MailSink::start().await else {
        return;
    };
    let app = app_with_mail(&sink).await;
    let (_, platform) = app.admin_session().await;
    let owner = app.approved_user(&platform, "owner@example.com").await;
    let org = app.as_member(&owner.1).create("Mailing Org").await.unwrap();
    let (_, shown) = app
        .as_member(&owner.1)
        .invite(&org.id, "invitee@example.com", pb::OrgRole::Member)
        .await
        .unwrap();

    let mail = sink
        .wait_for("invitee@example.com", "You are invited")
        .await;
    assert!(mail.body().contains("Mailing Org"), "{}", mail.body());
    let mailed = mail.token().expect("a token in the mail");
    assert_eq!(
        mailed, shown,
        "the mail carries the token CreateInvitation showed"
    );

    let registered = app
        .auth
        .clone()
        .register(pb::RegisterRequest {
            email: "invitee@example.com".into(),
            password: PASSWORD.into(),
            invitation_token: mailed,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let user = registered.user.unwrap();
    let members = app.as_member(&owner.1).members(&org.id).await.unwrap();
    assert!(
        members.iter().any(|m| m.user_id == user.id),
        "the mailed token joined the organisation"
    );
}

//! The `warden` binary itself.

use std::{process::Stdio, time::Duration};

use prost::Message as _;
use sea_orm::{ConnectionTrait, Database};
use tokio::{io::AsyncWriteExt as _, process::Command};
use warden::proto::v1::UserStatus;

use crate::helpers::{
    CHEAP_HASHING_ENV, PASSWORD, ServerProcess, TestDatabase, spawn_app, spawn_app_on, warden,
};

struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(mut command: Command, stdin: Option<&str>) -> Finished {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the warden binary runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finishes")
        .expect("output");
    Finished {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn create_admin(db: &TestDatabase, email: &str) -> Command {
    let mut command = warden();
    command
        .args([
            "create-admin",
            "--email",
            email,
            "--name",
            "Root",
            "--password-stdin",
        ])
        .env("WARDEN_DATABASE_URL", db.url());
    command
}

#[tokio::test]
async fn create_admin_then_login() {
    let db = TestDatabase::create().await;
    let done = run(
        create_admin(&db, "Root@Example.com"),
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(
        done.stdout.contains("created admin root@example.com"),
        "{}",
        done.stdout
    );
    assert!(!done.stdout.contains(PASSWORD) && !done.stderr.contains(PASSWORD));

    let app = spawn_app_on(db.share(), |_| {}).await;
    let login = app
        .login("root@example.com", PASSWORD)
        .await
        .expect("the admin logs in");
    let user = login.user.unwrap();
    assert!(user.is_admin);
    assert_eq!(user.status(), UserStatus::Approved);
    assert_eq!(user.display_name, "Root");
    // An admin exists, so a registration is no longer the first.
    let next = app.register("next@example.com", PASSWORD).await.unwrap();
    assert_eq!(next.status(), UserStatus::Pending);
}

#[tokio::test]
async fn create_admin_takes_the_password_from_the_environment() {
    let db = TestDatabase::create().await;
    let mut command = warden();
    command
        .args(["create-admin", "--email", "env@example.com"])
        .env("WARDEN_DATABASE_URL", db.url())
        .env("WARDEN_ADMIN_PASSWORD", PASSWORD);
    let done = run(command, None).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    let app = spawn_app_on(db.share(), |_| {}).await;
    assert!(app.login("env@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn create_admin_refuses_an_existing_email_with_exit_code_1() {
    let db = TestDatabase::create().await;
    assert_eq!(
        run(create_admin(&db, "root@example.com"), Some(PASSWORD))
            .await
            .code,
        0
    );
    let again = run(create_admin(&db, "ROOT@example.com"), Some(PASSWORD)).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

#[tokio::test]
async fn create_admin_refuses_a_password_that_breaks_the_rules() {
    let db = TestDatabase::create().await;
    let done = run(create_admin(&db, "root@example.com"), Some("tooshort\n")).await;
    assert_eq!(done.code, 1);
    assert!(done.stderr.contains("password"), "{}", done.stderr);
    assert!(
        !done.stderr.contains("tooshort"),
        "the password is not echoed"
    );
}

#[tokio::test]
async fn create_admin_without_a_password_is_a_usage_error() {
    let db = TestDatabase::create().await;
    let mut command = warden();
    command
        .args(["create-admin", "--email", "root@example.com"])
        .env("WARDEN_DATABASE_URL", db.url());
    let done = run(command, None).await;
    assert_eq!(done.code, 2);
    assert!(
        done.stderr.contains("WARDEN_ADMIN_PASSWORD"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn descriptor_set_writes_every_proto_with_its_imports() {
    let output = warden().arg("descriptor-set").output().await.unwrap();
    assert!(output.status.success());
    let set = prost_types::FileDescriptorSet::decode(output.stdout.as_slice())
        .expect("a FileDescriptorSet");
    let names: Vec<_> = set.file.iter().map(|f| f.name()).collect();
    for expected in [
        "warden/v1/auth.proto",
        "warden/v1/user_admin.proto",
        "warden/v1/common.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/descriptor.proto",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let auth = set
        .file
        .iter()
        .find(|f| f.name() == "warden/v1/auth.proto")
        .unwrap();
    let methods: Vec<_> = auth.service[0].method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "Register",
            "Login",
            "Refresh",
            "Logout",
            "GetMe",
            "UpdateMe",
            "ChangePassword",
            "ListSessions",
            "RevokeSession",
            "ValidateToken",
            "GetJwks",
            "SendVerificationEmail",
            "VerifyEmail",
            "RequestPasswordReset",
            "ConfirmPasswordReset"
        ]
    );
    // The google.api.http options are extensions, kept as raw bytes: every
    // route of the REST table must be in there for a gateway to find it.
    for route in [
        "/v1/auth/register",
        "/v1/auth/sessions/{session_id}",
        "/v1/admin/users/{user_id}/reset-password",
        "/v1/admin/users/pending/count",
        "/v1/auth/password-reset/confirm",
        "/v1/admin/users/{user_id}/email-tokens",
    ] {
        assert!(
            output
                .stdout
                .windows(route.len())
                .any(|w| w == route.as_bytes()),
            "route {route} in the descriptor set"
        );
    }
}

#[tokio::test]
async fn an_out_of_range_setting_stops_the_process_with_exit_code_2() {
    let mut command = warden();
    command.arg("serve").env("WARDEN_PASSWORD_MIN_LENGTH", "4");
    let done = run(command, None).await;
    assert_eq!(done.code, 2);
    assert!(
        done.stderr.contains("password-min-length"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn a_flag_beats_its_environment_variable() {
    // The variable alone would be out of range; the flag wins and the
    // process gets as far as failing on the (deliberately bad) database.
    let mut command = warden();
    command
        .args(["serve", "--password-min-length", "12"])
        .env("WARDEN_PASSWORD_MIN_LENGTH", "4")
        .env("WARDEN_DATABASE_URL", "postgres://127.0.0.1:1/none");
    let done = run(command, None).await;
    assert_eq!(done.code, 1, "{}", done.stderr);
    assert!(done.stderr.contains("database"), "{}", done.stderr);
}

#[tokio::test]
async fn migrate_applies_the_schema() {
    let db = TestDatabase::create().await;
    let mut command = warden();
    command.arg("migrate").env("WARDEN_DATABASE_URL", db.url());
    let done = run(command, None).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    let conn = Database::connect(db.url()).await.unwrap();
    for table in ["users", "sessions", "refresh_tokens", "signing_keys"] {
        conn.execute_unprepared(&format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap_or_else(|e| panic!("table {table}: {e}"));
    }
    conn.close().await.ok();
}

#[tokio::test]
async fn healthcheck_exits_0_for_a_serving_server_and_1_otherwise() {
    let app = spawn_app().await;
    let mut command = warden();
    command.args(["healthcheck", "--listen", &app.addr.to_string()]);
    assert_eq!(run(command, None).await.code, 0);

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut command = warden();
    command.args(["healthcheck", "--listen", &closed.to_string()]);
    let done = run(command, None).await;
    assert_eq!(done.code, 1);
    assert!(done.stderr.contains("unhealthy"), "{}", done.stderr);
}

#[tokio::test]
async fn serve_logs_the_chosen_address_and_exits_0_on_sigterm() {
    let db = TestDatabase::create().await;
    let server = ServerProcess::start(&db, &[]).await;
    assert_ne!(server.addr.port(), 0, "the chosen port is logged");
    let mut check = warden();
    check.args(["healthcheck", "--listen", &server.addr.to_string()]);
    assert_eq!(run(check, None).await.code, 0, "the server reports SERVING");
    let (code, _) = server.stop().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn serve_accepts_a_two_second_refresh_ttl_and_a_million_failure_limit() {
    let db = TestDatabase::create().await;
    let mut env = CHEAP_HASHING_ENV.to_vec();
    env.extend([
        ("WARDEN_ACCESS_TOKEN_TTL", "1s"),
        ("WARDEN_REFRESH_TOKEN_TTL", "2s"),
        ("WARDEN_LOGIN_FAILURE_LIMIT", "1000000"),
    ]);
    let server = ServerProcess::start(&db, &env).await;
    let client = server.client().await;
    client.register("ada@example.com", PASSWORD).await.unwrap();
    let before = chrono::Utc::now().timestamp();
    let login = client.login("ada@example.com", PASSWORD).await.unwrap();
    let after = chrono::Utc::now().timestamp();
    let tokens = login.tokens.unwrap();
    // The settings are in force, not just accepted.
    assert_eq!(tokens.expires_in, 1);
    let refresh_ends = tokens.refresh_expires_at.unwrap().seconds;
    assert!(
        (before + 2..=after + 2).contains(&refresh_ends),
        "refresh token ends at {refresh_ends}, 2 s after {before}..{after}"
    );
    let (code, _) = server.stop().await;
    assert_eq!(code, Some(0));
}

/// `warden serve` with `env`: its exit code and standard error. The
/// database it would reach is closed, so a setting that is not refused
/// ends in exit code 1 (after at most a second) rather than a server.
async fn serve_with(env: &[(&str, &str)]) -> Finished {
    let mut command = warden();
    command
        .arg("serve")
        .env("WARDEN_LISTEN", "127.0.0.1:0")
        .env("WARDEN_HTTP_LISTEN", "127.0.0.1:0")
        .env("WARDEN_DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env("WARDEN_DATABASE_TIMEOUT", "1s")
        .envs(env.iter().copied());
    run(command, None).await
}

#[tokio::test]
async fn serve_refuses_settings_outside_the_contracts_ranges_with_exit_code_2() {
    for (variable, value, named) in [
        ("WARDEN_REFRESH_TOKEN_TTL", "0s", "refresh-token-ttl"),
        ("WARDEN_SESSION_MAX_LIFETIME", "0s", "session-max-lifetime"),
        (
            "WARDEN_LOGIN_FAILURE_LIMIT",
            "1000001",
            "login-failure-limit",
        ),
        ("WARDEN_LOGIN_FAILURE_LIMIT", "0", "login-failure-limit"),
        // Not representable: its end is past any timestamp.
        ("WARDEN_ACCESS_TOKEN_TTL", "400000000y", "access-token-ttl"),
        (
            "WARDEN_SESSION_MAX_LIFETIME",
            "8000y",
            "session-max-lifetime",
        ),
        ("WARDEN_FIRST_USER_ADMIN", "yes", "first-user-admin"),
    ] {
        let done = serve_with(&[(variable, value)]).await;
        assert_eq!(done.code, 2, "{variable}={value}: {}", done.stderr);
        assert!(
            done.stderr.contains(named),
            "{variable}={value}: {}",
            done.stderr
        );
        // Refused as a value, not by a check of several settings.
        assert!(
            done.stderr.contains("invalid value"),
            "{variable}={value}: {}",
            done.stderr
        );
        assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
    }
}

#[tokio::test]
async fn serve_refuses_a_refresh_ttl_shorter_than_the_access_ttl_with_exit_code_2() {
    let done = serve_with(&[("WARDEN_REFRESH_TOKEN_TTL", "2s")]).await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(done.stderr.contains("refresh-token-ttl"), "{}", done.stderr);
    assert!(done.stderr.contains("access-token-ttl"), "{}", done.stderr);
}

/// Whether the log lines hold the start-up warning that the first account
/// to register becomes an admin.
fn warns_of_the_first_admin(logs: &[String]) -> bool {
    logs.iter().any(|line| {
        let event: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        event["level"] == "WARN"
            && event["message"]
                .as_str()
                .is_some_and(|m| m.contains("first account") && m.contains("create-admin"))
    })
}

/// A server on every interface with `env`, stopped again: its log lines.
async fn logs_of_serve(db: &TestDatabase, listen: &str, env: &[(&str, &str)]) -> Vec<String> {
    let mut all = CHEAP_HASHING_ENV.to_vec();
    all.push(("WARDEN_LISTEN", listen));
    all.extend(env);
    let server = ServerProcess::start(db, &all).await;
    let (code, logs) = server.stop().await;
    assert_eq!(code, Some(0));
    logs
}

#[tokio::test]
async fn serve_beyond_loopback_on_an_empty_database_warns_that_the_first_account_becomes_admin() {
    let db = TestDatabase::create().await;
    let logs = logs_of_serve(&db, "0.0.0.0:0", &[]).await;
    assert!(warns_of_the_first_admin(&logs), "{logs:#?}");
}

#[tokio::test]
async fn no_first_admin_warning_on_loopback_when_turned_off_or_once_an_account_exists() {
    let db = TestDatabase::create().await;
    let logs = logs_of_serve(&db, "127.0.0.1:0", &[]).await;
    assert!(!warns_of_the_first_admin(&logs), "loopback: {logs:#?}");
    let logs = logs_of_serve(&db, "0.0.0.0:0", &[("WARDEN_FIRST_USER_ADMIN", "false")]).await;
    assert!(!warns_of_the_first_admin(&logs), "turned off: {logs:#?}");

    let mut all = CHEAP_HASHING_ENV.to_vec();
    all.push(("WARDEN_LISTEN", "127.0.0.1:0"));
    let server = ServerProcess::start(&db, &all).await;
    server
        .client()
        .await
        .register("ada@example.com", PASSWORD)
        .await
        .unwrap();
    server.stop().await;
    let logs = logs_of_serve(&db, "0.0.0.0:0", &[]).await;
    assert!(
        !warns_of_the_first_admin(&logs),
        "an account exists: {logs:#?}"
    );
}

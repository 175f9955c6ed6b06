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
        done.stderr.contains("WARDEN_PASSWORD_MIN_LENGTH"),
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
    assert!(
        done.stderr
            .contains("PostgreSQL database at 127.0.0.1:1/none"),
        "{}",
        done.stderr
    );
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
    for (variable, value) in [
        ("WARDEN_REFRESH_TOKEN_TTL", "0s"),
        ("WARDEN_SESSION_MAX_LIFETIME", "0s"),
        ("WARDEN_LOGIN_FAILURE_LIMIT", "1000001"),
        ("WARDEN_LOGIN_FAILURE_LIMIT", "0"),
        // Not representable: its end is past any timestamp.
        ("WARDEN_ACCESS_TOKEN_TTL", "400000000y"),
        ("WARDEN_SESSION_MAX_LIFETIME", "8000y"),
        ("WARDEN_FIRST_USER_ADMIN", "yes"),
    ] {
        let done = serve_with(&[(variable, value)]).await;
        assert_eq!(done.code, 2, "{variable}={value}: {}", done.stderr);
        // Named as it was given: by its variable.
        assert!(
            done.stderr.contains(variable),
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
    // The variable that was set, alone; the default both ways.
    assert!(
        done.stderr
            .contains("error: WARDEN_REFRESH_TOKEN_TTL must not be shorter than"),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains("--access-token-ttl (WARDEN_ACCESS_TOKEN_TTL)"),
        "{}",
        done.stderr
    );
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

// Errors that say what to do (issue 17).

/// `warden ARGS` with `env`: exit code and output.
async fn warden_with(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut command = warden();
    command.args(args).envs(env.iter().copied());
    run(command, None).await
}

/// The lines of standard error that say something.
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[track_caller]
fn assert_one_line_error(done: &Finished) {
    assert_eq!(done.code, 1, "{}", done.stderr);
    let said = lines(&done.stderr);
    assert_eq!(said.len(), 1, "one line: {}", done.stderr);
    assert!(said[0].starts_with("error: "), "{}", done.stderr);
    assert!(
        !done.stdout.contains("ERROR"),
        "no log line besides: {}",
        done.stdout
    );
}

#[tokio::test]
async fn a_closed_postgres_port_is_one_line_naming_the_host_and_the_refusal() {
    let done = warden_with(
        &["migrate"],
        &[
            (
                "WARDEN_DATABASE_URL",
                "postgres://ada:s3cret@127.0.0.1:1/warden",
            ),
            ("WARDEN_DATABASE_TIMEOUT", "1s"),
        ],
    )
    .await;
    assert_one_line_error(&done);
    let said = &done.stderr;
    assert!(said.contains("127.0.0.1:1/warden"), "{said}");
    assert!(said.contains("connection refused"), "{said}");
    assert!(!said.contains("pool timed out"), "{said}");
    assert!(!said.contains("s3cret"), "never the password: {said}");
}

#[tokio::test]
async fn a_missing_postgres_database_is_named_once_with_the_way_to_create_it() {
    let Ok(admin_url) = std::env::var("WARDEN_TEST_DATABASE_URL") else {
        eprintln!("skipped: WARDEN_TEST_DATABASE_URL is not set");
        return;
    };
    let url = crate::helpers::with_database(&admin_url, "warden_nosuchdb");
    let done = warden_with(&["migrate"], &[("WARDEN_DATABASE_URL", &url)]).await;
    assert_one_line_error(&done);
    let said = &done.stderr;
    assert_eq!(
        said.matches("does not exist").count(),
        1,
        "said once: {said}"
    );
    assert!(said.contains("/warden_nosuchdb"), "{said}");
    assert!(said.contains("createdb"), "{said}");
    assert!(!said.contains("at line"), "{said}");
    assert!(!said.contains("error returned from database"), "{said}");
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let url = format!("sqlite://{}/warden.db?mode=rwc", missing.display());
    let done = warden_with(&["migrate"], &[("WARDEN_DATABASE_URL", &url)]).await;
    assert_one_line_error(&done);
    let said = &done.stderr;
    assert!(
        said.contains(&format!(
            "the directory {} does not exist",
            missing.display()
        )),
        "{said}"
    );
    assert!(said.contains("mkdir -p"), "{said}");
    assert!(!said.contains("code: 14"), "{said}");
}

#[tokio::test]
async fn a_sqlite_url_without_mode_rwc_says_to_add_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fresh.db");
    let url = format!("sqlite://{}", file.display());
    let done = warden_with(&["migrate"], &[("WARDEN_DATABASE_URL", &url)]).await;
    assert_one_line_error(&done);
    let said = &done.stderr;
    assert!(said.contains(&file.display().to_string()), "{said}");
    assert!(said.contains("does not exist"), "{said}");
    assert!(said.contains(&format!("{url}?mode=rwc")), "{said}");
}

#[tokio::test]
async fn a_bad_setting_names_the_variable_or_the_flag_that_was_used() {
    let closed_db = [
        ("WARDEN_DATABASE_URL", "postgres://127.0.0.1:1/none"),
        ("WARDEN_DATABASE_TIMEOUT", "1s"),
    ];
    let mut env = closed_db.to_vec();
    env.push(("WARDEN_ACCESS_TOKEN_TTL", "forever"));
    let done = warden_with(&["serve"], &env).await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(
        done.stderr.contains("WARDEN_ACCESS_TOKEN_TTL"),
        "{}",
        done.stderr
    );
    assert!(
        !done.stderr.contains("--access-token-ttl"),
        "{}",
        done.stderr
    );

    let done = warden_with(&["serve", "--access-token-ttl", "forever"], &closed_db).await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(
        done.stderr.contains("--access-token-ttl"),
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("WARDEN_ACCESS"), "{}", done.stderr);

    let done = warden_with(&["migrate", "--log", "warden=loud"], &closed_db).await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(done.stderr.contains("'--log"), "{}", done.stderr);
    assert!(!done.stderr.contains("WARDEN_LOG"), "{}", done.stderr);

    let mut env = closed_db.to_vec();
    env.push(("WARDEN_LOG", "warden=loud"));
    let done = warden_with(&["migrate"], &env).await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(done.stderr.contains("WARDEN_LOG"), "{}", done.stderr);
}

#[tokio::test]
async fn a_subcommand_error_shows_the_subcommands_usage() {
    let done = serve_with(&[("WARDEN_REFRESH_TOKEN_TTL", "2s")]).await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(
        done.stderr.contains("Usage: warden serve"),
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("<COMMAND>"), "{}", done.stderr);

    let db = TestDatabase::create().await;
    let done = warden_with(
        &["create-admin", "--email", "root@example.com"],
        &[("WARDEN_DATABASE_URL", db.url())],
    )
    .await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(
        done.stderr.contains("Usage: warden create-admin"),
        "{}",
        done.stderr
    );
}

/// A SQLite URL in a fresh directory: the file must not be there after a
/// refused start.
fn fresh_sqlite() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    (dir, file, url)
}

/// `warden serve` on a fresh SQLite file with `env`; asserts it stopped
/// with exit code 2 before creating the file, and returns standard error.
async fn refused_before_the_database(env: &[(&str, &str)]) -> String {
    let (_dir, file, url) = fresh_sqlite();
    let mut all = vec![
        ("WARDEN_DATABASE_URL", url.as_str()),
        ("WARDEN_LISTEN", "127.0.0.1:0"),
        ("WARDEN_HTTP_LISTEN", "127.0.0.1:0"),
    ];
    all.extend(env);
    let done = warden_with(&["serve"], &all).await;
    assert_eq!(done.code, 2, "{env:?}: {}", done.stderr);
    assert!(
        !file.exists(),
        "{env:?}: the database was created before the settings were checked"
    );
    done.stderr
}

#[tokio::test]
async fn a_missing_tls_certificate_is_refused_before_the_database_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let missing = dir.path().join("missing.pem");
    let said = refused_before_the_database(&[
        ("WARDEN_TLS_CERT", missing.to_str().unwrap()),
        ("WARDEN_TLS_KEY", key.to_str().unwrap()),
    ])
    .await;
    assert!(said.contains("WARDEN_TLS_CERT"), "{said}");
    assert!(said.contains(&missing.display().to_string()), "{said}");
    assert!(said.contains("Usage: warden serve"), "{said}");
}

#[tokio::test]
async fn a_tls_key_that_is_not_the_certificates_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, one.cert.pem()).unwrap();
    std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let said =
        refused_before_the_database(&[("WARDEN_TLS_CERT", cert), ("WARDEN_TLS_KEY", key)]).await;
    assert!(said.contains("WARDEN_TLS_KEY"), "{said}");
    assert!(said.contains("does not match the certificate"), "{said}");
    assert!(
        !said.contains("PRIVATE KEY"),
        "never the key itself: {said}"
    );
    // The same files given as flags: the flags are named.
    let (_dir, file, url) = fresh_sqlite();
    let done = warden_with(
        &["serve", "--tls-cert", cert, "--tls-key", key],
        &[("WARDEN_DATABASE_URL", &url)],
    )
    .await;
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(done.stderr.contains("--tls-key:"), "{}", done.stderr);
    assert!(!file.exists());
}

#[tokio::test]
async fn a_bad_cors_origin_or_proxy_cidr_is_refused_naming_its_variable() {
    for (variable, value) in [
        (
            "WARDEN_CORS_ORIGINS",
            "https://app.example.com,app.example.com",
        ),
        ("WARDEN_TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/33"),
    ] {
        let said = refused_before_the_database(&[(variable, value)]).await;
        assert!(said.contains(variable), "{said}");
        assert!(!said.contains("'--cors"), "{said}");
        assert!(!said.contains("'--trusted"), "{said}");
    }
}

#[tokio::test]
async fn keys_list_shows_each_key_with_its_state_after_a_rotation() {
    let db = TestDatabase::create().await;
    let env = [("WARDEN_DATABASE_URL", db.url())];
    let rotate = || warden_with(&["keys", "rotate"], &env);
    let added = |done: &Finished| {
        assert_eq!(done.code, 0, "{}", done.stderr);
        // Log lines share standard output.
        done.stdout
            .lines()
            .find_map(|l| l.strip_prefix("added signing key "))
            .expect("the kid")
            .to_owned()
    };
    let first = added(&rotate().await);
    let second = added(&rotate().await);
    let mut quiet = env.to_vec();
    quiet.push(("WARDEN_LOG", "warn"));
    let done = warden_with(&["keys", "list"], &quiet).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    let rows: Vec<Vec<&str>> = done
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{}", done.stdout);
    assert_eq!(rows[0], ["KID", "CREATED", "STATE", "RETIRE", "AFTER"]);
    assert_eq!(rows[1][0], second, "newest first: {}", done.stdout);
    assert_eq!(rows[1][2], "active", "{}", done.stdout);
    assert_eq!(rows[2][0], first, "{}", done.stdout);
    assert_eq!(rows[2][2], "verifying", "{}", done.stdout);
    assert!(
        chrono::DateTime::parse_from_rfc3339(rows[1][1]).is_ok(),
        "{}",
        done.stdout
    );
    // Aligned: every column starts where its heading does.
    let state_at = done.stdout.lines().next().unwrap().find("STATE").unwrap();
    for line in done.stdout.lines().skip(1) {
        assert!(
            line[state_at..].starts_with("active") || line[state_at..].starts_with("verifying"),
            "{}",
            done.stdout
        );
    }
}

#[tokio::test]
async fn healthcheck_prints_the_status_it_saw_and_a_plain_connection_error() {
    let app = spawn_app().await;
    let done = warden_with(&["healthcheck", "--listen", &app.addr.to_string()], &[]).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(done.stdout.trim(), "SERVING");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let done = warden_with(&["healthcheck", "--listen", &closed.to_string()], &[]).await;
    assert_eq!(done.code, 1);
    assert_eq!(
        done.stderr.trim(),
        format!("unhealthy: cannot connect to {closed}: connection refused")
    );
}

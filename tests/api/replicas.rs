//! Several `warden serve` processes on one database behave as one service.
//! On PostgreSQL (`WARDEN_TEST_DATABASE_URL`) that is the production
//! set-up; on SQLite they share one file.

use std::time::Duration;

use futures::future::join_all;
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::Code;
use warden::proto::v1::UserStatus;
use warden_migrations::{Migrator, MigratorTrait};

use crate::helpers::{
    ADMIN_EMAIL, CHEAP_HASHING_ENV, Client, PASSWORD, ServerProcess, TestDatabase, assert_error,
    count, describe, spawn_app, spawn_app_on, warden,
};

const WRONG: &str = "not the password at all, sorry";

fn server_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = CHEAP_HASHING_ENV.to_vec();
    env.extend_from_slice(extra);
    env
}

/// `n` servers on one fresh database, started one after the other.
async fn replicas(
    n: usize,
    extra: &[(&'static str, &'static str)],
) -> (TestDatabase, Vec<ServerProcess>, Vec<Client>) {
    let database = TestDatabase::create().await;
    let env = server_env(extra);
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..n {
        let server = ServerProcess::start(&database, &env).await;
        clients.push(server.client().await);
        servers.push(server);
    }
    (database, servers, clients)
}

async fn stop_all(servers: Vec<ServerProcess>) {
    for server in servers {
        let (code, logs) = server.stop().await;
        assert_eq!(code, Some(0), "{logs:#?}");
    }
}

#[tokio::test]
async fn a_user_registered_on_one_replica_logs_in_on_another() {
    let (_db, servers, clients) = replicas(2, &[]).await;
    let (a, b) = (&clients[0], &clients[1]);
    let admin = a.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let login = b.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert_eq!(login.user.unwrap().id, admin.id);
    // A token from one replica is good on the other.
    let token = login.tokens.unwrap().access_token;
    assert_eq!(a.get_me(&token).await.unwrap().id, admin.id);
    assert!(a.validate(&token).await.unwrap().active);
    // So is the state behind it: B sees a registration made on A at once.
    a.register("second@example.com", PASSWORD).await.unwrap();
    assert_error(
        b.register("second@example.com", PASSWORD).await,
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    stop_all(servers).await;
}

#[tokio::test]
async fn a_session_revoked_on_one_replica_is_refused_on_another_at_once() {
    let (_db, servers, clients) = replicas(2, &[]).await;
    let (a, b) = (&clients[0], &clients[1]);
    a.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let tokens = a
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert!(a.get_me(&tokens.access_token).await.is_ok());
    assert!(a.validate(&tokens.access_token).await.unwrap().active);

    assert_eq!(b.logout(&tokens.access_token, false).await.unwrap(), 1);

    // The very next call on A, with no wait for anything to propagate.
    assert_error(
        a.get_me(&tokens.access_token).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!a.validate(&tokens.access_token).await.unwrap().active);
    assert_error(
        a.refresh(&tokens.refresh_token).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );
    stop_all(servers).await;
}

#[tokio::test]
async fn a_lockout_reached_across_three_replicas_holds_on_each() {
    let (_db, servers, clients) = replicas(3, &[("WARDEN_LOGIN_FAILURE_LIMIT", "3")]).await;
    clients[0].register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for client in &clients {
        assert_error(
            client.login(ADMIN_EMAIL, WRONG).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    for client in &clients {
        assert_error(
            client.login(ADMIN_EMAIL, PASSWORD).await,
            Code::ResourceExhausted,
            "RATE_LIMITED",
        );
    }
    stop_all(servers).await;
}

#[tokio::test]
async fn a_key_rotated_anywhere_is_published_by_every_replica_within_the_reload_interval() {
    // Short here; the default is 30 s. The bound below is well under that.
    let (database, servers, clients) = replicas(3, &[("WARDEN_KEY_RELOAD_INTERVAL", "1s")]).await;
    clients[0].register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let old_token = clients[0]
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    let old_kids = clients[0].jwks_kids().await.unwrap();
    assert_eq!(old_kids.len(), 1);

    let output = warden()
        .args(["keys", "rotate"])
        .env("WARDEN_DATABASE_URL", database.url())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let rotated = tokio::time::Instant::now();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let new_kid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("added signing key "))
        .unwrap_or_else(|| panic!("names the new key: {stdout}"))
        .to_owned();

    for (i, client) in clients.iter().enumerate() {
        let deadline = rotated + Duration::from_secs(10);
        loop {
            let kids = client.jwks_kids().await.unwrap();
            if kids.contains(&new_kid) {
                assert!(kids.contains(&old_kids[0]), "the old key still verifies");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {i} publishes the new key within its reload interval"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Every replica now signs with the new key, and accepts the old one's
    // tokens until they expire.
    for client in &clients {
        let token = client
            .login(ADMIN_EMAIL, PASSWORD)
            .await
            .unwrap()
            .tokens
            .unwrap()
            .access_token;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        assert_eq!(kid, new_kid);
        assert!(client.validate(&old_token).await.unwrap().active);
    }
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_registrations_spread_over_three_replicas_make_exactly_one_admin() {
    let (_db, servers, clients) = replicas(3, &[]).await;
    let attempts = (0..12).map(|i| {
        let client = clients[i % clients.len()].clone();
        async move {
            client
                .register(&format!("racer{i}@example.com"), PASSWORD)
                .await
        }
    });
    let users: Vec<_> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("every registration succeeds"))
        .collect();
    let admins: Vec<_> = users.iter().filter(|u| u.is_admin).collect();
    assert_eq!(admins.len(), 1, "exactly one admin");
    assert_eq!(admins[0].status(), UserStatus::Approved);
    assert_eq!(
        users
            .iter()
            .filter(|u| u.status() == UserStatus::Pending)
            .count(),
        11
    );
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_and_replicas_starting_together_leave_one_sound_schema() {
    let database = TestDatabase::create().await;
    // Four `warden migrate` at once on a fresh database, as a deploy
    // whose init containers start together might run them.
    let runs = (0..4).map(|_| {
        let mut command = warden();
        command
            .arg("migrate")
            .env("WARDEN_DATABASE_URL", database.url());
        async move { command.output().await.unwrap() }
    });
    for output in join_all(runs).await {
        assert!(
            output.status.success(),
            "every migrate succeeds: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Then three replicas, also at once (each migrates first).
    let env = server_env(&[]);
    let servers = join_all((0..3).map(|_| ServerProcess::start(&database, &env))).await;
    let clients = join_all(servers.iter().map(ServerProcess::client)).await;

    let conn = Database::connect(database.url()).await.unwrap();
    let versions: Vec<String> = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT version FROM seaql_migrations ORDER BY version",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(versions, known, "each migration recorded once");
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "signing_keys",
        "login_failures",
        "user_counts",
    ] {
        conn.execute_unprepared(&format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap_or_else(|e| panic!("table {table}: {e}"));
    }

    // One service: one signing key, one set of users.
    let jwks: Vec<Vec<String>> = join_all(clients.iter().map(Client::jwks_kids))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(jwks[0].len(), 1, "one signing key");
    assert!(jwks.windows(2).all(|w| w[0] == w[1]), "{jwks:?}");
    clients[0].register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    clients[2]
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap_or_else(|s| panic!("login on another replica: {}", describe(&s)));
    // The per-status counts: one row each, and they add up to the users.
    assert_eq!(count(&conn, "SELECT count(*) FROM user_counts").await, 3);
    assert_eq!(
        count(&conn, "SELECT CAST(SUM(total) AS BIGINT) FROM user_counts").await,
        count(&conn, "SELECT count(*) FROM users").await
    );
    assert_eq!(
        count(
            &conn,
            "SELECT total FROM user_counts WHERE status = 'approved'"
        )
        .await,
        1
    );
    conn.close().await.ok();
    stop_all(servers).await;
}

#[tokio::test]
async fn a_release_older_than_the_schema_still_starts_so_an_upgrade_can_roll_back() {
    let newer = spawn_app().await;
    newer.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    // What a later release's migration leaves behind.
    newer
        .db()
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) \
             VALUES ('m20991231_000001_from_a_later_release', 0)",
        )
        .await
        .unwrap();

    let older = spawn_app_on(newer.database.share(), |_| {}).await;
    older
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap_or_else(|s| panic!("the older release logs in: {}", describe(&s)));

    let output = warden()
        .arg("migrate")
        .env("WARDEN_DATABASE_URL", newer.database.url())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let logs = String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("newer than this release"), "{logs}");
}

//! Signing-key rotation, retirement across replicas, and encryption at
//! rest.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use sea_orm::{Database, EntityTrait};
use uuid::Uuid;
use warden::{
    domain::{
        key_encryption::KeyEncryptionKey,
        tokens::{self, TokenService},
    },
    proto::v1 as pb,
    store::{entities::signing_key, keys},
};

use crate::helpers::{
    ADMIN_EMAIL, CHEAP_HASHING_ENV, Client, PASSWORD, ServerProcess, TestApp, TestDatabase,
    spawn_app, spawn_app_on, spawn_app_with, warden,
};

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let json = app
        .auth
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    let jwks: serde_json::Value = serde_json::from_str(&json).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn stored_key(app: &TestApp, kid: &str) -> Option<signing_key::Model> {
    signing_key::Entity::find_by_id(kid.to_owned())
        .one(app.db())
        .await
        .unwrap()
}

async fn stored_kids(app: &TestApp) -> usize {
    signing_key::Entity::find()
        .all(app.db())
        .await
        .unwrap()
        .len()
}

/// When the stored key `kid` may be deleted.
async fn retire_after(app: &TestApp, kid: &str) -> DateTime<Utc> {
    stored_key(app, kid)
        .await
        .unwrap_or_else(|| panic!("key {kid} is gone"))
        .retire_after
        .unwrap_or_else(|| panic!("key {kid} has no retire-after time"))
}

/// How far the manual clock must move to reach `at`.
fn until(app: &TestApp, at: DateTime<Utc>) -> Duration {
    (at - app.now()).to_std().unwrap_or_default()
}

/// Moves the clock that is behind, so that both read the same time.
fn align(a: &TestApp, b: &TestApp) {
    let (ta, tb) = (a.now(), b.now());
    if ta < tb {
        a.clock.advance((tb - ta).to_std().unwrap());
    } else {
        b.clock.advance((ta - tb).to_std().unwrap());
    }
}

fn advance_both(a: &TestApp, b: &TestApp, by: Duration) {
    a.clock.advance(by);
    b.clock.advance(by);
}

async fn admin_token(app: &TestApp) -> String {
    app.login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token
}

/// The expiry (`exp`) of an access token, read without verifying it.
fn expiry_of(token: &str) -> DateTime<Utc> {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    DateTime::from_timestamp(claims["exp"].as_i64().unwrap(), 0).unwrap()
}

/// How soon a replica with the default settings (a 30 s reload interval,
/// a 5 s database timeout) signs with a new key.
fn default_switch() -> Duration {
    tokens::switch_within(Duration::from_secs(30), Duration::from_secs(5))
}
/// The leeway on `exp`.
const LEEWAY: Duration = Duration::from_secs(5);

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn rotate(db_url: &str, kek: Option<&str>) -> (i32, String) {
    let mut command = warden();
    command
        .args(["keys", "rotate"])
        .env("WARDEN_DATABASE_URL", db_url);
    if let Some(kek) = kek {
        command.env("WARDEN_KEY_ENCRYPTION_KEY", kek);
    }
    let output = command.output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

#[tokio::test]
async fn after_a_rotation_old_tokens_verify_until_they_expire_then_the_old_key_leaves_the_jwks() {
    let app = spawn_app_with(|c| c.access_token_ttl = Duration::from_secs(60)).await;
    let (_, old_token) = app.admin_session().await;
    let old_kid = kid_of(&old_token);
    assert_eq!(jwks_kids(&app).await, std::slice::from_ref(&old_kid));

    let (code, output) = rotate(app.database.url(), None).await;
    assert_eq!(code, 0, "{output}");
    app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    let kids = jwks_kids(&app).await;
    assert_eq!(kids.len(), 2, "both keys published");
    let new_token = app
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    let new_kid = kid_of(&new_token);
    assert_ne!(new_kid, old_kid, "the new key signs");
    assert!(
        output.contains(&new_kid),
        "the command names the new key: {output}"
    );
    assert!(
        app.validate(&old_token).await.unwrap().active,
        "the old key still verifies"
    );

    // The first reload that saw the old key replaced stored when it goes:
    // once every replica, however seldom it reloads, signs with the new
    // key, and the last token it signed has expired.
    let at = retire_after(&app, &old_kid).await;
    assert_eq!(
        at,
        app.now() + default_switch() + Duration::from_secs(60) + LEEWAY
    );
    app.clock.advance(until(&app, at - Duration::from_secs(1)));
    let early = app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    assert!(early.is_empty(), "not a second early");
    assert_eq!(stored_kids(&app).await, 2);
    app.clock.advance(Duration::from_secs(1));
    let retired = app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    assert_eq!(retired, [old_kid]);
    assert_eq!(jwks_kids(&app).await, [new_kid]);
    assert_eq!(stored_kids(&app).await, 1);
    assert!(!app.validate(&old_token).await.unwrap().active);
}

#[tokio::test]
async fn a_retire_after_time_is_stored_once_and_later_reloads_keep_it() {
    let app = spawn_app_with(|c| c.access_token_ttl = Duration::from_secs(60)).await;
    let (_, old_token) = app.admin_session().await;
    let old_kid = kid_of(&old_token);
    assert!(
        stored_key(&app, &old_kid)
            .await
            .unwrap()
            .retire_after
            .is_none(),
        "none while it signs"
    );
    tokens::rotate_keys(app.db(), app.now(), None)
        .await
        .unwrap();
    app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    let first = retire_after(&app, &old_kid).await;
    app.clock.advance(Duration::from_secs(60));
    app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    assert_eq!(
        retire_after(&app, &old_kid).await,
        first,
        "not pushed on by every reload"
    );
    assert_eq!(jwks_kids(&app).await.len(), 2);
}

#[tokio::test]
async fn a_rotation_reaches_another_replica_at_its_next_reload() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.database.share(), |_| {}).await;
    rotate(a.database.url(), None).await;
    b.state.tokens.reload(b.db(), b.now()).await.unwrap();
    a.state.tokens.reload(a.db(), a.now()).await.unwrap();
    assert_eq!(jwks_kids(&a).await, jwks_kids(&b).await);
    assert_eq!(jwks_kids(&b).await.len(), 2);
}

fn kek_text(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

#[tokio::test]
async fn with_a_key_encryption_key_private_keys_are_stored_encrypted() {
    let kek = KeyEncryptionKey::parse(&kek_text(1)).unwrap();
    let app = spawn_app_with(|c| c.key_encryption_key = Some(kek.clone())).await;
    let (_, token) = app.admin_session().await;
    assert!(app.validate(&token).await.unwrap().active);
    let rows = signing_key::Entity::find().all(app.db()).await.unwrap();
    assert!(
        rows.iter().all(|r| r.private_key.starts_with(b"wke1")),
        "sealed"
    );
    assert!(
        rows.iter().all(|r| r.private_key[0] != 0x30),
        "not PKCS#8 in the clear"
    );

    // A rotation with the same key adds another sealed key.
    let (code, output) = rotate(app.database.url(), Some(&kek_text(1))).await;
    assert_eq!(code, 0, "{output}");
    // Without it, or with another, nothing starts and nothing is added.
    let (code, output) = rotate(app.database.url(), None).await;
    assert_eq!(code, 1);
    assert!(output.contains("WARDEN_KEY_ENCRYPTION_KEY"), "{output}");
    let (code, output) = rotate(app.database.url(), Some(&kek_text(2))).await;
    assert_eq!(code, 1);
    assert!(output.contains("cannot decrypt"), "{output}");
    assert_eq!(
        signing_key::Entity::find()
            .all(app.db())
            .await
            .unwrap()
            .len(),
        2
    );

    let other = warden::app::Application::build(
        warden::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            database_url: app.database.url().to_owned(),
            ..Default::default()
        },
        std::sync::Arc::new(warden::domain::clock::SystemClock),
    )
    .await;
    assert!(other.is_err(), "a server without the key does not start");
}

#[tokio::test]
async fn a_key_encryption_key_set_later_seals_the_clear_keys_and_rotates_a_new_one_in() {
    let db = TestDatabase::create().await;
    let ttl = Duration::from_secs(60);
    let plain = spawn_app_on(db.share(), |c| c.access_token_ttl = ttl).await;
    let (_, old_token) = plain.admin_session().await;
    let old_kid = kid_of(&old_token);
    let kek = KeyEncryptionKey::parse(&kek_text(3)).unwrap();
    let sealed = spawn_app_on(db.share(), |c| {
        c.key_encryption_key = Some(kek);
        c.access_token_ttl = ttl;
    })
    .await;

    let rows = signing_key::Entity::find().all(sealed.db()).await.unwrap();
    assert_eq!(rows.len(), 2, "the old key and a new one");
    assert!(
        rows.iter().all(|r| r.private_key.starts_with(b"wke1")),
        "every stored key sealed, the old one too"
    );
    // The old key's clear copy may live on in backups: it signs no more.
    let new_token = admin_token(&sealed).await;
    let new_kid = kid_of(&new_token);
    assert_ne!(new_kid, old_kid, "a new key signs");
    let mut published = jwks_kids(&sealed).await;
    published.sort();
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(published, both, "both keys published");
    // Tokens of the old key verify until it retires, like any replaced key.
    assert!(sealed.validate(&old_token).await.unwrap().active);
    assert!(sealed.validate(&new_token).await.unwrap().active);
    sealed
        .state
        .tokens
        .reload(sealed.db(), sealed.now())
        .await
        .unwrap();
    let at = retire_after(&sealed, &old_kid).await;
    sealed.clock.advance(until(&sealed, expiry_of(&old_token)));
    assert!(
        sealed.validate(&old_token).await.unwrap().active,
        "at its expiry, still good"
    );
    sealed.clock.advance(until(&sealed, at));
    sealed
        .state
        .tokens
        .reload(sealed.db(), sealed.now())
        .await
        .unwrap();
    assert_eq!(jwks_kids(&sealed).await, [new_kid]);
    assert!(stored_key(&sealed, &old_kid).await.is_none(), "retired");
}

#[tokio::test]
async fn with_a_key_encryption_key_a_clear_key_written_later_is_refused_not_used() {
    let kek = KeyEncryptionKey::parse(&kek_text(4)).unwrap();
    let app = spawn_app_with(|c| c.key_encryption_key = Some(kek)).await;
    let (_, token) = app.admin_session().await;
    let sealed_kid = kid_of(&token);
    let claims = app.validate(&token).await.unwrap();

    // What a replica started without the key-encryption key writes: a
    // newer key, in the clear.
    let clear = tokens::generate_signing_key(app.now() + Duration::from_secs(1), None).unwrap();
    keys::insert(app.db(), clear.clone()).await.unwrap();
    app.state.tokens.reload(app.db(), app.now()).await.unwrap();

    assert_eq!(
        jwks_kids(&app).await,
        std::slice::from_ref(&sealed_kid),
        "not published"
    );
    assert_eq!(
        kid_of(&admin_token(&app).await),
        sealed_kid,
        "does not sign"
    );
    // A token it signed for a real session, as that replica would issue.
    let theirs = TokenService::new(
        "warden".into(),
        "warden".into(),
        Duration::from_secs(900),
        &[clear],
        None,
    )
    .unwrap();
    let issued = theirs
        .issue(
            Uuid::parse_str(&claims.user_id).unwrap(),
            Uuid::parse_str(&claims.session_id).unwrap(),
            app.now(),
        )
        .unwrap();
    assert!(
        !app.validate(&issued.token).await.unwrap().active,
        "not verified with it"
    );
    assert!(
        stored_key(&app, &sealed_kid)
            .await
            .unwrap()
            .retire_after
            .is_none(),
        "and the sealed key is not retired for it"
    );
}

/// Moves both clocks to each token's expiry (and the leeway) in turn,
/// reloads A there (and B too if `b_reloads`), and checks the token on
/// both.
async fn good_on_both_until_they_expire(
    a: &TestApp,
    b: &TestApp,
    b_reloads: bool,
    issued: &[&str],
) {
    let mut issued = issued.to_vec();
    issued.sort_by_key(|t| expiry_of(t));
    for token in issued {
        advance_both(a, b, until(a, expiry_of(token) + LEEWAY));
        a.state.tokens.reload(a.db(), a.now()).await.unwrap();
        if b_reloads {
            b.state.tokens.reload(b.db(), b.now()).await.unwrap();
        }
        for (name, app) in [("A", a), ("B", b)] {
            assert!(
                app.validate(token).await.unwrap().active,
                "a token of {} on {name} at its expiry",
                kid_of(token)
            );
        }
    }
}

#[tokio::test]
async fn replicas_with_different_reload_intervals_keep_a_replaced_key_until_its_stored_retire_after_time()
 {
    // Tokens that live shorter than B's reload interval: A could retire the
    // old key while B still signs with it, if A went by its own interval.
    let ttl = Duration::from_secs(10);
    let a = spawn_app_with(|c| {
        c.key_reload_interval = Duration::from_secs(1);
        c.access_token_ttl = ttl;
    })
    .await;
    let b = spawn_app_on(a.database.share(), |c| {
        c.key_reload_interval = Duration::from_secs(30);
        c.access_token_ttl = ttl;
    })
    .await;
    align(&a, &b);
    a.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let before_a = admin_token(&a).await;
    let old_kid = kid_of(&before_a);

    tokens::rotate_keys(a.db(), a.now(), None).await.unwrap();
    // A reloads every second: it signs with the new key at once.
    a.state.tokens.reload(a.db(), a.now()).await.unwrap();
    let after_a = admin_token(&a).await;
    let new_kid = kid_of(&after_a);
    assert_ne!(new_kid, old_kid);
    // Tokens of the old key verify on both up to their expiry (and the
    // leeway), however often A reloads meanwhile.
    good_on_both_until_they_expire(&a, &b, false, &[&before_a]).await;
    // B reloads every 30 s: until then it signs with the old key.
    advance_both(
        &a,
        &b,
        until(&a, expiry_of(&before_a) - ttl + Duration::from_secs(29)),
    );
    let late_b = admin_token(&b).await;
    assert_eq!(kid_of(&late_b), old_kid, "B has not reloaded yet");
    advance_both(&a, &b, Duration::from_secs(1));
    b.state.tokens.reload(b.db(), b.now()).await.unwrap();
    let after_b = admin_token(&b).await;
    assert_eq!(kid_of(&after_b), new_kid);
    let again_a = admin_token(&a).await;

    let at = retire_after(&a, &old_kid).await;
    assert!(at >= expiry_of(&late_b) + LEEWAY, "covers B's last token");
    // Now that both know the new key too: tokens of either key, from
    // either replica.
    good_on_both_until_they_expire(&a, &b, true, &[&late_b, &after_b, &again_a]).await;
    // Neither deletes the old key a second before the stored time.
    advance_both(&a, &b, until(&a, at - Duration::from_secs(1)));
    for app in [&a, &b] {
        app.state.tokens.reload(app.db(), app.now()).await.unwrap();
        assert!(stored_key(app, &old_kid).await.is_some());
        assert_eq!(jwks_kids(app).await.len(), 2);
    }
    // Then whichever reloads first deletes it, and both stop publishing it.
    advance_both(&a, &b, Duration::from_secs(1));
    // (B's own background reload may have got there first on a slow
    // machine: then this reload has nothing left to retire.)
    let retired = b.state.tokens.reload(b.db(), b.now()).await.unwrap();
    assert!(retired.iter().all(|kid| kid == &old_kid), "{retired:?}");
    a.state.tokens.reload(a.db(), a.now()).await.unwrap();
    assert!(stored_key(&a, &old_kid).await.is_none());
    for app in [&a, &b] {
        assert_eq!(jwks_kids(app).await, std::slice::from_ref(&new_kid));
    }
}

#[tokio::test]
async fn replica_processes_reloading_every_second_and_every_three_both_keep_the_replaced_key() {
    let db = TestDatabase::create().await;
    let env = |interval| {
        let mut env = CHEAP_HASHING_ENV.to_vec();
        env.push(("WARDEN_KEY_RELOAD_INTERVAL", interval));
        env
    };
    let a = ServerProcess::start(&db, &env("1s")).await;
    let b = ServerProcess::start(&db, &env("3s")).await;
    let clients = [a.client().await, b.client().await];
    clients[0].register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let login = |client: &Client| {
        let client = client.clone();
        async move {
            client
                .login(ADMIN_EMAIL, PASSWORD)
                .await
                .unwrap()
                .tokens
                .unwrap()
                .access_token
        }
    };
    let mut issued = vec![login(&clients[0]).await, login(&clients[1]).await];
    let old_kid = kid_of(&issued[0]);

    let (code, output) = rotate(db.url(), None).await;
    assert_eq!(code, 0, "{output}");
    let new_kid = output
        .lines()
        .find_map(|l| l.strip_prefix("added signing key "))
        .unwrap_or_else(|| panic!("names the new key: {output}"))
        .to_owned();
    // Each signs with the new key within its own interval.
    for client in &clients {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let token = login(client).await;
            if kid_of(&token) == new_kid {
                issued.push(token);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "switched in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The replica that saw the old key replaced first stored when it goes:
    // well after the slower replica's interval and a token's lifetime.
    let conn = Database::connect(db.url()).await.unwrap();
    let stored = |kid: String| {
        let conn = conn.clone();
        async move {
            signing_key::Entity::find_by_id(kid)
                .one(&conn)
                .await
                .unwrap()
        }
    };
    let new_key = stored(new_kid.clone()).await.unwrap();
    let at = stored(old_kid.clone())
        .await
        .expect("the old key is kept")
        .retire_after
        .expect("a retire-after time is stored");
    let fifteen_minutes = Duration::from_secs(15 * 60);
    assert!(at >= new_key.created_at + Duration::from_secs(3) + fifteen_minutes + LEEWAY);
    let slower = tokens::switch_within(Duration::from_secs(3), Duration::from_secs(5));
    assert!(at >= new_key.created_at + slower + fifteen_minutes + LEEWAY);
    // Tokens of both keys from both replicas verify on both.
    for token in &issued {
        for client in &clients {
            assert!(client.validate(token).await.unwrap().active);
        }
    }
    for client in &clients {
        assert_eq!(client.jwks_kids().await.unwrap().len(), 2);
    }
    conn.close().await.ok();
    for server in [a, b] {
        let (code, logs) = server.stop().await;
        assert_eq!(code, Some(0), "{logs:#?}");
    }
}

/// `warden keys rotate` with `args` and `env` (nothing inherited).
async fn rotate_with(db_url: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let output = warden()
        .args(["keys", "rotate"])
        .args(args)
        .env("WARDEN_DATABASE_URL", db_url)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

#[tokio::test]
async fn the_key_encryption_key_is_refused_as_a_flag_and_read_from_its_variable_or_a_file() {
    let db = TestDatabase::create().await;
    let kek = kek_text(5);
    for command in ["keys", "serve"] {
        let mut process = warden();
        if command == "keys" {
            process.args(["keys", "rotate"]);
        } else {
            process.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ]);
        }
        let output = process
            .args(["--key-encryption-key", &kek])
            .env("WARDEN_DATABASE_URL", db.url())
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {text}");
        assert!(text.contains("set WARDEN_KEY_ENCRYPTION_KEY"), "{text}");
        assert!(text.contains("WARDEN_KEY_ENCRYPTION_KEY_FILE"), "{text}");
        assert!(!text.contains(&kek), "the key is not echoed: {text}");
    }

    // A file as `openssl rand -base64 32 > file` writes it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kek");
    std::fs::write(&file, format!("{kek}\n")).unwrap();
    let file = file.to_str().unwrap();
    let (code, output) =
        rotate_with(db.url(), &[("WARDEN_KEY_ENCRYPTION_KEY_FILE", file)], &[]).await;
    assert_eq!(code, 0, "{output}");
    let conn = Database::connect(db.url()).await.unwrap();
    let rows = signing_key::Entity::find().all(&conn).await.unwrap();
    assert!(rows.iter().all(|r| r.private_key.starts_with(b"wke1")));
    // The key in the file is the key in the variable.
    let (code, output) = rotate_with(db.url(), &[("WARDEN_KEY_ENCRYPTION_KEY", &kek)], &[]).await;
    assert_eq!(code, 0, "{output}");

    let malformed = dir.path().join("malformed");
    std::fs::write(&malformed, "not a key\n").unwrap();
    let missing = dir.path().join("missing");
    for (env, says) in [
        (
            vec![
                ("WARDEN_KEY_ENCRYPTION_KEY", kek.as_str()),
                ("WARDEN_KEY_ENCRYPTION_KEY_FILE", file),
            ],
            "both set",
        ),
        (
            vec![("WARDEN_KEY_ENCRYPTION_KEY_FILE", missing.to_str().unwrap())],
            "WARDEN_KEY_ENCRYPTION_KEY_FILE: cannot read",
        ),
        (
            vec![(
                "WARDEN_KEY_ENCRYPTION_KEY_FILE",
                malformed.to_str().unwrap(),
            )],
            "WARDEN_KEY_ENCRYPTION_KEY_FILE: the key in",
        ),
        (
            vec![("WARDEN_KEY_ENCRYPTION_KEY", "not a key")],
            "WARDEN_KEY_ENCRYPTION_KEY must be",
        ),
    ] {
        let (code, output) = rotate_with(db.url(), &env, &[]).await;
        assert_eq!(code, 2, "{env:?}: {output}");
        assert!(output.contains(says), "{env:?}: {output}");
    }
    assert_eq!(
        signing_key::Entity::find().all(&conn).await.unwrap().len(),
        rows.len() + 1,
        "the refused runs added nothing"
    );
    conn.close().await.ok();
}

#[tokio::test]
async fn without_a_key_encryption_key_a_server_on_postgres_warns_and_one_on_sqlite_does_not() {
    let db = TestDatabase::create().await;
    let on_postgres = matches!(db, TestDatabase::Postgres { .. });
    let warning = "stored in the clear in a shared PostgreSQL database";
    let clear = ServerProcess::start(&db, &CHEAP_HASHING_ENV).await;
    let (code, logs) = clear.stop().await;
    assert_eq!(code, Some(0), "{logs:#?}");
    assert_eq!(
        logs.iter().any(|l| l.contains(warning)),
        on_postgres,
        "{logs:#?}"
    );

    let kek = kek_text(6);
    let mut env = CHEAP_HASHING_ENV.to_vec();
    env.push(("WARDEN_KEY_ENCRYPTION_KEY", &kek));
    let sealed = ServerProcess::start(&db, &env).await;
    let (code, logs) = sealed.stop().await;
    assert_eq!(code, Some(0), "{logs:#?}");
    assert!(!logs.iter().any(|l| l.contains(warning)), "{logs:#?}");
}

/// Reload intervals have no upper bound: a replica that reloads every two
/// hours may sign with a replaced key for two hours, and the replica that
/// first sees the key replaced keeps it for that long, because every
/// running replica reports how soon it switches.
#[tokio::test]
async fn a_replaced_key_outlives_the_slowest_running_replica_s_switch_whatever_its_interval() {
    let ttl = Duration::from_secs(60);
    let a = spawn_app_with(|c| {
        c.key_reload_interval = Duration::from_secs(1);
        c.access_token_ttl = ttl;
    })
    .await;
    let slow = Duration::from_secs(2 * 3600);
    let b = spawn_app_on(a.database.share(), |c| {
        c.key_reload_interval = slow;
        c.access_token_ttl = ttl;
    })
    .await;
    align(&a, &b);
    a.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let old_kid = kid_of(&admin_token(&a).await);
    tokens::rotate_keys(a.db(), a.now(), None).await.unwrap();
    a.state.tokens.reload(a.db(), a.now()).await.unwrap();
    let at = retire_after(&a, &old_kid).await;
    let switch = tokens::switch_within(slow, Duration::from_secs(5));
    assert!(
        at >= a.now() + chrono::TimeDelta::from_std(switch + ttl).unwrap(),
        "kept while B may still sign with it: {at:?}"
    );
    drop(b);
}

//! Signing-key rotation and encryption at rest.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use sea_orm::{Database, EntityTrait};
use warden::{
    domain::key_encryption::KeyEncryptionKey, proto::v1 as pb, store::entities::signing_key,
};

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, TestApp, TestDatabase, spawn_app, spawn_app_on, spawn_app_with, warden,
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

async fn newest_key_created_at(app: &TestApp) -> std::time::SystemTime {
    let rows = signing_key::Entity::find().all(app.db()).await.unwrap();
    rows.iter().map(|r| r.created_at).max().unwrap().into()
}

/// How far the manual clock must move to reach `at`.
fn until(app: &TestApp, at: std::time::SystemTime) -> Duration {
    let now: std::time::SystemTime = app.now().into();
    at.duration_since(now).unwrap_or_default()
}

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
        app.validate(&old_token).await.active,
        "the old key still verifies"
    );

    // Once no token signed by the old key can be live, it is retired. The
    // command stamped the new key with the real time, the server runs on a
    // manual clock: measure from the key itself.
    let grace = Duration::from_secs(30 + 60 + 5);
    app.clock.advance(until(
        &app,
        newest_key_created_at(&app).await + grace - Duration::from_secs(1),
    ));
    let early = app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    assert!(early.is_empty(), "not a second early");
    app.clock.advance(Duration::from_secs(1));
    let retired = app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    assert_eq!(retired, [old_kid]);
    assert_eq!(jwks_kids(&app).await, [new_kid]);
    assert_eq!(
        signing_key::Entity::find()
            .all(app.db())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(!app.validate(&old_token).await.active);
}

#[tokio::test]
async fn a_key_is_not_retired_while_a_token_it_signed_may_live() {
    let app = spawn_app_with(|c| c.access_token_ttl = Duration::from_secs(60)).await;
    app.admin_session().await;
    rotate(app.database.url(), None).await;
    // Just short of reload interval + TTL + leeway after the new key.
    let grace = Duration::from_secs(30 + 60 + 5);
    app.clock.advance(until(
        &app,
        newest_key_created_at(&app).await + grace - Duration::from_secs(1),
    ));
    let retired = app.state.tokens.reload(app.db(), app.now()).await.unwrap();
    assert!(retired.is_empty());
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
    assert!(app.validate(&token).await.active);
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
async fn setting_a_key_encryption_key_later_encrypts_the_stored_keys() {
    let db = TestDatabase::create().await;
    let plain = spawn_app_on(db.share(), |_| {}).await;
    let (_, token) = plain.admin_session().await;
    let kek = KeyEncryptionKey::parse(&kek_text(3)).unwrap();
    let sealed = spawn_app_on(db.share(), |c| c.key_encryption_key = Some(kek)).await;
    let rows = signing_key::Entity::find().all(sealed.db()).await.unwrap();
    assert!(rows.iter().all(|r| r.private_key.starts_with(b"wke1")));
    assert!(
        sealed.validate(&token).await.active,
        "the same key, now encrypted"
    );
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

//! What an operator's copy of the database holds: the SQLite file after a
//! clean stop. These run on SQLite whatever `WARDEN_TEST_DATABASE_URL` says
//! (files are SQLite's business).

use std::path::{Path, PathBuf};

use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection};
use warden::proto::v1 as pb;

use crate::helpers::{
    ADMIN_EMAIL, CHEAP_HASHING_ENV, PASSWORD, Remote, ServerProcess, TestDatabase, count,
    with_bearer,
};

/// A SQLite database file of its own in a fresh directory.
fn sqlite_database() -> (TestDatabase, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("warden.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    (TestDatabase::Sqlite { url, _dir: dir }, file)
}

/// `file` with `suffix` appended to its name (`-wal`, `-shm`).
fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn absent_or_empty(file: &Path) -> bool {
    std::fs::metadata(file).map_or(true, |m| m.len() == 0)
}

/// Opens a copy of the database on its own, as a plain SQLite file.
async fn open_file(file: &Path) -> DatabaseConnection {
    Database::connect(format!("sqlite://{}?mode=rw", file.display()))
        .await
        .unwrap_or_else(|e| panic!("{} opens: {e}", file.display()))
}

async fn integrity(db: &DatabaseConnection) -> String {
    db.query_one_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        "PRAGMA integrity_check",
    ))
    .await
    .expect("integrity_check runs")
    .expect("a row")
    .try_get_by_index::<String>(0)
    .expect("text")
}

async fn create_user(client: &Remote, admin_token: &str, email: &str) {
    client
        .admin
        .clone()
        .create_user(with_bearer(
            pb::CreateUserRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                is_admin: false,
            },
            admin_token,
        ))
        .await
        .unwrap_or_else(|e| panic!("create {email}: {e:?}"));
}

/// The admin's access token, on a fresh database.
async fn admin_token(client: &Remote) -> String {
    client.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    client
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token
}

#[tokio::test]
async fn after_a_clean_stop_the_database_file_alone_holds_every_row() {
    let (database, file) = sqlite_database();
    let server = ServerProcess::start(&database, &CHEAP_HASHING_ENV).await;
    let client = server.client().await;
    let admin = admin_token(&client).await;
    for i in 0..4 {
        let email = format!("user{i}@example.com");
        create_user(&client, &admin, &email).await;
        client.login(&email, PASSWORD).await.unwrap();
    }
    let (code, logs) = server.stop().await;
    assert_eq!(code, Some(0));

    assert!(
        absent_or_empty(&beside(&file, "-wal")),
        "the write-ahead log is folded in and gone"
    );
    assert!(
        !beside(&file, "-shm").exists(),
        "no shared-memory file left"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("write-ahead log is folded into the file")),
        "the stop says so: {logs:?}"
    );
    // What an operator does: copy the file, and only the file.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("warden.db");
    std::fs::copy(&file, &copy).unwrap();
    let db = open_file(&copy).await;
    assert_eq!(integrity(&db).await, "ok");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users").await, 5);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sessions").await, 5);
    db.close().await.unwrap();
}

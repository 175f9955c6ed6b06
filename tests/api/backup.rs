//! What an operator's copy of the database holds: the SQLite file after a
//! clean stop, and `warden backup` taken while a server writes. These run on
//! SQLite whatever `WARDEN_TEST_DATABASE_URL` says (files are SQLite's
//! business); on PostgreSQL, `warden backup` points to pg_dump.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection};
use tokio::sync::watch;
use warden::proto::v1 as pb;

use crate::helpers::{
    ADMIN_EMAIL, CHEAP_HASHING_ENV, Client, PASSWORD, ServerProcess, TestDatabase, count,
    spawn_app_on, warden, with_bearer,
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

struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `warden backup ARGS` on `database_url`.
async fn backup(database_url: &str, args: &[&str]) -> Finished {
    let mut command = warden();
    command
        .arg("backup")
        .args(args)
        .env("WARDEN_DATABASE_URL", database_url)
        .stdin(Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the backup finishes")
        .expect("the warden binary runs");
    Finished {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
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

async fn create_user(client: &Client, admin_token: &str, email: &str) {
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
async fn admin_token(client: &Client) -> String {
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

/// Commands that write to the database close it when they are done, as a
/// stopping server does, so that the file alone is the whole database.
#[tokio::test]
async fn migrate_create_admin_and_keys_rotate_leave_no_write_ahead_log() {
    let (database, file) = sqlite_database();
    for args in [
        &["migrate"][..],
        &[
            "create-admin",
            "--email",
            "root@example.com",
            "--password-stdin",
        ],
        &["keys", "rotate"],
    ] {
        let mut command = crate::helpers::warden();
        command
            .args(args)
            .env("WARDEN_DATABASE_URL", database.url())
            .envs(CHEAP_HASHING_ENV)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        {
            use tokio::io::AsyncWriteExt as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(format!("{PASSWORD}\n").as_bytes())
                .await
                .unwrap();
        }
        let output = child.wait_with_output().await.unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(
            absent_or_empty(&beside(&file, "-wal")),
            "{args:?} left its write-ahead log"
        );
    }
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("warden.db");
    std::fs::copy(&file, &copy).unwrap();
    let db = open_file(&copy).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM signing_keys").await, 1);
    db.close().await.unwrap();
}

/// Users created and logged in, one after another, by a few tasks at once.
struct Load {
    acknowledged: Arc<Mutex<Vec<String>>>,
    progress: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, admin: &str) -> Self {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let (progress_tx, progress) = watch::channel(0);
        let progress_tx = Arc::new(progress_tx);
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..3)
            .map(|task| {
                let (client, admin) = (client.clone(), admin.to_owned());
                let (acknowledged, progress_tx) = (acknowledged.clone(), progress_tx.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        if *stopped.borrow() {
                            return;
                        }
                        let email = format!("load{task}-{i}@example.com");
                        create_user(&client, &admin, &email).await;
                        client.login(&email, PASSWORD).await.expect("login");
                        let total = {
                            let mut done = acknowledged.lock().unwrap();
                            done.push(email);
                            done.len()
                        };
                        progress_tx.send_replace(total);
                    }
                })
            })
            .collect();
        Self {
            acknowledged,
            progress,
            stop,
            tasks,
        }
    }

    fn acknowledged(&self) -> Vec<String> {
        self.acknowledged.lock().unwrap().clone()
    }

    async fn reach(&mut self, total: usize) {
        tokio::time::timeout(
            Duration::from_secs(60),
            self.progress.wait_for(|n| *n >= total),
        )
        .await
        .expect("the load makes progress")
        .expect("the load runs");
    }

    async fn finish(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.expect("every call of the load succeeded");
        }
    }
}

/// The documented steps, as an operator runs them: `warden backup PATH`
/// with the server's database URL, while it serves; to restore, stop the
/// server, remove `warden.db-wal` and `warden.db-shm` if they are there,
/// copy the backup over `warden.db`, start the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_server_writes_restores_to_a_consistent_database() {
    let (database, file) = sqlite_database();
    // Enough to read that the copy takes a while, so that writes commit
    // while it runs.
    let db = Database::connect(database.url()).await.unwrap();
    db.execute_unprepared(
        "CREATE TABLE ballast (b BLOB); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8192) \
         INSERT INTO ballast SELECT randomblob(4096) FROM n;",
    )
    .await
    .unwrap();
    db.close().await.unwrap();
    let server = ServerProcess::start(&database, &CHEAP_HASHING_ENV).await;
    let client = server.client().await;
    let admin = admin_token(&client).await;
    let mut load = Load::start(&client, &admin);
    load.reach(15).await;

    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("warden-backup.db");
    let before = load.acknowledged();
    let done = backup(database.url(), &[target.to_str().unwrap()]).await;
    let during = load.acknowledged().len() - before.len();
    assert_eq!(done.code, 0, "{}", done.stderr);
    let size = std::fs::metadata(&target).unwrap().len();
    assert!(
        done.stdout.contains(&format!(
            "to {} ({size} bytes)",
            std::fs::canonicalize(&target).unwrap().display()
        )),
        "the path and size are reported: {}",
        done.stdout
    );
    assert_eq!(
        std::fs::read_dir(backups.path()).unwrap().count(),
        1,
        "the backup is one file, no log beside it"
    );
    // The server went on as before.
    let total = load.acknowledged().len();
    load.reach(total + 5).await;
    load.finish().await;
    assert!(during > 0, "the server kept writing during the backup");
    assert_eq!(server.stop().await.0, Some(0));

    // Restore.
    for leftover in [beside(&file, "-wal"), beside(&file, "-shm")] {
        let _ = std::fs::remove_file(leftover);
    }
    std::fs::copy(&target, &file).unwrap();

    let db = open_file(&file).await;
    assert_eq!(integrity(&db).await, "ok");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE user_id NOT IN (SELECT id FROM users)"
        )
        .await,
        0,
        "every session has its user"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM user_counts c WHERE c.total <> \
             (SELECT COUNT(*) FROM users u WHERE u.status = c.status)"
        )
        .await,
        0,
        "user_counts equals the counts by status"
    );
    for email in &before {
        let sql = format!("SELECT COUNT(*) FROM users WHERE email = '{email}'");
        assert_eq!(
            count(&db, &sql).await,
            1,
            "{email} was there before the backup"
        );
    }
    db.close().await.unwrap();

    let restored = ServerProcess::start(&database, &CHEAP_HASHING_ENV).await;
    let client = restored.client().await;
    client.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    for email in &before {
        client
            .login(email, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{email} logs in on the restored copy: {e:?}"));
    }
    assert_eq!(restored.stop().await.0, Some(0));
}

#[tokio::test]
async fn backup_refuses_an_existing_file_unless_forced() {
    let (database, _) = sqlite_database();
    let app = spawn_app_on(database, |_| {}).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("warden-backup.db");
    std::fs::write(&target, b"last week's backup").unwrap();
    let path = target.to_str().unwrap();

    let refused = backup(app.database.url(), &[path]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains(&format!("{path} already exists"))
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"last week's backup");

    let forced = backup(app.database.url(), &[path, "--force"]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let db = open_file(&target).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users").await, 1);
    db.close().await.unwrap();
}

#[tokio::test]
async fn backup_into_a_missing_directory_says_which_and_writes_nothing() {
    let (database, _) = sqlite_database();
    let app = spawn_app_on(database, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("backups");
    let target = missing.join("warden.db");
    let done = backup(app.database.url(), &[target.to_str().unwrap()]).await;
    assert_eq!(done.code, 1);
    let line = format!(
        "error: there is no directory {}: create it, or choose another path\n",
        missing.display()
    );
    assert_eq!(done.stderr, line);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn backup_neither_creates_nor_migrates_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("warden.db");
    let url = format!("sqlite://{}?mode=rwc", missing.display());
    let target = dir.path().join("copy.db");
    let done = backup(&url, &[target.to_str().unwrap()]).await;
    assert_eq!(done.code, 1);
    assert!(
        done.stderr.contains("there is no database at") && done.stderr.contains("--database-url"),
        "{}",
        done.stderr
    );
    assert!(!missing.exists() && !target.exists());

    // A database warden never migrated stays so.
    let db = Database::connect(url.as_str()).await.unwrap();
    db.execute_unprepared("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');")
        .await
        .unwrap();
    let done = backup(&url, &[target.to_str().unwrap()]).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    let tables = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'";
    assert_eq!(count(&db, tables).await, 1, "the source is unchanged");
    db.close().await.unwrap();
    let copy = open_file(&target).await;
    assert_eq!(count(&copy, tables).await, 1);
    assert_eq!(count(&copy, "SELECT COUNT(*) FROM notes").await, 1);
    copy.close().await.unwrap();
}

#[tokio::test]
async fn backup_on_postgresql_names_pg_dump_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("warden.dump");
    let mut urls = vec![(
        "postgres://warden:s3cret-pw@db.internal:5433/warden?sslmode=require".to_owned(),
        "postgres://warden@db.internal:5433/warden?sslmode=require".to_owned(),
    )];
    // On PostgreSQL runs, also the test database itself.
    let database = TestDatabase::create().await;
    if let TestDatabase::Postgres { url, .. } = &database {
        urls.push((url.clone(), url.clone()));
    }
    for (url, shown) in urls {
        let done = backup(&url, &[target.to_str().unwrap()]).await;
        assert!(
            !done.stderr.contains("s3cret") && !done.stdout.contains("s3cret"),
            "the password is shown (output withheld)"
        );
        assert_eq!(done.code, 2, "{}", done.stderr);
        let command = format!(
            "pg_dump --format=custom --file='{}' --dbname='{shown}'",
            target.display()
        );
        assert!(done.stderr.contains(&command), "{}", done.stderr);
        assert!(!target.exists());
    }
}

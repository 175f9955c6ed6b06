//! The database goes away, fills up or turns read-only under a running
//! warden: calls that need it answer UNAVAILABLE / DATABASE_UNAVAILABLE
//! within the database timeout, the process stays up, and nothing is left
//! half written.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use tokio::time::{Instant, timeout};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use warden::{
    domain::{
        error::Error,
        input::Device,
        types::{RefreshRecord, Session},
    },
    store::{self, StoreError, entities::refresh_token, sessions},
};

use crate::{
    helpers::{
        ADMIN_EMAIL, CHEAP_HASHING_ENV, Client, PASSWORD, ServerProcess, TestDatabase,
        assert_error, count, describe, http_get, is_database_unavailable, spawn_app,
        spawn_app_with,
    },
    postgres_cluster::PostgresCluster,
};

/// Far beyond the 1 s database timeout the servers here run with, and far
/// below the 30 s request deadline that would end a hung call.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// What "promptly" means here: the 1 s database timeout, and slack for a
/// loaded machine.
const PROMPT: Duration = Duration::from_millis(2500);

fn server_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = CHEAP_HASHING_ENV.to_vec();
    env.push(("WARDEN_DATABASE_TIMEOUT", "1s"));
    env.extend_from_slice(extra);
    env
}

/// What the loops of calls running across the outage saw.
#[derive(Default)]
struct Observed {
    /// Emails whose registration was acknowledged.
    registered: Mutex<Vec<String>>,
    /// (access token, refresh token) of acknowledged logins.
    logins: Mutex<Vec<(String, String)>>,
    /// Answers that were neither a success nor DATABASE_UNAVAILABLE.
    unexpected: Mutex<Vec<String>>,
    successes: AtomicUsize,
    unavailable: AtomicUsize,
    slowest_unavailable: Mutex<Duration>,
}

impl Observed {
    /// Files the outcome of one call; true on success.
    fn record<T>(
        &self,
        what: &str,
        started: Instant,
        outcome: Result<Result<T, Status>, ()>,
    ) -> Option<T> {
        match outcome {
            Ok(Ok(value)) => {
                self.successes.fetch_add(1, Ordering::SeqCst);
                Some(value)
            }
            Ok(Err(status)) if is_database_unavailable(&status) => {
                self.unavailable.fetch_add(1, Ordering::SeqCst);
                let mut slowest = self.slowest_unavailable.lock().unwrap();
                *slowest = (*slowest).max(started.elapsed());
                None
            }
            Ok(Err(status)) => {
                self.unexpected
                    .lock()
                    .unwrap()
                    .push(format!("{what}: {}", describe(&status)));
                None
            }
            Err(()) => {
                self.unexpected
                    .lock()
                    .unwrap()
                    .push(format!("{what}: no answer within {ANSWER_BOUND:?}"));
                None
            }
        }
    }
}

/// Runs one call with the bound every answer must meet.
async fn bounded<T>(
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Result<T, Status>, ()> {
    timeout(ANSWER_BOUND, call).await.map_err(|_| ())
}

/// A session's refresh tokens, exchanged one after the other.
struct Chain {
    current: String,
    /// The last exchange of `current` failed without an answer on whether
    /// it happened (the database went away around its commit).
    ambiguous: bool,
    /// Reuse detection ended the session after an ambiguous exchange.
    ended: bool,
}

async fn refresh_loop(
    client: Client,
    chain: Arc<Mutex<Chain>>,
    seen: Arc<Observed>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let (current, ambiguous) = {
            let c = chain.lock().unwrap();
            (c.current.clone(), c.ambiguous)
        };
        let started = Instant::now();
        match bounded(client.refresh(&current)).await {
            Ok(Err(status))
                if ambiguous
                    && status.code() == Code::Unauthenticated
                    && describe(&status).starts_with("REFRESH_TOKEN_REUSED") =>
            {
                // The exchange that failed did commit: presenting its token
                // again is reuse, and the session ends. Legitimate.
                chain.lock().unwrap().ended = true;
                return;
            }
            outcome => {
                let failed_unavailable =
                    matches!(&outcome, Ok(Err(s)) if is_database_unavailable(s));
                if let Some(pair) = seen.record("Refresh", started, outcome) {
                    let mut c = chain.lock().unwrap();
                    c.current = pair.refresh_token;
                    c.ambiguous = false;
                } else if failed_unavailable {
                    chain.lock().unwrap().ambiguous = true;
                }
            }
        }
    }
}

async fn register_loop(
    client: Client,
    name: &'static str,
    seen: Arc<Observed>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let email = format!("{name}-{n}@example.com");
        let started = Instant::now();
        let outcome = bounded(client.register(&email, PASSWORD)).await;
        if seen.record("Register", started, outcome).is_some() {
            seen.registered.lock().unwrap().push(email);
        }
    }
}

async fn login_loop(client: Client, seen: Arc<Observed>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let outcome = bounded(client.login(ADMIN_EMAIL, PASSWORD)).await;
        if let Some(login) = seen.record("Login", started, outcome) {
            let tokens = login.tokens.expect("tokens");
            seen.logins
                .lock()
                .unwrap()
                .push((tokens.access_token, tokens.refresh_token));
        }
    }
}

/// Polls `done` until it holds, for at most `within`.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL server binaries (initdb, pg_ctl); run with --include-ignored, as CI does"]
async fn a_postgresql_outage_answers_database_unavailable_and_warden_recovers_with_nothing_half_written()
 {
    let postgres = PostgresCluster::start().await;
    let database = TestDatabase::Shared(postgres.url());
    let mut server = ServerProcess::start(&database, &server_env(&[])).await;
    let pid = server.pid();
    let client = server.client().await;

    let admin = client.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    assert!(admin.is_admin);
    let first = client.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let before_cut = first.tokens.unwrap();
    let mut chains = Vec::new();
    for _ in 0..3 {
        let tokens = client
            .login(ADMIN_EMAIL, PASSWORD)
            .await
            .unwrap()
            .tokens
            .unwrap();
        chains.push(Arc::new(Mutex::new(Chain {
            current: tokens.refresh_token,
            ambiguous: false,
            ended: false,
        })));
    }

    // Registrations, refreshes and logins keep coming across the cut.
    let seen = Arc::new(Observed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for name in ["left", "right"] {
        loops.push(tokio::spawn(register_loop(
            client.clone(),
            name,
            seen.clone(),
            stop.clone(),
        )));
    }
    for chain in &chains {
        loops.push(tokio::spawn(refresh_loop(
            client.clone(),
            chain.clone(),
            seen.clone(),
            stop.clone(),
        )));
    }
    loops.push(tokio::spawn(login_loop(
        client.clone(),
        seen.clone(),
        stop.clone(),
    )));
    assert!(
        eventually(Duration::from_secs(20), || seen
            .successes
            .load(Ordering::SeqCst)
            >= 30)
        .await,
        "the calls run before the cut"
    );

    postgres.stop().await;

    // Calls that need the database answer DATABASE_UNAVAILABLE, promptly.
    let started = Instant::now();
    let answer = bounded(client.get_me(&before_cut.access_token)).await;
    let status = answer.expect("GetMe answers").expect_err("no database");
    assert!(
        is_database_unavailable(&status),
        "GetMe: {}",
        describe(&status)
    );
    assert!(
        started.elapsed() < PROMPT,
        "GetMe answered promptly, took {:?}",
        started.elapsed()
    );
    let first_unavailable = Instant::now();
    let answer = bounded(client.validate(&before_cut.access_token)).await;
    let status = answer
        .expect("ValidateToken answers")
        .expect_err("no database");
    assert!(
        is_database_unavailable(&status),
        "ValidateToken: {}",
        describe(&status)
    );
    assert!(
        first_unavailable.elapsed() < PROMPT,
        "ValidateToken answered promptly, took {:?}",
        first_unavailable.elapsed()
    );
    // The public keys do not need it.
    assert_eq!(client.jwks_kids().await.unwrap().len(), 1);
    // Health follows the failing call (a probe bounded by the 1 s timeout),
    // not the next periodic probe, which may be up to 5 s away.
    assert!(
        client
            .wait_for_health(ServingStatus::NotServing, Duration::from_secs(3))
            .await,
        "NOT_SERVING within 3 s of a call meeting the dead database ({:?} after it)",
        first_unavailable.elapsed()
    );
    assert_eq!(
        client.health("liveness").await.unwrap(),
        ServingStatus::Serving,
        "liveness does not follow the database"
    );
    assert_eq!(http_get(server.http_addr, "/readyz").await.0, 503);
    assert_eq!(http_get(server.http_addr, "/healthz").await.0, 200);
    assert!(
        eventually(Duration::from_secs(20), || seen
            .unavailable
            .load(Ordering::SeqCst)
            >= 6)
        .await,
        "the loops meet the outage"
    );
    assert!(server.is_running(), "the process stays up");

    postgres.start_again().await;

    assert!(
        client
            .wait_for_health(ServingStatus::Serving, Duration::from_secs(30))
            .await,
        "SERVING again without a restart"
    );
    assert_eq!(http_get(server.http_addr, "/readyz").await.0, 200);
    let successes = seen.successes.load(Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(20), || seen
            .successes
            .load(Ordering::SeqCst)
            >= successes + 30)
        .await,
        "the calls succeed again"
    );
    stop.store(true, Ordering::SeqCst);
    for task in loops {
        task.await.unwrap();
    }
    assert!(server.is_running());
    assert_eq!(server.pid(), pid, "the same process");
    let unexpected = seen.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "only successes and DATABASE_UNAVAILABLE: {unexpected:#?}"
    );
    let slowest = *seen.slowest_unavailable.lock().unwrap();
    eprintln!(
        "across the outage: {} successes, {} DATABASE_UNAVAILABLE (slowest {slowest:?}), \
         {} registrations and {} logins acknowledged",
        seen.successes.load(Ordering::SeqCst),
        seen.unavailable.load(Ordering::SeqCst),
        seen.registered.lock().unwrap().len(),
        seen.logins.lock().unwrap().len(),
    );
    assert!(
        slowest < PROMPT,
        "slowest DATABASE_UNAVAILABLE took {slowest:?}"
    );

    // Nothing half written.
    let db = Database::connect(postgres.url()).await.unwrap();
    let registered = seen.registered.lock().unwrap().clone();
    assert!(!registered.is_empty());
    let stored: HashSet<String> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT email FROM users",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    for email in &registered {
        assert!(
            stored.contains(email),
            "acknowledged registration {email} is stored"
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sessions s WHERE NOT EXISTS \
             (SELECT 1 FROM refresh_tokens r WHERE r.session_id = s.id)"
        )
        .await,
        0,
        "every session has its refresh token"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sessions s WHERE s.revoked_at IS NULL AND \
             (SELECT count(*) FROM refresh_tokens r WHERE r.session_id = s.id AND r.rotated_at IS NULL) <> 1"
        )
        .await,
        0,
        "every live session has exactly one refresh token not yet exchanged"
    );
    db.close().await.ok();

    // Tokens handed out before or across the cut still work, or were
    // legitimately exchanged.
    assert!(client.get_me(&before_cut.access_token).await.is_ok());
    assert!(client.refresh(&before_cut.refresh_token).await.is_ok());
    for chain in &chains {
        let (current, ambiguous, ended) = {
            let c = chain.lock().unwrap();
            (c.current.clone(), c.ambiguous, c.ended)
        };
        if ended {
            assert!(ambiguous);
            continue;
        }
        match client.refresh(&current).await {
            Ok(_) => {}
            Err(status) if ambiguous && describe(&status).starts_with("REFRESH_TOKEN_REUSED") => {}
            Err(status) => panic!("the last acknowledged refresh token: {}", describe(&status)),
        }
    }
    let logins = seen.logins.lock().unwrap().clone();
    assert!(!logins.is_empty());
    for (access, refresh) in &logins {
        client
            .get_me(access)
            .await
            .expect("an acknowledged login's session is live");
        client
            .refresh(refresh)
            .await
            .expect("and its refresh token works");
    }
    client
        .register("after@example.com", PASSWORD)
        .await
        .unwrap();

    let (code, logs) = server.stop().await;
    assert_eq!(code, Some(0));
    assert!(!logs.iter().any(|l| l.contains("panicked")), "no panic");
}

/// A SQLite database of its own, whatever `WARDEN_TEST_DATABASE_URL` says:
/// disk and file behaviour is SQLite's.
fn sqlite_database() -> (tempfile::TempDir, TestDatabase, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.db");
    let database = TestDatabase::Shared(format!("sqlite://{}?mode=rwc", file.display()));
    (dir, database, file)
}

/// An admin and a session, written by a first server that then stops
/// cleanly (its write-ahead log folded back into the file).
async fn populated(database: &TestDatabase) -> (String, String) {
    let server = ServerProcess::start(database, &server_env(&[])).await;
    let client = server.client().await;
    client.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    client
        .register("pending@example.com", PASSWORD)
        .await
        .unwrap();
    let tokens = client
        .login(ADMIN_EMAIL, PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_eq!(server.stop().await.0, Some(0));
    (tokens.access_token, tokens.refresh_token)
}

/// What must keep working when the database only reads.
async fn reads_keep_working(client: &Client, access_token: &str) {
    let me = client.get_me(access_token).await.expect("GetMe reads");
    assert_eq!(me.email, ADMIN_EMAIL);
    assert!(
        client
            .validate(access_token)
            .await
            .expect("ValidateToken reads")
            .active
    );
    let users = client
        .list_users(access_token)
        .await
        .expect("ListUsers reads");
    assert!(users.len() >= 2);
    assert_eq!(client.jwks_kids().await.unwrap().len(), 1);
    assert_eq!(client.health("").await.unwrap(), ServingStatus::Serving);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_answers_database_unavailable_while_reads_keep_working() {
    let (_dir, database, file) = sqlite_database();
    let (access_token, _) = populated(&database).await;

    // Room for the shared-memory index (32 KiB) and a little log: the
    // process may not make any file larger than this, as on a disk that
    // is about to be full. Raised again later, as when space is freed.
    let size = std::fs::metadata(&file).unwrap().len();
    let limit = size.max(32 * 1024) + 64 * 1024;
    let mut server = ServerProcess::start_with(&database, &server_env(&[]), |command| {
        // SAFETY: only async-signal-safe setrlimit runs in the child.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    })
    .await;
    let client = server.client().await;

    let mut failure = None;
    for n in 0..500 {
        if let Err(status) = client
            .register(&format!("filler-{n}@example.com"), PASSWORD)
            .await
        {
            failure = Some(status);
            break;
        }
    }
    let status = failure.expect("the writes reach the limit");
    assert!(
        is_database_unavailable(&status),
        "Register: {}",
        describe(&status)
    );
    assert!(
        status.message().starts_with("Database unavailable: "),
        "{}",
        status.message()
    );
    let login = client.login(ADMIN_EMAIL, PASSWORD).await;
    assert_error(login, Code::Unavailable, "DATABASE_UNAVAILABLE");
    assert!(
        server.is_running(),
        "a write past the limit does not kill the process"
    );
    reads_keep_working(&client, &access_token).await;

    // Space again: writes work again, with no restart.
    let rlimit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let pid = libc::pid_t::try_from(server.pid()).unwrap();
    // SAFETY: plain system call on a child of this process.
    let raised = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &rlimit, std::ptr::null_mut()) };
    assert_eq!(raised, 0, "{}", std::io::Error::last_os_error());
    // On whichever pooled connection they run: the writes that failed
    // must not have left one of them unusable.
    for n in 0..8 {
        client
            .register(&format!("after-{n}@example.com"), PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("Register {n}: {}", describe(&s)));
        client
            .login(ADMIN_EMAIL, PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("Login {n}: {}", describe(&s)));
    }

    let (code, logs) = server.stop().await;
    assert_eq!(code, Some(0));
    assert!(
        logs.iter().any(|l| l.contains("file size limit")),
        "the limit is logged"
    );
    assert!(!logs.iter().any(|l| l.contains("panicked")), "no panic");
}

/// Waits until every open connection of the pool is back in it, so that
/// the next call takes one of them rather than opening another.
async fn settle(db: &DatabaseConnection) {
    let settled = eventually(Duration::from_secs(5), || {
        let (open, idle) = store::pool_stats(db);
        usize::try_from(open).unwrap() == idle
    })
    .await;
    assert!(settled, "the pool's connections come back");
}

async fn probe_ids(db: &DatabaseConnection) -> Vec<i64> {
    db.query_all_raw(Statement::from_string(
        DbBackend::Sqlite,
        "SELECT id FROM probe ORDER BY id",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get_by_index::<i64>(0).unwrap())
    .collect()
}

/// A failed write on a full disk (SQLITE_FULL, SQLITE_IOERR) makes SQLite
/// roll the whole transaction back by itself, as `INSERT OR ROLLBACK` does
/// here on purpose. The pool's driver still counts that transaction as
/// open: reused as it was, its connection would run later transactions as
/// savepoints inside one that is never committed, holding SQLite's locks.
/// This is the full-disk test's failure without the subprocess and the
/// file size limit, and without its luck: every connection of the pool is
/// taken in turn.
#[tokio::test]
async fn a_transaction_sqlite_ended_by_itself_leaves_later_writes_committed_and_the_lock_free() {
    let (_dir, database, _file) = sqlite_database();
    let db = store::connect(database.url(), Duration::from_secs(1))
        .await
        .unwrap();
    db.execute_unprepared("CREATE TABLE probe (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    settle(&db).await;

    let ended = store::serializable(&db, |txn| {
        Box::pin(async move {
            txn.execute_unprepared("INSERT INTO probe VALUES (1)")
                .await?;
            txn.execute_unprepared("INSERT OR ROLLBACK INTO probe VALUES (1)")
                .await?;
            Ok::<_, StoreError>(())
        })
    })
    .await;
    assert!(ended.is_err(), "the conflict fails the transaction");
    settle(&db).await;

    // Transactions that write and then fail are rolled back, whichever
    // connection they run on: the pool hands its idle connections out in
    // turn, and never holds more than 8.
    for round in 0..8 {
        let failed = store::serializable(&db, |txn| {
            Box::pin(async move {
                txn.execute_unprepared("INSERT INTO probe VALUES (2)")
                    .await
                    .map_err(StoreError::from)?;
                Err::<(), _>(Error::EmailTaken)
            })
        })
        .await;
        assert!(
            matches!(failed, Err(Error::EmailTaken)),
            "round {round}: {failed:?}"
        );
        settle(&db).await;
    }

    // Writes acknowledged afterwards, in a transaction or not, are
    // committed.
    store::serializable(&db, |txn| {
        Box::pin(async move {
            txn.execute_unprepared("INSERT INTO probe VALUES (3)")
                .await?;
            Ok::<_, StoreError>(())
        })
    })
    .await
    .unwrap();
    settle(&db).await;
    db.execute_unprepared("INSERT INTO probe VALUES (4)")
        .await
        .unwrap();
    settle(&db).await;

    let other = store::connect(database.url(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        probe_ids(&other).await,
        [3, 4],
        "what another connection sees"
    );
    // No connection of the pool holds SQLite's one write lock.
    other
        .execute_unprepared("INSERT INTO probe VALUES (5)")
        .await
        .expect("another connection writes");
    assert_eq!(probe_ids(&db).await, [3, 4, 5]);
    db.close().await.unwrap();
    other.close().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_read_only_database_answers_database_unavailable_while_reads_keep_working() {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, database, file) = sqlite_database();
    let (access_token, refresh_token) = populated(&database).await;

    // The file may no longer be written. Root writes any file, so as root
    // the server runs as `nobody`, to whom the directory belongs.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    const NOBODY: u32 = 65_534;
    if root {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut server = ServerProcess::start_with(&database, &server_env(&[]), |command| {
        if root {
            command.uid(NOBODY).gid(NOBODY);
        }
    })
    .await;
    let client = server.client().await;

    let status = client
        .register("new@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(
        is_database_unavailable(&status),
        "Register: {}",
        describe(&status)
    );
    assert_eq!(
        status.message(),
        "Database unavailable: the database is read-only"
    );
    assert_error(
        client.login(ADMIN_EMAIL, PASSWORD).await,
        Code::Unavailable,
        "DATABASE_UNAVAILABLE",
    );
    assert_error(
        client.refresh(&refresh_token).await,
        Code::Unavailable,
        "DATABASE_UNAVAILABLE",
    );
    reads_keep_working(&client, &access_token).await;
    assert!(server.is_running());

    let (code, logs) = server.stop().await;
    assert_eq!(code, Some(0));
    assert!(!logs.iter().any(|l| l.contains("panicked")), "no panic");
}

#[tokio::test]
async fn a_call_held_up_by_a_lock_answers_database_unavailable_after_the_database_timeout() {
    let app = spawn_app_with(|c| c.database_timeout = Duration::from_millis(500)).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    if app.db().get_database_backend() == DbBackend::Postgres {
        // The server bounds statements, and transactions left idle.
        for setting in ["statement_timeout", "idle_in_transaction_session_timeout"] {
            let row = app
                .db()
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("SHOW {setting}"),
                ))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                row.try_get_by_index::<String>(0).unwrap(),
                "500ms",
                "{setting}"
            );
        }
    }

    // Another client holds what the registration needs: the users table on
    // PostgreSQL, the one write lock on SQLite.
    let other = Database::connect(app.database.url()).await.unwrap();
    let held = match other.get_database_backend() {
        DbBackend::Sqlite => {
            let txn = other
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await
                .unwrap();
            txn.execute_unprepared("UPDATE users SET display_name = display_name")
                .await
                .unwrap();
            txn
        }
        _ => {
            let txn = other.begin().await.unwrap();
            txn.execute_unprepared("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            txn
        }
    };
    let started = Instant::now();
    let answer = timeout(ANSWER_BOUND, app.register("late@example.com", PASSWORD))
        .await
        .expect("an answer, not a hang until the request deadline");
    let waited = started.elapsed();
    assert_error(answer, Code::Unavailable, "DATABASE_UNAVAILABLE");
    // It waited for the lock until the 500 ms timeout, not less, not much more.
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(2000)).contains(&waited),
        "answered after {waited:?}"
    );

    held.rollback().await.unwrap();
    app.register("late@example.com", PASSWORD).await.unwrap();
    other.close().await.ok();
}

#[tokio::test]
async fn a_session_is_stored_with_its_refresh_token_or_not_at_all() {
    let app = spawn_app().await;
    let (admin, _) = app.admin_session().await;
    let taken = refresh_token::Entity::find()
        .one(app.db())
        .await
        .unwrap()
        .expect("the admin's refresh token");
    let now = Utc::now();
    let id = uuid::Uuid::now_v7();
    let session = Session {
        id,
        user_id: admin.id.parse().unwrap(),
        device: Device::default(),
        user_agent: String::new(),
        ip_address: String::new(),
        created_at: now,
        last_used_at: now,
        expires_at: now + chrono::TimeDelta::days(1),
        revoked_at: None,
        organization_id: None,
    };
    // The token cannot be stored (its hash is taken): the session must not
    // be stored without it.
    let token = RefreshRecord {
        token_hash: taken.token_hash,
        session_id: id,
        created_at: now,
        expires_at: now + chrono::TimeDelta::days(1),
        rotated_at: None,
    };
    let result = sessions::insert_with_refresh_token(app.db(), &session, &token).await;
    assert!(result.is_err());
    assert!(sessions::find(app.db(), id).await.unwrap().is_none());
}

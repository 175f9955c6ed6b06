use std::{net::SocketAddr, sync::Arc, time::Duration};

use chrono::Utc;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::oneshot,
};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt as _;
use warden::{
    app::Application,
    config::Config,
    domain::{clock::ManualClock, password::HashingCost},
    proto::v1::{
        self as pb, auth_client::AuthClient, organizations_client::OrganizationsClient,
        user_admin_client::UserAdminClient,
    },
    state::AppState,
};

/// A fresh database, removed again when dropped.
pub enum TestDatabase {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        admin_url: String,
        name: String,
    },
    /// Another test app's database, left alone when dropped.
    Shared(String),
}

impl TestDatabase {
    pub async fn create() -> Self {
        match std::env::var("WARDEN_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => Self::postgres(admin_url).await,
            _ => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("warden.db").display()
                );
                Self::Sqlite { url, _dir: dir }
            }
        }
    }

    async fn postgres(admin_url: String) -> Self {
        let name = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("WARDEN_TEST_DATABASE_URL is set but PostgreSQL cannot be reached: {e}")
        });
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        Self::Postgres {
            url,
            admin_url,
            name,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } | Self::Shared(url) => url,
        }
    }

    /// The same database, for a second server (a restart, a replica).
    pub fn share(&self) -> Self {
        Self::Shared(self.url().to_owned())
    }
}

/// `admin_url` with its database name replaced by `name`.
pub fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime, which cannot be blocked
            // on; a thread with its own runtime can.
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }
}

/// Cheap argon2 for tests: the cost does not change any behaviour tested.
pub fn cheap_hashing() -> HashingCost {
    HashingCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub state: Arc<AppState>,
    /// The calls tests make, on one connection; `TestApp` derefs to it.
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    // Declared last: dropped after the server was told to stop.
    pub database: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let database = TestDatabase::create().await;
    spawn_app_on(database, configure).await
}

pub async fn spawn_app_on(database: TestDatabase, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        http_listen: "127.0.0.1:0".parse().expect("address"),
        database_url: database.url().to_owned(),
        hashing: cheap_hashing(),
        ..Config::default()
    };
    configure(&mut config);
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = Application::build(config, clock.clone())
        .await
        .expect("application builds");
    let (addr, http_addr, state) = (app.grpc_addr(), app.http_addr(), app.state());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = Client::connect(addr).await;
    let app = TestApp {
        addr,
        http_addr,
        clock,
        state,
        client,
        stop: Some(stop),
        database,
    };
    wait_until_serving(app.addr).await;
    app
}

/// Health turns SERVING once the server's first database probe answered.
async fn wait_until_serving(addr: SocketAddr) {
    let mut health = HealthClient::new(channel(addr).await);
    for _ in 0..500 {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if matches!(
            status.map(|r| r.into_inner().status()),
            Ok(ServingStatus::Serving)
        ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never reported SERVING");
}

pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the test server")
}

impl std::ops::Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestApp {
    pub fn now(&self) -> chrono::DateTime<Utc> {
        use warden::domain::clock::Clock as _;
        self.clock.now()
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// A plain HTTP/1.0 GET on the side port: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http_addr, path).await
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("side port");
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .expect("status code");
    (status, body.to_owned())
}

/// A request with `authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {access_token}")
            .parse()
            .expect("metadata value"),
    );
    request
}

/// The binary, with no `WARDEN_*` setting inherited from the test's
/// environment.
pub fn warden() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WARDEN_") {
            command.env_remove(key);
        }
    }
    command.kill_on_drop(true);
    command
}

/// Settings for `warden serve` processes in tests: cheap argon2, as
/// `cheap_hashing` is for in-process servers.
pub const CHEAP_HASHING_ENV: [(&str, &str); 3] = [
    ("WARDEN_ARGON2_MEMORY_KIB", "64"),
    ("WARDEN_ARGON2_ITERATIONS", "1"),
    ("WARDEN_ARGON2_PARALLELISM", "1"),
];

/// `warden serve` as a separate process on free ports, with JSON logs
/// collected as they come.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    child: tokio::process::Child,
    logs: tokio::task::JoinHandle<Vec<String>>,
}

impl ServerProcess {
    pub async fn start(db: &TestDatabase, env: &[(&str, &str)]) -> Self {
        Self::start_with(db, env, |_| {}).await
    }

    /// `start`, with a last say on the command (limits, user).
    pub async fn start_with(
        db: &TestDatabase,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut tokio::process::Command),
    ) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut command = warden();
        command
            .arg("serve")
            .env("WARDEN_LISTEN", "127.0.0.1:0")
            .env("WARDEN_HTTP_LISTEN", "127.0.0.1:0")
            .env("WARDEN_DATABASE_URL", db.url())
            .env("WARDEN_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        customize(&mut command);
        let mut child = command.spawn().expect("warden serve starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut seen = Vec::new();
        let (addr, http_addr) = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read logs") {
                let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
                seen.push(line);
                let address = |field: &str| {
                    event
                        .get(field)
                        .and_then(|v| v.as_str())
                        .map(|a| a.parse::<SocketAddr>().expect("an address"))
                };
                if let (Some(grpc), Some(http)) = (address("grpc"), address("http")) {
                    return (grpc, http);
                }
            }
            panic!("the server exited before listening: {seen:?}");
        })
        .await
        .expect("the server starts");
        let logs = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line);
            }
            seen
        });
        wait_until_serving(addr).await;
        Self {
            addr,
            http_addr,
            child,
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Whether the process has not exited (or been killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// SIGTERM, then the exit code and every line the server logged.
    pub async fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().expect("running").to_string();
        let killed = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server stops")
            .expect("exit status");
        let logs = self.logs.await.expect("log reader");
        (status.code(), logs)
    }
}

pub const ADMIN_EMAIL: &str = "admin@example.com";
/// Long enough for the default policy, and not on the block-list.
pub const PASSWORD: &str = "correct horse battery staple";

/// Asserts the code and the `ErrorInfo` reason (domain `warden.v1`) of an error.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "code of {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "reason of {status:?}");
    assert_eq!(info.domain, "warden.v1");
    status
}

/// Asserts an INVALID_ARGUMENT-coded error whose BadRequest names `field`.
#[track_caller]
pub fn assert_bad_field<T: std::fmt::Debug>(
    result: Result<T, Status>,
    reason: &str,
    field: &str,
) -> Status {
    let status = assert_error(result, Code::InvalidArgument, reason);
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert!(
        bad.field_violations.iter().any(|v| v.field == field),
        "no violation of `{field}` in {:?}",
        bad.field_violations
    );
    status
}

#[test]
fn database_names_are_swapped_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
        "postgres://u:p@h/t1?sslmode=disable"
    );
}

/// A client of a warden server, in this process (`TestApp` derefs to one)
/// or another (`ServerProcess::client`): its services on one connection,
/// and the calls tests make. Nothing here expects success, so that tests of
/// a failing database use it too.
#[derive(Clone)]
pub struct Client {
    pub auth: AuthClient<Channel>,
    pub admin: UserAdminClient<Channel>,
    pub health: HealthClient<Channel>,
    pub orgs: OrganizationsClient<Channel>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let channel = channel(addr).await;
        Self {
            auth: AuthClient::new(channel.clone()),
            admin: UserAdminClient::new(channel.clone()),
            orgs: OrganizationsClient::new(channel.clone()),
            health: HealthClient::new(channel),
        }
    }

    pub async fn register(&self, email: &str, password: &str) -> Result<pb::User, Status> {
        self.auth
            .clone()
            .register(pb::RegisterRequest {
                email: email.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        self.auth
            .clone()
            .login(pb::LoginRequest {
                email: email.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Registers the first account (an approved admin) and logs it in.
    pub async fn admin_session(&self) -> (pb::User, String) {
        let user = self
            .register(ADMIN_EMAIL, PASSWORD)
            .await
            .expect("register admin");
        let login = self
            .login(ADMIN_EMAIL, PASSWORD)
            .await
            .expect("admin login");
        (user, login.tokens.expect("tokens").access_token)
    }

    /// GetMe with `authorization: Bearer <access_token>`.
    pub async fn get_me(&self, access_token: &str) -> Result<pb::User, Status> {
        self.get_me_with(Some(&format!("Bearer {access_token}")))
            .await
    }

    /// GetMe with this `authorization` header, or none.
    pub async fn get_me_with(&self, authorization: Option<&str>) -> Result<pb::User, Status> {
        let mut request = Request::new(pb::GetMeRequest {});
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("metadata value"));
        }
        self.auth
            .clone()
            .get_me(request)
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::TokenPair, Status> {
        self.auth
            .clone()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|r| r.into_inner().tokens.expect("tokens"))
    }

    pub async fn logout(&self, access_token: &str, all_sessions: bool) -> Result<i32, Status> {
        self.auth
            .clone()
            .logout(with_bearer(
                pb::LogoutRequest { all_sessions },
                access_token,
            ))
            .await
            .map(|r| r.into_inner().revoked_sessions)
    }

    pub async fn list_sessions(
        &self,
        access_token: &str,
        include_inactive: bool,
    ) -> Result<Vec<pb::Session>, Status> {
        self.auth
            .clone()
            .list_sessions(with_bearer(
                pb::ListSessionsRequest { include_inactive },
                access_token,
            ))
            .await
            .map(|r| r.into_inner().sessions)
    }

    pub async fn revoke_session(&self, access_token: &str, session_id: &str) -> Result<(), Status> {
        self.auth
            .clone()
            .revoke_session(with_bearer(
                pb::RevokeSessionRequest {
                    session_id: session_id.into(),
                },
                access_token,
            ))
            .await
            .map(|_| ())
    }

    pub async fn change_password(
        &self,
        access_token: &str,
        current: &str,
        new: &str,
    ) -> Result<i32, Status> {
        self.auth
            .clone()
            .change_password(with_bearer(
                pb::ChangePasswordRequest {
                    current_password: current.into(),
                    new_password: new.into(),
                },
                access_token,
            ))
            .await
            .map(|r| r.into_inner().revoked_sessions)
    }

    pub async fn update_me(
        &self,
        access_token: &str,
        request: pb::UpdateMeRequest,
    ) -> Result<pb::User, Status> {
        self.auth
            .clone()
            .update_me(with_bearer(request, access_token))
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }

    /// ValidateToken; it never fails for a bad token, only when the server
    /// cannot answer.
    pub async fn validate(&self, access_token: &str) -> Result<pb::ValidateTokenResponse, Status> {
        self.auth
            .clone()
            .validate_token(pb::ValidateTokenRequest {
                access_token: access_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// UserAdmin calls that send `access_token` with every call.
    pub fn as_admin(&self, access_token: &str) -> AsAdmin {
        AsAdmin {
            client: self.admin.clone(),
            token: access_token.to_owned(),
        }
    }

    pub async fn list_users(&self, access_token: &str) -> Result<Vec<pb::User>, Status> {
        self.admin
            .clone()
            .list_users(with_bearer(
                pb::ListUsersRequest {
                    page_size: 500,
                    ..Default::default()
                },
                access_token,
            ))
            .await
            .map(|r| r.into_inner().users)
    }

    /// The kids of the published JWK Set.
    pub async fn jwks_kids(&self) -> Result<Vec<String>, Status> {
        let json = self
            .auth
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await?
            .into_inner()
            .jwks_json;
        let jwks: serde_json::Value = serde_json::from_str(&json).expect("a JWK Set");
        Ok(jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect())
    }

    /// The health of `service` ("" for the server as a whole).
    pub async fn health(&self, service: &str) -> Result<ServingStatus, Status> {
        self.health
            .clone()
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status())
    }

    /// Polls health until it reports `wanted`, for at most `within`.
    pub async fn wait_for_health(&self, wanted: ServingStatus, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.health("").await.ok() == Some(wanted) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// The UserAdmin service of a `Client`, sending `token` with every call.
pub struct AsAdmin {
    pub client: UserAdminClient<Channel>,
    pub token: String,
}

impl AsAdmin {
    pub async fn list(
        &self,
        request: pb::ListUsersRequest,
    ) -> Result<pb::ListUsersResponse, Status> {
        self.client
            .clone()
            .list_users(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get(&self, user_id: &str) -> Result<pb::User, Status> {
        let request = pb::GetUserRequest {
            user_id: user_id.into(),
        };
        self.client
            .clone()
            .get_user(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().user.unwrap())
    }

    pub async fn create(&self, email: &str, is_admin: bool) -> Result<pb::User, Status> {
        let request = pb::CreateUserRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Created".into(),
            is_admin,
        };
        self.client
            .clone()
            .create_user(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().user.unwrap())
    }

    pub async fn update(&self, request: pb::UpdateUserRequest) -> Result<pb::User, Status> {
        self.client
            .clone()
            .update_user(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().user.unwrap())
    }

    pub async fn set_status(
        &self,
        user_id: &str,
        status: pb::UserStatus,
    ) -> Result<pb::User, Status> {
        self.update(pb::UpdateUserRequest {
            user_id: user_id.into(),
            status: Some(status.into()),
            ..Default::default()
        })
        .await
    }

    pub async fn set_admin(&self, user_id: &str, is_admin: bool) -> Result<pb::User, Status> {
        self.update(pb::UpdateUserRequest {
            user_id: user_id.into(),
            is_admin: Some(is_admin),
            ..Default::default()
        })
        .await
    }

    pub async fn delete(&self, user_id: &str) -> Result<(), Status> {
        let request = pb::DeleteUserRequest {
            user_id: user_id.into(),
        };
        self.client
            .clone()
            .delete_user(with_bearer(request, &self.token))
            .await
            .map(|_| ())
    }

    pub async fn reset_password(&self, user_id: &str, new_password: &str) -> Result<i32, Status> {
        let request = pb::ResetPasswordRequest {
            user_id: user_id.into(),
            new_password: new_password.into(),
        };
        self.client
            .clone()
            .reset_password(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().revoked_sessions)
    }

    pub async fn count_pending(&self) -> Result<i64, Status> {
        self.client
            .clone()
            .count_pending_users(with_bearer(pb::CountPendingUsersRequest {}, &self.token))
            .await
            .map(|r| r.into_inner().count)
    }

    pub async fn sessions(
        &self,
        user_id: &str,
        include_inactive: bool,
    ) -> Result<Vec<pb::Session>, Status> {
        let request = pb::ListUserSessionsRequest {
            user_id: user_id.into(),
            include_inactive,
        };
        self.client
            .clone()
            .list_user_sessions(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().sessions)
    }

    pub async fn revoke_sessions(&self, user_id: &str) -> Result<i32, Status> {
        let request = pb::RevokeUserSessionsRequest {
            user_id: user_id.into(),
        };
        self.client
            .clone()
            .revoke_user_sessions(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().revoked_sessions)
    }
}

/// Whether `status` is the contract's answer for a database that is not
/// there: UNAVAILABLE with reason DATABASE_UNAVAILABLE.
pub fn is_database_unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status
            .get_details_error_info()
            .is_some_and(|i| i.reason == "DATABASE_UNAVAILABLE" && i.domain == "warden.v1")
}

/// A `reason (code): message` line for assertion messages.
pub fn describe(status: &Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default();
    format!("{reason} ({:?}): {}", status.code(), status.message())
}

/// The single integer `sql` selects.
pub async fn count(db: &impl sea_orm::ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// The claims of an access token, read without verifying it.
pub fn claims(access_token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = access_token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

impl Client {
    /// Organizations calls that send `access_token` with every call.
    pub fn as_member(&self, access_token: &str) -> AsMember {
        AsMember {
            client: self.orgs.clone(),
            admin: self.admin.clone(),
            token: access_token.to_owned(),
        }
    }

    /// A new approved account made by an admin (no organisation of its own),
    /// logged in: (user id, access token).
    pub async fn approved_user(&self, admin_token: &str, email: &str) -> (String, String) {
        let user = self
            .as_admin(admin_token)
            .create(email, false)
            .await
            .expect("create user");
        let login = self.login(email, PASSWORD).await.expect("login");
        (user.id, login.tokens.expect("tokens").access_token)
    }
}

/// The Organizations service of a `Client`, sending `token` with every call.
pub struct AsMember {
    pub client: OrganizationsClient<Channel>,
    pub admin: UserAdminClient<Channel>,
    pub token: String,
}

impl AsMember {
    pub async fn create(&self, name: &str) -> Result<pb::Organization, Status> {
        let request = pb::CreateOrganizationRequest { name: name.into() };
        self.client
            .clone()
            .create_organization(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().organization.expect("organization"))
    }

    pub async fn mine(&self) -> Result<Vec<pb::Membership>, Status> {
        self.client
            .clone()
            .list_my_organizations(with_bearer(pb::ListMyOrganizationsRequest {}, &self.token))
            .await
            .map(|r| r.into_inner().memberships)
    }

    pub async fn get(&self, org: &str) -> Result<pb::GetOrganizationResponse, Status> {
        let request = pb::GetOrganizationRequest {
            organization_id: org.into(),
        };
        self.client
            .clone()
            .get_organization(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn rename(&self, org: &str, name: &str) -> Result<pb::Organization, Status> {
        let request = pb::UpdateOrganizationRequest {
            organization_id: org.into(),
            name: Some(name.into()),
        };
        self.client
            .clone()
            .update_organization(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().organization.expect("organization"))
    }

    pub async fn delete(&self, org: &str) -> Result<(), Status> {
        let request = pb::DeleteOrganizationRequest {
            organization_id: org.into(),
        };
        self.client
            .clone()
            .delete_organization(with_bearer(request, &self.token))
            .await
            .map(|_| ())
    }

    pub async fn members_page(
        &self,
        org: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListMembersResponse, Status> {
        let request = pb::ListMembersRequest {
            organization_id: org.into(),
            page_size,
            page_token: page_token.into(),
        };
        self.client
            .clone()
            .list_members(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn members(&self, org: &str) -> Result<Vec<pb::Member>, Status> {
        self.members_page(org, 500, "").await.map(|p| p.members)
    }

    pub async fn set_role(
        &self,
        org: &str,
        user: &str,
        role: pb::OrgRole,
    ) -> Result<pb::Member, Status> {
        self.update_member(pb::UpdateMemberRequest {
            organization_id: org.into(),
            user_id: user.into(),
            role: Some(role.into()),
            roles: None,
        })
        .await
    }

    pub async fn set_roles(
        &self,
        org: &str,
        user: &str,
        roles: &[&str],
    ) -> Result<pb::Member, Status> {
        self.update_member(pb::UpdateMemberRequest {
            organization_id: org.into(),
            user_id: user.into(),
            role: None,
            roles: Some(pb::RoleList {
                values: roles.iter().map(|r| (*r).to_owned()).collect(),
            }),
        })
        .await
    }

    pub async fn update_member(
        &self,
        request: pb::UpdateMemberRequest,
    ) -> Result<pb::Member, Status> {
        self.client
            .clone()
            .update_member(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().member.expect("member"))
    }

    pub async fn remove(&self, org: &str, user: &str) -> Result<(), Status> {
        let request = pb::RemoveMemberRequest {
            organization_id: org.into(),
            user_id: user.into(),
        };
        self.client
            .clone()
            .remove_member(with_bearer(request, &self.token))
            .await
            .map(|_| ())
    }

    /// CreateInvitation: (invitation, token).
    pub async fn invite(
        &self,
        org: &str,
        email: &str,
        role: pb::OrgRole,
    ) -> Result<(pb::Invitation, String), Status> {
        let request = pb::CreateInvitationRequest {
            organization_id: org.into(),
            email: email.into(),
            role: role.into(),
            roles: vec![],
        };
        self.client
            .clone()
            .create_invitation(with_bearer(request, &self.token))
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.invitation.expect("invitation"), r.invitation_token)
            })
    }

    pub async fn invitations(
        &self,
        org: &str,
        include_inactive: bool,
    ) -> Result<Vec<pb::Invitation>, Status> {
        let request = pb::ListInvitationsRequest {
            organization_id: org.into(),
            include_inactive,
        };
        self.client
            .clone()
            .list_invitations(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().invitations)
    }

    pub async fn revoke_invitation(&self, org: &str, invitation: &str) -> Result<(), Status> {
        let request = pb::RevokeInvitationRequest {
            organization_id: org.into(),
            invitation_id: invitation.into(),
        };
        self.client
            .clone()
            .revoke_invitation(with_bearer(request, &self.token))
            .await
            .map(|_| ())
    }

    pub async fn accept(&self, invitation_token: &str) -> Result<pb::Membership, Status> {
        let request = pb::AcceptInvitationRequest {
            invitation_token: invitation_token.into(),
        };
        self.client
            .clone()
            .accept_invitation(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().membership.expect("membership"))
    }

    pub async fn switch(&self, org: &str) -> Result<pb::TokenPair, Status> {
        let request = pb::SwitchOrganizationRequest {
            organization_id: org.into(),
        };
        self.client
            .clone()
            .switch_organization(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().tokens.expect("tokens"))
    }

    /// UserAdmin.AddMember (the token must be a platform admin's).
    pub async fn add_member(
        &self,
        org: &str,
        user: &str,
        role: pb::OrgRole,
    ) -> Result<pb::Member, Status> {
        let request = pb::AddMemberRequest {
            organization_id: org.into(),
            user_id: user.into(),
            role: role.into(),
            roles: vec![],
        };
        self.admin
            .clone()
            .add_member(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner().member.expect("member"))
    }

    /// UserAdmin.ListOrganizations (the token must be a platform admin's).
    pub async fn all_organizations(
        &self,
        request: pb::ListOrganizationsRequest,
    ) -> Result<pb::ListOrganizationsResponse, Status> {
        self.admin
            .clone()
            .list_organizations(with_bearer(request, &self.token))
            .await
            .map(|r| r.into_inner())
    }
}

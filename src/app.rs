//! Builds the service once (database, keys, hashing pool) and runs the gRPC
//! server and the HTTP side port until told to stop.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use ipnet::IpNet;
use sea_orm::DatabaseConnection;
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tonic::{service::interceptor::InterceptedService, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::{Config, TlsFiles},
    domain::{
        accounts::{self, AccountSettings, Accounts},
        clock::Clock,
        password::{Hasher, PasswordPolicy},
        tokens::{self, TokenService},
    },
    grpc::{auth::AuthApi, bearer::BearerCheck, observe::ObserveLayer, user_admin::UserAdminApi},
    http,
    limits::{self, ConnectionLimits, in_flight::InFlightLayer},
    metrics::Metrics,
    proto::{
        FILE_DESCRIPTOR_SET,
        v1::{auth_server::AuthServer, user_admin_server::UserAdminServer},
    },
    store,
};

/// The largest request warden decodes; a bigger one is refused from its
/// length prefix, before any work.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A health service name for liveness probes: SERVING for as long as the
/// process runs, whatever the database does, so that an outage does not get
/// every replica restarted.
pub const LIVENESS_SERVICE: &str = "liveness";

/// How often the database is pinged to keep health status current.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often it is pinged while it does not answer, so that the service is
/// back soon after the database.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two pings, however many calls meet a failing
/// database meanwhile.
const MIN_PROBE_GAP: Duration = Duration::from_millis(250);
/// How often ended sessions are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often expired login-failure counts are pruned: often, because an
/// attacker guessing emails creates them at request rate.
const FAILURE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// What every handler shares, built once at start.
pub struct AppState {
    pub db: DatabaseConnection,
    pub accounts: Accounts,
    pub tokens: Arc<TokenService>,
    pub clock: Arc<dyn Clock>,
    pub trusted_proxies: Vec<IpNet>,
    /// Whether the database answered the last health probe.
    pub ready: AtomicBool,
    /// Woken when a call meets an unavailable database, so that health
    /// follows at once rather than at the next periodic probe.
    pub database_trouble: Arc<Notify>,
    /// `WARDEN_DATABASE_TIMEOUT`: also the longest a health probe waits.
    pub database_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

pub struct Application {
    cors: Option<tower_http::cors::CorsLayer>,
    state: Arc<AppState>,
    grpc: TcpListener,
    http: TcpListener,
    tls: Option<TlsAcceptor>,
    grpc_limits: ConnectionLimits,
    http_limits: ConnectionLimits,
    max_requests_in_flight: usize,
    request_timeout: Duration,
    drain_timeout: Duration,
}

/// Concurrent calls on one HTTP/2 connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

/// Connects and applies pending migrations.
pub async fn open_database(url: &str, timeout: Duration) -> anyhow::Result<DatabaseConnection> {
    let db = store::connect(url, timeout)
        .await
        .context("cannot connect to the database")?;
    store::migrate(&db)
        .await
        .context("cannot migrate the database")?;
    Ok(db)
}

/// A fresh database on a server others can reach makes whoever registers
/// first its admin: say so at start, with the ways out.
async fn warn_if_first_registration_takes_over(
    config: &Config,
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    if config.first_user_admin
        && !config.listen.ip().to_canonical().is_loopback()
        && !accounts::any_account(db).await?
    {
        tracing::warn!(
            listen = %config.listen,
            "no account exists yet and WARDEN_LISTEN is not a loopback address: the first account \
             to register becomes an approved admin; run `warden create-admin` before clients can \
             connect, or set WARDEN_FIRST_USER_ADMIN=false"
        );
    }
    Ok(())
}

/// One hash at a time per core: more would only queue inside the OS.
pub fn hashing_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

impl Application {
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let db = open_database(&config.database_url, config.database_timeout).await?;
        let keys =
            tokens::load_or_create_keys(&db, clock.now(), config.key_encryption_key.as_ref())
                .await
                .context("cannot load signing keys")?;
        let tokens = Arc::new(
            TokenService::new(
                config.issuer.clone(),
                config.audience.clone(),
                config.access_token_ttl,
                &keys,
                config.key_encryption_key.clone(),
            )?
            .with_reload_interval(config.key_reload_interval, config.database_timeout),
        );
        // Before this replica signs: replicas retiring a key from now on
        // keep it for as long as this one may still sign with it.
        if let Err(e) = tokens.report_replica(&db, clock.now()).await {
            tracing::warn!(error = %e, "cannot report this replica's key reload interval");
        }
        let hasher = Hasher::new(config.hashing, hashing_concurrency())?;
        let settings = AccountSettings {
            policy: PasswordPolicy {
                min_chars: config.password_min_length,
            },
            refresh_ttl: config.refresh_token_ttl,
            session_max_lifetime: config.session_max_lifetime,
            failure_limit: config.login_failure_limit,
            lockout: config.login_lockout,
            first_user_admin: config.first_user_admin,
        };
        warn_if_first_registration_takes_over(&config, &db).await?;
        let accounts = Accounts::new(db.clone(), hasher, tokens.clone(), settings)?;
        let tls = match &config.tls {
            Some(files) => Some(tls_config(files).await?),
            None => None,
        };
        let grpc = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_listen))?;
        let state = Arc::new(AppState {
            db,
            accounts,
            tokens,
            clock,
            trusted_proxies: config.trusted_proxies,
            ready: AtomicBool::new(false),
            database_trouble: Arc::new(Notify::new()),
            database_timeout: config.database_timeout,
            metrics: Arc::new(Metrics::new().context("metrics")?),
        });
        Ok(Self {
            cors: cors_layer(&config.cors_origins)?,
            state,
            grpc,
            http,
            tls,
            grpc_limits: ConnectionLimits {
                max_connections: config.max_connections,
                handshake_timeout: config.handshake_timeout,
            },
            http_limits: ConnectionLimits {
                max_connections: config.http_max_connections,
                handshake_timeout: config.handshake_timeout,
            },
            max_requests_in_flight: config.max_requests_in_flight,
            request_timeout: config.request_timeout,
            drain_timeout: config.drain_timeout,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops
    /// accepting, and lets calls in flight finish (for at most the drain
    /// timeout); then stops the background loops and closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            cors,
            state,
            grpc,
            http,
            tls,
            grpc_limits,
            http_limits,
            max_requests_in_flight,
            request_timeout,
            drain_timeout,
        } = self;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::NotServing).await;
        reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;

        let (stop_tx, stop_rx) = watch::channel(false);
        let background = [
            tokio::spawn(watch_database(
                state.clone(),
                reporter.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(prune_periodically(state.clone(), stop_rx.clone())),
            tokio::spawn(reload_keys_periodically(state.clone(), stop_rx.clone())),
        ];
        tokio::spawn({
            let state = state.clone();
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: draining calls in flight");
                state.ready.store(false, Ordering::SeqCst);
                set_health(&reporter, ServingStatus::NotServing).await;
                let _ = stop_tx.send(true);
            }
        });

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let auth = InterceptedService::new(
            AuthServer::new(AuthApi::new(state.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            BearerCheck::optional(state.tokens.clone(), state.clock.clone()),
        );
        // Every UserAdmin RPC needs a good token: refused before any handler.
        let user_admin = InterceptedService::new(
            UserAdminServer::new(UserAdminApi::new(state.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            BearerCheck::required(state.tokens.clone(), state.clock.clone()),
        );

        // Outermost first: CORS answers browsers' preflights, grpc-web turns
        // browser calls into gRPC, every call is observed (refusals too),
        // then calls beyond the in-flight cap are refused. TCP keepalive and
        // TLS are set up by `limits::incoming`, not here.
        let router = Server::builder()
            .accept_http1(true)
            .layer(tower::util::option_layer(cors))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(ObserveLayer::new(
                state.metrics.clone(),
                state.database_trouble.clone(),
            ))
            .layer(InFlightLayer::new(max_requests_in_flight))
            .timeout(request_timeout)
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .add_service(user_admin);
        // One server either way; the connection types differ (and with them
        // the peer information handlers find: TcpConnectInfo, or
        // TlsConnectInfo<TcpConnectInfo>).
        let grpc_server: store::BoxFuture<'static, Result<(), tonic::transport::Error>> = match tls
        {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                limits::incoming(grpc, grpc_limits, tls),
                stopped(stop_rx.clone()),
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(
                limits::incoming(grpc, grpc_limits, limits::Plain),
                stopped(stop_rx.clone()),
            )),
        };
        let http_server = http::serve(
            http,
            http::router(state.clone()),
            http_limits,
            stopped(stop_rx.clone()),
        );

        let servers = async { tokio::join!(grpc_server, http_server) };
        let drain_limit = async {
            stopped(stop_rx.clone()).await;
            tokio::time::sleep(drain_timeout).await;
        };
        let outcome = tokio::select! {
            results = servers => Some(results),
            () = drain_limit => None,
        };
        if outcome.is_none() {
            // Calls still open are cut off: a deploy must not hang on a
            // client that never hangs up.
            tracing::warn!(
                drain_timeout = %humantime::format_duration(drain_timeout),
                "calls still in flight after the drain timeout; stopping anyway"
            );
        }
        // Also when a server failed and no signal came.
        let _ = stop_tx.send(true);
        let limit = state.database_timeout * 2;
        finish_background(background, limit).await;
        close_database(&state.db, limit).await;
        if let Some((grpc_result, ())) = outcome {
            grpc_result.context("gRPC server")?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Waits for the background loops, which stop between two rounds once told
/// to: a prune or a key reload under way finishes rather than being cut off
/// mid-transaction, and none of them touches the database once it is
/// closed. Each round is a few statements, each bounded by the database
/// timeout; one that still runs at `limit` is cancelled (its transaction
/// rolls back).
async fn finish_background(tasks: impl IntoIterator<Item = JoinHandle<()>>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    for task in tasks {
        let cancel = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a background task failed"),
            Err(_) => {
                cancel.abort();
                tracing::warn!(
                    limit = %humantime::format_duration(limit),
                    "a background task did not stop in time; cancelled"
                );
            }
        }
    }
}

/// Closes the pool once nothing needs it any more. On SQLite this is what
/// folds the write-ahead log back into the database file and removes it,
/// so that after a stop the file alone is the whole database; a process
/// that exits with the pool open leaves recent writes in `-wal`, and a copy
/// of the file without it is incomplete or corrupt. Waits for connections
/// still checked out (calls cut off by the drain timeout) for at most
/// `limit`.
async fn close_database(db: &DatabaseConnection, limit: Duration) {
    match tokio::time::timeout(limit, store::close(db)).await {
        Ok(Ok(store::Closed::Plain)) => tracing::info!("database closed"),
        Ok(Ok(store::Closed::LogFoldedIn)) => {
            tracing::info!("database closed; its write-ahead log is folded into the file");
        }
        Ok(Ok(store::Closed::LogRemains { wal, reason })) => tracing::warn!(
            wal = %wal.display(),
            reason,
            "database closed, but its write-ahead log remains: the database file alone is not \
             a complete copy (use `warden backup`)"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the database failed"),
        Err(_) => tracing::warn!(
            limit = %humantime::format_duration(limit),
            "the database did not close in time (connections still in use); \
             its write-ahead log may remain"
        ),
    }
}

/// Reflection over warden's protos (with the `google.rpc` error details, so
/// that grpcurl can print the `ErrorInfo` and `BadRequest` of an error) and
/// health's.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Resolves once the stop signal has been sent.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The services whose status health reports: the server as a whole ("") and
/// each warden service.
fn health_names() -> [&'static str; 3] {
    [
        "",
        <AuthServer<AuthApi> as tonic::server::NamedService>::NAME,
        <UserAdminServer<UserAdminApi> as tonic::server::NamedService>::NAME,
    ]
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in health_names() {
        reporter.set_service_status(name, status).await;
    }
}

/// SERVING while the database answers, NOT_SERVING while it does not. It
/// is asked every `HEALTH_INTERVAL`, every `RECOVERY_INTERVAL` while it is
/// down, and at once when a call met it unavailable.
async fn watch_database(
    state: Arc<AppState>,
    reporter: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let probed_at = tokio::time::Instant::now();
        let up = tokio::time::timeout(state.database_timeout, store::ping(&state.db))
            .await
            .is_ok_and(|r| r.is_ok());
        if last != Some(up) && !*stop.borrow() {
            state.ready.store(up, Ordering::SeqCst);
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&reporter, status).await;
            if up {
                tracing::info!("database answers: serving");
            } else {
                tracing::warn!("database does not answer: not serving");
            }
            last = Some(up);
        }
        let interval = if up {
            HEALTH_INTERVAL
        } else {
            RECOVERY_INTERVAL
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = state.database_trouble.notified() => {
                tokio::time::sleep_until(probed_at + MIN_PROBE_GAP).await;
            }
            _ = stop.changed() => {}
        }
    }
}

/// Deletes ended sessions now and then, so the tables do not grow without
/// bound. Every replica may do it; the deletes are idempotent.
async fn prune_periodically(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut sessions_due = tokio::time::Instant::now();
    loop {
        let now = state.clock.now();
        if tokio::time::Instant::now() >= sessions_due {
            match state.accounts.prune(now).await {
                Ok((0, 0)) => {}
                Ok((sessions, tokens)) => tracing::info!(sessions, tokens, "pruned ended sessions"),
                Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
            }
            sessions_due += PRUNE_INTERVAL;
        }
        match state.accounts.prune_login_failures(now).await {
            Ok(0) => {}
            Ok(entries) => tracing::debug!(entries, "pruned expired login failure counts"),
            Err(e) => tracing::warn!(error = %e, "pruning login failures failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(FAILURE_PRUNE_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Picks up keys rotated by `warden keys rotate` (or on another replica)
/// and retires keys no live token needs.
async fn reload_keys_periodically(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.tokens.reload_interval()) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = state.tokens.reload(&state.db, state.clock.now()).await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }
}

/// CORS for grpc-web from browsers: exact origins may send credentials; a
/// wildcard never does.
fn cors_layer(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use ::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
        "x-request-id",
    ]
    .map(HeaderName::from_static);
    let expose_headers = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ]
    .map(HeaderName::from_static);
    let layer = CorsLayer::new()
        .allow_methods([Method::POST])
        .allow_headers(allow_headers)
        .expose_headers(expose_headers)
        .max_age(Duration::from_secs(86_400));
    if origins.iter().any(|o| o == "*") {
        return Ok(Some(
            layer
                .allow_origin(AllowOrigin::any())
                .allow_credentials(false),
        ));
    }
    let list = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS origin {o}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(
        layer
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true),
    ))
}

/// The server's TLS: its certificate chain and key, and with a client CA,
/// mTLS (a client without a certificate that CA signed is refused). ALPN
/// offers h2 only, as tonic's own TLS did.
async fn tls_config(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use tokio_rustls::rustls::{
        RootCertStore, ServerConfig,
        crypto::ring::default_provider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::WebPkiClientVerifier,
    };
    let read = |path: std::path::PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let certificates = |pem: &[u8], path: &std::path::Path| {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty());
        certs.with_context(|| format!("{} holds no PEM certificate", path.display()))
    };
    let chain = certificates(&read(files.cert.clone()).await?, &files.cert)?;
    // The parser's error can quote a line of the file: not for a key.
    let key = PrivateKeyDer::from_pem_slice(&read(files.key.clone()).await?)
        .ok()
        .with_context(|| format!("{} holds no PEM private key", files.key.display()))?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS configuration")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _) =
                roots.add_parsable_certificates(certificates(&read(path.clone()).await?, path)?);
            anyhow::ensure!(
                added > 0,
                "{} holds no usable CA certificate",
                path.display()
            );
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("TLS client CA")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("TLS certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A prune or key reload under way when the stop comes must end by
    /// itself, not be cut off mid-transaction, before the database closes.
    #[tokio::test]
    async fn a_background_round_under_way_is_waited_for_not_cut_off() {
        let finished = Arc::new(AtomicUsize::new(0));
        let round = |finished: Arc<AtomicUsize>| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            })
        };
        let tasks = [
            round(finished.clone()),
            round(finished.clone()),
            round(finished.clone()),
        ];
        finish_background(tasks, Duration::from_secs(30)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }

    /// One that hangs must not keep the process from stopping.
    #[tokio::test]
    async fn a_background_task_that_hangs_is_cancelled_at_the_limit() {
        let hung = tokio::spawn(std::future::pending::<()>());
        let probe = hung.abort_handle();
        let started = tokio::time::Instant::now();
        let tasks = [hung, tokio::spawn(async {}), tokio::spawn(async {})];
        finish_background(tasks, Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::task::yield_now().await;
        assert!(probe.is_finished(), "cancelled");
    }
}

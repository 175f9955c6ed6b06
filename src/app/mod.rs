//! Builds the service once (database, keys, hashing pool) and runs the gRPC
//! server and the HTTP side port until told to stop.
//!
//! - `background`: the loops beside the servers, and how they stop.
//! - `tls`, `cors`: the gRPC port's TLS acceptor and grpc-web CORS.
//! - `preflight`: the checks of the settings, before anything is touched.
//! - What the handlers share is `crate::state::AppState`, so that neither
//!   `grpc` nor `http` depends on this module.

mod background;
mod cors;
mod preflight;
mod tls;

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
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
};
use tokio_rustls::TlsAcceptor;
use tonic::{service::interceptor::InterceptedService, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::Config,
    domain::{
        accounts::{self, AccountSettings, Accounts},
        clock::Clock,
        email::sender::{Deliver, MailSender},
        password::{Hasher, PasswordPolicy},
        tokens::{self, TokenService},
    },
    grpc::{
        auth::AuthApi, bearer::BearerCheck, observe::ObserveLayer, organizations::OrganizationsApi,
        user_admin::UserAdminApi,
    },
    http,
    limits::{self, ConnectionLimits, in_flight::InFlightLayer},
    metrics::Metrics,
    proto::{
        FILE_DESCRIPTOR_SET,
        v1::{
            auth_server::AuthServer, organizations_server::OrganizationsServer,
            user_admin_server::UserAdminServer,
        },
    },
    state::AppState,
    store::{self, Db},
};

use background::{
    close_database, finish_background, prune_periodically, reload_keys_periodically,
    send_mail_periodically, watch_database,
};
pub use preflight::{Prepared, SettingError, preflight};

/// The largest request warden decodes; a bigger one is refused from its
/// length prefix, before any work.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A health service name for liveness probes: SERVING for as long as the
/// process runs, whatever the database does, so that an outage does not get
/// every replica restarted.
pub const LIVENESS_SERVICE: &str = "liveness";

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
pub async fn open_database(url: &str, timeout: Duration) -> anyhow::Result<Db> {
    let db = store::open(url, timeout).await?;
    store::migrate(&db)
        .await
        .context("cannot migrate the database")?;
    Ok(db)
}

/// A fresh database on a server others can reach makes whoever registers
/// first its admin: say so at start, with the ways out.
async fn warn_if_first_registration_takes_over(config: &Config, db: &Db) -> anyhow::Result<()> {
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
    /// `preflight`, then `build_prepared`.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let prepared = preflight(&config).await?;
        Self::build_prepared(config, prepared, clock).await
    }

    /// Opens (and migrates) the database, loads the keys, binds the ports;
    /// `prepared` is what `preflight` made of the same `config`.
    pub async fn build_prepared(
        config: Config,
        prepared: Prepared,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let Prepared { tls, cors, mailer } = prepared;
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
            invitation_ttl: config.invitation_ttl,
            email: config.mail.email_settings(),
        };
        warn_if_first_registration_takes_over(&config, &db).await?;
        let accounts = Accounts::new(db.clone(), hasher, tokens.clone(), settings)?;
        let grpc = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_listen))?;
        let state = Arc::new(AppState {
            db: db.clone(),
            accounts,
            tokens,
            clock: clock.clone(),
            trusted_proxies: config.trusted_proxies,
            ready: AtomicBool::new(false),
            database_trouble: Arc::new(Notify::new()),
            database_timeout: config.database_timeout,
            metrics: Arc::new(Metrics::new().context("metrics")?),
            mail: mailer.map(|mailer| {
                Arc::new(MailSender::new(
                    db.clone(),
                    mailer as Arc<dyn Deliver>,
                    clock.clone(),
                ))
            }),
        });
        Ok(Self {
            cors,
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
        let mut background = vec![
            tokio::spawn(watch_database(
                state.clone(),
                reporter.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(prune_periodically(state.clone(), stop_rx.clone())),
            tokio::spawn(reload_keys_periodically(state.clone(), stop_rx.clone())),
        ];
        if let Some(sender) = state.mail.clone() {
            background.push(tokio::spawn(send_mail_periodically(
                state.clone(),
                sender,
                stop_rx.clone(),
            )));
        }
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
        // Every Organizations RPC needs a good token too.
        let organizations = InterceptedService::new(
            OrganizationsServer::new(OrganizationsApi::new(state.clone()))
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
            .add_service(user_admin)
            .add_service(organizations);
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
fn health_names() -> [&'static str; 4] {
    [
        "",
        <AuthServer<AuthApi> as tonic::server::NamedService>::NAME,
        <UserAdminServer<UserAdminApi> as tonic::server::NamedService>::NAME,
        <OrganizationsServer<OrganizationsApi> as tonic::server::NamedService>::NAME,
    ]
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in health_names() {
        reporter.set_service_status(name, status).await;
    }
}

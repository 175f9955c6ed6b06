//! The plain-HTTP side port: what Kubernetes probes and JWT libraries expect.

use std::{
    future::Future,
    pin::pin,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_stream::StreamExt as _;

use crate::{
    limits::{self, ConnectionLimits, Guarded, Plain},
    state::AppState,
};

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish. At most `limits.max_connections` are open
/// at a time; each must send its request head within the handshake
/// timeout of being accepted, and each later head on a kept-alive
/// connection within the same time of the previous answer, so that idle
/// or trickling sockets cannot hold the slots that probes need.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let header_timeout = limits::bounded(limits.handshake_timeout);
    let mut incoming = limits::incoming(listener, limits, Plain);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            next = incoming.next() => match next {
                Some(Ok(connection)) => {
                    connections.spawn(serve_connection(
                        connection,
                        router.clone(),
                        header_timeout,
                        stopping.clone(),
                    ));
                }
                Some(Err(_)) => {}
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Stop accepting: the listener closes with the stream.
    drop(incoming);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    connection: Guarded<tokio::net::TcpStream>,
    router: Router,
    header_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut connection =
        pin!(builder.serve_connection(TokioIo::new(connection), TowerToHyperService::new(router)));
    let finished = tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "side port connection ended with an error");
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready while the database answers and the server is not shutting down.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Prometheus text format; gauges read at scrape time.
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let m = &state.metrics;
    let hasher = state.accounts.hasher();
    m.hashing_waiting.set(gauge(hasher.queue_depth()));
    m.hashing_running.set(gauge(hasher.in_flight()));
    let (open, idle) = crate::store::pool_stats(&state.db);
    m.db_connections
        .with_label_values(&["idle"])
        .set(gauge(idle));
    m.db_connections
        .with_label_values(&["in_use"])
        .set(i64::from(open).saturating_sub(gauge(idle)));
    if m.session_count_due() {
        match state.accounts.count_live_sessions(state.clock.now()).await {
            Ok(n) => m.active_sessions.set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => tracing::warn!(error = %e, "cannot count sessions"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn jwks(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        state.tokens.jwks_json(),
    )
}

//! The plain-HTTP side port: what Kubernetes probes and JWT libraries expect.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::app::AppState;

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

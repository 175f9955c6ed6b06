//! One span per RPC (method, request id, peer, status, latency), the
//! `x-request-id` echoed back, and the request metrics: a tower layer around
//! every gRPC service.

use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Request, Response};
use tokio::sync::Notify;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::{metrics::Metrics, store::BoxFuture};

pub const REQUEST_ID: &str = "x-request-id";
const MAX_REQUEST_ID_BYTES: usize = 128;

#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    unavailable: Arc<Notify>,
}

impl ObserveLayer {
    /// `unavailable` is woken by every call answered UNAVAILABLE, which in
    /// warden means the database did not serve it.
    pub fn new(metrics: Arc<Metrics>, unavailable: Arc<Notify>) -> Self {
        Self {
            metrics,
            unavailable,
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            unavailable: self.unavailable.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
    unavailable: Arc<Notify>,
}

/// The caller's request id if it is a sane one (visible ASCII, not too
/// long), else a new one.
fn request_id<B>(request: &Request<B>) -> HeaderValue {
    request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_BYTES
                && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

fn peer<B>(request: &Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr)
        })
}

/// A unary call's status travels in the response headers when it failed
/// (trailers-only) and in the trailers when it succeeded.
fn status_code<B>(response: &Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

impl<S, B, R> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service is this one; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let unavailable = self.unavailable.clone();

        let id = request_id(&request);
        request.headers_mut().insert(REQUEST_ID, id.clone());
        let method = metrics.method_label(request.uri().path()).to_owned();
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            request_id = %id.to_str().unwrap_or_default(),
            peer = tracing::field::Empty,
        );
        if let Some(peer) = peer(&request) {
            span.record("peer", tracing::field::display(peer));
        }
        let started = Instant::now();
        Box::pin(async move {
            let result = inner.call(request).instrument(span.clone()).await;
            let elapsed = started.elapsed();
            let mut response = result?;
            let code = status_code(&response);
            metrics.observe_call(&method, code, elapsed);
            if code == tonic::Code::Unavailable {
                unavailable.notify_one();
            }
            response.headers_mut().insert(REQUEST_ID, id);
            let _entered = span.enter();
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            let status = crate::metrics::code_name(code);
            // Successes are the bulk of traffic: visible at debug level.
            match code {
                tonic::Code::Ok => tracing::debug!(status, latency_ms, "rpc finished"),
                tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
                    tracing::error!(status, latency_ms, "rpc finished")
                }
                _ => tracing::info!(status, latency_ms, "rpc finished"),
            }
            Ok(response)
        })
    }
}

//! A cap on gRPC calls in flight across all connections: without one, 1,024
//! connections × 200 streams × a 64 KiB request each could be decoded at
//! once. A call beyond the cap is answered at once, not queued, with
//! RESOURCE_EXHAUSTED / OVERLOADED and a RetryInfo, like a full hashing
//! queue: the server is busy, whoever asks.
//!
//! Health checks have places of their own, so that probes still answer
//! while the cap is reached (a replica that is busy is not dead), and a
//! flood of probes cannot take the places of real calls.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::{domain::error::Error, store::BoxFuture};

/// The places kept for `grpc.health.v1.Health` calls.
const HEALTH_PLACES: usize = 32;
/// What a refused client is told to wait: calls are short, so places free
/// up quickly.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct InFlightLayer {
    calls: Arc<Semaphore>,
    health: Arc<Semaphore>,
}

impl InFlightLayer {
    /// At most `max` calls (health checks not counted) at a time.
    pub fn new(max: usize) -> Self {
        Self {
            calls: Arc::new(Semaphore::new(max.max(1))),
            health: Arc::new(Semaphore::new(HEALTH_PLACES)),
        }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            calls: self.calls.clone(),
            health: self.health.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    calls: Arc<Semaphore>,
    health: Arc<Semaphore>,
}

impl<S, B, R> Service<Request<B>> for InFlight<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let places = if request.uri().path().starts_with(HEALTH_PREFIX) {
            &self.health
        } else {
            &self.calls
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            let refusal = tonic::Status::from(Error::Overloaded {
                retry_after: RETRY_AFTER,
            });
            return Box::pin(std::future::ready(Ok(refusal.into_http())));
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            // Held until the answer's headers are ready: for a unary call,
            // until its handler has finished, and a stream (reflection,
            // health's Watch) does not hold a place for its whole life.
            let response = answer.await;
            drop(place);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;
    use tonic_types::StatusExt as _;

    /// A service whose calls finish when the test says so.
    #[derive(Clone)]
    struct Held(Arc<std::sync::Mutex<Vec<oneshot::Sender<()>>>>);

    impl Service<Request<()>> for Held {
        type Response = Response<String>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<'static, Result<Response<String>, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let (tx, rx) = oneshot::channel();
            self.0.lock().unwrap().push(tx);
            Box::pin(async move {
                let _ = rx.await;
                Ok(Response::new("served".to_owned()))
            })
        }
    }

    fn request(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    fn reason(response: &Response<String>) -> Option<String> {
        let status = tonic::Status::from_header_map(response.headers())?;
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(RETRY_AFTER)
        );
        Some(status.get_details_error_info()?.reason)
    }

    #[tokio::test]
    async fn a_call_beyond_the_cap_is_refused_at_once_and_served_once_a_place_frees() {
        let held = Held(Default::default());
        let mut service = InFlightLayer::new(2).layer(held.clone());
        let first = service.call(request("/warden.v1.Auth/Login"));
        let second = service.call(request("/warden.v1.Auth/Login"));
        let refused = service
            .call(request("/warden.v1.Auth/GetJwks"))
            .await
            .unwrap();
        assert_eq!(reason(&refused).as_deref(), Some("OVERLOADED"));
        assert_eq!(
            held.0.lock().unwrap().len(),
            2,
            "the refused call never ran"
        );

        held.0.lock().unwrap().remove(0).send(()).unwrap();
        assert_eq!(first.await.unwrap().body(), "served");
        let third = service.call(request("/warden.v1.Auth/GetJwks"));
        for finish in held.0.lock().unwrap().drain(..) {
            finish.send(()).unwrap();
        }
        assert_eq!(second.await.unwrap().body(), "served");
        assert_eq!(third.await.unwrap().body(), "served");
    }

    #[tokio::test]
    async fn health_checks_are_answered_while_the_cap_is_reached() {
        let held = Held(Default::default());
        let mut service = InFlightLayer::new(1).layer(held.clone());
        let _busy = service.call(request("/warden.v1.Auth/Login"));
        let refused = service
            .call(request("/warden.v1.Auth/GetMe"))
            .await
            .unwrap();
        assert!(reason(&refused).is_some());
        let health = service.call(request("/grpc.health.v1.Health/Check"));
        for finish in held.0.lock().unwrap().drain(..) {
            finish.send(()).unwrap();
        }
        assert_eq!(health.await.unwrap().body(), "served");
    }
}

//! Connections to the server under test, and what a failed call is counted as.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt as _;

/// One HTTP/2 connection: every `Endpoint::connect` opens its own.
pub async fn connect(addr: SocketAddr) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// `n` separate connections, over which the workers are spread round-robin.
pub async fn connections(addr: SocketAddr, n: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        channels.push(connect(addr).await?);
    }
    Ok(channels)
}

/// How many connections `concurrency` calls in flight are spread over when
/// not told: the server allows 200 streams per connection, and on a 2-core
/// machine two connections let both client threads and both server threads
/// work at once.
pub fn default_connections(concurrency: usize) -> usize {
    concurrency.div_ceil(100).max(2).min(concurrency.max(1))
}

/// `authorization: Bearer <token>`, built once and cloned per call (a
/// reference-count increment, no copy).
pub fn bearer(token: &str) -> Result<MetadataValue<Ascii>> {
    format!("Bearer {token}")
        .parse()
        .context("an access token that is not valid metadata")
}

/// What a failed call is counted as: its gRPC code and, when the server sent
/// one, the `ErrorInfo` reason. A call that succeeded at the transport but
/// answered wrongly (an inactive token, NOT_SERVING) is `OK` with a reason of
/// the load generator's own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    pub code: &'static str,
    pub reason: String,
}

impl Failure {
    pub fn wrong_answer(reason: &str) -> Self {
        Self {
            code: "OK",
            reason: reason.to_owned(),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_default();
        Self {
            code: code_name(status.code()),
            reason,
        }
    }
}

/// The canonical upper-case name of a gRPC code, as API.md writes them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Polls `grpc.health.v1.Health/Check` for the whole server every `every`
/// until it answers SERVING, and returns when it did. A refused connection
/// is retried; `alive` is asked between polls so that a server that died is
/// reported at once instead of at the deadline.
pub async fn wait_serving(
    addr: SocketAddr,
    deadline: Instant,
    every: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Instant> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2));
    let mut client: Option<HealthClient<Channel>> = None;
    let mut last_error = String::from("no answer yet");
    loop {
        alive()?;
        if client.is_none() {
            match endpoint.connect().await {
                Ok(channel) => client = Some(HealthClient::new(channel)),
                Err(e) => last_error = e.to_string(),
            }
        }
        if let Some(health) = client.as_mut() {
            match health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                    return Ok(Instant::now());
                }
                Ok(answer) => last_error = format!("status {}", answer.get_ref().status),
                Err(status) => {
                    last_error = status.to_string();
                    client = None;
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("{addr} did not report SERVING in time (last: {last_error})");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_counted_by_code_and_error_info_reason() {
        let status = tonic_types::ErrorDetails::with_error_info(
            "RATE_LIMITED",
            "warden.v1",
            std::collections::HashMap::new(),
        );
        let status = Status::with_error_details(Code::ResourceExhausted, "slow down", status);
        let failure = Failure::from(status);
        assert_eq!(failure.code, "RESOURCE_EXHAUSTED");
        assert_eq!(failure.reason, "RATE_LIMITED");
    }

    #[test]
    fn a_failure_without_details_has_an_empty_reason() {
        let failure = Failure::from(Status::unavailable("down"));
        assert_eq!(failure.code, "UNAVAILABLE");
        assert_eq!(failure.reason, "");
    }

    #[test]
    fn connections_default_to_at_least_two_and_one_per_hundred_calls() {
        assert_eq!(default_connections(1), 1);
        assert_eq!(default_connections(64), 2);
        assert_eq!(default_connections(1000), 10);
    }
}

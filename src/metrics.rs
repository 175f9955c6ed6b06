//! Prometheus metrics, served on the side port's `/metrics`.

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::{
    Encoder as _, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use prost::Message as _;

use crate::{
    domain::{email::sender::Round, types::MailKind},
    proto::FILE_DESCRIPTOR_SET,
};

/// The label for a path that names no RPC of ours: random paths must not
/// make new time series.
pub const UNKNOWN_METHOD: &str = "unknown";

pub struct Metrics {
    registry: Registry,
    methods: HashSet<String>,
    requests: IntCounterVec,
    latency: HistogramVec,
    logins: IntCounterVec,
    pub hashing_waiting: IntGauge,
    pub hashing_running: IntGauge,
    pub db_connections: IntGaugeVec,
    pub active_sessions: IntGauge,
    mail: MailMetrics,
    /// When active sessions were last counted: the count is a database
    /// query, done at most every `SESSION_COUNT_TTL`.
    sessions_counted: Mutex<Option<Instant>>,
}

const SESSION_COUNT_TTL: Duration = Duration::from_secs(15);

/// The outbox's sender: deliveries by kind and outcome, and the backlog.
struct MailMetrics {
    sent: IntCounterVec,
    retried: IntCounterVec,
    failed: IntCounterVec,
    queued: IntGauge,
    oldest_age: Gauge,
}

impl MailMetrics {
    fn new() -> prometheus::Result<Self> {
        let by_kind = |name: &str, help: &str| {
            let counter = IntCounterVec::new(Opts::new(name, help), &["kind"])?;
            // Every kind from the start, so that a rate has a zero to start from.
            for kind in MailKind::ALL {
                counter.with_label_values(&[kind.as_str()]);
            }
            Ok::<_, prometheus::Error>(counter)
        };
        Ok(Self {
            sent: by_kind(
                "warden_mail_sent_total",
                "Mails the relay accepted, by kind",
            )?,
            retried: by_kind(
                "warden_mail_retried_total",
                "Failed delivery attempts that will be retried, by kind",
            )?,
            failed: by_kind(
                "warden_mail_failed_total",
                "Mails given up after failing for 24 h, by kind",
            )?,
            queued: IntGauge::new(
                "warden_mail_queued",
                "Mails in the outbox waiting for delivery (every replica's)",
            )?,
            oldest_age: Gauge::new(
                "warden_mail_oldest_queued_age_seconds",
                "How long the oldest mail in the outbox has waited",
            )?,
        })
    }
}

/// Every `/package.Service/Method` this server answers.
fn known_methods() -> HashSet<String> {
    let mut methods = HashSet::new();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    for extra in [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        methods.insert(extra.to_owned());
    }
    methods
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "warden_grpc_requests_total",
                "gRPC calls answered, by method and status code",
            ),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "warden_grpc_request_duration_seconds",
                "Time to answer a gRPC call",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "code"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new(
                "warden_logins_total",
                "Login attempts by outcome (success or the error reason)",
            ),
            &["outcome"],
        )?;
        let hashing_waiting = IntGauge::new(
            "warden_hashing_queue_depth",
            "Password hashes waiting for a core",
        )?;
        let hashing_running = IntGauge::new("warden_hashing_in_flight", "Password hashes running")?;
        let db_connections = IntGaugeVec::new(
            Opts::new(
                "warden_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        )?;
        let active_sessions = IntGauge::new(
            "warden_active_sessions",
            "Sessions neither revoked nor expired",
        )?;
        let mail = MailMetrics::new()?;
        for collector in [
            Box::new(mail.sent.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(mail.retried.clone()),
            Box::new(mail.failed.clone()),
            Box::new(mail.queued.clone()),
            Box::new(mail.oldest_age.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(logins.clone()),
            Box::new(hashing_waiting.clone()),
            Box::new(hashing_running.clone()),
            Box::new(db_connections.clone()),
            Box::new(active_sessions.clone()),
        ] {
            registry.register(collector)?;
        }
        // Memory, CPU and file descriptors of this process (`process_*`).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            methods: known_methods(),
            requests,
            latency,
            logins,
            hashing_waiting,
            hashing_running,
            db_connections,
            active_sessions,
            mail,
            sessions_counted: Mutex::new(None),
        })
    }

    /// What a round of the mail sender did.
    pub fn observe_mail_round(&self, round: &Round) {
        for (counter, kinds) in [
            (&self.mail.sent, &round.sent),
            (&self.mail.retried, &round.retried),
            (&self.mail.failed, &round.failed),
        ] {
            for kind in kinds {
                counter.with_label_values(&[kind.as_str()]).inc();
            }
        }
    }

    /// How much the outbox holds (all replicas' mail), and how long the
    /// oldest mail has waited.
    pub fn observe_mail_backlog(&self, queued: u64, oldest_age: Duration) {
        self.mail
            .queued
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.mail.oldest_age.set(oldest_age.as_secs_f64());
    }

    /// The label for a request path.
    pub fn method_label<'a>(&self, path: &'a str) -> &'a str {
        if self.methods.contains(path) {
            path
        } else {
            UNKNOWN_METHOD
        }
    }

    pub fn observe_call(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let code = code_name(code);
        self.requests.with_label_values(&[method, code]).inc();
        self.latency
            .with_label_values(&[method, code])
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_login(&self, outcome: &str) {
        self.logins.with_label_values(&[outcome]).inc();
    }

    /// Whether the active-session count is due for a refresh; marks it done.
    pub fn session_count_due(&self) -> bool {
        let mut last = self
            .sessions_counted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= SESSION_COUNT_TTL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// `OK`, `NOT_FOUND`… as the gRPC specification spells them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_methods_become_labels() {
        let metrics = Metrics::new().unwrap();
        assert_eq!(
            metrics.method_label("/warden.v1.Auth/Login"),
            "/warden.v1.Auth/Login"
        );
        assert_eq!(
            metrics.method_label("/warden.v1.UserAdmin/ListUsers"),
            "/warden.v1.UserAdmin/ListUsers"
        );
        assert_eq!(
            metrics.method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(
            metrics.method_label("/warden.v1.Auth/NoSuchThing"),
            UNKNOWN_METHOD
        );
        assert_eq!(metrics.method_label("/etc/passwd"), UNKNOWN_METHOD);
    }

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_call(
            "/warden.v1.Auth/Login",
            tonic::Code::Unauthenticated,
            Duration::from_millis(3),
        );
        metrics.observe_login("invalid_credentials");
        let text = metrics.render();
        assert!(text.contains(
            r#"warden_grpc_requests_total{code="UNAUTHENTICATED",method="/warden.v1.Auth/Login"} 1"#
        ), "{text}");
        assert!(text.contains(r#"warden_logins_total{outcome="invalid_credentials"} 1"#));
        assert!(text.contains("warden_grpc_request_duration_seconds_bucket"));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn mail_deliveries_are_counted_by_kind_and_the_backlog_is_a_gauge() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_mail_round(&Round {
            sent: vec![MailKind::VerifyEmail, MailKind::VerifyEmail],
            retried: vec![MailKind::ResetPassword],
            failed: vec![MailKind::PasswordChanged],
        });
        metrics.observe_mail_backlog(3, Duration::from_secs(90));
        let text = metrics.render();
        for line in [
            r#"warden_mail_sent_total{kind="verify_email"} 2"#,
            r#"warden_mail_sent_total{kind="invitation"} 0"#,
            r#"warden_mail_retried_total{kind="reset_password"} 1"#,
            r#"warden_mail_failed_total{kind="password_changed"} 1"#,
            "warden_mail_queued 3",
            "warden_mail_oldest_queued_age_seconds 90",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}

//! Metrics, request ids and logs, TLS, graceful shutdown, grpc-web and CORS.

use std::{path::PathBuf, sync::Arc, time::Duration};

use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_stream::StreamExt as _;
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::{
    app::Application,
    config::{Config, TlsFiles},
    domain::{clock::SystemClock, password::HashingCost},
    proto::v1::{self as pb, auth_client::AuthClient},
    state::AppState,
};

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, ServerProcess, TestDatabase, cheap_hashing, spawn_app, spawn_app_with,
    warden,
};

#[tokio::test]
async fn metrics_count_calls_by_method_and_code_and_logins_by_outcome() {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let _ = app.login(ADMIN_EMAIL, "not the right passphrase").await;
    app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let _ = app.get_me_with(None).await;
    let (status, text) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"warden_grpc_requests_total{code="OK",method="/warden.v1.Auth/Register"} 1"#,
        r#"warden_grpc_requests_total{code="UNAUTHENTICATED",method="/warden.v1.Auth/Login"} 1"#,
        r#"warden_grpc_requests_total{code="OK",method="/warden.v1.Auth/Login"} 1"#,
        r#"warden_grpc_requests_total{code="UNAUTHENTICATED",method="/warden.v1.Auth/GetMe"} 1"#,
        r#"warden_logins_total{outcome="INVALID_CREDENTIALS"} 1"#,
        r#"warden_logins_total{outcome="success"} 1"#,
        r#"warden_grpc_request_duration_seconds_count{code="OK",method="/warden.v1.Auth/Login"} 1"#,
        "warden_hashing_queue_depth 0",
        "warden_hashing_in_flight 0",
        "warden_active_sessions 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains(r#"warden_db_pool_connections{state="idle"}"#));
    assert!(text.contains("process_resident_memory_bytes"));
}

#[tokio::test]
async fn a_request_id_is_echoed_or_made_up() {
    let app = spawn_app().await;
    let mut request = Request::new(pb::GetJwksRequest {});
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let response = app.auth.clone().get_jwks(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-42");

    let response = app
        .auth
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap();
    let made_up = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::try_parse(made_up).is_ok(), "{made_up}");
    // Errors carry it too.
    let status = app.get_me_with(None).await.unwrap_err();
    assert!(status.metadata().get("x-request-id").is_some());
}

#[tokio::test]
async fn each_rpc_is_one_json_log_span_with_method_status_latency_peer_and_request_id() {
    let db = TestDatabase::create().await;
    let server = ServerProcess::start(&db, &[("WARDEN_LOG", "warden=debug,info")]).await;
    let mut auth = AuthClient::new(crate::helpers::channel(server.addr).await);
    let mut request = Request::new(pb::GetMeRequest {});
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-7".parse().unwrap());
    let _ = auth.get_me(request).await;
    let (_, logs) = server.stop().await;
    let line = logs
        .iter()
        .find(|l| l.contains("rpc finished") && l.contains("trace-me-7"))
        .unwrap_or_else(|| panic!("no `rpc finished` line for the request in {logs:#?}"));
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    let span = &event["span"];
    assert_eq!(span["method"], "/warden.v1.Auth/GetMe");
    assert_eq!(span["request_id"], "trace-me-7");
    assert!(span["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(event["status"], "UNAUTHENTICATED");
    assert!(event["latency_ms"].as_f64().is_some());
}

/// A CA, a server certificate for localhost and 127.0.0.1, and a client
/// certificate, as PEM files.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca_pem: String,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client: Identity,
}

/// The same, for the tests of other modules (a relay's STARTTLS).
pub fn test_pki() -> Pki {
    pki()
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "warden test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["a-backend".to_owned()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params
        .distinguished_name
        .push(DnType::CommonName, "a-backend");
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca_pem: ca.pem(),
        ca: write("ca.pem", ca.pem()),
        // The full chain, as deployments usually have it: the healthcheck
        // trusts the certificates of this file.
        server_cert: write("server.pem", server_cert.pem() + &ca.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client: Identity::from_pem(client_cert.pem(), client_key.serialize_pem()),
        _dir: dir,
    }
}

/// A server built from `config` and run in the background; stopped when the
/// sender is dropped or fires.
struct Running {
    addr: std::net::SocketAddr,
    http_addr: std::net::SocketAddr,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDatabase,
}

async fn run(configure: impl FnOnce(&mut Config)) -> Running {
    let db = TestDatabase::create().await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url().to_owned(),
        hashing: cheap_hashing(),
        ..Config::default()
    };
    configure(&mut config);
    let app = Application::build(config, Arc::new(SystemClock))
        .await
        .unwrap();
    let (addr, http_addr, state) = (app.grpc_addr(), app.http_addr(), app.state());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // Ready once the side port says so (the gRPC port may need TLS).
    for _ in 0..500 {
        if state.ready.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        addr,
        http_addr,
        state,
        stop: Some(stop),
        done,
        _db: db,
    }
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    pki: &Pki,
    identity: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn tls_serves_grpc_and_the_healthcheck_trusts_the_certificate() {
    let pki = pki();
    let server = run(|c| {
        c.tls = Some(TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: None,
        })
    })
    .await;
    let channel = tls_channel(server.addr, &pki, None)
        .await
        .expect("TLS handshake");
    let jwks = AuthClient::new(channel)
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap();
    assert!(jwks.into_inner().jwks_json.contains("Ed25519"));

    let plain = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy();
    assert!(
        AuthClient::new(plain)
            .get_jwks(pb::GetJwksRequest {})
            .await
            .is_err(),
        "no plaintext"
    );

    let output = warden()
        .args(["healthcheck", "--listen", &server.addr.to_string()])
        .env("WARDEN_TLS_CERT", &pki.server_cert)
        .env("WARDEN_TLS_KEY", &pki.server_key)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let pki = pki();
    let server = run(|c| {
        c.tls = Some(TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca.clone()),
        })
    })
    .await;
    let anonymous = match tls_channel(server.addr, &pki, None).await {
        Ok(channel) => AuthClient::new(channel)
            .get_jwks(pb::GetJwksRequest {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(anonymous, "a client without a certificate is refused");
    let channel = tls_channel(server.addr, &pki, Some(pki.client.clone()))
        .await
        .unwrap();
    assert!(
        AuthClient::new(channel)
            .get_jwks(pb::GetJwksRequest {})
            .await
            .is_ok()
    );

    // The probe has no client certificate: it asks the side port instead.
    let status = warden()
        .args([
            "healthcheck",
            "--listen",
            &server.addr.to_string(),
            "--http-listen",
            &server.http_addr.to_string(),
        ])
        .env("WARDEN_TLS_CERT", &pki.server_cert)
        .env("WARDEN_TLS_KEY", &pki.server_key)
        .env("WARDEN_TLS_CLIENT_CA", &pki.ca)
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_finishes_calls_in_flight_and_refuses_new_ones() {
    let mut server = run(|c| {
        // An unknown email costs one verification of the dummy hash: make
        // that slow enough to be caught in flight.
        c.hashing = HashingCost {
            memory_kib: 32 * 1024,
            iterations: 10,
            parallelism: 1,
        };
        c.drain_timeout = Duration::from_secs(3);
    })
    .await;
    let channel = crate::helpers::channel(server.addr).await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let mut auth = AuthClient::new(channel);
    let in_flight = tokio::spawn(async move {
        auth.login(pb::LoginRequest {
            organization_id: None,
            email: "nobody@example.com".into(),
            password: "some long passphrase".into(),
            device: None,
        })
        .await
    });
    while server.state.accounts.hasher().in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_at = std::time::Instant::now();
    server.stop.take().unwrap().send(()).unwrap();

    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    let answer = in_flight.await.unwrap();
    assert_eq!(
        answer.unwrap_err().code(),
        Code::Unauthenticated,
        "the call got its real answer"
    );
    let late = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    assert!(late.is_err(), "no new connections");
    // The open health stream would keep the server forever: the drain
    // timeout ends it.
    tokio::time::timeout(Duration::from_secs(10), &mut server.done)
        .await
        .expect("stopped within the drain timeout")
        .unwrap()
        .unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(8));
}

/// A raw HTTP/1.0 exchange: (status line + headers, body).
async fn http1(addr: std::net::SocketAddr, request: Vec<u8>) -> (String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    (head, response[split + 4..].to_vec())
}

#[tokio::test]
async fn a_browser_calls_over_grpc_web() {
    let app = spawn_app().await;
    let frame = [0u8, 0, 0, 0, 0]; // an empty GetJwksRequest
    let mut request = format!(
        "POST /warden.v1.Auth/GetJwks HTTP/1.0\r\nHost: localhost\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        frame.len()
    )
    .into_bytes();
    request.extend_from_slice(&frame);
    let (head, body) = http1(app.addr, request).await;
    assert!(
        head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"),
        "{head}"
    );
    assert!(
        head.contains("content-type: application/grpc-web+proto"),
        "{head}"
    );

    // Frames: flag byte, big-endian length, payload; 0x80 marks trailers.
    let (mut rest, mut message, mut trailers) = (&body[..], None, String::new());
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        if rest[0] & 0x80 == 0 {
            message = Some(pb::GetJwksResponse::decode(payload).unwrap());
        } else {
            trailers = String::from_utf8_lossy(payload).to_lowercase();
        }
        rest = &rest[5 + len..];
    }
    assert!(
        message
            .expect("a message frame")
            .jwks_json
            .contains("Ed25519")
    );
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

fn preflight(origin: &str) -> Vec<u8> {
    format!(
        "OPTIONS /warden.v1.Auth/Login HTTP/1.0\r\nHost: localhost\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-grpc-web,authorization\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn cors_lets_the_configured_origins_in_with_credentials() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["https://app.example.com".into()]).await;
    let (head, _) = http1(app.addr, preflight("https://app.example.com")).await;
    assert!(
        head.contains("access-control-allow-origin: https://app.example.com"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );
    assert!(head.contains("authorization"), "{head}");
    let (head, _) = http1(app.addr, preflight("https://evil.example.net")).await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[tokio::test]
async fn a_wildcard_origin_never_comes_with_credentials() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["*".into()]).await;
    let (head, _) = http1(app.addr, preflight("https://anywhere.example")).await;
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(!head.contains("access-control-allow-credentials"), "{head}");
}

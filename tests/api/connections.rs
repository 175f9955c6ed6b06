//! Connection deadlines and caps on both ports (API.md, Details:
//! Connections): sockets that do not finish their TLS handshake and send a
//! first complete request head within `WARDEN_HANDSHAKE_TIMEOUT` are
//! closed, so that they cannot hold the slots that real clients need.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::{
    app::Application,
    config::{Config, TlsFiles},
    domain::clock::SystemClock,
    proto::v1::{self as pb, auth_client::AuthClient},
};

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, TestDatabase, channel, cheap_hashing, http_get, spawn_app_with,
    with_bearer,
};

const TIMEOUT: Duration = Duration::from_secs(2);
/// The generous bound for what should happen about one timeout after it
/// was due.
const GRACE: Duration = Duration::from_secs(6);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Connects `n` sockets; every other one sends `first_byte` and then
/// nothing, the rest send nothing at all.
async fn stalled_sockets(addr: SocketAddr, n: usize, first_byte: u8) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 1 {
            socket.write_all(&[first_byte]).await.expect("write");
        }
        sockets.push(socket);
    }
    sockets
}

/// Whatever the server still sends, until it closes the connection (EOF
/// or reset); false if it is still open after `within`.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

async fn health(channel: Channel) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status()
}

/// Asserts that every socket is closed by the server soon; with 48 of them
/// against 32 slots, the last are accepted only a timeout after the first.
async fn assert_all_closed(sockets: &mut [TcpStream]) {
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(
            closed_within(socket, GRACE).await,
            "socket {i} (of {}) is still open",
            if i % 2 == 1 { "one byte" } else { "silent" }
        );
    }
}

#[tokio::test]
async fn silent_and_trickling_sockets_lose_their_slots_to_a_new_client() {
    let app = spawn_app_with(|c| {
        c.max_connections = 32;
        c.handshake_timeout = TIMEOUT;
    })
    .await;
    // 48 sockets for 32 slots (the test's own client holds one): half send
    // nothing, half the first byte of the HTTP/2 preface.
    let mut sockets = stalled_sockets(app.addr, 48, b'P').await;

    let status = tokio::time::timeout(TIMEOUT + GRACE, async {
        health(channel(app.addr).await).await
    })
    .await
    .expect("a new client is served within a few seconds");
    assert_eq!(status, ServingStatus::Serving);
    assert_all_closed(&mut sockets).await;
    // The client that was there all along was not cut off.
    assert!(
        app.auth
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn sockets_that_never_finish_the_tls_handshake_lose_their_slots_to_a_new_client() {
    let tls = TlsServer::start(|c| {
        c.max_connections = 32;
        c.handshake_timeout = TIMEOUT;
    })
    .await;
    // Half send nothing, half the first byte of a TLS record (a handshake).
    let mut sockets = stalled_sockets(tls.addr, 48, 0x16).await;

    let status = tokio::time::timeout(TIMEOUT + GRACE, async {
        health(tls.channel().await.expect("TLS handshake")).await
    })
    .await
    .expect("a new client is served within a few seconds");
    assert_eq!(status, ServingStatus::Serving);
    assert_all_closed(&mut sockets).await;
}

/// warden does TLS itself now; handlers must still find the peer address
/// (in `TlsConnectInfo<TcpConnectInfo>`).
#[tokio::test]
async fn a_tls_client_s_address_is_recorded_on_its_session() {
    let tls = TlsServer::start(|_| {}).await;
    let mut auth = AuthClient::new(tls.channel().await.expect("TLS handshake"));
    auth.register(pb::RegisterRequest {
        organization_name: None,
        invitation_token: String::new(),
        email: ADMIN_EMAIL.into(),
        password: PASSWORD.into(),
        display_name: String::new(),
    })
    .await
    .unwrap();
    let login = auth
        .login(pb::LoginRequest {
            organization_id: None,
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            device: None,
        })
        .await
        .unwrap()
        .into_inner();
    let token = login.tokens.unwrap().access_token;
    let sessions = auth
        .list_sessions(with_bearer(
            pb::ListSessionsRequest {
                include_inactive: false,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].ip_address, "127.0.0.1");
}

#[tokio::test]
async fn a_connection_that_opens_http2_but_sends_no_request_is_closed_after_the_timeout() {
    let app = spawn_app_with(|c| c.handshake_timeout = TIMEOUT).await;
    let started = Instant::now();
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(PREFACE).await.unwrap();
    socket.write_all(EMPTY_SETTINGS).await.unwrap();
    // The server took it for HTTP/2: its own SETTINGS frame comes first.
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "a SETTINGS frame: {header:?}");

    assert!(
        closed_within(&mut socket, TIMEOUT + GRACE).await,
        "still open"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= TIMEOUT,
        "closed after {elapsed:?}, before the timeout"
    );
}

#[tokio::test]
async fn a_client_that_sent_a_request_keeps_its_connection_past_the_timeout() {
    let app = spawn_app_with(|c| c.handshake_timeout = TIMEOUT).await;
    let connects = Arc::new(AtomicUsize::new(0));
    let addr = app.addr;
    let counted = connects.clone();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let stream = TcpStream::connect(addr).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    let mut auth = AuthClient::new(channel);
    auth.get_jwks(pb::GetJwksRequest {}).await.unwrap();

    // Idle for longer than the timeout: by nature a wait.
    tokio::time::sleep(TIMEOUT + Duration::from_secs(1)).await;
    auth.get_jwks(pb::GetJwksRequest {}).await.unwrap();
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "the connection was closed and made again"
    );
}

#[tokio::test]
async fn silent_sockets_beyond_the_side_port_cap_hold_up_healthz_only_until_the_timeout() {
    let app = spawn_app_with(|c| {
        c.http_max_connections = 4;
        c.handshake_timeout = TIMEOUT;
    })
    .await;
    let _silent: Vec<TcpStream> = stalled_sockets(app.http_addr, 8, b'G').await;
    // The cap holds: a probe waits while the slots are taken...
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            http_get(app.http_addr, "/healthz")
        )
        .await
        .is_err(),
        "a probe beyond the cap is not served while the slots are taken"
    );
    // ...but not for long: two rounds of stalled sockets are closed.
    let (status, body) =
        tokio::time::timeout(TIMEOUT * 2 + GRACE, http_get(app.http_addr, "/healthz"))
            .await
            .expect("healthz answers once the stalled sockets are closed");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn a_side_port_request_head_that_never_ends_is_closed_after_the_timeout() {
    let app = spawn_app_with(|c| c.handshake_timeout = TIMEOUT).await;
    let started = Instant::now();
    let mut socket = TcpStream::connect(app.http_addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut socket, TIMEOUT + GRACE).await,
        "still open"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= TIMEOUT,
        "closed after {elapsed:?}, before the timeout"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_side_port_connection_is_closed_after_the_timeout() {
    let app = spawn_app_with(|c| c.handshake_timeout = TIMEOUT).await;
    let mut socket = TcpStream::connect(app.http_addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // "ok\n", after a head that keeps the connection open.
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\nok\n") {
        let mut buf = [0u8; 256];
        let n = socket.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed early: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    assert!(
        closed_within(&mut socket, TIMEOUT + GRACE).await,
        "an idle connection holds its slot"
    );
    let elapsed = answered.elapsed();
    assert!(
        elapsed >= TIMEOUT,
        "closed after {elapsed:?}, before the timeout"
    );
}

/// A server with TLS on, from a throwaway self-signed certificate.
struct TlsServer {
    addr: SocketAddr,
    cert_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    _db: TestDatabase,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TlsServer {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_pem = certified.cert.pem();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let db = TestDatabase::create().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url().to_owned(),
            hashing: cheap_hashing(),
            tls: Some(TlsFiles {
                cert,
                key,
                client_ca: None,
            }),
            ..Config::default()
        };
        configure(&mut config);
        let app = Application::build(config, Arc::new(SystemClock))
            .await
            .unwrap();
        let addr = app.grpc_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let server = Self {
            addr,
            cert_pem,
            stop: Some(stop),
            _dir: dir,
            _db: db,
        };
        let channel = server.channel().await.expect("TLS handshake");
        for _ in 0..500 {
            if health(channel.clone()).await == ServingStatus::Serving {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the TLS server never reported SERVING");
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.cert_pem))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://{}", self.addr))?
            .tls_config(tls)?
            .connect()
            .await
    }
}

//! Limits on what a replica takes on, so that floods and slow clients cannot
//! exhaust its memory, file descriptors or connection slots.
//!
//! Connections (both ports): each accepted connection holds a permit until
//! it closes, and none is accepted while no permit is free (the kernel's
//! backlog holds the rest). A connection must have finished its TLS
//! handshake and sent its first complete request head within the handshake
//! timeout of being accepted, or it is closed: otherwise sockets that send
//! nothing, or a byte now and then, would hold every slot (slowloris).
//! After that first request a connection lives on under HTTP/2 keepalive
//! and TCP keepalive, which find dead peers.
//!
//! Calls: see [`in_flight`].

pub mod first_request;
pub mod in_flight;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::{Instant, Sleep},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use first_request::FirstRequest;

/// What bounds the connections of one port.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// From accept to the end of the first request head, TLS handshake
    /// included (`WARDEN_HANDSHAKE_TIMEOUT`).
    pub handshake_timeout: Duration,
}

/// Idle time before TCP keepalive probes start (what tonic's own
/// `tcp_keepalive` would set), the time between probes, and how many go
/// unanswered before the kernel gives up: a vanished peer is found about
/// 90 s after it last spoke, and its slot freed.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// How long accepting pauses after an error such as running out of file
/// descriptors, which would otherwise repeat at once, in a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A deadline further out than this is no deadline: it saves adding an
/// operator's `100years` to the clock, which would overflow.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// The timeout as a `Duration` that can be added to any clock reading.
pub fn bounded(timeout: Duration) -> Duration {
    timeout.min(FAR_FUTURE)
}

/// How an accepted TCP connection becomes the byte stream HTTP runs on.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn handshake(&self, stream: TcpStream) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Plaintext: the TCP stream itself.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;

    fn handshake(&self, stream: TcpStream) -> impl Future<Output = io::Result<TcpStream>> + Send {
        std::future::ready(Ok(stream))
    }
}

/// TLS, done here rather than by tonic so that the handshake counts against
/// the same deadline as the rest.
impl Handshake for TlsAcceptor {
    type Io = TlsStream<TcpStream>;

    fn handshake(
        &self,
        stream: TcpStream,
    ) -> impl Future<Output = io::Result<TlsStream<TcpStream>>> + Send {
        self.accept(stream)
    }
}

/// Accepts at most `limits.max_connections` connections at a time from
/// `listener`, sets TCP keepalive on each, runs `handshake`, and hands them
/// on, each guarded by the deadline for its first request. The listener is
/// closed when the stream is dropped.
pub fn incoming<H: Handshake>(
    listener: TcpListener,
    limits: ConnectionLimits,
    handshake: H,
) -> ReceiverStream<io::Result<Guarded<H::Io>>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(listener, limits, handshake, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop<H: Handshake>(
    listener: TcpListener,
    limits: ConnectionLimits,
    handshake: H,
    tx: mpsc::Sender<io::Result<Guarded<H::Io>>>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let timeout = bounded(limits.handshake_timeout);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The peer gave up while waiting in the backlog.
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept connections; pausing");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    () = tx.closed() => return,
                }
            }
        };
        let deadline = Instant::now() + timeout;
        configure(&stream, peer);
        let (tx, handshake) = (tx.clone(), handshake.clone());
        tokio::spawn(async move {
            match tokio::time::timeout_at(deadline, handshake.handshake(stream)).await {
                Ok(Ok(io)) => {
                    let _ = tx.send(Ok(Guarded::new(io, permit, deadline))).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "handshake failed"),
                Err(_) => tracing::debug!(%peer, "no handshake within the handshake timeout"),
            }
            // Otherwise the socket and its permit are dropped here.
        });
    }
}

/// Accept errors that concern one connection only, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// No Nagle delay (small gRPC frames should leave at once), and TCP
/// keepalive: tonic's `tcp_keepalive` applies only to listeners tonic binds
/// itself. A socket that refuses either still works, so failures are only
/// logged.
fn configure(stream: &TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
    }
}

/// A connection with its permit, closed (every read and write fails) if its
/// first request head has not arrived by the deadline.
pub struct Guarded<S> {
    inner: S,
    /// Until the first request head is in.
    pending: Option<Pending>,
    _permit: OwnedSemaphorePermit,
}

struct Pending {
    watcher: FirstRequest,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, deadline: Instant) -> Self {
        Self {
            inner,
            pending: Some(Pending {
                watcher: FirstRequest::new(),
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
            }),
            _permit: permit,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether the first request head has arrived (and the deadline is off).
    pub fn has_sent_a_request(&self) -> bool {
        self.pending.is_none()
    }

    /// An error once the deadline has passed without a request. Polling the
    /// timer also wakes the connection's task when it fires, whichever of
    /// reading and writing the server is waiting on.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let expired = self
            .pending
            .as_mut()
            .is_some_and(|pending| pending.deadline.as_mut().poll(cx).is_ready());
        if expired {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request within the handshake timeout",
            ));
        }
        Ok(())
    }
}

impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    /// The inner stream's: `TcpConnectInfo`, or
    /// `TlsConnectInfo<TcpConnectInfo>` with TLS, as handlers expect.
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check_deadline(cx)?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(pending) = &mut this.pending
            && pending.watcher.feed(&buf.filled()[before..])
        {
            this.pending = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_stream::StreamExt as _;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    /// An empty SETTINGS frame, then a HEADERS frame (END_HEADERS) of one
    /// HPACK byte.
    const SETTINGS_AND_HEADERS: &[u8] = &[
        0, 0, 0, 4, 0, 0, 0, 0, 0, //
        0, 0, 1, 1, 4, 0, 0, 0, 1, 0x82,
    ];

    fn limits(max_connections: usize, handshake_timeout: Duration) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            handshake_timeout,
        }
    }

    async fn listen() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// Reads from `connection` as a server would until it fails or ends.
    async fn read_until_closed(connection: &mut Guarded<TcpStream>) -> io::Result<()> {
        let mut buf = [0u8; 64];
        loop {
            if connection.read(&mut buf).await? == 0 {
                return Ok(());
            }
        }
    }

    #[tokio::test]
    async fn no_more_connections_than_the_cap_are_handed_out() {
        let (listener, addr) = listen().await;
        let mut incoming = incoming(listener, limits(1, Duration::from_secs(30)), Plain);
        let _first = TcpStream::connect(addr).await.unwrap();
        let held = incoming.next().await.unwrap().unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), incoming.next())
                .await
                .is_err()
        );
        drop(held);
        let next = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
        assert!(
            next.expect("served after the first closed")
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_request_in_time_fails_and_frees_its_slot() {
        let (listener, addr) = listen().await;
        let mut incoming = incoming(listener, limits(1, Duration::from_millis(300)), Plain);
        let mut client = TcpStream::connect(addr).await.unwrap();
        // The preface and a SETTINGS frame: a connection, but no request.
        client.write_all(PREFACE).await.unwrap();
        client.write_all(&SETTINGS_AND_HEADERS[..9]).await.unwrap();
        let mut connection = incoming.next().await.unwrap().unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut connection))
            .await
            .expect("the deadline ends the wait");
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(!connection.has_sent_a_request());
        let mut buf = [0u8; 1];
        assert!(connection.write(&buf).await.is_err(), "writes fail too");
        assert!(connection.read(&mut buf).await.is_err());

        drop(connection);
        let _next = TcpStream::connect(addr).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
        assert!(next.expect("the slot is free again").unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_connection_whose_first_request_arrived_outlives_the_deadline() {
        let (listener, addr) = listen().await;
        let timeout = Duration::from_millis(200);
        let mut incoming = incoming(listener, limits(1, timeout), Plain);
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(PREFACE).await.unwrap();
        client.write_all(SETTINGS_AND_HEADERS).await.unwrap();
        let mut connection = incoming.next().await.unwrap().unwrap();
        let mut received = Vec::new();
        while received.len() < PREFACE.len() + SETTINGS_AND_HEADERS.len() {
            let mut buf = [0u8; 64];
            let n = connection.read(&mut buf).await.unwrap();
            assert!(n > 0);
            received.extend_from_slice(&buf[..n]);
        }
        assert!(connection.has_sent_a_request());
        tokio::time::sleep(timeout * 3).await;
        client.write_all(b"more").await.unwrap();
        let mut buf = [0u8; 4];
        connection.read_exact(&mut buf).await.unwrap();
        connection.write_all(b"answer").await.unwrap();
        assert_eq!(&buf, b"more");
    }

    #[tokio::test]
    async fn a_tls_handshake_that_does_not_finish_in_time_frees_its_slot() {
        let (listener, addr) = listen().await;
        let mut incoming = incoming(
            listener,
            limits(1, Duration::from_millis(300)),
            test_acceptor(),
        );
        // One byte of a TLS record header, then nothing.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(&[0x16]).await.unwrap();
        // Accepted only once the first has gone (the cap is 1), and then
        // closed in its turn.
        let mut waiting = TcpStream::connect(addr).await.unwrap();
        for socket in [&mut stalled, &mut waiting] {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
                .await
                .expect("the server closes the stalled handshake");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        // Nothing was handed on: neither connection finished a handshake.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), incoming.next())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn accepted_sockets_have_tcp_keepalive_on() {
        let (listener, addr) = listen().await;
        let mut incoming = incoming(listener, limits(1, Duration::from_secs(30)), Plain);
        let _client = TcpStream::connect(addr).await.unwrap();
        let connection = incoming.next().await.unwrap().unwrap();
        let socket = socket2::SockRef::from(connection.get_ref());
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
        assert!(connection.get_ref().nodelay().unwrap());
    }

    #[test]
    fn a_handshake_timeout_of_a_century_is_bounded_so_that_deadlines_can_be_computed() {
        let century = Duration::from_secs(100 * 365 * 86_400);
        let _ = Instant::now() + bounded(century);
        let _ = Instant::now() + bounded(Duration::MAX);
        assert_eq!(bounded(Duration::from_secs(5)), Duration::from_secs(5));
    }

    /// A TLS acceptor with a throwaway self-signed certificate.
    fn test_acceptor() -> TlsAcceptor {
        use tokio_rustls::rustls::{
            ServerConfig,
            crypto::ring::default_provider,
            pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        };
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

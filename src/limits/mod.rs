//! A cap on open gRPC connections: each accepted connection holds a permit
//! until it closes, and no connection is accepted while none is free (the
//! kernel's backlog holds the rest), so a connection flood cannot exhaust
//! memory or file descriptors. A connection that sends nothing for a while
//! after it was accepted is dropped: gRPC and TLS clients speak first, and
//! silent sockets must not hold the slots (slowloris).

pub mod first_request;

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection and its permit.
pub struct LimitedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// How long an accepted connection may stay silent before it is dropped.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts at most `max` connections at a time from `listener`; those that
/// send nothing within `first_byte_timeout` are closed.
pub fn limited_incoming(
    listener: TcpListener,
    max: usize,
    first_byte_timeout: Duration,
) -> ReceiverStream<io::Result<LimitedConnection>> {
    let (tx, rx) = mpsc::channel(16);
    let permits = Arc::new(Semaphore::new(max.max(1)));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pass it on (the
                    // server logs it and goes on accepting).
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(Ok(())) =
                    tokio::time::timeout(first_byte_timeout, stream.readable()).await
                {
                    // Small gRPC frames should leave at once.
                    let _ = stream.set_nodelay(true);
                    let _ = tx
                        .send(Ok(LimitedConnection {
                            stream,
                            _permit: permit,
                        }))
                        .await;
                }
                // Otherwise the socket and its permit are dropped here.
            });
        }
    });
    ReceiverStream::new(rx)
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn a_silent_connection_loses_its_slot_to_one_that_speaks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = limited_incoming(listener, 1, Duration::from_millis(200));
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut talker = TcpStream::connect(addr).await.unwrap();
        talker.write_all(b"hello").await.unwrap();
        let served = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
        let connection = served.expect("the talker is served once the silent one is dropped");
        assert!(connection.unwrap().is_ok());
    }

    #[tokio::test]
    async fn no_more_connections_than_the_cap_are_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = limited_incoming(listener, 1, Duration::from_secs(5));
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"a").await.unwrap();
        let held = incoming.next().await.unwrap().unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(b"b").await.unwrap();
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
}

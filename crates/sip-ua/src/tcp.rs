//! Stream connections (TCP, and TLS over it): one task per connection that writes what the
//! driver queues, frames what it reads, answers keep-alive pings and sends its own on an idle
//! connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dialtone_sip_core::framing::{Frame, StreamFramer};
use dialtone_sip_core::{Transport, TransportFailure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::tls::TlsRoute;

/// What a connection task tells the driver.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    /// A peer connected to one of our listeners.
    Accepted {
        peer: SocketAddr,
        transport: Transport,
        connection: ConnectionId,
        writer: mpsc::UnboundedSender<Vec<u8>>,
    },
    /// One framed message.
    Message {
        peer: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    },
    /// The connection ended: cleanly (`None`), or failed and how (it never came up, the TLS
    /// handshake failed, it broke).
    Closed {
        peer: SocketAddr,
        transport: Transport,
        connection: ConnectionId,
        failure: Option<TransportFailure>,
    },
}

/// Tells one connection from another to the same peer: the one that replaced it, or the one
/// opened after it broke, whose entry its late `Closed` must leave alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionId(u64);

impl ConnectionId {
    /// A fresh id, never given before in this process.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// How a connection comes about.
pub(crate) enum Link {
    /// Our TCP listener accepted it.
    Accepted(TcpStream),
    /// Our TLS listener accepted it; the handshake runs in the task.
    AcceptedTls(TcpStream, TlsAcceptor),
    /// We connect to the peer.
    Connect,
    /// We connect to the peer and run TLS as its client.
    ConnectTls(TlsRoute),
}

impl Link {
    /// The transport the connection carries.
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Link::Accepted(_) | Link::Connect => Transport::Tcp,
            Link::AcceptedTls(..) | Link::ConnectTls(_) => Transport::Tls,
        }
    }
}

/// How long an outbound connect may take, and a TLS handshake after it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one connection to `peer` until either side closes it.
pub(crate) async fn run(
    peer: SocketAddr,
    connection: ConnectionId,
    link: Link,
    outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<TcpEvent>,
    keepalive: Duration,
) {
    let transport = link.transport();
    let failed = |failure| {
        let _ = events.send(TcpEvent::Closed {
            peer,
            transport,
            connection,
            failure: Some(failure),
        });
    };
    let connection = Connection {
        peer,
        transport,
        id: connection,
        outgoing,
        events: events.clone(),
        keepalive,
    };
    match link {
        Link::Accepted(stream) => connection.serve(stream).await,
        Link::Connect => match connect(peer).await {
            Ok(stream) => connection.serve(stream).await,
            Err(failure) => failed(failure),
        },
        Link::AcceptedTls(stream, acceptor) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection.serve(tls).await,
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake with a client failed");
                    failed(TransportFailure::Tls);
                }
                Err(_) => failed(TransportFailure::Tls),
            }
        }
        Link::ConnectTls(route) => {
            let stream = match connect(peer).await {
                Ok(stream) => stream,
                Err(failure) => return failed(failure),
            };
            let handshake = route.connector.connect(route.server_name.clone(), stream);
            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => connection.serve(tls).await,
                Ok(Err(error)) => {
                    tracing::warn!(%peer, server = ?route.server_name, %error, "TLS handshake with the trunk failed");
                    failed(TransportFailure::Tls);
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake with the trunk timed out");
                    failed(TransportFailure::Tls);
                }
            }
        }
    }
}

/// Opens a TCP connection to `peer`: a refusal or no route is `Unreachable`, a timeout or
/// another error `Other`.
async fn connect(peer: SocketAddr) -> Result<TcpStream, TransportFailure> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(TransportFailure::of_error_kind(error.kind())),
        Err(_) => return Err(TransportFailure::Other),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One established connection's ends towards the driver.
struct Connection {
    peer: SocketAddr,
    transport: Transport,
    id: ConnectionId,
    outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<TcpEvent>,
    keepalive: Duration,
}

impl Connection {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut self, stream: S) {
        let (peer, transport, connection) = (self.peer, self.transport, self.id);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut framer = StreamFramer::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut ping = tokio::time::interval(self.keepalive);
        ping.reset();
        let failed = loop {
            tokio::select! {
                out = self.outgoing.recv() => match out {
                    Some(bytes) => {
                        if send(&mut writer, &bytes).await.is_err() {
                            break true;
                        }
                        ping.reset();
                    }
                    None => break false,
                },
                read = reader.read(&mut buf) => match read {
                    Ok(0) => break false,
                    Ok(n) => {
                        framer.push(buf.get(..n).unwrap_or_default());
                        loop {
                            match framer.next_frame() {
                                Ok(Some(Frame::Message(bytes))) => {
                                    let _ = self.events.send(TcpEvent::Message { peer, transport, bytes });
                                }
                                Ok(Some(Frame::KeepAlivePing)) => {
                                    // RFC 5626 §4.4.1: answer a double-CRLF ping with a CRLF pong.
                                    if send(&mut writer, b"\r\n").await.is_err() {
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(error) => {
                                    tracing::warn!(%peer, %error, "closing unframeable SIP stream");
                                    let _ = self.events.send(TcpEvent::Closed { peer, transport, connection, failure: Some(TransportFailure::Other) });
                                    return;
                                }
                            }
                        }
                    }
                    Err(_) => break true,
                },
                _ = ping.tick() => {
                    if send(&mut writer, b"\r\n\r\n").await.is_err() {
                        break true;
                    }
                }
            }
        };
        let _ = writer.shutdown().await;
        let _ = self.events.send(TcpEvent::Closed {
            peer,
            transport,
            connection,
            failure: failed.then_some(TransportFailure::Other),
        });
    }
}

/// Writes `bytes` and flushes them: TLS holds written records until flushed.
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

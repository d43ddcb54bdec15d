//! TCP connections: one task per connection that writes what the driver queues, frames what it
//! reads, answers keep-alive pings and sends its own on an idle connection.

use std::net::SocketAddr;
use std::time::Duration;

use dialtone_sip_core::TransportFailure;
use dialtone_sip_core::framing::{Frame, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What a connection task tells the driver.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    /// A peer connected to our listener.
    Accepted {
        peer: SocketAddr,
        writer: mpsc::UnboundedSender<Vec<u8>>,
    },
    /// One framed message.
    Message { peer: SocketAddr, bytes: Vec<u8> },
    /// The connection ended; `failed` when it never came up or broke with an error.
    Closed { peer: SocketAddr, failed: bool },
    /// The connection could not be opened: the peer refused it, or there is no route to it.
    Unreachable { peer: SocketAddr },
}

/// How long an outbound connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one connection to `peer`: connects first when `stream` is `None`.
pub(crate) async fn run(
    peer: SocketAddr,
    stream: Option<TcpStream>,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<TcpEvent>,
    keepalive: Duration,
) {
    let stream = match stream {
        Some(s) => s,
        None => match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
            Ok(Ok(s)) => s,
            Ok(Err(error))
                if TransportFailure::of_error_kind(error.kind())
                    == TransportFailure::Unreachable =>
            {
                let _ = events.send(TcpEvent::Unreachable { peer });
                return;
            }
            _ => {
                let _ = events.send(TcpEvent::Closed { peer, failed: true });
                return;
            }
        },
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut ping = tokio::time::interval(keepalive);
    ping.reset();
    let failed = loop {
        tokio::select! {
            out = outgoing.recv() => match out {
                Some(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
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
                                let _ = events.send(TcpEvent::Message { peer, bytes });
                            }
                            Ok(Some(Frame::KeepAlivePing)) => {
                                // RFC 5626 §4.4.1: answer a double-CRLF ping with a CRLF pong.
                                if writer.write_all(b"\r\n").await.is_err() {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(%peer, %error, "closing unframeable SIP stream");
                                let _ = events.send(TcpEvent::Closed { peer, failed: true });
                                return;
                            }
                        }
                    }
                }
                Err(_) => break true,
            },
            _ = ping.tick() => {
                if writer.write_all(b"\r\n\r\n").await.is_err() {
                    break true;
                }
            }
        }
    };
    let _ = events.send(TcpEvent::Closed { peer, failed });
}

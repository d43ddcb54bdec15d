//! The HTTP listener: every accepted connection served by hyper (HTTP/1.1 and HTTP/2) with the
//! timeouts a server facing untrusted clients needs — a new connection must send its first
//! byte, and a request its whole header, within [`HttpTimeouts::header`] (silent and
//! slow-header clients and idle keep-alive connections are cut), and an HTTP/2 connection that
//! stops answering pings is closed. The gRPC listener takes its connections through the same
//! first-byte gate ([`speaking_connections`]).
//!
//! Hyper answers a request it cannot read itself, before the router sees it: `400` for a
//! request line or header it cannot parse, `414` for a URI over its limit (65534 bytes, fixed
//! in hyper), `431` for a head larger than its buffer — bare, with no body. [`Shaped`] sits
//! between hyper and the socket and turns exactly those automatic answers (a 4xx head with
//! `content-length: 0`, which the API itself never sends: its refusals all carry the JSON
//! body) into the API's one error shape, `{"error": {"code", "message", "field"}}`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use dialtone_control::openapi::{ErrorBody, ErrorDetail};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long the HTTP server waits on a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// For a request's whole header, counted from when the server starts reading it (also
    /// how long an idle keep-alive connection is kept).
    pub header: Duration,
    /// Between HTTP/2 keep-alive pings, and for each ping's answer.
    pub ping: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            header: Duration::from_secs(10),
            ping: Duration::from_secs(20),
        }
    }
}

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: axum::Router, timeouts: HttpTimeouts) {
    let mut connections = speaking_connections(listener, timeouts.header);
    while let Some(stream) = tokio_stream::StreamExt::next(&mut connections).await {
        let Ok(stream) = stream else {
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(timeouts.ping)
                .keep_alive_timeout(timeouts.ping);
            if let Err(error) = builder
                .serve_connection_with_upgrades(TokioIo::new(Shaped::new(stream)), service)
                .await
            {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Whether a new connection sends something within `limit` (read without taking it). One that
/// says nothing is dropped: a client that connects and waits holds a socket and a task, and
/// the protocols' own timeouts only start once the first bytes are in.
async fn speaks_within(stream: &TcpStream, limit: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.peek(&mut first)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// The connections `listener` accepts, each once it has sent its first byte within `limit`
/// (those that do not are dropped): what [`serve`] serves, and what tonic's
/// `serve_with_incoming` takes for gRPC. Accepting stops when the stream is dropped.
pub fn speaking_connections(
    listener: TcpListener,
    limit: Duration,
) -> ReceiverStream<io::Result<TcpStream>> {
    let (speaking, connections) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => accepted,
                () = speaking.closed() => return,
            };
            match stream {
                Ok((stream, _)) => {
                    let speaking = speaking.clone();
                    tokio::spawn(async move {
                        if speaks_within(&stream, limit).await {
                            let _ = speaking.send(Ok(stream)).await;
                        }
                    });
                }
                Err(error) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ReceiverStream::new(connections)
}

/// The API's error body for one of hyper's automatic answers (`status`), or `None` for any
/// other status.
fn refusal_body(status: u16) -> Option<Vec<u8>> {
    let (code, message) = match status {
        400 => (
            "invalid_request",
            "the request could not be read as HTTP (its request line or a header is malformed)",
        ),
        414 => (
            "uri_too_long",
            "the request URI is longer than this server reads (65534 bytes)",
        ),
        431 => (
            "headers_too_large",
            "the request's head (request line and headers) is larger than this server reads",
        ),
        _ => return None,
    };
    serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            field: None,
        },
    })
    .ok()
}

/// When `written` is one of hyper's automatic answers — a whole `HTTP/1.1 4xx` head with
/// `content-length: 0` and nothing after it — the same answer with the API's JSON body.
fn shaped_refusal(written: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(written).ok()?;
    let head = head.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let headers: Vec<&str> = lines.collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let body = refusal_body(status)?;
    let mut out = format!("{status_line}\r\n");
    for header in headers
        .iter()
        .filter(|h| !h.eq_ignore_ascii_case("content-length: 0"))
    {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// The connection's socket, with hyper's automatic bare refusals rewritten in the API's error
/// shape (see the module's guide). Writes are not vectored, so each of hyper's writes is one
/// buffer: a response head with no body is whole in one write.
struct Shaped {
    stream: TcpStream,
    /// A rewritten refusal not yet all on the socket.
    pending: Vec<u8>,
}

impl Shaped {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// Writes what is pending; ready once none is left.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Shaped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shaped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(rewritten) = shaped_refusal(buf) {
            self.pending = rewritten;
            // Counted as written; flush and shutdown put it on the socket.
            return match self.drain(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(header: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let timeouts = HttpTimeouts {
            header,
            ping: Duration::from_secs(20),
        };
        tokio::spawn(serve(listener, app, timeouts));
        addr
    }

    /// What the server answers to `request`, whole.
    async fn answer_to(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before it has read it all.
        let _ = client.write_all(request).await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// The JSON body of an answer, after its head.
    fn body(answer: &str) -> serde_json::Value {
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }

    /// What hyper refuses before any router sees it is in the API's error shape: a URI over
    /// hyper's limit (414), a head over its buffer (431), a request line it cannot parse (400).
    #[tokio::test]
    async fn hypers_own_refusals_are_in_the_json_error_shape() {
        let addr = server(Duration::from_secs(10)).await;
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        let answer = answer_to(addr, long.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");
        assert!(
            answer.contains("content-type: application/json\r\n"),
            "{answer}"
        );
        assert_eq!(body(&answer)["error"]["code"], "uri_too_long");
        assert!(
            body(&answer)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("URI")
        );

        let huge = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(600_000)
        );
        let answer = answer_to(addr, huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert_eq!(body(&answer)["error"]["code"], "headers_too_large");

        let answer = answer_to(addr, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert_eq!(body(&answer)["error"]["code"], "invalid_request");

        // What the router answers passes unchanged.
        let answer = answer_to(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    }

    #[test]
    fn only_bare_4xx_heads_are_rewritten() {
        assert!(
            shaped_refusal(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").is_some()
        );
        // A head with a body, another status, or more than a head passes unchanged.
        assert!(
            shaped_refusal(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 2\r\n\r\n").is_none()
        );
        assert!(shaped_refusal(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(shaped_refusal(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            shaped_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}").is_none()
        );
    }

    /// A client that connects and says nothing is cut off, on the API's listener and through
    /// the gate the gRPC listener uses; one that speaks is let through.
    #[tokio::test]
    async fn a_connection_that_says_nothing_is_cut_off() {
        let addr = server(Duration::from_millis(300)).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server closed the silent connection");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gated = listener.local_addr().unwrap();
        let mut connections = speaking_connections(listener, Duration::from_millis(300));
        let mut silent = tokio::net::TcpStream::connect(gated).await.unwrap();
        let mut speaking = tokio::net::TcpStream::connect(gated).await.unwrap();
        speaking.write_all(b"PRI").await.unwrap();
        let through = tokio_stream::StreamExt::next(&mut connections)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(through.peer_addr().unwrap(), speaking.local_addr().unwrap());
        let read =
            tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the gate closed the silent connection");
    }

    /// A client that sends half a header and stops is cut off; one that completes its request
    /// is answered.
    #[tokio::test]
    async fn a_slow_header_is_cut_off_and_a_whole_request_answered() {
        let addr = server(Duration::from_millis(300)).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server closed the slow connection");
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

        let mut quick = tokio::net::TcpStream::connect(addr).await.unwrap();
        quick
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        quick.read_to_end(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"));
    }
}

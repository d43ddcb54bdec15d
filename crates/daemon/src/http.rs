//! The HTTP listener: every accepted connection served by hyper (HTTP/1.1 and HTTP/2) with the
//! timeouts a server facing untrusted clients needs — a request's headers must arrive within
//! [`HttpTimeouts::header`] (slow-header clients and idle keep-alive connections are cut), and
//! an HTTP/2 connection that stops answering pings is closed.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

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
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
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
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
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

//! What the streaming speech clients ([`deepgram`](crate::deepgram),
//! [`cartesia`](crate::cartesia), [`elevenlabs`](crate::elevenlabs)) share: a
//! [`StreamingProvider`] (where the service is and its key), its websocket URLs (`http` → `ws`,
//! `https` → `wss`, TLS by rustls with the system's roots), the connection's messages, how long
//! a synthesis streamed a line at a time may keep its client waiting (`Deadline`: answers are
//! due after text was sent, not while the service waits for more of the line), and how a
//! websocket's failures map to [`AgentError`].
//!
//! The connection is made here, not by name inside the websocket library: the service's host is
//! resolved once, by the provider's [`ResolveAddresses`] when it has one (the engine's
//! outbound-address policy, which refuses private addresses unless allowed), and the TCP stream
//! goes to an address that came back, the URL's name kept for TLS (SNI, certificate) and the
//! `Host` header. Nothing re-resolves the name between the check and the connection, so a name
//! that rebinds to a private address is refused. Small control messages are not held back
//! (`TCP_NODELAY`).
//!
//! The key is never logged, never shown by `Debug`, and scrubbed from any error text (a
//! service that takes it in the URL's query may see it echoed in a URL error).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::AgentError;
use crate::provider::BoxFuture;

/// How much of an error body or close reason is kept in an [`AgentError`].
const ERROR_DETAIL_CHARS: usize = 300;

/// How long the goodbye (a cancel, a close frame) may take once the answer is no longer wanted.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// A connected websocket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The addresses a streaming service's host may be connected at.
pub trait ResolveAddresses: Send + Sync + std::fmt::Debug {
    /// The addresses (with `port`) of `host` (a name or an IP literal, without brackets) that
    /// may be connected to, or why none may.
    fn resolve(&self, host: &str, port: u16)
    -> BoxFuture<'static, Result<Vec<SocketAddr>, String>>;
}

/// Where a streaming speech service is and how to authenticate to it.
#[derive(Clone)]
pub struct StreamingProvider {
    name: String,
    base_url: String,
    api_key: Option<String>,
    resolver: Option<Arc<dyn ResolveAddresses>>,
}

impl std::fmt::Debug for StreamingProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("resolver", &self.resolver)
            .finish()
    }
}

impl StreamingProvider {
    /// The provider `name` (as the organisation named it; errors carry it) at `base_url`
    /// (`https://…`, `http://…`, `wss://…` or `ws://…`; the endpoints' paths are appended),
    /// with `api_key` (an empty key is none).
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: api_key.filter(|k| !k.is_empty()),
            resolver: None,
        }
    }

    /// Connects only to the addresses `resolver` gives (without one, to whatever the system
    /// resolves the host to).
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn ResolveAddresses>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether a key is set.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    pub(crate) fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The websocket URL of `{base_url}` followed by the path `segments` (each percent-encoded
    /// as one segment), with `http(s)` turned into `ws(s)`.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, AgentError> {
        let mut url = Url::parse(&self.base_url)
            .map_err(|e| self.protocol(format!("the base URL is not a URL: {e}")))?;
        let scheme = match url.scheme() {
            "https" | "wss" => "wss",
            "http" | "ws" => "ws",
            other => {
                return Err(self.protocol(format!(
                    "the base URL's scheme {other} is not http(s) or ws(s)"
                )));
            }
        };
        url.set_scheme(scheme)
            .map_err(|()| self.protocol("the base URL cannot be a websocket URL"))?;
        url.path_segments_mut()
            .map_err(|()| self.protocol("the base URL cannot have a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Opens a websocket to `url` with these extra request `headers`, within `limit`. A refused
    /// upgrade is [`AgentError::Status`] with the start of the service's error body.
    pub(crate) async fn connect(
        &self,
        url: &Url,
        headers: &[(&'static str, String)],
        limit: Duration,
    ) -> Result<Socket, AgentError> {
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| self.ws_error(e))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| self.protocol(format!("the {name} header cannot be sent")))?;
            request.headers_mut().insert(*name, value);
        }
        let connect = async {
            let stream = self.tcp(url).await?;
            tokio_tungstenite::client_async_tls_with_config(request, stream, None, None)
                .await
                .map_err(|e| self.ws_error(e))
        };
        let (socket, _) = tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| self.timeout(limit))??;
        Ok(socket)
    }

    /// A TCP stream to the first address of `url`'s host that answers, the addresses resolved
    /// once (by the resolver, when there is one).
    async fn tcp(&self, url: &Url) -> Result<TcpStream, AgentError> {
        let host = url
            .host_str()
            .ok_or_else(|| self.protocol("the base URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(80);
        let unreachable = |detail: String| AgentError::Unreachable {
            provider: self.name.clone(),
            detail,
        };
        let addresses: Vec<SocketAddr> = match &self.resolver {
            Some(resolver) => {
                resolver
                    .resolve(host, port)
                    .await
                    .map_err(|detail| AgentError::Refused {
                        provider: self.name.clone(),
                        detail,
                    })?
            }
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        let mut last = format!("{host} has no address");
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    // Failing to set it only costs latency.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = format!("{address}: {e}"),
            }
        }
        Err(unreachable(last))
    }

    /// Sends `value` as a text message.
    pub(crate) async fn send_json(
        &self,
        socket: &mut Socket,
        value: &Value,
    ) -> Result<(), AgentError> {
        socket
            .send(Message::text(value.to_string()))
            .await
            .map_err(|e| self.ws_error(e))
    }

    /// The next message that carries data, within `limit` (see [`StreamingProvider::receive`]).
    pub(crate) async fn next(
        &self,
        socket: &mut Socket,
        limit: Duration,
    ) -> Result<Incoming, AgentError> {
        tokio::time::timeout(limit, self.receive(socket))
            .await
            .map_err(|_| self.timeout(limit))?
    }

    /// The next message that carries data: pings and pongs are skipped (the pong goes back by
    /// itself), a close from the service is [`Incoming::Closed`] (an error when its code says
    /// something went wrong).
    pub(crate) async fn receive(&self, socket: &mut Socket) -> Result<Incoming, AgentError> {
        loop {
            match socket.next().await {
                None | Some(Err(tungstenite::Error::ConnectionClosed)) => {
                    return Ok(Incoming::Closed);
                }
                Some(Err(e)) => return Err(self.ws_error(e)),
                Some(Ok(Message::Text(text))) => {
                    return Ok(Incoming::Text(text.as_str().to_owned()));
                }
                Some(Ok(Message::Binary(bytes))) => return Ok(Incoming::Binary(bytes.to_vec())),
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(frame)
                            if !matches!(frame.code, CloseCode::Normal | CloseCode::Away) =>
                        {
                            Err(self.closed_with(frame.code, frame.reason.as_str()))
                        }
                        _ => Ok(Incoming::Closed),
                    };
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }

    /// Says goodbye: sends `last` (a cancel, when the service has one) and a close frame,
    /// waiting at most [`GOODBYE_TIMEOUT`]; failures are of no consequence.
    pub(crate) async fn goodbye(&self, socket: &mut Socket, last: Option<&Value>) {
        let bye = async {
            if let Some(last) = last {
                let _ = socket.send(Message::text(last.to_string())).await;
            }
            let _ = socket.close(None).await;
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, bye).await;
    }

    pub(crate) fn timeout(&self, after: Duration) -> AgentError {
        AgentError::Timeout {
            provider: self.name.clone(),
            after,
        }
    }

    pub(crate) fn status(&self, status: u16, detail: &str) -> AgentError {
        AgentError::Status {
            provider: self.name.clone(),
            status,
            detail: self.scrub(&cut(detail.trim())),
        }
    }

    pub(crate) fn protocol(&self, detail: impl AsRef<str>) -> AgentError {
        AgentError::Protocol {
            provider: self.name.clone(),
            detail: self.scrub(detail.as_ref()),
        }
    }

    /// A close frame that says something went wrong: the service's own failures (1011 and
    /// up: internal error, restarting, try again later) are [`AgentError::Unreachable`] (asking
    /// again may help), others (a policy violation, data it could not read) a protocol error.
    fn closed_with(&self, code: CloseCode, reason: &str) -> AgentError {
        let number = u16::from(code);
        let detail = format!(
            "it closed the connection ({number}): {}",
            cut(reason.trim())
        );
        if (1011..=1014).contains(&number) {
            AgentError::Unreachable {
                provider: self.name.clone(),
                detail: self.scrub(&detail),
            }
        } else {
            self.protocol(detail)
        }
    }

    /// A websocket failure as an [`AgentError`].
    pub(crate) fn ws_error(&self, error: tungstenite::Error) -> AgentError {
        match error {
            tungstenite::Error::Http(response) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                self.status(response.status().as_u16(), &error_detail(&body))
            }
            tungstenite::Error::Io(_)
            | tungstenite::Error::Tls(_)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed => AgentError::Unreachable {
                provider: self.name.clone(),
                detail: self.scrub(&describe(&error)),
            },
            other => self.protocol(describe(&other)),
        }
    }

    /// `text` with the key, should it be echoed, blotted out.
    fn scrub(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.as_str(), "[redacted]"),
            None => text.to_owned(),
        }
    }
}

/// How long a streamed synthesis may keep its client waiting: the first message after text was
/// sent must come within the limit, and once the text is all sent, each next message too. (A
/// service waiting for more of a line's text is silent, and that is no failure.)
#[derive(Debug)]
pub(crate) struct Deadline {
    limit: Duration,
    due: Option<tokio::time::Instant>,
}

impl Deadline {
    pub(crate) fn new(limit: Duration) -> Self {
        Self { limit, due: None }
    }

    /// Text (or its end) was sent: something must come.
    pub(crate) fn text_sent(&mut self) {
        let limit = self.limit;
        self.due
            .get_or_insert_with(|| tokio::time::Instant::now() + limit);
    }

    /// A message came: past the end of the text the next one must come too.
    pub(crate) fn heard(&mut self, ended: bool) {
        self.due = ended.then(|| tokio::time::Instant::now() + self.limit);
    }

    /// Resolves when the wait has run out.
    pub(crate) async fn passed(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// A message from the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// The service closed the connection normally.
    Closed,
}

/// The message of an error body: Deepgram's `err_msg`, a `message`, an `error` or a `detail`
/// (a string, or an object with a `message`), else the body's start; cut to
/// [`ERROR_DETAIL_CHARS`].
fn error_detail(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        ["err_msg", "message", "error", "detail"]
            .iter()
            .filter_map(|key| v.get(key))
            .find_map(|field| {
                field
                    .as_str()
                    .or_else(|| field.get("message").and_then(Value::as_str))
            })
    });
    cut(message.unwrap_or(body).trim())
}

fn cut(text: &str) -> String {
    let mut detail: String = text.chars().take(ERROR_DETAIL_CHARS).collect();
    if detail.len() < text.len() {
        detail.push('…');
    }
    detail
}

/// An error with its causes.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A BCP 47 tag as the services take it: trimmed, `_` turned into `-` (`en-US` stays `en-US`,
/// `en_us` becomes `en-us`); `None` for an empty tag.
pub(crate) fn language_tag(tag: &str) -> Option<String> {
    let tag = tag.trim().replace('_', "-");
    (!tag.is_empty()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_websocket_urls_with_their_paths() {
        let provider = StreamingProvider::new("dg", "https://api.example.com/v1/", None);
        let url = provider.url(&["listen"]).unwrap();
        assert_eq!(url.as_str(), "wss://api.example.com/v1/listen");
        let provider = StreamingProvider::new("local", "http://127.0.0.1:9", None);
        let url = provider.url(&["a b", "c"]).unwrap();
        assert_eq!(url.as_str(), "ws://127.0.0.1:9/a%20b/c");
        let provider = StreamingProvider::new("x", "ftp://example.com", None);
        assert!(matches!(
            provider.url(&[]),
            Err(AgentError::Protocol { .. })
        ));
    }

    #[test]
    fn the_key_is_not_in_debug_and_is_scrubbed_from_errors() {
        let provider = StreamingProvider::new("acme", "https://x", Some("k-secret-1".into()));
        let shown = format!("{provider:?}");
        assert!(!shown.contains("k-secret-1"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let error = provider.protocol("bad url wss://x/?api_key=k-secret-1");
        assert!(!error.to_string().contains("k-secret-1"), "{error}");
        assert!(!StreamingProvider::new("a", "https://x", Some(String::new())).has_api_key());
    }

    #[test]
    fn error_details_prefer_the_message() {
        assert_eq!(
            error_detail(r#"{"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}"#),
            "Invalid credentials."
        );
        assert_eq!(
            error_detail(r#"{"detail": {"status": "x", "message": "voice not found"}}"#),
            "voice not found"
        );
        assert_eq!(error_detail(" Unauthorized \n"), "Unauthorized");
        assert_eq!(
            error_detail(&"é".repeat(1000)).chars().count(),
            ERROR_DETAIL_CHARS + 1
        );
    }

    #[test]
    fn close_codes_of_the_service_failing_may_be_retried() {
        let provider = StreamingProvider::new("dg", "https://x", None);
        assert!(
            provider
                .closed_with(CloseCode::Error, "internal")
                .is_retryable()
        );
        let error = provider.closed_with(CloseCode::Policy, "DATA-0000: bad audio");
        assert!(!error.is_retryable());
        assert!(
            error.to_string().contains("(1008): DATA-0000: bad audio"),
            "{error}"
        );
    }
}

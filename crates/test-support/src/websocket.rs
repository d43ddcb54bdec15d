//! What the scripted websocket peers (`deepgram`, `cartesia`, `elevenlabs`) share: a listener
//! on 127.0.0.1 (an ephemeral port) that records each upgrade request ([`Handshake`]: path,
//! query parameters, headers) and accepts it or refuses it with an HTTP status and body; a
//! record of the sessions that a test can wait on ([`Recorder`]); and the tone that stands for
//! speech: [`TONE_HZ`] at [`TONE_AMPLITUDE`], [`MS_PER_CHAR`] ms per character of text, so a
//! test can tell how much text was heard from how much audio played.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// Milliseconds of speech per character of text.
pub const MS_PER_CHAR: u64 = 60;

/// The frequency of the tone that stands for speech.
pub const TONE_HZ: f64 = 440.0;

/// The peak amplitude of the tone.
pub const TONE_AMPLITUDE: f64 = 8000.0;

/// Bytes of PCM per audio message (odd, so samples straddle messages).
pub const AUDIO_MESSAGE_BYTES: usize = 4801;

/// A websocket upgrade request as the peer received it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handshake {
    /// Its path.
    pub path: String,
    /// Its query parameters, decoded (a repeated one keeps its last value).
    pub query: BTreeMap<String, String>,
    /// Its headers, names lowercase (a repeated one keeps its last value).
    pub headers: BTreeMap<String, String>,
}

impl Handshake {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A query parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn of(request: &Request) -> Self {
        let query = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect();
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Self {
            path: request.uri().path().to_owned(),
            query,
            headers,
        }
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                at += 1;
            }
            _ => {
                out.push(b);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the peer answers an upgrade request.
pub(crate) enum Upgrade<T> {
    /// Accepts it; the session is then run with `T`.
    Accept(T),
    /// Refuses it with this status and body.
    Refuse(u16, String),
}

/// A connected websocket, the peer's side.
pub(crate) type Socket = WebSocketStream<TcpStream>;

/// Listens on 127.0.0.1; each upgrade request goes to `decide`, and an accepted one to
/// `session`. Aborting the returned task ends the listener and every session.
pub(crate) async fn listen<T, D, S, F>(
    decide: D,
    session: S,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)>
where
    T: Send + 'static,
    D: Fn(Handshake) -> Upgrade<T> + Send + Sync + 'static,
    S: Fn(T, Socket) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let decide = Arc::new(decide);
    let session = Arc::new(session);
    let task = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            // Its answers are small messages in a row: none held back for an ACK.
            let _ = stream.set_nodelay(true);
            let decide = Arc::clone(&decide);
            let session = Arc::clone(&session);
            sessions.spawn(async move {
                let mut accepted = None;
                #[allow(
                    clippy::result_large_err,
                    reason = "the error response is the type tungstenite's callback returns"
                )]
                let callback =
                    |request: &Request, response: Response| match decide(Handshake::of(request)) {
                        Upgrade::Accept(t) => {
                            accepted = Some(t);
                            Ok(response)
                        }
                        Upgrade::Refuse(status, body) => {
                            let mut refusal = ErrorResponse::new(Some(body));
                            *refusal.status_mut() = StatusCode::from_u16(status)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            Err(refusal)
                        }
                    };
                let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                if let Some(t) = accepted {
                    session(t, socket).await;
                }
            });
            while sessions.try_join_next().is_some() {}
        }
    });
    Ok((addr, task))
}

/// What a scripted peer keeps: the replies still to give, in order, and what each connection
/// showed.
#[derive(Debug, Clone)]
pub struct Script<R, S> {
    pub(crate) replies: std::collections::VecDeque<R>,
    pub(crate) sessions: Vec<S>,
}

impl<R, S> Default for Script<R, S> {
    fn default() -> Self {
        Self {
            replies: std::collections::VecDeque::new(),
            sessions: Vec::new(),
        }
    }
}

/// What a scripted peer records of one connection, which knows whether it has ended.
pub trait PeerSession: Clone + Send + 'static {
    /// Whether the connection has ended.
    fn is_ended(&self) -> bool;
    /// Marks the connection ended.
    fn set_ended(&mut self);
}

/// A scripted websocket peer on 127.0.0.1: each connection takes the next queued reply `R`
/// (or the peer's default) and is recorded as an `S`. It runs on the tokio runtime it was
/// started on and stops when dropped.
#[derive(Debug)]
pub struct ScriptedPeer<R, S> {
    addr: SocketAddr,
    record: Arc<Recorder<Script<R, S>>>,
    task: JoinHandle<()>,
}

impl<R, S> Drop for ScriptedPeer<R, S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<R: Clone + Send + 'static, S: PeerSession> ScriptedPeer<R, S> {
    /// Listens on a free port: `open` makes each upgrade request and its reply (`default()`
    /// when none is queued) into the connection's record and the answer to the upgrade; `run`
    /// then serves an accepted connection (its index among the records, its reply).
    pub(crate) async fn serve<O, F, Fut>(
        default: fn() -> R,
        open: O,
        run: F,
    ) -> std::io::Result<Self>
    where
        O: Fn(Handshake, R) -> (S, Upgrade<R>) + Send + Sync + 'static,
        F: Fn(Arc<Recorder<Script<R, S>>>, usize, R, Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let record = Arc::new(Recorder::<Script<R, S>>::default());
        let decide = {
            let record = Arc::clone(&record);
            move |handshake: Handshake| {
                record.update(|script| {
                    let reply = script.replies.pop_front().unwrap_or_else(default);
                    let index = script.sessions.len();
                    let (session, upgrade) = open(handshake, reply);
                    script.sessions.push(session);
                    match upgrade {
                        Upgrade::Accept(reply) => Upgrade::Accept((index, reply)),
                        Upgrade::Refuse(status, body) => Upgrade::Refuse(status, body),
                    }
                })
            }
        };
        let run = Arc::new(run);
        let session = {
            let record = Arc::clone(&record);
            move |(index, reply): (usize, R), socket: Socket| {
                let (record, run) = (Arc::clone(&record), Arc::clone(&run));
                async move {
                    run(Arc::clone(&record), index, reply, socket).await;
                    record.update(|script| {
                        if let Some(session) = script.sessions.get_mut(index) {
                            session.set_ended();
                        }
                    });
                }
            }
        };
        let (addr, task) = listen(decide, session).await?;
        Ok(Self { addr, record, task })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues the answer to the next connection.
    pub fn push(&self, reply: R) {
        self.record.update(|script| script.replies.push_back(reply));
    }

    /// Every connection so far, in the order they came.
    pub fn sessions(&self) -> Vec<S> {
        self.record.lock().sessions.clone()
    }

    /// Waits (at most `timeout`) until the `n`th connection (from 0) has ended, and returns it.
    pub async fn ended(&self, n: usize, timeout: Duration) -> Option<S> {
        self.record
            .wait(timeout, |script| {
                script.sessions.get(n).filter(|s| s.is_ended()).cloned()
            })
            .await
    }
}

/// A record the sessions update and the tests read, with a wait for it to change.
#[derive(Debug, Default)]
pub struct Recorder<T> {
    state: Mutex<T>,
    changed: Notify,
}

impl<T: Clone> Recorder<T> {
    /// The record.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the record and wakes whoever waits.
    pub fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        let out = change(&mut self.lock());
        self.changed.notify_waiters();
        out
    }

    /// Waits (at most `timeout`) until `check` finds what it looks for in the record.
    pub async fn wait<R>(&self, timeout: Duration, check: impl Fn(&T) -> Option<R>) -> Option<R> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = check(&self.lock()) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// The tone for `text`: 16-bit little-endian mono PCM at `rate`, [`MS_PER_CHAR`] ms per
/// character.
pub fn tone_pcm(text: &str, rate: u32) -> Vec<u8> {
    let samples = tone_samples(text, rate);
    let mut pcm = Vec::with_capacity(samples as usize * 2);
    for i in 0..samples {
        let t = i as f64 / f64::from(rate);
        let s = (TONE_AMPLITUDE * (2.0 * std::f64::consts::PI * TONE_HZ * t).sin()).round() as i16;
        pcm.extend_from_slice(&s.to_le_bytes());
    }
    pcm
}

/// Samples of the tone at `rate` for `text`.
pub fn tone_samples(text: &str, rate: u32) -> u64 {
    text.chars().count() as u64 * MS_PER_CHAR * u64::from(rate) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("en%2DUS+x"), "en-US x");
        assert_eq!(percent_decode("a%zz%"), "a%zz%");
    }

    #[test]
    fn the_tone_is_as_long_as_the_text() {
        assert_eq!(tone_samples("Hello.", 24_000), 8640);
        assert_eq!(tone_pcm("Hi", 16_000).len(), 2 * 1920);
    }
}

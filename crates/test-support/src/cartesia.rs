//! A scripted peer speaking Cartesia's real streaming wire protocol (`/tts/websocket`) on
//! 127.0.0.1, used in tests where the real service would need the internet.
//!
//! Each connection takes the next scripted [`CartesiaReply`] (by default the tone): it records
//! the upgrade ([`Handshake`], with `api_key` and `cartesia_version` in its query) and every
//! message in a [`CartesiaSession`]. A generation request is answered with `chunk` messages
//! (base64 16-bit PCM of the tone at the request's `output_format.sample_rate`,
//! [`MS_PER_CHAR`](crate::websocket::MS_PER_CHAR) ms per character of `transcript`, trimmed,
//! `delay` before each), then, with `add_timestamps: true`, a `timestamps` message (its words
//! timed as the tone says them, from the start of the context's audio, so a context's
//! continuations go on where the one before ended); a request with `continue: false` ends the
//! context with `done`, one with `continue: true` leaves it open for more. Or the request is
//! answered with an `error` message. A cancel for the context stops the chunks. Scripted
//! failures: an `error` message, a refused upgrade.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::websocket::{
    AUDIO_MESSAGE_BYTES, Handshake, MS_PER_CHAR, PeerSession, Recorder, ScriptedPeer, Socket,
    Upgrade, tone_pcm,
};

/// One scripted answer to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartesiaReply {
    /// The tone for the transcript, `delay` before each chunk, then `done`.
    Tone {
        /// The wait before each chunk.
        delay: Duration,
    },
    /// An `error` message with this `status_code` and `error` text.
    Error {
        /// Its `status_code`.
        status: u16,
        /// Its `error`.
        message: String,
    },
    /// The upgrade refused with this status and body.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The body.
        message: String,
    },
}

/// What the peer saw of one connection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CartesiaSession {
    /// The upgrade request.
    pub handshake: Handshake,
    /// The messages received, in order.
    pub messages: Vec<Value>,
    /// How many `chunk` messages were sent.
    pub chunks_sent: usize,
    /// How many `timestamps` messages were sent.
    pub timestamps_sent: usize,
    /// Whether a cancel came.
    pub cancelled: bool,
    /// Whether the client sent a close frame.
    pub client_closed: bool,
    /// Whether the connection has ended.
    pub ended: bool,
}

/// What the peer keeps.
type Script = crate::websocket::Script<CartesiaReply, CartesiaSession>;

impl CartesiaSession {
    /// The generation requests received (every message but cancels), in order.
    pub fn requests(&self) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|m| m.get("cancel").is_none())
            .collect()
    }
}

impl PeerSession for CartesiaSession {
    fn is_ended(&self) -> bool {
        self.ended
    }

    fn set_ended(&mut self) {
        self.ended = true;
    }
}

/// The scripted Cartesia peer; see the [module documentation](self).
pub type ScriptedCartesia = ScriptedPeer<CartesiaReply, CartesiaSession>;

impl ScriptedCartesia {
    /// Starts the peer on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        ScriptedPeer::serve(
            || CartesiaReply::Tone {
                delay: Duration::ZERO,
            },
            |handshake, reply| {
                let refused = matches!(reply, CartesiaReply::Refuse { .. });
                let session = CartesiaSession {
                    handshake,
                    ended: refused,
                    ..CartesiaSession::default()
                };
                let upgrade = match reply {
                    CartesiaReply::Refuse { status, message } => Upgrade::Refuse(status, message),
                    reply => Upgrade::Accept(reply),
                };
                (session, upgrade)
            },
            run,
        )
        .await
    }

    /// The base URL a client is given: `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

async fn run(
    record: Arc<Recorder<Script>>,
    index: usize,
    reply: CartesiaReply,
    mut socket: Socket,
) {
    let session = |change: &dyn Fn(&mut CartesiaSession)| {
        record.update(|script| {
            if let Some(session) = script.sessions.get_mut(index) {
                change(session);
            }
        });
    };
    let delay = match &reply {
        CartesiaReply::Tone { delay } => *delay,
        CartesiaReply::Error { .. } | CartesiaReply::Refuse { .. } => Duration::ZERO,
    };
    let mut pending: VecDeque<Value> = VecDeque::new();
    // Each context's audio so far, in ms.
    let mut contexts: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            incoming = socket.next() => match incoming {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    let cancel = value.get("cancel").and_then(Value::as_bool) == Some(true);
                    session(&|s| {
                        s.messages.push(value.clone());
                        s.cancelled |= cancel;
                    });
                    if cancel {
                        pending.clear();
                    } else {
                        pending.extend(answer(&reply, &value, &mut contexts));
                    }
                }
                Some(Ok(Message::Close(_))) => session(&|s| s.client_closed = true),
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep(delay), if !pending.is_empty() => {
                let Some(next) = pending.pop_front() else { continue };
                let kind = next.get("type").and_then(Value::as_str).map(str::to_owned);
                if socket.send(Message::text(next.to_string())).await.is_err() {
                    return;
                }
                match kind.as_deref() {
                    Some("chunk") => session(&|s| s.chunks_sent += 1),
                    Some("timestamps") => session(&|s| s.timestamps_sent += 1),
                    _ => {}
                }
            }
        }
    }
}

/// The messages answering a generation `request`; `contexts` keeps each context's audio so
/// far (ms), where its next words' times start.
fn answer(
    reply: &CartesiaReply,
    request: &Value,
    contexts: &mut HashMap<String, u64>,
) -> Vec<Value> {
    let context_id = request.get("context_id").cloned().unwrap_or(Value::Null);
    match reply {
        CartesiaReply::Error { status, message } => vec![json!({
            "type": "error", "context_id": context_id, "status_code": status,
            "done": true, "error": message,
        })],
        CartesiaReply::Tone { .. } | CartesiaReply::Refuse { .. } => {
            let transcript = request
                .get("transcript")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim();
            let rate = request
                .pointer("/output_format/sample_rate")
                .and_then(Value::as_u64)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(24_000);
            let mut out: Vec<Value> = tone_pcm(transcript, rate)
                .chunks(AUDIO_MESSAGE_BYTES)
                .map(|piece| {
                    json!({
                        "type": "chunk", "context_id": context_id, "status_code": 206,
                        "done": false, "step_time": 12.5,
                        "data": base64::engine::general_purpose::STANDARD.encode(piece),
                    })
                })
                .collect();
            let offset = contexts
                .entry(context_id.as_str().unwrap_or_default().to_owned())
                .or_default();
            if request.get("add_timestamps").and_then(Value::as_bool) == Some(true)
                && !transcript.is_empty()
            {
                let (words, start, end) = word_times(transcript, *offset);
                out.push(json!({
                    "type": "timestamps", "context_id": context_id, "status_code": 206,
                    "done": false,
                    "word_timestamps": {"words": words, "start": start, "end": end},
                }));
            }
            *offset += transcript.chars().count() as u64 * MS_PER_CHAR;
            if request.get("continue").and_then(Value::as_bool) != Some(true) {
                out.push(
                    json!({"type": "done", "context_id": context_id, "status_code": 200,
                                "done": true}),
                );
            }
            out
        }
    }
}

/// The words of `transcript` and their start and end times in seconds, as the tone says them
/// after `offset` ms.
fn word_times(transcript: &str, offset: u64) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    let mut at = 0u64;
    for piece in transcript.split(' ') {
        let chars = piece.chars().count() as u64;
        if chars > 0 {
            let start = (offset + at * MS_PER_CHAR) as f64 / 1000.0;
            out.0.push(piece.to_owned());
            out.1.push(start);
            out.2.push(start + (chars * MS_PER_CHAR) as f64 / 1000.0);
        }
        at += chars + 1;
    }
    out
}

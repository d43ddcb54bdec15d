//! A scripted peer speaking Cartesia's real streaming wire protocol (`/tts/websocket`) on
//! 127.0.0.1, used in tests where the real service would need the internet.
//!
//! Each connection takes the next scripted [`CartesiaReply`] (by default the tone): it records
//! the upgrade ([`Handshake`], with `api_key` and `cartesia_version` in its query) and every
//! message in a [`CartesiaSession`]. A generation request is answered with `chunk` messages
//! (base64 16-bit PCM of the tone at the request's `output_format.sample_rate`,
//! [`MS_PER_CHAR`](crate::websocket::MS_PER_CHAR) ms per character of `transcript`, `delay`
//! before each), then `done`; or with an `error` message. A cancel for the context stops the
//! chunks. Scripted failures: an `error` message, a refused upgrade.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::websocket::{
    AUDIO_MESSAGE_BYTES, Handshake, PeerSession, Recorder, ScriptedPeer, Socket, Upgrade, tone_pcm,
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
    /// Whether a cancel came.
    pub cancelled: bool,
    /// Whether the client sent a close frame.
    pub client_closed: bool,
    /// Whether the connection has ended.
    pub ended: bool,
}

/// What the peer keeps.
type Script = crate::websocket::Script<CartesiaReply, CartesiaSession>;

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
                        pending.extend(answer(&reply, &value));
                    }
                }
                Some(Ok(Message::Close(_))) => session(&|s| s.client_closed = true),
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep(delay), if !pending.is_empty() => {
                let Some(next) = pending.pop_front() else { continue };
                let chunk = next.get("type").and_then(Value::as_str) == Some("chunk");
                if socket.send(Message::text(next.to_string())).await.is_err() {
                    return;
                }
                if chunk {
                    session(&|s| s.chunks_sent += 1);
                }
            }
        }
    }
}

/// The messages answering a generation `request`.
fn answer(reply: &CartesiaReply, request: &Value) -> Vec<Value> {
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
                .unwrap_or_default();
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
            out.push(
                json!({"type": "done", "context_id": context_id, "status_code": 200,
                            "done": true}),
            );
            out
        }
    }
}

//! A scripted peer speaking ElevenLabs' real streaming wire protocol (the
//! `/v1/text-to-speech/{voice_id}/stream-input` websocket) on 127.0.0.1, used in tests where
//! the real service would need the internet.
//!
//! Each connection takes the next scripted [`ElevenLabsReply`] (by default the tone): it
//! records the upgrade ([`Handshake`]: the voice in the path, `model_id` and `output_format` in
//! the query, the `xi-api-key` header) and every message in an [`ElevenLabsSession`]. Text is
//! buffered; a message with `flush: true`, and the empty text that ends the input, make it
//! answer `{"audio": base64, "isFinal": null, …}` messages (16-bit PCM of the tone at the rate
//! of `output_format`, `pcm_<rate>`, [`MS_PER_CHAR`](crate::websocket::MS_PER_CHAR) ms per
//! character of the buffered text, trimmed, `delay` before each; with `sync_alignment=true` in
//! the query each carries its `alignment`, the characters whose audio starts in it, a space
//! after the text's last, with `charStartTimesMs` from the start of that message's audio and
//! `charsDurationsMs`); after the end of the input,
//! `{"isFinal": true}` and a normal close. Scripted failures: an error message then a close
//! 1008 (as for a bad voice or key), a refused upgrade.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::websocket::{
    AUDIO_MESSAGE_BYTES, Handshake, MS_PER_CHAR, PeerSession, Recorder, ScriptedPeer, Socket,
    Upgrade, tone_pcm,
};

/// One scripted answer to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElevenLabsReply {
    /// The tone for the text, `delay` before each audio message.
    Tone {
        /// The wait before each audio message.
        delay: Duration,
    },
    /// On the first text after the opening one: `{"message", "error", "code": 1008}`, then a
    /// close 1008 with `message` as the reason.
    Error {
        /// The message.
        message: String,
    },
    /// The upgrade refused with this status and `{"detail": {"status", "message"}}`.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The message.
        message: String,
    },
}

/// What the peer saw of one connection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ElevenLabsSession {
    /// The upgrade request.
    pub handshake: Handshake,
    /// The messages received, in order.
    pub messages: Vec<Value>,
    /// How many audio messages were sent.
    pub audio_sent: usize,
    /// Whether the client sent a close frame.
    pub client_closed: bool,
    /// Whether the connection has ended.
    pub ended: bool,
}

/// What the peer keeps.
type Script = crate::websocket::Script<ElevenLabsReply, ElevenLabsSession>;

impl PeerSession for ElevenLabsSession {
    fn is_ended(&self) -> bool {
        self.ended
    }

    fn set_ended(&mut self) {
        self.ended = true;
    }
}

/// The scripted ElevenLabs peer; see the [module documentation](self).
pub type ScriptedElevenLabs = ScriptedPeer<ElevenLabsReply, ElevenLabsSession>;

impl ScriptedElevenLabs {
    /// Starts the peer on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        ScriptedPeer::serve(
            || ElevenLabsReply::Tone {
                delay: Duration::ZERO,
            },
            |handshake, reply| {
                let refused = matches!(reply, ElevenLabsReply::Refuse { .. });
                let session = ElevenLabsSession {
                    handshake,
                    ended: refused,
                    ..ElevenLabsSession::default()
                };
                let upgrade = match reply {
                    ElevenLabsReply::Refuse { status, message } => Upgrade::Refuse(
                        status,
                        json!({"detail": {"status": "scripted", "message": message}}).to_string(),
                    ),
                    reply => Upgrade::Accept(reply),
                };
                (session, upgrade)
            },
            run,
        )
        .await
    }

    /// The base URL a client is given: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }
}

/// What goes out next.
enum Out {
    Message(Value),
    Close(CloseFrame),
}

async fn run(
    record: Arc<Recorder<Script>>,
    index: usize,
    reply: ElevenLabsReply,
    mut socket: Socket,
) {
    let session = |change: &dyn Fn(&mut ElevenLabsSession)| {
        record.update(|script| {
            if let Some(session) = script.sessions.get_mut(index) {
                change(session);
            }
        });
    };
    let delay = match &reply {
        ElevenLabsReply::Tone { delay } => *delay,
        ElevenLabsReply::Error { .. } | ElevenLabsReply::Refuse { .. } => Duration::ZERO,
    };
    let rate = socket_rate(&record, index);
    let aligned = record
        .lock()
        .sessions
        .get(index)
        .and_then(|s| s.handshake.param("sync_alignment").map(|v| v == "true"))
        .unwrap_or(false);
    let mut buffered = String::new();
    let mut texts = 0usize;
    let mut pending: VecDeque<Out> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            incoming = socket.next() => match incoming {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    session(&|s| s.messages.push(value.clone()));
                    let Some(piece) = value.get("text").and_then(Value::as_str) else {
                        continue;
                    };
                    texts += 1;
                    if let ElevenLabsReply::Error { message } = &reply {
                        if texts == 2 {
                            pending.push_back(Out::Message(json!({
                                "message": message, "error": "scripted_error", "code": 1008,
                            })));
                            pending.push_back(Out::Close(CloseFrame {
                                code: CloseCode::Policy,
                                reason: message.as_str().into(),
                            }));
                        }
                        continue;
                    }
                    let end = piece.is_empty();
                    if texts > 1 {
                        buffered.push_str(piece);
                    }
                    if end || value.get("flush").and_then(Value::as_bool) == Some(true) {
                        let text = std::mem::take(&mut buffered);
                        pending.extend(
                            audio(text.trim(), rate, aligned).into_iter().map(Out::Message),
                        );
                    }
                    if end {
                        pending.push_back(Out::Message(json!({"isFinal": true})));
                        pending.push_back(Out::Close(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        }));
                    }
                }
                Some(Ok(Message::Close(_))) => session(&|s| s.client_closed = true),
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep(delay), if !pending.is_empty() => {
                match pending.pop_front() {
                    Some(Out::Message(next)) => {
                        let is_audio = next.get("audio").is_some();
                        if socket.send(Message::text(next.to_string())).await.is_err() {
                            return;
                        }
                        if is_audio {
                            session(&|s| s.audio_sent += 1);
                        }
                    }
                    Some(Out::Close(frame)) => {
                        let _ = socket.close(Some(frame)).await;
                    }
                    None => {}
                }
            }
        }
    }
}

/// The rate of the connection's `output_format` (`pcm_<rate>`; 16 kHz otherwise).
fn socket_rate(record: &Recorder<Script>, index: usize) -> u32 {
    record
        .lock()
        .sessions
        .get(index)
        .and_then(|s| {
            s.handshake
                .param("output_format")?
                .strip_prefix("pcm_")?
                .parse()
                .ok()
        })
        .unwrap_or(16_000)
}

/// The audio messages for `text`, with their alignment when `aligned`.
fn audio(text: &str, rate: u32, aligned: bool) -> Vec<Value> {
    let pcm = tone_pcm(text, rate);
    let ms_at = |byte: usize| byte as f64 / 2.0 / f64::from(rate) * 1000.0;
    let mut chars: Vec<(char, u64)> = text.chars().map(|c| (c, MS_PER_CHAR)).collect();
    chars.push((' ', 0));
    let messages = pcm.chunks(AUDIO_MESSAGE_BYTES).count();
    pcm.chunks(AUDIO_MESSAGE_BYTES)
        .enumerate()
        .map(|(i, piece)| {
            let (from, to) = (
                ms_at(i * AUDIO_MESSAGE_BYTES),
                ms_at((i + 1) * AUDIO_MESSAGE_BYTES),
            );
            let alignment = aligned.then(|| {
                let mine: Vec<(char, f64, u64)> = chars
                    .iter()
                    .enumerate()
                    .map(|(j, &(c, length))| (c, (j as u64 * MS_PER_CHAR) as f64, length))
                    .filter(|&(_, start, _)| {
                        start >= from && (start < to || i + 1 == messages)
                    })
                    .collect();
                json!({
                    "chars": mine.iter().map(|(c, _, _)| c.to_string()).collect::<Vec<_>>(),
                    "charStartTimesMs": mine.iter().map(|(_, start, _)| (start - from).round()).collect::<Vec<_>>(),
                    "charsDurationsMs": mine.iter().map(|(_, _, length)| length).collect::<Vec<_>>(),
                })
            });
            json!({
                "audio": base64::engine::general_purpose::STANDARD.encode(piece),
                "isFinal": null,
                "normalizedAlignment": alignment,
                "alignment": alignment,
            })
        })
        .collect()
}

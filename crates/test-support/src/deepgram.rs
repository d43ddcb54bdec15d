//! A scripted peer speaking Deepgram's real streaming wire protocol (`/v1/listen` over a
//! websocket) on 127.0.0.1, used in tests where the real service would need the internet.
//!
//! Each connection takes the next scripted [`DeepgramReply`] (by default a transcript of no
//! words): it records the upgrade ([`Handshake`]), every binary frame of audio and every
//! control message (`Finalize`, `CloseStream`, `KeepAlive`) in a [`DeepgramSession`], with
//! when the first audio and each `Finalize` came (so a test sees audio streamed before the
//! utterance ended). Once half a second of an utterance's audio has come it sends an interim
//! result (all of what it will say, so a client may start on it). On `Finalize` it answers `Results` messages:
//! for each scripted segment an interim result (`is_final: false`, the segment's first word),
//! then the final one (`is_final: true`), the last with `from_finalize: true`; one connection
//! can carry several utterances, each ended by its `Finalize`. On `CloseStream` it sends
//! `Metadata` and closes normally.
//! Scripted failures: a refused upgrade (Deepgram's JSON error body), a close frame with an
//! error code, a peer that never answers.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::websocket::{Handshake, PeerSession, Recorder, ScriptedPeer, Socket, Upgrade};

/// One scripted answer to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeepgramReply {
    /// Final results with these transcripts once `Finalize` comes, the last `from_finalize`
    /// (none: one final result with an empty transcript); every `Finalize` gets these.
    Transcript(Vec<String>),
    /// A live connection of several utterances: the `n`th `Finalize` gets the `n`th list of
    /// transcripts (as [`DeepgramReply::Transcript`]), those past the end no words.
    Utterances(Vec<Vec<String>>),
    /// The final results only when `CloseStream` comes, none `from_finalize` (as when the
    /// finalisation's answer is lost), then `Metadata` and the close.
    OnClose(Vec<String>),
    /// The upgrade refused with this status and `{"err_code", "err_msg"}`.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The `err_msg`.
        message: String,
    },
    /// A close frame with this code and reason once the first audio comes.
    Close {
        /// The close code.
        code: u16,
        /// The reason.
        reason: String,
    },
    /// Accepts, reads everything, never answers.
    Hang,
}

/// What the peer saw of one connection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeepgramSession {
    /// The upgrade request.
    pub handshake: Handshake,
    /// Whether the upgrade was accepted.
    pub accepted: bool,
    /// The audio received (the binary frames' bytes, in order).
    pub audio: Vec<u8>,
    /// How many binary frames came.
    pub frames: usize,
    /// The control messages received, in order.
    pub messages: Vec<Value>,
    /// Bytes of audio received when the first `Finalize` came.
    pub audio_at_finalize: Option<usize>,
    /// When the first audio came.
    pub first_audio_at: Option<Instant>,
    /// When each `Finalize` came, with the bytes of audio received by then.
    pub finalized: Vec<(Instant, usize)>,
    /// How many interim results were sent while audio came (before a `Finalize`).
    pub live_interims: usize,
    /// Whether the client sent a close frame.
    pub client_closed: bool,
    /// Whether the connection has ended.
    pub ended: bool,
}

impl DeepgramSession {
    /// The audio received, as 16-bit little-endian samples.
    pub fn samples(&self) -> Vec<i16> {
        self.audio
            .chunks_exact(2)
            .filter_map(|b| Some(i16::from_le_bytes(b.try_into().ok()?)))
            .collect()
    }

    /// The `type`s of the control messages received, in order.
    pub fn message_types(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| {
                m.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    }
}

/// What the peer keeps.
type Script = crate::websocket::Script<DeepgramReply, DeepgramSession>;

impl PeerSession for DeepgramSession {
    fn is_ended(&self) -> bool {
        self.ended
    }

    fn set_ended(&mut self) {
        self.ended = true;
    }
}

/// The scripted Deepgram peer; see the [module documentation](self).
pub type ScriptedDeepgram = ScriptedPeer<DeepgramReply, DeepgramSession>;

impl ScriptedDeepgram {
    /// Starts the peer on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        ScriptedPeer::serve(
            || DeepgramReply::Transcript(Vec::new()),
            |handshake, reply| {
                let refused = matches!(reply, DeepgramReply::Refuse { .. });
                let session = DeepgramSession {
                    handshake,
                    accepted: !refused,
                    ended: refused,
                    ..DeepgramSession::default()
                };
                let upgrade = match reply {
                    DeepgramReply::Refuse { status, message } => Upgrade::Refuse(
                        status,
                        json!({"err_code": "SCRIPTED", "err_msg": message, "request_id": "scripted"})
                            .to_string(),
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

async fn run(
    record: Arc<Recorder<Script>>,
    index: usize,
    reply: DeepgramReply,
    mut socket: Socket,
) {
    let session = |change: &dyn Fn(&mut DeepgramSession)| {
        record.update(|script| {
            if let Some(session) = script.sessions.get_mut(index) {
                change(session);
            }
        });
    };
    let mut received = 0usize;
    // Bytes received at the last `Finalize`, and how many came.
    let mut finalized_at = 0usize;
    let mut finalizes = 0usize;
    let mut interim_sent = false;
    let segments_for = |n: usize| -> Vec<String> {
        match &reply {
            DeepgramReply::Transcript(segments) | DeepgramReply::OnClose(segments) => {
                segments.clone()
            }
            DeepgramReply::Utterances(utterances) => utterances.get(n).cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(bytes) => {
                received += bytes.len();
                session(&|s| {
                    s.audio.extend_from_slice(&bytes);
                    s.frames += 1;
                    s.first_audio_at.get_or_insert_with(Instant::now);
                });
                if let DeepgramReply::Close { code, reason } = &reply {
                    let frame = CloseFrame {
                        code: CloseCode::from(*code),
                        reason: reason.as_str().into(),
                    };
                    let _ = socket.close(Some(frame)).await;
                }
                // Half a second into an utterance: what it has heard so far.
                let upcoming = segments_for(finalizes);
                if !interim_sent && received - finalized_at >= 16_000 && !upcoming.is_empty() {
                    interim_sent = true;
                    session(&|s| s.live_interims += 1);
                    let interim = result(
                        &upcoming.join(" "),
                        false,
                        false,
                        false,
                        seconds(finalized_at, received),
                    );
                    if socket
                        .send(Message::text(interim.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let kind = value.get("type").and_then(Value::as_str).map(str::to_owned);
                session(&|s| {
                    if kind.as_deref() == Some("Finalize") {
                        s.audio_at_finalize.get_or_insert(received);
                        s.finalized.push((Instant::now(), received));
                    }
                    s.messages.push(value.clone());
                });
                let span = seconds(finalized_at, received);
                let answers = match (kind.as_deref(), &reply) {
                    (
                        Some("Finalize"),
                        DeepgramReply::Transcript(_) | DeepgramReply::Utterances(_),
                    ) => results(&segments_for(finalizes), span, true),
                    (Some("CloseStream"), DeepgramReply::OnClose(segments)) => {
                        results(segments, span, false)
                    }
                    _ => Vec::new(),
                };
                if kind.as_deref() == Some("Finalize") {
                    finalizes += 1;
                    finalized_at = received;
                    interim_sent = false;
                }
                for answer in answers {
                    if socket
                        .send(Message::text(answer.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if kind.as_deref() == Some("CloseStream") && reply != DeepgramReply::Hang {
                    let metadata = json!({"type": "Metadata", "request_id": "scripted",
                                          "duration": received as f64 / 32_000.0, "channels": 1});
                    let _ = socket.send(Message::text(metadata.to_string())).await;
                    let _ = socket.close(None).await;
                }
            }
            Message::Close(_) => {
                session(&|s| s.client_closed = true);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// The start and length in seconds of the audio between byte offsets `from` and `to`.
fn seconds(from: usize, to: usize) -> (f64, f64) {
    (
        from as f64 / 32_000.0,
        to.saturating_sub(from) as f64 / 32_000.0,
    )
}

/// One `Results` message.
fn result(
    transcript: &str,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
    (start, duration): (f64, f64),
) -> Value {
    json!({
        "type": "Results",
        "channel_index": [0, 1],
        "duration": duration,
        "start": start,
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.98,
                                      "words": []}]},
        "metadata": {"request_id": "scripted"},
    })
}

/// The `Results` messages for `segments` over `span` of audio: an interim then a final
/// result for each, the last final one `from_finalize` when `finalize`.
fn results(segments: &[String], span: (f64, f64), finalize: bool) -> Vec<Value> {
    if segments.is_empty() {
        return vec![result("", true, true, finalize, span)];
    }
    let mut out = Vec::new();
    for (n, segment) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        let first_word = segment.split(' ').next().unwrap_or_default();
        out.push(result(first_word, false, false, false, span));
        out.push(result(segment, true, last, last && finalize, span));
    }
    out
}

//! A scripted peer for the `builtin:agent` bench: a zero-latency OpenAI-compatible responder on
//! 127.0.0.1 that stands in for the agent's language model, speech recognition and speech
//! synthesis, so a bench measures the engine and not a service on the internet. It is not a
//! model: every answer is fixed and sent at once.
//!
//! [`ScriptedProvider::start`] serves, under `/v1`:
//!
//! * `POST /v1/chat/completions` — [`REPLY`]: with `"stream": true` as Server-Sent Events (one
//!   content chunk, a `stop` chunk, a usage chunk, `data: [DONE]`), otherwise as one JSON
//!   completion;
//! * `POST /v1/audio/transcriptions` — reads the upload whole and answers `{"text":
//!   TRANSCRIPT}`;
//! * `POST /v1/audio/speech` — [`SPEECH_RATE`] Hz 16-bit little-endian mono PCM: a
//!   [`TONE_HZ`] tone, [`SPEECH_MS_PER_CHAR`] ms per character of `input`, in one body.
//!
//! The reply's speech ([`reply_speech`]) lasts longer than a callee's pause, so every turn the
//! agent is still speaking when the callee's next talkspurt starts: each talkspurt measures a
//! turn (its end → the agent's first audio) and a barge-in (its start → the agent's audio
//! stopping), see [`crate::voice`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::LoadgenError;

/// What the model answers every turn: one sentence without a clause boundary, so it is spoken
/// as one piece of continuous audio.
pub const REPLY: &str = "Sure thing and I can tell you more about our plans";

/// What speech recognition hears in every utterance.
pub const TRANSCRIPT: &str = "Tell me more.";

/// The speech endpoint's sample rate (OpenAI's `pcm` format).
pub const SPEECH_RATE: u32 = 24_000;

/// Milliseconds of speech per character of `input`.
pub const SPEECH_MS_PER_CHAR: u64 = 60;

/// The frequency of the synthesised tone.
pub const TONE_HZ: f64 = 440.0;

/// The tone's peak amplitude.
const AMPLITUDE: f64 = 8000.0;

/// How long the agent speaks [`REPLY`].
pub fn reply_speech() -> Duration {
    Duration::from_millis(REPLY.chars().count() as u64 * SPEECH_MS_PER_CHAR)
}

/// Requests answered, by endpoint.
#[derive(Debug, Default)]
struct Counts {
    chat: AtomicU64,
    transcriptions: AtomicU64,
    speech: AtomicU64,
}

/// Requests the scripted provider answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProviderRequests {
    /// Chat completions (turns, and the summary after each call).
    pub chat: u64,
    /// Transcriptions (utterances).
    pub transcriptions: u64,
    /// Speech syntheses.
    pub speech: u64,
}

/// The responder, serving until dropped.
#[derive(Debug)]
pub struct ScriptedProvider {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedProvider {
    /// Serves on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Result<Self, LoadgenError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(LoadgenError::io("binding the scripted provider"))?;
        let addr = listener
            .local_addr()
            .map_err(LoadgenError::io("the scripted provider's address"))?;
        let counts = Arc::new(Counts::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/audio/transcriptions", post(transcription))
            .route("/v1/audio/speech", post(speech))
            .layer(DefaultBodyLimit::disable())
            .with_state(counts.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "the scripted provider stopped");
            }
        });
        Ok(Self { addr, counts, task })
    }

    /// The base URL of an `openai` provider pointing here.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> ProviderRequests {
        ProviderRequests {
            chat: self.counts.chat.load(Ordering::Relaxed),
            transcriptions: self.counts.transcriptions.load(Ordering::Relaxed),
            speech: self.counts.speech.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ScriptedProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn chat(State(counts): State<Arc<Counts>>, Json(body): Json<Value>) -> Response {
    counts.chat.fetch_add(1, Ordering::Relaxed);
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return Json(json!({
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }))
        .into_response();
    }
    let chunk = |choices: Value, usage: Value| {
        json!({
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": choices,
            "usage": usage,
        })
    };
    let events = [
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": REPLY}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            Value::Null,
        ),
        chunk(
            json!([]),
            json!({"prompt_tokens": 1, "completion_tokens": 1}),
        ),
    ];
    let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    text.push_str("data: [DONE]\n\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        text,
    )
        .into_response()
}

async fn transcription(State(counts): State<Arc<Counts>>, _upload: Bytes) -> Json<Value> {
    counts.transcriptions.fetch_add(1, Ordering::Relaxed);
    Json(json!({"text": TRANSCRIPT}))
}

async fn speech(State(counts): State<Arc<Counts>>, Json(body): Json<Value>) -> Response {
    counts.speech.fetch_add(1, Ordering::Relaxed);
    let chars = body
        .get("input")
        .and_then(Value::as_str)
        .map_or(0, |t| t.chars().count()) as u64;
    let samples = chars * SPEECH_MS_PER_CHAR * u64::from(SPEECH_RATE) / 1000;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "audio/pcm")],
        Body::from(tone(samples)),
    )
        .into_response()
}

/// `samples` of the tone as 16-bit little-endian PCM.
fn tone(samples: u64) -> Vec<u8> {
    let step = std::f64::consts::TAU * TONE_HZ / f64::from(SPEECH_RATE);
    (0..samples)
        .flat_map(|n| ((AMPLITUDE * (step * n as f64).sin()) as i16).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_outlasts_a_callees_pause() {
        assert!(reply_speech() > crate::voice::PAUSE, "{:?}", reply_speech());
        assert!(
            !REPLY.contains([',', ';', ':', '.', '!', '?']),
            "one piece of speech"
        );
    }

    #[test]
    fn the_tone_is_as_long_as_asked() {
        let pcm = tone(2400);
        assert_eq!(pcm.len(), 4800);
        let peak = pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs())
            .max();
        assert!(peak > Some(7900), "{peak:?}");
    }
}

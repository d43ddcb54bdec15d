//! [`DeepgramTranscriber`]: Deepgram's streaming speech recognition (`kind: deepgram`) over
//! its websocket, `{base_url}/listen` (`https` becomes `wss`).
//!
//! Per utterance it connects with `encoding=linear16&sample_rate=16000&channels=1`, the
//! `model`, the `language` (when known), `interim_results=true` and `punctuate=true`, sends
//! `Authorization: Token <key>`, streams the audio as binary frames of 100 ms, then
//! `{"type": "Finalize"}` and `{"type": "CloseStream"}`. The transcript is the `Results`
//! messages with `is_final: true`, joined with spaces, up to the one with `from_finalize: true`
//! (or, failing that, until Deepgram closes the stream after flushing). A refused upgrade
//! (401 for a bad key…) is [`AgentError::Status`]; no answer within the timeout,
//! [`AgentError::Timeout`].
//!
//! Known limitation: the engine's own voice activity detection endpoints the caller's speech,
//! and each utterance is streamed only once it has ended. Deepgram's interim results, its
//! `endpointing` and `utterance_end_ms`, and preemptive generation on interim text are not
//! used yet (a socket kept open for the whole call, fed live, with `KeepAlive` in the
//! silences, would need a streaming [`SpeechToText`] trait); the gain over an upload is
//! Deepgram's speed, and the connection is opened anew for each utterance.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::error::AgentError;
use crate::pcm::ENGINE_RATE;
use crate::provider::{BoxFuture, SpeechToText};
use crate::ws::{Incoming, StreamingProvider, language_tag};

/// Deepgram's API, for a provider that names no base URL.
pub const DEEPGRAM_BASE_URL: &str = "https://api.deepgram.com/v1";

/// Default wait for a transcript: the connection, the audio sent and the final result.
pub const DEFAULT_DEEPGRAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples per binary frame sent (100 ms at 16 kHz).
const FRAME_SAMPLES: usize = ENGINE_RATE as usize / 10;

/// Deepgram speech recognition, made for one agent's `stt` setting.
#[derive(Debug, Clone)]
pub struct DeepgramTranscriber {
    provider: StreamingProvider,
    model: String,
    timeout: Duration,
}

impl DeepgramTranscriber {
    /// `model` (e.g. `nova-3`) at `provider` (whose base URL is like [`DEEPGRAM_BASE_URL`]).
    pub fn new(provider: StreamingProvider, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            timeout: DEFAULT_DEEPGRAM_TIMEOUT,
        }
    }

    /// How long a transcription may take ([`DEFAULT_DEEPGRAM_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn run(&self, audio: Vec<i16>, language: Option<String>) -> Result<String, AgentError> {
        let provider = &self.provider;
        let mut url = provider.url(&["listen"])?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("encoding", "linear16")
                .append_pair("sample_rate", &ENGINE_RATE.to_string())
                .append_pair("channels", "1")
                .append_pair("model", &self.model);
            if let Some(language) = language.as_deref().and_then(language_tag) {
                query.append_pair("language", &language);
            }
            query
                .append_pair("interim_results", "true")
                .append_pair("punctuate", "true");
        }
        let headers: Vec<(&'static str, String)> = provider
            .api_key()
            .map(|key| ("authorization", format!("Token {key}")))
            .into_iter()
            .collect();
        let limit = self.timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let mut socket = provider.connect(&url, &headers, limit).await?;
        let send_all = async {
            for frame in audio.chunks(FRAME_SAMPLES) {
                let bytes: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
                socket.feed(Message::binary(bytes)).await?;
            }
            socket
                .feed(Message::text(json!({"type": "Finalize"}).to_string()))
                .await?;
            socket
                .send(Message::text(json!({"type": "CloseStream"}).to_string()))
                .await
        };
        tokio::time::timeout_at(deadline, send_all)
            .await
            .map_err(|_| provider.timeout(limit))?
            .map_err(|e| provider.ws_error(e))?;
        let mut finals: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = match provider.next(&mut socket, left).await {
                Err(AgentError::Timeout { .. }) => return Err(provider.timeout(limit)),
                other => other?,
            };
            let text = match message {
                Incoming::Closed => break,
                Incoming::Binary(_) => continue,
                Incoming::Text(text) => text,
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| provider.protocol(format!("a message that is not JSON: {e}")))?;
            match value.get("type").and_then(Value::as_str) {
                Some("Results") => {
                    if value.get("is_final").and_then(Value::as_bool) == Some(true) {
                        let transcript = value
                            .pointer("/channel/alternatives/0/transcript")
                            .and_then(Value::as_str)
                            .map(str::trim)
                            .unwrap_or_default();
                        if !transcript.is_empty() {
                            finals.push(transcript.to_owned());
                        }
                    }
                    if value.get("from_finalize").and_then(Value::as_bool) == Some(true) {
                        break;
                    }
                }
                Some("Metadata") => break,
                Some("Error") => {
                    let detail = ["description", "message", "err_msg"]
                        .iter()
                        .find_map(|key| value.get(key).and_then(Value::as_str))
                        .unwrap_or("an error without a description");
                    return Err(provider.protocol(format!("it reported an error: {detail}")));
                }
                _ => {}
            }
        }
        provider.goodbye(&mut socket, None).await;
        Ok(finals.join(" "))
    }
}

impl SpeechToText for DeepgramTranscriber {
    fn transcribe(
        &self,
        audio: Vec<i16>,
        language: Option<String>,
    ) -> BoxFuture<'static, Result<String, AgentError>> {
        let this = self.clone();
        Box::pin(async move { this.run(audio, language).await })
    }
}

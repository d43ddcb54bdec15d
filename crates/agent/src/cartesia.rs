//! [`CartesiaSpeech`]: Cartesia's streaming speech synthesis (`kind: cartesia`) over its
//! websocket, `{base_url}/tts/websocket?api_key=…&cartesia_version=2024-06-10` (`https`
//! becomes `wss`).
//!
//! Each piece of speech is one context on its own connection: one generation request
//! (`model_id`, `transcript`, `voice: {"mode": "id", "id"}`, `language`, raw `pcm_s16le` at
//! 24 kHz, a `context_id`, `continue: false`), answered by `chunk` messages (base64 audio),
//! then `done`; an `error` message is one [`AgentError`] (its `status_code` as
//! [`AgentError::Status`]). The audio is resampled to 16 kHz and handed on in chunks of about
//! 100 ms as it comes. Dropping the receiver (barge-in) sends `{"context_id", "cancel": true}`
//! and closes the connection.
//!
//! Not used yet: word timestamps (the engine finds a barge-in's cut from what its playout
//! dropped) and continuations of one context across the pieces of a turn (the
//! [`TextToSpeech`] trait speaks one piece at a time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::openai::transcribe::iso_639_1;
use crate::pcm::{ENGINE_RATE, PcmResampler};
use crate::provider::TextToSpeech;
use crate::ws::{Incoming, Socket, StreamingProvider};

/// Cartesia's API, for a provider that names no base URL.
pub const CARTESIA_BASE_URL: &str = "https://api.cartesia.ai";

/// The API version asked for.
pub const CARTESIA_VERSION: &str = "2024-06-10";

/// The model asked for when the agent names none.
pub const DEFAULT_CARTESIA_MODEL: &str = "sonic-2";

/// The voice asked for when the agent has none (a voice of Cartesia's library, the one its
/// documentation's examples use).
pub const DEFAULT_CARTESIA_VOICE: &str = "a0e99841-438c-4a64-b679-ae501e7d6091";

/// The rate of the PCM asked for.
pub const CARTESIA_PCM_RATE: u32 = 24_000;

/// Default wait for the connection, the first audio, and each next piece of it.
pub const DEFAULT_CARTESIA_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples per chunk handed on (100 ms at 16 kHz).
const CHUNK_SAMPLES: usize = ENGINE_RATE as usize / 10;

/// Tells the contexts of this process apart in logs (each has a connection of its own).
static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(1);

/// A Cartesia speech synthesiser, made for one agent's `tts` setting.
#[derive(Debug, Clone)]
pub struct CartesiaSpeech {
    provider: StreamingProvider,
    model: String,
    timeout: Duration,
}

impl CartesiaSpeech {
    /// [`DEFAULT_CARTESIA_MODEL`] at `provider` (whose base URL is like [`CARTESIA_BASE_URL`]).
    pub fn new(provider: StreamingProvider) -> Self {
        Self {
            provider,
            model: DEFAULT_CARTESIA_MODEL.into(),
            timeout: DEFAULT_CARTESIA_TIMEOUT,
        }
    }

    /// Another model (`sonic-turbo`…).
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// How long the connection, the first audio, and each next piece may take
    /// ([`DEFAULT_CARTESIA_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn run(
        &self,
        text: String,
        voice: String,
        language: Option<String>,
        tx: &mpsc::Sender<Result<Vec<i16>, AgentError>>,
    ) -> Result<(), AgentError> {
        let provider = &self.provider;
        let mut pcm = PcmResampler::new(CARTESIA_PCM_RATE)
            .map_err(|e| provider.protocol(format!("resampling: {e}")))?;
        let mut url = provider.url(&["tts", "websocket"])?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(key) = provider.api_key() {
                query.append_pair("api_key", key);
            }
            query.append_pair("cartesia_version", CARTESIA_VERSION);
        }
        let limit = self.timeout;
        let mut socket = tokio::select! {
            socket = provider.connect(&url, &[], limit) => socket?,
            () = tx.closed() => return Ok(()),
        };
        let context_id = format!("dialtone-{}", NEXT_CONTEXT.fetch_add(1, Ordering::Relaxed));
        let mut request = json!({
            "model_id": self.model,
            "transcript": text,
            "voice": {"mode": "id", "id": voice},
            "output_format": {
                "container": "raw",
                "encoding": "pcm_s16le",
                "sample_rate": CARTESIA_PCM_RATE,
            },
            "context_id": context_id,
            "continue": false,
        });
        if let (Some(language), Some(fields)) = (language, request.as_object_mut()) {
            fields.insert("language".into(), Value::String(language));
        }
        provider.send_json(&mut socket, &request).await?;
        let cancel = json!({"context_id": context_id, "cancel": true});
        loop {
            let message = tokio::select! {
                message = provider.next(&mut socket, limit) => message?,
                () = tx.closed() => {
                    provider.goodbye(&mut socket, Some(&cancel)).await;
                    return Ok(());
                }
            };
            let text = match message {
                Incoming::Text(text) => text,
                Incoming::Binary(_) => continue,
                Incoming::Closed => {
                    return Err(AgentError::Unreachable {
                        provider: provider.name().to_owned(),
                        detail: "the connection closed before the speech was done".into(),
                    });
                }
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| provider.protocol(format!("a message that is not JSON: {e}")))?;
            match value.get("type").and_then(Value::as_str) {
                Some("chunk") => {
                    let data = value
                        .get("data")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_err(|e| provider.protocol(format!("audio that is not base64: {e}")))?;
                    pcm.push_bytes(&bytes);
                    if let Some(samples) = pcm.take_chunk(CHUNK_SAMPLES)
                        && !hand_on(provider, &mut socket, tx, samples, &cancel).await
                    {
                        return Ok(());
                    }
                }
                Some("done") => break,
                Some("error") => return Err(error_message(provider, &value)),
                _ => {}
            }
        }
        let rest = pcm.finish();
        if !rest.is_empty() {
            let _ = tx.send(Ok(rest)).await;
        }
        provider.goodbye(&mut socket, None).await;
        Ok(())
    }
}

/// Hands `samples` on; when nobody listens any more, cancels and closes, and says so (false).
async fn hand_on(
    provider: &StreamingProvider,
    socket: &mut Socket,
    tx: &mpsc::Sender<Result<Vec<i16>, AgentError>>,
    samples: Vec<i16>,
    cancel: &Value,
) -> bool {
    if tx.send(Ok(samples)).await.is_ok() {
        return true;
    }
    provider.goodbye(socket, Some(cancel)).await;
    false
}

/// Cartesia's `error` message: its `status_code` (when an HTTP error status) as
/// [`AgentError::Status`], else a protocol error; the detail is its `error` text.
fn error_message(provider: &StreamingProvider, value: &Value) -> AgentError {
    let detail = value
        .get("error")
        .and_then(Value::as_str)
        .or_else(|| value.get("message").and_then(Value::as_str))
        .unwrap_or("an error without a message");
    let status = value
        .get("status_code")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (400..600).contains(s));
    match status {
        Some(status) => provider.status(status, detail),
        None => provider.protocol(format!("it reported an error: {detail}")),
    }
}

impl TextToSpeech for CartesiaSpeech {
    fn speak(
        &self,
        text: &str,
        voice: Option<&str>,
        language: Option<&str>,
    ) -> mpsc::Receiver<Result<Vec<i16>, AgentError>> {
        let (tx, rx) = mpsc::channel(16);
        let text = text.to_owned();
        let voice = voice
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_CARTESIA_VOICE)
            .to_owned();
        let language = language.and_then(iso_639_1);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.run(text, voice, language, &tx).await {
                tracing::debug!(%error, "text to speech failed");
                let _ = tx.send(Err(error)).await;
            }
        });
        rx
    }
}

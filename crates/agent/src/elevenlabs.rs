//! [`ElevenLabsSpeech`]: ElevenLabs' streaming speech synthesis (`kind: elevenlabs`) over its
//! `stream-input` websocket, `{base_url}/text-to-speech/{voice_id}/stream-input?model_id=…&
//! output_format=pcm_16000` (`https` becomes `wss`), the key as the `xi-api-key` header.
//!
//! Each piece of speech has its own connection: `{"text": " "}` opens it, the text follows
//! (ending with a space, as the protocol wants, with `flush: true`), and `{"text": ""}` ends the
//! input. The answers are `{"audio": base64, "isFinal": …}` messages, 16 kHz 16-bit PCM (the
//! engine's rate, so nothing is resampled) handed on in chunks of about 100 ms as they come,
//! until `"isFinal": true` or the service closes the connection after the last audio. An error
//! message (`{"message" | "error", …}`) or a close frame with an error code is one
//! [`AgentError`]; a refused upgrade, [`AgentError::Status`]. Dropping the receiver (barge-in)
//! closes the connection, which stops the generation.
//!
//! Not used yet: the alignment (character timestamps) of each audio message, `language_code`
//! (only some models take it; the voice and model decide the language), and one connection
//! fed a whole turn's text as the model streams it.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::pcm::ENGINE_RATE;
use crate::provider::TextToSpeech;
use crate::ws::{Incoming, StreamingProvider};

/// ElevenLabs' API, for a provider that names no base URL.
pub const ELEVENLABS_BASE_URL: &str = "https://api.elevenlabs.io/v1";

/// The model asked for when the agent names none.
pub const DEFAULT_ELEVENLABS_MODEL: &str = "eleven_flash_v2_5";

/// The voice asked for when the agent has none (one of ElevenLabs' premade voices).
pub const DEFAULT_ELEVENLABS_VOICE: &str = "21m00Tcm4TlvDq8ikWAM";

/// The output format asked for: PCM at the engine's rate.
pub const ELEVENLABS_OUTPUT_FORMAT: &str = "pcm_16000";

/// Default wait for the connection, the first audio, and each next piece of it.
pub const DEFAULT_ELEVENLABS_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples per chunk handed on (100 ms at 16 kHz).
const CHUNK_SAMPLES: usize = ENGINE_RATE as usize / 10;

/// An ElevenLabs speech synthesiser, made for one agent's `tts` setting.
#[derive(Debug, Clone)]
pub struct ElevenLabsSpeech {
    provider: StreamingProvider,
    model: String,
    timeout: Duration,
}

impl ElevenLabsSpeech {
    /// [`DEFAULT_ELEVENLABS_MODEL`] at `provider` (whose base URL is like
    /// [`ELEVENLABS_BASE_URL`]).
    pub fn new(provider: StreamingProvider) -> Self {
        Self {
            provider,
            model: DEFAULT_ELEVENLABS_MODEL.into(),
            timeout: DEFAULT_ELEVENLABS_TIMEOUT,
        }
    }

    /// Another model (`eleven_turbo_v2_5`, `eleven_multilingual_v2`…).
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// How long the connection, the first audio, and each next piece may take
    /// ([`DEFAULT_ELEVENLABS_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn run(
        &self,
        text: String,
        voice: String,
        tx: &mpsc::Sender<Result<Vec<i16>, AgentError>>,
    ) -> Result<(), AgentError> {
        let provider = &self.provider;
        let mut url = provider.url(&["text-to-speech", &voice, "stream-input"])?;
        url.query_pairs_mut()
            .append_pair("model_id", &self.model)
            .append_pair("output_format", ELEVENLABS_OUTPUT_FORMAT);
        let headers: Vec<(&'static str, String)> = provider
            .api_key()
            .map(|key| ("xi-api-key", key.to_owned()))
            .into_iter()
            .collect();
        let limit = self.timeout;
        let mut socket = tokio::select! {
            socket = provider.connect(&url, &headers, limit) => socket?,
            () = tx.closed() => return Ok(()),
        };
        let text = format!("{} ", text.trim());
        for message in [
            json!({"text": " "}),
            json!({"text": text, "flush": true}),
            json!({"text": ""}),
        ] {
            provider.send_json(&mut socket, &message).await?;
        }
        let mut odd: Option<u8> = None;
        let mut out: Vec<i16> = Vec::new();
        loop {
            let message = tokio::select! {
                message = provider.next(&mut socket, limit) => message?,
                () = tx.closed() => {
                    provider.goodbye(&mut socket, None).await;
                    return Ok(());
                }
            };
            let text = match message {
                Incoming::Text(text) => text,
                Incoming::Binary(_) => continue,
                Incoming::Closed => break,
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| provider.protocol(format!("a message that is not JSON: {e}")))?;
            if let Some(detail) = ["message", "error"]
                .iter()
                .find_map(|key| value.get(key).and_then(Value::as_str))
            {
                return Err(provider.protocol(format!("it reported an error: {detail}")));
            }
            if let Some(data) = value.get("audio").and_then(Value::as_str) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| provider.protocol(format!("audio that is not base64: {e}")))?;
                for b in bytes {
                    match odd.take() {
                        None => odd = Some(b),
                        Some(lo) => out.push(i16::from_le_bytes([lo, b])),
                    }
                }
                if out.len() >= CHUNK_SAMPLES
                    && tx.send(Ok(std::mem::take(&mut out))).await.is_err()
                {
                    provider.goodbye(&mut socket, None).await;
                    return Ok(());
                }
            }
            if value.get("isFinal").and_then(Value::as_bool) == Some(true) {
                break;
            }
        }
        if !out.is_empty() {
            let _ = tx.send(Ok(out)).await;
        }
        provider.goodbye(&mut socket, None).await;
        Ok(())
    }
}

impl TextToSpeech for ElevenLabsSpeech {
    fn speak(
        &self,
        text: &str,
        voice: Option<&str>,
        _language: Option<&str>,
    ) -> mpsc::Receiver<Result<Vec<i16>, AgentError>> {
        let (tx, rx) = mpsc::channel(16);
        let text = text.to_owned();
        let voice = voice
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_ELEVENLABS_VOICE)
            .to_owned();
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.run(text, voice, &tx).await {
                tracing::debug!(%error, "text to speech failed");
                let _ = tx.send(Err(error)).await;
            }
        });
        rx
    }
}

//! [`OpenAiSpeech`]: `POST {base_url}/audio/speech` with `response_format: "pcm"`. The answer
//! (24 kHz 16-bit little-endian mono) is read as it streams, resampled to 16 kHz in 20 ms
//! frames and handed on in chunks of about 100 ms, so the first words play while the rest is
//! still being made.

use std::time::Duration;

use dialtone_codec::PcmResampler;
use serde_json::json;
use tokio::sync::mpsc;

use super::OpenAiProvider;
use crate::error::AgentError;
use crate::provider::{ENGINE_RATE, TextToSpeech};

/// The model asked for when the agent names none.
pub const DEFAULT_SPEECH_MODEL: &str = "tts-1";

/// The voice asked for when the agent has none.
pub const DEFAULT_VOICE: &str = "alloy";

/// The rate of OpenAI's `pcm` response format.
pub const SPEECH_PCM_RATE: u32 = 24_000;

/// Default wait for the first audio, and for each next piece of it.
pub const DEFAULT_SPEECH_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples per chunk handed on (100 ms at 16 kHz).
const CHUNK_SAMPLES: usize = ENGINE_RATE as usize / 10;

/// A speech synthesiser on an OpenAI-compatible server, made for one agent's `tts` setting.
#[derive(Debug, Clone)]
pub struct OpenAiSpeech {
    provider: OpenAiProvider,
    model: String,
    timeout: Duration,
}

impl OpenAiSpeech {
    /// [`DEFAULT_SPEECH_MODEL`] at `provider`.
    pub fn new(provider: OpenAiProvider) -> Self {
        Self {
            provider,
            model: DEFAULT_SPEECH_MODEL.into(),
            timeout: DEFAULT_SPEECH_TIMEOUT,
        }
    }

    /// Another model (`tts-1-hd`, `kokoro`…).
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// How long the first audio, and each next piece, may take ([`DEFAULT_SPEECH_TIMEOUT`]).
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
        let mut pcm = PcmResampler::new(SPEECH_PCM_RATE, ENGINE_RATE)
            .map_err(|e| self.provider.protocol(format!("resampling: {e}")))?;
        let body = json!({
            "model": self.model,
            "input": text,
            "voice": voice,
            "response_format": "pcm",
        });
        let limit = self.timeout;
        let request = self.provider.post("/audio/speech").json(&body);
        let mut response = self.provider.send(request, limit).await?;
        loop {
            let chunk = tokio::time::timeout(limit, response.chunk())
                .await
                .map_err(|_| self.provider.timeout(limit))?
                .map_err(|e| self.provider.transport_error(&e, limit))?;
            let Some(chunk) = chunk else {
                break;
            };
            pcm.push_bytes(&chunk);
            if let Some(samples) = pcm.take_chunk(CHUNK_SAMPLES)
                && tx.send(Ok(samples)).await.is_err()
            {
                return Ok(());
            }
        }
        let rest = pcm.finish();
        if !rest.is_empty() {
            let _ = tx.send(Ok(rest)).await;
        }
        Ok(())
    }
}

impl TextToSpeech for OpenAiSpeech {
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
            .unwrap_or(DEFAULT_VOICE)
            .to_owned();
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = this.run(text, voice, &tx) => outcome,
                () = tx.closed() => Ok(()),
            };
            if let Err(error) = outcome {
                tracing::debug!(%error, "text to speech failed");
                let _ = tx.send(Err(error)).await;
            }
        });
        rx
    }
}

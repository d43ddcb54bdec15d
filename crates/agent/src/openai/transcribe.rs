//! [`OpenAiTranscriber`]: one endpointed utterance, uploaded as a 16 kHz mono WAV to
//! `POST {base_url}/audio/transcriptions` (multipart: `file`, `model`, `language`,
//! `response_format=json`); the answer's `text` is what was said.

use std::time::Duration;

use serde_json::Value;

use super::OpenAiProvider;
use crate::error::AgentError;
use crate::provider::ENGINE_RATE;
use crate::provider::{BoxFuture, SpeechToText};
use crate::wav::encode_wav;

/// Default wait for a transcript (the upload included).
pub const DEFAULT_TRANSCRIPTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Speech recognition on an OpenAI-compatible server, made for one agent's `stt` setting.
#[derive(Debug, Clone)]
pub struct OpenAiTranscriber {
    provider: OpenAiProvider,
    model: String,
    timeout: Duration,
}

impl OpenAiTranscriber {
    /// `model` (e.g. `whisper-1`) at `provider`.
    pub fn new(provider: OpenAiProvider, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            timeout: DEFAULT_TRANSCRIPTION_TIMEOUT,
        }
    }

    /// How long a transcription may take ([`DEFAULT_TRANSCRIPTION_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn run(&self, audio: Vec<i16>, language: Option<String>) -> Result<String, AgentError> {
        let file = reqwest::multipart::Part::bytes(encode_wav(&audio, ENGINE_RATE))
            .file_name("utterance.wav")
            .mime_str("audio/wav")
            .map_err(|e| self.provider.protocol(format!("the upload: {e}")))?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.model.clone())
            .text("response_format", "json");
        if let Some(language) = language.as_deref().and_then(iso_639_1) {
            form = form.text("language", language);
        }
        let limit = self.timeout;
        let started = tokio::time::Instant::now();
        let request = self.provider.post("/audio/transcriptions").multipart(form);
        let response = self.provider.send(request, limit).await?;
        let left = limit.saturating_sub(started.elapsed());
        let answer: Value = tokio::time::timeout(left, response.json())
            .await
            .map_err(|_| self.provider.timeout(limit))?
            .map_err(|e| self.provider.transport_error(&e, limit))?;
        answer
            .get("text")
            .and_then(Value::as_str)
            .map(|t| t.trim().to_owned())
            .ok_or_else(|| {
                self.provider
                    .protocol("the transcription answer has no text")
            })
    }
}

impl SpeechToText for OpenAiTranscriber {
    fn transcribe(
        &self,
        audio: Vec<i16>,
        language: Option<String>,
    ) -> BoxFuture<'static, Result<String, AgentError>> {
        let this = self.clone();
        Box::pin(async move { this.run(audio, language).await })
    }
}

/// The ISO 639-1 code OpenAI wants from a BCP 47 tag: its primary subtag, lowercased, when it
/// is two letters (`en-US` → `en`); `None` otherwise (the server then detects the language).
pub fn iso_639_1(tag: &str) -> Option<String> {
    let primary = tag.split(['-', '_']).next()?;
    (primary.len() == 2 && primary.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| primary.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_subtag_of_a_language_tag() {
        assert_eq!(iso_639_1("en-US").as_deref(), Some("en"));
        assert_eq!(iso_639_1("PT_br").as_deref(), Some("pt"));
        assert_eq!(iso_639_1("de").as_deref(), Some("de"));
        assert_eq!(iso_639_1("yue-HK"), None, "three letters: not ISO 639-1");
        assert_eq!(iso_639_1(""), None);
    }
}

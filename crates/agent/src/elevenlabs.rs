//! [`ElevenLabsSpeech`]: ElevenLabs' streaming speech synthesis (`kind: elevenlabs`) over its
//! `stream-input` websocket, `{base_url}/text-to-speech/{voice_id}/stream-input?model_id=…&
//! output_format=pcm_16000` (`https` becomes `wss`), the key as the `xi-api-key` header.
//!
//! One agent line is one connection ([`StreamingTextToSpeech::open`], `sync_alignment=true`):
//! `{"text": " "}` opens it, each piece of the line's text follows as the model writes it
//! (ending with a space, as the protocol wants, with `flush: true` so its audio starts at
//! once), and `{"text": ""}` ends the input. The answers are `{"audio": base64, "alignment":
//! {"chars", "charStartTimesMs", "charsDurationsMs"}, "isFinal": …}` messages, 16 kHz 16-bit
//! PCM (the engine's rate, so nothing is resampled) handed on in chunks of about 100 ms as
//! they come, until `"isFinal": true` or the service closes the connection after the last
//! audio. The alignment's characters, timed from the start of their message's audio, are
//! joined into [`SpokenWord`]s timed from the start of the line's audio (the engine cuts an
//! interrupted line by them). An error message (`{"message" | "error", …}`) or a close frame
//! with an error code is one [`AgentError`]; a refused upgrade, [`AgentError::Status`].
//! Dropping the speech (barge-in) closes the connection, which stops the generation.
//! [`TextToSpeech::speak`] is a line of one piece.
//!
//! Not used: `language_code` (only some models take it; the voice and model decide the
//! language).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::provider::ENGINE_RATE;
use crate::provider::{
    Spoken, SpokenWord, StreamingTextToSpeech, TextToSpeech, TurnSpeech, speak_as_a_line,
};
use crate::ws::{Deadline, Incoming, StreamingProvider};

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

    /// Speaks one line: connects, sends each piece of text as it comes (flushed, so its audio
    /// starts at once), then the end of the input; hands on the audio and the words' times
    /// until `isFinal` or the service's close.
    async fn run(
        &self,
        voice: String,
        texts: &mut mpsc::UnboundedReceiver<String>,
        tx: &mpsc::Sender<Result<Spoken, AgentError>>,
    ) -> Result<(), AgentError> {
        let provider = &self.provider;
        let mut url = provider.url(&["text-to-speech", &voice, "stream-input"])?;
        url.query_pairs_mut()
            .append_pair("model_id", &self.model)
            .append_pair("output_format", ELEVENLABS_OUTPUT_FORMAT)
            .append_pair("sync_alignment", "true");
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
        provider
            .send_json(&mut socket, &json!({"text": " "}))
            .await?;
        let mut ended = false;
        let mut deadline = Deadline::new(limit);
        let mut odd: Option<u8> = None;
        let mut out: Vec<i16> = Vec::new();
        let mut received: u64 = 0;
        let mut aligner = WordAligner::default();
        loop {
            let message = tokio::select! {
                text = texts.recv(), if !ended => {
                    if tx.is_closed() {
                        // The speech was dropped (its text with it): cancelled, not ended.
                        provider.goodbye(&mut socket, None).await;
                        return Ok(());
                    }
                    let message = match text.as_deref().map(str::trim) {
                        Some("") => continue,
                        Some(piece) => json!({"text": format!("{piece} "), "flush": true}),
                        None => {
                            ended = true;
                            json!({"text": ""})
                        }
                    };
                    provider.send_json(&mut socket, &message).await?;
                    deadline.text_sent();
                    continue;
                }
                message = provider.receive(&mut socket) => message?,
                () = deadline.passed() => return Err(provider.timeout(limit)),
                () = tx.closed() => {
                    provider.goodbye(&mut socket, None).await;
                    return Ok(());
                }
            };
            let text = match message {
                Incoming::Text(text) => text,
                Incoming::Binary(_) => continue,
                Incoming::Closed if ended => break,
                Incoming::Closed => {
                    return Err(provider.protocol("it closed the line before its end"));
                }
            };
            deadline.heard(ended);
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| provider.protocol(format!("a message that is not JSON: {e}")))?;
            if let Some(detail) = ["message", "error"]
                .iter()
                .find_map(|key| value.get(key).and_then(Value::as_str))
            {
                return Err(provider.protocol(format!("it reported an error: {detail}")));
            }
            let mut spoken = Vec::new();
            if let Some(data) = value.get("audio").and_then(Value::as_str) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| provider.protocol(format!("audio that is not base64: {e}")))?;
                let before = received;
                for b in bytes {
                    match odd.take() {
                        None => odd = Some(b),
                        Some(lo) => {
                            out.push(i16::from_le_bytes([lo, b]));
                            received += 1;
                        }
                    }
                }
                if let Some(alignment) = value.get("alignment") {
                    let offset = Duration::from_secs_f64(before as f64 / f64::from(ENGINE_RATE));
                    let words = aligner.push(alignment, offset);
                    if !words.is_empty() {
                        spoken.push(Spoken::Words(words));
                    }
                }
                if out.len() >= CHUNK_SAMPLES {
                    spoken.push(Spoken::Audio(std::mem::take(&mut out)));
                }
            }
            for spoken in spoken {
                if tx.send(Ok(spoken)).await.is_err() {
                    provider.goodbye(&mut socket, None).await;
                    return Ok(());
                }
            }
            if value.get("isFinal").and_then(Value::as_bool) == Some(true) {
                break;
            }
        }
        if let Some(word) = aligner.finish() {
            let _ = tx.send(Ok(Spoken::Words(vec![word]))).await;
        }
        if !out.is_empty() {
            let _ = tx.send(Ok(Spoken::Audio(out))).await;
        }
        provider.goodbye(&mut socket, None).await;
        Ok(())
    }
}

/// Words from ElevenLabs' character alignment: each audio message's `alignment` lists its
/// characters (`chars`) with their start times and durations in ms from the start of that
/// message's audio (`charStartTimesMs`, `charsDurationsMs`); whitespace ends a word, and a
/// word may go on into the next message. Entries that are not a character and two times are
/// skipped.
#[derive(Debug, Default)]
struct WordAligner {
    word: String,
    start: Duration,
    end: Duration,
}

impl WordAligner {
    /// The words completed by `alignment`, whose message's audio starts at `offset`.
    fn push(&mut self, alignment: &Value, offset: Duration) -> Vec<SpokenWord> {
        let list = |key: &str| {
            alignment
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let ms = |v: &Value| {
            v.as_f64()
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        };
        let mut words = Vec::new();
        let (chars, starts, lengths) = (
            list("chars"),
            list("charStartTimesMs"),
            list("charsDurationsMs"),
        );
        for (c, (start, length)) in chars.iter().zip(starts.iter().zip(lengths.iter())) {
            let (Some(c), Some(start), Some(length)) = (c.as_str(), ms(start), ms(length)) else {
                continue;
            };
            if c.trim().is_empty() {
                words.extend(self.finish());
                continue;
            }
            // Times past any audio's length (a service's nonsense) are left out, never added
            // into an overflow.
            let (Some(begins), Some(ends)) = (
                offset.checked_add(start),
                offset
                    .checked_add(start)
                    .and_then(|s| s.checked_add(length)),
            ) else {
                continue;
            };
            if self.word.is_empty() {
                self.start = begins;
            }
            self.word.push_str(c);
            self.end = ends;
        }
        words
    }

    /// The word under way, if any.
    fn finish(&mut self) -> Option<SpokenWord> {
        (!self.word.is_empty()).then(|| SpokenWord {
            word: std::mem::take(&mut self.word),
            start: self.start,
            end: self.end,
        })
    }
}

impl TextToSpeech for ElevenLabsSpeech {
    fn speak(
        &self,
        text: &str,
        voice: Option<&str>,
        language: Option<&str>,
    ) -> mpsc::Receiver<Result<Vec<i16>, AgentError>> {
        speak_as_a_line(self.open(voice, language), text)
    }
}

impl StreamingTextToSpeech for ElevenLabsSpeech {
    fn open(&self, voice: Option<&str>, _language: Option<&str>) -> TurnSpeech {
        let (speech, mut texts, tx) = TurnSpeech::new();
        let voice = voice
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_ELEVENLABS_VOICE)
            .to_owned();
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.run(voice, &mut texts, &tx).await {
                tracing::debug!(%error, "text to speech failed");
                let _ = tx.send(Err(error)).await;
            }
        });
        speech
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn characters_become_words_timed_from_the_start_of_the_line() {
        let mut aligner = WordAligner::default();
        // A word goes on into the next message; each message's times start at its audio.
        let words = aligner.push(
            &json!({
                "chars": ["H", "i", " ", "t", "h"],
                "charStartTimesMs": [0, 50, 100, 150, 200],
                "charsDurationsMs": [50, 50, 50, 50, 50],
            }),
            Duration::ZERO,
        );
        assert_eq!(
            words,
            [SpokenWord {
                word: "Hi".into(),
                start: ms(0),
                end: ms(100),
            }]
        );
        let words = aligner.push(
            &json!({
                "chars": ["e", "r", "e", " "],
                "charStartTimesMs": [0, 50, 100, 150],
                "charsDurationsMs": [50, 50, 50, 0],
            }),
            ms(250),
        );
        assert_eq!(
            words,
            [SpokenWord {
                word: "there".into(),
                start: ms(150),
                end: ms(400),
            }]
        );
        assert_eq!(aligner.finish(), None);
    }

    #[test]
    fn alignment_entries_that_are_not_characters_and_times_are_skipped() {
        let mut aligner = WordAligner::default();
        let words = aligner.push(
            &json!({
                "chars": ["a", 5, "b", "c"],
                "charStartTimesMs": [0, 10, "x", -5],
                "charsDurationsMs": [10, 10, 10],
            }),
            Duration::ZERO,
        );
        assert!(words.is_empty());
        assert!(aligner.push(&json!(null), Duration::ZERO).is_empty());
        assert_eq!(
            aligner.finish(),
            Some(SpokenWord {
                word: "a".into(),
                start: ms(0),
                end: ms(10),
            })
        );
    }

    /// Times no audio could have (a service's nonsense) are left out rather than overflow.
    #[test]
    fn times_past_any_audio_are_left_out() {
        let mut aligner = WordAligner::default();
        let words = aligner.push(
            &serde_json::json!({
                "chars": ["a", "b", " "],
                "charStartTimesMs": [1e22, 0.0, 10.0],
                "charsDurationsMs": [1e22, 5.0, 5.0],
            }),
            Duration::from_secs(u64::MAX / 2),
        );
        assert_eq!(words.len(), 1);
        assert_eq!(words[0].word, "b");
    }
}

//! [`CartesiaSpeech`]: Cartesia's streaming speech synthesis (`kind: cartesia`) over its
//! websocket, `{base_url}/tts/websocket?api_key=…&cartesia_version=2024-06-10` (`https`
//! becomes `wss`).
//!
//! One agent line is one context on one connection ([`StreamingTextToSpeech::open`]): each
//! piece of the line's text, as the model writes it, is a generation request (`model_id`,
//! `transcript`, `voice: {"mode": "id", "id"}`, `language`, raw `pcm_s16le` at 24 kHz,
//! `add_timestamps: true`, `max_buffer_delay_ms: 0`) in the same `context_id` with
//! `continue: true`, ending with a space (the service joins a context's transcripts as they
//! are); the line's last piece goes with `continue: false` (or, when the end comes after it, an
//! empty transcript does). Pieces that wait when the connection is ready go together. The
//! answers are `chunk` messages (base64 audio), `timestamps` messages (`word_timestamps`
//! `{words, start, end}`, taken as seconds from the start of the context's audio: the
//! [`SpokenWord`]s the engine cuts an interrupted line by), then `done`; an `error` message is
//! one [`AgentError`] (its `status_code` as [`AgentError::Status`]). The audio is resampled to
//! 16 kHz and handed on in chunks of about 100 ms as it comes. Dropping the speech (barge-in)
//! sends `{"context_id", "cancel": true}` and closes the connection. [`TextToSpeech::speak`] is
//! a line of one piece.
//!
//! Our pieces are whole clauses, cut by [`clause`](crate::clause): what Cartesia's guide on
//! buffering calls custom buffering, for which it says to set `max_buffer_delay_ms` to 0 so
//! that each piece is spoken as soon as it comes. Left out, the service may hold a piece back
//! for more text: up to 3 s by the current documentation's default (its guide for our API
//! version describes no wait when the field is absent; we do not rely on either).
//!
//! Where the times of a continued context's words start from, the documentation does not
//! say (its examples show one request, from 0): we take them, as the scripted peer of our
//! tests gives them, from the start of the context's audio, not of each continuation.
//!
//! The service lets a context expire a second after its last audio went out: a model that
//! pauses longer than that between two clauses of a line would find it gone, and the error
//! that comes back fails the line like any other (clauses of a streamed answer come well
//! within it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use dialtone_codec::PcmResampler;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::openai::transcribe::iso_639_1;
use crate::provider::{
    ENGINE_RATE, Spoken, SpokenWord, StreamingTextToSpeech, TextToSpeech, TurnSpeech,
    speak_as_a_line,
};
use crate::ws::{Deadline, Incoming, StreamingProvider};

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

    /// The generation request for `transcript` in `context_id`; `more`: more text follows in
    /// the same context.
    fn generation(
        &self,
        context_id: &str,
        voice: &str,
        language: Option<&str>,
        transcript: &str,
        more: bool,
    ) -> Value {
        let mut request = json!({
            "model_id": self.model,
            "transcript": transcript,
            "voice": {"mode": "id", "id": voice},
            "output_format": {
                "container": "raw",
                "encoding": "pcm_s16le",
                "sample_rate": CARTESIA_PCM_RATE,
            },
            "context_id": context_id,
            "continue": more,
            "max_buffer_delay_ms": 0,
            "add_timestamps": true,
        });
        if let (Some(language), Some(fields)) = (language, request.as_object_mut()) {
            fields.insert("language".into(), Value::String(language.to_owned()));
        }
        request
    }

    /// Speaks one line: connects, sends each piece of text as it comes into one context, hands
    /// on the audio and the words' times until `done`.
    async fn run(
        &self,
        voice: String,
        language: Option<String>,
        texts: &mut mpsc::UnboundedReceiver<String>,
        tx: &mpsc::Sender<Result<Spoken, AgentError>>,
    ) -> Result<(), AgentError> {
        let provider = &self.provider;
        let mut pcm = PcmResampler::new(CARTESIA_PCM_RATE, ENGINE_RATE)
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
        let cancel = json!({"context_id": context_id, "cancel": true});
        let mut input = TextInput::default();
        let mut deadline = Deadline::new(limit);
        loop {
            let message = tokio::select! {
                text = texts.recv(), if !input.ended => {
                    if tx.is_closed() {
                        // The speech was dropped (its text with it): cancelled, not ended.
                        provider.goodbye(&mut socket, Some(&cancel)).await;
                        return Ok(());
                    }
                    for (transcript, more) in input.take(text, texts) {
                        let request = self.generation(
                            &context_id,
                            &voice,
                            language.as_deref(),
                            &transcript,
                            more,
                        );
                        provider.send_json(&mut socket, &request).await?;
                        deadline.text_sent();
                    }
                    continue;
                }
                message = provider.receive(&mut socket) => message?,
                () = deadline.passed() => return Err(provider.timeout(limit)),
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
            let spoken = match value.get("type").and_then(Value::as_str) {
                Some("chunk") => {
                    let data = value
                        .get("data")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_err(|e| provider.protocol(format!("audio that is not base64: {e}")))?;
                    pcm.push_bytes(&bytes);
                    pcm.take_chunk(CHUNK_SAMPLES).map(Spoken::Audio)
                }
                Some("timestamps") => {
                    let words = word_timestamps(&value);
                    (!words.is_empty()).then_some(Spoken::Words(words))
                }
                Some("done") => break,
                Some("error") => return Err(error_message(provider, &value)),
                _ => None,
            };
            deadline.heard(input.ended);
            if let Some(spoken) = spoken
                && tx.send(Ok(spoken)).await.is_err()
            {
                provider.goodbye(&mut socket, Some(&cancel)).await;
                return Ok(());
            }
        }
        let rest = pcm.finish();
        if !rest.is_empty() {
            let _ = tx.send(Ok(Spoken::Audio(rest))).await;
        }
        provider.goodbye(&mut socket, None).await;
        Ok(())
    }
}

/// The line's text as it comes: each piece a generation request in the context, `continue`
/// while more may follow; the last piece (or, when the end comes alone, an empty transcript)
/// closes the context.
#[derive(Debug, Default)]
struct TextInput {
    /// The line's text is all sent.
    ended: bool,
}

impl TextInput {
    /// The transcripts to send for `first` (the next piece, or `None` for the end) and the
    /// pieces already waiting behind it, each with whether more follows. A piece that more
    /// follows ends with a space: the service joins a context's transcripts as they are.
    fn take(
        &mut self,
        first: Option<String>,
        texts: &mut mpsc::UnboundedReceiver<String>,
    ) -> Vec<(String, bool)> {
        let mut pieces: Vec<String> = first.into_iter().collect();
        self.ended = pieces.is_empty();
        while !self.ended {
            match texts.try_recv() {
                Ok(piece) => pieces.push(piece),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.ended = true,
            }
        }
        let pieces: Vec<String> = pieces
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let Some(last) = pieces.len().checked_sub(1) else {
            return match self.ended {
                true => vec![(String::new(), false)],
                false => Vec::new(),
            };
        };
        let ended = self.ended;
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| match i < last || !ended {
                true => (format!("{piece} "), true),
                false => (piece, false),
            })
            .collect()
    }
}

/// The words of a `timestamps` message: `word_timestamps` `{words, start, end}`, times in
/// seconds from the start of the context's audio; a word with a time that is not a duration
/// is left out.
fn word_timestamps(value: &Value) -> Vec<SpokenWord> {
    let list = |key: &str| {
        value
            .pointer(&format!("/word_timestamps/{key}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let seconds = |v: &Value| v.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok());
    list("words")
        .iter()
        .zip(list("start").iter().zip(list("end").iter()))
        .filter_map(|(word, (start, end))| {
            Some(SpokenWord {
                word: word.as_str()?.to_owned(),
                start: seconds(start)?,
                end: seconds(end)?,
            })
        })
        .collect()
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
        speak_as_a_line(self.open(voice, language), text)
    }
}

impl StreamingTextToSpeech for CartesiaSpeech {
    fn open(&self, voice: Option<&str>, language: Option<&str>) -> TurnSpeech {
        let (speech, mut texts, tx) = TurnSpeech::new();
        let voice = voice
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_CARTESIA_VOICE)
            .to_owned();
        let language = language.and_then(iso_639_1);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.run(voice, language, &mut texts, &tx).await {
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

    #[test]
    fn pieces_continue_the_context_until_the_end_closes_it() {
        let (tx, mut texts) = mpsc::unbounded_channel::<String>();
        let mut input = TextInput::default();
        tx.send("Then a second.".into()).unwrap();
        assert_eq!(
            input.take(Some(" First piece. ".into()), &mut texts),
            [
                ("First piece. ".to_owned(), true),
                ("Then a second. ".to_owned(), true)
            ]
        );
        assert!(!input.ended);
        // The last piece and the end together: it closes the context itself.
        tx.send("Last.".into()).unwrap();
        drop(tx);
        assert_eq!(
            input.take(Some("Third.".into()), &mut texts),
            [("Third. ".to_owned(), true), ("Last.".to_owned(), false)]
        );
        assert!(input.ended);
        // The end alone: an empty transcript closes it.
        let (tx, mut texts) = mpsc::unbounded_channel::<String>();
        drop(tx);
        let mut input = TextInput::default();
        assert_eq!(input.take(None, &mut texts), [(String::new(), false)]);
    }

    #[test]
    fn word_timestamps_are_read_and_bad_entries_left_out() {
        let message = json!({
            "type": "timestamps",
            "word_timestamps": {
                "words": ["Hello", "there", 7, "friend", "again"],
                "start": [0.0, 0.5, 0.9, -1.0, 1.5],
                "end": [0.4, 0.85, 1.0, 1.4],
            },
        });
        let words = word_timestamps(&message);
        assert_eq!(
            words,
            [
                SpokenWord {
                    word: "Hello".into(),
                    start: Duration::ZERO,
                    end: Duration::from_millis(400),
                },
                SpokenWord {
                    word: "there".into(),
                    start: Duration::from_millis(500),
                    end: Duration::from_millis(850),
                },
            ]
        );
        assert!(word_timestamps(&json!({"type": "timestamps"})).is_empty());
        assert!(word_timestamps(&json!({"word_timestamps": "nonsense"})).is_empty());
    }
}

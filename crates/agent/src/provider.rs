//! What the conversation needs of its services. Each trait is object-safe: the engine builds
//! one client per call from the agent's `llm`, `stt` and `tts` settings and the organisation's
//! providers, and holds it as `Arc<dyn …>`. Cancelling is dropping: a dropped receiver or
//! future stops the request (barge-in cancels the answer and the speech under way this way).
//!
//! Speech recognition comes two ways: [`SpeechToText`] takes an utterance once it has ended,
//! [`StreamingSpeechToText`] a [`Listening`] session fed the caller's audio as it arrives,
//! asked for each utterance's transcript when the engine's voice activity detection ends it.
//!
//! Speech synthesis comes two ways too: [`TextToSpeech`] speaks one piece of text,
//! [`StreamingTextToSpeech`] opens a [`TurnSpeech`] for a whole agent line: one context at the
//! service, fed the line's pieces as the model writes them, its audio and (where the service
//! gives them) its words' times ([`SpokenWord`]) coming back as they are made.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::chat::{ChatEvent, ChatRequest};
use crate::error::AgentError;

/// The rate of all the audio the services take and give: the engine's, 16 kHz mono.
pub const ENGINE_RATE: u32 = 16_000;

/// A boxed future that can move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A language model.
pub trait ChatModel: Send + Sync + std::fmt::Debug {
    /// Starts a streamed answer to `request`. Events arrive in order on the receiver and end
    /// with [`ChatEvent::Finished`], or with one error (then the channel closes). The first
    /// event must come within the client's first-token timeout. Dropping the receiver cancels
    /// the request.
    fn stream(&self, request: ChatRequest) -> mpsc::Receiver<Result<ChatEvent, AgentError>>;

    /// One answer, not streamed, constrained to the JSON Schema `schema` (named `name`) with
    /// strict structured output; returns the message's text (the JSON, not yet validated).
    fn complete_json(
        &self,
        request: ChatRequest,
        name: &str,
        schema: &Value,
    ) -> BoxFuture<'static, Result<String, AgentError>>;
}

/// Speech recognition of one endpointed utterance.
pub trait SpeechToText: Send + Sync + std::fmt::Debug {
    /// What was said in `audio` (16 kHz mono PCM), in `language` (BCP 47) when known. An
    /// utterance with no words is an empty string, not an error.
    fn transcribe(
        &self,
        audio: Vec<i16>,
        language: Option<String>,
    ) -> BoxFuture<'static, Result<String, AgentError>>;
}

/// Speech recognition fed live: one [`Listening`] session a call, kept open between the
/// caller's utterances.
pub trait StreamingSpeechToText: Send + Sync + std::fmt::Debug {
    /// Opens a session in `language` (BCP 47) when known; it connects in the background (audio
    /// pushed meanwhile waits). Dropping the session closes it.
    fn listen(&self, language: Option<String>) -> Listening;
}

/// What a [`Listening`] session is told.
#[derive(Debug)]
pub enum Heard {
    /// The caller's audio (16 kHz mono PCM), in order.
    Audio(Vec<i16>),
    /// The utterance ended: the words since the previous one go to this sender (an empty
    /// string for none), or the session's failure.
    Finish(oneshot::Sender<Result<String, AgentError>>),
}

/// A live speech recognition session: the caller's audio goes in as it arrives, an
/// utterance's transcript comes back when [`Listening::finish`] says it ended, interim
/// (unstable) transcripts come as they are recognised.
#[derive(Debug)]
pub struct Listening {
    input: mpsc::UnboundedSender<Heard>,
    interim: mpsc::UnboundedReceiver<String>,
}

impl Listening {
    /// A session, and the ends its client serves: what it is told, and where interim
    /// transcripts go.
    pub fn new() -> (
        Self,
        mpsc::UnboundedReceiver<Heard>,
        mpsc::UnboundedSender<String>,
    ) {
        let (input, told) = mpsc::unbounded_channel();
        let (interim_tx, interim) = mpsc::unbounded_channel();
        (Self { input, interim }, told, interim_tx)
    }

    /// More of the caller's audio. Whether the session still takes it.
    pub fn push_audio(&self, audio: &[i16]) -> bool {
        self.input.send(Heard::Audio(audio.to_vec())).is_ok()
    }

    /// The utterance ended: its transcript, once the service has it (an error when the
    /// session has failed or ended).
    pub fn finish(&self) -> BoxFuture<'static, Result<String, AgentError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.input.send(Heard::Finish(tx)).is_ok();
        Box::pin(async move {
            let ended = || AgentError::Unreachable {
                provider: "speech recognition".into(),
                detail: "the session has ended".into(),
            };
            if !sent {
                return Err(ended());
            }
            rx.await.unwrap_or_else(|_| Err(ended()))
        })
    }

    /// The next interim transcript of the utterance under way, all of it so far (`None` once
    /// the session ended).
    pub async fn interim(&mut self) -> Option<String> {
        self.interim.recv().await
    }
}

/// A speech synthesiser.
pub trait TextToSpeech: Send + Sync + std::fmt::Debug {
    /// Starts speaking `text` with `voice` in `language` (BCP 47) where the synthesiser knows
    /// them. 16 kHz mono audio arrives on the receiver as it is made; the channel closes at
    /// the end, or after one error. Dropping the receiver stops the synthesis.
    fn speak(
        &self,
        text: &str,
        voice: Option<&str>,
        language: Option<&str>,
    ) -> mpsc::Receiver<Result<Vec<i16>, AgentError>>;
}

/// A word of synthesised speech and when it is said, from the start of its speech's audio.
#[derive(Debug, Clone, PartialEq)]
pub struct SpokenWord {
    /// The word as the service gives it.
    pub word: String,
    /// When its audio starts.
    pub start: Duration,
    /// When its audio ends.
    pub end: Duration,
}

/// What a [`TurnSpeech`] gives back.
#[derive(Debug, Clone, PartialEq)]
pub enum Spoken {
    /// More of the speech's audio (16 kHz mono PCM), in order.
    Audio(Vec<i16>),
    /// Words of the speech and their times, in order.
    Words(Vec<SpokenWord>),
}

/// A synthesiser that speaks a whole agent line in one stream.
pub trait StreamingTextToSpeech: TextToSpeech {
    /// Opens the speech of one line with `voice` in `language` (BCP 47) where the synthesiser
    /// knows them; it connects in the background (text pushed meanwhile waits).
    fn open(&self, voice: Option<&str>, language: Option<&str>) -> TurnSpeech;
}

/// One agent line's speech: its text goes in piece by piece ([`TurnSpeech::push`]) until
/// [`TurnSpeech::finish`]; its audio and words come out as they are made
/// ([`TurnSpeech::next`]), ending after the last of them or after one error. Dropping it
/// cancels the speech (barge-in).
#[derive(Debug)]
pub struct TurnSpeech {
    text: Option<mpsc::UnboundedSender<String>>,
    spoken: mpsc::Receiver<Result<Spoken, AgentError>>,
}

impl TurnSpeech {
    /// A speech, and the ends its client serves: the text pushed (closed once finished), and
    /// where what is spoken goes (closed when the speech is dropped).
    pub fn new() -> (
        Self,
        mpsc::UnboundedReceiver<String>,
        mpsc::Sender<Result<Spoken, AgentError>>,
    ) {
        let (text, texts) = mpsc::unbounded_channel();
        let (spoken_tx, spoken) = mpsc::channel(16);
        (
            Self {
                text: Some(text),
                spoken,
            },
            texts,
            spoken_tx,
        )
    }

    /// More of the line's text. Whether the speech still takes it.
    pub fn push(&self, text: &str) -> bool {
        self.text
            .as_ref()
            .is_some_and(|t| t.send(text.to_owned()).is_ok())
    }

    /// The line's text is all there.
    pub fn finish(&mut self) {
        self.text = None;
    }

    /// What is spoken next; `None` once all of it came (or after an error).
    pub async fn next(&mut self) -> Option<Result<Spoken, AgentError>> {
        self.spoken.recv().await
    }
}

/// [`TextToSpeech::speak`] for a streaming synthesiser: `text` as a line of its own, its audio
/// alone handed on. Dropping the receiver cancels the speech.
pub fn speak_as_a_line(
    mut speech: TurnSpeech,
    text: &str,
) -> mpsc::Receiver<Result<Vec<i16>, AgentError>> {
    let (tx, rx) = mpsc::channel(16);
    speech.push(text);
    speech.finish();
    tokio::spawn(async move {
        loop {
            let spoken = tokio::select! {
                spoken = speech.next() => spoken,
                () = tx.closed() => return,
            };
            let sent = match spoken {
                None => return,
                Some(Ok(Spoken::Audio(audio))) => tx.send(Ok(audio)).await,
                Some(Ok(Spoken::Words(_))) => Ok(()),
                Some(Err(error)) => tx.send(Err(error)).await,
            };
            if sent.is_err() {
                return;
            }
        }
    });
    rx
}

//! What the conversation needs of its services. Each trait is object-safe: the engine builds
//! one client per call from the agent's `llm`, `stt` and `tts` settings and the organisation's
//! providers, and holds it as `Arc<dyn …>`. Cancelling is dropping: a dropped receiver or
//! future stops the request (barge-in cancels the answer and the speech under way this way).

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::chat::{ChatEvent, ChatRequest};
use crate::error::AgentError;

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

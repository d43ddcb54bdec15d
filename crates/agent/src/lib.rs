//! `builtin:agent`: the conversational brain inside the engine.
//!
//! * [`provider`] — what the conversation needs of its services, as three small traits:
//!   [`ChatModel`] (streamed chat completions with tools, and JSON-schema answers),
//!   [`SpeechToText`] (one endpointed utterance at a time) and [`TextToSpeech`] (streamed
//!   16 kHz audio). The engine holds them as trait objects, one per call.
//! * [`chat`] — the chat vocabulary shared by every client: messages, tool specs, tool calls,
//!   the events of a streamed answer.
//! * [`espeak`] — the local synthesiser (`builtin:espeak`), espeak-ng run as a program.
//! * [`openai`] — clients of OpenAI-compatible servers: chat completions streamed as
//!   Server-Sent Events ([`sse`], [`tool_calls`]), transcription of a WAV upload ([`wav`]),
//!   speech streamed as 24 kHz PCM ([`pcm`]).
//! * [`error`] — [`AgentError`]: a provider's failure, naming the provider and what it said.

pub mod chat;
pub mod error;
pub mod espeak;
pub mod openai;
pub mod pcm;
pub mod provider;
pub mod sse;
pub mod tool_calls;
pub mod wav;

pub use chat::{ChatEvent, ChatMessage, ChatRequest, Role, ToolCall, ToolSpec, Usage};
pub use error::AgentError;
pub use espeak::EspeakNg;
pub use openai::{OpenAiChat, OpenAiProvider, OpenAiSpeech, OpenAiTranscriber};
pub use provider::{BoxFuture, ChatModel, SpeechToText, TextToSpeech};

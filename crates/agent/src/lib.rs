//! `builtin:agent`: the conversational brain inside the engine.
//!
//! * [`provider`] — what the conversation needs of its services, as small traits:
//!   [`ChatModel`] (streamed chat completions with tools, and JSON-schema answers),
//!   [`SpeechToText`] (one endpointed utterance at a time), [`StreamingSpeechToText`] (a
//!   [`Listening`] session fed the caller's audio live, asked for each utterance's words when it
//!   ends), [`TextToSpeech`] (streamed 16 kHz audio of one piece of text) and
//!   [`StreamingTextToSpeech`] (a [`TurnSpeech`] for a whole agent line, fed its pieces as the
//!   model writes them, giving back audio and the words' times). The engine holds them as
//!   trait objects, one per call.
//! * [`chat`] — the chat vocabulary shared by every client: messages, tool specs, tool calls,
//!   the events of a streamed answer.
//! * [`conversation`] — the sans-IO conversation machine: turns, pieces of speech, tool rounds,
//!   barge-in cuts, retries; the engine's driver performs its [`Action`]s.
//! * [`clause`] — streamed model text cut into speakable pieces, markdown stripped.
//! * [`tools`] — the functions offered to the model (the agent's HTTP tools and the built-ins).
//! * [`extract`] — after the call: the structured result against `returns`, and a summary;
//!   [`strict_schema`] — `returns` in the form strict Structured Outputs accept.
//! * [`prompt`] — the system message: persona, instructions, phone manners, context.
//! * [`stats`] — `agent_stats`: counts and latencies of the conversation.
//! * [`espeak`] — the local synthesiser (`builtin:espeak`), espeak-ng run as a program.
//! * [`openai`] — clients of OpenAI-compatible servers: chat completions streamed as
//!   Server-Sent Events (read by `dialtone-sse`'s parser, [`tool_calls`]), transcription of a
//!   WAV upload ([`wav`]), speech streamed as 24 kHz PCM (brought to the engine's rate,
//!   [`ENGINE_RATE`](provider::ENGINE_RATE), by `dialtone-codec`'s `PcmResampler`, as
//!   Cartesia's and espeak-ng's are).
//! * [`deepgram`], [`cartesia`], [`elevenlabs`] — clients of the streaming speech services over
//!   websockets ([`ws`]: one [`StreamingProvider`] for where the service is and its key,
//!   connected only at the addresses its [`ResolveAddresses`] allows):
//!   Deepgram's live recognition (one socket a call, `Finalize` at each utterance's end),
//!   Cartesia's and ElevenLabs' synthesis (one connection and one context a line, word
//!   timestamps back).
//! * [`error`] — [`AgentError`]: a provider's failure, naming the provider and what it said.

pub mod cartesia;
pub mod chat;
pub mod clause;
pub mod conversation;
pub mod deepgram;
pub mod elevenlabs;
pub mod error;
pub mod espeak;
pub mod extract;
pub mod openai;
pub mod prompt;
pub mod provider;
pub mod stats;
pub mod strict_schema;
pub mod tool_calls;
pub mod tools;
pub mod wav;
pub mod ws;

pub use cartesia::CartesiaSpeech;
pub use chat::{ChatEvent, ChatMessage, ChatRequest, Role, ToolCall, ToolSpec, Usage};
pub use conversation::{Action, Conversation, ConversationConfig, Line, heard_part};
pub use deepgram::DeepgramTranscriber;
pub use elevenlabs::ElevenLabsSpeech;
pub use error::AgentError;
pub use espeak::EspeakNg;
pub use openai::{OpenAiChat, OpenAiProvider, OpenAiSpeech, OpenAiTranscriber};
pub use provider::{
    BoxFuture, ChatModel, Heard, Listening, SpeechToText, Spoken, SpokenWord,
    StreamingSpeechToText, StreamingTextToSpeech, TextToSpeech, TurnSpeech, speak_as_a_line,
};
pub use ws::{ResolveAddresses, StreamingProvider};

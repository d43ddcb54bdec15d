//! The chat vocabulary every language-model client speaks: the history ([`ChatMessage`]),
//! the functions offered ([`ToolSpec`]), the request ([`ChatRequest`]) and what a streamed
//! answer yields ([`ChatEvent`]). Wire formats are the clients' business; these types are
//! what the conversation machine reads and writes.

use serde_json::Value;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The instructions (persona, instructions, context).
    System,
    /// The caller (what speech recognition heard).
    User,
    /// The agent.
    Assistant,
    /// A tool's answer to one of the assistant's calls.
    Tool,
}

impl Role {
    /// The role's name on the OpenAI wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// A call the model asked for: a function by name with its arguments as JSON text (parsed by
/// whoever runs it; text that does not parse goes back to the model as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The model's id for the call; the tool's answer refers to it.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// Its arguments, JSON text as the model wrote them.
    pub arguments: String,
}

/// One message of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text (an assistant message holding only tool calls has none).
    pub content: Option<String>,
    /// The calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the id of the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }

    /// A caller's message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }

    /// An agent's message with only text.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text(Role::Assistant, text)
    }

    /// An agent's message with `text` (may be empty) and tool calls.
    pub fn assistant_calls(text: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            role: Role::Assistant,
            content: text.filter(|t| !t.is_empty()),
            tool_calls,
            tool_call_id: None,
        }
    }

    /// A tool's answer to the call `id`.
    pub fn tool(id: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: Some(answer.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(id.into()),
        }
    }

    fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(text.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A function offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// What a chat completion is asked with (the model, temperature and token limit belong to
/// the client, which was made for one agent's `llm`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The history, system message first.
    pub messages: Vec<ChatMessage>,
    /// The functions offered (none: the model can only talk).
    pub tools: Vec<ToolSpec>,
}

/// Token counts, when the server sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
}

/// What a streamed answer yields, in order: text deltas as they come, then (if the model
/// called functions) every call whole, then the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// More of the answer's text.
    TextDelta(String),
    /// The functions the model called, each with its arguments whole.
    ToolCalls(Vec<ToolCall>),
    /// The answer is complete.
    Finished {
        /// The server's `finish_reason` (`stop`, `tool_calls`, `length`…), when sent.
        reason: Option<String>,
        /// Token counts, when sent.
        usage: Option<Usage>,
    },
}

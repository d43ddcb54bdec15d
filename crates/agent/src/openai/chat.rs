//! [`OpenAiChat`]: streamed chat completions (`POST {base_url}/chat/completions` with
//! `stream: true`), read with the [SSE parser](dialtone_sse) and the
//! [tool-call accumulator](crate::tool_calls); and JSON-schema answers, not streamed, asked
//! with the [strict form](crate::strict_schema) of the schema.

use std::time::Duration;

use dialtone_sse::SseParser;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::OpenAiProvider;
use crate::chat::{ChatEvent, ChatMessage, ChatRequest, Role, ToolCall, ToolSpec, Usage};
use crate::error::AgentError;
use crate::provider::{BoxFuture, ChatModel};
use crate::strict_schema::strict_schema;
use crate::tool_calls::{ToolCallAccumulator, ToolCallDelta};

/// Default wait for the first event of an answer (the request, the server's thinking, the
/// first token).
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(8);

/// Default longest silence between two pieces of a streaming answer, once it has begun.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default wait for a whole JSON-schema answer.
pub const DEFAULT_JSON_TIMEOUT: Duration = Duration::from_secs(30);

/// A language model on an OpenAI-compatible server, made for one agent's `llm` setting.
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    provider: OpenAiProvider,
    model: String,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    json_timeout: Duration,
}

impl OpenAiChat {
    /// `model` at `provider`, with the server's default temperature and token limit.
    pub fn new(provider: OpenAiProvider, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            temperature: None,
            max_tokens: None,
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            json_timeout: DEFAULT_JSON_TIMEOUT,
        }
    }

    /// The sampling temperature sent.
    #[must_use]
    pub fn with_temperature(mut self, temperature: Option<f64>) -> Self {
        self.temperature = temperature;
        self
    }

    /// The answer's token limit sent (`max_tokens`).
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: Option<u32>) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// How long the first event of a streamed answer may take
    /// ([`DEFAULT_FIRST_TOKEN_TIMEOUT`]).
    #[must_use]
    pub fn with_first_token_timeout(mut self, timeout: Duration) -> Self {
        self.first_token_timeout = timeout;
        self
    }

    /// The longest silence inside a streamed answer once it has begun
    /// ([`DEFAULT_IDLE_TIMEOUT`]).
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a [`complete_json`](ChatModel::complete_json) answer may take
    /// ([`DEFAULT_JSON_TIMEOUT`]).
    #[must_use]
    pub fn with_json_timeout(mut self, timeout: Duration) -> Self {
        self.json_timeout = timeout;
        self
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The request body for `request` (without `stream` and `response_format`).
    fn body(&self, request: &ChatRequest) -> serde_json::Map<String, Value> {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert(
            "messages".into(),
            request.messages.iter().map(wire_message).collect(),
        );
        if !request.tools.is_empty() {
            body.insert(
                "tools".into(),
                request.tools.iter().map(wire_tool).collect(),
            );
        }
        if let Some(temperature) = self.temperature {
            body.insert("temperature".into(), json!(temperature));
        }
        if let Some(max_tokens) = self.max_tokens {
            body.insert("max_tokens".into(), json!(max_tokens));
        }
        body
    }

    async fn run_stream(
        &self,
        body: Value,
        tx: &mpsc::Sender<Result<ChatEvent, AgentError>>,
    ) -> Result<(), AgentError> {
        let first_deadline = Instant::now() + self.first_token_timeout;
        let request = self.provider.post("/chat/completions").json(&body);
        let mut response = self
            .provider
            .send(request, self.first_token_timeout)
            .await?;
        let mut answer = StreamedAnswer::default();
        let mut parser = SseParser::default();
        loop {
            let (deadline, waited) = if answer.started {
                (Instant::now() + self.idle_timeout, self.idle_timeout)
            } else {
                (first_deadline, self.first_token_timeout)
            };
            let chunk = tokio::time::timeout_at(deadline, response.chunk())
                .await
                .map_err(|_| self.provider.timeout(waited))?
                .map_err(|e| self.provider.transport_error(&e, waited))?;
            let Some(chunk) = chunk else {
                break;
            };
            parser.feed(&chunk);
            if parser.dropped() > 0 {
                return Err(self
                    .provider
                    .protocol("an event of the stream was larger than 1 MiB"));
            }
            while let Some(event) = parser.next_event() {
                if event.data == "[DONE]" {
                    return answer.finish(tx).await;
                }
                let chunk: Value = serde_json::from_str(&event.data).map_err(|e| {
                    self.provider
                        .protocol(format!("a streamed chunk is not JSON: {e}"))
                })?;
                if let Some(error) = chunk.get("error") {
                    return Err(self.provider.protocol(format!(
                        "the stream carried an error: {}",
                        super::error_detail(&error.to_string())
                    )));
                }
                for event in answer.read_chunk(&chunk) {
                    if tx.send(Ok(event)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if answer.reason.is_some() {
            // The server closed after the last chunk without `[DONE]`: the answer is whole.
            return answer.finish(tx).await;
        }
        Err(self
            .provider
            .protocol("the stream ended before the answer was complete"))
    }

    async fn run_json(&self, body: Value) -> Result<String, AgentError> {
        let limit = self.json_timeout;
        let request = self.provider.post("/chat/completions").json(&body);
        let response = self.provider.send(request, limit).await?;
        let answer: Value = tokio::time::timeout(limit, response.json())
            .await
            .map_err(|_| self.provider.timeout(limit))?
            .map_err(|e| self.provider.transport_error(&e, limit))?;
        let message = answer.pointer("/choices/0/message");
        if let Some(content) = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
        {
            return Ok(content.to_owned());
        }
        let refusal = message
            .and_then(|m| m.get("refusal"))
            .and_then(Value::as_str);
        Err(self.provider.protocol(match refusal {
            Some(refusal) => format!("the model refused: {refusal}"),
            None => "the answer has no choices[0].message.content".to_owned(),
        }))
    }
}

impl ChatModel for OpenAiChat {
    fn stream(&self, request: ChatRequest) -> mpsc::Receiver<Result<ChatEvent, AgentError>> {
        let (tx, rx) = mpsc::channel(64);
        let mut body = self.body(&request);
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = this.run_stream(Value::Object(body), &tx) => outcome,
                () = tx.closed() => Ok(()),
            };
            if let Err(error) = outcome {
                tracing::debug!(%error, "chat completion failed");
                let _ = tx.send(Err(error)).await;
            }
        });
        rx
    }

    fn complete_json(
        &self,
        request: ChatRequest,
        name: &str,
        schema: &Value,
    ) -> BoxFuture<'static, Result<String, AgentError>> {
        let mut body = self.body(&request);
        body.insert(
            "response_format".into(),
            json!({
                "type": "json_schema",
                "json_schema": {"name": name, "schema": strict_schema(schema), "strict": true},
            }),
        );
        let this = self.clone();
        Box::pin(async move { this.run_json(Value::Object(body)).await })
    }
}

/// A message in the OpenAI wire form.
fn wire_message(message: &ChatMessage) -> Value {
    let mut wire = serde_json::Map::new();
    wire.insert("role".into(), json!(message.role.as_str()));
    wire.insert("content".into(), json!(message.content));
    if message.role == Role::Assistant && !message.tool_calls.is_empty() {
        wire.insert(
            "tool_calls".into(),
            message.tool_calls.iter().map(wire_tool_call).collect(),
        );
    }
    if let Some(id) = &message.tool_call_id {
        wire.insert("tool_call_id".into(), json!(id));
    }
    Value::Object(wire)
}

fn wire_tool_call(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    })
}

fn wire_tool(tool: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// What a streamed answer has said so far.
#[derive(Debug, Default)]
struct StreamedAnswer {
    /// An event has gone out (the first-token timeout no longer applies).
    started: bool,
    calls: ToolCallAccumulator,
    calls_sent: bool,
    reason: Option<String>,
    usage: Option<Usage>,
}

impl StreamedAnswer {
    /// The events one chunk (`chat.completion.chunk`) yields.
    fn read_chunk(&mut self, chunk: &Value) -> Vec<ChatEvent> {
        let mut events = Vec::new();
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(Usage {
                prompt_tokens: count("prompt_tokens"),
                completion_tokens: count("completion_tokens"),
            });
        }
        let choice = chunk.pointer("/choices/0");
        let delta = choice.and_then(|c| c.get("delta"));
        if let Some(text) = delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            events.push(ChatEvent::TextDelta(text.to_owned()));
        }
        for call in delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.started = true;
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            self.calls.push(ToolCallDelta {
                index: call.get("index").and_then(Value::as_u64),
                id: text(call.get("id")),
                name: text(call.pointer("/function/name")),
                arguments: text(call.pointer("/function/arguments")),
            });
        }
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.reason = Some(reason.to_owned());
            events.extend(self.take_calls());
        }
        self.started |= !events.is_empty();
        events
    }

    fn take_calls(&mut self) -> Option<ChatEvent> {
        if self.calls_sent || self.calls.is_empty() {
            return None;
        }
        self.calls_sent = true;
        Some(ChatEvent::ToolCalls(self.calls.take()))
    }

    async fn finish(
        mut self,
        tx: &mpsc::Sender<Result<ChatEvent, AgentError>>,
    ) -> Result<(), AgentError> {
        let calls = self.take_calls();
        for event in calls.into_iter().chain([ChatEvent::Finished {
            reason: self.reason,
            usage: self.usage,
        }]) {
            if tx.send(Ok(event)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn messages_in_the_wire_form() {
        let call = ToolCall {
            id: "c1".into(),
            name: "send_dtmf".into(),
            arguments: "{\"digits\":\"1\"}".into(),
        };
        let wire: Vec<Value> = [
            ChatMessage::system("be brief"),
            ChatMessage::assistant_calls(None, vec![call]),
            ChatMessage::tool("c1", "{\"ok\":true}"),
        ]
        .iter()
        .map(wire_message)
        .collect();
        assert_eq!(
            Value::Array(wire),
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "c1", "type": "function",
                    "function": {"name": "send_dtmf", "arguments": "{\"digits\":\"1\"}"},
                }]},
                {"role": "tool", "content": "{\"ok\":true}", "tool_call_id": "c1"},
            ])
        );
    }

    #[test]
    fn a_finish_reason_releases_the_calls_and_usage_is_kept() {
        let mut answer = StreamedAnswer::default();
        let events = answer.read_chunk(&json!({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "a", "function": {"name": "end_call", "arguments": "{"}}
        ]}}]}));
        assert!(events.is_empty(), "calls wait for the finish reason");
        assert!(answer.started, "a tool-call delta is a token");
        let events = answer.read_chunk(&json!({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "}"}}
        ]}, "finish_reason": "tool_calls"}]}));
        assert_eq!(
            events,
            vec![ChatEvent::ToolCalls(vec![ToolCall {
                id: "a".into(),
                name: "end_call".into(),
                arguments: "{}".into()
            }])]
        );
        answer.read_chunk(
            &json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
        );
        assert_eq!(
            answer.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2
            })
        );
    }
}

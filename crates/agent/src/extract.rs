//! After the call: the structured result and the summary, asked of the agent's own model over
//! the transcript. The result is asked with strict JSON-schema output against the agent's
//! `returns` (the client sends its [strict form](crate::strict_schema)), validated here
//! (`jsonschema`) against `returns` itself once the nulls written for optional properties are
//! left out, and asked once more with the validation error when it does not fit; the summary
//! is one paragraph of plain text.

use serde_json::Value;

use crate::chat::{ChatEvent, ChatMessage, ChatRequest};
use crate::provider::ChatModel;
use crate::strict_schema::without_optional_nulls;

/// The name the result's schema is given in the request.
const SCHEMA_NAME: &str = "call_result";

/// The transcript as the model reads it: one `Role: text` line each.
pub fn transcript_text<'a>(lines: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    lines
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(role, text)| format!("{role}: {text}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The result the conversation `transcript` yields under `returns`, or why there is none.
pub async fn extract(
    chat: &dyn ChatModel,
    transcript: &str,
    returns: &Value,
) -> Result<Value, String> {
    let validator = jsonschema::validator_for(returns)
        .map_err(|e| format!("the agent's returns schema does not compile: {e}"))?;
    let mut messages = vec![
        ChatMessage::system(
            "You extract the structured result of a phone call from its transcript. Answer \
             with JSON that follows the schema; use null where the call did not say.",
        ),
        ChatMessage::user(format!("Transcript:\n{transcript}")),
    ];
    let mut last_error = String::new();
    for _attempt in 0..2 {
        let request = ChatRequest {
            messages: messages.clone(),
            tools: Vec::new(),
        };
        let answer = chat
            .complete_json(request, SCHEMA_NAME, returns)
            .await
            .map_err(|e| format!("result extraction failed: {e}"))?;
        let problem = match serde_json::from_str::<Value>(&answer) {
            Ok(value) => {
                let value = without_optional_nulls(value, returns);
                match validator.validate(&value) {
                    Ok(()) => return Ok(value),
                    Err(e) => format!(
                        "the result does not match the agent's returns schema at {}: {e}",
                        e.instance_path()
                    ),
                }
            }
            Err(e) => format!("the result is not JSON: {e}"),
        };
        messages.push(ChatMessage::assistant(answer));
        messages.push(ChatMessage::user(format!(
            "That answer is invalid: {problem}. Answer again with JSON that follows the schema."
        )));
        last_error = problem;
    }
    Err(last_error)
}

/// A one-paragraph summary of `transcript`; `None` when the model gave none.
pub async fn summarise(chat: &dyn ChatModel, transcript: &str) -> Option<String> {
    let request = ChatRequest {
        messages: vec![
            ChatMessage::system(
                "Summarise this phone call in one short paragraph of plain text: who was \
                 reached, what was said and agreed, and what happens next.",
            ),
            ChatMessage::user(format!("Transcript:\n{transcript}")),
        ],
        tools: Vec::new(),
    };
    let mut events = chat.stream(request);
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Ok(ChatEvent::TextDelta(delta)) => text.push_str(&delta),
            Ok(ChatEvent::Finished { .. }) => break,
            Ok(ChatEvent::ToolCalls(_)) => {}
            Err(error) => {
                tracing::warn!(%error, "the summary could not be written");
                return None;
            }
        }
    }
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AgentError;
    use crate::provider::BoxFuture;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    /// A model answering from a list, recording what it was asked.
    #[derive(Debug, Default)]
    struct Scripted {
        answers: Mutex<Vec<String>>,
        asked: Mutex<Vec<ChatRequest>>,
    }

    impl ChatModel for Scripted {
        fn stream(&self, _: ChatRequest) -> mpsc::Receiver<Result<ChatEvent, AgentError>> {
            let (tx, rx) = mpsc::channel(4);
            let text = self.answers.lock().unwrap().remove(0);
            tokio::spawn(async move {
                let _ = tx.send(Ok(ChatEvent::TextDelta(text))).await;
                let _ = tx
                    .send(Ok(ChatEvent::Finished {
                        reason: None,
                        usage: None,
                    }))
                    .await;
            });
            rx
        }

        fn complete_json(
            &self,
            request: ChatRequest,
            _: &str,
            _: &Value,
        ) -> BoxFuture<'static, Result<String, AgentError>> {
            self.asked.lock().unwrap().push(request);
            let answer = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { Ok(answer) })
        }
    }

    fn schema() -> Value {
        serde_json::json!({
            "type": "object",
            "properties": {"interested": {"type": "boolean"}},
            "required": ["interested"]
        })
    }

    #[tokio::test]
    async fn a_valid_answer_is_the_result() {
        let model = Scripted {
            answers: Mutex::new(vec![r#"{"interested": true}"#.into()]),
            ..Scripted::default()
        };
        let result = extract(&model, "caller: yes", &schema()).await;
        assert_eq!(result, Ok(serde_json::json!({"interested": true})));
        let asked = model.asked.lock().unwrap();
        assert!(
            asked[0].messages[1]
                .content
                .as_deref()
                .unwrap()
                .contains("caller: yes")
        );
    }

    #[tokio::test]
    async fn an_invalid_answer_is_asked_again_with_the_error_then_given_up() {
        let model = Scripted {
            answers: Mutex::new(vec![
                r#"{"interested": "very"}"#.into(),
                r#"{"interested": false}"#.into(),
            ]),
            ..Scripted::default()
        };
        assert_eq!(
            extract(&model, "caller: no", &schema()).await,
            Ok(serde_json::json!({"interested": false}))
        );
        let retry = model.asked.lock().unwrap()[1].clone();
        assert!(
            retry
                .messages
                .last()
                .unwrap()
                .content
                .as_deref()
                .unwrap()
                .contains("/interested")
        );
        let stubborn = Scripted {
            answers: Mutex::new(vec!["{}".into(), "not json".into()]),
            ..Scripted::default()
        };
        let error = extract(&stubborn, "caller: hm", &schema())
            .await
            .unwrap_err();
        assert!(error.contains("not JSON"), "{error}");
    }

    /// The strict form makes the model write null for an optional property it has nothing
    /// for; the result leaves it out, and passes the agent's own schema.
    #[tokio::test]
    async fn nulls_written_for_optional_properties_are_left_out_of_the_result() {
        let answer = r#"{"interested": true, "budget": null}"#;
        let model = Scripted {
            answers: Mutex::new(vec![answer.into(), answer.into()]),
            ..Scripted::default()
        };
        let returns = serde_json::json!({
            "type": "object",
            "properties": {"interested": {"type": "boolean"}, "budget": {"type": "number"}},
            "required": ["interested"]
        });
        assert_eq!(
            extract(&model, "caller: yes", &returns).await,
            Ok(serde_json::json!({"interested": true}))
        );
    }

    #[tokio::test]
    async fn the_summary_is_the_models_text() {
        let model = Scripted {
            answers: Mutex::new(vec!["  Sam wants a quote. ".into()]),
            ..Scripted::default()
        };
        assert_eq!(
            summarise(&model, "caller: quote please").await.as_deref(),
            Some("Sam wants a quote.")
        );
    }
}

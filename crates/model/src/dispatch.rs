//! The dispatch request: `POST /v1/calls` and gRPC `DispatchCall`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::number::{check_e164, is_e164};
use crate::parse::{FieldError, from_value};
use crate::{MAX_INSTRUCTIONS_BYTES, MAX_OBJECT_BYTES};

/// Fields that live on the agent and are refused on a call, with a message saying so.
pub const AGENT_ONLY_FIELDS: &[&str] = &[
    "persona",
    "voice",
    "language",
    "returns",
    "tools",
    "voicemail_action",
    "record",
];

/// A dispatch. `persona`, `voice`, `language`, `returns`, `tools`, `voicemail_action` and
/// `record` are refused (400 naming the field): they live on the agent. Any other unknown
/// field is a 400.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchCall {
    /// The agent.
    pub agent_id: Uuid,
    /// E.164: `+`, then 2–15 digits, the first not 0.
    pub to: String,
    /// Caller ID: another number of the same agent, as E.164 or its UUID (default: the
    /// agent's primary number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_number: Option<String>,
    /// Replaces the agent's instructions for this call (at most 32 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// A JSON object the agent can reference (default `{}`, at most 64 KiB).
    #[schema(value_type = Object)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// This call's webhook receiver (http or https; not private unless allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Key/values returned on the call (default `{}`, at most 64 KiB).
    #[schema(value_type = Object)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl DispatchCall {
    /// Reads and checks a dispatch body.
    pub fn from_json(body: Map<String, Value>) -> Result<Self, FieldError> {
        if let Some(field) = AGENT_ONLY_FIELDS.iter().find(|f| body.contains_key(**f)) {
            return Err(FieldError::invalid(
                field,
                format!("`{field}` is not accepted on a call: it is set on the agent"),
            ));
        }
        let call: Self = from_value(Value::Object(body))?;
        call.check()?;
        Ok(call)
    }

    /// The rules serde does not check.
    pub fn check(&self) -> Result<(), FieldError> {
        check_e164("to", &self.to)?;
        if let Some(from) = &self.from_number
            && !is_e164(from)
            && Uuid::parse_str(from).is_err()
        {
            return Err(FieldError::invalid(
                "from_number",
                "`from_number` must be an E.164 number (+ then 2-15 digits) or a number id",
            ));
        }
        if self
            .instructions
            .as_ref()
            .is_some_and(|i| i.len() > MAX_INSTRUCTIONS_BYTES)
        {
            return Err(FieldError::too_large(
                "instructions",
                format!("`instructions` is longer than {MAX_INSTRUCTIONS_BYTES} bytes"),
            ));
        }
        for (field, value) in [("context", &self.context), ("metadata", &self.metadata)] {
            check_object(field, value.as_ref())?;
        }
        if let Some(url) = &self.webhook_url {
            check_http_url("webhook_url", url)?;
        }
        Ok(())
    }

    /// The context, `{}` when none was given.
    pub fn context_or_empty(&self) -> Value {
        self.context
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new()))
    }

    /// The metadata, `{}` when none was given.
    pub fn metadata_or_empty(&self) -> Value {
        self.metadata
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new()))
    }
}

/// `value` of `field`, when present, is a JSON object within [`MAX_OBJECT_BYTES`].
pub fn check_object(field: &str, value: Option<&Value>) -> Result<(), FieldError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(v @ Value::Object(_)) if v.to_string().len() > MAX_OBJECT_BYTES => {
            Err(FieldError::too_large(
                field,
                format!("`{field}` is larger than {MAX_OBJECT_BYTES} bytes"),
            ))
        }
        Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(FieldError::invalid(
            field,
            format!("`{field}` must be a JSON object"),
        )),
    }
}

/// `url` of `field` is an http(s) URL without whitespace.
pub fn check_http_url(field: &str, url: &str) -> Result<(), FieldError> {
    if (url.starts_with("http://") || url.starts_with("https://"))
        && !url.contains(char::is_whitespace)
    {
        Ok(())
    } else {
        Err(FieldError::invalid(
            field,
            format!("`{field}` must be an http(s) URL"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> FieldError {
        let Value::Object(map) = body else {
            panic!("an object")
        };
        DispatchCall::from_json(map).unwrap_err()
    }

    #[test]
    fn each_rule_names_its_field() {
        let agent = "0190f5a0-0000-7000-8000-000000000000";
        let voice = refused(json!({"agent_id": agent, "to": "+15551230000", "voice": "alloy"}));
        assert_eq!(voice.field, "voice");
        assert_eq!(
            voice.message,
            "`voice` is not accepted on a call: it is set on the agent"
        );
        for (body, field) in [
            (json!({"to": "+15551230000"}), "agent_id"),
            (json!({"agent_id": "x", "to": "+15551230000"}), "agent_id"),
            (json!({"agent_id": agent, "to": "555"}), "to"),
            (
                json!({"agent_id": agent, "to": "+15551230000", "context": [1]}),
                "context",
            ),
            (
                json!({"agent_id": agent, "to": "+15551230000", "metadata": "x"}),
                "metadata",
            ),
            (
                json!({"agent_id": agent, "to": "+15551230000", "webhook_url": "ftp://x"}),
                "webhook_url",
            ),
            (
                json!({"agent_id": agent, "to": "+15551230000", "from_number": "me"}),
                "from_number",
            ),
            (
                json!({"agent_id": agent, "to": "+15551230000", "agent_idd": 1}),
                "agent_idd",
            ),
        ] {
            assert_eq!(refused(body.clone()).field, field, "{body}");
        }
        let big = "x".repeat(MAX_INSTRUCTIONS_BYTES + 1);
        let e = refused(json!({"agent_id": agent, "to": "+15551230000", "instructions": big}));
        assert!(e.too_large);
    }
}

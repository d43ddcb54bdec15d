//! Agents: every setting typed, once. [`AgentFields`] is both what a request sets and what
//! the engine reads back from the stored agent (its `config`: the fields other than `name`,
//! `number_ids` and `primary_number_id`, which have columns of their own).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::MAX_INSTRUCTIONS_BYTES;
use crate::amd::AmdMode;
use crate::dispatch::check_http_url;
use crate::grammar::check_name;
use crate::parse::FieldError;
use crate::recording::Record;
use crate::status::AgentDirection;

/// An agent's fields. On create `name` is required; a PATCH is laid over the stored fields
/// first (`null` clears one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentFields {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `outbound` (the default: it places calls), `inbound` (it answers calls to its numbers)
    /// or `both`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<AgentDirection>,
    /// Who the agent is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    /// TTS voice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// BCP 47 language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Default instructions (a call's own replace them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// JSON Schema of the structured result.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub returns: Option<Value>,
    /// Tools the brain may call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// What to do when a machine answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub voicemail_action: Option<VoicemailAction>,
    /// Default webhook receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The numbers it may call from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_ids: Option<Vec<Uuid>>,
    /// The default caller ID, one of `number_ids` (default: the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_number_id: Option<Uuid>,
    /// `builtin:echo`, `builtin:ivr`, `builtin:agent`, `grpc://host:port` (an AgentBridge
    /// server) or `ws://…`/`wss://…` (a Twilio Media Streams app).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brain: Option<String>,
    /// Headers sent on a websocket brain's upgrade request (its authentication): at most 16,
    /// names HTTP tokens, values visible ASCII; not the handshake's own (`Host`, `Connection`,
    /// `Upgrade`, `Sec-WebSocket-*`). Write-only: reads show each value as `"***"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brain_headers: Option<std::collections::BTreeMap<String, String>>,
    /// Seconds to ring (1-300, default 30), counted from the trunk's first provisional response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_timeout_seconds: Option<u32>,
    /// Longest call in seconds (1-86400, default 600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u32>,
    /// Answering-machine detection: `true`, `false`, or thresholds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub amd: Option<Amd>,
    /// Mask DTMF digits in transcripts and logs (payment collection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_dtmf: Option<bool>,
    /// Record calls: `false` (default), `true` (stereo WAV), or `{"channels": "stereo" |
    /// "mixed", "format": "wav", "mask_dtmf": bool}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub record: Option<Record>,
    /// `"on"`, `"off"`, or a minimum of caller speech in ms before the agent stops. Absent:
    /// 500 ms for `builtin:agent` (a shorter backchannel cuts nothing), off for a Media Streams
    /// app, `"on"` for the other brains.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub barge_in: Option<BargeIn>,
    /// Silence that ends a caller's turn, ms (100-5000, default 500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpointing_silence_ms: Option<u32>,
    /// Caller silence before "are you still there?", and as long again before hanging up
    /// (`silence_timeout`), seconds (1-3600); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_timeout_seconds: Option<u32>,
    /// `builtin:agent`: the language model (required with that brain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSetting>,
    /// `builtin:agent`: speech recognition (required with that brain); the language is the
    /// agent's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stt: Option<SttSetting>,
    /// `builtin:agent`: speech synthesis (default `builtin:espeak`); the voice is the agent's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tts: Option<TtsSetting>,
    /// What the agent says first once a person answers; absent: the language model opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_message: Option<String>,
    /// Where the agent may hand the caller (the `transfer_call` tool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_destinations: Option<Vec<TransferDestination>>,
}

/// The brain that holds the conversation inside the engine.
pub const BUILTIN_AGENT: &str = "builtin:agent";
/// The local speech synthesiser (espeak-ng), needing no provider.
pub const BUILTIN_ESPEAK: &str = "builtin:espeak";

/// `llm`: which provider and model answer the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmSetting {
    /// A provider's name or id.
    pub provider: String,
    /// The model, as the provider names it.
    pub model: String,
    /// Sampling temperature (0-2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Most tokens per answer (1-32768).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// `stt`: which provider and model transcribe the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SttSetting {
    /// A provider's name or id.
    pub provider: String,
    /// The model, as the provider names it.
    pub model: String,
}

/// `tts`: which provider speaks for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TtsSetting {
    /// A provider's name or id, or `builtin:espeak`.
    pub provider: String,
    /// The model, as the provider names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A place the agent may transfer the caller to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferDestination {
    /// What the agent calls it (unique within the agent).
    pub name: String,
    /// `+E164` or a `sip:` URI.
    pub to: String,
    /// When to use it, for the language model.
    #[serde(default)]
    pub description: String,
    /// `refer` (default) or `bridge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<TransferMode>,
}

crate::names::wire_enum! {
    /// How a call is handed on.
    pub enum TransferMode ("transfer mode") {
        /// REFER (RFC 3515): the far end places the new call.
        Refer = "refer",
        /// A second leg through the same trunk, audio relayed between the legs.
        Bridge = "bridge",
    }
}

/// An agent as the API shows it: its settings, its numbers, its id and creation time.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Agent)]
pub struct AgentView {
    /// UUID.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// The numbers it may call from.
    pub number_ids: Vec<Uuid>,
    /// The default caller ID.
    pub primary_number_id: Option<Uuid>,
    /// Every other setting that is set (`name`, `number_ids` and `primary_number_id` are
    /// above): the fields of `AgentFields`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub settings: AgentFields,
    /// RFC 3339.
    pub created_at: Option<String>,
}

/// A tool the agent's brain may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Name: 1-64 letters, digits, `_` or `-`, unique within the agent.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// Where it is served, when Dialtone calls it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What to do when a machine answers: `"hangup"`, `"continue"`, or `{"action": "hangup" |
/// "leave_message" | "continue", "message": "..."}` (`message` required to leave one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoicemailAction {
    /// Hang up (end reason `voicemail`).
    HangUp,
    /// Wait for the beep, say `message`, hang up (`voicemail_message`).
    LeaveMessage(String),
    /// Carry on as with a person.
    Continue,
}

/// Answering-machine detection: off, or on with thresholds (each in ms, 1-60000; absent =
/// the detector's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amd {
    /// `false`: no detection.
    Off,
    /// `true` or an object of thresholds.
    On(AmdThresholds),
}

/// AMD's thresholds; `None` keeps the detector's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmdThresholds {
    /// `fast` (the default: a verdict soon, biased to "person") or `accurate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<AmdMode>,
    /// Silence before any word after which the agent speaks (verdict `unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_silence_ms: Option<u32>,
    /// Longest greeting of a person: speech running on longer without a person's pause is a
    /// machine's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greeting_ms: Option<u32>,
    /// Silence after a short greeting that means a person waits (the pause after a longer one
    /// is the mode's: 1.1 s `fast`, 1.2 s `accurate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_greeting_silence_ms: Option<u32>,
    /// Longest analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_analysis_time_ms: Option<u32>,
    /// Most phrases (speech between pauses of 350 ms or more) of a person's greeting, once it
    /// has run 3.4 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_words: Option<u32>,
    /// After a machine's greeting with no beep, the silence after which the message starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_silence_ms: Option<u32>,
}

/// Barge-in: whether the caller's speech stops the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeIn {
    /// `"off"`: the agent always finishes.
    Off,
    /// `"on"`: at the onset of speech.
    On,
    /// A number: after this much speech, ms (1-10000).
    AfterMs(u32),
}

impl AgentFields {
    /// Every field's name (a test checks the list against the type).
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "direction",
        "persona",
        "voice",
        "language",
        "instructions",
        "returns",
        "tools",
        "voicemail_action",
        "webhook_url",
        "number_ids",
        "primary_number_id",
        "brain",
        "brain_headers",
        "ring_timeout_seconds",
        "max_duration_seconds",
        "amd",
        "mask_dtmf",
        "record",
        "barge_in",
        "endpointing_silence_ms",
        "silence_timeout_seconds",
        "llm",
        "stt",
        "tts",
        "first_message",
        "transfer_destinations",
    ];

    /// Stored settings read leniently: a key this build does not know (written by a newer
    /// node, say) is left out rather than making the agent unreadable.
    pub fn from_stored(mut config: serde_json::Map<String, Value>) -> Result<Self, FieldError> {
        config.retain(|key, _| Self::FIELDS.contains(&key.as_str()));
        crate::parse::from_value(Value::Object(config))
    }

    /// The rules serde does not check, in the API's words.
    pub fn check(&self) -> Result<(), FieldError> {
        match &self.name {
            None => return Err(FieldError::invalid("name", "`name` is required")),
            Some(name) => check_name("name", name)?,
        }
        if self
            .instructions
            .as_ref()
            .is_some_and(|i| i.len() > MAX_INSTRUCTIONS_BYTES)
        {
            return Err(FieldError::invalid(
                "instructions",
                format!("`instructions` is longer than {MAX_INSTRUCTIONS_BYTES} bytes"),
            ));
        }
        if let Some(language) = &self.language
            && !is_bcp47(language)
        {
            return Err(FieldError::invalid(
                "language",
                "`language` must be a BCP 47 tag such as \"en-US\"",
            ));
        }
        if let Some(brain) = &self.brain
            && !is_brain(brain)
        {
            return Err(FieldError::invalid("brain", BRAIN_RULE));
        }
        check_brain_headers(self.brain_headers.as_ref())?;
        for (field, value, min, max) in [
            ("ring_timeout_seconds", self.ring_timeout_seconds, 1, 300),
            ("max_duration_seconds", self.max_duration_seconds, 1, 86_400),
            (
                "endpointing_silence_ms",
                self.endpointing_silence_ms,
                100,
                5_000,
            ),
            (
                "silence_timeout_seconds",
                self.silence_timeout_seconds,
                1,
                3_600,
            ),
        ] {
            if value.is_some_and(|v| !(min..=max).contains(&v)) {
                return Err(FieldError::invalid(
                    field,
                    format!("`{field}` must be {min}-{max}"),
                ));
            }
        }
        if let Some(url) = &self.webhook_url {
            check_http_url("webhook_url", url)?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, tool) in self.tools.iter().flatten().enumerate() {
            let name_ok = (1..=64).contains(&tool.name.len())
                && tool
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok || !names.insert(tool.name.as_str()) {
                return Err(FieldError::invalid(
                    "tools",
                    "each tool needs a unique `name` of 1-64 letters, digits, `_` or `-`",
                ));
            }
            if let Some(url) = &tool.url {
                check_http_url(&format!("tools[{i}].url"), url).map_err(|e| FieldError {
                    field: "tools".into(),
                    ..e
                })?;
            }
        }
        self.check_agent_brain()?;
        if let Some(primary) = self.primary_number_id
            && !self.number_ids.iter().flatten().any(|id| *id == primary)
        {
            return Err(FieldError::invalid(
                "primary_number_id",
                "`primary_number_id` must be one of `number_ids`",
            ));
        }
        Ok(())
    }

    /// The rules of the `builtin:agent` settings that need no lookup: `llm` and `stt` are
    /// required with that brain, numbers in range, `first_message` bounded, destinations
    /// named once and dialable. (Whether the named providers exist is the control plane's
    /// check: it needs the organisation's providers.)
    fn check_agent_brain(&self) -> Result<(), FieldError> {
        if self.brain.as_deref() == Some(BUILTIN_AGENT) {
            if self.llm.is_none() {
                return Err(FieldError::invalid(
                    "llm",
                    "`llm` is required with the brain \"builtin:agent\"",
                ));
            }
            if self.stt.is_none() {
                return Err(FieldError::invalid(
                    "stt",
                    "`stt` is required with the brain \"builtin:agent\"",
                ));
            }
        }
        if let Some(llm) = &self.llm {
            check_model_choice("llm", &llm.provider, Some(&llm.model))?;
            if llm.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                return Err(FieldError::invalid("llm", "`llm.temperature` must be 0-2"));
            }
            if llm.max_tokens.is_some_and(|t| !(1..=32_768).contains(&t)) {
                return Err(FieldError::invalid(
                    "llm",
                    "`llm.max_tokens` must be 1-32768",
                ));
            }
        }
        if let Some(stt) = &self.stt {
            check_model_choice("stt", &stt.provider, Some(&stt.model))?;
        }
        if let Some(tts) = &self.tts {
            check_model_choice("tts", &tts.provider, tts.model.as_deref())?;
        }
        if self
            .first_message
            .as_ref()
            .is_some_and(|m| m.is_empty() || m.len() > MAX_INSTRUCTIONS_BYTES)
        {
            return Err(FieldError::invalid(
                "first_message",
                format!("`first_message` must be 1-{MAX_INSTRUCTIONS_BYTES} bytes"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for destination in self.transfer_destinations.iter().flatten() {
            let name_ok = (1..=64).contains(&destination.name.len())
                && destination
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' ');
            if !name_ok || !names.insert(destination.name.as_str()) {
                return Err(FieldError::invalid(
                    "transfer_destinations",
                    "each destination needs a unique `name` of 1-64 letters, digits, spaces, `_` or `-`",
                ));
            }
            if !crate::number::is_e164(&destination.to) && !destination.to.starts_with("sip:") {
                return Err(FieldError::invalid(
                    "transfer_destinations",
                    "a destination's `to` must be E.164 (\"+14155550100\") or a `sip:` URI",
                ));
            }
        }
        Ok(())
    }

    /// The caller ID used by default: the primary number, else the first attached.
    pub fn primary_or_first(&self) -> Option<Uuid> {
        self.primary_number_id
            .or_else(|| self.number_ids.as_ref()?.first().copied())
    }

    /// The ring timeout (default 30 s).
    pub fn ring_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ring_timeout_seconds.unwrap_or(30).into())
    }

    /// The longest call (default 600 s).
    pub fn max_duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.max_duration_seconds.unwrap_or(600).into())
    }

    /// What to do when a machine answers (default: carry on).
    pub fn voicemail(&self) -> VoicemailAction {
        self.voicemail_action
            .clone()
            .unwrap_or(VoicemailAction::Continue)
    }
}

/// A provider reference and model name: both non-empty and at most 200 characters.
fn check_model_choice(field: &str, provider: &str, model: Option<&str>) -> Result<(), FieldError> {
    if provider.is_empty() || provider.chars().count() > 200 {
        return Err(FieldError::invalid(
            field,
            format!("`{field}.provider` must be a provider's name or id"),
        ));
    }
    if model.is_some_and(|m| m.is_empty() || m.chars().count() > 200) {
        return Err(FieldError::invalid(
            field,
            format!("`{field}.model` must be 1-200 characters"),
        ));
    }
    Ok(())
}

/// A BCP 47 tag's shape: a 2-3 letter language, then subtags of 1-8 letters or digits.
fn is_bcp47(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    primary_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// What `brain` may be, in the API's words.
const BRAIN_RULE: &str = "`brain` must be \"builtin:echo\", \"builtin:ivr\", \"builtin:agent\", \"grpc://host:port\" or a \"ws://\"/\"wss://\" URL";

/// What reads show for each value of `brain_headers`: the values are write-only, like a
/// provider's API key.
pub const HIDDEN_VALUE: &str = "***";

impl AgentFields {
    /// The settings as reads show them: `brain_headers` by name only, each value
    /// [`HIDDEN_VALUE`].
    pub fn shown(&self) -> AgentFields {
        let mut shown = self.clone();
        for value in shown.brain_headers.iter_mut().flat_map(|h| h.values_mut()) {
            *value = HIDDEN_VALUE.to_owned();
        }
        shown
    }
}

/// Whether a header name belongs to the websocket handshake itself (RFC 6455 §4.1), so
/// `brain_headers` may not set it.
fn handshake_header(name: &str) -> bool {
    ["host", "connection", "upgrade"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..14)
            .is_some_and(|p| p.eq_ignore_ascii_case("sec-websocket-"))
}

/// Most headers in `brain_headers`.
const MAX_BRAIN_HEADERS: usize = 16;

/// `brain_headers`: at most [`MAX_BRAIN_HEADERS`], names HTTP tokens (RFC 9110 §5.6.2), values
/// visible ASCII or spaces, at most 4096 bytes each.
fn check_brain_headers(
    headers: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(), FieldError> {
    let Some(headers) = headers else {
        return Ok(());
    };
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let value_ok = |v: &str| v.len() <= 4096 && v.chars().all(|c| c == ' ' || c.is_ascii_graphic());
    if headers.len() > MAX_BRAIN_HEADERS
        || headers
            .iter()
            .any(|(name, value)| name.is_empty() || !name.chars().all(token) || !value_ok(value))
    {
        return Err(FieldError::invalid(
            "brain_headers",
            format!(
                "`brain_headers` holds at most {MAX_BRAIN_HEADERS} headers, each name an HTTP token and each value visible ASCII (at most 4096 bytes)"
            ),
        ));
    }
    if let Some(name) = headers.keys().find(|name| handshake_header(name)) {
        return Err(FieldError::invalid(
            "brain_headers",
            format!(
                "`brain_headers` may not set {name:?}: Host, Connection, Upgrade and Sec-WebSocket-* belong to the websocket handshake"
            ),
        ));
    }
    Ok(())
}

/// A brain this build can run: a built-in one, an AgentBridge address or a Media Streams app.
fn is_brain(brain: &str) -> bool {
    let websocket = crate::media_streams::SCHEMES.iter().any(|scheme| {
        brain.strip_prefix(scheme).is_some_and(|rest| {
            let host = rest.split(['/', '?']).next().unwrap_or_default();
            !host.is_empty() && !brain.contains(char::is_whitespace)
        })
    });
    websocket
        || brain == "builtin:echo"
        || brain == "builtin:ivr"
        || brain == BUILTIN_AGENT
        || brain
            .strip_prefix("grpc://")
            .and_then(|a| a.rsplit_once(':'))
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
}

impl Serialize for VoicemailAction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::HangUp => s.serialize_str("hangup"),
            Self::Continue => s.serialize_str("continue"),
            Self::LeaveMessage(message) => {
                serde_json::json!({"action": "leave_message", "message": message}).serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for VoicemailAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = || {
            serde::de::Error::custom(
                "`voicemail_action` must be \"hangup\", \"continue\" or {\"action\": ..., \"message\": ...}",
            )
        };
        let action = |name: &str, message: &str| match name {
            "hangup" => Ok(Self::HangUp),
            "continue" => Ok(Self::Continue),
            "leave_message" if !message.trim().is_empty() => {
                Ok(Self::LeaveMessage(message.to_owned()))
            }
            "leave_message" => Err(serde::de::Error::custom(
                "`voicemail_action` \"leave_message\" needs the `message` to leave",
            )),
            _ => Err(serde::de::Error::custom(
                "`voicemail_action.action` must be \"hangup\", \"leave_message\" or \"continue\"",
            )),
        };
        match Value::deserialize(d)? {
            Value::String(s) if s == "hangup" || s == "continue" => action(&s, ""),
            Value::Object(o) => {
                if let Some(unknown) = o.keys().find(|k| *k != "action" && *k != "message") {
                    return Err(serde::de::Error::custom(format!(
                        "unknown field `{unknown}`"
                    )));
                }
                let message = o.get("message").and_then(Value::as_str).unwrap_or("");
                action(
                    o.get("action").and_then(Value::as_str).unwrap_or(""),
                    message,
                )
            }
            _ => Err(shape()),
        }
    }
}

impl Serialize for Amd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_bool(false),
            Self::On(t) if *t == AmdThresholds::default() => s.serialize_bool(true),
            Self::On(t) => t.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Amd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) => Ok(Self::Off),
            Value::Bool(true) => Ok(Self::On(AmdThresholds::default())),
            Value::Object(o) => {
                let in_range = o
                    .iter()
                    .filter(|(key, _)| *key != "mode")
                    .all(|(_, v)| v.as_u64().is_some_and(|n| (1..=60_000).contains(&n)));
                let thresholds = serde_json::from_value::<AmdThresholds>(Value::Object(o))
                    .map_err(|e| serde::de::Error::custom(format!("`amd`: {e}")))?;
                if in_range {
                    Ok(Self::On(thresholds))
                } else {
                    Err(serde::de::Error::custom(
                        "`amd` thresholds must be whole numbers from 1 to 60000",
                    ))
                }
            }
            _ => Err(serde::de::Error::custom(
                "`amd` must be true, false or an object of thresholds",
            )),
        }
    }
}

impl Serialize for BargeIn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_str("off"),
            Self::On => s.serialize_str("on"),
            Self::AfterMs(ms) => s.serialize_u32(*ms),
        }
    }
}

impl<'de> Deserialize<'de> for BargeIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s == "on" => Ok(Self::On),
            Value::String(s) if s == "off" => Ok(Self::Off),
            Value::Number(n) if n.as_u64().is_some_and(|ms| (1..=10_000).contains(&ms)) => {
                Ok(Self::AfterMs(
                    n.as_u64()
                        .and_then(|ms| u32::try_from(ms).ok())
                        .unwrap_or(1),
                ))
            }
            _ => Err(serde::de::Error::custom(
                "`barge_in` must be \"on\", \"off\" or a minimum of speech in ms (1-10000)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_value;
    use serde_json::json;

    #[test]
    fn reads_show_brain_headers_by_name_only() {
        let fields: AgentFields = from_value(json!({"name": "a", "brain": "wss://a.example/s",
            "brain_headers": {"Authorization": "Bearer secret", "X-Tenant": "t"}}))
        .unwrap();
        let shown = serde_json::to_value(fields.shown()).unwrap();
        assert_eq!(
            shown["brain_headers"],
            json!({"Authorization": "***", "X-Tenant": "***"})
        );
        assert_eq!(
            fields.brain_headers.unwrap()["Authorization"],
            "Bearer secret",
            "the stored settings keep the value"
        );
    }

    fn refused(body: Value) -> FieldError {
        match from_value::<AgentFields>(body) {
            Ok(fields) => fields.check().unwrap_err(),
            Err(e) => e,
        }
    }

    #[test]
    fn settings_read_back_as_they_were_written() {
        let body = json!({
            "name": "a", "voicemail_action": {"action": "leave_message", "message": "hi"},
            "amd": {"greeting_ms": 1500}, "barge_in": 300, "tools": [{"name": "t",
            "description": "d", "parameters": {"type": "object"}}], "direction": "outbound"
        });
        let fields: AgentFields = from_value(body.clone()).unwrap();
        fields.check().unwrap();
        assert_eq!(
            fields.voicemail(),
            VoicemailAction::LeaveMessage("hi".into())
        );
        assert_eq!(fields.barge_in, Some(BargeIn::AfterMs(300)));
        assert_eq!(serde_json::to_value(&fields).unwrap(), body);
        let plain: AgentFields =
            from_value(json!({"name": "b", "voicemail_action": "hangup", "amd": true})).unwrap();
        assert_eq!(plain.voicemail(), VoicemailAction::HangUp);
        assert_eq!(plain.amd, Some(Amd::On(AmdThresholds::default())));
    }

    #[test]
    fn the_field_list_is_the_types_and_unknown_stored_keys_are_left_out() {
        let every = json!({
            "name": "a", "direction": "outbound", "persona": "p", "voice": "v",
            "language": "en", "instructions": "i", "returns": {}, "tools": [],
            "voicemail_action": "hangup", "webhook_url": "https://x", "number_ids": [],
            "primary_number_id": "0190f5a0-0000-7000-8000-000000000000", "brain": "builtin:echo",
            "brain_headers": {"Authorization": "Bearer t"}, "ring_timeout_seconds": 1, "max_duration_seconds": 1, "amd": true,
            "mask_dtmf": true, "record": true, "barge_in": "on", "endpointing_silence_ms": 100,
            "silence_timeout_seconds": 1,
            "llm": {"provider": "p", "model": "m"}, "stt": {"provider": "p", "model": "m"},
            "tts": {"provider": "builtin:espeak"}, "first_message": "Hi",
            "transfer_destinations": [{"name": "sales", "to": "+14155550100"}]
        });
        let fields: AgentFields = from_value(every).unwrap();
        crate::parse::tests::assert_lists_every_key(&fields, AgentFields::FIELDS);
        let stored = json!({"voice": "v", "from_a_newer_node": 1});
        let read = AgentFields::from_stored(stored.as_object().unwrap().clone()).unwrap();
        assert_eq!(read.voice.as_deref(), Some("v"));
    }

    #[test]
    fn each_rule_names_its_field_in_the_apis_words() {
        for (body, field, message) in [
            (json!({}), "name", "`name` is required"),
            (
                json!({"name": "a", "language": "english!"}),
                "language",
                "`language` must be a BCP 47 tag such as \"en-US\"",
            ),
            (
                json!({"name": "a", "brain": "http://x"}),
                "brain",
                BRAIN_RULE,
            ),
            (
                json!({"name": "a", "brain": "wss://app.example.com/s", "brain_headers": {"bad name": "x"}}),
                "brain_headers",
                "`brain_headers` holds at most 16 headers, each name an HTTP token and each value visible ASCII (at most 4096 bytes)",
            ),
            (
                json!({"name": "a", "brain": "wss://app.example.com/s", "brain_headers": {"sec-websocket-key": "x"}}),
                "brain_headers",
                "`brain_headers` may not set \"sec-websocket-key\": Host, Connection, Upgrade and Sec-WebSocket-* belong to the websocket handshake",
            ),
            (
                json!({"name": "a", "brain": "wss://app.example.com/s", "brain_headers": {"Host": "x"}}),
                "brain_headers",
                "`brain_headers` may not set \"Host\": Host, Connection, Upgrade and Sec-WebSocket-* belong to the websocket handshake",
            ),
            (
                json!({"name": "a", "brain": "builtin:agent",
                       "stt": {"provider": "p", "model": "m"}}),
                "llm",
                "`llm` is required with the brain \"builtin:agent\"",
            ),
            (
                json!({"name": "a", "brain": "builtin:agent",
                       "llm": {"provider": "p", "model": "m"}}),
                "stt",
                "`stt` is required with the brain \"builtin:agent\"",
            ),
            (
                json!({"name": "a", "ring_timeout_seconds": 0}),
                "ring_timeout_seconds",
                "`ring_timeout_seconds` must be 1-300",
            ),
            (
                json!({"name": "a", "voicemail_action": {"action": "leave_message"}}),
                "voicemail_action",
                "`voicemail_action` \"leave_message\" needs the `message` to leave",
            ),
            (
                json!({"name": "a", "voicemail_action": 3}),
                "voicemail_action",
                "`voicemail_action` must be \"hangup\", \"continue\" or {\"action\": ..., \"message\": ...}",
            ),
            (
                json!({"name": "a", "barge_in": 0}),
                "barge_in",
                "`barge_in` must be \"on\", \"off\" or a minimum of speech in ms (1-10000)",
            ),
            (
                json!({"name": "a", "amd": {"greeting_ms": 0}}),
                "amd",
                "`amd` thresholds must be whole numbers from 1 to 60000",
            ),
            (
                json!({"name": "a", "amd": "yes"}),
                "amd",
                "`amd` must be true, false or an object of thresholds",
            ),
            (
                json!({"name": "a", "mask_dtmf": "yes"}),
                "mask_dtmf",
                "`mask_dtmf` must be true or false",
            ),
            (
                json!({"name": "a", "tools": [{"name": "a b", "description": "d", "parameters": {}}]}),
                "tools",
                "each tool needs a unique `name` of 1-64 letters, digits, `_` or `-`",
            ),
            (
                json!({"name": "a", "persona": 3}),
                "persona",
                "`persona` must be a string",
            ),
            (
                json!({"name": "a", "nonsense": 3}),
                "nonsense",
                "unknown field `nonsense`",
            ),
        ] {
            let e = refused(body.clone());
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                (field, message),
                "{body}"
            );
        }
    }
}

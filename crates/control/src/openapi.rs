//! The shapes of the HTTP API's bodies, for the OpenAPI 3.1 document served at
//! `GET /v1/openapi.json`. The document is assembled from the same registrations that build the
//! router (`utoipa-axum`), so a route cannot exist without being documented, nor the reverse.
//! Request bodies are still parsed field by field (strictly, naming the field at fault); these
//! types describe them.

use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The one error shape of the API.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, ToSchema)]
pub struct ErrorDetail {
    /// Machine code: `invalid_request`, `unauthenticated`, `not_found`, `conflict`,
    /// `idempotency_conflict`, `in_use`, `failed_precondition`, `call_ended`, `too_large`,
    /// `rate_limited`, `forbidden`, `unavailable`, `internal`.
    pub code: String,
    /// For people; names the field and the rule.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
}

/// A trunk's writable fields. On create `name` and `host` are required; on PATCH every field
/// is optional and `null` clears an optional one.
#[derive(Debug, ToSchema)]
pub struct TrunkFields {
    /// Unique name.
    pub name: Option<String>,
    /// Host name or address (SRV records are followed for names).
    pub host: Option<String>,
    /// SIP port, default 5060.
    pub port: Option<u16>,
    /// `udp` (default) or `tcp`.
    pub transport: Option<String>,
    /// Digest user name.
    pub username: Option<String>,
    /// Digest password: write-only, never returned nor logged.
    pub password: Option<String>,
    /// Digest realm.
    pub realm: Option<String>,
    /// Domain of the From header.
    pub from_domain: Option<String>,
    /// Most calls in progress through the trunk.
    pub max_concurrent_calls: Option<u32>,
    /// Most new calls per second through the trunk.
    pub max_calls_per_second: Option<u32>,
    /// Keep a registration with the trunk (REGISTER with the credentials, refreshed).
    pub register: Option<bool>,
}

/// A trunk.
#[derive(Debug, ToSchema)]
pub struct Trunk {
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Digest user name.
    pub username: Option<String>,
    /// Whether a password is set (it is never shown).
    pub has_password: bool,
    /// Digest realm.
    pub realm: Option<String>,
    /// From domain.
    pub from_domain: Option<String>,
    /// Concurrency cap.
    pub max_concurrent_calls: Option<u32>,
    /// Rate cap.
    pub max_calls_per_second: Option<u32>,
    /// Whether Dialtone keeps a registration with the trunk.
    pub register: bool,
    /// `{"state": "pending"}`, `{"state": "registered", "expires", "refreshes"}` or
    /// `{"state": "failed", "sip_status"}`; null without a registration.
    #[schema(value_type = Object)]
    pub registration: Option<Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A number to add.
#[derive(Debug, ToSchema)]
pub struct NumberFields {
    /// E.164.
    pub e164: String,
    /// UUID of the trunk that carries it.
    pub trunk_id: String,
}

/// A number.
#[derive(Debug, ToSchema)]
pub struct Number {
    /// UUID.
    pub id: String,
    /// E.164.
    pub e164: String,
    /// The trunk.
    pub trunk_id: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A tool the agent's brain may call.
#[derive(Debug, ToSchema)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// Where it is served, if Dialtone calls it.
    pub url: Option<String>,
}

/// An agent's fields. On create `name` is required; on PATCH every field is optional.
#[derive(Debug, ToSchema)]
pub struct AgentFields {
    /// Name.
    pub name: Option<String>,
    /// `outbound`.
    pub direction: Option<String>,
    /// Who the agent is.
    pub persona: Option<String>,
    /// TTS voice.
    pub voice: Option<String>,
    /// BCP 47 language.
    pub language: Option<String>,
    /// Default instructions (a call's own replace them).
    pub instructions: Option<String>,
    /// JSON Schema of the structured result.
    #[schema(value_type = Object)]
    pub returns: Option<Value>,
    /// Tools.
    pub tools: Option<Vec<Tool>>,
    /// `"hangup"`, `"continue"`, or `{"action": "hangup"|"leave_message"|"continue",
    /// "message": "..."}`.
    #[schema(value_type = Object)]
    pub voicemail_action: Option<Value>,
    /// Default webhook receiver.
    pub webhook_url: Option<String>,
    /// UUIDs of the numbers it may call from.
    pub number_ids: Option<Vec<String>>,
    /// The default caller ID, one of `number_ids`.
    pub primary_number_id: Option<String>,
    /// `builtin:echo`, `builtin:ivr` or `grpc://host:port`.
    pub brain: Option<String>,
    /// Seconds to ring (default 30).
    pub ring_timeout_seconds: Option<u32>,
    /// Longest call in seconds (default 600).
    pub max_duration_seconds: Option<u32>,
    /// Answering-machine detection: `true`, or thresholds in ms (`initial_silence_ms`,
    /// `greeting_ms`, `after_greeting_silence_ms`, `total_analysis_time_ms`) and
    /// `maximum_words`.
    #[schema(value_type = Object)]
    pub amd: Option<Value>,
    /// Mask DTMF digits in transcripts and logs (payment collection).
    pub mask_dtmf: Option<bool>,
    /// `"on"` (default), `"off"`, or a minimum of caller speech in ms before the agent stops.
    #[schema(value_type = Object)]
    pub barge_in: Option<Value>,
    /// Silence that ends a caller's turn (default 500).
    pub endpointing_silence_ms: Option<u32>,
    /// Caller silence before "are you still there?", and as long again before hanging up
    /// (`silence_timeout`); none by default.
    pub silence_timeout_seconds: Option<u32>,
}

/// An agent: its fields, plus these.
#[derive(Debug, ToSchema)]
pub struct Agent {
    /// UUID.
    pub id: String,
    /// RFC 3339.
    pub created_at: String,
    /// Every field of [`AgentFields`] that is set.
    #[schema(inline)]
    pub fields: AgentFields,
}

/// A dispatch. `persona`, `voice`, `language`, `returns`, `tools` and `voicemail_action` are
/// refused (400 naming the field): they live on the agent. Any other unknown field is a 400.
#[derive(Debug, ToSchema)]
pub struct DispatchCall {
    /// The agent's UUID.
    pub agent_id: String,
    /// E.164: `+`, then 2–15 digits, the first not 0.
    pub to: String,
    /// Caller ID: another number of the same agent, as E.164 or its UUID (default: the
    /// agent's primary number).
    pub from_number: Option<String>,
    /// Replaces the agent's instructions for this call (at most 32 KiB).
    pub instructions: Option<String>,
    /// A JSON object the agent can reference (default `{}`, at most 64 KiB).
    #[schema(value_type = Object)]
    pub context: Option<Value>,
    /// This call's webhook receiver (http or https; not private unless allowed).
    pub webhook_url: Option<String>,
    /// Key/values returned on the call (default `{}`, at most 64 KiB).
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

/// Why a call ended.
#[derive(Debug, ToSchema)]
pub struct EndReason {
    /// `completed`, `busy`, `no_answer`, `canceled`, `rtp_timeout`, `max_duration`, ...
    pub code: String,
    /// `agent`, `callee`, `api`, `engine` or `trunk`.
    pub by: Option<String>,
    /// The SIP status that ended it.
    pub sip_status: Option<u16>,
}

/// One line of the conversation.
#[derive(Debug, ToSchema)]
pub struct TranscriptLine {
    /// `agent` or `callee`.
    pub role: String,
    /// What was said.
    pub text: String,
    /// RFC 3339.
    pub at: String,
}

/// A call.
#[derive(Debug, ToSchema)]
pub struct Call {
    /// UUID v7.
    pub id: String,
    /// The agent.
    pub agent_id: String,
    /// Who was called.
    pub to: String,
    /// Caller ID used.
    pub from_number: String,
    /// Trunk used.
    pub trunk_id: Option<String>,
    /// The effective instructions.
    pub instructions: Option<String>,
    /// Context.
    #[schema(value_type = Object)]
    pub context: Value,
    /// Metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The effective webhook receiver.
    pub webhook_url: Option<String>,
    /// `queued`, `dialing`, `ringing`, `in_progress`, `completed`, `busy`, `no_answer`,
    /// `failed`, `canceled`.
    pub status: String,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// `human`, `machine` or `unknown`.
    pub answered_by: Option<String>,
    /// SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// RFC 3339 times.
    pub created_at: String,
    /// When the INVITE left.
    pub dialed_at: Option<String>,
    /// When it rang.
    pub ringing_at: Option<String>,
    /// When it was answered.
    pub answered_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Ringing time.
    pub ring_duration_ms: Option<i64>,
    /// Talk time.
    pub talk_duration_ms: Option<i64>,
    /// The conversation.
    pub transcript: Vec<TranscriptLine>,
    /// The structured result.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
    /// Why the result is missing or invalid.
    pub result_error: Option<String>,
    /// Media statistics.
    #[schema(value_type = Object)]
    pub media_stats: Option<Value>,
}

/// A page of trunks.
#[derive(Debug, ToSchema)]
pub struct TrunkList {
    /// The trunks.
    pub data: Vec<Trunk>,
    /// Always null: every trunk is on the one page.
    pub next_cursor: Option<String>,
}

/// A page of numbers.
#[derive(Debug, ToSchema)]
pub struct NumberList {
    /// The numbers.
    pub data: Vec<Number>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// A page of agents.
#[derive(Debug, ToSchema)]
pub struct AgentList {
    /// The agents.
    pub data: Vec<Agent>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// A page of calls, newest first.
#[derive(Debug, ToSchema)]
pub struct CallList {
    /// The calls.
    pub data: Vec<Call>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A webhook event of a call with its delivery state.
#[derive(Debug, ToSchema)]
pub struct Event {
    /// UUID.
    pub id: String,
    /// `call.queued`, `call.dialing`, `call.ringing`, `call.answered`, `call.ended`.
    #[schema(rename = "type")]
    pub kind: String,
    /// Per-call order.
    pub sequence: i64,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A call's events.
#[derive(Debug, ToSchema)]
pub struct EventList {
    /// The events in order.
    pub data: Vec<Event>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// An event queued for delivery again.
#[derive(Debug, ToSchema)]
pub struct Redelivery {
    /// The event.
    pub id: String,
    /// Its call.
    pub call_id: String,
    /// `pending`.
    pub state: String,
}

/// A new organisation.
#[derive(Debug, ToSchema)]
pub struct OrganizationFields {
    /// Name.
    pub name: String,
    /// Most calls in progress at once; beyond it calls wait in `queued` (in order, up to the
    /// queue timeout, then `failed` with `queue_timeout`).
    pub max_concurrent_calls: Option<u32>,
    /// Most dispatches per second; beyond it `429` with `Retry-After`.
    pub max_calls_per_second: Option<u32>,
}

/// An organisation.
#[derive(Debug, ToSchema)]
pub struct Organization {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Concurrency cap.
    pub max_concurrent_calls: Option<u32>,
    /// Rate cap.
    pub max_calls_per_second: Option<u32>,
    /// RFC 3339.
    pub created_at: String,
}

/// Organisations.
#[derive(Debug, ToSchema)]
pub struct OrganizationList {
    /// Every organisation.
    pub data: Vec<Organization>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// A key to issue.
#[derive(Debug, ToSchema)]
pub struct KeyFields {
    /// Whether it may manage organisations and keys (default false).
    pub admin: Option<bool>,
}

/// A key just issued. Only its SHA-256 is stored: the secret is shown this once.
#[derive(Debug, ToSchema)]
pub struct IssuedKey {
    /// UUID.
    pub id: String,
    /// The organisation.
    pub organization_id: String,
    /// The secret, for `Authorization: Bearer <key>`.
    pub key: String,
    /// Its first characters, to recognise it by.
    pub prefix: String,
    /// Admin or not.
    pub admin: bool,
}

/// Adds the bearer-key security scheme.
#[derive(Debug)]
pub struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document's frame; the paths come from the router's registrations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Dialtone",
        description = "Outbound AI voice calls: trunks, numbers, agents and calls. Every route \
                       needs `Authorization: Bearer <key>`; errors have one shape, `ErrorBody`.",
    ),
    modifiers(&BearerKey),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

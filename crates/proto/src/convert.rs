//! The gRPC messages to and from the model's types (`dialtone-model`), field by field with
//! no JSON in between (only the proto fields that are free-form JSON — context, metadata,
//! result, schemas, AMD and barge-in settings — pass through `serde_json::Value`). A request
//! message that breaks a rule gives the model's [`FieldError`], naming the field, exactly as
//! the HTTP API would.
#![warn(missing_docs, clippy::all)]

use dialtone_model::agent::{AgentView, Tool as ModelTool, VoicemailAction as ModelVoicemail};
use dialtone_model::parse::from_value as parse_value;
use dialtone_model::{
    AgentFields as ModelAgentFields, CallStatus as ModelCallStatus, CallView, Codec as ModelCodec,
    DispatchCall, FieldError, IssuedKeyView, KeyFields, KeyScope as ModelScope, KeyView,
    NumberView, OrganizationFields as ModelOrganizationFields, OrganizationPatch, OrganizationView,
    ProviderFields as ModelProviderFields, ProviderKind as ModelKind, ProviderView,
    RegistrationView, SrtpMode as ModelSrtp, TransferCall, TrunkFields as ModelTrunkFields,
    TrunkTransport as ModelTransport, TrunkView,
};
use uuid::Uuid;

use crate::json::{from_struct, from_value, to_struct, to_value};
use crate::*;

/// `text` as a UUID, or the error naming `field`.
fn uuid(field: &str, text: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(text)
        .map_err(|_| FieldError::invalid(field, format!("`{field}` must be a UUID")))
}

impl From<ModelCallStatus> for CallStatus {
    fn from(status: ModelCallStatus) -> Self {
        match status {
            ModelCallStatus::Queued => Self::Queued,
            ModelCallStatus::Dialing => Self::Dialing,
            ModelCallStatus::Ringing => Self::Ringing,
            ModelCallStatus::InProgress => Self::InProgress,
            ModelCallStatus::Completed => Self::Completed,
            ModelCallStatus::Busy => Self::Busy,
            ModelCallStatus::NoAnswer => Self::NoAnswer,
            ModelCallStatus::Failed => Self::Failed,
            ModelCallStatus::Canceled => Self::Canceled,
        }
    }
}

impl CallStatus {
    /// The model's status; `None` for `CALL_STATUS_UNSPECIFIED`.
    pub fn to_model(self) -> Option<ModelCallStatus> {
        ModelCallStatus::ALL
            .iter()
            .copied()
            .find(|s| CallStatus::from(*s) == self)
    }
}

impl From<&CallView> for Call {
    fn from(call: &CallView) -> Self {
        Self {
            id: call.id.to_string(),
            agent_id: call.agent_id.to_string(),
            to: call.to.clone(),
            from_number: call.from_number.clone(),
            direction: call.direction.as_str().to_owned(),
            instructions: call.instructions.clone().unwrap_or_default(),
            context: call.context.as_object().map(|_| to_struct(&call.context)),
            metadata: call.metadata.as_object().map(|_| to_struct(&call.metadata)),
            webhook_url: call.webhook_url.clone(),
            status: CallStatus::from(call.status) as i32,
            end_reason: call.end_reason.as_ref().map(|r| EndReason {
                code: r.code.as_str().to_owned(),
                by: r.by.map(|b| b.as_str().to_owned()).unwrap_or_default(),
                sip_status: r.sip_status.map(u32::from),
                message: Some(r.message.clone()),
            }),
            answered_by: call.answered_by.map(|a| a.as_str().to_owned()),
            sip_call_id: call.sip_call_id.clone(),
            trunk_id: Some(call.trunk_id.to_string()),
            created_at: call.created_at.clone().unwrap_or_default(),
            dialed_at: call.dialed_at.clone(),
            ringing_at: call.ringing_at.clone(),
            answered_at: call.answered_at.clone(),
            ended_at: call.ended_at.clone(),
            ring_duration_ms: call.ring_duration_ms,
            talk_duration_ms: call.talk_duration_ms,
            transcript: call
                .transcript
                .as_array()
                .into_iter()
                .flatten()
                .map(|line| {
                    let text = |key: &str| {
                        line.get(key)
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    TranscriptLine {
                        role: text("role"),
                        text: text("text"),
                        at: text("at"),
                        interrupted: line.get("interrupted").and_then(serde_json::Value::as_bool),
                        name: line
                            .get("name")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned),
                        arguments: line.get("arguments").map(to_value),
                        result: line.get("result").map(to_value),
                    }
                })
                .collect(),
            result: call.result.as_ref().filter(|r| !r.is_null()).map(to_value),
            result_error: call.result_error.clone(),
            recording: call
                .recording
                .as_ref()
                .and_then(|r| serde_json::to_value(r).ok())
                .map(|r| to_struct(&r)),
            recording_error: call.recording_error.clone(),
            media_stats: call
                .media_stats
                .as_ref()
                .filter(|m| m.is_object())
                .map(to_struct),
            agent_stats: call
                .agent_stats
                .as_ref()
                .filter(|m| m.is_object())
                .map(to_struct),
            summary: call.summary.clone(),
            answered_by_reason: call
                .answered_by_reason
                .as_ref()
                .and_then(|r| serde_json::to_value(r).ok())
                .map(|r| to_struct(&r)),
            transferred_to: call.transferred_to.clone(),
            transfer: call.transfer.as_ref().map(|t| CallTransfer {
                to: t.to.clone(),
                mode: t.mode.as_str().to_owned(),
                status: t.status.as_str().to_owned(),
                sip_status: t.sip_status.map(u32::from),
                reason: t.reason.map(|r| r.as_str().to_owned()),
                bridge: t.bridge.as_ref().map(|b| CallTransferBridge {
                    sip_call_id: b.sip_call_id.clone(),
                    answered_at: b.answered_at.clone(),
                    duration_ms: b.duration_ms,
                }),
            }),
            node: call.node.clone(),
        }
    }
}

impl TryFrom<TransferCallRequest> for TransferCall {
    type Error = FieldError;

    /// Read as the HTTP API reads its body (the same rules and messages).
    fn try_from(r: TransferCallRequest) -> Result<Self, FieldError> {
        let mut body = serde_json::Map::new();
        body.insert("to".into(), r.to.into());
        if let Some(mode) = r.mode {
            body.insert("mode".into(), mode.into());
        }
        TransferCall::from_json(body)
    }
}

impl TryFrom<DispatchCallRequest> for DispatchCall {
    type Error = FieldError;

    fn try_from(r: DispatchCallRequest) -> Result<Self, FieldError> {
        let call = Self {
            agent_id: uuid("agent_id", &r.agent_id)?,
            to: r.to,
            from_number: r.from_number,
            instructions: r.instructions,
            context: r.context.as_ref().map(from_struct),
            webhook_url: r.webhook_url,
            metadata: r.metadata.as_ref().map(from_struct),
        };
        call.check()?;
        Ok(call)
    }
}

impl From<ModelTransport> for TrunkTransport {
    fn from(t: ModelTransport) -> Self {
        match t {
            ModelTransport::Udp => Self::Udp,
            ModelTransport::Tcp => Self::Tcp,
            ModelTransport::Tls => Self::Tls,
        }
    }
}

impl From<ModelSrtp> for SrtpMode {
    fn from(m: ModelSrtp) -> Self {
        match m {
            ModelSrtp::Off => Self::Off,
            ModelSrtp::Optional => Self::Optional,
            ModelSrtp::Required => Self::Required,
        }
    }
}

impl From<ModelCodec> for Codec {
    fn from(c: ModelCodec) -> Self {
        match c {
            ModelCodec::Opus => Self::Opus,
            ModelCodec::G722 => Self::G722,
            ModelCodec::Pcmu => Self::Pcmu,
            ModelCodec::Pcma => Self::Pcma,
        }
    }
}

/// The model's codec for a proto `Codec` value; unspecified or unknown values are refused.
fn model_codec(value: i32) -> Result<ModelCodec, FieldError> {
    match Codec::try_from(value) {
        Ok(Codec::Opus) => Ok(ModelCodec::Opus),
        Ok(Codec::G722) => Ok(ModelCodec::G722),
        Ok(Codec::Pcmu) => Ok(ModelCodec::Pcmu),
        Ok(Codec::Pcma) => Ok(ModelCodec::Pcma),
        Ok(Codec::Unspecified) | Err(_) => Err(FieldError::invalid(
            "codecs",
            "`codecs` must list \"opus\", \"g722\", \"pcmu\" or \"pcma\"",
        )),
    }
}

impl From<&TrunkView> for Trunk {
    fn from(t: &TrunkView) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            host: t.host.clone(),
            port: u32::from(t.port),
            transport: TrunkTransport::from(t.transport) as i32,
            username: t.username.clone(),
            realm: t.realm.clone(),
            from_domain: t.from_domain.clone(),
            max_concurrent_calls: t.max_concurrent_calls,
            max_calls_per_second: t.max_calls_per_second,
            has_password: t.has_password,
            created_at: t.created_at.clone().unwrap_or_default(),
            register: t.register,
            registration_state: t.registration.as_ref().map(|r| {
                match r {
                    RegistrationView::Pending => "pending",
                    RegistrationView::Registered { .. } => "registered",
                    RegistrationView::Failed { .. } => "failed",
                }
                .to_owned()
            }),
            tls_ca_pem: t.tls_ca_pem.clone(),
            tls_verify: t.tls_verify,
            tls_client_cert_pem: t.tls_client_cert_pem.clone(),
            has_tls_client_key: t.has_tls_client_key,
            srtp: SrtpMode::from(t.srtp) as i32,
            inbound_cidrs: t.inbound_cidrs.clone(),
            codecs: t.codecs.iter().map(|c| Codec::from(*c) as i32).collect(),
            transfer_sip_domains: t.transfer_sip_domains.clone(),
        }
    }
}

impl TryFrom<TrunkFields> for ModelTrunkFields {
    type Error = FieldError;

    fn try_from(f: TrunkFields) -> Result<Self, FieldError> {
        let transport = match TrunkTransport::try_from(f.transport) {
            Ok(TrunkTransport::Unspecified) => None,
            Ok(TrunkTransport::Udp) => Some(ModelTransport::Udp),
            Ok(TrunkTransport::Tcp) => Some(ModelTransport::Tcp),
            Ok(TrunkTransport::Tls) => Some(ModelTransport::Tls),
            Err(_) => {
                return Err(FieldError::invalid(
                    "transport",
                    "`transport` must be \"udp\", \"tcp\" or \"tls\"",
                ));
            }
        };
        let srtp = match SrtpMode::try_from(f.srtp) {
            Ok(SrtpMode::Unspecified) => None,
            Ok(SrtpMode::Off) => Some(ModelSrtp::Off),
            Ok(SrtpMode::Optional) => Some(ModelSrtp::Optional),
            Ok(SrtpMode::Required) => Some(ModelSrtp::Required),
            Err(_) => {
                return Err(FieldError::invalid(
                    "srtp",
                    "`srtp` must be \"off\", \"optional\" or \"required\"",
                ));
            }
        };
        Ok(Self {
            name: f.name,
            host: f.host,
            port: f.port,
            transport,
            username: f.username,
            password: f.password,
            realm: f.realm,
            from_domain: f.from_domain,
            max_concurrent_calls: f.max_concurrent_calls,
            max_calls_per_second: f.max_calls_per_second,
            register: f.register,
            tls_ca_pem: f.tls_ca_pem,
            tls_verify: f.tls_verify,
            tls_client_cert_pem: f.tls_client_cert_pem,
            tls_client_key_pem: f.tls_client_key_pem,
            srtp,
            inbound_cidrs: f.inbound_cidrs.map(|n| n.cidrs),
            codecs: match f.codecs.as_slice() {
                [] => None,
                list => Some(
                    list.iter()
                        .map(|c| model_codec(*c))
                        .collect::<Result<_, _>>()?,
                ),
            },
            transfer_sip_domains: f.transfer_sip_domains.map(|list| list.hosts),
        })
    }
}

impl From<ModelKind> for ProviderKind {
    fn from(kind: ModelKind) -> Self {
        match kind {
            ModelKind::OpenAi => Self::Openai,
            ModelKind::Deepgram => Self::Deepgram,
            ModelKind::Cartesia => Self::Cartesia,
            ModelKind::ElevenLabs => Self::Elevenlabs,
        }
    }
}

impl From<&ProviderView> for Provider {
    fn from(p: &ProviderView) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            kind: ProviderKind::from(p.kind) as i32,
            base_url: p.base_url.clone(),
            has_api_key: p.has_api_key,
            created_at: p.created_at.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<ProviderFields> for ModelProviderFields {
    type Error = FieldError;

    /// `PROVIDER_KIND_UNSPECIFIED` leaves the kind unset (kept by an update, refused on
    /// create). The API key is only ever written.
    fn try_from(f: ProviderFields) -> Result<Self, FieldError> {
        let kind = match ProviderKind::try_from(f.kind) {
            Ok(ProviderKind::Unspecified) => None,
            Ok(kind) => ModelKind::ALL
                .iter()
                .copied()
                .find(|k| ProviderKind::from(*k) == kind),
            Err(_) => {
                return Err(FieldError::invalid(
                    "kind",
                    "`kind` must be \"openai\", \"deepgram\", \"cartesia\" or \"elevenlabs\"",
                ));
            }
        };
        Ok(Self {
            name: f.name,
            kind,
            base_url: f.base_url,
            api_key: f.api_key,
        })
    }
}

impl From<&OrganizationView> for Organization {
    fn from(o: &OrganizationView) -> Self {
        Self {
            id: o.id.to_string(),
            name: o.name.clone(),
            max_concurrent_calls: o.max_concurrent_calls,
            max_calls_per_second: o.max_calls_per_second,
            disabled: o.disabled,
            disabled_at: o.disabled_at.clone(),
            created_at: o.created_at.clone().unwrap_or_default(),
        }
    }
}

impl From<OrganizationFields> for ModelOrganizationFields {
    fn from(f: OrganizationFields) -> Self {
        Self {
            name: f.name,
            max_concurrent_calls: f.max_concurrent_calls,
            max_calls_per_second: f.max_calls_per_second,
        }
    }
}

impl From<&UpdateOrganizationRequest> for OrganizationPatch {
    fn from(r: &UpdateOrganizationRequest) -> Self {
        Self {
            disabled: r.disabled,
            end_live_calls: r.end_live_calls,
        }
    }
}

impl From<ModelScope> for KeyScope {
    fn from(scope: ModelScope) -> Self {
        match scope {
            ModelScope::Operator => Self::Operator,
            ModelScope::Admin => Self::Admin,
            ModelScope::Standard => Self::Standard,
        }
    }
}

impl From<&KeyView> for Key {
    fn from(k: &KeyView) -> Self {
        Self {
            id: k.id.to_string(),
            organization_id: k.organization_id.to_string(),
            prefix: k.prefix.clone(),
            scope: KeyScope::from(k.scope) as i32,
            created_at: k.created_at.clone().unwrap_or_default(),
            expires_at: k.expires_at.clone(),
            last_used_at: k.last_used_at.clone(),
        }
    }
}

impl From<&IssuedKeyView> for IssuedKey {
    fn from(k: &IssuedKeyView) -> Self {
        Self {
            id: k.id.to_string(),
            organization_id: k.organization_id.to_string(),
            key: k.key.clone(),
            prefix: k.prefix.clone(),
            scope: KeyScope::from(k.scope) as i32,
            expires_at: k.expires_at.clone(),
        }
    }
}

impl TryFrom<&IssueKeyRequest> for KeyFields {
    type Error = FieldError;

    /// `KEY_SCOPE_UNSPECIFIED` leaves the scope to its default (`standard`).
    fn try_from(r: &IssueKeyRequest) -> Result<Self, FieldError> {
        let scope = match KeyScope::try_from(r.scope) {
            Ok(KeyScope::Unspecified) => None,
            Ok(scope) => ModelScope::ALL
                .iter()
                .copied()
                .find(|s| KeyScope::from(*s) == scope),
            Err(_) => {
                return Err(FieldError::invalid(
                    "scope",
                    "`scope` must be \"operator\", \"admin\" or \"standard\"",
                ));
            }
        };
        Ok(Self {
            scope,
            admin: None,
            expires_at: r.expires_at.clone(),
        })
    }
}

impl From<&NumberView> for Number {
    fn from(n: &NumberView) -> Self {
        Self {
            id: n.id.to_string(),
            e164: n.e164.clone(),
            trunk_id: n.trunk_id.to_string(),
            created_at: n.created_at.clone().unwrap_or_default(),
            answering_agent_id: n.answering_agent_id.map(|id| id.to_string()),
        }
    }
}

impl TryFrom<AgentFields> for ModelAgentFields {
    type Error = FieldError;

    fn try_from(f: AgentFields) -> Result<Self, FieldError> {
        let json = |field: &str, v: Option<&prost_types::Value>| -> Result<_, FieldError> {
            v.map(|v| {
                let mut one = serde_json::Map::new();
                one.insert(field.to_owned(), from_value(v));
                parse_value::<ModelAgentFields>(serde_json::Value::Object(one))
            })
            .transpose()
        };
        let voicemail_action = match f.voicemail_action {
            None => None,
            Some(v) => {
                let mut action = serde_json::Map::new();
                action.insert("action".into(), v.action.into());
                if let Some(message) = v.message {
                    action.insert("message".into(), message.into());
                }
                let mut one = serde_json::Map::new();
                one.insert("voicemail_action".into(), serde_json::Value::Object(action));
                parse_value::<ModelAgentFields>(serde_json::Value::Object(one))?.voicemail_action
            }
        };
        let number_ids = match f.number_ids.as_slice() {
            [] => None,
            ids => Some(
                ids.iter()
                    .map(|id| uuid("number_ids", id))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Self {
            name: f.name,
            direction: f
                .direction
                .map(|d| {
                    d.parse().map_err(|_| {
                        FieldError::invalid(
                            "direction",
                            "`direction` must be \"outbound\", \"inbound\" or \"both\"",
                        )
                    })
                })
                .transpose()?,
            persona: f.persona,
            voice: f.voice,
            language: f.language,
            instructions: f.instructions,
            returns: f.returns.as_ref().map(from_struct),
            tools: match f.tools.as_slice() {
                [] => None,
                tools => Some(
                    tools
                        .iter()
                        .map(|t| ModelTool {
                            name: t.name.clone(),
                            description: t.description.clone(),
                            parameters: t
                                .parameters
                                .as_ref()
                                .map_or(serde_json::Value::Null, from_struct),
                            url: t.url.clone(),
                        })
                        .collect(),
                ),
            },
            voicemail_action,
            webhook_url: f.webhook_url,
            number_ids,
            primary_number_id: f
                .primary_number_id
                .as_deref()
                .map(|id| uuid("primary_number_id", id))
                .transpose()?,
            brain: f.brain,
            brain_headers: Some(f.brain_headers.into_iter().collect())
                .filter(|h: &std::collections::BTreeMap<String, String>| !h.is_empty()),
            ring_timeout_seconds: f.ring_timeout_seconds,
            max_duration_seconds: f.max_duration_seconds,
            amd: json("amd", f.amd.as_ref())?.and_then(|a| a.amd),
            mask_dtmf: f.mask_dtmf,
            record: json("record", f.record.as_ref())?.and_then(|a| a.record),
            barge_in: json("barge_in", f.barge_in.as_ref())?.and_then(|a| a.barge_in),
            endpointing_silence_ms: f.endpointing_silence_ms,
            silence_timeout_seconds: f.silence_timeout_seconds,
            llm: f
                .llm
                .map(|l| {
                    let mut llm = serde_json::Map::new();
                    llm.insert("provider".into(), l.provider.into());
                    llm.insert("model".into(), l.model.into());
                    if let Some(t) = l.temperature {
                        llm.insert("temperature".into(), t.into());
                    }
                    if let Some(t) = l.max_tokens {
                        llm.insert("max_tokens".into(), t.into());
                    }
                    one_field("llm", llm.into()).map(|a| a.llm)
                })
                .transpose()?
                .flatten(),
            stt: f
                .stt
                .map(|s| one_field("stt", speech_json(s)).map(|a| a.stt))
                .transpose()?
                .flatten(),
            tts: f
                .tts
                .map(|s| one_field("tts", speech_json(s)).map(|a| a.tts))
                .transpose()?
                .flatten(),
            first_message: f.first_message,
            transfer_destinations: match f.transfer_destinations.as_slice() {
                [] => None,
                destinations => {
                    let list: Vec<serde_json::Value> = destinations
                        .iter()
                        .map(|d| {
                            let mut one = serde_json::Map::new();
                            one.insert("name".into(), d.name.as_str().into());
                            one.insert("to".into(), d.to.as_str().into());
                            one.insert("description".into(), d.description.as_str().into());
                            if let Some(mode) = &d.mode {
                                one.insert("mode".into(), mode.as_str().into());
                            }
                            serde_json::Value::Object(one)
                        })
                        .collect();
                    one_field("transfer_destinations", list.into())?.transfer_destinations
                }
            },
        })
    }
}

/// The agent fields holding only `field` = `value`, read as the HTTP API reads it (the same
/// rules and messages).
fn one_field(field: &str, value: serde_json::Value) -> Result<ModelAgentFields, FieldError> {
    let mut one = serde_json::Map::new();
    one.insert(field.to_owned(), value);
    parse_value::<ModelAgentFields>(serde_json::Value::Object(one))
}

/// An `stt`/`tts` setting as JSON.
fn speech_json(s: SpeechSetting) -> serde_json::Value {
    let mut one = serde_json::Map::new();
    one.insert("provider".into(), s.provider.into());
    if let Some(model) = s.model {
        one.insert("model".into(), model.into());
    }
    one.into()
}

impl From<&AgentView> for Agent {
    fn from(a: &AgentView) -> Self {
        let s = &a.settings;
        let value = |v: serde_json::Value| to_value(&v);
        Self {
            id: a.id.to_string(),
            created_at: a.created_at.clone().unwrap_or_default(),
            fields: Some(AgentFields {
                name: Some(a.name.clone()),
                direction: s.direction.map(|d| d.as_str().to_owned()),
                persona: s.persona.clone(),
                voice: s.voice.clone(),
                language: s.language.clone(),
                instructions: s.instructions.clone(),
                returns: s.returns.as_ref().filter(|r| r.is_object()).map(to_struct),
                tools: s
                    .tools
                    .iter()
                    .flatten()
                    .map(|t| Tool {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: Some(t.parameters.clone())
                            .filter(serde_json::Value::is_object)
                            .as_ref()
                            .map(to_struct),
                        url: t.url.clone(),
                    })
                    .collect(),
                voicemail_action: s.voicemail_action.as_ref().map(|v| match v {
                    ModelVoicemail::HangUp => VoicemailAction {
                        action: "hangup".into(),
                        message: None,
                    },
                    ModelVoicemail::Continue => VoicemailAction {
                        action: "continue".into(),
                        message: None,
                    },
                    ModelVoicemail::LeaveMessage(message) => VoicemailAction {
                        action: "leave_message".into(),
                        message: Some(message.clone()),
                    },
                }),
                webhook_url: s.webhook_url.clone(),
                number_ids: a.number_ids.iter().map(Uuid::to_string).collect(),
                primary_number_id: a.primary_number_id.map(|id| id.to_string()),
                brain: s.brain.clone(),
                brain_headers: s
                    .brain_headers
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ring_timeout_seconds: s.ring_timeout_seconds,
                max_duration_seconds: s.max_duration_seconds,
                mask_dtmf: s.mask_dtmf,
                amd: s
                    .amd
                    .as_ref()
                    .and_then(|amd| serde_json::to_value(amd).ok())
                    .map(value),
                barge_in: s
                    .barge_in
                    .and_then(|b| serde_json::to_value(b).ok())
                    .map(value),
                record: s
                    .record
                    .and_then(|r| serde_json::to_value(r).ok())
                    .map(value),
                endpointing_silence_ms: s.endpointing_silence_ms,
                silence_timeout_seconds: s.silence_timeout_seconds,
                llm: s.llm.as_ref().map(|l| LlmSetting {
                    provider: l.provider.clone(),
                    model: l.model.clone(),
                    temperature: l.temperature,
                    max_tokens: l.max_tokens,
                }),
                stt: s.stt.as_ref().map(|t| SpeechSetting {
                    provider: t.provider.clone(),
                    model: Some(t.model.clone()),
                }),
                tts: s.tts.as_ref().map(|t| SpeechSetting {
                    provider: t.provider.clone(),
                    model: t.model.clone(),
                }),
                first_message: s.first_message.clone(),
                transfer_destinations: s
                    .transfer_destinations
                    .iter()
                    .flatten()
                    .map(|d| TransferDestination {
                        name: d.name.clone(),
                        to: d.to.clone(),
                        description: d.description.clone(),
                        mode: d.mode.map(|m| m.as_str().to_owned()),
                    })
                    .collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_both_ways() {
        for status in ModelCallStatus::ALL {
            assert_eq!(CallStatus::from(*status).to_model(), Some(*status));
        }
        assert_eq!(CallStatus::Unspecified.to_model(), None);
    }

    #[test]
    fn every_provider_kind_maps_both_ways() {
        for kind in ModelKind::ALL {
            let fields = ProviderFields {
                kind: ProviderKind::from(*kind) as i32,
                ..ProviderFields::default()
            };
            assert_eq!(
                ModelProviderFields::try_from(fields).unwrap().kind,
                Some(*kind)
            );
        }
        let unset = ModelProviderFields::try_from(ProviderFields::default()).unwrap();
        assert_eq!(unset.kind, None);
        let bad = ProviderFields {
            kind: 99,
            ..ProviderFields::default()
        };
        assert_eq!(
            ModelProviderFields::try_from(bad).unwrap_err().field,
            "kind"
        );
    }

    #[test]
    fn every_key_scope_maps_both_ways() {
        for scope in ModelScope::ALL {
            let request = IssueKeyRequest {
                scope: KeyScope::from(*scope) as i32,
                ..IssueKeyRequest::default()
            };
            let fields = KeyFields::try_from(&request).unwrap();
            assert_eq!(fields.requested_scope(), Ok(*scope));
        }
        let unset = KeyFields::try_from(&IssueKeyRequest::default()).unwrap();
        assert_eq!(unset.requested_scope(), Ok(ModelScope::Standard));
        let bad = IssueKeyRequest {
            scope: 99,
            ..IssueKeyRequest::default()
        };
        assert_eq!(KeyFields::try_from(&bad).unwrap_err().field, "scope");
    }

    #[test]
    fn a_bad_request_names_its_field_like_http() {
        let bad = DispatchCallRequest {
            agent_id: "nope".into(),
            to: "+15551230000".into(),
            ..DispatchCallRequest::default()
        };
        assert_eq!(DispatchCall::try_from(bad).unwrap_err().field, "agent_id");
        let fields = AgentFields {
            barge_in: Some(to_value(&serde_json::json!(0))),
            ..AgentFields::default()
        };
        let e = ModelAgentFields::try_from(fields).unwrap_err();
        assert_eq!(e.field, "barge_in");
    }
}

//! A call: the record as stored ([`Call`]) and the call object of the API and the webhooks
//! ([`CallView`]), which is the only place the call object's fields are named.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::time::rfc3339;
use crate::{
    AmdExplanation, AnsweredBy, CallStatus, Direction, EndReason, EndedBy, RecordingView, Transfer,
};

/// A call record as stored; times are Unix epoch milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Id (UUID v7).
    pub id: Uuid,
    /// The organisation it belongs to.
    pub org_id: Uuid,
    /// The agent that runs it.
    pub agent_id: Uuid,
    /// Destination, E.164.
    pub to: String,
    /// Caller ID, E.164.
    pub from_number: String,
    /// Trunk used.
    pub trunk_id: Uuid,
    /// `outbound` (dispatched) or `inbound` (answered for one of the agent's numbers).
    pub direction: Direction,
    /// Effective instructions (the call's, else the agent's).
    pub instructions: Option<String>,
    /// Context object.
    pub context: Value,
    /// Metadata object.
    pub metadata: Value,
    /// Effective webhook URL.
    pub webhook_url: Option<String>,
    /// Status.
    pub status: CallStatus,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Who ended it.
    pub ended_by: Option<EndedBy>,
    /// SIP Call-ID of the (last) attempt.
    pub sip_call_id: Option<String>,
    /// Final SIP status, when one arrived.
    pub sip_status: Option<u16>,
    /// Answering-machine detection's verdict.
    pub answered_by: Option<AnsweredBy>,
    /// Why: the rule and the timings it used.
    pub answered_by_reason: Option<AmdExplanation>,
    /// Transcript lines.
    pub transcript: Value,
    /// Structured result.
    pub result: Option<Value>,
    /// Why there is no (valid) result.
    pub result_error: Option<String>,
    /// Media statistics.
    pub media: Option<Value>,
    /// The built-in agent's figures (turns, latencies, interruptions, tool calls).
    pub agent_stats: Option<Value>,
    /// The finished recording, when the agent records.
    pub recording: Option<RecordingView>,
    /// Why the call has no (complete) recording although its agent records.
    pub recording_error: Option<String>,
    /// A one-paragraph summary of the conversation, when the agent wrote one.
    pub summary: Option<String>,
    /// Where the caller was handed to, once a transfer completed.
    pub transferred_to: Option<String>,
    /// The last transfer attempt.
    pub transfer: Option<Transfer>,
    /// The node that owns it (none for calls from before nodes were recorded).
    pub node: Option<String>,
    /// Accepted at.
    pub created_at: i64,
    /// INVITE sent at.
    pub dialed_at: Option<i64>,
    /// Ringing since.
    pub ringing_at: Option<i64>,
    /// Answered at.
    pub answered_at: Option<i64>,
    /// Ended at.
    pub ended_at: Option<i64>,
    /// Last change.
    pub updated_at: i64,
}

/// Why a call ended, as the call object shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndReasonView {
    /// The end reason's code.
    pub code: EndReason,
    /// Who ended the call.
    pub by: Option<EndedBy>,
    /// The SIP status that ended it, when one did.
    pub sip_status: Option<u16>,
    /// What the code means, for people.
    pub message: String,
}

/// One line of the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TranscriptLine {
    /// `agent`, `caller` or `tool`.
    pub role: String,
    /// What was said.
    pub text: String,
    /// RFC 3339.
    pub at: String,
    /// The agent's line was cut by the caller: `text` is what was heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<bool>,
    /// A tool line: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A tool line: the arguments it was called with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub arguments: Option<Value>,
    /// A tool line: what it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub result: Option<Value>,
}

/// The call object: `GET /v1/calls/{id}`, list pages, dispatch answers, gRPC `Call` and every
/// webhook's `data.call` serialise this one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Call)]
pub struct CallView {
    /// UUID v7.
    pub id: Uuid,
    /// The agent.
    pub agent_id: Uuid,
    /// Who was called (E.164): for an inbound call, the agent's number.
    pub to: String,
    /// Caller ID used (E.164): for an inbound call, the caller (P-Asserted-Identity, else
    /// From).
    pub from_number: String,
    /// Trunk used.
    pub trunk_id: Uuid,
    /// `outbound` (dispatched) or `inbound` (answered for one of the agent's numbers).
    pub direction: Direction,
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
    /// Where the call is in its life.
    pub status: CallStatus,
    /// Why it ended.
    pub end_reason: Option<EndReasonView>,
    /// Answering-machine detection's verdict; `unknown` for an answered call it did not judge
    /// (detection off), null for a call never answered.
    pub answered_by: Option<AnsweredBy>,
    /// Why answering-machine detection said so: the rule, the timings it used, and what a
    /// voicemail message waited for.
    #[serde(default)]
    pub answered_by_reason: Option<AmdExplanation>,
    /// SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// When it was accepted (RFC 3339).
    pub created_at: Option<String>,
    /// When the INVITE left.
    pub dialed_at: Option<String>,
    /// When it rang.
    pub ringing_at: Option<String>,
    /// When it was answered.
    pub answered_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Ringing time: from the INVITE to the answer (or the end).
    pub ring_duration_ms: Option<i64>,
    /// Talk time: from the answer to the end.
    pub talk_duration_ms: Option<i64>,
    /// The conversation.
    #[schema(value_type = Vec<TranscriptLine>)]
    pub transcript: Value,
    /// The structured result, checked against the agent's `returns`.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
    /// Why the result is missing or invalid.
    pub result_error: Option<String>,
    /// The call's recording once the file is complete (the agent's `record`): `{"id", "url",
    /// "format", "channels", "duration_ms", "bytes", "sha256"}`; fetch it from `url`.
    #[serde(default)]
    pub recording: Option<RecordingView>,
    /// Why the call has no (complete) recording although its agent records (a full disk, the
    /// store out of reach); the call itself went on.
    #[serde(default)]
    pub recording_error: Option<String>,
    /// Media statistics.
    #[schema(value_type = Object)]
    pub media_stats: Option<Value>,
    /// The built-in agent's figures: `turns`, `interruptions`, `tool_calls`, and p50/max of
    /// `voice_to_voice_ms`, `stt_ms`, `llm_first_token_ms`, `tts_first_audio_ms`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub agent_stats: Option<Value>,
    /// A one-paragraph summary of the conversation (the built-in agent).
    #[serde(default)]
    pub summary: Option<String>,
    /// Where the caller was handed to, once a transfer completed (end reason `transferred`).
    #[serde(default)]
    pub transferred_to: Option<String>,
    /// The last transfer attempt: `{"to", "mode", "status", "sip_status"?, "reason"?}`, with
    /// `status` `pending`, `accepted`, `completed` or `failed` (the call stayed with the agent;
    /// `reason` says why).
    #[serde(default)]
    pub transfer: Option<Transfer>,
    /// The node (`DIALTONE_NODE_ID`) that owns the call: where its media runs and its
    /// commands go.
    #[serde(default)]
    pub node: Option<String>,
}

impl From<&Call> for CallView {
    fn from(call: &Call) -> Self {
        // An inbound call rings from its arrival; an outbound one from its INVITE.
        let ring = match (
            call.dialed_at.or(call.ringing_at),
            call.answered_at.or(call.ended_at),
        ) {
            (Some(start), Some(end)) => Some(end - start),
            _ => None,
        };
        let talk = match (call.answered_at, call.ended_at) {
            (Some(start), Some(end)) => Some(end - start),
            _ => None,
        };
        Self {
            id: call.id,
            agent_id: call.agent_id,
            to: call.to.clone(),
            from_number: call.from_number.clone(),
            trunk_id: call.trunk_id,
            direction: call.direction,
            instructions: call.instructions.clone(),
            context: call.context.clone(),
            metadata: call.metadata.clone(),
            webhook_url: call.webhook_url.clone(),
            status: call.status,
            end_reason: call.end_reason.map(|code| EndReasonView {
                code,
                by: call.ended_by,
                sip_status: call.sip_status,
                message: code.message().to_owned(),
            }),
            // An answered call without a verdict (detection off, or not reached) was answered
            // by someone: `unknown`, never null.
            answered_by: call
                .answered_by
                .or(call.answered_at.map(|_| AnsweredBy::Unknown)),
            answered_by_reason: call.answered_by_reason.clone(),
            sip_call_id: call.sip_call_id.clone(),
            created_at: rfc3339(call.created_at),
            dialed_at: call.dialed_at.and_then(rfc3339),
            ringing_at: call.ringing_at.and_then(rfc3339),
            answered_at: call.answered_at.and_then(rfc3339),
            ended_at: call.ended_at.and_then(rfc3339),
            ring_duration_ms: ring,
            talk_duration_ms: talk,
            transcript: call.transcript.clone(),
            result: call.result.clone(),
            result_error: call.result_error.clone(),
            recording: call.recording.clone(),
            recording_error: call.recording_error.clone(),
            media_stats: call.media.clone(),
            agent_stats: call.agent_stats.clone(),
            summary: call.summary.clone(),
            transferred_to: call.transferred_to.clone(),
            transfer: call.transfer.clone(),
            node: call.node.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended_call() -> Call {
        Call {
            id: Uuid::nil(),
            org_id: Uuid::nil(),
            agent_id: Uuid::nil(),
            to: "+15551230000".into(),
            from_number: "+15551239999".into(),
            trunk_id: Uuid::nil(),
            direction: Direction::Outbound,
            instructions: None,
            context: serde_json::json!({}),
            metadata: serde_json::json!({"crm": "42"}),
            webhook_url: None,
            status: CallStatus::Completed,
            end_reason: Some(EndReason::RtpTimeout),
            ended_by: Some(EndedBy::Engine),
            sip_call_id: Some("abc".into()),
            sip_status: None,
            answered_by: Some(AnsweredBy::Human),
            answered_by_reason: Some(AmdExplanation {
                initial_silence_ms: Some(400),
                greeting_ms: Some(220),
                pause_ms: Some(700),
                phrases: Some(1),
                ..AmdExplanation::new(crate::AmdReason::AfterGreetingSilence, 1320)
            }),
            transcript: serde_json::json!([]),
            result: None,
            result_error: None,
            media: None,
            agent_stats: None,
            recording: None,
            recording_error: None,
            summary: None,
            transferred_to: None,
            transfer: None,
            node: None,
            created_at: 1_000,
            dialed_at: Some(1_010),
            ringing_at: Some(1_100),
            answered_at: Some(3_010),
            ended_at: Some(10_010),
            updated_at: 10_010,
        }
    }

    #[test]
    fn an_answered_call_without_a_verdict_was_answered_by_unknown() {
        let mut call = ended_call();
        call.answered_by = None;
        call.answered_by_reason = None;
        call.answered_at = Some(call.created_at + 1000);
        assert_eq!(CallView::from(&call).answered_by, Some(AnsweredBy::Unknown));
        call.answered_at = None;
        assert_eq!(CallView::from(&call).answered_by, None);
    }

    #[test]
    fn the_view_shows_codes_messages_times_and_durations() {
        let json = serde_json::to_value(CallView::from(&ended_call())).unwrap();
        assert_eq!(json["status"], "completed");
        assert_eq!(json["end_reason"]["code"], "rtp_timeout");
        assert_eq!(json["end_reason"]["by"], "engine");
        assert_eq!(
            json["end_reason"]["message"],
            "the far end stopped sending audio"
        );
        assert_eq!(json["answered_by"], "human");
        assert_eq!(
            json["answered_by_reason"],
            serde_json::json!({"code": "after_greeting_silence", "after_ms": 1320,
                "initial_silence_ms": 400, "greeting_ms": 220, "pause_ms": 700, "phrases": 1})
        );
        assert_eq!(json["ring_duration_ms"], 2_000);
        assert_eq!(json["talk_duration_ms"], 7_000);
        assert_eq!(json["created_at"], "1970-01-01T00:00:01Z");
        assert_eq!(json["recording"], Value::Null);
        assert_eq!(json["metadata"]["crm"], "42");
        let back: CallView = serde_json::from_value(json).unwrap();
        assert_eq!(back, CallView::from(&ended_call()));
    }
}

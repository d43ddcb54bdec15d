//! # dialtone-model — every wire field, named once
//!
//! The types the API reads and writes, shared by the storage, the engine and both faces of the
//! control plane (HTTP/JSON and gRPC), so that a field's name, a status or an end reason is
//! spelled in exactly one place:
//!
//! - [`status`]: [`CallStatus`] (forward-only, with its rank) and [`Direction`];
//! - [`end_reason`]: [`EndReason`] (the code and its message), [`EndedBy`], [`AnsweredBy`];
//! - [`amd`]: answering-machine detection's mode and the record's explanation of a verdict;
//! - [`call`]: the stored [`Call`] record and [`CallView`], the call object the API and the
//!   webhooks serialise;
//! - [`dispatch`], [`agent`], [`trunk`], [`number`], [`organization`], [`provider`]: what
//!   requests set (strict: an unknown field is an error) and what the API shows; [`page`] for
//!   lists;
//!   [`KeyScope`]: what an API key may do (`operator`, `admin`, `standard`);
//! - [`recording`]: the agent's `record` setting and the record's `recording`;
//! - [`transfer`]: the transfer request, where it may go, and the attempt on the record;
//! - [`webhook`]: the webhook body and a call's events;
//! - [`media_streams`]: the Twilio Media Streams events a websocket brain speaks;
//! - [`grammar`]: the grammars tenant strings are printed in (SIP host, user, quoted text, names);
//! - [`time`]: Unix milliseconds shown as RFC 3339;
//! - [`network`]: [`Network`], an IP network (a trunk's `inbound_cidrs`);
//! - [`parse`]: reading a body into these types with the field at fault named.
//!
//! Everything here is plain data with serde and `utoipa::ToSchema`; no I/O.

pub mod agent;
pub mod amd;
pub mod call;
pub mod dispatch;
pub mod end_reason;
pub mod grammar;
pub mod media_streams;
mod names;
pub mod network;
pub mod number;
pub mod organization;
pub mod page;
pub mod parse;
mod pem;
pub mod placeholder;
pub mod provider;
pub mod recording;
pub mod status;
pub mod time;
pub mod transfer;
pub mod trunk;
pub mod webhook;

pub use agent::{
    AgentFields, AgentView, Amd, AmdThresholds, BUILTIN_AGENT, BUILTIN_ESPEAK, BargeIn, LlmSetting,
    SttSetting, Tool, TransferDestination, TransferMode, TtsSetting, VoicemailAction,
};
pub use amd::{AmdExplanation, AmdMode, AmdReason, MessageCue};
pub use call::{Call, CallView, EndReasonView, TranscriptLine};
pub use dispatch::DispatchCall;
pub use end_reason::{AnsweredBy, EndReason, EndedBy};
pub use network::Network;
pub use number::{NumberFields, NumberView};
pub use organization::{
    IssuedKeyView, KeyFields, KeyScope, KeyView, OrganizationFields, OrganizationPatch,
    OrganizationView,
};
pub use page::Page;
pub use parse::FieldError;
pub use provider::{Provider, ProviderFields, ProviderKind, ProviderView};
pub use recording::{Record, RecordChannels, RecordFormat, RecordOptions, RecordingView};
pub use status::{AgentDirection, CallStatus, Direction};
pub use transfer::{
    BridgeLeg, Transfer, TransferCall, TransferFailure, TransferStatus, TransferTarget,
    sip_host_allowed,
};
pub use trunk::{Codec, RegistrationView, SrtpMode, TrunkFields, TrunkTransport, TrunkView};
pub use webhook::{DeliveryState, EventType, EventView, WebhookBody, WebhookData};

/// Most bytes of `instructions`.
pub const MAX_INSTRUCTIONS_BYTES: usize = 32 * 1024;
/// Most bytes of `context` or `metadata`, serialised.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;
/// Most bytes of a request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A name on the wire that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    /// What was being read (`call status`, `end reason`, ...).
    pub kind: &'static str,
    /// The name given.
    pub value: String,
}

//! # dialtone-model — every wire field, named once
//!
//! The types the API reads and writes, shared by the storage, the engine and both faces of the
//! control plane (HTTP/JSON and gRPC), so that a field's name, a status or an end reason is
//! spelled in exactly one place:
//!
//! - [`status`]: [`CallStatus`] (forward-only, with its rank) and [`Direction`];
//! - [`end_reason`]: [`EndReason`] (the code and its message), [`EndedBy`], [`AnsweredBy`];
//! - [`call`]: the stored [`Call`] record and [`CallView`], the call object the API and the
//!   webhooks serialise.
//!
//! Everything here is plain data with serde and `utoipa::ToSchema`; no I/O.

pub mod call;
pub mod end_reason;
mod names;
pub mod status;
pub mod time;

pub use call::{Call, CallView, EndReasonView, TranscriptLine};
pub use end_reason::{AnsweredBy, EndReason, EndedBy};
pub use status::{CallStatus, Direction};

/// A name on the wire that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    /// What was being read (`call status`, `end reason`, ...).
    pub kind: &'static str,
    /// The name given.
    pub value: String,
}

//! Webhook events: the body every receiver gets (signed, retried, deduplicable by `id`) and a
//! call's events as `GET /v1/calls/{id}/events` lists them with their delivery state.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::names::wire_enum;
use crate::{CallStatus, CallView};

wire_enum! {
    /// What an event announces.
    pub enum EventType ("event type") {
        /// The call was accepted.
        Queued = "call.queued",
        /// Its INVITE left.
        Dialing = "call.dialing",
        /// The callee's phone rings.
        Ringing = "call.ringing",
        /// The callee answered.
        Answered = "call.answered",
        /// The call ended, with its outcome.
        Ended = "call.ended",
    }
}

impl EventType {
    /// The event announcing a step to `status`.
    pub fn announcing(status: CallStatus) -> Self {
        match status {
            CallStatus::Queued => Self::Queued,
            CallStatus::Dialing => Self::Dialing,
            CallStatus::Ringing => Self::Ringing,
            CallStatus::InProgress => Self::Answered,
            CallStatus::Completed
            | CallStatus::Busy
            | CallStatus::NoAnswer
            | CallStatus::Failed
            | CallStatus::Canceled => Self::Ended,
        }
    }
}

wire_enum! {
    /// Where an event's delivery stands.
    pub enum DeliveryState ("delivery state") {
        /// Waiting for its (next) attempt.
        Pending = "pending",
        /// The receiver took it (2xx).
        Delivered = "delivered",
        /// Given up (410, or the retry period is over).
        Dead = "dead",
    }
}

/// The body of a webhook request, exactly as it is signed and sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookBody {
    /// The event's id: the same on every retry, for deduplication.
    pub id: Uuid,
    /// What it announces.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it was written (RFC 3339).
    pub created_at: Option<String>,
    /// The call.
    pub call_id: Uuid,
    /// Its place among the call's events (1, 2, …; delivered in this order).
    pub sequence: i64,
    /// The call as it was at that step.
    pub data: WebhookData,
}

/// What an event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookData {
    /// The call object.
    pub call: CallView,
}

/// One of a call's events with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Event)]
pub struct EventView {
    /// The event's id.
    pub id: Uuid,
    /// What it announces.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Its place among the call's events.
    pub sequence: i64,
    /// Where its delivery stands.
    pub state: DeliveryState,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
}

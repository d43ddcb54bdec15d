//! What the core reports to its driver besides bytes: call events and counters.

use rsip::Method;

use super::{CallHandle, IncomingCall};
use crate::end_reason::EndReason;

/// Which side ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// We hung up (BYE or CANCEL sent by us).
    Local,
    /// The far end hung up.
    Remote,
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEvent {
    /// A call placed to us: ring, answer or refuse it
    /// ([`Endpoint::ring`](super::Endpoint::ring), [`Endpoint::accept`](super::Endpoint::accept),
    /// [`Endpoint::refuse`](super::Endpoint::refuse)); `100 Trying` went out already.
    Incoming(Box<IncomingCall>),
    /// `100 Trying`: the trunk took the INVITE.
    Trying,
    /// A provisional response other than 100, or a 183 without SDP.
    Ringing {
        /// The status (180, 181, 182, 183).
        status: u16,
    },
    /// `183 Session Progress` (or 180) with SDP: early media.
    EarlyMedia {
        /// The status carrying the SDP.
        status: u16,
        /// The answer SDP for early media.
        sdp: Vec<u8>,
    },
    /// The call was answered (first 2xx), and ACKed.
    Answered {
        /// The SDP answer, if the 2xx carried one.
        sdp: Option<Vec<u8>>,
    },
    /// The call ended before it was answered.
    Failed {
        /// The final status, if one arrived.
        status: Option<u16>,
        /// Why, typed.
        reason: EndReason,
    },
    /// An answered call ended.
    Ended {
        /// Who hung up.
        by: Party,
        /// Why.
        reason: EndReason,
    },
    /// The far end sent a re-INVITE or UPDATE; answer with
    /// [`Endpoint::answer_offer`](super::Endpoint::answer_offer) or
    /// [`Endpoint::reject_offer`](super::Endpoint::reject_offer).
    RemoteOffer {
        /// The method carrying the offer.
        method: Method,
        /// The offer (a re-INVITE may come without one).
        sdp: Option<Vec<u8>>,
    },
    /// The far end sent an INFO (answered 200 already).
    Info {
        /// Its Content-Type.
        content_type: Option<String>,
        /// Its body.
        body: Vec<u8>,
    },
    /// The final response to an in-dialog request we sent with
    /// [`Endpoint::send_request`](super::Endpoint::send_request).
    RequestCompleted {
        /// The method we sent.
        method: Method,
        /// Its final status (408 when it timed out).
        status: u16,
        /// The body of the response (the SDP answer to a re-INVITE).
        body: Vec<u8>,
    },
    /// A NOTIFY of the `refer` subscription our REFER created
    /// ([`Endpoint::refer`](super::Endpoint::refer)), answered 200 already: how the far end's
    /// call to the transfer target goes.
    ReferNotify {
        /// The status line of its `message/sipfrag` body (100, 180, 200, 486...).
        status: u16,
        /// `Subscription-State: terminated`: no more NOTIFYs will come.
        terminated: bool,
    },
}

/// A call event with the call it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The call.
    pub call: CallHandle,
    /// What happened.
    pub kind: CallEvent,
}

/// Counters of what the core saw and did; every dropped message is counted somewhere here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages handed to [`Endpoint::handle_message`](super::Endpoint::handle_message).
    pub messages_received: u64,
    /// Messages dropped because they could not be read or answered.
    pub messages_dropped: u64,
    /// Requests refused by validation (400, 416, 420, 483, 501, 505).
    pub requests_rejected: u64,
    /// Responses matching no client transaction.
    pub stray_responses: u64,
    /// Requests or responses sent again by a timer or for a retransmission.
    pub retransmissions: u64,
    /// Extra 2xx from forks that were ACKed and released with BYE.
    pub forks_released: u64,
    /// Requests resent with credentials after a 401/407.
    pub auth_retries: u64,
    /// NOTIFYs refused: for no subscription of ours (481), or without a sipfrag status (400).
    pub notifies_refused: u64,
    /// Incoming calls refused by their owner (`403`, `404`, `486` ...).
    pub inbound_refused: u64,
    /// Requests dropped unanswered: their source had spent its budget of refusals (new
    /// INVITEs, and anything but OPTIONS outside a dialog).
    pub inbound_dropped: u64,
}

//! What the call machine asks of its driver, in the order it must happen: the I/O (dial, media,
//! brain, SIP hang-up), the status steps to write, and the measurements to take.

use std::time::Duration;

use dialtone_model::Transfer;
use dialtone_storage::{CallStatus, EndReason, EndedBy};

use super::transfer::TransferRefusal;

/// Something the driver is to do for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Bind an RTP port, offer SDP on it and dial through the admission the call got; then
    /// report [`Input::Placed`] or [`Input::NotPlaced`].
    ///
    /// [`Input::Placed`]: super::Input::Placed
    /// [`Input::NotPlaced`]: super::Input::NotPlaced
    Dial,
    /// Negotiate the far end's early answer and start the media on the call's port, listening
    /// to (measuring, not hearing) ringback and announcements; then report [`Input::Media`].
    ///
    /// [`Input::Media`]: super::Input::Media
    StartEarlyMedia {
        /// The far end's SDP from the provisional response.
        sdp: Vec<u8>,
    },
    /// Connect the media to the answer: move the early media over (same codec) or start it;
    /// then report [`Input::Media`].
    ///
    /// [`Input::Media`]: super::Input::Media
    ConnectMedia {
        /// The answer's SDP; without one, the early media's answer stands.
        sdp: Option<Vec<u8>>,
    },
    /// Answer a call placed to us with the SDP answer made when it was routed (`200 OK`).
    Accept,
    /// Start the agent's brain on the connected media.
    StartBrain,
    /// Answer the far end's re-offer from the current media state, or refuse it (488).
    AnswerRemoteOffer {
        /// The offer (a re-INVITE may come without one: offer ours).
        sdp: Option<Vec<u8>>,
    },
    /// Send these digits on the media (RFC 4733).
    SendDtmf(String),
    /// Hand the brain a digit the far end pressed.
    TellBrainDtmf(char),
    /// Hang up through the user agent: CANCEL before the answer, BYE after.
    HangUp,
    /// Tell the brain how the call ended and give it a moment to finish (its result and
    /// transcript land before the final step).
    TellBrainEnded(End),
    /// Stop the call's media, if it has any; its statistics go on the final step.
    StopMedia,
    /// Answer who asked for a transfer: it started (the REFER goes next), or why not.
    AnswerTransfer {
        /// The destination asked for.
        to: String,
        /// Who asked: `api` (its request waits for this) or `agent` (the brain).
        by: EndedBy,
        /// Started, or why not.
        result: Result<(), TransferRefusal>,
    },
    /// Send a REFER to `to` (`+E164` as the trunk's URI, or a SIP URI); then report
    /// [`Input::ReferNotSent`] if it could not leave.
    ///
    /// [`Input::ReferNotSent`]: super::Input::ReferNotSent
    Refer {
        /// The destination.
        to: String,
    },
    /// Place a bridged transfer's second leg to `to` through the call's trunk (From: the
    /// call's from number), offering SDP on a port of its own; then report
    /// [`LegInput::Placed`] or [`LegInput::NotPlaced`].
    ///
    /// [`LegInput::Placed`]: super::input::LegInput::Placed
    /// [`LegInput::NotPlaced`]: super::input::LegInput::NotPlaced
    DialLeg {
        /// The destination (E.164).
        to: String,
    },
    /// The caller waits for the destination: the call's wire gets ringback instead of the
    /// brain's audio.
    HoldCaller,
    /// The caller is the brain's again: its audio goes back on the wire.
    ReturnCaller,
    /// Start the second leg's media on its answer; then report [`LegInput::Media`].
    ///
    /// [`LegInput::Media`]: super::input::LegInput::Media
    ConnectLeg {
        /// The answer's SDP.
        sdp: Option<Vec<u8>>,
    },
    /// Relay the two legs' audio both ways; how it went comes back as
    /// [`LegInput::Relayed`](super::input::LegInput::Relayed).
    RelayLegs,
    /// Send this digit on the second leg (RFC 4733).
    SendLegDtmf(char),
    /// Answer the destination's re-offer on the second leg as the caller's is
    /// ([`Action::AnswerRemoteOffer`]).
    AnswerLegOffer {
        /// The offer (a re-INVITE may come without one: offer ours).
        sdp: Option<Vec<u8>>,
    },
    /// Hang up the second leg (CANCEL before its answer, BYE after) and stop its media, if
    /// there is one.
    HangUpLeg,
    /// Write the transfer attempt on the record (before any step that follows), with where
    /// the caller went once it completed.
    RecordTransfer {
        /// The attempt.
        transfer: Transfer,
        /// The destination, when it completed.
        transferred_to: Option<String>,
    },
    /// Tell the brain the transfer failed: the caller is still its.
    TellBrainTransferFailed(Transfer),
    /// Write this status step (the driver writes steps in order, each before it is
    /// announced); a final step carries the stopped media's statistics.
    Record(Step),
    /// Take a measurement.
    Measure(Measure),
}

/// The outcome `dialtone_transfers_total` counts for a transfer record written with
/// `transferred_to`: its failure reason, or `completed` on the record that says where the caller
/// went — once per attempt (a bridge's later record with its duration counts nothing).
pub(crate) fn transfer_outcome(
    transfer: &Transfer,
    transferred_to: Option<&str>,
) -> Option<&'static str> {
    match (transfer.reason, transferred_to) {
        (Some(reason), _) => Some(reason.as_str()),
        (None, Some(_)) => Some("completed"),
        (None, None) => None,
    }
}

/// Why a call ended, and who ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    /// The end reason.
    pub(crate) reason: EndReason,
    /// Who ended it.
    pub(crate) by: EndedBy,
}

impl End {
    /// `reason`, by `by`.
    pub(crate) fn new(reason: EndReason, by: EndedBy) -> Self {
        Self { reason, by }
    }
}

/// A status step and what came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// The new status.
    pub(crate) status: CallStatus,
    /// The SIP Call-ID (at `dialing`).
    pub(crate) sip_call_id: Option<String>,
    /// The final SIP status (when the call failed with one).
    pub(crate) sip_status: Option<u16>,
    /// How it ended (on a final step).
    pub(crate) end: Option<End>,
}

impl Step {
    /// A step to `status` with nothing else.
    pub(crate) fn to(status: CallStatus) -> Self {
        Self {
            status,
            sip_call_id: None,
            sip_status: None,
            end: None,
        }
    }

    /// The final step to `status`, ended as `end`.
    pub(crate) fn ended(status: CallStatus, end: End) -> Self {
        Self {
            end: Some(end),
            ..Self::to(status)
        }
    }

    /// This step with the final SIP status.
    pub(crate) fn with_sip_status(self, sip_status: Option<u16>) -> Self {
        Self { sip_status, ..self }
    }
}

/// A measurement of the call, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// From dispatch to an INVITE on the wire.
    DispatchToInvite(Duration),
    /// From dispatch to the conversation's start (answered, media connected).
    Setup(Duration),
    /// The call ended with this status and end reason.
    Ended {
        /// The final status.
        status: CallStatus,
        /// The end reason.
        reason: EndReason,
    },
    /// The health of the answered call's stopped media (jitter buffer, concealment, rings).
    MediaHealth,
}

//! What the call machine is told: everything that can happen to a call, from the queue, the
//! SIP user agent, the media, the brain, the API and the daemon, in the machine's own terms.
//! The driver turns the UA's and the media's events into these ([`Input::from_ua`],
//! [`Input::from_media`]) and reports the outcome of the I/O the machine asked for
//! ([`Input::Placed`], [`Input::NotPlaced`], [`Input::Media`]).

use std::time::Duration;

use dialtone_media::MediaEvent;
use dialtone_sip_ua::{CallEvent, EndReason as SipEndReason, Method, Party, UaEvent};

use dialtone_model::TransferMode;
use tokio::sync::oneshot;

use super::transfer::TransferRefusal;
use crate::brains::BrainRequest;

/// Who asks a live call to hang up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HangUp {
    /// `POST /v1/calls/{id}/hangup` or `HangupCall`.
    Api,
    /// The daemon is shutting down and the drain time is over.
    Shutdown,
}

/// What the API or the daemon asks of a live call, through its task's channel.
#[derive(Debug)]
pub(crate) enum Control {
    /// Hang up.
    HangUp(HangUp),
    /// Transfer the caller (`POST /v1/calls/{id}/transfer`, `TransferCall`); whether it
    /// started goes back on `reply`.
    Transfer {
        /// The destination.
        to: String,
        /// How (default: the agent's destination's mode, else `refer`).
        mode: Option<TransferMode>,
        /// Started, or why not.
        reply: oneshot::Sender<Result<(), TransferRefusal>>,
    },
}

/// Why the driver could not place an admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlaceFailure {
    /// No RTP port was free.
    NoPort,
    /// The user agent refused the dial request.
    Refused,
}

/// How starting or connecting the call's media went ([`Action::StartEarlyMedia`],
/// [`Action::ConnectMedia`]).
///
/// [`Action::StartEarlyMedia`]: super::Action::StartEarlyMedia
/// [`Action::ConnectMedia`]: super::Action::ConnectMedia
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaOutcome {
    /// The media runs.
    Started,
    /// The far end's SDP could not be used: it does not parse, has no codec in common with
    /// our offer, or (at answer) changes the early media's codec or SRTP keys.
    Unusable,
    /// The trunk requires SRTP and the far end's SDP has no usable key (or it brought keys we
    /// cannot use): no media started, nothing was sent in clear.
    NoKey,
    /// The media pipeline could not start (or the call's port is gone).
    Unavailable,
}

/// Something that happened to a bridged transfer's second leg (the engine's call to the
/// destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LegInput {
    /// The user agent took it; its INVITE is on its way.
    Placed,
    /// It could not be placed.
    NotPlaced,
    /// Its INVITE left with this SIP Call-ID.
    Attempt {
        /// The leg's SIP Call-ID.
        sip_call_id: String,
    },
    /// The destination answered.
    Answered {
        /// The SDP answer, when the 2xx carried one.
        sdp: Option<Vec<u8>>,
    },
    /// It ended before it was answered.
    Failed {
        /// The final SIP status, if one arrived.
        sip_status: Option<u16>,
        /// The SIP stack's reason.
        reason: SipEndReason,
    },
    /// The answered leg ended.
    Ended,
    /// The destination sent a re-INVITE or UPDATE (hold, resume, a session refresh).
    RemoteOffer {
        /// The offer (a re-INVITE may come without one).
        sdp: Option<Vec<u8>>,
    },
    /// How its media started ([`Action::ConnectLeg`]).
    ///
    /// [`Action::ConnectLeg`]: super::Action::ConnectLeg
    Media(MediaOutcome),
    /// Whether the legs' relay was set ([`Action::RelayLegs`]): `false` when the leg's media
    /// rings are gone.
    ///
    /// [`Action::RelayLegs`]: super::Action::RelayLegs
    Relayed(bool),
    /// The destination pressed a key (RFC 4733).
    Dtmf(char),
    /// No RTP from the destination for the engine's RTP timeout: it vanished without a BYE.
    RtpTimeout {
        /// How long it has been quiet.
        silent_for: Duration,
    },
}

impl LegInput {
    /// The machine's input for an event of the second leg's user agent; `None` for those the
    /// bridge does not act on (provisional responses: the caller hears our ringback).
    pub(crate) fn from_ua(event: UaEvent) -> Option<Self> {
        let input = match event {
            UaEvent::Attempt { sip_call_id, .. } => Self::Attempt { sip_call_id },
            UaEvent::Call(CallEvent::Answered { sdp }) => Self::Answered { sdp },
            UaEvent::Call(CallEvent::Failed { status, reason }) => Self::Failed {
                sip_status: status,
                reason,
            },
            UaEvent::Call(CallEvent::Ended { .. }) => Self::Ended,
            UaEvent::Call(CallEvent::RemoteOffer { sdp, .. }) => Self::RemoteOffer { sdp },
            _ => return None,
        };
        Some(input)
    }

    /// The machine's input for an event of the second leg's media: its digits and its RTP
    /// timeout. An RTCP BYE is no end, as on the caller's leg: a source sends one when it
    /// changes its SSRC (RFC 3550 §8.2); the RTP timeout or the SIP BYE ends the leg.
    pub(crate) fn from_media(event: MediaEvent) -> Option<Self> {
        match event {
            MediaEvent::RtpTimeout { silent_for } => Some(Self::RtpTimeout { silent_for }),
            MediaEvent::Dtmf {
                event: dialtone_rtp::DtmfEvent::Ended { digit, .. },
                ..
            } => Some(Self::Dtmf(digit)),
            MediaEvent::Dtmf { .. } | MediaEvent::FarEndBye => None,
        }
    }
}

/// Something that happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// The call got its slot under the organisation's concurrency cap and room under the
    /// trunk's caps.
    Admitted,
    /// The trunk's caps had no room for the call in time.
    NotAdmitted,
    /// The user agent took the call; its INVITE is on its way.
    Placed,
    /// The call could not be placed.
    NotPlaced(PlaceFailure),
    /// An INVITE left with this SIP Call-ID (once per failover attempt).
    Attempt {
        /// The attempt's SIP Call-ID.
        sip_call_id: String,
    },
    /// A provisional response without SDP: the callee's phone rings.
    Ringing,
    /// A provisional response with SDP: early media (ringback, announcements).
    EarlyMedia {
        /// The far end's SDP answer for the early media.
        sdp: Vec<u8>,
    },
    /// The callee answered (a 2xx, ACKed).
    Answered {
        /// The SDP answer, when the 2xx carried one (without, the early media's stands).
        sdp: Option<Vec<u8>>,
    },
    /// The far end sent a re-INVITE or UPDATE (hold, resume, a new address, a refresh).
    RemoteOffer {
        /// The offer (a re-INVITE may come without one).
        sdp: Option<Vec<u8>>,
    },
    /// The call ended before it was answered.
    Failed {
        /// The final SIP status, if one arrived.
        sip_status: Option<u16>,
        /// The SIP stack's reason.
        reason: SipEndReason,
    },
    /// The answered call ended.
    Ended {
        /// Which side hung up.
        by: Party,
        /// The SIP stack's reason.
        reason: SipEndReason,
    },
    /// How the media the machine asked for started.
    Media(MediaOutcome),
    /// No RTP from the far end for the engine's RTP timeout.
    RtpTimeout {
        /// How long it has been quiet.
        silent_for: Duration,
    },
    /// An RFC 4733 digit ended.
    Dtmf(char),
    /// The far end sent an RTCP BYE.
    FarEndBye,
    /// The brain asks something of the call.
    Brain(BrainRequest),
    /// The API or the daemon asks the call to hang up.
    HangUp(HangUp),
    /// The API asks to transfer the caller.
    Transfer {
        /// The destination, `+E164` or a SIP URI.
        to: String,
        /// How (default: the agent's destination's mode, else `refer`).
        mode: Option<TransferMode>,
    },
    /// The final response to our REFER (408 when none came).
    ReferAnswered {
        /// Its status.
        status: u16,
    },
    /// The user agent could not send the REFER (the call is ending).
    ReferNotSent,
    /// Something happened to a bridged transfer's second leg.
    Leg(LegInput),
    /// A NOTIFY of the transfer: the far end's call to the destination.
    ReferNotify {
        /// Its sipfrag status (100, 180, 200, 486...).
        status: u16,
        /// The subscription ended with it.
        terminated: bool,
    },
}

impl Input {
    /// The machine's input for an event of the SIP user agent; `None` for those that concern
    /// the SIP stack alone (`100 Trying`, INFO, in-dialog request outcomes but the REFER's).
    pub(crate) fn from_ua(event: UaEvent) -> Option<Self> {
        let input = match event {
            UaEvent::Attempt { sip_call_id, .. } => Self::Attempt { sip_call_id },
            UaEvent::Call(CallEvent::Ringing { .. }) => Self::Ringing,
            UaEvent::Call(CallEvent::EarlyMedia { sdp, .. }) => Self::EarlyMedia { sdp },
            UaEvent::Call(CallEvent::Answered { sdp }) => Self::Answered { sdp },
            UaEvent::Call(CallEvent::RemoteOffer { sdp, .. }) => Self::RemoteOffer { sdp },
            UaEvent::Call(CallEvent::Failed { status, reason }) => Self::Failed {
                sip_status: status,
                reason,
            },
            UaEvent::Call(CallEvent::Ended { by, reason }) => Self::Ended { by, reason },
            UaEvent::Call(CallEvent::RequestCompleted {
                method: Method::Refer,
                status,
                ..
            }) => Self::ReferAnswered { status },
            UaEvent::Call(CallEvent::ReferNotify { status, terminated }) => {
                Self::ReferNotify { status, terminated }
            }
            // 100 Trying, INFO, in-dialog request outcomes (and what the SIP stack may add).
            _ => return None,
        };
        Some(input)
    }

    /// The machine's input for an event of the call's media; `None` for a digit going down
    /// (a digit counts once it ends).
    pub(crate) fn from_media(event: MediaEvent) -> Option<Self> {
        match event {
            MediaEvent::RtpTimeout { silent_for } => Some(Self::RtpTimeout { silent_for }),
            MediaEvent::Dtmf {
                event: dialtone_rtp::DtmfEvent::Ended { digit, .. },
                ..
            } => Some(Self::Dtmf(digit)),
            MediaEvent::Dtmf { .. } => None,
            MediaEvent::FarEndBye => Some(Self::FarEndBye),
        }
    }
}

//! A bridged transfer's state, without I/O: the engine's own second leg to the destination,
//! which the call machine holds and feeds.
//!
//! ```text
//!  dial ─▶ Dialing ──(the leg's 2xx)──▶ Connecting ──(its media runs)──▶ Relaying
//!                                                                          │ (the relay is set)
//!                                                                          ▼
//!                                                                       Bridged ──▶ Over
//!           │  the caller hears ringback       │                            either side
//!           ├─▶ busy, rejected, unreachable: failed (destination_failed)    hangs up (or the
//!           ├─▶ not placed: failed (unavailable)                            destination's RTP
//!           ├─▶ no answer by the ring timeout: failed (timeout), the leg    times out): the
//!           │   canceled                       │                            other is hung up
//!           └─▶ the call ended: failed (call_ended), the leg canceled
//!                                              └─▶ its media unusable, or the relay not set:
//!                                                  failed (destination_failed), the leg hung up
//! ```
//!
//! A failed attempt gives the caller back to the brain, which is told why. While one is under
//! way (or bridged), the brain is muted: the caller hears ringback, then the destination.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dialtone_model::time::rfc3339;
use dialtone_model::{BridgeLeg, Direction, Transfer, TransferFailure, TransferStatus};
use dialtone_sip_ua::EndReason as SipEndReason;

use super::input::MediaOutcome;
use super::transfer::{Order, Progress};

/// How long the destination may ring before the attempt fails and the caller goes back to
/// the agent (the machine owns this clock; the user agent's own ring timeout is set later).
pub(crate) const BRIDGE_RING_TIMEOUT: Duration = Duration::from_secs(30);

/// The caller ID of a second leg, for a call in `direction` from `from` to `to`: always our
/// own number. A call we placed is from ours (`from`); a call placed to us is to ours (`to`) —
/// its caller's number may be anonymous or not E.164 (the leg would fail), and is a third
/// party's, unverified, that we must not send out as our caller ID.
pub(crate) fn leg_caller_id<'a>(direction: Direction, from: &'a str, to: &'a str) -> &'a str {
    match direction {
        Direction::Outbound => from,
        Direction::Inbound => to,
    }
}

/// Where the second leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its INVITE is out; it must answer by then.
    Dialing { until: Instant },
    /// It answered; its media is starting.
    Connecting,
    /// Its media runs; the relay between the legs is being set.
    Relaying,
    /// The two legs are relayed since then.
    Bridged { since: Instant },
    /// Either leg hung up after the bridge.
    Over,
}

/// One bridged transfer attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bridge {
    order: Order,
    phase: Phase,
    leg: BridgeLeg,
    /// The wall clock at the machine's reference instant, to date the answer.
    wallclock: (Instant, SystemTime),
}

impl Bridge {
    /// An attempt whose second leg is dialled at `now`, and its record; `wallclock` pairs an
    /// instant with the wall clock's reading then (for `answered_at`).
    pub(crate) fn start(
        now: Instant,
        order: Order,
        wallclock: (Instant, SystemTime),
    ) -> (Self, Transfer) {
        let bridge = Self {
            order,
            phase: Phase::Dialing {
                until: now + BRIDGE_RING_TIMEOUT,
            },
            leg: BridgeLeg::default(),
            wallclock,
        };
        let record = bridge.record(TransferStatus::Pending, None, None);
        (bridge, record)
    }

    /// The order it carries out.
    pub(crate) fn order(&self) -> &Order {
        &self.order
    }

    /// Whether the legs are relayed now.
    pub(crate) fn bridged(&self) -> bool {
        matches!(self.phase, Phase::Bridged { .. })
    }

    /// Whether the destination answered (the call ends as `transferred`).
    pub(crate) fn answered(&self) -> bool {
        matches!(self.phase, Phase::Bridged { .. } | Phase::Over)
    }

    /// When the ring timeout is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Dialing { until } => Some(until),
            _ => None,
        }
    }

    fn record(
        &self,
        status: TransferStatus,
        sip_status: Option<u16>,
        reason: Option<TransferFailure>,
    ) -> Transfer {
        Transfer {
            to: self.order.to.clone(),
            mode: self.order.mode,
            status,
            sip_status,
            reason,
            bridge: (self.leg != BridgeLeg::default()).then(|| self.leg.clone()),
        }
    }

    fn fail(&mut self, sip_status: Option<u16>, reason: TransferFailure) -> Progress {
        self.phase = Phase::Over;
        Progress::Failed(self.record(TransferStatus::Failed, sip_status, Some(reason)))
    }

    /// The user agent could not place the leg.
    pub(crate) fn on_not_placed(&mut self) -> Progress {
        self.fail(None, TransferFailure::Unavailable)
    }

    /// The leg's INVITE left with this SIP Call-ID.
    pub(crate) fn on_attempt(&mut self, sip_call_id: String) -> Progress {
        self.leg.sip_call_id = Some(sip_call_id);
        Progress::Moved(self.record(TransferStatus::Pending, None, None))
    }

    /// The leg answered: its media is to start (`true`), unless it came too late.
    pub(crate) fn on_answered(&mut self) -> bool {
        if matches!(self.phase, Phase::Dialing { .. }) {
            self.phase = Phase::Connecting;
            return true;
        }
        false
    }

    /// How the leg's media started: the legs are to be relayed, or the attempt failed.
    pub(crate) fn on_media(&mut self, outcome: MediaOutcome) -> Progress {
        if self.phase != Phase::Connecting {
            return Progress::Nothing;
        }
        if outcome != MediaOutcome::Started {
            return self.fail(None, TransferFailure::DestinationFailed);
        }
        self.phase = Phase::Relaying;
        Progress::Nothing
    }

    /// Whether the legs are to be relayed now (the leg's media runs).
    pub(crate) fn relaying(&self) -> bool {
        self.phase == Phase::Relaying
    }

    /// Whether the relay was set at `now`: the legs are bridged, or the attempt failed (the
    /// destination answered, but cannot be heard).
    pub(crate) fn on_relayed(&mut self, now: Instant, relayed: bool) -> Progress {
        if self.phase != Phase::Relaying {
            return Progress::Nothing;
        }
        if !relayed {
            return self.fail(None, TransferFailure::DestinationFailed);
        }
        self.phase = Phase::Bridged { since: now };
        let (at, wall) = self.wallclock;
        let answered = match now.checked_duration_since(at) {
            Some(after) => wall + after,
            None => wall - at.duration_since(now),
        };
        self.leg.answered_at = answered
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| rfc3339(d.as_millis() as i64));
        Progress::Completed(self.record(TransferStatus::Completed, Some(200), None))
    }

    /// The leg ended before it was answered.
    pub(crate) fn on_failed(&mut self, sip_status: Option<u16>, reason: SipEndReason) -> Progress {
        if !matches!(
            self.phase,
            Phase::Dialing { .. } | Phase::Connecting | Phase::Relaying
        ) {
            return Progress::Nothing;
        }
        let failure = match reason {
            SipEndReason::NoAnswer => TransferFailure::Timeout,
            _ => TransferFailure::DestinationFailed,
        };
        self.fail(sip_status, failure)
    }

    /// The leg ended: answered, the bridge is over (the destination hung up, or we did, or
    /// the call did while bridged), its duration recorded; before it was bridged (its user
    /// agent gave up without a final response), the attempt failed.
    pub(crate) fn on_leg_ended(&mut self, now: Instant) -> Progress {
        match self.phase {
            Phase::Bridged { since } => {
                self.phase = Phase::Over;
                self.leg.duration_ms =
                    Some(now.saturating_duration_since(since).as_millis() as u64);
                Progress::Moved(self.record(TransferStatus::Completed, Some(200), None))
            }
            Phase::Dialing { .. } | Phase::Connecting | Phase::Relaying => {
                self.fail(None, TransferFailure::DestinationFailed)
            }
            Phase::Over => Progress::Nothing,
        }
    }

    /// The clock at `now`: past the ring timeout the attempt fails (the leg is to be
    /// canceled).
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Progress {
        match self.deadline() {
            Some(until) if now >= until => self.fail(None, TransferFailure::Timeout),
            _ => Progress::Nothing,
        }
    }

    /// We hang the call up: an attempt not yet bridged fails (its leg is to be canceled at
    /// once, not bridged to a call that is going); a bridge ends with the call.
    pub(crate) fn on_hanging_up(&mut self) -> Progress {
        match self.phase {
            Phase::Dialing { .. } | Phase::Connecting | Phase::Relaying => {
                self.fail(None, TransferFailure::CallEnded)
            }
            Phase::Bridged { .. } | Phase::Over => Progress::Nothing,
        }
    }

    /// The call ended at `now`: a bridge records its duration, an attempt under way fails.
    pub(crate) fn on_call_ended(&mut self, now: Instant) -> Progress {
        match self.phase {
            Phase::Bridged { .. } => self.on_leg_ended(now),
            Phase::Dialing { .. } | Phase::Connecting | Phase::Relaying => {
                self.fail(None, TransferFailure::CallEnded)
            }
            Phase::Over => Progress::Nothing,
        }
    }
}

//! The call machine: one outbound call's decisions, without I/O. It is told what happened with
//! [`CallMachine::handle`] and [`CallMachine::handle_timeout`], each with the time it happened,
//! and answers with [`Action`]s ([`CallMachine::poll_action`]) and its next deadline
//! ([`CallMachine::poll_timeout`]). It never reads a clock.
//!
//! What it decides:
//!
//! * the status steps, forward only (`queued` → `dialing` → `ringing` → `in_progress` → a final
//!   one), each recorded once — a late `180` after the answer records nothing;
//! * the end: status, end reason and who ended it, from the SIP outcome and why we hung up
//!   (the API's hang-up wins; then the last local cause: the engine's or the brain's);
//! * the order of the end: the brain hears it, the media stops, then the final step (with the
//!   media's statistics) is written;
//! * the clocks it owns: the queue timeout (from dispatch) and the agent's maximum duration
//!   (from the answer), and a transfer's timeout (from the REFER's acceptance);
//! * transfers of the answered call (`transfer.rs` holds a REFER attempt's state, `bridge.rs`
//!   a bridged one's): refused unless the call is in progress with none under way; a completed
//!   REFER ends our leg (`transferred`, by whoever asked); a bridge mutes the brain, plays
//!   ringback, dials the destination and relays the legs once it answers, and when either leg
//!   hangs up the other is hung up too (`transferred`); a failed one leaves the call with the
//!   brain, which is told.
//!
//! The ring timeout belongs to the user agent (`DialRequest::ring_timeout`), the RTP timeout
//! to the media; both come in as inputs.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use dialtone_model::{TransferFailure, TransferMode};
use dialtone_sip_ua::{EndReason as SipEndReason, Party};
use dialtone_storage::{CallStatus, EndReason, EndedBy};

use super::action::{Action, End, Measure, Step};
use super::bridge::Bridge;
use super::input::{HangUp, Input, LegInput, MediaOutcome, PlaceFailure};
use super::transfer::{Attempt, Order, Progress, TransferPolicy, TransferRefusal};
use crate::brains::BrainRequest;

/// The settings the machine works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallSettings {
    /// When the call was accepted.
    pub(crate) dispatched: Instant,
    /// How long it may wait in `queued` from then.
    pub(crate) queue_timeout: Duration,
    /// The agent's maximum duration, from the answer.
    pub(crate) max_duration: Duration,
    /// Digits are masked in the logs.
    pub(crate) mask_dtmf: bool,
    /// The trunk requires SRTP: a 488 or 606 to our `RTP/SAVP` offer ends the call as
    /// `srtp_unavailable`.
    pub(crate) srtp_required: bool,
    /// The wall clock at `dispatched` (a bridge's answer is dated from it).
    pub(crate) wallclock: SystemTime,
}

/// Where the call is, as far as the machine's own work goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for admission until the queue timeout.
    Queued {
        /// The queue timeout's deadline.
        until: Instant,
    },
    /// Admitted; the driver dials.
    Placing,
    /// The user agent has the call.
    Placed,
    /// The final step is out; nothing more happens.
    Over,
}

/// The call's media, as the machine knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    /// None yet; the port is free.
    None,
    /// Early media runs (ringback, announcements).
    Early,
    /// The conversation's media runs: the call is answered.
    Connected,
    /// It could not start; the port is gone.
    Lost,
}

/// Which media the driver was asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaRequest {
    /// [`Action::StartEarlyMedia`].
    Early,
    /// [`Action::ConnectMedia`].
    Answer,
}

/// One call's decisions; see the module's documentation.
#[derive(Debug)]
pub(crate) struct CallMachine {
    settings: CallSettings,
    stage: Stage,
    /// The last status recorded.
    recorded: CallStatus,
    media: Media,
    /// The media start the driver is to report on.
    media_request: Option<MediaRequest>,
    brain_started: bool,
    /// The API asked for the hang-up.
    hung_up_by_api: bool,
    /// Why and by whom (`agent` or `engine`) we hang up, when it is not the API.
    local_end: Option<End>,
    /// The maximum duration's deadline, armed at the answer.
    max_duration_at: Option<Instant>,
    /// Where transfers may go.
    transfer_policy: TransferPolicy,
    /// The transfer under way, or the one that completed.
    transfer: Option<Attempt>,
    /// The last attempt, when it failed by the transfer timeout: its subscription may still
    /// bring the final NOTIFY, and a 2xx one completes it after all (the caller went over).
    lapsed_transfer: Option<Attempt>,
    /// The bridged transfer under way, bridged, or over (the call then ends `transferred`).
    bridge: Option<Bridge>,
    actions: VecDeque<Action>,
    /// A call placed to us: the far end is the caller.
    inbound: bool,
}

impl CallMachine {
    /// A call just written as `queued`, waiting for admission.
    pub(crate) fn new(settings: CallSettings) -> Self {
        Self {
            stage: Stage::Queued {
                until: settings.dispatched + settings.queue_timeout,
            },
            settings,
            recorded: CallStatus::Queued,
            media: Media::None,
            media_request: None,
            brain_started: false,
            hung_up_by_api: false,
            local_end: None,
            max_duration_at: None,
            transfer_policy: TransferPolicy::default(),
            transfer: None,
            lapsed_transfer: None,
            bridge: None,
            actions: VecDeque::new(),
            inbound: false,
        }
    }

    /// A call placed to us, just written as `queued` with its media ready: it is recorded
    /// `ringing` with its SIP Call-ID and answered ([`Action::Accept`]); the caller's ACK
    /// comes in as [`Input::Answered`].
    pub(crate) fn answering(settings: CallSettings, sip_call_id: String) -> Self {
        let mut machine = Self {
            stage: Stage::Placed,
            inbound: true,
            ..Self::new(settings)
        };
        tracing::Span::current().record("sip_call_id", sip_call_id.as_str());
        machine.record(Step {
            sip_call_id: Some(sip_call_id),
            ..Step::to(CallStatus::Ringing)
        });
        machine.actions.push_back(Action::Accept);
        machine
    }

    /// Whether the call waits for admission (a dispatched call does; one placed to us was
    /// admitted before it was answered).
    pub(crate) fn waits_for_admission(&self) -> bool {
        matches!(self.stage, Stage::Queued { .. })
    }

    /// Who the far end is.
    fn far_end(&self) -> EndedBy {
        if self.inbound {
            EndedBy::Caller
        } else {
            EndedBy::Callee
        }
    }

    /// This machine, transferring only where `policy` allows (without one: numbers, and SIP
    /// URIs on no host).
    pub(crate) fn with_transfer_policy(self, policy: TransferPolicy) -> Self {
        Self {
            transfer_policy: policy,
            ..self
        }
    }

    /// The next thing to do, in order.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`CallMachine::handle_timeout`] is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.stage {
            Stage::Queued { until } => Some(until),
            Stage::Placed => {
                let transfer = self.transfer.as_ref().and_then(Attempt::deadline);
                let bridge = self.bridge.as_ref().and_then(Bridge::deadline);
                self.max_duration_at
                    .into_iter()
                    .chain(transfer)
                    .chain(bridge)
                    .min()
            }
            Stage::Placing | Stage::Over => None,
        }
    }

    /// Whether the call's final step is out (the driver stops once its actions are done).
    pub(crate) fn is_over(&self) -> bool {
        self.stage == Stage::Over
    }

    /// Runs the clocks the machine owns up to `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.stage {
            Stage::Queued { until } if now >= until => {
                tracing::warn!("no room under the organisation's or the trunk's caps in time");
                self.end_unplaced(End::new(EndReason::QueueTimeout, EndedBy::Engine));
            }
            Stage::Placed if self.max_duration_at.is_some_and(|at| now >= at) => {
                self.max_duration_at = None;
                tracing::info!("the agent's maximum duration is reached; hanging up");
                self.hang_up_locally(End::new(EndReason::MaxDuration, EndedBy::Engine));
            }
            Stage::Placed => {
                if let Some(progress) = self.transfer.as_mut().map(|a| a.on_timeout(now)) {
                    self.transfer_progress(progress);
                }
                if let Some(progress) = self.bridge.as_mut().map(|b| b.on_timeout(now)) {
                    self.bridge_progress(progress);
                }
            }
            _ => {}
        }
    }

    /// Takes in what happened at `now`.
    pub(crate) fn handle(&mut self, now: Instant, input: Input) {
        if self.stage == Stage::Over {
            return;
        }
        match input {
            Input::Admitted => {
                if matches!(self.stage, Stage::Queued { .. }) {
                    self.stage = Stage::Placing;
                    self.actions.push_back(Action::Dial);
                }
            }
            Input::NotAdmitted => {
                if matches!(self.stage, Stage::Queued { .. }) {
                    tracing::warn!("no room under the trunk's caps in time");
                    self.end_unplaced(End::new(EndReason::QueueTimeout, EndedBy::Engine));
                }
            }
            Input::Placed => self.placed(),
            Input::NotPlaced(failure) => {
                if self.stage == Stage::Placing {
                    let reason = match failure {
                        PlaceFailure::NoPort => EndReason::MediaUnavailable,
                        PlaceFailure::Refused => EndReason::DialRefused,
                    };
                    self.end_unplaced(End::new(reason, EndedBy::Engine));
                }
            }
            Input::Attempt { sip_call_id } => {
                let waited = now.saturating_duration_since(self.settings.dispatched);
                self.actions
                    .push_back(Action::Measure(Measure::DispatchToInvite(waited)));
                tracing::Span::current().record("sip_call_id", sip_call_id.as_str());
                self.record(Step {
                    sip_call_id: Some(sip_call_id),
                    ..Step::to(CallStatus::Dialing)
                });
            }
            Input::Ringing => self.record(Step::to(CallStatus::Ringing)),
            Input::EarlyMedia { sdp } => {
                self.record(Step::to(CallStatus::Ringing));
                // Ringback and announcements flow through the media from here on; the
                // conversation (and the brain) starts at the answer.
                if self.media == Media::None {
                    self.media_request = Some(MediaRequest::Early);
                    self.actions.push_back(Action::StartEarlyMedia { sdp });
                }
            }
            Input::Answered { sdp } => {
                self.media_request = Some(MediaRequest::Answer);
                self.actions.push_back(Action::ConnectMedia { sdp });
            }
            Input::RemoteOffer { sdp } => {
                self.actions.push_back(Action::AnswerRemoteOffer { sdp });
            }
            Input::Failed { sip_status, reason } => self.failed(sip_status, reason),
            Input::Ended { by, reason } => self.ended(now, by, reason),
            Input::Media(outcome) => self.media_started(now, outcome),
            Input::RtpTimeout { silent_for } => {
                // Early media may stop while the phone rings; the ring timeout covers that.
                // The RTP timeout counts from the answer.
                if self.media == Media::Connected {
                    tracing::warn!(?silent_for, "no RTP from the far end; hanging up");
                    self.hang_up_locally(End::new(EndReason::RtpTimeout, EndedBy::Engine));
                }
            }
            Input::Dtmf(digit) => {
                let shown = if self.settings.mask_dtmf { '*' } else { digit };
                tracing::info!(digit = %shown, "DTMF");
                // Bridged, the caller's keys are the destination's.
                if self.bridge.as_ref().is_some_and(Bridge::bridged) {
                    self.actions.push_back(Action::SendLegDtmf(digit));
                } else {
                    self.actions.push_back(Action::TellBrainDtmf(digit));
                }
            }
            Input::FarEndBye => tracing::info!("far end sent RTCP BYE"),
            Input::Brain(BrainRequest::HangUp { reason }) => self.brain_hangs_up(reason),
            Input::Brain(BrainRequest::SendDtmf(digits)) => {
                if self.bridge.is_some() {
                    // The caller waits for the destination or is with it; the request has no
                    // answer to carry a refusal, so it is only logged.
                    tracing::warn!(
                        "a bridged transfer is under way: the brain's digits are not sent"
                    );
                } else {
                    self.actions.push_back(Action::SendDtmf(digits));
                }
            }
            Input::HangUp(HangUp::Api) => match self.stage {
                Stage::Queued { .. } => {
                    self.end_unplaced(End::new(EndReason::Canceled, EndedBy::Api));
                }
                _ => {
                    self.hung_up_by_api = true;
                    self.send_hang_up();
                }
            },
            Input::Brain(BrainRequest::Transfer { to, mode }) => {
                self.request_transfer(now, &to, mode, EndedBy::Agent);
            }
            Input::Transfer { to, mode } => {
                self.request_transfer(now, &to, mode, EndedBy::Api);
            }
            Input::Leg(leg) => self.leg_input(now, leg),
            Input::ReferAnswered { status } => {
                if let Some(progress) = self
                    .transfer
                    .as_mut()
                    .map(|a| a.on_refer_answer(now, status))
                {
                    self.transfer_progress(progress);
                }
            }
            Input::ReferNotSent => {
                if let Some(progress) = self.transfer.as_ref().map(Attempt::on_not_sent) {
                    self.transfer_progress(progress);
                }
            }
            Input::ReferNotify { status, terminated } => {
                if self.transfer.is_none() && (200..300).contains(&status) {
                    // The final NOTIFY of an attempt that timed out: the caller went over.
                    self.transfer = self.lapsed_transfer.take();
                }
                if terminated {
                    self.lapsed_transfer = None;
                }
                if let Some(progress) = self
                    .transfer
                    .as_mut()
                    .map(|a| a.on_notify(now, status, terminated))
                {
                    self.transfer_progress(progress);
                }
            }
            Input::HangUp(HangUp::Shutdown) => {
                let end = End::new(EndReason::EngineShutdown, EndedBy::Engine);
                match self.stage {
                    Stage::Queued { .. } => self.end_unplaced(end),
                    _ => self.hang_up_locally(end),
                }
            }
        }
    }

    /// The user agent took the call: a hang-up asked for while it was being placed goes out.
    fn placed(&mut self) {
        if self.stage == Stage::Placing {
            self.stage = Stage::Placed;
            if self.hung_up_by_api || self.local_end.is_some() {
                self.send_hang_up();
            }
        }
    }

    /// What the media the driver was asked to start came to.
    fn media_started(&mut self, now: Instant, outcome: MediaOutcome) {
        let Some(request) = self.media_request.take() else {
            return;
        };
        match (request, outcome) {
            (MediaRequest::Early, MediaOutcome::Started) => self.media = Media::Early,
            // Unusable early SDP is ignored; the next provisional response may do better.
            (MediaRequest::Early, MediaOutcome::Unusable | MediaOutcome::NoKey) => {}
            (MediaRequest::Early, MediaOutcome::Unavailable) => {
                self.media = Media::Lost;
                tracing::error!("early media did not start; hanging up");
                self.hang_up_locally(End::new(EndReason::MediaUnavailable, EndedBy::Engine));
            }
            (MediaRequest::Answer, MediaOutcome::Started) => {
                self.media = Media::Connected;
                self.brain_started = true;
                self.actions.push_back(Action::StartBrain);
                let setup = now.saturating_duration_since(self.settings.dispatched);
                self.actions
                    .push_back(Action::Measure(Measure::Setup(setup)));
                self.max_duration_at = Some(now + self.settings.max_duration);
                self.record(Step::to(CallStatus::InProgress));
            }
            (MediaRequest::Answer, MediaOutcome::Unusable) => {
                tracing::warn!("the answer's media is unusable; hanging up");
                self.hang_up_locally(End::new(EndReason::IncompatibleMedia, EndedBy::Engine));
            }
            (MediaRequest::Answer, MediaOutcome::NoKey) => {
                tracing::warn!("the answer carries no usable SRTP key; hanging up");
                self.hang_up_locally(End::new(EndReason::SrtpUnavailable, EndedBy::Engine));
            }
            (MediaRequest::Answer, MediaOutcome::Unavailable) => {
                self.media = Media::Lost;
                tracing::error!("media did not start; hanging up");
                self.hang_up_locally(End::new(EndReason::MediaUnavailable, EndedBy::Engine));
            }
        }
    }

    /// A transfer to `to` is asked for by `by`: it starts if the destination is one the
    /// call's [`TransferPolicy`] allows and the call is in progress, with no hang-up and no
    /// other transfer under way; whoever asked hears which.
    fn request_transfer(
        &mut self,
        now: Instant,
        to: &str,
        mode: Option<TransferMode>,
        by: EndedBy,
    ) {
        match self.transfer_policy.order(to, mode, by) {
            Ok(order) => self.start_transfer(now, order),
            Err(refusal) => self.actions.push_back(Action::AnswerTransfer {
                to: to.to_owned(),
                by,
                result: Err(refusal),
            }),
        }
    }

    /// Starts `order` if the call is in progress, with no hang-up and no other transfer
    /// under way: its pending attempt is written before the answer (which the API's request
    /// reads back), then the REFER goes (or, bridged, the caller hears ringback and the
    /// second leg is dialled).
    fn start_transfer(&mut self, now: Instant, order: Order) {
        let in_progress = self.stage == Stage::Placed
            && self.media == Media::Connected
            && !self.hung_up_by_api
            && self.local_end.is_none();
        let refusal = match (&self.transfer, &self.bridge) {
            _ if !in_progress => Some(TransferRefusal::NotInProgress),
            (Some(_), _) | (_, Some(_)) => Some(TransferRefusal::UnderWay),
            (None, None) => None,
        };
        let (to, by) = (order.to.clone(), order.by);
        if let Some(refusal) = refusal {
            self.actions.push_back(Action::AnswerTransfer {
                to,
                by,
                result: Err(refusal),
            });
            return;
        }
        tracing::info!(to = %to, mode = order.mode.as_str(), by = by.as_str(), "transferring");
        if order.mode == TransferMode::Bridge {
            let wallclock = (self.settings.dispatched, self.settings.wallclock);
            let (bridge, record) = Bridge::start(now, order, wallclock);
            self.bridge = Some(bridge);
            self.actions.push_back(Action::RecordTransfer {
                transfer: record,
                transferred_to: None,
            });
            self.actions.push_back(Action::AnswerTransfer {
                to: to.clone(),
                by,
                result: Ok(()),
            });
            self.actions.push_back(Action::HoldCaller);
            self.actions.push_back(Action::DialLeg { to });
            return;
        }
        let (attempt, record) = Attempt::start(order);
        self.transfer = Some(attempt);
        // A new REFER replaces the old subscription: no late NOTIFY of it can come.
        self.lapsed_transfer = None;
        self.actions.push_back(Action::RecordTransfer {
            transfer: record,
            transferred_to: None,
        });
        self.actions.push_back(Action::AnswerTransfer {
            to: to.clone(),
            by,
            result: Ok(()),
        });
        self.actions.push_back(Action::Refer { to });
    }

    /// What an input did to the transfer: recorded; a completed one ends our leg, a failed
    /// one is over and the brain hears it.
    fn transfer_progress(&mut self, progress: Progress) {
        match progress {
            Progress::Nothing => {}
            Progress::Moved(transfer) => self.actions.push_back(Action::RecordTransfer {
                transfer,
                transferred_to: None,
            }),
            Progress::Completed(transfer) => {
                tracing::info!(to = %transfer.to, "transfer completed; ending our leg");
                let by = self
                    .transfer
                    .as_ref()
                    .map_or(EndedBy::Agent, |a| a.order().by);
                self.actions.push_back(Action::RecordTransfer {
                    transferred_to: Some(transfer.to.clone()),
                    transfer,
                });
                self.hang_up_locally(End::new(EndReason::Transferred, by));
            }
            Progress::Failed(transfer) => {
                tracing::warn!(
                    to = %transfer.to,
                    sip_status = transfer.sip_status,
                    reason = transfer.reason.map(|r| r.as_str()),
                    "transfer failed; the call stays with the agent"
                );
                self.lapsed_transfer = self
                    .transfer
                    .take()
                    .filter(|_| transfer.reason == Some(TransferFailure::Timeout));
                self.actions.push_back(Action::RecordTransfer {
                    transfer: transfer.clone(),
                    transferred_to: None,
                });
                if self.brain_started {
                    self.actions
                        .push_back(Action::TellBrainTransferFailed(transfer));
                }
            }
        }
    }

    /// The brain asks to hang up for `reason`: done at once, canceling a bridged transfer's
    /// leg that still rings ([`CallMachine::abandon_bridge`]); ignored once the destination
    /// answered (the caller is the destination's, the muted brain hears neither), and for the
    /// silence guard while the caller waits on ringback (silence is expected there, and the
    /// guard's prompt is not heard).
    fn brain_hangs_up(&mut self, reason: EndReason) {
        let ignored = match &self.bridge {
            Some(bridge) if bridge.answered() => Some("bridged"),
            Some(_) if reason == EndReason::SilenceTimeout => Some("the caller hears ringback"),
            _ => None,
        };
        if let Some(why) = ignored {
            tracing::info!(
                reason = reason.as_str(),
                why,
                "the brain's hang-up is ignored"
            );
            return;
        }
        tracing::info!(reason = reason.as_str(), "the brain hangs up");
        self.hang_up_locally(End::new(reason, EndedBy::Agent));
    }

    /// What happened to the second leg.
    fn leg_input(&mut self, now: Instant, input: LegInput) {
        if let LegInput::RemoteOffer { sdp } = input {
            // Answered like the caller's, whatever the bridge's state: a leg refused its
            // session refresh would be torn down.
            self.actions.push_back(Action::AnswerLegOffer { sdp });
            return;
        }
        let Some(bridge) = self.bridge.as_mut() else {
            // A leg whose attempt is over (the driver hangs it up).
            if matches!(input, LegInput::Answered { .. }) {
                self.actions.push_back(Action::HangUpLeg);
            }
            return;
        };
        let progress = match input {
            LegInput::Placed | LegInput::RemoteOffer { .. } => Progress::Nothing,
            LegInput::NotPlaced => bridge.on_not_placed(),
            LegInput::Attempt { sip_call_id } => bridge.on_attempt(sip_call_id),
            LegInput::Answered { sdp } => {
                if bridge.on_answered() {
                    self.actions.push_back(Action::ConnectLeg { sdp });
                }
                Progress::Nothing
            }
            LegInput::Media(outcome) => {
                let progress = bridge.on_media(outcome);
                if bridge.relaying() {
                    self.actions.push_back(Action::RelayLegs);
                }
                progress
            }
            LegInput::Relayed(relayed) => bridge.on_relayed(now, relayed),
            LegInput::Failed { sip_status, reason } => bridge.on_failed(sip_status, reason),
            LegInput::Ended => {
                let progress = bridge.on_leg_ended(now);
                if matches!(progress, Progress::Moved(_)) {
                    // The destination hung up: the caller's leg ends too.
                    let by = bridge.order().by;
                    self.bridge_progress(progress);
                    self.hang_up_locally(End::new(EndReason::Transferred, by));
                    return;
                }
                progress
            }
            LegInput::RtpTimeout { silent_for } => {
                // The destination vanished without a BYE: the bridge is over as if it had hung
                // up (the call was transferred, by whoever asked), the leg hung up too. Its
                // media only runs once bridged: before, nothing times out.
                if !bridge.bridged() {
                    return;
                }
                tracing::warn!(
                    ?silent_for,
                    "no RTP from the destination; ending the bridge"
                );
                let by = bridge.order().by;
                let progress = bridge.on_leg_ended(now);
                self.bridge_progress(progress);
                self.actions.push_back(Action::HangUpLeg);
                self.hang_up_locally(End::new(EndReason::Transferred, by));
                return;
            }
            LegInput::Dtmf(digit) => {
                if bridge.bridged() {
                    self.actions.push_back(Action::SendDtmf(digit.to_string()));
                }
                Progress::Nothing
            }
        };
        self.bridge_progress(progress);
    }

    /// What an input did to the bridged transfer: recorded; once the destination answered
    /// the legs are relayed; a failed one gives the caller back to the brain, which is told.
    fn bridge_progress(&mut self, progress: Progress) {
        match progress {
            Progress::Nothing => {}
            Progress::Moved(transfer) => self.actions.push_back(Action::RecordTransfer {
                transfer,
                transferred_to: None,
            }),
            Progress::Completed(transfer) => {
                tracing::info!(to = %transfer.to, "the destination answered; bridged");
                self.actions.push_back(Action::RecordTransfer {
                    transferred_to: Some(transfer.to.clone()),
                    transfer,
                });
            }
            Progress::Failed(transfer) => {
                tracing::warn!(
                    to = %transfer.to,
                    sip_status = transfer.sip_status,
                    reason = transfer.reason.map(|r| r.as_str()),
                    "bridged transfer failed; the call goes back to the agent"
                );
                self.bridge = None;
                self.actions.push_back(Action::HangUpLeg);
                self.actions.push_back(Action::ReturnCaller);
                self.actions.push_back(Action::RecordTransfer {
                    transfer: transfer.clone(),
                    transferred_to: None,
                });
                if self.brain_started {
                    self.actions
                        .push_back(Action::TellBrainTransferFailed(transfer));
                }
            }
        }
    }

    /// We hang up for `end` (the engine's or the brain's reason); the last such cause is the
    /// one recorded.
    fn hang_up_locally(&mut self, end: End) {
        self.local_end = Some(end);
        self.send_hang_up();
    }

    /// CANCEL or BYE, once the user agent has the call (before, [`CallMachine::placed`]
    /// sends it); a bridged transfer's leg still ringing is canceled first.
    fn send_hang_up(&mut self) {
        if self.stage == Stage::Placed {
            self.abandon_bridge();
            self.actions.push_back(Action::HangUp);
        }
    }

    /// The call is being hung up: a bridged transfer not yet bridged fails (`call_ended`) and
    /// its leg is canceled now (a bridged one ends with the call, its duration recorded then).
    fn abandon_bridge(&mut self) {
        if let Some(Progress::Failed(transfer)) = self.bridge.as_mut().map(Bridge::on_hanging_up) {
            tracing::info!(to = %transfer.to, "hanging up while the destination rings");
            self.bridge = None;
            self.actions.push_back(Action::HangUpLeg);
            self.actions.push_back(Action::RecordTransfer {
                transfer,
                transferred_to: None,
            });
        }
    }

    /// The call ended before it was answered.
    fn failed(&mut self, sip_status: Option<u16>, reason: SipEndReason) {
        let (status, by) = match reason {
            _ if self.hung_up_by_api => (CallStatus::Canceled, EndedBy::Api),
            _ if self.local_end.is_some() => (CallStatus::Failed, EndedBy::Engine),
            // The caller hung up before we answered.
            SipEndReason::Canceled if self.inbound => (CallStatus::Canceled, EndedBy::Caller),
            SipEndReason::Busy => (CallStatus::Busy, EndedBy::Callee),
            SipEndReason::NoAnswer => (CallStatus::NoAnswer, EndedBy::Engine),
            SipEndReason::Rejected | SipEndReason::Unavailable => {
                (CallStatus::Failed, EndedBy::Callee)
            }
            _ => (CallStatus::Failed, EndedBy::Trunk),
        };
        let code = match self.local_end {
            _ if self.hung_up_by_api => EndReason::Canceled,
            Some(end) => end.reason,
            None if self.settings.srtp_required && reason == SipEndReason::IncompatibleMedia => {
                EndReason::SrtpUnavailable
            }
            None => end_reason_of(reason),
        };
        self.stage = Stage::Over;
        // Early media heard before the call failed (an announcement, say) goes on the record.
        self.actions.push_back(Action::StopMedia);
        self.actions.push_back(Action::Measure(Measure::Ended {
            status,
            reason: code,
        }));
        self.record(Step::ended(status, End::new(code, by)).with_sip_status(sip_status));
        tracing::info!(
            status = status.as_str(),
            reason = code.as_str(),
            by = by.as_str(),
            "call ended without an answer"
        );
    }

    /// The answered call ended.
    fn ended(&mut self, now: Instant, by: Party, reason: SipEndReason) {
        // The far end hanging up after accepting a REFER went to the destination.
        if by == Party::Remote
            && let Some(Progress::Completed(transfer)) =
                self.transfer.as_mut().map(Attempt::on_far_end_hung_up)
        {
            tracing::info!(to = %transfer.to, "the far end hung up after accepting the REFER");
            self.actions.push_back(Action::RecordTransfer {
                transferred_to: Some(transfer.to.clone()),
                transfer,
            });
        }
        // A completed transfer ended the call, whichever side sent the BYE.
        let referred = self
            .transfer
            .as_ref()
            .filter(|a| a.completed())
            .map(|a| End::new(EndReason::Transferred, a.order().by));
        let bridged = self
            .bridge
            .as_ref()
            .filter(|b| b.answered())
            .map(|b| End::new(EndReason::Transferred, b.order().by));
        let transferred = referred.or(bridged);
        let end = match (transferred, by, self.hung_up_by_api, self.local_end) {
            (Some(end), ..) => end,
            (None, Party::Remote, ..) => End::new(end_reason_of(reason), self.far_end()),
            (None, Party::Local, true, _) => End::new(end_reason_of(reason), EndedBy::Api),
            (None, Party::Local, false, Some(end)) => end,
            (None, Party::Local, false, None) => End::new(end_reason_of(reason), EndedBy::Agent),
        };
        // A transfer still under way never learns its outcome: recorded as such.
        if let Some(Progress::Failed(transfer)) = self.transfer.take().map(|a| a.on_call_ended()) {
            self.actions.push_back(Action::RecordTransfer {
                transfer,
                transferred_to: None,
            });
        }
        // A bridge ends with the call: its duration (or its failure) recorded, the second
        // leg hung up.
        if let Some(mut bridge) = self.bridge.take() {
            match bridge.on_call_ended(now) {
                Progress::Moved(transfer) | Progress::Failed(transfer) => {
                    self.actions.push_back(Action::RecordTransfer {
                        transfer,
                        transferred_to: None,
                    });
                    self.actions.push_back(Action::HangUpLeg);
                }
                Progress::Nothing | Progress::Completed(_) => {}
            }
        }
        self.stage = Stage::Over;
        if self.brain_started {
            // The brain hears how the call ended, and has a moment to finish.
            self.actions.push_back(Action::TellBrainEnded(end));
        }
        self.actions.push_back(Action::StopMedia);
        self.actions.push_back(Action::Measure(Measure::Ended {
            status: CallStatus::Completed,
            reason: end.reason,
        }));
        self.actions
            .push_back(Action::Measure(Measure::MediaHealth));
        self.record(Step::ended(CallStatus::Completed, end));
        tracing::info!(
            ended_by = end.by.as_str(),
            code = end.reason.as_str(),
            "call ended"
        );
    }

    /// The call ended before the user agent had it (in the queue, or not placed).
    fn end_unplaced(&mut self, end: End) {
        let status = match end.reason {
            EndReason::Canceled => CallStatus::Canceled,
            _ => CallStatus::Failed,
        };
        self.stage = Stage::Over;
        self.actions.push_back(Action::Measure(Measure::Ended {
            status,
            reason: end.reason,
        }));
        self.record(Step::ended(status, end));
        tracing::info!(
            status = status.as_str(),
            reason = end.reason.as_str(),
            by = end.by.as_str(),
            "call ended without an answer"
        );
    }

    /// Records `step` if it moves the call forward (storage would refuse it otherwise).
    fn record(&mut self, step: Step) {
        if self.recorded.may_become(step.status) {
            self.recorded = step.status;
            self.actions.push_back(Action::Record(step));
        }
    }
}

/// The call record's end reason for one the SIP stack gave: the same code, since the model's
/// reasons are a superset of the SIP stack's (a test walks them); a reason the model did not
/// know would be recorded as `request_failed`.
pub(crate) fn end_reason_of(sip: SipEndReason) -> EndReason {
    sip.as_str().parse().unwrap_or(EndReason::RequestFailed)
}

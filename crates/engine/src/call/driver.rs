//! The task that drives one call, kept thin: it waits for whatever can happen next — admission,
//! the user agent's events, the media's events, the brain's requests, a hang-up, the machine's
//! deadline — hands it to the [`CallMachine`] with the time, and performs the actions that
//! come back: the I/O (dial, media, brain, SIP) and the writes. What an outcome means is the
//! machine's to decide; the driver only reports how its I/O went.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use dialtone_media::{BoundPort, Direction, MediaCall, MediaStats};
use dialtone_sip_ua::{Admission, Call, DialRequest, Leftover, UaEvent};
use dialtone_storage::CallProgress;
use serde_json::Value;
use tokio::sync::mpsc;

use super::action::{Action, End, Measure, Step, transfer_outcome};
use super::bridge::{BRIDGE_RING_TIMEOUT, leg_caller_id};
use super::bridge_leg::{self, Leg, ends_leg, next_leg_input};
use super::input::{Control, Input, LegInput, MediaOutcome, PlaceFailure};
use super::machine::{CallMachine, CallSettings};
use super::media::{
    EarlyHeard, EarlyListener, answer_remote_offer, measure_media_health, media_config,
    media_record, next_media_event,
};
use super::progress::ProgressLog;
use super::sdp::{Refusal, SdpSession};
use super::transfer::TransferRefusal;
use crate::brains::{self, BrainContext, BrainInput, BrainRequest, Builtin};
use crate::caps::Held;
use crate::port_share::PortShare;
use crate::recording::Kept;
use crate::{CallPlan, Engine, caps};

/// How long a brain has to finish once told the call ended.
const BRAIN_GRACE: Duration = Duration::from_millis(500);

/// How long a call's end waits for its recording to be hashed and kept in the store: a hung
/// disk or store costs the recording (`recording_error`), never the call's final record.
const RECORDING_KEEP_LIMIT: Duration = Duration::from_secs(30);
/// How long `builtin:agent` has: the result extraction and the summary are written before the
/// call's final status.
const AGENT_GRACE: Duration = brains::agent::AFTER_CALL;

impl Engine {
    /// Runs one call and waits until all it did is recorded.
    pub(crate) async fn run(&self, plan: CallPlan, controls: mpsc::UnboundedReceiver<Control>) {
        let progress = ProgressLog::start(self.storage.clone(), self.changes.clone(), plan.id);
        CallDriver::new(self, plan, &progress).run(controls).await;
        progress.close().await;
    }
}

/// The brain's side of the call: its task and the channels both ways.
struct BrainLink {
    task: Option<tokio::task::JoinHandle<()>>,
    /// How long it has to finish once told the call ended.
    grace: Duration,
    requests_tx: mpsc::UnboundedSender<BrainRequest>,
    requests: mpsc::UnboundedReceiver<BrainRequest>,
    inputs: mpsc::UnboundedSender<BrainInput>,
    /// Handed to the brain when it starts (digits pressed before wait there for it).
    inputs_rx: Option<mpsc::UnboundedReceiver<BrainInput>>,
}

impl BrainLink {
    fn new() -> Self {
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        Self {
            task: None,
            grace: BRAIN_GRACE,
            requests_tx,
            requests,
            inputs,
            inputs_rx: Some(inputs_rx),
        }
    }

    /// Tells a running brain how the call ended and gives it its grace to finish.
    async fn end(&mut self, end: End) {
        if let Some(mut task) = self.task.take() {
            let _ = self.inputs.send(BrainInput::Ended {
                by: end.by,
                reason: end.reason,
            });
            if tokio::time::timeout(self.grace, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// What a call placed to us brings to its driver: the call, its media ready, our answer.
pub(super) struct Answering {
    pub(super) call: Call,
    pub(super) media: MediaCall,
    pub(super) sdp: SdpSession,
    pub(super) answer: Vec<u8>,
    pub(super) port_share: PortShare,
    pub(super) held: Held,
}

/// One call's I/O around its machine.
pub(super) struct CallDriver<'a> {
    engine: &'a Engine,
    plan: CallPlan,
    progress: &'a ProgressLog,
    machine: CallMachine,
    /// The room under the caps, held until the call ends.
    held: Held,
    /// Room under the trunk's caps, until it is dialled with.
    admission: Option<Admission>,
    /// The RTP port, until the media starts on it.
    port: Option<BoundPort>,
    sdp: Option<SdpSession>,
    call: Option<Call>,
    media: Option<MediaCall>,
    early: Option<EarlyListener>,
    early_heard: EarlyHeard,
    /// The stopped media's statistics, and the record made of them for the final step.
    stopped: Option<MediaStats>,
    media_record: Option<Value>,
    /// The finished recording (or why it failed), for the final step.
    recording: Kept,
    brain: BrainLink,
    /// The call's share of the media ports, held until it ends.
    port_share: Option<PortShare>,
    /// A call placed to us: our SDP answer, until it is sent.
    answer: Option<Vec<u8>>,
    /// The API's transfer request waiting for the machine's answer.
    transfer_reply: Option<tokio::sync::oneshot::Sender<Result<(), TransferRefusal>>>,
    /// A bridged transfer's second leg.
    leg: Option<Leg>,
}

impl<'a> CallDriver<'a> {
    /// The machine's settings for `plan`.
    fn settings(engine: &Engine, plan: &CallPlan) -> CallSettings {
        CallSettings {
            dispatched: plan.dispatched,
            queue_timeout: engine.config.queue_timeout,
            max_duration: plan.max_duration,
            mask_dtmf: plan.mask_dtmf,
            srtp_required: plan.srtp == dialtone_model::SrtpMode::Required,
            wallclock: SystemTime::now()
                .checked_sub(plan.dispatched.elapsed())
                .unwrap_or_else(SystemTime::now),
        }
    }

    /// The driver of a call placed to us, its media ready.
    pub(super) fn answering(
        engine: &'a Engine,
        plan: CallPlan,
        progress: &'a ProgressLog,
        sip_call_id: String,
        answering: Answering,
    ) -> Self {
        let settings = Self::settings(engine, &plan);
        let policy = plan.transfer_policy.clone();
        let mut driver = Self::new(engine, plan, progress);
        driver.machine = CallMachine::answering(settings, sip_call_id).with_transfer_policy(policy);
        driver.call = Some(answering.call);
        driver.media = Some(answering.media);
        driver.sdp = Some(answering.sdp);
        driver.answer = Some(answering.answer);
        driver.port_share = Some(answering.port_share);
        driver.held = answering.held;
        driver
    }

    fn new(engine: &'a Engine, plan: CallPlan, progress: &'a ProgressLog) -> Self {
        let machine = CallMachine::new(Self::settings(engine, &plan))
            .with_transfer_policy(plan.transfer_policy.clone());
        Self {
            engine,
            plan,
            progress,
            machine,
            held: Held::default(),
            admission: None,
            port: None,
            sdp: None,
            call: None,
            media: None,
            early: None,
            early_heard: EarlyHeard::default(),
            stopped: None,
            media_record: None,
            recording: Kept::default(),
            brain: BrainLink::new(),
            port_share: None,
            answer: None,
            transfer_reply: None,
            leg: None,
        }
    }

    /// Feeds the machine until the call's final step is out.
    pub(super) async fn run(mut self, mut controls: mpsc::UnboundedReceiver<Control>) {
        let admission = admit(self.engine, &self.plan);
        tokio::pin!(admission);
        let mut queued = self.machine.waits_for_admission();
        loop {
            while let Some(action) = self.machine.poll_action() {
                self.perform(action).await;
            }
            if self.machine.is_over() {
                return;
            }
            let deadline = self.machine.poll_timeout();
            let input = tokio::select! {
                admitted = &mut admission, if queued => {
                    queued = false;
                    match admitted {
                        Some((held, admission)) => {
                            self.held = held;
                            self.admission = Some(admission);
                            Input::Admitted
                        }
                        None => Input::NotAdmitted,
                    }
                }
                event = next_ua_event(&mut self.call) => match event {
                    Some(UaEvent::Leftover(leftover)) => {
                        keep_dialog(self.engine, self.plan.id, &leftover).await;
                        continue;
                    }
                    Some(event) => match Input::from_ua(event) {
                        Some(input) => input,
                        None => continue,
                    },
                    // The user agent stopped without a final event: nothing more will happen.
                    None => return,
                },
                Some(control) = controls.recv() => match control {
                    Control::HangUp(by) => Input::HangUp(by),
                    Control::Transfer { to, mode, reply } => {
                        self.transfer_reply = Some(reply);
                        Input::Transfer { to, mode }
                    }
                },
                Some(request) = self.brain.requests.recv() => Input::Brain(request),
                input = next_leg_input(&mut self.leg) => match input {
                    Some(input) => {
                        if ends_leg(&input) {
                            // Its call is over: its media stops, the leg goes.
                            if let Some(leg) = self.leg.take() {
                                leg.hang_up().await;
                            }
                        }
                        Input::Leg(input)
                    }
                    None => continue,
                },
                Some(event) = next_media_event(&mut self.media) => match Input::from_media(event) {
                    Some(input) => input,
                    None => continue,
                },
                () = sleep_until(deadline) => {
                    self.machine.handle_timeout(Instant::now());
                    continue;
                }
            };
            self.machine.handle(Instant::now(), input);
        }
    }

    async fn perform(&mut self, action: Action) {
        match action {
            Action::Dial => {
                let placed = self.dial().await;
                self.machine.handle(Instant::now(), placed);
            }
            Action::StartEarlyMedia { sdp } => {
                let outcome = self.start_early_media(&sdp);
                self.machine.handle(Instant::now(), Input::Media(outcome));
            }
            Action::ConnectMedia { sdp } => {
                let outcome = self.connect_media(sdp.as_deref()).await;
                self.machine.handle(Instant::now(), Input::Media(outcome));
            }
            Action::Accept => {
                if let (Some(call), Some(answer)) = (&self.call, self.answer.take()) {
                    let _ = call.accept(answer);
                }
            }
            Action::StartBrain => self.start_brain(),
            Action::AnswerRemoteOffer { sdp } => self.answer_remote_offer(sdp.as_deref()),
            Action::SendDtmf(digits) => {
                if let Some(sent) = self.media.as_ref().map(|m| m.send_dtmf(&digits))
                    && let Err(error) = sent.await
                {
                    tracing::warn!(%error, "the brain's digits cannot be sent");
                }
            }
            Action::TellBrainDtmf(digit) => {
                let _ = self.brain.inputs.send(BrainInput::Dtmf(digit));
            }
            Action::HangUp => {
                if let Some(call) = &self.call {
                    let _ = call.hang_up();
                }
            }
            Action::AnswerTransfer { to, by, result } => self.answer_transfer(to, by, result),
            Action::DialLeg { to } => {
                let placed = self.dial_leg(&to).await;
                self.machine.handle(Instant::now(), Input::Leg(placed));
            }
            Action::HoldCaller => {
                if let Some(media) = &self.media {
                    bridge_leg::hold(media);
                }
            }
            Action::ReturnCaller => {
                if let Some(media) = &self.media {
                    media.splice(None);
                }
            }
            Action::ConnectLeg { sdp } => {
                let outcome = match self.leg.as_mut() {
                    Some(leg) => leg.connect(self.engine, sdp.as_deref()),
                    None => MediaOutcome::Unavailable,
                };
                self.machine
                    .handle(Instant::now(), Input::Leg(LegInput::Media(outcome)));
            }
            Action::RelayLegs => {
                let relayed = match (&self.media, self.leg.as_mut()) {
                    (Some(media), Some(leg)) => bridge_leg::relay(media, leg),
                    _ => false,
                };
                if !relayed {
                    tracing::error!("the second leg's media rings are gone; nothing is relayed");
                }
                self.machine
                    .handle(Instant::now(), Input::Leg(LegInput::Relayed(relayed)));
            }
            Action::SendLegDtmf(digit) => {
                let digits = digit.to_string();
                let sent = self
                    .leg
                    .as_ref()
                    .and_then(|leg| leg.media.as_ref())
                    .map(|m| m.send_dtmf(&digits));
                if let Some(sent) = sent
                    && let Err(error) = sent.await
                {
                    tracing::warn!(%error, "the caller's digit cannot be relayed");
                }
            }
            Action::AnswerLegOffer { sdp } => {
                if let Some(leg) = self.leg.as_mut() {
                    leg.answer_remote_offer(sdp.as_deref());
                }
            }
            Action::HangUpLeg => {
                if let Some(leg) = self.leg.take() {
                    leg.hang_up().await;
                }
            }
            Action::Refer { to } => {
                let sent = match &self.call {
                    Some(call) => call.refer(&to).await,
                    None => Err(dialtone_sip_ua::UaError::CallEnded),
                };
                if let Err(error) = sent {
                    tracing::warn!(%error, "the REFER cannot be sent");
                    self.machine.handle(Instant::now(), Input::ReferNotSent);
                }
            }
            Action::RecordTransfer {
                transfer,
                transferred_to,
            } => {
                if let Some(outcome) = transfer_outcome(&transfer, transferred_to.as_deref()) {
                    metrics::counter!("dialtone_transfers_total", "mode" => transfer.mode.as_str(), "outcome" => outcome)
                        .increment(1);
                }
                let storage = self.engine.storage();
                match storage
                    .set_transfer(self.plan.id, &transfer, transferred_to.as_deref())
                    .await
                {
                    Ok(()) => {
                        let _ = self.engine.changes.send(self.plan.id);
                    }
                    Err(error) => tracing::error!(%error, "the transfer is not recorded"),
                }
            }
            Action::TellBrainTransferFailed(transfer) => {
                let message = transfer
                    .reason
                    .map_or("the transfer failed", |r| r.message())
                    .to_owned();
                let _ = self.brain.inputs.send(BrainInput::TransferFailed {
                    to: transfer.to,
                    sip_status: transfer.sip_status,
                    reason: transfer.reason,
                    message,
                });
            }
            Action::TellBrainEnded(end) => self.brain.end(end).await,
            Action::StopMedia => self.stop_media().await,
            Action::Record(step) => self.record(step),
            Action::Measure(measure) => self.measure(measure),
        }
    }

    /// Tells whoever asked for a transfer whether it started: the API's waiting request, or
    /// the brain (only a refusal: a started transfer reports its outcome later).
    fn answer_transfer(
        &mut self,
        to: String,
        by: dialtone_storage::EndedBy,
        result: Result<(), TransferRefusal>,
    ) {
        if by == dialtone_storage::EndedBy::Api {
            if let Some(reply) = self.transfer_reply.take() {
                let _ = reply.send(result);
            }
        } else if let Err(refusal) = result {
            let _ = self.brain.inputs.send(BrainInput::TransferFailed {
                to,
                sip_status: None,
                reason: None,
                message: refusal.message(),
            });
        }
    }

    /// Binds a port, offers SDP on it and dials with the call's admission.
    async fn dial(&mut self) -> Input {
        let Some(admission) = self.admission.take() else {
            return Input::NotPlaced(PlaceFailure::Refused);
        };
        let to = self.plan.to.clone();
        match place(
            self.engine,
            &self.plan,
            &self.plan.from,
            &to,
            admission,
            self.plan.ring_timeout,
        )
        .await
        {
            Ok(placed) => {
                self.port_share = Some(placed.share);
                self.call = Some(placed.call);
                self.port = Some(placed.port);
                self.sdp = Some(placed.sdp);
                Input::Placed
            }
            Err(failure) => Input::NotPlaced(failure),
        }
    }

    /// Places a bridged transfer's second leg to `to` through the call's trunk, with room
    /// under the trunk's caps now (a transfer does not queue).
    async fn dial_leg(&mut self, to: &str) -> LegInput {
        let mut trunk = (*self.plan.trunk).clone();
        trunk.cap_wait = Duration::ZERO;
        let admission = match self.engine.ua.admit(&trunk).await {
            Ok(admission) => admission,
            Err(error) => {
                tracing::warn!(%error, "no room under the trunk's caps for the second leg");
                return LegInput::NotPlaced;
            }
        };
        // The machine's ring timeout decides; the user agent's is only a backstop.
        let ring_timeout = BRIDGE_RING_TIMEOUT + Duration::from_secs(5);
        let plan = &self.plan;
        let from = leg_caller_id(plan.session.direction, &plan.from, &plan.to);
        match place(self.engine, plan, from, to, admission, ring_timeout).await {
            Ok(placed) => {
                self.leg = Some(Leg {
                    call: placed.call,
                    port: Some(placed.port),
                    sdp: placed.sdp,
                    media: None,
                    _share: placed.share,
                });
                LegInput::Placed
            }
            Err(_) => LegInput::NotPlaced,
        }
    }

    /// Starts the media on the early answer `sdp`, listening to what the far end plays.
    fn start_early_media(&mut self, sdp: &[u8]) -> MediaOutcome {
        let session = match self.sdp.as_mut().map(|s| s.negotiate(sdp)) {
            Some(Ok(session)) => session,
            Some(Err(refusal)) => return refused(refusal),
            None => return MediaOutcome::Unusable,
        };
        let Some(port) = self.port.take() else {
            return MediaOutcome::Unavailable;
        };
        let config = media_config(
            self.plan.id,
            self.engine.config.rtp_timeout,
            &session,
            self.plan.record.as_ref().map(|r| r.to.clone()),
        );
        match self.engine.media.start(port, config) {
            Ok(mut media) => {
                tracing::info!(
                    codec = %session.codec.name,
                    srtp = session.srtp.as_ref().map(|s| s.suite.as_str()),
                    "early media"
                );
                self.early = media.take_inbound().map(EarlyListener::start);
                self.media = Some(media);
                if let Some(sdp) = &mut self.sdp {
                    sdp.agree(session);
                }
                MediaOutcome::Started
            }
            Err(error) => {
                tracing::error!(%error, "early media did not start");
                MediaOutcome::Unavailable
            }
        }
    }

    /// Connects the media to the answer: the early media moves over (redirected if the answer
    /// moved it), or the media starts now.
    async fn connect_media(&mut self, sdp: Option<&[u8]>) -> MediaOutcome {
        let Some(negotiated) = self.sdp.as_mut() else {
            return MediaOutcome::Unavailable;
        };
        // A 2xx without SDP confirms the early media's answer (RFC 3261 §13.2.1), or the
        // refusal of the last one.
        let answer = match sdp {
            Some(sdp) => negotiated.negotiate(sdp),
            None => negotiated
                .current()
                .cloned()
                .ok_or(negotiated.refused().unwrap_or(Refusal::Unusable)),
        };
        let session = match answer {
            Ok(session) => session,
            Err(refusal) => {
                tracing::warn!(?refusal, "answer SDP unusable");
                return refused(refusal);
            }
        };
        let mut media = match (self.media.take(), negotiated.current()) {
            (Some(media), Some(early))
                if early.codec.codec == session.codec.codec && early.srtp == session.srtp =>
            {
                if early.remote_rtp != session.remote_rtp || early.direction != session.direction {
                    media.redirect(Direction {
                        sending: session.direction.sends(),
                        receiving: session.direction.receives(),
                        remote: session.remote_rtp,
                    });
                }
                media.answered();
                media
            }
            (Some(_), _) => {
                tracing::warn!("the answer changed the early media's codec or SRTP keys");
                return MediaOutcome::Unusable;
            }
            (None, _) => {
                let Some(port) = self.port.take() else {
                    return MediaOutcome::Unavailable;
                };
                let config = media_config(
                    self.plan.id,
                    self.engine.config.rtp_timeout,
                    &session,
                    self.plan.record.as_ref().map(|r| r.to.clone()),
                );
                match self.engine.media.start(port, config) {
                    Ok(media) => media,
                    Err(error) => {
                        tracing::error!(%error, "media did not start");
                        return MediaOutcome::Unavailable;
                    }
                }
            }
        };
        if let Some(listener) = self.early.take() {
            let (inbound, heard) = listener.stop().await;
            self.early_heard = heard;
            if let Some(inbound) = inbound {
                media.restore_inbound(inbound);
            }
        }
        tracing::info!(
            codec = %session.codec.name,
            srtp = session.srtp.as_ref().map(|s| s.suite.as_str()),
            "answered"
        );
        negotiated.agree(session);
        self.media = Some(media);
        MediaOutcome::Started
    }

    /// Starts the agent's brain on the connected media.
    fn start_brain(&mut self) {
        let Some(media) = self.media.as_mut() else {
            return;
        };
        let plan = &self.plan;
        let mut speech = plan.speech;
        // Where the call agreed on telephone-event, key presses come as RFC 4733 events and
        // the tones in the audio are not listened for: a gateway that sends both would have
        // every press counted twice.
        speech.inband_dtmf = self
            .sdp
            .as_ref()
            .and_then(|s| s.current())
            .is_none_or(|session| session.telephone_event.is_none());
        let context = BrainContext {
            storage: self.engine.storage.clone(),
            call_id: plan.id,
            speech,
            voicemail: plan.voicemail.clone(),
            requests: self.brain.requests_tx.clone(),
            inputs: self
                .brain
                .inputs_rx
                .take()
                .unwrap_or_else(|| mpsc::unbounded_channel().1),
            instructions: plan.instructions.clone(),
            voice: plan.voice.clone(),
            language: plan.language.clone(),
            returns: plan.returns.clone(),
            mask_dtmf: plan.mask_dtmf,
            tts: self.engine.tts.clone(),
            amd_listener: plan.amd_listener.clone(),
        };
        let speech = &self.engine.speech.handle;
        if let Some(setup) = plan.agent.clone() {
            self.brain.grace = AGENT_GRACE;
            self.brain.task = brains::agent::start(speech, media, context, setup);
            return;
        }
        if dialtone_model::media_streams::is_media_streams(&plan.brain) {
            let target = brains::StreamsTarget {
                url: plan.brain.clone(),
                headers: plan.session.brain_headers.clone(),
                vet: plan
                    .brain_is_agents
                    .then(|| self.engine.config.private_destinations.clone()),
                account_sid: plan.org_id.to_string(),
                context: plan.session.context.clone(),
            };
            self.brain.task = brains::start_streams(speech, target, media, context);
            return;
        }
        self.brain.task = match Builtin::named(&plan.brain) {
            Some(builtin) => brains::start(speech, builtin, media, context),
            None => brains::start_remote(
                speech,
                &plan.brain,
                plan.brain_is_agents
                    .then(|| self.engine.config.private_destinations.clone()),
                media,
                context,
                plan.session.clone(),
            ),
        };
    }

    /// Answers the caller's re-offer.
    fn answer_remote_offer(&mut self, offer: Option<&[u8]>) {
        if let (Some(call), Some(sdp)) = (&self.call, self.sdp.as_mut()) {
            answer_remote_offer(call, sdp, self.media.as_ref(), offer);
        }
    }

    /// Stops the media, keeping its statistics (with the early media heard) for the record.
    async fn stop_media(&mut self) {
        let Some(media) = self.media.take() else {
            return;
        };
        let (stats, outcome) = media.stop_recorded().await;
        if let (Some(recordings), Some(recording)) =
            (self.engine.recordings(), self.plan.record.as_ref())
        {
            let keep = recordings.keep(self.plan.id, recording, outcome);
            self.recording = match tokio::time::timeout(RECORDING_KEEP_LIMIT, keep).await {
                Ok(kept) => kept,
                Err(_) => {
                    tracing::warn!("the recording was not kept in time: the call ends without it");
                    crate::recording::Kept {
                        recording: None,
                        error: Some(format!(
                            "the recording was not kept within {} s",
                            RECORDING_KEEP_LIMIT.as_secs()
                        )),
                    }
                }
            };
        }
        let session = self.sdp.as_ref().and_then(|s| s.current());
        self.media_record = media_record(stats, self.early.take(), self.early_heard, session).await;
        self.stopped = Some(stats);
    }

    /// Queues the step's write; a final step carries the stopped media's record.
    fn record(&mut self, step: Step) {
        let (media, recording) = match step.status.is_final() {
            true => (
                self.media_record.take(),
                std::mem::take(&mut self.recording),
            ),
            false => (None, Kept::default()),
        };
        self.progress.record(
            step.status,
            CallProgress {
                sip_call_id: step.sip_call_id,
                sip_status: step.sip_status,
                end_reason: step.end.map(|end| end.reason),
                ended_by: step.end.map(|end| end.by),
                media,
                recording: recording.recording,
                recording_error: recording.error,
                ..CallProgress::default()
            },
        );
    }

    fn measure(&self, measure: Measure) {
        let trunk = self.plan.trunk_id.to_string();
        match measure {
            Measure::DispatchToInvite(waited) => {
                metrics::histogram!("dialtone_dispatch_to_invite_seconds", "trunk" => trunk)
                    .record(waited.as_secs_f64());
            }
            Measure::Setup(took) => {
                metrics::histogram!("dialtone_setup_seconds", "trunk" => trunk)
                    .record(took.as_secs_f64());
            }
            Measure::Ended { status, reason } => {
                metrics::counter!("dialtone_calls_total", "status" => status.as_str(), "end_reason" => reason.as_str(), "trunk" => trunk)
                    .increment(1);
            }
            Measure::MediaHealth => {
                if let Some(stats) = &self.stopped {
                    measure_media_health(stats);
                }
            }
        }
    }
}

/// What placing a call leaves: the user agent's call, the RTP port our offer names, the
/// offer, and the port's share of the organisation's media ports.
struct Placement {
    call: Call,
    port: BoundPort,
    sdp: SdpSession,
    share: PortShare,
}

/// Binds a port, offers SDP on it and dials `to` from `from` through the call's trunk with
/// `admission`: the call itself, and a bridged transfer's second leg.
async fn place(
    engine: &Engine,
    plan: &CallPlan,
    from: &str,
    to: &str,
    admission: Admission,
    ring_timeout: Duration,
) -> Result<Placement, PlaceFailure> {
    let Some(share) = engine.port_shares.take(plan.org_id) else {
        return Err(PlaceFailure::NoPort);
    };
    let port = match engine.ports.bind() {
        Ok(port) => port,
        Err(error) => {
            metrics::counter!("dialtone_media_ports_refused_total").increment(1);
            tracing::error!(%error, organization = %plan.org_id, "no RTP port");
            return Err(PlaceFailure::NoPort);
        }
    };
    let sdp = SdpSession::offer(
        engine.config.rtp_advertised,
        port.port(),
        plan.id,
        plan.srtp,
        &plan.codecs,
    );
    let mut request = DialRequest::new(plan.trunk.clone(), from.to_owned(), to.to_owned());
    request.sdp_offer = Some(sdp.offer_bytes());
    request.ring_timeout = ring_timeout;
    request
        .extra_headers
        .push(("X-Dialtone-Call-Id".into(), plan.id.to_string()));
    match engine.ua.dial_admitted(request, admission).await {
        Ok(call) => Ok(Placement {
            call,
            port,
            sdp,
            share,
        }),
        Err(error) => {
            tracing::warn!(%error, "dial refused");
            Err(PlaceFailure::Refused)
        }
    }
}

/// Waits, first come first served, for a slot under the organisation's concurrency cap and
/// room under the trunk's caps (where nodes share the database, counted there across them
/// too), the latter no longer than the queue timeout (the machine ends the call at the queue
/// timeout in any case); `None` when a cap had no room in time.
fn admit(
    engine: &Engine,
    plan: &CallPlan,
) -> impl Future<Output = Option<(Held, Admission)>> + use<> {
    let slots = plan.org_slots.clone();
    let until = plan.dispatched + engine.config.queue_timeout;
    let mut trunk = (*plan.trunk).clone();
    let ua = engine.ua.clone();
    let shared = engine.shared_caps().cloned();
    let (call_id, caps, trunk_id) = (plan.id, plan.caps, plan.trunk_id);
    async move {
        let org_slot = match slots {
            Some(slots) => Some(slots.acquire_owned().await.ok()?),
            None => None,
        };
        let shared_holds = match caps::hold_shared(shared.clone(), call_id, caps, until).await {
            Ok(holds) => holds,
            Err(full) => {
                tracing::warn!(scope = ?full.0, "no room under the cap across the nodes in time");
                return None;
            }
        };
        trunk.cap_wait = until.saturating_duration_since(Instant::now());
        let admission = match ua.admit(&trunk).await {
            Ok(admission) => admission,
            Err(error) => {
                tracing::warn!(%error, "no room under the trunk's caps in time");
                return None;
            }
        };
        if let Some(per_second) = trunk.max_calls_per_second
            && let Err(full) =
                caps::take_shared_trunk_rate(shared, trunk_id, per_second, until).await
        {
            tracing::warn!(scope = ?full.0, "no room under the trunk's rate across the nodes in time");
            return None;
        }
        Some((Held::new(org_slot, shared_holds), admission))
    }
}

/// Keeps what ending the call on the wire needs, before the response that brought it is
/// announced, so that the next start can hang up a call this process dies with.
async fn keep_dialog(engine: &Engine, id: uuid::Uuid, leftover: &Leftover) {
    let kept = match serde_json::to_string(leftover) {
        Ok(text) => engine.storage().set_sip_dialog(id, &text).await,
        Err(error) => {
            tracing::warn!(%error, "the SIP dialog cannot be written out");
            return;
        }
    };
    if let Err(error) = kept {
        tracing::warn!(%error, "the SIP dialog is not kept; a crash now leaves the far end up");
    }
}

/// The media outcome of an answer refused for `refusal`.
fn refused(refusal: Refusal) -> MediaOutcome {
    match refusal {
        Refusal::Unusable => MediaOutcome::Unusable,
        Refusal::NoKey => MediaOutcome::NoKey,
    }
}

/// The call's next event from the user agent; pending until it is placed, `None` once the
/// user agent has no more.
async fn next_ua_event(call: &mut Option<Call>) -> Option<UaEvent> {
    match call {
        Some(call) => call.next_event().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

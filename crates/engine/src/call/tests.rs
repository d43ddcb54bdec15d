//! The call machine on a virtual clock: every end the engine can record, hang-ups in every
//! state, forward-only steps, and the order of what is done. No runtime, no sleeps: time is a
//! value the test moves.

use std::time::{Duration, Instant};

use dialtone_sip_ua::{EndReason as SipEndReason, Party};
use dialtone_storage::{CallStatus, EndReason, EndedBy};

use super::action::{Action, End, Measure, Step};
use super::input::{HangUp, Input, MediaOutcome, PlaceFailure};
use super::machine::{CallMachine, CallSettings, end_reason_of};
use crate::brains::BrainRequest;

const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DURATION: Duration = Duration::from_secs(600);
const SDP: &[u8] = b"v=0 (the far end's answer)";

/// A machine and the virtual time it is at (the transfer tests drive it too).
pub(super) struct Call {
    pub(super) machine: CallMachine,
    dispatched: Instant,
    pub(super) now: Instant,
}

impl Call {
    /// A call just dispatched (status `queued`).
    pub(super) fn queued() -> Self {
        let dispatched = Instant::now();
        Self {
            machine: CallMachine::new(CallSettings {
                dispatched,
                queue_timeout: QUEUE_TIMEOUT,
                max_duration: MAX_DURATION,
                mask_dtmf: false,
                srtp_required: false,
                wallclock: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600),
            }),
            dispatched,
            now: dispatched,
        }
    }

    /// Admitted and handed to the user agent (still `queued`: no INVITE yet).
    pub(super) fn placed() -> Self {
        let mut call = Self::queued();
        assert_eq!(call.feed(Input::Admitted), [Action::Dial]);
        assert_eq!(call.feed(Input::Placed), []);
        call
    }

    /// The INVITE is out: `dialing`.
    pub(super) fn dialing() -> Self {
        let mut call = Self::placed();
        call.feed(attempt("first@sip"));
        call
    }

    /// `ringing` (a 180).
    pub(super) fn ringing() -> Self {
        let mut call = Self::dialing();
        assert_eq!(call.feed(Input::Ringing), [record(CallStatus::Ringing)]);
        call
    }

    /// Answered, the media connected and the brain started: `in_progress`.
    pub(super) fn in_progress() -> Self {
        let mut call = Self::ringing();
        call.answer();
        call
    }

    /// Answers the call (with SDP) and connects its media.
    pub(super) fn answer(&mut self) {
        assert_eq!(
            self.feed(Input::Answered {
                sdp: Some(SDP.to_vec())
            }),
            [Action::ConnectMedia {
                sdp: Some(SDP.to_vec())
            }]
        );
        let setup = self.now - self.dispatched;
        assert_eq!(
            self.feed(Input::Media(MediaOutcome::Started)),
            [
                Action::StartBrain,
                Action::Measure(Measure::Setup(setup)),
                record(CallStatus::InProgress),
            ]
        );
    }

    /// Moves the clock by `by`.
    pub(super) fn wait(&mut self, by: Duration) {
        self.now += by;
    }

    /// Tells the machine `input` now; what it asks in return.
    pub(super) fn feed(&mut self, input: Input) -> Vec<Action> {
        self.machine.handle(self.now, input);
        self.actions()
    }

    /// Runs the clock to the machine's deadline; what it asks then.
    pub(super) fn run_to_deadline(&mut self) -> Vec<Action> {
        let deadline = self
            .machine
            .poll_timeout()
            .unwrap_or_else(|| panic!("no deadline"));
        assert!(deadline >= self.now, "the deadline is in the past");
        self.now = deadline;
        self.machine.handle_timeout(self.now);
        self.actions()
    }

    pub(super) fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.machine.poll_action()).collect()
    }
}

fn attempt(sip_call_id: &str) -> Input {
    Input::Attempt {
        sip_call_id: sip_call_id.to_owned(),
    }
}

fn record(status: CallStatus) -> Action {
    Action::Record(Step::to(status))
}

fn failed(sip_status: Option<u16>, reason: SipEndReason) -> Input {
    Input::Failed { sip_status, reason }
}

pub(super) fn ended(by: Party, reason: SipEndReason) -> Input {
    Input::Ended { by, reason }
}

pub(super) fn end(reason: EndReason, by: EndedBy) -> End {
    End::new(reason, by)
}

/// What the machine asks when a call ends before it was answered.
fn unanswered_end(status: CallStatus, how: End, sip_status: Option<u16>) -> Vec<Action> {
    vec![
        Action::StopMedia,
        Action::Measure(Measure::Ended {
            status,
            reason: how.reason,
        }),
        Action::Record(Step::ended(status, how).with_sip_status(sip_status)),
    ]
}

/// What the machine asks when a call ends in the queue or is not placed.
fn unplaced_end(status: CallStatus, how: End) -> Vec<Action> {
    vec![
        Action::Measure(Measure::Ended {
            status,
            reason: how.reason,
        }),
        Action::Record(Step::ended(status, how)),
    ]
}

/// What the machine asks when an answered call (its brain started) ends.
pub(super) fn answered_end(how: End) -> Vec<Action> {
    vec![
        Action::TellBrainEnded(how),
        Action::StopMedia,
        Action::Measure(Measure::Ended {
            status: CallStatus::Completed,
            reason: how.reason,
        }),
        Action::Measure(Measure::MediaHealth),
        Action::Record(Step::ended(CallStatus::Completed, how)),
    ]
}

/// What the machine asks when an answered call whose media never connected (so no brain
/// started) ends.
fn brainless_end(how: End) -> Vec<Action> {
    vec![
        Action::StopMedia,
        Action::Measure(Measure::Ended {
            status: CallStatus::Completed,
            reason: how.reason,
        }),
        Action::Measure(Measure::MediaHealth),
        Action::Record(Step::ended(CallStatus::Completed, how)),
    ]
}

#[test]
fn a_call_is_admitted_dialled_rung_answered_and_completed_by_the_callee() {
    let mut call = Call::queued();
    assert_eq!(call.feed(Input::Admitted), [Action::Dial]);
    assert_eq!(call.feed(Input::Placed), []);
    call.wait(Duration::from_millis(3));
    assert_eq!(
        call.feed(attempt("a84b4c76e66710")),
        [
            Action::Measure(Measure::DispatchToInvite(Duration::from_millis(3))),
            Action::Record(Step {
                sip_call_id: Some("a84b4c76e66710".into()),
                ..Step::to(CallStatus::Dialing)
            }),
        ]
    );
    call.wait(Duration::from_millis(200));
    assert_eq!(call.feed(Input::Ringing), [record(CallStatus::Ringing)]);
    call.wait(Duration::from_secs(4));
    call.answer();
    call.wait(Duration::from_secs(30));
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed)),
        answered_end(end(EndReason::Completed, EndedBy::Callee))
    );
    assert!(call.machine.is_over());
    assert_eq!(call.machine.poll_timeout(), None);
}

#[test]
fn sip_failures_map_to_status_end_reason_and_who_ended_it() {
    use SipEndReason as Sip;
    let cases = [
        (Some(486), Sip::Busy, CallStatus::Busy, EndedBy::Callee),
        // The user agent's ring timeout: it cancels, the trunk answers 487.
        (
            Some(487),
            Sip::NoAnswer,
            CallStatus::NoAnswer,
            EndedBy::Engine,
        ),
        (
            Some(408),
            Sip::NoAnswer,
            CallStatus::NoAnswer,
            EndedBy::Engine,
        ),
        (
            Some(603),
            Sip::Rejected,
            CallStatus::Failed,
            EndedBy::Callee,
        ),
        (
            Some(480),
            Sip::Unavailable,
            CallStatus::Failed,
            EndedBy::Callee,
        ),
        // Timer B: no final response at all.
        (None, Sip::TrunkTimeout, CallStatus::Failed, EndedBy::Trunk),
        (
            Some(403),
            Sip::Forbidden,
            CallStatus::Failed,
            EndedBy::Trunk,
        ),
        (Some(404), Sip::NotFound, CallStatus::Failed, EndedBy::Trunk),
        (
            Some(488),
            Sip::IncompatibleMedia,
            CallStatus::Failed,
            EndedBy::Trunk,
        ),
        (
            Some(503),
            Sip::Congestion,
            CallStatus::Failed,
            EndedBy::Trunk,
        ),
        (
            None,
            Sip::TransportError,
            CallStatus::Failed,
            EndedBy::Trunk,
        ),
        // Every target refused or ICMP-unreachable.
        (
            None,
            Sip::TrunkUnreachable,
            CallStatus::Failed,
            EndedBy::Trunk,
        ),
    ];
    for (sip_status, reason, status, by) in cases {
        let mut call = Call::ringing();
        let how = end(end_reason_of(reason), by);
        assert_eq!(
            call.feed(failed(sip_status, reason)),
            unanswered_end(status, how, sip_status),
            "{reason:?}"
        );
        assert!(call.machine.is_over());
    }
    // Named codes, as the records show them.
    assert_eq!(end_reason_of(Sip::Busy), EndReason::Busy);
    assert_eq!(end_reason_of(Sip::NoAnswer), EndReason::NoAnswer);
    assert_eq!(end_reason_of(Sip::TrunkTimeout), EndReason::TrunkTimeout);
}

#[test]
fn an_unreachable_trunk_fails_from_dialing_as_trunk_unreachable_by_the_trunk() {
    let mut call = Call::dialing();
    assert_eq!(
        call.feed(failed(None, SipEndReason::TrunkUnreachable)),
        unanswered_end(
            CallStatus::Failed,
            end(EndReason::TrunkUnreachable, EndedBy::Trunk),
            None
        )
    );
}

#[test]
fn a_trunk_that_never_answers_fails_from_dialing_with_no_sip_status() {
    let mut call = Call::dialing();
    assert_eq!(
        call.feed(failed(None, SipEndReason::TrunkTimeout)),
        unanswered_end(
            CallStatus::Failed,
            end(EndReason::TrunkTimeout, EndedBy::Trunk),
            None
        )
    );
}

/// Every end reason the SIP stack gives (from every final status, and those no status gives)
/// keeps its code on the call record.
#[test]
fn the_sip_stacks_end_reasons_keep_their_codes() {
    let from_statuses = (300..700).map(SipEndReason::from_status);
    let others = [
        SipEndReason::Completed,
        SipEndReason::TrunkTimeout,
        SipEndReason::TransportError,
        SipEndReason::TrunkUnreachable,
        SipEndReason::SessionExpired,
    ];
    for sip in from_statuses.chain(others) {
        assert_eq!(end_reason_of(sip).as_str(), sip.as_str());
    }
}

#[test]
fn rtp_timeout_is_ignored_before_the_answer_and_hangs_up_after() {
    let mut call = Call::dialing();
    assert_eq!(
        call.feed(Input::EarlyMedia { sdp: SDP.to_vec() }),
        [
            record(CallStatus::Ringing),
            Action::StartEarlyMedia { sdp: SDP.to_vec() }
        ]
    );
    assert_eq!(call.feed(Input::Media(MediaOutcome::Started)), []);
    // The early media went quiet while the phone rings: the ring timeout covers that.
    let quiet = Input::RtpTimeout {
        silent_for: Duration::from_secs(30),
    };
    assert_eq!(call.feed(quiet.clone()), []);
    call.answer();
    call.wait(Duration::from_secs(30));
    assert_eq!(call.feed(quiet), [Action::HangUp]);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::RtpTimeout, EndedBy::Engine))
    );
}

#[test]
fn the_maximum_duration_counts_from_the_answer_and_hangs_up_once() {
    let mut call = Call::ringing();
    call.wait(Duration::from_secs(5));
    call.answer();
    let answered = call.now;
    assert_eq!(call.machine.poll_timeout(), Some(answered + MAX_DURATION));
    // Not a moment early.
    call.now = answered + MAX_DURATION - Duration::from_millis(1);
    call.machine.handle_timeout(call.now);
    assert_eq!(call.actions(), []);
    assert_eq!(call.run_to_deadline(), [Action::HangUp]);
    assert_eq!(call.now, answered + MAX_DURATION);
    // Disarmed: the BYE is out, nothing more is due.
    assert_eq!(call.machine.poll_timeout(), None);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::MaxDuration, EndedBy::Engine))
    );
}

#[test]
fn no_clock_runs_while_the_phone_rings() {
    // The ring timeout is the user agent's (`DialRequest::ring_timeout`).
    let call = Call::ringing();
    assert_eq!(call.machine.poll_timeout(), None);
}

#[test]
fn the_brains_hang_ups_end_the_call_by_the_agent_with_its_reason() {
    for reason in [
        EndReason::AgentHangup,
        EndReason::Voicemail,
        EndReason::VoicemailMessage,
        EndReason::SilenceTimeout,
        EndReason::BrainError,
    ] {
        let mut call = Call::in_progress();
        call.wait(Duration::from_secs(12));
        assert_eq!(
            call.feed(Input::Brain(BrainRequest::HangUp { reason })),
            [Action::HangUp]
        );
        assert_eq!(
            call.feed(ended(Party::Local, SipEndReason::Completed)),
            answered_end(end(reason, EndedBy::Agent)),
            "{reason}"
        );
    }
}

#[test]
fn the_queue_timeout_fails_a_call_still_queued() {
    let mut call = Call::queued();
    assert_eq!(
        call.machine.poll_timeout(),
        Some(call.dispatched + QUEUE_TIMEOUT)
    );
    call.wait(QUEUE_TIMEOUT - Duration::from_millis(1));
    call.machine.handle_timeout(call.now);
    assert_eq!(call.actions(), []);
    assert_eq!(
        call.run_to_deadline(),
        unplaced_end(
            CallStatus::Failed,
            end(EndReason::QueueTimeout, EndedBy::Engine)
        )
    );
    assert!(call.machine.is_over());
    // Admission coming too late changes nothing.
    assert_eq!(call.feed(Input::Admitted), []);
}

#[test]
fn no_room_under_the_trunks_caps_in_time_is_a_queue_timeout() {
    let mut call = Call::queued();
    call.wait(QUEUE_TIMEOUT);
    assert_eq!(
        call.feed(Input::NotAdmitted),
        unplaced_end(
            CallStatus::Failed,
            end(EndReason::QueueTimeout, EndedBy::Engine)
        )
    );
}

#[test]
fn admission_disarms_the_queue_timeout() {
    let mut call = Call::queued();
    call.feed(Input::Admitted);
    assert_eq!(call.machine.poll_timeout(), None);
    call.feed(Input::Placed);
    assert_eq!(call.machine.poll_timeout(), None);
}

#[test]
fn a_call_that_cannot_be_placed_fails_as_dial_refused_or_media_unavailable() {
    for (failure, reason) in [
        (PlaceFailure::Refused, EndReason::DialRefused),
        (PlaceFailure::NoPort, EndReason::MediaUnavailable),
    ] {
        let mut call = Call::queued();
        call.feed(Input::Admitted);
        assert_eq!(
            call.feed(Input::NotPlaced(failure)),
            unplaced_end(CallStatus::Failed, end(reason, EndedBy::Engine))
        );
        assert!(call.machine.is_over());
    }
}

#[test]
fn early_media_that_cannot_start_hangs_up_as_media_unavailable() {
    let mut call = Call::dialing();
    call.feed(Input::EarlyMedia { sdp: SDP.to_vec() });
    assert_eq!(
        call.feed(Input::Media(MediaOutcome::Unavailable)),
        [Action::HangUp]
    );
    // The port is gone: a later 183 starts nothing.
    assert_eq!(call.feed(Input::EarlyMedia { sdp: SDP.to_vec() }), []);
    assert_eq!(
        call.feed(failed(Some(487), SipEndReason::Canceled)),
        unanswered_end(
            CallStatus::Failed,
            end(EndReason::MediaUnavailable, EndedBy::Engine),
            Some(487)
        )
    );
}

#[test]
fn media_that_cannot_start_at_the_answer_hangs_up_as_media_unavailable() {
    let mut call = Call::ringing();
    call.feed(Input::Answered { sdp: None });
    assert_eq!(
        call.feed(Input::Media(MediaOutcome::Unavailable)),
        [Action::HangUp]
    );
    // Never in progress, no brain to tell; the record still says completed (answered).
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        brainless_end(end(EndReason::MediaUnavailable, EndedBy::Engine))
    );
}

#[test]
fn an_unusable_answer_hangs_up_as_incompatible_media_and_starts_no_brain() {
    let mut call = Call::ringing();
    call.feed(Input::Answered {
        sdp: Some(SDP.to_vec()),
    });
    assert_eq!(
        call.feed(Input::Media(MediaOutcome::Unusable)),
        [Action::HangUp]
    );
    // Not answered as far as the engine goes: no RTP timeout, no maximum duration.
    assert_eq!(call.machine.poll_timeout(), None);
    let quiet = Input::RtpTimeout {
        silent_for: Duration::from_secs(5),
    };
    assert_eq!(call.feed(quiet), []);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        brainless_end(end(EndReason::IncompatibleMedia, EndedBy::Engine))
    );
}

/// `srtp: required` and an answer without a usable key: the engine hangs up (BYE after the
/// ACK) as `srtp_unavailable`; no media ran, no brain started.
#[test]
fn an_answer_without_a_required_srtp_key_hangs_up_as_srtp_unavailable() {
    let mut call = Call::ringing();
    call.feed(Input::Answered {
        sdp: Some(SDP.to_vec()),
    });
    assert_eq!(
        call.feed(Input::Media(MediaOutcome::NoKey)),
        [Action::HangUp]
    );
    assert_eq!(call.machine.poll_timeout(), None);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        brainless_end(end(EndReason::SrtpUnavailable, EndedBy::Engine))
    );
}

/// `srtp: required`, and the far end refuses our `RTP/SAVP` offer (488, as a callee without
/// SRTP does): `srtp_unavailable`, by the trunk (as any 488), with the SIP status.
#[test]
fn a_refused_savp_offer_under_required_srtp_fails_as_srtp_unavailable() {
    for (required, reason) in [
        (true, EndReason::SrtpUnavailable),
        (false, EndReason::IncompatibleMedia),
    ] {
        let mut call = Call::queued();
        call.machine = CallMachine::new(CallSettings {
            dispatched: call.dispatched,
            queue_timeout: QUEUE_TIMEOUT,
            max_duration: MAX_DURATION,
            mask_dtmf: false,
            srtp_required: required,
            wallclock: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600),
        });
        call.feed(Input::Admitted);
        call.feed(Input::Placed);
        call.feed(attempt("first@sip"));
        assert_eq!(
            call.feed(failed(Some(488), SipEndReason::IncompatibleMedia)),
            unanswered_end(CallStatus::Failed, end(reason, EndedBy::Trunk), Some(488))
        );
    }
}

/// Early media without a required key is not started, and waits for the answer.
#[test]
fn early_sdp_without_a_required_srtp_key_starts_nothing() {
    let mut call = Call::dialing();
    call.feed(Input::EarlyMedia { sdp: SDP.to_vec() });
    assert_eq!(call.feed(Input::Media(MediaOutcome::NoKey)), []);
    // A 2xx without SDP after it refuses the same way.
    assert_eq!(
        call.feed(Input::Answered { sdp: None }),
        [Action::ConnectMedia { sdp: None }]
    );
    assert_eq!(
        call.feed(Input::Media(MediaOutcome::NoKey)),
        [Action::HangUp]
    );
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        brainless_end(end(EndReason::SrtpUnavailable, EndedBy::Engine))
    );
}

#[test]
fn unusable_early_sdp_is_ignored_and_the_next_183_tries_again() {
    let mut call = Call::dialing();
    let early = Input::EarlyMedia { sdp: SDP.to_vec() };
    call.feed(early.clone());
    assert_eq!(call.feed(Input::Media(MediaOutcome::Unusable)), []);
    assert_eq!(
        call.feed(early.clone()),
        [Action::StartEarlyMedia { sdp: SDP.to_vec() }]
    );
    assert_eq!(call.feed(Input::Media(MediaOutcome::Started)), []);
    // Early media runs: another 183 changes nothing.
    assert_eq!(call.feed(early), []);
}

#[test]
fn a_2xx_without_sdp_connects_the_early_media() {
    let mut call = Call::dialing();
    call.feed(Input::EarlyMedia { sdp: SDP.to_vec() });
    call.feed(Input::Media(MediaOutcome::Started));
    assert_eq!(
        call.feed(Input::Answered { sdp: None }),
        [Action::ConnectMedia { sdp: None }]
    );
    assert_eq!(
        call.feed(Input::Media(MediaOutcome::Started)),
        [
            Action::StartBrain,
            Action::Measure(Measure::Setup(Duration::ZERO)),
            record(CallStatus::InProgress),
        ]
    );
}

#[test]
fn early_media_that_ends_in_a_failure_goes_on_the_record() {
    // An announcement, then 404: the media is stopped (its statistics go on the record).
    let mut call = Call::dialing();
    call.feed(Input::EarlyMedia { sdp: SDP.to_vec() });
    call.feed(Input::Media(MediaOutcome::Started));
    assert_eq!(
        call.feed(failed(Some(404), SipEndReason::NotFound)),
        unanswered_end(
            CallStatus::Failed,
            end(EndReason::NotFound, EndedBy::Trunk),
            Some(404)
        )
    );
}

#[test]
fn re_offers_are_answered_without_a_status_step() {
    let mut call = Call::in_progress();
    for sdp in [Some(SDP.to_vec()), None] {
        assert_eq!(
            call.feed(Input::RemoteOffer { sdp: sdp.clone() }),
            [Action::AnswerRemoteOffer { sdp }]
        );
    }
    assert!(!call.machine.is_over());
}

#[test]
fn digits_go_to_the_brain_and_the_brains_digits_go_out() {
    let mut call = Call::in_progress();
    assert_eq!(call.feed(Input::Dtmf('5')), [Action::TellBrainDtmf('5')]);
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::SendDtmf("12#".into()))),
        [Action::SendDtmf("12#".into())]
    );
    assert_eq!(call.feed(Input::FarEndBye), []);
}

#[test]
fn hang_up_by_api_while_queued_cancels_without_dialling() {
    let mut call = Call::queued();
    assert_eq!(
        call.feed(Input::HangUp(HangUp::Api)),
        unplaced_end(CallStatus::Canceled, end(EndReason::Canceled, EndedBy::Api))
    );
    assert!(call.machine.is_over());
    assert_eq!(call.machine.poll_timeout(), None);
}

#[test]
fn hang_up_by_api_while_being_placed_goes_out_once_placed() {
    let mut call = Call::queued();
    call.feed(Input::Admitted);
    assert_eq!(call.feed(Input::HangUp(HangUp::Api)), []);
    assert_eq!(call.feed(Input::Placed), [Action::HangUp]);
    call.feed(attempt("x@sip"));
    assert_eq!(
        call.feed(failed(Some(487), SipEndReason::Canceled)),
        unanswered_end(
            CallStatus::Canceled,
            end(EndReason::Canceled, EndedBy::Api),
            Some(487)
        )
    );
}

#[test]
fn hang_up_by_api_while_dialing_or_ringing_cancels_as_canceled_by_api() {
    for mut call in [Call::dialing(), Call::ringing()] {
        assert_eq!(call.feed(Input::HangUp(HangUp::Api)), [Action::HangUp]);
        assert_eq!(
            call.feed(failed(Some(487), SipEndReason::Canceled)),
            unanswered_end(
                CallStatus::Canceled,
                end(EndReason::Canceled, EndedBy::Api),
                Some(487)
            )
        );
    }
}

#[test]
fn hang_up_by_api_racing_a_final_response_is_still_the_apis() {
    // The CANCEL crossed a 486: the API asked first, so the record says so.
    let mut call = Call::ringing();
    call.feed(Input::HangUp(HangUp::Api));
    assert_eq!(
        call.feed(failed(Some(486), SipEndReason::Busy)),
        unanswered_end(
            CallStatus::Canceled,
            end(EndReason::Canceled, EndedBy::Api),
            Some(486)
        )
    );
}

#[test]
fn hang_up_by_api_in_progress_sends_bye_and_completes_by_api() {
    let mut call = Call::in_progress();
    call.wait(Duration::from_secs(3));
    assert_eq!(call.feed(Input::HangUp(HangUp::Api)), [Action::HangUp]);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::Completed, EndedBy::Api))
    );
}

#[test]
fn hang_up_by_api_wins_over_a_local_cause() {
    let mut call = Call::in_progress();
    call.feed(Input::Brain(BrainRequest::HangUp {
        reason: EndReason::AgentHangup,
    }));
    call.feed(Input::HangUp(HangUp::Api));
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::Completed, EndedBy::Api))
    );
}

#[test]
fn the_last_local_cause_is_the_one_recorded() {
    let mut call = Call::in_progress();
    assert_eq!(call.run_to_deadline(), [Action::HangUp]);
    assert_eq!(call.feed(Input::HangUp(HangUp::Shutdown)), [Action::HangUp]);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::EngineShutdown, EndedBy::Engine))
    );
}

#[test]
fn the_callee_hanging_up_first_is_the_callees_end_whatever_we_asked() {
    let mut call = Call::in_progress();
    call.feed(Input::HangUp(HangUp::Api));
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed)),
        answered_end(end(EndReason::Completed, EndedBy::Callee))
    );
}

#[test]
fn a_local_end_with_no_cause_of_ours_is_the_agents() {
    // The SIP stack ended the call itself (the session timer ran out, say).
    let mut call = Call::in_progress();
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::SessionExpired)),
        answered_end(end(EndReason::SessionExpired, EndedBy::Agent))
    );
}

#[test]
fn engine_shutdown_ends_the_call_in_every_state() {
    let shutdown = Input::HangUp(HangUp::Shutdown);
    let how = end(EndReason::EngineShutdown, EndedBy::Engine);

    let mut queued = Call::queued();
    assert_eq!(
        queued.feed(shutdown.clone()),
        unplaced_end(CallStatus::Failed, how)
    );

    let mut placing = Call::queued();
    placing.feed(Input::Admitted);
    assert_eq!(placing.feed(shutdown.clone()), []);
    assert_eq!(placing.feed(Input::Placed), [Action::HangUp]);
    assert_eq!(
        placing.feed(failed(Some(487), SipEndReason::Canceled)),
        unanswered_end(CallStatus::Failed, how, Some(487))
    );

    for mut call in [Call::dialing(), Call::ringing()] {
        assert_eq!(call.feed(shutdown.clone()), [Action::HangUp]);
        assert_eq!(
            call.feed(failed(Some(487), SipEndReason::Canceled)),
            unanswered_end(CallStatus::Failed, how, Some(487))
        );
    }

    let mut in_progress = Call::in_progress();
    assert_eq!(in_progress.feed(shutdown), [Action::HangUp]);
    assert_eq!(
        in_progress.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(how)
    );
}

#[test]
fn steps_only_move_forward_and_each_is_recorded_once() {
    let mut call = Call::dialing();
    // A failover attempt: measured, but the call is dialing already.
    assert_eq!(
        call.feed(attempt("second@sip")),
        [Action::Measure(Measure::DispatchToInvite(Duration::ZERO))]
    );
    assert_eq!(call.feed(Input::Ringing), [record(CallStatus::Ringing)]);
    assert_eq!(call.feed(Input::Ringing), []);
    call.answer();
    // A late 180 or 183 after the answer records nothing (and starts no early media).
    assert_eq!(call.feed(Input::Ringing), []);
    assert_eq!(call.feed(Input::EarlyMedia { sdp: SDP.to_vec() }), []);
    call.feed(ended(Party::Remote, SipEndReason::Completed));
    // Over: nothing more happens, whatever comes.
    for late in [
        Input::Ringing,
        Input::HangUp(HangUp::Api),
        Input::HangUp(HangUp::Shutdown),
        failed(Some(487), SipEndReason::Canceled),
        ended(Party::Local, SipEndReason::Completed),
        Input::Brain(BrainRequest::HangUp {
            reason: EndReason::AgentHangup,
        }),
    ] {
        assert_eq!(call.feed(late), []);
    }
}

#[test]
fn the_brain_hears_the_end_and_the_media_stops_before_the_final_step_is_written() {
    let mut call = Call::in_progress();
    let actions = call.feed(ended(Party::Remote, SipEndReason::Completed));
    let at = |wanted: fn(&Action) -> bool| actions.iter().position(wanted);
    let told = at(|a| matches!(a, Action::TellBrainEnded(_)));
    let stopped = at(|a| matches!(a, Action::StopMedia));
    let written = at(|a| matches!(a, Action::Record(step) if step.status.is_final()));
    assert!(told < stopped && stopped < written, "{actions:?}");
    // The final step is the last thing done.
    assert_eq!(written, Some(actions.len() - 1));
}

#[test]
fn the_brain_starts_before_in_progress_is_written() {
    let mut call = Call::ringing();
    call.feed(Input::Answered { sdp: None });
    let actions = call.feed(Input::Media(MediaOutcome::Started));
    assert_eq!(actions.first(), Some(&Action::StartBrain));
    assert_eq!(actions.last(), Some(&record(CallStatus::InProgress)));
}

#[test]
fn digits_pressed_during_early_media_wait_for_the_brain() {
    let mut call = Call::dialing();
    call.feed(Input::EarlyMedia { sdp: SDP.to_vec() });
    call.feed(Input::Media(MediaOutcome::Started));
    assert_eq!(call.feed(Input::Dtmf('9')), [Action::TellBrainDtmf('9')]);
}

#[test]
fn the_user_agents_and_the_medias_events_become_inputs() {
    use dialtone_sip_ua::{CallEvent, UaEvent};
    let sdp = Some(SDP.to_vec());
    assert_eq!(
        Input::from_ua(UaEvent::Attempt {
            sip_call_id: "c".into(),
            target: ([127, 0, 0, 1], 5060).into(),
        }),
        Some(attempt("c"))
    );
    assert_eq!(
        Input::from_ua(UaEvent::Call(CallEvent::Ringing { status: 180 })),
        Some(Input::Ringing)
    );
    assert_eq!(
        Input::from_ua(UaEvent::Call(CallEvent::Answered { sdp: sdp.clone() })),
        Some(Input::Answered { sdp })
    );
    assert_eq!(
        Input::from_ua(UaEvent::Call(CallEvent::Failed {
            status: Some(486),
            reason: SipEndReason::Busy
        })),
        Some(failed(Some(486), SipEndReason::Busy))
    );
    assert_eq!(Input::from_ua(UaEvent::Call(CallEvent::Trying)), None);

    use dialtone_media::MediaEvent;
    use dialtone_rtp::DtmfEvent;
    let at = Instant::now();
    let pressed = |event| MediaEvent::Dtmf { event, at };
    assert_eq!(
        Input::from_media(pressed(DtmfEvent::Started { digit: '4' })),
        None
    );
    assert_eq!(
        Input::from_media(pressed(DtmfEvent::Ended {
            digit: '4',
            duration: Duration::from_millis(100)
        })),
        Some(Input::Dtmf('4'))
    );
    assert_eq!(
        Input::from_media(MediaEvent::FarEndBye),
        Some(Input::FarEndBye)
    );
}

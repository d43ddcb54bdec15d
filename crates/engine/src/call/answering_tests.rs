//! The call machine for a call placed to us, on a virtual clock: recorded `ringing` and
//! answered at once, the brain started at the caller's ACK, ended by the caller (BYE, or CANCEL
//! before the answer), by the API while ringing, and by the agent's maximum duration.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use dialtone_sip_ua::{EndReason as SipEndReason, Party};
use dialtone_storage::{CallStatus, EndReason, EndedBy};

use super::action::{Action, End, Measure, Step};
use super::input::{HangUp, Input, MediaOutcome};
use super::machine::{CallMachine, CallSettings};

const MAX_DURATION: Duration = Duration::from_secs(600);

struct Answering {
    machine: CallMachine,
    arrived: Instant,
    now: Instant,
}

impl Answering {
    /// A call placed to us, routed and written: it is recorded ringing and answered.
    fn new() -> Self {
        let arrived = Instant::now();
        let machine = CallMachine::answering(
            CallSettings {
                dispatched: arrived,
                queue_timeout: Duration::from_secs(30),
                max_duration: MAX_DURATION,
                mask_dtmf: false,
                srtp_required: false,
                wallclock: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600),
            },
            "in-1@sip".into(),
        );
        let mut call = Self {
            machine,
            arrived,
            now: arrived,
        };
        assert!(!call.machine.waits_for_admission());
        assert_eq!(
            call.actions(),
            [
                Action::Record(Step {
                    sip_call_id: Some("in-1@sip".into()),
                    ..Step::to(CallStatus::Ringing)
                }),
                Action::Accept,
            ]
        );
        assert_eq!(call.machine.poll_timeout(), None, "no queue timeout");
        call
    }

    /// The caller's ACK: the media (ready since the answer) is connected, the brain starts.
    fn acknowledged(&mut self) {
        self.now += Duration::from_millis(40);
        assert_eq!(
            self.feed(Input::Answered { sdp: None }),
            [Action::ConnectMedia { sdp: None }]
        );
        assert_eq!(
            self.feed(Input::Media(MediaOutcome::Started)),
            [
                Action::StartBrain,
                Action::Measure(Measure::Setup(self.now - self.arrived)),
                Action::Record(Step::to(CallStatus::InProgress)),
            ]
        );
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        self.machine.handle(self.now, input);
        self.actions()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.machine.poll_action()).collect()
    }
}

fn ended(status: CallStatus, end: End) -> Action {
    Action::Record(Step::ended(status, end))
}

#[test]
fn the_caller_hanging_up_completes_the_call_ended_by_the_caller() {
    let mut call = Answering::new();
    call.acknowledged();
    let by_caller = End::new(EndReason::Completed, EndedBy::Caller);
    assert_eq!(
        call.feed(Input::Ended {
            by: Party::Remote,
            reason: SipEndReason::Completed
        }),
        [
            Action::TellBrainEnded(by_caller),
            Action::StopMedia,
            Action::Measure(Measure::Ended {
                status: CallStatus::Completed,
                reason: EndReason::Completed
            }),
            Action::Measure(Measure::MediaHealth),
            ended(CallStatus::Completed, by_caller),
        ]
    );
    assert!(call.machine.is_over());
}

#[test]
fn a_cancel_before_the_answer_is_canceled_by_the_caller() {
    let mut call = Answering::new();
    let by_caller = End::new(EndReason::Canceled, EndedBy::Caller);
    assert_eq!(
        call.feed(Input::Failed {
            sip_status: Some(487),
            reason: SipEndReason::Canceled
        }),
        [
            Action::StopMedia,
            Action::Measure(Measure::Ended {
                status: CallStatus::Canceled,
                reason: EndReason::Canceled
            }),
            Action::Record(Step::ended(CallStatus::Canceled, by_caller).with_sip_status(Some(487))),
        ]
    );
}

#[test]
fn an_api_hang_up_while_ringing_refuses_the_call_as_canceled_by_the_api() {
    let mut call = Answering::new();
    assert_eq!(call.feed(Input::HangUp(HangUp::Api)), [Action::HangUp]);
    let actions = call.feed(Input::Failed {
        sip_status: Some(480),
        reason: SipEndReason::Unavailable,
    });
    assert_eq!(
        actions.last(),
        Some(&Action::Record(
            Step::ended(
                CallStatus::Canceled,
                End::new(EndReason::Canceled, EndedBy::Api)
            )
            .with_sip_status(Some(480))
        ))
    );
}

#[test]
fn an_answered_call_is_hung_up_at_the_agents_maximum_duration() {
    let mut call = Answering::new();
    call.acknowledged();
    let deadline = call.machine.poll_timeout().unwrap();
    assert_eq!(deadline, call.now + MAX_DURATION);
    call.now = deadline;
    call.machine.handle_timeout(call.now);
    assert_eq!(call.actions(), [Action::HangUp]);
    let actions = call.feed(Input::Ended {
        by: Party::Local,
        reason: SipEndReason::Completed,
    });
    assert_eq!(
        actions.last(),
        Some(&ended(
            CallStatus::Completed,
            End::new(EndReason::MaxDuration, EndedBy::Engine)
        ))
    );
}

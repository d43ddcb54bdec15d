//! Bridged transfers on the call machine's virtual clock: every outcome — answered and
//! relayed, then either side hanging up or the destination's RTP timing out; busy; no answer by
//! the ring timeout; not placed; an unusable answer or a relay not set; the leg ending before
//! its answer; the call ending, or hung up by us, while the destination rings — and digits
//! relayed both ways, the destination's re-offers answered, the brain muted while bridged and
//! its requests answered, the refusals (a SIP URI, one under way), the outcome counted once, and
//! the second leg's caller ID.

use std::time::Duration;

use dialtone_model::{BridgeLeg, Transfer, TransferFailure, TransferMode, TransferStatus};
use dialtone_sip_ua::{EndReason as SipEndReason, Party};
use dialtone_storage::{EndReason, EndedBy};

use super::action::{Action, Measure, transfer_outcome};
use super::bridge::{BRIDGE_RING_TIMEOUT, leg_caller_id};
use super::input::{Input, LegInput, MediaOutcome};
use super::tests::{Call, answered_end, end, ended};
use super::transfer::TransferRefusal;
use crate::brains::BrainRequest;

const NUMBER: &str = "+15550002222";
const LEG_ID: &str = "leg2@127.0.0.1";

fn bridge_to(to: &str) -> Input {
    Input::Transfer {
        to: to.into(),
        mode: Some(TransferMode::Bridge),
    }
}

fn attempt(status: TransferStatus, leg: Option<BridgeLeg>) -> Transfer {
    Transfer {
        to: NUMBER.into(),
        mode: TransferMode::Bridge,
        status,
        sip_status: None,
        reason: None,
        bridge: leg,
    }
}

fn leg(answered_at: Option<&str>, duration_ms: Option<u64>) -> Option<BridgeLeg> {
    Some(BridgeLeg {
        sip_call_id: Some(LEG_ID.into()),
        answered_at: answered_at.map(str::to_owned),
        duration_ms,
    })
}

fn recorded(transfer: Transfer) -> Action {
    Action::RecordTransfer {
        transfer,
        transferred_to: None,
    }
}

fn failure(sip_status: Option<u16>, reason: TransferFailure, leg: Option<BridgeLeg>) -> Transfer {
    Transfer {
        sip_status,
        reason: Some(reason),
        ..attempt(TransferStatus::Failed, leg)
    }
}

/// A failed attempt: the leg hung up, the caller back with the brain, which is told.
fn given_back(transfer: Transfer) -> Vec<Action> {
    vec![
        Action::HangUpLeg,
        Action::ReturnCaller,
        recorded(transfer.clone()),
        Action::TellBrainTransferFailed(transfer),
    ]
}

/// A call in progress 5 s after its dispatch (2026-01-01T00:00:00Z) whose bridged transfer
/// to [`NUMBER`] the API started: the caller hears ringback, the leg is dialled and its
/// INVITE is out.
fn dialing() -> Call {
    let mut call = Call::in_progress();
    call.wait(Duration::from_secs(5));
    assert_eq!(
        call.feed(bridge_to(NUMBER)),
        [
            recorded(attempt(TransferStatus::Pending, None)),
            Action::AnswerTransfer {
                to: NUMBER.into(),
                by: EndedBy::Api,
                result: Ok(()),
            },
            Action::HoldCaller,
            Action::DialLeg { to: NUMBER.into() },
        ]
    );
    assert_eq!(call.feed(Input::Leg(LegInput::Placed)), []);
    assert_eq!(
        call.feed(Input::Leg(LegInput::Attempt {
            sip_call_id: LEG_ID.into()
        })),
        [recorded(attempt(TransferStatus::Pending, leg(None, None)))]
    );
    call
}

/// [`dialing`], then the destination answers 2 s later and the legs are relayed.
fn bridged() -> Call {
    let mut call = dialing();
    call.wait(Duration::from_secs(2));
    assert_eq!(
        call.feed(Input::Leg(LegInput::Answered {
            sdp: Some(b"v=0".to_vec())
        })),
        [Action::ConnectLeg {
            sdp: Some(b"v=0".to_vec())
        }]
    );
    let completed = Transfer {
        sip_status: Some(200),
        ..attempt(
            TransferStatus::Completed,
            leg(Some("2026-01-01T00:00:07Z"), None),
        )
    };
    assert_eq!(
        call.feed(Input::Leg(LegInput::Media(MediaOutcome::Started))),
        [Action::RelayLegs]
    );
    assert_eq!(
        call.feed(Input::Leg(LegInput::Relayed(true))),
        [Action::RecordTransfer {
            transfer: completed,
            transferred_to: Some(NUMBER.into()),
        }]
    );
    call
}

/// The bridge's last record: completed, answered at 7 s, bridged for `ms`.
fn bridged_for(ms: u64) -> Action {
    recorded(Transfer {
        sip_status: Some(200),
        ..attempt(
            TransferStatus::Completed,
            leg(Some("2026-01-01T00:00:07Z"), Some(ms)),
        )
    })
}

#[test]
fn the_destination_hanging_up_ends_the_callers_leg_as_transferred() {
    let mut call = bridged();
    call.wait(Duration::from_secs(42));
    assert_eq!(
        call.feed(Input::Leg(LegInput::Ended)),
        [bridged_for(42_000), Action::HangUp]
    );
    let how = end(EndReason::Transferred, EndedBy::Api);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(how)
    );
}

#[test]
fn the_caller_hanging_up_ends_the_destinations_leg() {
    let mut call = bridged();
    call.wait(Duration::from_secs(3));
    let mut expected = vec![bridged_for(3_000), Action::HangUpLeg];
    expected.extend(answered_end(end(EndReason::Transferred, EndedBy::Api)));
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed)),
        expected
    );
}

#[test]
fn a_busy_destination_gives_the_caller_back_to_the_agent() {
    let mut call = dialing();
    assert_eq!(
        call.feed(Input::Leg(LegInput::Failed {
            sip_status: Some(486),
            reason: SipEndReason::Busy,
        })),
        given_back(failure(
            Some(486),
            TransferFailure::DestinationFailed,
            leg(None, None)
        ))
    );
    // The brain has the call again: its requests count, a new transfer may start.
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::SendDtmf("1".into()))),
        [Action::SendDtmf("1".into())]
    );
    assert_eq!(call.feed(Input::Dtmf('5')), [Action::TellBrainDtmf('5')]);
    assert!(matches!(
        call.feed(bridge_to(NUMBER)).get(1),
        Some(Action::AnswerTransfer { result: Ok(()), .. })
    ));
}

#[test]
fn no_answer_by_the_ring_timeout_cancels_the_leg_and_tells_the_brain() {
    let mut call = dialing();
    let started = call.now;
    assert_eq!(
        call.run_to_deadline(),
        given_back(failure(None, TransferFailure::Timeout, leg(None, None)))
    );
    assert_eq!(call.now - started, BRIDGE_RING_TIMEOUT);
    // The leg's 487 after the CANCEL changes nothing.
    assert_eq!(
        call.feed(Input::Leg(LegInput::Failed {
            sip_status: Some(487),
            reason: SipEndReason::Canceled,
        })),
        []
    );
    // The user agent's own ring timeout says the same.
    let mut call = dialing();
    assert_eq!(
        call.feed(Input::Leg(LegInput::Failed {
            sip_status: None,
            reason: SipEndReason::NoAnswer,
        })),
        given_back(failure(None, TransferFailure::Timeout, leg(None, None)))
    );
}

#[test]
fn a_leg_not_placed_or_with_unusable_media_fails_back_to_the_agent() {
    let mut call = Call::in_progress();
    call.feed(bridge_to(NUMBER));
    assert_eq!(
        call.feed(Input::Leg(LegInput::NotPlaced)),
        given_back(Transfer {
            reason: Some(TransferFailure::Unavailable),
            ..attempt(TransferStatus::Failed, None)
        })
    );
    let mut call = dialing();
    call.feed(Input::Leg(LegInput::Answered { sdp: None }));
    assert_eq!(
        call.feed(Input::Leg(LegInput::Media(MediaOutcome::Unusable))),
        given_back(failure(
            None,
            TransferFailure::DestinationFailed,
            leg(None, None)
        ))
    );
}

#[test]
fn the_call_ending_while_the_destination_rings_cancels_the_leg() {
    let mut call = dialing();
    let mut expected = vec![
        recorded(failure(None, TransferFailure::CallEnded, leg(None, None))),
        Action::HangUpLeg,
    ];
    // Not transferred: the caller hung up on the ringback.
    expected.extend(answered_end(end(EndReason::Completed, EndedBy::Callee)));
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed)),
        expected
    );
}

#[test]
fn bridged_digits_are_relayed_both_ways_and_the_brain_is_muted() {
    let mut call = bridged();
    assert_eq!(call.feed(Input::Dtmf('7')), [Action::SendLegDtmf('7')]);
    assert_eq!(
        call.feed(Input::Leg(LegInput::Dtmf('#'))),
        [Action::SendDtmf("#".into())]
    );
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::HangUp {
            reason: EndReason::Completed
        })),
        []
    );
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::SendDtmf("1".into()))),
        []
    );
    // A hang-up by the API ends both legs, the call as transferred.
    assert_eq!(
        call.feed(Input::HangUp(super::input::HangUp::Api)),
        [Action::HangUp]
    );
    let actions = call.feed(ended(Party::Local, SipEndReason::Completed));
    assert_eq!(actions.get(1), Some(&Action::HangUpLeg));
    assert!(actions.contains(&Action::Measure(Measure::Ended {
        status: dialtone_storage::CallStatus::Completed,
        reason: EndReason::Transferred,
    })));
}

#[test]
fn a_sip_destination_and_a_second_transfer_are_refused() {
    let mut call = Call::in_progress();
    let actions = call.feed(bridge_to("sip:desk@sip.trunk.example"));
    let [
        Action::AnswerTransfer {
            result: Err(TransferRefusal::Invalid(e)),
            ..
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(e.field, "to");
    let mut call = dialing();
    let actions = call.feed(Input::Transfer {
        to: NUMBER.into(),
        mode: Some(TransferMode::Refer),
    });
    assert!(
        matches!(
            actions.as_slice(),
            [Action::AnswerTransfer {
                result: Err(TransferRefusal::UnderWay),
                ..
            }]
        ),
        "{actions:?}"
    );
}

#[test]
fn a_second_leg_is_dialled_from_our_own_number() {
    use dialtone_model::Direction;
    // We placed the call: it is from our number.
    assert_eq!(
        leg_caller_id(Direction::Outbound, "+15550001111", NUMBER),
        "+15550001111"
    );
    // It was placed to us: our number is the one called, never the caller's (anonymous here).
    assert_eq!(
        leg_caller_id(Direction::Inbound, "anonymous", "+15550003333"),
        "+15550003333"
    );
}

/// The outcomes `dialtone_transfers_total` counts for `actions`.
fn counted(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::RecordTransfer {
                transfer,
                transferred_to,
            } => transfer_outcome(transfer, transferred_to.as_deref()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_bridge_counts_its_outcome_once() {
    let mut call = dialing();
    let mut actions = call.feed(Input::Leg(LegInput::Answered { sdp: None }));
    actions.extend(call.feed(Input::Leg(LegInput::Media(MediaOutcome::Started))));
    actions.extend(call.feed(Input::Leg(LegInput::Relayed(true))));
    call.wait(Duration::from_secs(9));
    actions.extend(call.feed(Input::Leg(LegInput::Ended)));
    actions.extend(call.feed(ended(Party::Local, SipEndReason::Completed)));
    assert_eq!(counted(&actions), ["completed"]);
    // A failed one counts its reason, once.
    let mut call = dialing();
    let mut actions = call.run_to_deadline();
    actions.extend(call.feed(ended(Party::Remote, SipEndReason::Completed)));
    assert_eq!(counted(&actions), ["timeout"]);
}

#[test]
fn a_destination_gone_silent_ends_both_legs_as_transferred() {
    let mut call = bridged();
    call.wait(Duration::from_secs(20));
    assert_eq!(
        call.feed(Input::Leg(LegInput::RtpTimeout {
            silent_for: Duration::from_secs(15)
        })),
        [bridged_for(20_000), Action::HangUpLeg, Action::HangUp]
    );
    let how = end(EndReason::Transferred, EndedBy::Api);
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(how)
    );
    // The driver maps the leg's media event to it.
    assert_eq!(
        LegInput::from_media(dialtone_media::MediaEvent::RtpTimeout {
            silent_for: Duration::from_secs(15)
        }),
        Some(LegInput::RtpTimeout {
            silent_for: Duration::from_secs(15)
        })
    );
}

#[test]
fn a_leg_ending_while_it_rings_gives_the_caller_back_at_once() {
    let mut call = dialing();
    call.wait(Duration::from_secs(1));
    assert_eq!(
        call.feed(Input::Leg(LegInput::Ended)),
        given_back(failure(
            None,
            TransferFailure::DestinationFailed,
            leg(None, None)
        ))
    );
    // No ringback clock left: the call is the agent's again.
    assert_eq!(call.run_to_deadline().first(), Some(&Action::HangUp));
}

#[test]
fn a_local_hang_up_while_the_destination_rings_cancels_the_leg_at_once() {
    let canceled = [
        Action::HangUpLeg,
        recorded(failure(None, TransferFailure::CallEnded, leg(None, None))),
        Action::HangUp,
    ];
    // By the API.
    let mut call = dialing();
    assert_eq!(
        call.feed(Input::HangUp(super::input::HangUp::Api)),
        canceled
    );
    // Its 200 after the CANCEL is too late: the leg is not bridged to a dying call.
    assert_eq!(
        call.feed(Input::Leg(LegInput::Answered { sdp: None })),
        [Action::HangUpLeg]
    );
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::Completed, EndedBy::Api))
    );
    // By the engine: the caller's RTP timeout, while the destination's answer connects.
    let mut call = dialing();
    call.feed(Input::Leg(LegInput::Answered { sdp: None }));
    assert_eq!(
        call.feed(Input::RtpTimeout {
            silent_for: Duration::from_secs(15)
        }),
        canceled
    );
    assert_eq!(
        call.feed(Input::Leg(LegInput::Media(MediaOutcome::Started))),
        []
    );
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::RtpTimeout, EndedBy::Engine))
    );
}

#[test]
fn the_brains_requests_during_a_bridge_are_answered_not_dropped() {
    // A transfer is refused as under way: the brain hears it failed.
    let mut call = dialing();
    let actions = call.feed(Input::Brain(BrainRequest::Transfer {
        to: "+15550004444".into(),
        mode: None,
    }));
    assert_eq!(
        actions,
        [Action::AnswerTransfer {
            to: "+15550004444".into(),
            by: EndedBy::Agent,
            result: Err(TransferRefusal::UnderWay),
        }]
    );
    // Its digits are not sent to a caller who waits for the destination.
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::SendDtmf("1".into()))),
        []
    );
    // Its silence guard does not end a caller's wait on ringback.
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::HangUp {
            reason: EndReason::SilenceTimeout
        })),
        []
    );
    // Its hang-up while the destination rings is honoured at once, the leg canceled.
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::HangUp {
            reason: EndReason::Completed
        })),
        [
            Action::HangUpLeg,
            recorded(failure(None, TransferFailure::CallEnded, leg(None, None))),
            Action::HangUp,
        ]
    );
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::Completed, EndedBy::Agent))
    );
    // Bridged, a transfer is refused as under way too.
    let mut call = bridged();
    assert!(matches!(
        call.feed(Input::Brain(BrainRequest::Transfer {
            to: NUMBER.into(),
            mode: None,
        }))
        .as_slice(),
        [Action::AnswerTransfer {
            result: Err(TransferRefusal::UnderWay),
            ..
        }]
    ));
}

#[test]
fn the_destinations_re_offers_are_answered_like_the_callers() {
    let mut call = bridged();
    let offer = Some(b"v=0 (hold)".to_vec());
    assert_eq!(
        call.feed(Input::Leg(LegInput::RemoteOffer { sdp: offer.clone() })),
        [Action::AnswerLegOffer { sdp: offer }]
    );
    // A session refresh without SDP too; the bridge goes on.
    assert_eq!(
        call.feed(Input::Leg(LegInput::RemoteOffer { sdp: None })),
        [Action::AnswerLegOffer { sdp: None }]
    );
    assert_eq!(call.feed(Input::Dtmf('7')), [Action::SendLegDtmf('7')]);
}

#[test]
fn a_relay_not_set_gives_the_caller_back_to_the_agent() {
    let mut call = dialing();
    call.feed(Input::Leg(LegInput::Answered { sdp: None }));
    assert_eq!(
        call.feed(Input::Leg(LegInput::Media(MediaOutcome::Started))),
        [Action::RelayLegs]
    );
    assert_eq!(
        call.feed(Input::Leg(LegInput::Relayed(false))),
        given_back(failure(
            None,
            TransferFailure::DestinationFailed,
            leg(None, None)
        ))
    );
    // The call is the agent's again: its digits go to the brain.
    assert_eq!(call.feed(Input::Dtmf('5')), [Action::TellBrainDtmf('5')]);
}

//! Transfers on the call machine's virtual clock: every outcome of a blind transfer (REFER
//! accepted and completed, refused, a failure sipfrag, no final NOTIFY in time — and one that
//! comes after all —, the far end hanging up after the 202 (the transfer going ahead) or before it), the refusals (not in progress, one under way, a destination
//! the policy forbids, a bridge to a SIP URI), and who ends a transferred call.

use dialtone_model::{
    Transfer, TransferDestination, TransferFailure, TransferMode, TransferStatus,
};
use dialtone_sip_ua::{EndReason as SipEndReason, Party};
use dialtone_storage::{CallStatus, EndReason, EndedBy};

use super::action::Action;
use super::input::Input;
use super::tests::{Call, answered_end, end, ended};
use super::transfer::{TRANSFER_TIMEOUT, TransferPolicy, TransferRefusal};
use crate::brains::BrainRequest;

const NUMBER: &str = "+15550001111";

fn policy() -> TransferPolicy {
    TransferPolicy {
        trunk_host: "sip.trunk.example".into(),
        sip_domains: vec!["pbx.example.com".into()],
        destinations: vec![TransferDestination {
            name: "desk".into(),
            to: "sip:desk@pbx.example.com".into(),
            description: String::new(),
            mode: Some(TransferMode::Bridge),
        }],
    }
}

/// A call in progress that may transfer where [`policy`] allows.
fn in_progress() -> Call {
    let mut call = Call::in_progress();
    let machine = std::mem::replace(&mut call.machine, Call::queued().machine);
    call.machine = machine.with_transfer_policy(policy());
    call
}

fn api_transfer(to: &str) -> Input {
    Input::Transfer {
        to: to.into(),
        mode: None,
    }
}

fn attempt(
    status: TransferStatus,
    sip_status: Option<u16>,
    reason: Option<TransferFailure>,
) -> Transfer {
    Transfer {
        to: NUMBER.into(),
        mode: TransferMode::Refer,
        status,
        sip_status,
        reason,
        bridge: None,
    }
}

fn recorded(transfer: Transfer) -> Action {
    Action::RecordTransfer {
        transfer,
        transferred_to: None,
    }
}

/// The transfer to [`NUMBER`] the API asked for started: the answer, the pending record, the
/// REFER.
fn started(call: &mut Call) {
    assert_eq!(
        call.feed(api_transfer(NUMBER)),
        [
            recorded(attempt(TransferStatus::Pending, None, None)),
            Action::AnswerTransfer {
                to: NUMBER.into(),
                by: EndedBy::Api,
                result: Ok(()),
            },
            Action::Refer { to: NUMBER.into() },
        ]
    );
}

/// Started and accepted with 202.
fn accepted(call: &mut Call) {
    started(call);
    assert_eq!(
        call.feed(Input::ReferAnswered { status: 202 }),
        [recorded(attempt(TransferStatus::Accepted, Some(202), None))]
    );
}

fn refused(call: &mut Call, input: Input, by: EndedBy, refusal: TransferRefusal) -> String {
    let actions = call.feed(input);
    match actions.as_slice() {
        [Action::AnswerTransfer { to, by: b, result }] => {
            assert_eq!((*b, result.clone()), (by, Err(refusal)));
            to.clone()
        }
        other => panic!("not a refusal: {other:?}"),
    }
}

fn failed_with(transfer: Transfer) -> Vec<Action> {
    vec![
        recorded(transfer.clone()),
        Action::TellBrainTransferFailed(transfer),
    ]
}

#[test]
fn accepted_then_a_2xx_sipfrag_ends_our_leg_as_transferred() {
    let mut call = in_progress();
    accepted(&mut call);
    assert_eq!(
        call.feed(Input::ReferNotify {
            status: 100,
            terminated: false
        }),
        []
    );
    assert_eq!(
        call.feed(Input::ReferNotify {
            status: 180,
            terminated: false
        }),
        []
    );
    assert_eq!(
        call.feed(Input::ReferNotify {
            status: 200,
            terminated: true
        }),
        [
            Action::RecordTransfer {
                transfer: attempt(TransferStatus::Completed, Some(200), None),
                transferred_to: Some(NUMBER.into()),
            },
            Action::HangUp,
        ]
    );
    // Our BYE is answered: the call ends, transferred by whoever asked.
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::Transferred, EndedBy::Api))
    );
}

#[test]
fn the_far_ends_bye_after_a_completed_transfer_still_ends_it_as_transferred() {
    let mut call = in_progress();
    accepted(&mut call);
    call.feed(Input::ReferNotify {
        status: 200,
        terminated: true,
    });
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed)),
        answered_end(end(EndReason::Transferred, EndedBy::Api))
    );
}

#[test]
fn a_refer_refused_with_405_leaves_the_call_with_the_brain() {
    let mut call = in_progress();
    started(&mut call);
    assert_eq!(
        call.feed(Input::ReferAnswered { status: 405 }),
        failed_with(attempt(
            TransferStatus::Failed,
            Some(405),
            Some(TransferFailure::Refused)
        ))
    );
    assert_eq!(
        call.machine.poll_timeout(),
        Some(call.now + MAX_DURATION_LEFT)
    );
    // Nothing was hung up; another transfer may start.
    started(&mut call);
    // And hanging up later ends the call normally.
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed))
            .first()
            .cloned(),
        Some(recorded(attempt(
            TransferStatus::Failed,
            None,
            Some(TransferFailure::CallEnded)
        )))
    );
}

/// The answer came at the start of these tests' calls and no time passed.
const MAX_DURATION_LEFT: std::time::Duration = std::time::Duration::from_secs(600);

#[test]
fn a_failure_sipfrag_leaves_the_call_with_the_brain() {
    let mut call = in_progress();
    accepted(&mut call);
    assert_eq!(
        call.feed(Input::ReferNotify {
            status: 486,
            terminated: true
        }),
        failed_with(attempt(
            TransferStatus::Failed,
            Some(486),
            Some(TransferFailure::DestinationFailed)
        ))
    );
    // The call goes on: the agent hangs up later, as it would have.
    assert_eq!(
        call.feed(Input::Brain(BrainRequest::HangUp {
            reason: EndReason::Completed
        })),
        [Action::HangUp]
    );
    assert_eq!(
        call.feed(ended(Party::Local, SipEndReason::Completed)),
        answered_end(end(EndReason::Completed, EndedBy::Agent))
    );
}

#[test]
fn no_final_notify_within_the_timeout_fails_the_transfer() {
    let mut call = in_progress();
    accepted(&mut call);
    let accepted_at = call.now;
    call.wait(std::time::Duration::from_secs(5));
    call.feed(Input::ReferNotify {
        status: 180,
        terminated: false,
    });
    assert_eq!(
        call.machine.poll_timeout(),
        Some(accepted_at + TRANSFER_TIMEOUT)
    );
    assert_eq!(
        call.run_to_deadline(),
        failed_with(attempt(
            TransferStatus::Failed,
            None,
            Some(TransferFailure::Timeout)
        ))
    );
    assert_eq!(call.now - accepted_at, TRANSFER_TIMEOUT);
    // Only the maximum duration is left to wait for.
    assert_eq!(
        call.machine.poll_timeout(),
        Some(accepted_at + MAX_DURATION_LEFT)
    );
}

/// A 2xx NOTIFY after the timeout told the brain the transfer failed: the caller went over
/// after all, so our leg ends as transferred; a failure NOTIFY then changes nothing.
#[test]
fn a_final_notify_after_the_timeout_still_completes_the_transfer() {
    let mut call = in_progress();
    accepted(&mut call);
    call.run_to_deadline();
    assert_eq!(
        call.feed(Input::ReferNotify {
            status: 200,
            terminated: true
        }),
        [
            Action::RecordTransfer {
                transfer: attempt(TransferStatus::Completed, Some(200), None),
                transferred_to: Some(NUMBER.into()),
            },
            Action::HangUp,
        ]
    );
    let mut refused = in_progress();
    accepted(&mut refused);
    refused.run_to_deadline();
    assert_eq!(
        refused.feed(Input::ReferNotify {
            status: 486,
            terminated: true
        }),
        []
    );
}

#[test]
fn a_subscription_ended_without_a_final_status_fails_the_transfer() {
    let mut call = in_progress();
    accepted(&mut call);
    assert_eq!(
        call.feed(Input::ReferNotify {
            status: 100,
            terminated: true
        }),
        failed_with(attempt(
            TransferStatus::Failed,
            Some(100),
            Some(TransferFailure::SubscriptionEnded)
        ))
    );
}

#[test]
fn a_notify_before_the_202_stands_for_the_acceptance() {
    let mut call = in_progress();
    started(&mut call);
    assert_eq!(
        call.feed(Input::ReferNotify {
            status: 100,
            terminated: false
        }),
        []
    );
    assert_eq!(call.feed(Input::ReferAnswered { status: 202 }), []);
    assert!(call.machine.poll_timeout().is_some());
}

#[test]
fn the_far_end_hanging_up_after_the_202_is_the_transfer_going_ahead() {
    let mut call = in_progress();
    accepted(&mut call);
    let mut expected = vec![Action::RecordTransfer {
        transfer: attempt(TransferStatus::Completed, None, None),
        transferred_to: Some(NUMBER.into()),
    }];
    expected.extend(answered_end(end(EndReason::Transferred, EndedBy::Api)));
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed)),
        expected
    );
}

#[test]
fn the_far_end_hanging_up_before_the_202_ends_the_call_and_the_attempt() {
    let mut call = in_progress();
    started(&mut call);
    let mut expected = vec![recorded(attempt(
        TransferStatus::Failed,
        None,
        Some(TransferFailure::CallEnded),
    ))];
    expected.extend(answered_end(end(EndReason::Completed, EndedBy::Callee)));
    assert_eq!(
        call.feed(ended(Party::Remote, SipEndReason::Completed)),
        expected
    );
    // And our own hang-up after the 202 is no transfer.
    let mut call = in_progress();
    accepted(&mut call);
    call.feed(Input::HangUp(super::input::HangUp::Api));
    let actions = call.feed(ended(Party::Local, SipEndReason::Completed));
    assert_eq!(
        actions.first(),
        Some(&recorded(attempt(
            TransferStatus::Failed,
            None,
            Some(TransferFailure::CallEnded)
        )))
    );
    assert!(actions.contains(&Action::TellBrainEnded(end(
        EndReason::Completed,
        EndedBy::Api
    ))));
}

#[test]
fn a_second_transfer_while_one_is_under_way_is_refused() {
    let mut call = in_progress();
    accepted(&mut call);
    refused(
        &mut call,
        api_transfer("+15550002222"),
        EndedBy::Api,
        TransferRefusal::UnderWay,
    );
}

#[test]
fn only_a_call_in_progress_is_transferred() {
    let mut call = Call::ringing();
    refused(
        &mut call,
        api_transfer(NUMBER),
        EndedBy::Api,
        TransferRefusal::NotInProgress,
    );
    let mut hanging_up = in_progress();
    hanging_up.feed(Input::HangUp(super::input::HangUp::Api));
    refused(
        &mut hanging_up,
        api_transfer(NUMBER),
        EndedBy::Api,
        TransferRefusal::NotInProgress,
    );
}

#[test]
fn sip_hosts_outside_the_allow_list_and_bridged_sip_uris_are_refused_naming_to() {
    let mut call = in_progress();
    let field = |refusal: TransferRefusal| match refusal {
        TransferRefusal::Invalid(error) => error.field,
        other => panic!("{other:?}"),
    };
    let actions = call.feed(api_transfer("sip:anyone@evil.example"));
    let [Action::AnswerTransfer { result: Err(r), .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(field(r.clone()), "to");
    assert!(
        r.message().contains("transfer_sip_domains"),
        "{}",
        r.message()
    );
    let actions = call.feed(api_transfer("not a destination"));
    let [Action::AnswerTransfer { result: Err(r), .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(field(r.clone()), "to");
    // The agent's destination is a bridge one: its mode is the default, and a bridge dials a
    // number through the trunk, not a SIP URI.
    let actions = call.feed(api_transfer("sip:desk@pbx.example.com"));
    let [Action::AnswerTransfer { result: Err(r), .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(field(r.clone()), "to");
    assert!(r.message().contains("E.164"), "{}", r.message());
    // The trunk's own host and the allowed ones take refer.
    let actions = call.feed(Input::Transfer {
        to: "sip:desk@pbx.example.com".into(),
        mode: Some(TransferMode::Refer),
    });
    assert!(matches!(
        actions.get(1),
        Some(Action::AnswerTransfer { result: Ok(()), .. })
    ));
}

#[test]
fn the_brains_transfer_that_completes_was_the_agents() {
    let mut call = in_progress();
    let actions = call.feed(Input::Brain(BrainRequest::Transfer {
        to: "sip:agent@sip.trunk.example".into(),
        mode: None,
    }));
    assert!(matches!(
        actions.get(1),
        Some(Action::AnswerTransfer {
            by: EndedBy::Agent,
            result: Ok(()),
            ..
        })
    ));
    assert_eq!(
        actions.last(),
        Some(&Action::Refer {
            to: "sip:agent@sip.trunk.example".into()
        })
    );
    call.feed(Input::ReferAnswered { status: 202 });
    call.feed(Input::ReferNotify {
        status: 200,
        terminated: true,
    });
    let end_actions = call.feed(ended(Party::Local, SipEndReason::Completed));
    assert_eq!(
        end_actions,
        answered_end(end(EndReason::Transferred, EndedBy::Agent))
    );
    assert!(matches!(
        end_actions.last(),
        Some(Action::Record(step)) if step.status == CallStatus::Completed
    ));
}

#[test]
fn a_refer_the_user_agent_could_not_send_fails_as_refused() {
    let mut call = in_progress();
    started(&mut call);
    assert_eq!(
        call.feed(Input::ReferNotSent),
        failed_with(attempt(
            TransferStatus::Failed,
            None,
            Some(TransferFailure::Refused)
        ))
    );
}

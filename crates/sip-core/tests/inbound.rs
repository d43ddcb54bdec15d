//! Calls placed to us, on a virtual clock: the INVITE server transaction (100 at once, the 2xx
//! retransmitted until the ACK, no ACK within 64·T1), ringing, answering, refusing, CANCEL
//! (and a BYE on the early dialog acting as one), BYE either way, and the budget of refusals per source.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[allow(dead_code)]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use dialtone_sip_core::refusals::RefusalBudget;
use dialtone_sip_core::{
    CallEvent, CallHandle, EndReason, EndpointConfig, IncomingCall, Party, Transport,
};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn inbound_harness() -> Harness {
    let mut config = EndpointConfig::new(LOCAL_HOST, 5060);
    config.accept_inbound = true;
    config.refusals = RefusalBudget {
        burst: 3,
        refill_every: Duration::from_secs(10),
        summary_every: Duration::from_secs(60),
        max_sources: 100,
    };
    Harness::with_config(config)
}

/// An initial INVITE from the trunk to `+15559870000`, with branch and Call-ID `n`.
fn invite(n: &str, extra: &str) -> String {
    format!(
        "INVITE sip:+15559870000@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK{n}\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:15551230000@192.0.2.20>;tag=caller{n}\r\nTo: <sip:+15559870000@192.0.2.10>\r\nCall-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@192.0.2.20:5060>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    )
}

/// A request in the dialog of incoming call `n`, from the caller.
fn from_caller(h: &Harness, n: &str, method: &str, branch: &str, cseq: u32) -> String {
    let ok = h
        .sent
        .iter()
        .find(|s| s.is_response(200) && s.header("CSeq").unwrap() == "1 INVITE")
        .or_else(|| h.sent.iter().find(|s| s.is_response(180)))
        .expect("a response with our tag");
    let to = ok.header("To").unwrap();
    let cseq_method = if method == "ACK" { "ACK" } else { method };
    format!(
        "{method} sip:dialtone@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch={branch}\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:15551230000@192.0.2.20>;tag=caller{n}\r\nTo: {to}\r\nCall-ID: call-{n}\r\nCSeq: {cseq} {cseq_method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Feeds INVITE `n` and returns the incoming call's handle and what it said.
fn incoming(h: &mut Harness, n: &str, extra: &str) -> (CallHandle, IncomingCall) {
    h.feed(&invite(n, extra));
    let event = h.events.pop().expect("an incoming call");
    match event.kind {
        CallEvent::Incoming(call) => (event.call, *call),
        other => panic!("expected an incoming call, got {other:?}"),
    }
}

/// Incoming call `n`, answered with our 200 (the caller's ACK not sent yet).
fn answered(h: &mut Harness, n: &str) -> CallHandle {
    let (call, _) = incoming(h, n, "");
    h.ep.accept(h.now, call, b"v=0\r\n".to_vec()).unwrap();
    h.collect();
    call
}

/// The events of a call `by` one side hung up, completed.
fn ended(by: Party) -> Vec<CallEvent> {
    vec![CallEvent::Ended {
        by,
        reason: EndReason::Completed,
    }]
}

fn source() -> SocketAddr {
    trunk()
}

#[test]
fn an_invite_gets_100_at_once_then_180_then_200_retransmitted_until_the_ack() {
    let mut h = inbound_harness();
    let (call, offered) = incoming(
        &mut h,
        "1",
        "P-Asserted-Identity: <sip:+15551230000@192.0.2.20>\r\n",
    );
    assert_eq!(offered.source, source());
    assert_eq!(offered.sip_call_id, "call-1");
    assert_eq!(offered.request_user.as_deref(), Some("+15559870000"));
    assert_eq!(offered.to_user.as_deref(), Some("+15559870000"));
    assert_eq!(offered.from_user.as_deref(), Some("15551230000"));
    assert_eq!(offered.asserted_user.as_deref(), Some("+15551230000"));
    assert_eq!(offered.sdp.as_deref(), Some(OFFER.as_bytes()));
    assert_eq!(h.sent.len(), 1);
    let trying = h.last_sent();
    assert!(trying.is_response(100));
    assert_eq!(trying.at, Duration::ZERO);
    assert!(!trying.header("To").unwrap().contains("tag="));
    // A retransmitted INVITE gets the last response again, and no second call.
    h.advance(secs(0.5));
    h.feed(&invite("1", ""));
    assert!(h.last_sent().is_response(100));
    assert!(h.take_events().is_empty());

    h.ep.ring(h.now, call).unwrap();
    h.collect();
    let ringing = h.last_sent();
    assert!(ringing.is_response(180));
    assert!(ringing.header("To").unwrap().contains(";tag="));
    assert!(ringing.header("Contact").is_some());

    h.ep.accept(h.now, call, b"v=0\r\n".to_vec()).unwrap();
    h.collect();
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    assert_eq!(ok.body(), "v=0\r\n");
    assert_eq!(
        ok.header("To"),
        ringing.header("To"),
        "one tag for the dialog"
    );
    assert!(ok.header("Contact").unwrap().contains("192.0.2.10:5060"));
    h.advance(secs(1.6));
    let oks = h.sent.iter().filter(|s| s.text == ok.text).count();
    assert_eq!(oks, 3, "2xx at 0, T1 and 3·T1 (Timer G) until the ACK");
    assert!(
        h.take_events().is_empty(),
        "answered only once acknowledged"
    );

    let ack = from_caller(&h, "1", "ACK", "z9hG4bKack1", 1);
    h.feed(&ack);
    assert_eq!(h.take_events(), vec![CallEvent::Answered { sdp: None }]);
    h.advance(secs(40.0));
    assert_eq!(h.sent.iter().filter(|s| s.text == ok.text).count(), 3);

    // The caller hangs up.
    let bye = from_caller(&h, "1", "BYE", "z9hG4bKbye1", 2);
    h.feed(&bye);
    assert!(h.last_sent().is_response(200));
    assert_eq!(h.take_events(), ended(Party::Remote));
}

#[test]
fn our_bye_goes_to_the_callers_contact_with_the_dialogs_tags_swapped() {
    let mut h = inbound_harness();
    let call = answered(&mut h, "2");
    let our_to = h.last_sent().header("To").unwrap();
    h.feed(&from_caller(&h, "2", "ACK", "z9hG4bKack2", 1));
    h.take_events();
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    let bye = h.last_sent();
    assert!(
        bye.text
            .starts_with("BYE sip:caller@192.0.2.20:5060 SIP/2.0")
    );
    assert_eq!(bye.destination, source());
    assert_eq!(bye.header("From").unwrap(), our_to, "our side, our tag");
    assert_eq!(
        bye.header("To").unwrap(),
        "\"Caller\" <sip:15551230000@192.0.2.20>;tag=caller2"
    );
    assert_eq!(bye.header("Call-ID").unwrap(), "call-2");
    h.reply(&bye, 200, None, "", "");
    assert_eq!(h.take_events(), ended(Party::Local));
}

#[test]
fn no_ack_within_64_t1_releases_the_call_with_a_bye() {
    let mut h = inbound_harness();
    answered(&mut h, "3");
    let ok = h.last_sent();
    h.advance(secs(40.0));
    let at: Vec<u128> = h
        .sent
        .iter()
        .filter(|s| s.text == ok.text)
        .map(|s| s.at.as_millis())
        .collect();
    // Timer G doubles from T1 up to T2 (4 s).
    assert_eq!(&at[..6], &[0, 500, 1500, 3500, 7500, 11500]);
    let byes = h.sent_requests("BYE");
    assert_eq!(byes[0].at, Duration::from_secs(32), "released at 64·T1");
    assert!(byes[0].text.starts_with("BYE sip:caller@192.0.2.20:5060 "));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TrunkTimeout
        }]
    );
}

/// RFC 3261 §15: the callee's UA must not send BYE on a confirmed dialog before the ACK of its
/// 2xx (or the INVITE's transaction timing out): hanging up before the ACK waits for it.
#[test]
fn our_bye_waits_for_the_ack_of_our_2xx() {
    let mut h = inbound_harness();
    let call = answered(&mut h, "9");
    h.ep.hang_up(h.now, call).unwrap();
    h.advance(secs(2.0));
    assert!(h.sent_requests("BYE").is_empty(), "no BYE before the ACK");
    h.feed(&from_caller(&h, "9", "ACK", "z9hG4bKack9", 1));
    let byes = h.sent_requests("BYE");
    assert_eq!(byes.len(), 1, "the BYE once the ACK came");
    assert_eq!(byes[0].at, secs(2.0));
    h.reply(&byes[0], 200, None, "", "");
    assert_eq!(h.take_events(), ended(Party::Local));
    h.advance(secs(40.0));
    assert_eq!(h.sent_requests("BYE").len(), 1, "one BYE only");
}

/// With no ACK at all, the deferred BYE goes when the INVITE's transaction times out (64·T1).
#[test]
fn a_bye_deferred_for_an_ack_that_never_comes_goes_at_64_t1() {
    let mut h = inbound_harness();
    let call = answered(&mut h, "10");
    h.ep.hang_up(h.now, call).unwrap();
    h.advance(secs(32.2));
    let byes = h.sent_requests("BYE");
    assert_eq!(byes.len(), 1, "{byes:?}");
    assert_eq!(byes[0].at, Duration::from_secs(32), "at 64·T1");
    h.reply(&byes[0], 200, None, "", "");
    assert_eq!(h.take_events(), ended(Party::Local));
}

/// We hung up before the ACK and the caller hung up too: its BYE ends the call, and ours is
/// never sent.
#[test]
fn a_callers_bye_while_ours_waits_for_the_ack_ends_the_call_without_ours() {
    let mut h = inbound_harness();
    let call = answered(&mut h, "11");
    h.ep.hang_up(h.now, call).unwrap();
    h.feed(&from_caller(&h, "11", "BYE", "z9hG4bKbye11", 2));
    assert!(h.last_sent().is_response(200));
    assert_eq!(h.take_events(), ended(Party::Remote));
    h.feed(&from_caller(&h, "11", "ACK", "z9hG4bKack11", 1));
    h.advance(secs(40.0));
    assert!(h.sent_requests("BYE").is_empty(), "no BYE of ours");
    assert!(h.take_events().is_empty());
}

#[test]
fn a_cancel_before_the_answer_gets_200_and_the_invite_487() {
    let mut h = inbound_harness();
    let (call, _) = incoming(&mut h, "4", "");
    h.ep.ring(h.now, call).unwrap();
    h.collect();
    let cancel = invite("4", "")
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("Content-Type: application/sdp\r\n", "")
        .replace(
            &format!("Content-Length: {}\r\n\r\n{OFFER}", OFFER.len()),
            "Content-Length: 0\r\n\r\n",
        );
    h.feed(&cancel);
    let n = h.sent.len();
    assert!(h.sent[n - 2].is_response(200));
    assert_eq!(h.sent[n - 2].header("CSeq").unwrap(), "1 CANCEL");
    assert!(h.sent[n - 1].is_response(487));
    assert_eq!(h.sent[n - 1].header("CSeq").unwrap(), "1 INVITE");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: Some(487),
            reason: EndReason::Canceled
        }]
    );
    assert!(h.ep.accept(h.now, call, Vec::new()).is_err());
    // The 487 is retransmitted until the ACK (Timer G), which the transaction absorbs.
    h.advance(secs(0.6));
    assert!(h.last_sent().is_response(487));
    let ack = invite("4", "")
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    h.feed(&ack);
    let after_ack = h.sent.len();
    h.advance(secs(40.0));
    assert_eq!(h.sent.len(), after_ack);
    assert_eq!(
        h.ep.call_count(),
        0,
        "forgotten once its transactions ended"
    );
}

#[test]
fn a_bye_on_the_early_dialog_acts_as_a_cancel() {
    let mut h = inbound_harness();
    let (call, _) = incoming(&mut h, "b", "");
    h.ep.ring(h.now, call).unwrap();
    h.collect();
    // RFC 3261 §15: the caller may hang up an early dialog with BYE (the 180's To tag).
    let bye = from_caller(&h, "b", "BYE", "z9hG4bKbyeb", 2);
    h.feed(&bye);
    let n = h.sent.len();
    assert!(h.sent[n - 2].is_response(200));
    assert_eq!(h.sent[n - 2].header("CSeq").unwrap(), "2 BYE");
    assert!(h.sent[n - 1].is_response(487));
    assert_eq!(h.sent[n - 1].header("CSeq").unwrap(), "1 INVITE");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: Some(487),
            reason: EndReason::Canceled
        }]
    );
    assert!(h.ep.accept(h.now, call, Vec::new()).is_err());
    let ack = invite("b", "")
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    h.feed(&ack);
    h.advance(secs(40.0));
    assert_eq!(
        h.ep.call_count(),
        0,
        "forgotten once its transactions ended"
    );
}

#[test]
fn hanging_up_an_unanswered_call_refuses_it_with_480() {
    let mut h = inbound_harness();
    let (call, _) = incoming(&mut h, "5", "");
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    assert!(h.last_sent().is_response(480));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: Some(480),
            reason: EndReason::Unavailable
        }]
    );
}

#[test]
fn refusals_are_budgeted_per_source_and_a_spent_source_is_dropped_unanswered() {
    let mut h = inbound_harness();
    // A busy answer costs the source nothing.
    let (call, _) = incoming(&mut h, "b0", "");
    h.ep.refuse(h.now, call, 486, false).unwrap();
    h.collect();
    assert!(h.last_sent().is_response(486));
    for n in 0..3 {
        let (call, _) = incoming(&mut h, &format!("s{n}"), "");
        h.ep.refuse(h.now, call, if n == 0 { 404 } else { 403 }, true)
            .unwrap();
        h.collect();
    }
    assert!(h.last_sent().is_response(403));
    h.take_events();
    let sent = h.sent.len();
    // The budget is spent: nothing is answered, nothing reported, only counted.
    for n in 0..50 {
        h.feed(&invite(&format!("flood{n}"), ""));
    }
    assert_eq!(h.sent.len(), sent);
    assert!(h.take_events().is_empty());
    assert_eq!(h.ep.stats().inbound_dropped, 50);
    assert_eq!(h.ep.stats().inbound_refused, 4);
    // Another source is served.
    let other: SocketAddr = "192.0.2.99:5060".parse().unwrap();
    let from_other =
        invite("other", "").replace("192.0.2.20:5060;branch", "192.0.2.99:5060;branch");
    h.feed_from(other, Transport::Udp, &from_other);
    assert!(h.last_sent().is_response(100));
    assert_eq!(h.last_sent().destination, other);
    // A source whose calls are rung or answered never spends its budget.
    for n in 0..10 {
        let from = invite(&format!("ok{n}"), "")
            .replace("192.0.2.20:5060;branch", "192.0.2.99:5060;branch");
        h.feed_from(other, Transport::Udp, &from);
        let call = h.events.pop().unwrap().call;
        h.ep.ring(h.now, call).unwrap();
        h.collect();
    }
    assert_eq!(h.ep.stats().inbound_dropped, 50);
    // After a refill period the first source is answered again.
    h.advance(secs(10.0));
    h.feed(&invite("later", ""));
    assert!(h.last_sent().is_response(100));
}

/// A request with Call-ID `n` from the trunk's address that no dialog of ours knows: `method`,
/// with a To tag unless it is OPTIONS or MESSAGE (asked outside any dialog).
fn stray(method: &str, n: &str) -> String {
    let to_tag = match method {
        "OPTIONS" | "MESSAGE" => String::new(),
        _ => format!(";tag=t{n}"),
    };
    format!(
        "{method} sip:dialtone@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK{n}\r\nMax-Forwards: 70\r\nFrom: <sip:15551230000@192.0.2.20>;tag=f{n}\r\nTo: <sip:+15559870000@192.0.2.10>{to_tag}\r\nCall-ID: stray-{n}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A source that spent its budget gets no refusal of anything it sends outside a dialog (a
/// BYE or INFO with a made-up Call-ID would be 481, a MESSAGE 405: answers a spoofed source
/// could reflect), while OPTIONS is still answered and its call's dialog still works.
#[test]
fn a_spent_source_gets_no_refusal_outside_a_dialog_but_its_dialogs_and_options_work() {
    let mut h = inbound_harness();
    answered(&mut h, "d0");
    h.feed(&from_caller(&h, "d0", "ACK", "z9hG4bKackd0", 1));
    for n in 0..3 {
        let (call, _) = incoming(&mut h, &format!("r{n}"), "");
        h.ep.refuse(h.now, call, 403, true).unwrap();
        h.collect();
    }
    h.take_events();
    let sent = h.sent.len();
    for (method, n) in [
        ("BYE", "x1"),
        ("INFO", "x2"),
        ("MESSAGE", "x3"),
        ("INVITE", "x4"),
    ] {
        h.feed(&stray(method, n));
    }
    assert_eq!(
        h.sent.len(),
        sent,
        "nothing answered: {:?}",
        &h.sent[sent..]
    );
    assert_eq!(h.ep.stats().inbound_dropped, 4);
    h.feed(&stray("OPTIONS", "x5"));
    assert!(h.last_sent().is_response(200), "OPTIONS is answered");
    h.feed(&from_caller(&h, "d0", "BYE", "z9hG4bKbyed0", 2));
    assert!(
        h.last_sent().is_response(200),
        "its own dialog's BYE is answered"
    );
    assert_eq!(h.take_events(), ended(Party::Remote));
}

#[test]
fn without_inbound_calls_an_invite_is_480() {
    let mut h = Harness::new();
    h.feed(&invite("6", ""));
    assert!(h.last_sent().is_response(480));
    assert!(h.take_events().is_empty());
}

#[test]
fn a_reinvite_from_the_caller_is_an_offer_answered_in_the_same_dialog() {
    let mut h = inbound_harness();
    let call = answered(&mut h, "7");
    h.feed(&from_caller(&h, "7", "ACK", "z9hG4bKack7", 1));
    h.take_events();
    let hold = OFFER.replace(
        "m=audio 30000 RTP/AVP 0\r\n",
        "m=audio 30000 RTP/AVP 0\r\na=sendonly\r\n",
    );
    let reinvite = from_caller(&h, "7", "INVITE", "z9hG4bKre7", 2).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Contact: <sip:caller@192.0.2.20:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{hold}",
            hold.len()
        ),
    );
    h.feed(&reinvite);
    assert_eq!(
        h.take_events(),
        vec![CallEvent::RemoteOffer {
            method: rsip::Method::Invite,
            sdp: Some(hold.as_bytes().to_vec())
        }]
    );
    h.ep.answer_offer(h.now, call, b"v=0\r\na=recvonly\r\n".to_vec())
        .unwrap();
    h.collect();
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    assert_eq!(ok.header("CSeq").unwrap(), "2 INVITE");
    assert!(ok.body().contains("recvonly"));
    // An INVITE whose CSeq goes backwards in the dialog is refused (§12.2.2).
    h.feed(&from_caller(&h, "7", "INVITE", "z9hG4bKold7", 1));
    assert!(h.last_sent().is_response(500));
}

#[test]
fn malformed_invites_are_refused_400_and_spend_the_budget_too() {
    let mut h = inbound_harness();
    for n in 0..3 {
        let without_contact =
            invite(&format!("m{n}"), "").replace("Contact: <sip:caller@192.0.2.20:5060>\r\n", "");
        h.feed(&without_contact);
        assert!(h.last_sent().is_response(400));
    }
    let sent = h.sent.len();
    h.feed(&invite("after", ""));
    assert_eq!(h.sent.len(), sent, "dropped: the source spent its budget");
    assert_eq!(h.ep.stats().inbound_dropped, 1);
    assert!(h.take_events().is_empty());
}

#[test]
fn a_bye_before_the_ack_ends_the_call_and_nothing_is_released_later() {
    let mut h = inbound_harness();
    answered(&mut h, "8");
    h.feed(&from_caller(&h, "8", "BYE", "z9hG4bKbye8", 2));
    assert!(h.last_sent().is_response(200));
    assert_eq!(h.take_events(), ended(Party::Remote));
    h.advance(secs(40.0));
    assert!(
        h.sent_requests("BYE").is_empty(),
        "no BYE for a dialog already ended"
    );
    assert!(h.take_events().is_empty());
}

/// An INVITE through record-routing proxies: our 180 and 200 carry its Record-Route headers
/// back, in order (RFC 3261 §12.1.1), so the caller routes its ACK and BYE through them too.
#[test]
fn our_180_and_200_carry_the_invites_record_route() {
    let mut h = inbound_harness();
    let (call, _) = incoming(
        &mut h,
        "rr",
        "Record-Route: <sip:edge.example;lr>\r\nRecord-Route: <sip:sbc.example;lr>\r\n",
    );
    h.ep.ring(h.now, call).unwrap();
    h.collect();
    h.ep.accept(h.now, call, b"v=0\r\n".to_vec()).unwrap();
    h.collect();
    for status in [180, 200] {
        let response = h.sent.iter().find(|s| s.is_response(status)).expect("sent");
        let routes: Vec<&str> = response
            .text
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
            .collect();
        assert_eq!(
            routes,
            [
                "Record-Route: <sip:edge.example;lr>",
                "Record-Route: <sip:sbc.example;lr>"
            ],
            "{}",
            response.text
        );
    }
}

/// Over TCP too, our 200 is retransmitted until the ACK (RFC 3261 §13.3.1.4: the TU's duty,
/// whatever the transport) and a call whose ACK never comes is released at 64·T1 with a BYE.
#[test]
fn over_tcp_a_lost_ack_also_releases_the_call() {
    let mut h = inbound_harness();
    let tcp_invite = invite("t", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    h.feed_from(source(), Transport::Tcp, &tcp_invite);
    let event = h.events.pop().expect("an incoming call");
    let call = event.call;
    h.ep.accept(h.now, call, b"v=0\r\n".to_vec()).unwrap();
    h.collect();
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    h.advance(secs(40.0));
    let resent = h.sent.iter().filter(|s| s.text == ok.text).count();
    assert!(resent > 1, "the 200 went out {resent} times");
    assert_eq!(h.sent_requests("BYE")[0].at, Duration::from_secs(32));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TrunkTimeout
        }]
    );
}

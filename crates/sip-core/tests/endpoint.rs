//! The endpoint against a scripted trunk on a virtual clock: every transaction, CANCEL, forking,
//! digest retries, in-dialog requests in both directions, and refusals of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::*;
use dialtone_sip_core::{
    CallEvent, Credentials, EndReason, EndpointConfig, Party, Transport, TransportFailure,
};
use md5::{Digest, Md5};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn ms_list(sent: &[Sent]) -> Vec<u128> {
    sent.iter().map(|s| s.at.as_millis()).collect()
}

/// Dials, gets 100/180/200 with a Record-Route and a Contact, and returns the harness.
fn answered() -> (Harness, dialtone_sip_core::CallHandle) {
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(&invite, 100, None, "", "");
    h.reply(
        &invite,
        180,
        Some("callee1"),
        "Contact: <sip:callee@192.0.2.30:5070>\r\n",
        "",
    );
    h.reply(
        &invite,
        200,
        Some("callee1"),
        "Contact: <sip:callee@192.0.2.30:5070>\r\nRecord-Route: <sip:p2.example.com;lr>, <sip:192.0.2.40:5080;lr>\r\n",
        ANSWER_SDP,
    );
    (h, call)
}

#[test]
fn udp_invite_retransmits_on_timer_a_and_fails_on_timer_b() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Udp));
    h.advance(secs(40.0));
    let invites = h.sent_requests("INVITE");
    assert_eq!(
        ms_list(&invites),
        vec![0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    assert!(invites.iter().all(|i| i.text == invites[0].text));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TrunkTimeout
        }]
    );
    assert_eq!(h.ep.call_count(), 0, "the call is forgotten once it ended");
}

#[test]
fn tcp_invite_is_sent_once_and_still_times_out() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Tcp));
    h.advance(secs(40.0));
    assert_eq!(ms_list(&h.sent_requests("INVITE")), vec![0]);
    assert!(h.sent[0].header("Via").unwrap().starts_with("SIP/2.0/TCP "));
    assert!(
        h.sent[0]
            .header("Contact")
            .unwrap()
            .contains(";transport=tcp")
    );
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TrunkTimeout
        }]
    );
}

#[test]
fn invite_carries_the_mandatory_headers_and_the_offer() {
    let mut h = Harness::new();
    let mut call = Harness::call(Transport::Udp);
    call.extra_headers
        .push(("X-Dialtone-Call".into(), "abc".into()));
    call.route.push("<sip:proxy.example.com;lr>".into());
    h.dial(call);
    let invite = h.last_sent();
    let req = invite.request();
    assert_eq!(req.uri.to_string(), "sip:+15551230000@192.0.2.20");
    assert!(invite.branch().starts_with("z9hG4bK"));
    let via = invite.header("Via").unwrap();
    assert!(via.starts_with("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK"));
    assert!(via.ends_with(";rport"));
    assert_eq!(invite.header("Max-Forwards").unwrap(), "70");
    assert!(invite.header("From").unwrap().contains(";tag="));
    assert!(!invite.header("To").unwrap().contains(";tag="));
    assert_eq!(invite.header("CSeq").unwrap(), "1 INVITE");
    assert_eq!(
        invite.header("Route").unwrap(),
        "<sip:proxy.example.com;lr>"
    );
    assert_eq!(invite.header("X-Dialtone-Call").unwrap(), "abc");
    assert_eq!(invite.header("Content-Type").unwrap(), "application/sdp");
    assert!(invite.body().starts_with("v=0\r\n"));
    assert_eq!(
        invite.header("Content-Length").unwrap(),
        invite.body().len().to_string()
    );
}

#[test]
fn answered_call_is_acked_along_the_route_set_and_hung_up_with_bye() {
    let (mut h, call) = answered();
    let events = h.take_events();
    assert_eq!(events[0], CallEvent::Trying);
    assert_eq!(events[1], CallEvent::Ringing { status: 180 });
    assert_eq!(
        events[2],
        CallEvent::Answered {
            sdp: Some(ANSWER_SDP.as_bytes().to_vec())
        }
    );
    let invite = h.sent_requests("INVITE").remove(0);
    let ack = h.last_sent();
    assert!(ack.is_request("ACK"));
    // Request-URI is the remote target; Route is the Record-Route reversed (§12.1.2).
    assert!(
        ack.text
            .starts_with("ACK sip:callee@192.0.2.30:5070 SIP/2.0\r\n")
    );
    assert_eq!(
        ack.headers("Route"),
        vec!["<sip:192.0.2.40:5080;lr>", "<sip:p2.example.com;lr>"]
    );
    assert_eq!(ack.header("CSeq").unwrap(), "1 ACK");
    assert_ne!(
        ack.branch(),
        invite.branch(),
        "2xx ACK is a new transaction"
    );
    assert!(ack.header("To").unwrap().ends_with(";tag=callee1"));
    // Loose routing: sent to the first route's address.
    assert_eq!(ack.destination.to_string(), "192.0.2.40:5080");

    // A retransmitted 2xx is ACKed again, identically, and reported once.
    h.reply(
        &invite,
        200,
        Some("callee1"),
        "Contact: <sip:callee@192.0.2.30:5070>\r\nRecord-Route: <sip:p2.example.com;lr>, <sip:192.0.2.40:5080;lr>\r\n",
        ANSWER_SDP,
    );
    assert_eq!(h.sent_requests("ACK").len(), 2);
    assert_eq!(h.sent_requests("ACK")[1].text, ack.text);
    assert!(h.take_events().is_empty());

    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    let bye = h.last_sent();
    assert!(
        bye.text
            .starts_with("BYE sip:callee@192.0.2.30:5070 SIP/2.0\r\n")
    );
    assert_eq!(bye.header("CSeq").unwrap(), "2 BYE");
    assert_eq!(bye.header("Call-ID"), invite.header("Call-ID"));
    assert_eq!(
        bye.headers("Route"),
        vec!["<sip:192.0.2.40:5080;lr>", "<sip:p2.example.com;lr>"]
    );
    h.reply(&bye, 200, None, "", "");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Ended {
            by: Party::Local,
            reason: EndReason::Completed
        }]
    );
    assert!(h.ep.hang_up(h.now, call).is_err());
    // Timer K absorbs a retransmitted 200 to the BYE, then everything is forgotten.
    h.reply(&bye, 200, None, "", "");
    assert!(h.take_events().is_empty());
    assert_eq!(h.ep.stats().stray_responses, 0);
    h.advance(secs(33.0));
    assert_eq!(h.ep.call_count(), 0);
}

#[test]
fn bye_retransmits_on_timer_e_capped_at_t2_and_ends_on_timer_f() {
    let (mut h, call) = answered();
    h.take_events();
    let before = h.sent.len();
    let t0 = h.now - h.start;
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    h.advance(secs(40.0));
    let byes: Vec<u128> = h.sent[before..]
        .iter()
        .filter(|s| s.is_request("BYE"))
        .map(|s| (s.at - t0).as_millis())
        .collect();
    assert_eq!(
        byes,
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Ended {
            by: Party::Local,
            reason: EndReason::Completed
        }]
    );
}

#[test]
fn bye_from_the_far_end_is_answered_and_its_retransmission_gets_the_same_200() {
    let (mut h, _call) = answered();
    h.take_events();
    let invite = h.sent_requests("INVITE").remove(0);
    let from_tag = invite
        .header("From")
        .unwrap()
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_owned();
    let bye = format!(
        "BYE sip:dialtone@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30:5070;branch=z9hG4bKbye1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15551230000@192.0.2.20>;tag=callee1\r\nTo: <sip:+15559870000@192.0.2.10>;tag={from_tag}\r\nCall-ID: {}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        invite.header("Call-ID").unwrap()
    );
    let source = "192.0.2.30:5070".parse().unwrap();
    h.feed_from(source, Transport::Udp, &bye);
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    assert_eq!(ok.destination, source);
    assert_eq!(ok.header("CSeq").unwrap(), "9 BYE");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Ended {
            by: Party::Remote,
            reason: EndReason::Completed
        }]
    );
    h.feed_from(source, Transport::Udp, &bye);
    assert_eq!(h.last_sent().text, ok.text);
    assert_eq!(h.sent.iter().filter(|s| s.is_response(200)).count(), 2);
    // After Timer J the dialog is gone: a late BYE gets 481.
    h.advance(secs(33.0));
    h.feed_from(
        source,
        Transport::Udp,
        &bye.replace("z9hG4bKbye1", "z9hG4bKbye2"),
    );
    assert!(h.last_sent().is_response(481));
}

#[test]
fn busy_is_acked_by_the_transaction_and_timer_d_absorbs_retransmissions() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(&invite, 486, Some("b1"), "", "");
    let ack = h.last_sent();
    assert!(ack.is_request("ACK"));
    assert_eq!(
        ack.branch(),
        invite.branch(),
        "non-2xx ACK shares the INVITE branch"
    );
    assert_eq!(ack.header("CSeq").unwrap(), "1 ACK");
    assert!(ack.header("To").unwrap().ends_with(";tag=b1"));
    assert!(
        ack.text
            .starts_with("ACK sip:+15551230000@192.0.2.20 SIP/2.0")
    );
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: Some(486),
            reason: EndReason::Busy
        }]
    );
    h.advance(secs(5.0));
    h.reply(&invite, 486, Some("b1"), "", "");
    assert_eq!(h.sent_requests("ACK").len(), 2);
    assert!(h.take_events().is_empty());
    assert_eq!(
        h.sent_requests("INVITE").len(),
        1,
        "no INVITE retransmission after a final response"
    );
    h.advance(secs(30.0));
    assert_eq!(h.ep.call_count(), 0);
    h.reply(&invite, 486, Some("b1"), "", "");
    assert_eq!(h.sent_requests("ACK").len(), 2);
    assert_eq!(h.ep.stats().stray_responses, 1);
}

#[test]
fn cancel_waits_for_a_provisional_response_then_487_ends_the_call() {
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    assert!(
        h.sent_requests("CANCEL").is_empty(),
        "§9.1: no CANCEL before a 1xx"
    );
    h.reply(&invite, 180, Some("r1"), "", "");
    let cancel = h.last_sent();
    assert!(cancel.is_request("CANCEL"));
    assert_eq!(cancel.branch(), invite.branch());
    assert_eq!(cancel.header("CSeq").unwrap(), "1 CANCEL");
    assert!(
        cancel
            .text
            .starts_with("CANCEL sip:+15551230000@192.0.2.20 SIP/2.0")
    );
    assert_eq!(cancel.header("To"), invite.header("To"));
    h.reply(&cancel, 200, Some("r1"), "", "");
    h.reply(&invite, 487, Some("r1"), "", "");
    assert!(h.last_sent().is_request("ACK"));
    assert_eq!(
        h.take_events(),
        vec![
            CallEvent::Ringing { status: 180 },
            CallEvent::Failed {
                status: Some(487),
                reason: EndReason::Canceled
            }
        ]
    );
}

#[test]
fn cancel_without_any_final_response_gives_up_after_64_t1() {
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(&invite, 183, Some("r1"), "", ANSWER_SDP);
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    assert!(h.last_sent().is_request("CANCEL"));
    h.advance(secs(31.0));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::EarlyMedia {
            status: 183,
            sdp: ANSWER_SDP.as_bytes().to_vec()
        }]
    );
    h.advance(secs(2.0));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::Canceled
        }]
    );
}

#[test]
fn a_2xx_crossing_our_cancel_is_acked_and_released_with_bye() {
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(&invite, 180, Some("r1"), "", "");
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    h.reply(
        &invite,
        200,
        Some("r1"),
        "Contact: <sip:callee@192.0.2.30>\r\n",
        ANSWER_SDP,
    );
    let acks = h.sent_requests("ACK");
    let byes = h.sent_requests("BYE");
    assert_eq!((acks.len(), byes.len()), (1, 1));
    assert_eq!(byes[0].destination.to_string(), "192.0.2.30:5060");
    let events = h.take_events();
    assert_eq!(
        events.last(),
        Some(&CallEvent::Failed {
            status: None,
            reason: EndReason::Canceled
        })
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, CallEvent::Answered { .. }))
    );
}

#[test]
fn forked_2xx_after_the_first_is_acked_and_released() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(
        &invite,
        180,
        Some("forkA"),
        "Contact: <sip:a@192.0.2.31>\r\n",
        "",
    );
    h.reply(
        &invite,
        180,
        Some("forkB"),
        "Contact: <sip:b@192.0.2.32>\r\n",
        "",
    );
    h.reply(
        &invite,
        200,
        Some("forkA"),
        "Contact: <sip:a@192.0.2.31>\r\n",
        ANSWER_SDP,
    );
    h.reply(
        &invite,
        200,
        Some("forkB"),
        "Contact: <sip:b@192.0.2.32>\r\n",
        ANSWER_SDP,
    );
    let acks = h.sent_requests("ACK");
    assert_eq!(acks.len(), 2);
    assert!(acks[0].text.starts_with("ACK sip:a@192.0.2.31 "));
    assert!(acks[1].text.starts_with("ACK sip:b@192.0.2.32 "));
    let byes = h.sent_requests("BYE");
    assert_eq!(byes.len(), 1);
    assert!(byes[0].text.starts_with("BYE sip:b@192.0.2.32 "));
    assert!(byes[0].header("To").unwrap().ends_with(";tag=forkB"));
    assert_eq!(h.ep.stats().forks_released, 1);
    let answered = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, CallEvent::Answered { .. }))
        .count();
    assert_eq!(answered, 1, "the first 2xx wins");
}

fn creds(password: &str) -> Credentials {
    Credentials {
        username: "trunkuser".into(),
        password: password.into(),
        realm: None,
    }
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn param(header: &str, name: &str) -> String {
    let start = header.find(&format!("{name}=")).unwrap() + name.len() + 1;
    header[start..]
        .trim_start_matches('"')
        .split(['"', ','])
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn proxy_challenge_is_answered_with_a_correct_digest_on_a_new_invite() {
    let mut h = Harness::new();
    let mut call = Harness::call(Transport::Udp);
    call.credentials = Some(creds("s3cret"));
    h.dial(call);
    let first = h.last_sent();
    h.reply(
        &first,
        407,
        Some("p1"),
        "Proxy-Authenticate: Digest realm=\"trunk.example\", nonce=\"abc123\", qop=\"auth\", algorithm=MD5\r\n",
        "",
    );
    let invites = h.sent_requests("INVITE");
    assert_eq!(invites.len(), 2);
    let second = &invites[1];
    assert_ne!(second.branch(), first.branch());
    assert_eq!(second.header("CSeq").unwrap(), "2 INVITE");
    assert_eq!(second.header("Call-ID"), first.header("Call-ID"));
    assert_eq!(second.header("From"), first.header("From"));
    let auth = second.header("Proxy-Authorization").unwrap();
    let uri = "sip:+15551230000@192.0.2.20";
    let ha1 = md5_hex("trunkuser:trunk.example:s3cret");
    let ha2 = md5_hex(&format!("INVITE:{uri}"));
    let expected = md5_hex(&format!(
        "{ha1}:abc123:{}:{}:auth:{ha2}",
        param(&auth, "nc"),
        param(&auth, "cnonce")
    ));
    assert_eq!(param(&auth, "response"), expected);
    assert_eq!(param(&auth, "uri"), uri);
    h.reply(
        second,
        200,
        Some("ok"),
        "Contact: <sip:c@192.0.2.20>\r\n",
        ANSWER_SDP,
    );
    assert!(matches!(
        h.take_events().last(),
        Some(CallEvent::Answered { .. })
    ));
    assert_eq!(h.ep.stats().auth_retries, 1);
}

#[test]
fn wrong_password_ends_in_auth_failed_after_one_retry() {
    let mut h = Harness::new();
    let mut call = Harness::call(Transport::Udp);
    call.credentials = Some(creds("wrong"));
    h.dial(call);
    let challenge = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n1\"\r\n";
    let first = h.last_sent();
    h.reply(&first, 401, Some("a"), challenge, "");
    let second = h.sent_requests("INVITE")[1].clone();
    assert!(second.header("Authorization").is_some());
    h.reply(&second, 401, Some("a"), challenge, "");
    assert_eq!(h.sent_requests("INVITE").len(), 2, "no loop");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: Some(401),
            reason: EndReason::AuthFailed
        }]
    );
}

#[test]
fn stale_nonce_earns_one_more_attempt() {
    let mut h = Harness::new();
    let mut call = Harness::call(Transport::Udp);
    call.credentials = Some(creds("pw"));
    h.dial(call);
    let first = h.last_sent();
    h.reply(
        &first,
        401,
        Some("a"),
        "WWW-Authenticate: Digest realm=\"r\", nonce=\"n1\"\r\n",
        "",
    );
    let second = h.sent_requests("INVITE")[1].clone();
    h.reply(
        &second,
        401,
        Some("a"),
        "WWW-Authenticate: Digest realm=\"r\", nonce=\"n2\", stale=true\r\n",
        "",
    );
    let third = h.sent_requests("INVITE")[2].clone();
    assert_eq!(
        param(&third.header("Authorization").unwrap(), "nonce"),
        "n2"
    );
    h.reply(
        &third,
        401,
        Some("a"),
        "WWW-Authenticate: Digest realm=\"r\", nonce=\"n3\", stale=true\r\n",
        "",
    );
    assert_eq!(
        h.sent_requests("INVITE").len(),
        3,
        "bounded by max_auth_attempts"
    );
    assert!(matches!(
        h.take_events().last(),
        Some(CallEvent::Failed {
            reason: EndReason::AuthFailed,
            ..
        })
    ));
}

#[test]
fn challenge_without_credentials_fails_at_once() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Udp));
    let first = h.last_sent();
    h.reply(
        &first,
        407,
        Some("a"),
        "Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n",
        "",
    );
    assert_eq!(h.sent_requests("INVITE").len(), 1);
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: Some(407),
            reason: EndReason::AuthFailed
        }]
    );
}

fn in_dialog_request(
    h: &Harness,
    method: &str,
    branch: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> String {
    let invite = h.sent_requests("INVITE").remove(0);
    let from_tag = invite
        .header("From")
        .unwrap()
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_owned();
    format!(
        "{method} sip:dialtone@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30:5070;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:+15551230000@192.0.2.20>;tag=callee1\r\nTo: <sip:+15559870000@192.0.2.10>;tag={from_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        invite.header("Call-ID").unwrap(),
        body.len()
    )
}

#[test]
fn reinvite_from_the_far_end_is_answered_and_the_2xx_retransmitted_until_ack() {
    let (mut h, call) = answered();
    h.take_events();
    let offer = ANSWER_SDP.replace("RTP/AVP 0", "RTP/AVP 0\r\na=sendonly");
    let reinvite = in_dialog_request(
        &h,
        "INVITE",
        "z9hG4bKre1",
        10,
        "Contact: <sip:callee@192.0.2.33:5070>\r\nContent-Type: application/sdp\r\n",
        &offer,
    );
    h.feed_from(
        "192.0.2.30:5070".parse().unwrap(),
        Transport::Udp,
        &reinvite,
    );
    assert_eq!(
        h.take_events(),
        vec![CallEvent::RemoteOffer {
            method: rsip::Method::Invite,
            sdp: Some(offer.as_bytes().to_vec())
        }]
    );
    // A second offer while one is pending is refused with 491.
    h.feed_from(
        "192.0.2.30:5070".parse().unwrap(),
        Transport::Udp,
        &in_dialog_request(
            &h,
            "UPDATE",
            "z9hG4bKup1",
            11,
            "Content-Type: application/sdp\r\n",
            &offer,
        ),
    );
    assert!(h.last_sent().is_response(491));
    h.ep.answer_offer(h.now, call, b"v=0\r\n".to_vec()).unwrap();
    h.collect();
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    assert_eq!(ok.header("CSeq").unwrap(), "10 INVITE");
    assert!(ok.header("Contact").is_some());
    assert_eq!(ok.body(), "v=0\r\n");
    h.advance(secs(1.6));
    let oks = h.sent.iter().filter(|s| s.text == ok.text).count();
    assert_eq!(oks, 3, "2xx retransmitted at T1 and 2*T1 until the ACK");
    let ack = in_dialog_request(&h, "ACK", "z9hG4bKack1", 10, "", "");
    h.feed_from("192.0.2.30:5070".parse().unwrap(), Transport::Udp, &ack);
    h.advance(secs(10.0));
    assert_eq!(h.sent.iter().filter(|s| s.text == ok.text).count(), 3);
    // The new Contact is the remote target for our BYE.
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    assert!(
        h.last_sent()
            .text
            .starts_with("BYE sip:callee@192.0.2.33:5070 ")
    );
}

#[test]
fn info_and_options_in_dialog_are_answered() {
    let (mut h, _call) = answered();
    h.take_events();
    let src = "192.0.2.30:5070".parse().unwrap();
    h.feed_from(
        src,
        Transport::Udp,
        &in_dialog_request(
            &h,
            "INFO",
            "z9hG4bKi1",
            5,
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=5\r\nDuration=160\r\n",
        ),
    );
    assert!(h.last_sent().is_response(200));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Info {
            content_type: Some("application/dtmf-relay".into()),
            body: b"Signal=5\r\nDuration=160\r\n".to_vec()
        }]
    );
    h.feed_from(
        src,
        Transport::Udp,
        &in_dialog_request(&h, "OPTIONS", "z9hG4bKo1", 6, "", ""),
    );
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    assert!(ok.header("Allow").unwrap().contains("INVITE"));
    // CSeq going backwards within the dialog gets 500 (§12.2.2).
    h.feed_from(
        src,
        Transport::Udp,
        &in_dialog_request(&h, "OPTIONS", "z9hG4bKo2", 4, "", ""),
    );
    assert!(h.last_sent().is_response(500));
}

#[test]
fn our_info_gets_its_final_status_reported() {
    let (mut h, call) = answered();
    h.take_events();
    h.ep.send_request(
        h.now,
        call,
        rsip::Method::Info,
        Some((
            "application/dtmf-relay",
            b"Signal=1\r\nDuration=100\r\n".to_vec(),
        )),
    )
    .unwrap();
    h.collect();
    let info = h.last_sent();
    assert!(info.is_request("INFO"));
    assert_eq!(info.header("CSeq").unwrap(), "2 INFO");
    h.reply(&info, 200, None, "", "");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::RequestCompleted {
            method: rsip::Method::Info,
            status: 200,
            body: Vec::new()
        }]
    );
}

const BASE_REQUEST: &str = "OPTIONS sip:dialtone@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.99:5070;branch=z9hG4bKx1\r\nMax-Forwards: 70\r\nFrom: <sip:probe@192.0.2.99>;tag=p\r\nTo: <sip:dialtone@192.0.2.10>\r\nCall-ID: probe-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

#[test]
fn out_of_dialog_requests_get_sensible_answers() {
    let mut h = Harness::new();
    let src = "192.0.2.99:6000".parse().unwrap();
    h.feed_from(src, Transport::Udp, BASE_REQUEST);
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    // No rport: the reply goes to the source IP and the Via port (§18.2.2).
    assert_eq!(ok.destination.to_string(), "192.0.2.99:5070");
    assert!(ok.header("To").unwrap().contains(";tag="));
    let with_rport = BASE_REQUEST.replace("z9hG4bKx1", "z9hG4bKx2;rport");
    h.feed_from(src, Transport::Udp, &with_rport);
    assert_eq!(h.last_sent().destination, src);
    let invite = BASE_REQUEST
        .replace("OPTIONS", "INVITE")
        .replace("z9hG4bKx1", "z9hG4bKx3");
    h.feed_from(src, Transport::Udp, &invite);
    assert!(h.last_sent().is_response(480));
    let bye = BASE_REQUEST
        .replace("OPTIONS", "BYE")
        .replace("z9hG4bKx1", "z9hG4bKx4")
        .replace(
            "To: <sip:dialtone@192.0.2.10>",
            "To: <sip:dialtone@192.0.2.10>;tag=nope",
        );
    h.feed_from(src, Transport::Udp, &bye);
    assert!(h.last_sent().is_response(481));
    let message = BASE_REQUEST
        .replace("OPTIONS", "MESSAGE")
        .replace("z9hG4bKx1", "z9hG4bKx5");
    h.feed_from(src, Transport::Udp, &message);
    assert!(h.last_sent().is_response(405));
}

/// A node that stops taking calls (draining, or without its lease) answers an edge proxy's
/// OPTIONS probe 503, so the proxy's dispatcher stops sending it calls; in-dialog OPTIONS of
/// the calls it still carries keep their 200.
#[test]
fn an_options_probe_is_503_while_the_node_takes_no_calls() {
    let (mut h, _call) = answered();
    let src = "192.0.2.99:6000".parse().unwrap();
    h.ep.set_available(false);
    h.feed_from(src, Transport::Udp, BASE_REQUEST);
    assert!(h.last_sent().is_response(503));
    h.feed_from(
        "192.0.2.30:5070".parse().unwrap(),
        Transport::Udp,
        &in_dialog_request(&h, "OPTIONS", "z9hG4bKo9", 6, "", ""),
    );
    assert!(h.last_sent().is_response(200));
    h.ep.set_available(true);
    h.feed_from(
        src,
        Transport::Udp,
        &BASE_REQUEST.replace("z9hG4bKx1", "z9hG4bKx9"),
    );
    assert!(h.last_sent().is_response(200));
}

#[test]
fn malformed_input_is_answered_or_dropped_and_counted() {
    let mut h = Harness::new();
    let src = "192.0.2.99:5070".parse().unwrap();
    h.feed_from(
        src,
        Transport::Udp,
        &BASE_REQUEST.replace("Call-ID: probe-1\r\n", ""),
    );
    let bad = h.last_sent();
    assert!(
        bad.text
            .starts_with("SIP/2.0 400 Bad Request - Missing Call-ID header\r\n")
    );
    h.feed_from(
        src,
        Transport::Udp,
        &BASE_REQUEST.replace("OPTIONS", "FROBNICATE"),
    );
    assert!(h.last_sent().is_response(501));
    let sent_before = h.sent.len();
    h.feed_from(src, Transport::Udp, "\u{0}\u{1}garbage");
    h.feed_from(src, Transport::Udp, "SIP/2.0 200 OK\r\n\r\n");
    assert_eq!(h.sent.len(), sent_before);
    let stats = h.ep.stats();
    assert_eq!(stats.requests_rejected, 2);
    assert_eq!(stats.messages_dropped, 2);
    assert_eq!(stats.messages_received, 4);
}

#[test]
fn an_unreachable_trunk_fails_the_call_at_once_and_stops_the_retransmissions() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Udp));
    h.advance(secs(0.1));
    h.ep.handle_transport_error(trunk(), TransportFailure::Unreachable);
    h.collect();
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TrunkUnreachable
        }]
    );
    h.advance(secs(40.0));
    assert_eq!(
        h.sent_requests("INVITE").len(),
        1,
        "no Timer A after the failure"
    );
    assert!(h.take_events().is_empty());
    assert_eq!(h.ep.call_count(), 0, "the call is forgotten once it ended");
}

#[test]
fn a_transport_failure_of_another_kind_is_a_transport_error() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Tcp));
    h.ep.handle_transport_error(trunk(), TransportFailure::Other);
    h.collect();
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TransportError
        }]
    );
}

#[test]
fn a_failure_at_another_address_leaves_the_call_alone() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Udp));
    h.ep.handle_transport_error(
        "192.0.2.99:5060".parse().unwrap(),
        TransportFailure::Unreachable,
    );
    h.collect();
    assert!(h.take_events().is_empty());
    let invite = h.last_sent();
    h.reply(&invite, 180, Some("r1"), "", "");
    assert_eq!(h.take_events(), vec![CallEvent::Ringing { status: 180 }]);
}

#[test]
fn an_unreachable_trunk_after_our_hang_up_ends_the_call_as_we_asked() {
    // Hung up before any provisional: the CANCEL waits (§9.1), and the failure that ends the
    // INVITE reports the hang-up's reason, as Timer B would.
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    h.ep.hang_up(h.now, call).unwrap();
    h.ep.handle_transport_error(trunk(), TransportFailure::Unreachable);
    h.collect();
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::Canceled
        }]
    );
    assert!(h.sent_requests("CANCEL").is_empty());
}

#[test]
fn a_trunk_that_answers_100_then_nothing_waits_for_the_hang_up_not_timer_b() {
    // Timer B stops with the first provisional (§17.1.1.2): the owner's ring timeout ends such
    // a call, as `no_answer`, and a CANCEL nobody answers gives up after 64·T1 (§9.1).
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(&invite, 100, None, "", "");
    h.advance(secs(120.0));
    assert_eq!(h.take_events(), vec![CallEvent::Trying]);
    h.ep.hang_up_because(h.now, call, EndReason::NoAnswer)
        .unwrap();
    h.collect();
    assert!(h.last_sent().is_request("CANCEL"));
    h.advance(secs(33.0));
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::NoAnswer
        }]
    );
}

#[test]
fn an_options_probe_to_an_unreachable_target_is_503() {
    let mut h = Harness::new();
    let r =
        h.ep.send_out_of_dialog(h.now, probe(rsip::Method::Options, None))
            .unwrap();
    h.collect();
    h.ep.handle_transport_error(trunk(), TransportFailure::Unreachable);
    let outcome = h.ep.poll_request_outcome().unwrap();
    assert_eq!((outcome.request, outcome.status), (r, 503));
}

#[test]
fn io_errors_say_unreachable_only_for_refusals_and_missing_routes() {
    use std::io::ErrorKind;
    for kind in [
        ErrorKind::ConnectionRefused,
        ErrorKind::HostUnreachable,
        ErrorKind::NetworkUnreachable,
    ] {
        assert_eq!(
            TransportFailure::of_error_kind(kind),
            TransportFailure::Unreachable
        );
    }
    for kind in [
        ErrorKind::TimedOut,
        ErrorKind::PermissionDenied,
        ErrorKind::ConnectionReset,
        ErrorKind::BrokenPipe,
    ] {
        assert_eq!(
            TransportFailure::of_error_kind(kind),
            TransportFailure::Other
        );
    }
    assert_eq!(
        TransportFailure::Unreachable.end_reason(),
        EndReason::TrunkUnreachable
    );
    assert_eq!(
        TransportFailure::Other.end_reason(),
        EndReason::TransportError
    );
}

#[test]
fn bad_dial_arguments_are_refused_with_the_field_named() {
    let mut h = Harness::new();
    let mut call = Harness::call(Transport::Udp);
    call.request_uri = "not a uri".into();
    let err = h.ep.dial(h.now, call).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("request_uri is not a valid SIP URI")
    );
    let mut call = Harness::call(Transport::Udp);
    call.extra_headers
        .push(("X-Evil".into(), "a\r\nVia: x".into()));
    assert!(h.ep.dial(h.now, call).is_err());
}

#[test]
fn custom_timers_change_the_schedule() {
    let mut config = EndpointConfig::new(LOCAL_HOST, 5060);
    config.timers.t1 = Duration::from_millis(100);
    let mut h = Harness::with_config(config);
    h.dial(Harness::call(Transport::Udp));
    h.advance(secs(10.0));
    assert_eq!(
        ms_list(&h.sent_requests("INVITE")),
        vec![0, 100, 300, 700, 1500, 3100, 6300]
    );
}

#[test]
fn a_cancel_for_a_reason_reports_that_reason() {
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(&invite, 180, Some("r1"), "", "");
    h.ep.hang_up_because(h.now, call, EndReason::NoAnswer)
        .unwrap();
    h.collect();
    let cancel = h.last_sent();
    h.reply(&cancel, 200, Some("r1"), "", "");
    h.reply(&invite, 487, Some("r1"), "", "");
    assert_eq!(
        h.take_events().last(),
        Some(&CallEvent::Failed {
            status: Some(487),
            reason: EndReason::NoAnswer
        })
    );
}

fn probe(
    method: rsip::Method,
    credentials: Option<Credentials>,
) -> dialtone_sip_core::OutOfDialogRequest {
    dialtone_sip_core::OutOfDialogRequest {
        method,
        request_uri: "sip:192.0.2.20".into(),
        from: "<sip:trunkuser@192.0.2.20>".into(),
        to: "<sip:trunkuser@192.0.2.20>".into(),
        destination: trunk(),
        transport: Transport::Udp,
        credentials,
        expires: Some(300),
    }
}

#[test]
fn options_probe_reports_the_answer_and_repeats_in_the_same_series() {
    let mut h = Harness::new();
    let r =
        h.ep.send_out_of_dialog(h.now, probe(rsip::Method::Options, None))
            .unwrap();
    h.collect();
    let first = h.last_sent();
    assert!(first.text.starts_with("OPTIONS sip:192.0.2.20 SIP/2.0\r\n"));
    assert_eq!(first.header("CSeq").unwrap(), "1 OPTIONS");
    h.reply(&first, 200, Some("t"), "", "");
    let outcome = h.ep.poll_request_outcome().unwrap();
    assert_eq!((outcome.request, outcome.status), (r, 200));
    h.ep.repeat_request(h.now, r).unwrap();
    h.collect();
    let second = h.last_sent();
    assert_eq!(second.header("CSeq").unwrap(), "2 OPTIONS");
    assert_eq!(second.header("Call-ID"), first.header("Call-ID"));
    assert_ne!(second.branch(), first.branch());
    // Nobody answers: retransmitted on Timer E, reported as 408 on Timer F.
    h.advance(secs(33.0));
    assert_eq!(h.sent_requests("OPTIONS").len(), 2 + 10);
    assert_eq!(h.ep.poll_request_outcome().map(|o| o.status), Some(408));
    assert!(h.ep.poll_request_outcome().is_none());
    assert!(
        h.ep.send_out_of_dialog(h.now, probe(rsip::Method::Bye, None))
            .is_err()
    );
}

#[test]
fn register_answers_the_challenge_and_reads_the_granted_lifetime() {
    let mut h = Harness::new();
    let r =
        h.ep.send_out_of_dialog(h.now, probe(rsip::Method::Register, Some(creds("pw"))))
            .unwrap();
    h.collect();
    let first = h.last_sent();
    assert_eq!(first.header("Expires").unwrap(), "300");
    assert!(first.header("Contact").is_some());
    h.reply(
        &first,
        401,
        Some("r"),
        "WWW-Authenticate: Digest realm=\"reg\", nonce=\"n1\", qop=\"auth\"\r\n",
        "",
    );
    assert!(
        h.ep.poll_request_outcome().is_none(),
        "the challenge is answered, not reported"
    );
    let second = h.last_sent();
    assert_eq!(second.header("CSeq").unwrap(), "2 REGISTER");
    let auth = second.header("Authorization").unwrap();
    assert_eq!(param(&auth, "nonce"), "n1");
    assert_eq!(param(&auth, "nc"), "00000001");
    h.reply(
        &second,
        200,
        Some("r"),
        "Contact: <sip:dialtone@192.0.2.10:5060>;expires=120\r\n",
        "",
    );
    let outcome = h.ep.poll_request_outcome().unwrap();
    assert_eq!(
        (outcome.request, outcome.status, outcome.expires),
        (r, 200, Some(120))
    );
    // The refresh reuses the series and the challenge, with the next nonce count.
    h.ep.repeat_request(h.now, r).unwrap();
    h.collect();
    let refresh = h.last_sent();
    assert_eq!(refresh.header("CSeq").unwrap(), "3 REGISTER");
    assert_eq!(
        param(&refresh.header("Authorization").unwrap(), "nc"),
        "00000002"
    );
    h.reply(&refresh, 200, Some("r"), "Expires: 90\r\n", "");
    assert_eq!(
        h.ep.poll_request_outcome().and_then(|o| o.expires),
        Some(90)
    );
    h.ep.set_expires(r, 0).unwrap();
    h.ep.repeat_request(h.now, r).unwrap();
    h.collect();
    assert_eq!(h.last_sent().header("Expires").unwrap(), "0");
}

/// Requests of `method` sent, retransmissions counted once.
fn distinct(h: &Harness, method: &str) -> Vec<Sent> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for s in h.sent_requests(method) {
        let cseq = s.header("CSeq").unwrap();
        if !seen.contains(&cseq) {
            seen.push(cseq);
            out.push(s);
        }
    }
    out
}

/// Answers the INVITE with 200 carrying `extra` (Session-Expires, Allow) and returns the harness.
fn answered_with(extra: &str) -> (Harness, dialtone_sip_core::CallHandle) {
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    h.reply(
        &invite,
        200,
        Some("callee1"),
        &format!("Contact: <sip:callee@192.0.2.30:5070>\r\n{extra}"),
        ANSWER_SDP,
    );
    h.take_events();
    (h, call)
}

#[test]
fn session_timer_we_refresh_with_update_at_half_the_interval() {
    let (mut h, _call) = answered_with(
        "Session-Expires: 90;refresher=uac\r\nRequire: timer\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n",
    );
    h.advance(secs(44.0));
    assert!(h.sent_requests("UPDATE").is_empty());
    h.advance(secs(1.1));
    let update = h.sent_requests("UPDATE").remove(0);
    assert_eq!(update.at.as_secs(), 45);
    assert_eq!(
        update.header("Session-Expires").unwrap(),
        "90;refresher=uac"
    );
    assert!(update.body().is_empty());
    h.reply(
        &update,
        200,
        None,
        "Session-Expires: 120;refresher=uac\r\n",
        "",
    );
    // The answer's interval rules from now on: the next refresh is 60 s later.
    h.advance(secs(59.0));
    assert_eq!(distinct(&h, "UPDATE").len(), 1);
    h.advance(secs(2.0));
    assert_eq!(distinct(&h, "UPDATE").len(), 2);
    assert!(h.take_events().is_empty(), "refreshes are not call events");
}

#[test]
fn session_timer_without_update_refreshes_with_a_reinvite_carrying_the_offer() {
    let (mut h, _call) =
        answered_with("Session-Expires: 90;refresher=uac\r\nAllow: INVITE, ACK, BYE\r\n");
    h.advance(secs(45.1));
    let invites = distinct(&h, "INVITE");
    assert_eq!(invites.len(), 2);
    let refresh = &invites[1];
    assert!(refresh.header("To").unwrap().ends_with(";tag=callee1"));
    assert!(refresh.body().starts_with("v=0"));
    h.reply(
        refresh,
        200,
        None,
        "Session-Expires: 90;refresher=uac\r\n",
        ANSWER_SDP,
    );
    assert_eq!(h.last_sent().header("CSeq").unwrap(), "2 ACK");
}

#[test]
fn session_timer_ends_the_call_when_the_peer_stops_refreshing() {
    let (mut h, call) = answered_with("Session-Expires: 90;refresher=uas\r\n");
    // A refresh from the peer at 40 s restarts the timer; ours echoes the interval.
    h.advance(secs(40.0));
    let refresh = in_dialog_request(
        &h,
        "UPDATE",
        "z9hG4bKst1",
        20,
        "Session-Expires: 90;refresher=uac\r\n",
        "",
    );
    h.feed_from("192.0.2.30:5070".parse().unwrap(), Transport::Udp, &refresh);
    let ok = h.last_sent();
    assert!(ok.is_response(200));
    assert_eq!(ok.header("Session-Expires").unwrap(), "90;refresher=uac");
    assert_eq!(ok.header("Require").unwrap(), "timer");
    h.advance(secs(59.0));
    assert!(
        h.sent_requests("BYE").is_empty(),
        "still within 90 - 30 s of the refresh"
    );
    h.advance(secs(2.0));
    let bye = h.sent_requests("BYE").remove(0);
    assert_eq!(bye.at.as_secs(), 100);
    h.reply(&bye, 200, None, "", "");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Ended {
            by: Party::Local,
            reason: EndReason::SessionExpired
        }]
    );
    assert!(h.ep.hang_up(h.now, call).is_err());
}

#[test]
fn a_422_is_retried_once_with_the_interval_the_peer_asks_for() {
    let mut h = Harness::new();
    h.dial(Harness::call(Transport::Udp));
    let first = h.last_sent();
    assert!(first.header("Session-Expires").is_none());
    assert_eq!(first.header("Supported").unwrap(), "timer");
    h.reply(&first, 422, Some("x"), "Min-SE: 1800\r\n", "");
    let second = h.sent_requests("INVITE")[1].clone();
    assert_eq!(second.header("Session-Expires").unwrap(), "1800");
    assert_eq!(second.header("Min-SE").unwrap(), "1800");
    assert_eq!(second.header("CSeq").unwrap(), "2 INVITE");
    h.reply(&second, 422, Some("x"), "Min-SE: 1800\r\n", "");
    assert_eq!(h.sent_requests("INVITE").len(), 2, "no loop");
    assert!(matches!(
        h.take_events().last(),
        Some(CallEvent::Failed {
            status: Some(422),
            ..
        })
    ));
}

#[test]
fn a_refresh_answered_481_ends_the_call() {
    let (mut h, _call) = answered_with("Session-Expires: 90;refresher=uac\r\nAllow: UPDATE\r\n");
    h.advance(secs(46.0));
    let update = h.sent_requests("UPDATE").remove(0);
    h.reply(&update, 481, None, "", "");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::Ended {
            by: Party::Local,
            reason: EndReason::SessionExpired
        }]
    );
}

/// An answered call's dialog, taken as data and handed to another endpoint (the next process
/// after a crash), is ended there with the BYE the first would have sent.
#[test]
fn a_leftover_dialog_is_ended_by_another_endpoint_with_the_same_bye() {
    let (mut h, call) = answered();
    h.take_events();
    let leftover = h.ep.leftover(call).unwrap();
    let stored = serde_json::to_string(&leftover).unwrap();
    assert!(stored.contains(r#""state":"dialog""#), "{stored}");
    let leftover: dialtone_sip_core::Leftover = serde_json::from_str(&stored).unwrap();
    // What the first endpoint would send.
    h.ep.hang_up(h.now, call).unwrap();
    h.collect();
    let expected = h.last_sent();

    let mut next = Harness::new();
    next.ep.end_leftover(next.now, &leftover).unwrap();
    next.collect();
    let bye = next.last_sent();
    assert!(bye.is_request("BYE"), "{}", bye.text);
    assert_eq!(bye.destination, expected.destination);
    for name in ["From", "To", "Call-ID", "CSeq"] {
        assert_eq!(bye.header(name), expected.header(name), "{name}");
    }
    assert_eq!(bye.headers("Route"), expected.headers("Route"));
    assert_eq!(
        bye.text.lines().next(),
        expected.text.lines().next(),
        "the same Request-URI"
    );
    next.reply(&bye, 200, None, "", "");
    assert_eq!(
        next.take_events(),
        vec![CallEvent::Ended {
            by: Party::Local,
            reason: EndReason::Completed
        }]
    );
    // Once ending, there is nothing left to hand over.
    assert_eq!(h.ep.leftover(call), None);
}

/// A call still ringing is handed over as its INVITE without its SDP (which may hold SRTP
/// keys, and a CANCEL does not need), and cancelled with that INVITE's branch.
#[test]
fn a_leftover_invite_is_cancelled_by_another_endpoint() {
    let mut h = Harness::new();
    let call = h.dial(Harness::call(Transport::Udp));
    let invite = h.last_sent();
    assert!(invite.text.contains("m=audio"));
    h.reply(&invite, 180, Some("callee1"), "", "");
    let leftover = h.ep.leftover(call).unwrap();
    let stored = serde_json::to_string(&leftover).unwrap();
    assert!(!stored.contains("m=audio"), "{stored}");
    let leftover: dialtone_sip_core::Leftover = serde_json::from_str(&stored).unwrap();

    let mut next = Harness::new();
    next.ep.end_leftover(next.now, &leftover).unwrap();
    next.collect();
    let cancel = next.last_sent();
    assert!(cancel.is_request("CANCEL"), "{}", cancel.text);
    assert_eq!(cancel.branch(), invite.branch());
    assert_eq!(cancel.header("CSeq").unwrap(), "1 CANCEL");
    for name in ["From", "To", "Call-ID"] {
        assert_eq!(cancel.header(name), invite.header(name), "{name}");
    }
    assert_eq!(cancel.destination, invite.destination);
    assert!(
        cancel.text.starts_with(
            invite
                .text
                .lines()
                .next()
                .unwrap()
                .replace("INVITE", "CANCEL")
                .as_str()
        )
    );
    // The CANCEL's 200, then the INVITE's 487: acknowledged with the INVITE's branch, and the
    // call over.
    next.reply(&cancel, 200, Some("callee1"), "", "");
    next.reply(&invite, 487, Some("callee1"), "", "");
    let ack = next.last_sent();
    assert!(ack.is_request("ACK"), "{}", ack.text);
    assert_eq!(ack.branch(), invite.branch());
    assert_eq!(ack.header("CSeq").unwrap(), "1 ACK");
    assert_eq!(
        next.take_events(),
        vec![CallEvent::Failed {
            status: Some(487),
            reason: EndReason::Canceled
        }]
    );
}

/// A REFER sent on the answered call, and the harness.
fn referred(refer_to: &str) -> (Harness, dialtone_sip_core::CallHandle, Sent) {
    let (mut h, call) = answered();
    h.take_events();
    h.ep.refer(h.now, call, refer_to).unwrap();
    h.collect();
    let refer = h.last_sent();
    assert!(refer.is_request("REFER"), "{}", refer.text);
    (h, call, refer)
}

fn notify(h: &Harness, branch: &str, cseq: u32, event: &str, state: &str, frag: &str) -> String {
    in_dialog_request(
        h,
        "NOTIFY",
        branch,
        cseq,
        &format!(
            "Event: {event}\r\nSubscription-State: {state}\r\nContact: <sip:callee@192.0.2.30:5070>\r\nContent-Type: message/sipfrag;version=2.0\r\n"
        ),
        frag,
    )
}

#[test]
fn refer_goes_in_the_dialog_with_refer_to_referred_by_and_the_route_set() {
    let (h, _, refer) = referred("sip:+15550001111@192.0.2.20");
    let invite = h.sent_requests("INVITE").remove(0);
    assert!(
        refer
            .text
            .starts_with("REFER sip:callee@192.0.2.30:5070 SIP/2.0\r\n")
    );
    assert_eq!(
        refer.header("Refer-To").unwrap(),
        "<sip:+15550001111@192.0.2.20>"
    );
    assert_eq!(
        refer.header("Referred-By").unwrap(),
        "<sip:+15559870000@192.0.2.10>"
    );
    assert_eq!(refer.header("CSeq").unwrap(), "2 REFER");
    assert_eq!(refer.header("Call-ID"), invite.header("Call-ID"));
    assert_eq!(
        refer.headers("Route"),
        vec!["<sip:192.0.2.40:5080;lr>", "<sip:p2.example.com;lr>"]
    );
    assert!(refer.header("Contact").is_some());
    assert!(refer.header("To").unwrap().contains(";tag=callee1"));
    // The first route is where it goes.
    assert_eq!(refer.destination, "192.0.2.40:5080".parse().unwrap());
}

#[test]
fn refer_accepted_then_notifies_are_answered_and_reported_in_order() {
    let (mut h, _, refer) = referred("sip:+15550001111@192.0.2.20");
    h.reply(&refer, 202, None, "", "");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::RequestCompleted {
            method: rsip::Method::Refer,
            status: 202,
            body: Vec::new(),
        }]
    );
    let trying = notify(
        &h,
        "z9hG4bKn1",
        1,
        "refer;id=2",
        "active;expires=60",
        "SIP/2.0 100 Trying\r\n",
    );
    h.feed(&trying);
    assert!(h.last_sent().is_response(200));
    let done = notify(
        &h,
        "z9hG4bKn2",
        2,
        "refer;id=2",
        "terminated;reason=noresource",
        "SIP/2.0 200 OK\r\n",
    );
    h.feed(&done);
    assert!(h.last_sent().is_response(200));
    assert_eq!(
        h.take_events(),
        vec![
            CallEvent::ReferNotify {
                status: 100,
                terminated: false
            },
            CallEvent::ReferNotify {
                status: 200,
                terminated: true
            },
        ]
    );
    // The subscription is over: another NOTIFY has nothing to belong to.
    let late = notify(
        &h,
        "z9hG4bKn3",
        3,
        "refer;id=2",
        "terminated",
        "SIP/2.0 200 OK\r\n",
    );
    h.feed(&late);
    assert!(h.last_sent().is_response(481), "{}", h.last_sent().text);
    assert_eq!(h.ep.stats().notifies_refused, 1);
    assert!(h.take_events().is_empty());
}

#[test]
fn a_new_refer_replaces_an_open_subscription_whose_notifies_then_get_481() {
    let (mut h, call, refer) = referred("sip:+15550001111@192.0.2.20");
    h.reply(&refer, 202, None, "", "");
    h.ep.refer(h.now, call, "sip:+15550002222@192.0.2.20")
        .unwrap();
    h.collect();
    let second = h.last_sent();
    assert_eq!(second.header("CSeq").unwrap(), "3 REFER");
    h.reply(&second, 202, None, "", "");
    h.feed(&notify(
        &h,
        "z9hG4bKr1",
        1,
        "refer;id=2",
        "active",
        "SIP/2.0 180 Ringing\r\n",
    ));
    assert!(h.last_sent().is_response(481), "{}", h.last_sent().text);
    // Only the dialog's first REFER's NOTIFYs may leave the id out: a late one of it must not
    // complete the second.
    h.feed(&notify(
        &h,
        "z9hG4bKr0",
        3,
        "refer",
        "terminated",
        "SIP/2.0 200 OK\r\n",
    ));
    assert!(h.last_sent().is_response(481), "{}", h.last_sent().text);
    h.feed(&notify(
        &h,
        "z9hG4bKr2",
        4,
        "refer;id=3",
        "active",
        "SIP/2.0 180 Ringing\r\n",
    ));
    assert!(h.last_sent().is_response(200), "{}", h.last_sent().text);
}

/// The first REFER's final response, coming after a second REFER went out, is not the
/// current subscription's: it is not reported, and the second's subscription stays open.
#[test]
fn a_late_answer_to_an_earlier_refer_is_dropped() {
    let (mut h, call, first) = referred("sip:+15550001111@192.0.2.20");
    h.ep.refer(h.now, call, "sip:+15550002222@192.0.2.20")
        .unwrap();
    h.collect();
    let second = h.last_sent();
    h.take_events();
    h.reply(&first, 603, None, "", "");
    assert_eq!(h.take_events(), Vec::<CallEvent>::new());
    h.reply(&second, 202, None, "", "");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::RequestCompleted {
            method: rsip::Method::Refer,
            status: 202,
            body: Vec::new(),
        }]
    );
    h.feed(&notify(
        &h,
        "z9hG4bKl1",
        1,
        "refer;id=3",
        "active",
        "SIP/2.0 100 Trying\r\n",
    ));
    assert!(h.last_sent().is_response(200), "{}", h.last_sent().text);
}

#[test]
fn refused_refer_opens_no_subscription_and_a_notify_gets_481() {
    let (mut h, call, refer) = referred("sip:+15550001111@192.0.2.20");
    h.reply(&refer, 405, None, "Allow: INVITE, ACK, BYE\r\n", "");
    assert_eq!(
        h.take_events(),
        vec![CallEvent::RequestCompleted {
            method: rsip::Method::Refer,
            status: 405,
            body: Vec::new(),
        }]
    );
    let stray = notify(
        &h,
        "z9hG4bKs1",
        1,
        "refer",
        "active",
        "SIP/2.0 100 Trying\r\n",
    );
    h.feed(&stray);
    assert!(h.last_sent().is_response(481));
    // Another attempt may go now.
    h.ep.refer(h.now, call, "sip:+15550002222@192.0.2.20")
        .unwrap();
    h.collect();
    assert_eq!(h.last_sent().header("CSeq").unwrap(), "3 REFER");
}

#[test]
fn notify_of_another_event_or_without_a_sipfrag_is_refused() {
    let (mut h, _, refer) = referred("sip:+15550001111@192.0.2.20");
    h.reply(&refer, 202, None, "", "");
    h.feed(&notify(
        &h,
        "z9hG4bKe1",
        1,
        "presence",
        "active",
        "SIP/2.0 100 Trying\r\n",
    ));
    assert!(h.last_sent().is_response(481));
    h.feed(&notify(
        &h,
        "z9hG4bKe2",
        2,
        "refer;id=99",
        "active",
        "SIP/2.0 100 Trying\r\n",
    ));
    assert!(h.last_sent().is_response(481));
    h.feed(&notify(&h, "z9hG4bKe3", 3, "refer", "active", "garbage"));
    assert!(h.last_sent().is_response(400));
    h.feed(&notify(
        &h,
        "z9hG4bKe4",
        4,
        "refer",
        "active",
        "SIP/2.0 180 Ringing\r\n",
    ));
    assert!(h.last_sent().is_response(200));
    assert_eq!(h.ep.stats().notifies_refused, 3);
}

#[test]
fn notify_before_the_202_belongs_to_the_subscription() {
    let (mut h, _, refer) = referred("sip:+15550001111@192.0.2.20");
    h.feed(&notify(
        &h,
        "z9hG4bKb1",
        1,
        "refer;id=2",
        "active",
        "SIP/2.0 100 Trying\r\n",
    ));
    assert!(h.last_sent().is_response(200));
    h.reply(&refer, 202, None, "", "");
    assert_eq!(h.take_events().len(), 2);
}

#[test]
fn challenged_refer_is_retried_with_credentials_and_its_headers() {
    let mut h = Harness::new();
    let mut call = Harness::call(Transport::Udp);
    call.credentials = Some(creds("s3cret"));
    let handle = h.dial(call);
    let invite = h.last_sent();
    h.reply(
        &invite,
        200,
        Some("callee1"),
        "Contact: <sip:callee@192.0.2.30:5070>\r\n",
        ANSWER_SDP,
    );
    h.ep.refer(h.now, handle, "sip:agent@pbx.example.com")
        .unwrap();
    h.collect();
    let first = h.last_sent();
    h.reply(
        &first,
        401,
        None,
        "WWW-Authenticate: Digest realm=\"trunk.example\", nonce=\"n1\", qop=\"auth\"\r\n",
        "",
    );
    let second = h.last_sent();
    assert!(second.is_request("REFER"));
    assert_eq!(second.header("CSeq").unwrap(), "3 REFER");
    assert_eq!(
        second.header("Refer-To").unwrap(),
        "<sip:agent@pbx.example.com>"
    );
    assert!(second.header("Authorization").is_some());
    h.reply(&second, 202, None, "", "");
    // The subscription's id is the CSeq of the REFER that was accepted.
    h.feed(&notify(
        &h,
        "z9hG4bKa1",
        1,
        "refer;id=3",
        "active",
        "SIP/2.0 100 Trying\r\n",
    ));
    assert!(h.last_sent().is_response(200));
}

#[test]
fn refer_without_an_answer_times_out_as_408() {
    let (mut h, _, _) = referred("sip:+15550001111@192.0.2.20");
    h.advance(secs(33.0));
    assert!(h.take_events().contains(&CallEvent::RequestCompleted {
        method: rsip::Method::Refer,
        status: 408,
        body: Vec::new(),
    }));
}

#[test]
fn refer_to_that_is_no_uri_is_refused() {
    let (mut h, call) = answered();
    assert!(h.ep.refer(h.now, call, "not a uri").is_err());
    assert!(h.ep.refer(h.now, call, "sip:a@b>\r\nX: y").is_err());
}

/// Defence in depth behind the API's checks: a line break in anything a tenant's settings put
/// in a header (From, To, a route, an extra header's value) is refused at `dial`, and nothing
/// goes on the wire.
#[test]
fn a_line_break_in_any_header_value_is_refused_and_nothing_is_sent() {
    let injected = "\r\nX-Injected: 1";
    type Spoil = fn(&mut dialtone_sip_core::OutboundCall, &str);
    let cases: [(&str, Spoil); 4] = [
        ("from", |c, bad| c.from = format!("<sip:a@192.0.2.10{bad}>")),
        ("to", |c, bad| c.to = format!("<sip:b@192.0.2.20>{bad}")),
        ("route", |c, bad| {
            c.route = vec![format!("<sip:proxy.example;lr>{bad}")];
        }),
        ("header", |c, bad| {
            c.extra_headers = vec![("X-Campaign".into(), format!("spring{bad}"))];
        }),
    ];
    for (what, spoil) in cases {
        for bad in [injected, "\n", "\r"] {
            let mut h = Harness::new();
            let mut call = Harness::call(Transport::Udp);
            spoil(&mut call, bad);
            let refused = h.ep.dial(h.now, call);
            assert!(
                matches!(
                    refused,
                    Err(dialtone_sip_core::Error::InvalidUri { .. }
                        | dialtone_sip_core::Error::InvalidHeader { .. })
                ),
                "{what} with {bad:?}: {refused:?}"
            );
            h.collect();
            assert!(h.sent.is_empty(), "{what} with {bad:?} sent something");
        }
    }
}

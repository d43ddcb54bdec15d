//! Trunks that fail, over real sockets on loopback: a closed UDP port (the kernel answers with
//! ICMP port unreachable), a TCP port nobody listens on (the connection is refused), a trunk
//! that reads and never answers, and one that answers `100 Trying` and nothing more. Each ends
//! with the end reason that says what happened, and a closed port ends at once: the calls here
//! allow 60 s of ringing and T1 = 500 ms (Timer B after 32 s), and must end within 10 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{attempts, calls};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dialtone_sip_ua::{
    CallEvent, DialRequest, EndReason, Party, SipUa, TimerConfig, Transport, Trunk, UaConfig,
    UaEvent,
};
use dialtone_test_support::{SipTransport, Sipp, SippOptions, scenario};
use tokio::net::UdpSocket;

/// Well before Timer B (64·T1 = 32 s at the default T1) and the 60 s ring timeout.
const AT_ONCE: Duration = Duration::from_secs(10);

async fn start_ua(t1: Duration) -> SipUa {
    let mut config = UaConfig::new("127.0.0.1:0".parse().unwrap());
    config.timers = TimerConfig {
        t1,
        ..TimerConfig::default()
    };
    SipUa::start(config).await.unwrap()
}

fn trunk(name: &str, transport: Transport, port: u16) -> Arc<Trunk> {
    let mut trunk = Trunk::new(name, "127.0.0.1", transport);
    trunk.port = Some(port);
    Arc::new(trunk)
}

fn request(trunk: Arc<Trunk>) -> DialRequest {
    let mut r = DialRequest::new(trunk, "+15559870000", "+15551230000");
    r.ring_timeout = Duration::from_secs(60);
    r.setup_deadline = Duration::from_secs(60);
    r
}

/// A UDP port nothing is bound to (bound, read, and closed again).
async fn closed_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.local_addr().unwrap().port()
}

/// A TCP port nothing listens on.
fn closed_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every event of a call until its final one, within `limit`; hangs up once answered.
async fn run_call(ua: &SipUa, request: DialRequest, limit: Duration) -> Vec<UaEvent> {
    let dialled = std::time::Instant::now();
    let mut call = ua.dial(request).await.unwrap();
    let mut events = Vec::new();
    let ended = tokio::time::timeout(limit, async {
        while let Some(e) = call.next_event().await {
            if matches!(e, UaEvent::Call(CallEvent::Answered { .. })) {
                call.hang_up().unwrap();
            }
            events.push(e);
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the call did not end within {limit:?}: {events:?}"
    );
    println!("ended {:?} after the dial", dialled.elapsed());
    events
}

fn unreachable() -> CallEvent {
    CallEvent::Failed {
        status: None,
        reason: EndReason::TrunkUnreachable,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn assert_nothing_left(ua: &SipUa) {
    let stats = ua.stats().await.unwrap();
    assert_eq!((stats.live_calls, stats.core_calls), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn a_closed_udp_port_ends_the_call_at_once_as_trunk_unreachable() {
    let ua = start_ua(Duration::from_millis(500)).await;
    let port = closed_udp_port().await;
    let events = run_call(&ua, request(trunk("closed", Transport::Udp, port)), AT_ONCE).await;
    assert_eq!(attempts(&events), vec![local(port)]);
    assert_eq!(calls(&events), vec![unreachable()]);
    assert_nothing_left(&ua).await;
}

#[tokio::test]
async fn a_tcp_port_nobody_listens_on_ends_the_call_at_once_as_trunk_unreachable() {
    let ua = start_ua(Duration::from_millis(500)).await;
    let port = closed_tcp_port();
    let events = run_call(
        &ua,
        request(trunk("refusing", Transport::Tcp, port)),
        AT_ONCE,
    )
    .await;
    assert_eq!(attempts(&events), vec![local(port)]);
    assert_eq!(calls(&events), vec![unreachable()]);
    assert_nothing_left(&ua).await;
}

#[tokio::test]
async fn every_closed_target_is_tried_at_once_then_the_call_is_unreachable() {
    let ua = start_ua(Duration::from_millis(500)).await;
    let (udp, tcp) = (closed_udp_port().await, closed_tcp_port());
    let mut r = request(trunk("closed", Transport::Udp, udp));
    r.fallback_trunks
        .push(trunk("refusing", Transport::Tcp, tcp));
    let events = run_call(&ua, r, AT_ONCE).await;
    assert_eq!(attempts(&events), vec![local(udp), local(tcp)]);
    assert_eq!(calls(&events), vec![unreachable()]);
    assert_nothing_left(&ua).await;
}

/// A TLS call never fails over to a trunk without TLS: its offer may carry SRTP keys, and
/// its trunk asked for TLS. The UDP fallback hears nothing; the call ends unreachable.
#[tokio::test]
async fn a_tls_call_does_not_fail_over_to_a_trunk_in_clear() {
    let clear = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ua = start_ua(Duration::from_millis(500)).await;
    let tls = closed_tcp_port();
    let mut r = request(trunk("tls", Transport::Tls, tls));
    r.fallback_trunks.push(trunk(
        "clear",
        Transport::Udp,
        clear.local_addr().unwrap().port(),
    ));
    let events = run_call(&ua, r, AT_ONCE).await;
    assert_eq!(attempts(&events), vec![local(tls)]);
    assert_eq!(calls(&events), vec![unreachable()]);
    let mut buf = [0u8; 2048];
    assert!(
        clear.try_recv_from(&mut buf).is_err(),
        "the fallback in clear got something"
    );
    assert_nothing_left(&ua).await;
}

#[tokio::test]
async fn a_closed_port_fails_over_to_the_next_trunk_at_once() {
    let working = Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &SippOptions::default(),
    )
    .unwrap();
    let ua = start_ua(Duration::from_millis(500)).await;
    let closed = closed_udp_port().await;
    let mut r = request(trunk("closed", Transport::Udp, closed));
    r.fallback_trunks
        .push(trunk("backup", Transport::Udp, working.port));
    let events = run_call(&ua, r, AT_ONCE).await;
    assert_eq!(attempts(&events), vec![local(closed), local(working.port)]);
    assert_eq!(
        calls(&events).last(),
        Some(&CallEvent::Ended {
            by: Party::Local,
            reason: EndReason::Completed
        })
    );
    working.finish(Duration::from_secs(30)).unwrap();
}

#[tokio::test]
async fn a_trunk_that_never_answers_ends_by_timer_b_even_past_the_ring_timeout() {
    // A bound socket that reads nothing: no ICMP, no answer. The ring timeout (1 s) is shorter
    // than Timer B (64·T1 = 3.2 s) but never starts: nothing said the phone rings.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let ua = start_ua(Duration::from_millis(50)).await;
    let mut r = request(trunk("silent", Transport::Udp, port));
    r.ring_timeout = Duration::from_secs(1);
    let events = run_call(&ua, r, Duration::from_secs(20)).await;
    assert_eq!(
        calls(&events),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TrunkTimeout
        }]
    );
    assert_nothing_left(&ua).await;
}

/// The header lines of `request` that a response copies (RFC 3261 §8.2.6.2).
fn response_to(request: &str, status: &str) -> String {
    let copied: String = request
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .filter(|l| {
            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!("SIP/2.0 {status}\r\n{copied}Content-Length: 0\r\n\r\n")
}

#[tokio::test]
async fn a_trunk_that_answers_100_then_nothing_ends_by_the_ring_timeout_as_no_answer() {
    // Timer B stops at the first provisional response; the ring timeout, started by the 100,
    // sends the CANCEL, and a CANCEL nobody answers is given up after 64·T1.
    let trunk_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = trunk_socket.local_addr().unwrap().port();
    let seen = tokio::spawn(async move {
        let mut methods = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(3), trunk_socket.recv_from(&mut buf)).await
        {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let method = text.split(' ').next().unwrap_or_default().to_owned();
            if method == "INVITE" && !methods.contains(&method) {
                let trying = response_to(&text, "100 Trying");
                trunk_socket.send_to(trying.as_bytes(), from).await.unwrap();
            }
            methods.push(method);
        }
        methods
    });
    let ua = start_ua(Duration::from_millis(50)).await;
    let mut r = request(trunk("trying", Transport::Udp, port));
    r.ring_timeout = Duration::from_millis(500);
    let events = run_call(&ua, r, Duration::from_secs(20)).await;
    assert_eq!(
        calls(&events),
        vec![
            CallEvent::Trying,
            CallEvent::Failed {
                status: None,
                reason: EndReason::NoAnswer
            }
        ]
    );
    let methods = seen.await.unwrap();
    assert_eq!(methods.first().map(String::as_str), Some("INVITE"));
    assert!(
        methods.iter().any(|m| m == "CANCEL"),
        "the ring timeout cancelled: {methods:?}"
    );
    assert_nothing_left(&ua).await;
}

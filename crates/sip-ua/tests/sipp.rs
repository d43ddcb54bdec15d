//! The user agent against SIPp playing the trunk: every call path over real sockets on
//! loopback. Each test starts its own SIPp on a free port and waits until it is bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{attempts, calls};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_sdp::{LocalMedia, SessionDescription, build_offer, negotiate_answer};
use dialtone_sip_ua::{
    CallEvent, Credentials, DialRequest, EndReason, Party, RegistrationState, SipUa, TimerConfig,
    Transport, Trunk, UaConfig, UaEvent,
};
use dialtone_test_support::dns::DnsServer;
use dialtone_test_support::{Kamailio, SipTransport, Sipp, SippOptions, scenario};

/// Starts SIPp playing scenario `name` as the trunk.
fn sipp(name: &str, transport: Transport, calls: u32, keys: &[(&str, &str)]) -> Sipp {
    let options = SippOptions {
        calls,
        replacements: keys
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..SippOptions::default()
    };
    let transport = match transport {
        Transport::Tcp => SipTransport::Tcp,
        _ => SipTransport::Udp,
    };
    Sipp::uas(&scenario(name), transport, &options).unwrap()
}

fn trunk_of(sipp: &Sipp, name: &str) -> Trunk {
    let transport = match sipp.transport {
        SipTransport::Tcp => Transport::Tcp,
        SipTransport::Udp => Transport::Udp,
    };
    let mut trunk = Trunk::new(name, "127.0.0.1", transport);
    trunk.port = Some(sipp.port);
    trunk
}

fn assert_success(sipp: Sipp) {
    sipp.finish(Duration::from_secs(30)).unwrap();
}

fn local_media() -> LocalMedia {
    LocalMedia::new("127.0.0.1".parse().unwrap(), 20000)
}

fn request(trunk: Trunk) -> DialRequest {
    let mut r = DialRequest::new(Arc::new(trunk), "+15559870000", "+15551230000");
    r.sdp_offer = Some(build_offer(&local_media(), 1, 1).to_string().into_bytes());
    r
}

async fn start_ua(t1: Duration) -> SipUa {
    let mut config = UaConfig::new("127.0.0.1:0".parse().unwrap());
    config.timers = TimerConfig {
        t1,
        ..TimerConfig::default()
    };
    SipUa::start(config).await.unwrap()
}

/// Collects every event of a call until its final one, answering `on_answer` when answered.
async fn run_call(ua: &SipUa, request: DialRequest, hang_up_on_answer: bool) -> Vec<UaEvent> {
    let mut call = ua.dial(request).await.unwrap();
    let mut events = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = call.next_event().await {
            if hang_up_on_answer && matches!(e, UaEvent::Call(CallEvent::Answered { .. })) {
                call.hang_up().unwrap();
            }
            events.push(e);
        }
    })
    .await;
    assert!(result.is_ok(), "call did not end: {events:?}");
    events
}

/// The call went to `failing` first, then to `working`, was answered there and ended by us;
/// both peers saw their scenario through.
fn assert_failed_over_and_completed(events: &[UaEvent], failing: Sipp, working: Sipp) {
    assert_eq!(
        attempts(events),
        vec![
            SocketAddr::from(([127, 0, 0, 1], failing.port)),
            SocketAddr::from(([127, 0, 0, 1], working.port))
        ]
    );
    assert_eq!(
        calls(events).last(),
        Some(&CallEvent::Ended {
            by: Party::Local,
            reason: EndReason::Completed
        })
    );
    assert_success(failing);
    assert_success(working);
}

fn answered_sdp(events: &[CallEvent]) -> SessionDescription {
    let sdp = events
        .iter()
        .find_map(|e| match e {
            CallEvent::Answered { sdp: Some(sdp) } => Some(sdp.clone()),
            _ => None,
        })
        .expect("answered with SDP");
    SessionDescription::parse(std::str::from_utf8(&sdp).unwrap()).unwrap()
}

#[tokio::test]
async fn answered_then_the_callee_hangs_up() {
    let peer = sipp("answer_then_callee_hangs_up.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let events = run_call(&ua, request(trunk_of(&peer, "sipp")), false).await;
    let c = calls(&events);
    assert_eq!(c[0], CallEvent::Trying);
    assert_eq!(c[1], CallEvent::Ringing { status: 180 });
    let negotiated =
        negotiate_answer(&build_offer(&local_media(), 1, 1), &answered_sdp(&c)).unwrap();
    assert_eq!(negotiated.codec.name, "PCMU");
    assert_eq!(negotiated.telephone_event, Some(101));
    assert_eq!(
        c.last(),
        Some(&CallEvent::Ended {
            by: Party::Remote,
            reason: EndReason::Completed
        })
    );
    assert_success(peer);
}

#[tokio::test]
async fn answered_then_we_hang_up_over_udp_and_tcp() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let peer = sipp("answer_then_we_hang_up.xml", transport, 1, &[]);
        let ua = start_ua(Duration::from_millis(500)).await;
        let events = run_call(&ua, request(trunk_of(&peer, "sipp")), true).await;
        assert_eq!(
            calls(&events).last(),
            Some(&CallEvent::Ended {
                by: Party::Local,
                reason: EndReason::Completed
            }),
            "{transport:?}"
        );
        assert_success(peer);
    }
}

#[tokio::test]
async fn refusals_map_to_typed_end_reasons() {
    for (status, reason) in [
        ("486", EndReason::Busy),
        ("600", EndReason::Busy),
        ("404", EndReason::NotFound),
        ("604", EndReason::NotFound),
        ("603", EndReason::Rejected),
    ] {
        let peer = sipp("reject.xml", Transport::Udp, 1, &[("status", status)]);
        let ua = start_ua(Duration::from_millis(500)).await;
        let events = run_call(&ua, request(trunk_of(&peer, "sipp")), false).await;
        assert_eq!(
            calls(&events).last(),
            Some(&CallEvent::Failed {
                status: Some(status.parse().unwrap()),
                reason
            }),
            "status {status}"
        );
        assert_success(peer);
    }
}

#[tokio::test]
async fn ring_timeout_cancels_with_no_answer() {
    let peer = sipp("ring_until_cancel.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let mut r = request(trunk_of(&peer, "sipp"));
    r.ring_timeout = Duration::from_millis(800);
    let events = run_call(&ua, r, false).await;
    assert_eq!(
        calls(&events),
        vec![
            CallEvent::Ringing { status: 180 },
            CallEvent::Failed {
                status: Some(487),
                reason: EndReason::NoAnswer
            }
        ]
    );
    assert_success(peer);
}

#[tokio::test]
async fn early_media_then_answer() {
    let peer = sipp("early_media_then_answer.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let events = run_call(&ua, request(trunk_of(&peer, "sipp")), true).await;
    let c = calls(&events);
    let CallEvent::EarlyMedia { status: 183, sdp } = &c[0] else {
        panic!("expected early media first: {c:?}");
    };
    let early = SessionDescription::parse(std::str::from_utf8(sdp).unwrap()).unwrap();
    assert!(negotiate_answer(&build_offer(&local_media(), 1, 1), &early).is_ok());
    assert!(matches!(c[1], CallEvent::Answered { .. }));
    assert_success(peer);
}

#[tokio::test]
async fn digest_challenges_are_answered_with_the_right_credentials() {
    for (code, scenario) in [("401", "challenge.xml"), ("407", "proxy_challenge.xml")] {
        let peer = sipp(scenario, Transport::Udp, 1, &[]);
        let ua = start_ua(Duration::from_millis(500)).await;
        let mut trunk = trunk_of(&peer, "sipp");
        trunk.credentials = Some(Credentials {
            username: "trunkuser".into(),
            password: "s3cret".into(),
            realm: None,
        });
        let events = run_call(&ua, request(trunk), true).await;
        assert_eq!(
            calls(&events).last(),
            Some(&CallEvent::Ended {
                by: Party::Local,
                reason: EndReason::Completed
            }),
            "{code}"
        );
        assert_success(peer);
    }
}

#[tokio::test]
async fn a_wrong_password_ends_as_auth_failed() {
    let peer = sipp("challenge.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let mut trunk = trunk_of(&peer, "sipp");
    trunk.credentials = Some(Credentials {
        username: "trunkuser".into(),
        password: "wrong".into(),
        realm: None,
    });
    let events = run_call(&ua, request(trunk), false).await;
    assert_eq!(
        calls(&events).last(),
        Some(&CallEvent::Failed {
            status: Some(401),
            reason: EndReason::AuthFailed
        })
    );
    assert_success(peer);
}

#[tokio::test]
async fn a_503_fails_over_to_the_next_trunk() {
    let failing = sipp("reject.xml", Transport::Udp, 1, &[("status", "503")]);
    let working = sipp("answer_then_we_hang_up.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let mut r = request(trunk_of(&failing, "primary"));
    r.fallback_trunks
        .push(Arc::new(trunk_of(&working, "backup")));
    let events = run_call(&ua, r, true).await;
    assert_failed_over_and_completed(&events, failing, working);
}

#[tokio::test]
async fn a_trunk_that_never_answers_times_out_and_nothing_leaks() {
    // A bound socket that never reads: datagrams vanish, as with a dead trunk.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ua = start_ua(Duration::from_millis(50)).await;
    let mut trunk = Trunk::new("dead", "127.0.0.1", Transport::Udp);
    trunk.port = Some(port);
    let events = run_call(&ua, request(trunk), false).await;
    assert_eq!(
        calls(&events),
        vec![CallEvent::Failed {
            status: None,
            reason: EndReason::TrunkTimeout
        }]
    );
    let stats = ua.stats().await.unwrap();
    assert_eq!((stats.live_calls, stats.core_calls), (0, 0));
}

#[tokio::test]
async fn soak_sequential_and_concurrent_calls_leave_nothing_behind() {
    const SEQUENTIAL: u32 = 200;
    const CONCURRENT: u32 = 30;
    let peer = sipp(
        "answer_then_we_hang_up.xml",
        Transport::Udp,
        SEQUENTIAL + CONCURRENT,
        &[],
    );
    let ua = Arc::new(start_ua(Duration::from_millis(50)).await);
    let trunk = trunk_of(&peer, "sipp");
    for _ in 0..SEQUENTIAL {
        let events = run_call(&ua, request(trunk.clone()), true).await;
        assert!(matches!(
            calls(&events).last(),
            Some(CallEvent::Ended {
                by: Party::Local,
                ..
            })
        ));
    }
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let ua = ua.clone();
            let trunk = trunk.clone();
            tokio::spawn(async move { run_call(&ua, request(trunk), true).await })
        })
        .collect();
    for t in tasks {
        let events = t.await.unwrap();
        assert!(matches!(
            calls(&events).last(),
            Some(CallEvent::Ended {
                by: Party::Local,
                ..
            })
        ));
    }
    assert_success(peer);
    // Transactions linger for Timer K/M (64*T1 = 3.2 s here), then everything is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = ua.stats().await.unwrap();
        if stats.live_calls == 0 && stats.core_calls == 0 {
            assert_eq!(stats.endpoint.stray_responses, 0);
            break;
        }
        assert!(Instant::now() < deadline, "calls left behind: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kamailio as the trunk's proxy, demanding digest auth, in front of a SIPp callee: the auth
/// path meets an independent implementation, over UDP and over TCP.
#[tokio::test]
async fn kamailio_auth_proxy_accepts_our_digest_over_udp_and_tcp() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let callee = sipp("answer_then_we_hang_up.xml", Transport::Udp, 1, &[]);
        let proxy = Kamailio::start(
            &scenario("kamailio-auth-proxy.cfg"),
            &[
                ("callee_port", callee.port.to_string()),
                ("callee_transport", "udp".into()),
                ("password", "k4m-s3cret".into()),
            ],
        )
        .unwrap();
        let ua = start_ua(Duration::from_millis(500)).await;
        let mut trunk = Trunk::new("kamailio", "127.0.0.1", transport);
        trunk.port = Some(proxy.port);
        trunk.credentials = Some(Credentials {
            username: "trunkuser".into(),
            password: "k4m-s3cret".into(),
            realm: Some("dialtone.test".into()),
        });
        let events = run_call(&ua, request(trunk), true).await;
        assert_eq!(
            calls(&events).last(),
            Some(&CallEvent::Ended {
                by: Party::Local,
                reason: EndReason::Completed
            }),
            "{transport:?}: {events:?}\n{}",
            proxy.log()
        );
        assert!(
            proxy.log().contains("authenticated INVITE for trunkuser"),
            "{}",
            proxy.log()
        );
        assert_eq!(ua.stats().await.unwrap().endpoint.auth_retries, 1);
        assert_success(callee);
    }
}

#[tokio::test]
async fn kamailio_refuses_a_wrong_password_and_the_call_ends_as_auth_failed() {
    let callee = sipp("answer_then_we_hang_up.xml", Transport::Udp, 1, &[]);
    let proxy = Kamailio::start(
        &scenario("kamailio-auth-proxy.cfg"),
        &[
            ("callee_port", callee.port.to_string()),
            ("callee_transport", "udp".into()),
            ("password", "k4m-s3cret".into()),
        ],
    )
    .unwrap();
    let ua = start_ua(Duration::from_millis(500)).await;
    let mut trunk = Trunk::new("kamailio", "127.0.0.1", Transport::Udp);
    trunk.port = Some(proxy.port);
    trunk.credentials = Some(Credentials {
        username: "trunkuser".into(),
        password: "not-it".into(),
        realm: None,
    });
    let events = run_call(&ua, request(trunk), false).await;
    assert_eq!(
        calls(&events).last(),
        Some(&CallEvent::Failed {
            status: Some(407),
            reason: EndReason::AuthFailed
        }),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn options_keepalive_marks_the_trunk_up_then_down_when_it_goes_quiet() {
    let peer = sipp("options_ok.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(50)).await;
    let trunk = Arc::new(trunk_of(&peer, "monitored"));
    let mut monitor = ua.monitor(trunk.clone(), Duration::from_millis(300));
    let first = tokio::time::timeout(Duration::from_secs(10), monitor.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(first.up, "{first:?}");
    assert_eq!(first.last_status, Some(200));
    assert_success(peer);
    // SIPp has exited: the next probe goes unanswered (Timer F at 64*T1 = 3.2 s here).
    let down = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let h = monitor.changed().await.unwrap();
            if !h.up {
                return h;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(down.last_status, Some(408 | 503)), "{down:?}");
}

#[tokio::test]
async fn registration_answers_the_challenge_and_refreshes_before_expiry() {
    let peer = sipp(
        "register_challenge.xml",
        Transport::Udp,
        1,
        &[("expires", "2")],
    );
    let ua = start_ua(Duration::from_millis(500)).await;
    let mut trunk = trunk_of(&peer, "registrar");
    trunk.credentials = Some(Credentials {
        username: "trunkuser".into(),
        password: "s3cret".into(),
        realm: None,
    });
    let mut registration = ua.register(Arc::new(trunk), 600);
    let mut states = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(s) = registration.changed().await {
            states.push(s);
            if matches!(s, RegistrationState::Registered { refreshes: 1, .. }) {
                break;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        states,
        vec![
            RegistrationState::Registered {
                expires: 2,
                refreshes: 0
            },
            RegistrationState::Registered {
                expires: 2,
                refreshes: 1
            },
        ]
    );
    assert_success(peer);
}

#[tokio::test]
async fn a_trunk_session_timer_is_refreshed_with_update() {
    let peer = sipp("session_timer_refresh.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let events = run_call(&ua, request(trunk_of(&peer, "timers")), false).await;
    assert_eq!(
        calls(&events).last(),
        Some(&CallEvent::Ended {
            by: Party::Remote,
            reason: EndReason::Completed
        })
    );
    // SIPp fails unless the UPDATE came, with our Session-Expires, within the interval.
    assert_success(peer);
}

/// RFC 3263: a trunk named without a port is found by SRV; the first target refuses with 503
/// and the call fails over to the second.
#[tokio::test]
async fn srv_targets_are_tried_in_order_with_failover() {
    let failing = sipp("reject.xml", Transport::Udp, 1, &[("status", "503")]);
    let working = sipp("answer_then_we_hang_up.xml", Transport::Udp, 1, &[]);
    let dns = DnsServer::start(
        "_sip._udp.trunk.test",
        vec![
            (10, 0, failing.port, "a.trunk.test".into()),
            (20, 0, working.port, "b.trunk.test".into()),
        ],
        vec![
            ("a.trunk.test".into(), [127, 0, 0, 1]),
            ("b.trunk.test".into(), [127, 0, 0, 1]),
        ],
    )
    .unwrap();
    let mut config = UaConfig::new("127.0.0.1:0".parse().unwrap());
    config.dns_server = Some(dns.addr);
    let ua = SipUa::start(config).await.unwrap();
    let events = run_call(
        &ua,
        request(Trunk::new("srv", "trunk.test", Transport::Udp)),
        true,
    )
    .await;
    assert_failed_over_and_completed(&events, failing, working);
}

#[tokio::test]
async fn the_advertised_address_goes_in_via_and_contact() {
    let peer = sipp(
        "answer_checks_advertised.xml",
        Transport::Udp,
        1,
        &[("hostport", "127.0.0.2:5099")],
    );
    let mut config = UaConfig::new("127.0.0.1:0".parse().unwrap());
    config.advertised_host = Some("127.0.0.2".into());
    config.advertised_port = Some(5099);
    let ua = SipUa::start(config).await.unwrap();
    let events = run_call(&ua, request(trunk_of(&peer, "nat")), true).await;
    assert!(
        matches!(calls(&events).last(), Some(CallEvent::Ended { .. })),
        "{events:?}"
    );
    assert_success(peer);
}

#[tokio::test]
async fn dtmf_goes_out_as_sip_info_when_asked() {
    let peer = sipp("answer_takes_dtmf_info.xml", Transport::Udp, 1, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let mut call = ua.dial(request(trunk_of(&peer, "info"))).await.unwrap();
    let mut completed = None;
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = call.next_event().await {
            match e {
                UaEvent::Call(CallEvent::Answered { .. }) => {
                    call.send_dtmf_info('5', Duration::from_millis(160))
                        .unwrap();
                }
                UaEvent::Call(CallEvent::RequestCompleted { method, status, .. }) => {
                    completed = Some((method, status));
                    call.hang_up().unwrap();
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(completed, Some((rsip::Method::Info, 200)));
    assert_success(peer);
}

#[tokio::test]
async fn a_trunk_at_its_concurrency_cap_refuses_the_next_call_clearly() {
    let peer = sipp("ring_until_cancel.xml", Transport::Udp, 2, &[]);
    let ua = start_ua(Duration::from_millis(500)).await;
    let mut trunk = trunk_of(&peer, "capped");
    trunk.max_concurrent_calls = Some(1);
    trunk.cap_wait = Duration::from_millis(200);
    let trunk = Arc::new(trunk);
    let mut first = ua
        .dial(DialRequest::new(
            trunk.clone(),
            "+15559870000",
            "+15551230000",
        ))
        .await
        .unwrap();
    let refused = ua
        .dial(DialRequest::new(
            trunk.clone(),
            "+15559870000",
            "+15551230001",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "trunk capped is at its cap of 1 concurrent calls"
    );
    first.hang_up().unwrap();
    while first.next_event().await.is_some() {}
    // The slot is free again once the first call has ended.
    let mut second = ua
        .dial(DialRequest::new(trunk, "+15559870000", "+15551230002"))
        .await
        .unwrap();
    second.hang_up().unwrap();
    while second.next_event().await.is_some() {}
    assert_success(peer);
}

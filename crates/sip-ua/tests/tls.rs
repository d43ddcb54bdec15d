//! SIP over TLS against Kamailio with its TLS module: a trunk proxy demanding digest auth over
//! TLS in front of a SIPp callee. Certificates come from a throw-away CA the test makes; the
//! checks that must refuse (a CA not trusted, a name not in the certificate, a missing client
//! certificate) are run against the same proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use dialtone_sdp::{LocalMedia, build_offer};
use dialtone_sip_ua::{
    CallEvent, Credentials, DialRequest, EndReason, Party, SipUa, TimerConfig, TlsListen,
    Transport, Trunk, TrunkTls, UaConfig, UaEvent,
};
use dialtone_test_support::pki::{Issued, TestCa};
use dialtone_test_support::{Kamailio, SipTransport, Sipp, SippOptions, scenario};

const PASSWORD: &str = "tls-s3cret";

/// How Kamailio's TLS server side treats clients.
#[derive(Clone, Copy, PartialEq)]
enum ClientCerts {
    /// Any client.
    NotAsked,
    /// Only clients with a certificate from the test CA (mutual TLS).
    Required,
}

/// Kamailio as a TLS trunk proxy in front of a SIPp callee playing `callee_scenario`.
struct TlsProxy {
    kamailio: Kamailio,
    tls_port: u16,
    callee: Sipp,
}

fn tls_proxy(
    ca: &TestCa,
    server: &Issued,
    clients: ClientCerts,
    callee_scenario: &str,
) -> TlsProxy {
    let callee = Sipp::uas(
        &scenario(callee_scenario),
        SipTransport::Udp,
        &SippOptions::default(),
    )
    .unwrap();
    let (kamailio, tls_port) = Kamailio::start_tls(
        &scenario("kamailio-tls-auth-proxy.cfg"),
        &[
            ("callee_port", callee.port.to_string()),
            ("password", PASSWORD.into()),
        ],
        ca,
        server,
        clients == ClientCerts::Required,
    )
    .unwrap();
    TlsProxy {
        kamailio,
        tls_port,
        callee,
    }
}

fn tls_trunk(host: &str, port: u16, tls: TrunkTls) -> Trunk {
    let mut trunk = Trunk::new("tls-proxy", host, Transport::Tls);
    trunk.port = Some(port);
    trunk.tls = tls;
    trunk.credentials = Some(Credentials {
        username: "trunkuser".into(),
        password: PASSWORD.into(),
        realm: Some("dialtone.test".into()),
    });
    trunk
}

fn trusting(ca: &TestCa) -> TrunkTls {
    TrunkTls {
        ca_pem: Some(ca.ca.cert_pem.clone()),
        ..TrunkTls::default()
    }
}

async fn start_ua(listener: Option<&Issued>) -> SipUa {
    let mut config = UaConfig::new("127.0.0.1:0".parse().unwrap());
    config.timers = TimerConfig {
        t1: Duration::from_millis(100),
        ..TimerConfig::default()
    };
    config.tls = listener.map(|cert| TlsListen {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert_chain_pem: cert.cert_pem.clone(),
        key_pem: cert.key_pem.clone(),
    });
    SipUa::start(config).await.unwrap()
}

/// Places a call and collects its call events until the final one (at most 30 s), hanging up
/// on the answer when `hang_up_on_answer`.
async fn run_call(ua: &SipUa, trunk: Trunk, hang_up_on_answer: bool) -> Vec<CallEvent> {
    let mut request = DialRequest::new(Arc::new(trunk), "+15559870000", "+15551230000");
    let media = LocalMedia::new("127.0.0.1".parse().unwrap(), 20000);
    request.sdp_offer = Some(build_offer(&media, 1, 1).to_string().into_bytes());
    let mut call = ua.dial(request).await.unwrap();
    let mut events = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = call.next_event().await {
            if let UaEvent::Call(c) = e {
                if hang_up_on_answer && matches!(c, CallEvent::Answered { .. }) {
                    call.hang_up().unwrap();
                }
                events.push(c);
            }
        }
    })
    .await;
    events
}

fn completed(by: Party) -> CallEvent {
    CallEvent::Ended {
        by,
        reason: EndReason::Completed,
    }
}

#[tokio::test]
async fn a_call_and_a_probe_through_a_tls_proxy_demanding_digest_auth() {
    let ca = TestCa::new("Dialtone TLS test CA").unwrap();
    let server = ca.issue("proxy", &["localhost", "127.0.0.1"]).unwrap();
    let proxy = tls_proxy(
        &ca,
        &server,
        ClientCerts::NotAsked,
        "answer_then_we_hang_up.xml",
    );
    // The first OPTIONS opens the connection: TCP connect (+ TLS handshake) + the
    // transaction, side by side over TCP and TLS to the same proxy, each on a fresh UA, twice
    // (the first round also warms the proxy up).
    let tcp_trunk = Trunk {
        transport: Transport::Tcp,
        port: Some(proxy.kamailio.port),
        ..tls_trunk("127.0.0.1", 0, TrunkTls::default())
    };
    let trunk = tls_trunk("127.0.0.1", proxy.tls_port, trusting(&ca));
    let mut ua = start_ua(None).await;
    for round in 1..=2 {
        let mut first = Vec::new();
        for trunk in [&tcp_trunk, &trunk] {
            ua = start_ua(None).await;
            let started = std::time::Instant::now();
            assert_eq!(ua.probe(trunk).await.unwrap(), 200);
            first.push(started.elapsed());
        }
        let started = std::time::Instant::now();
        assert_eq!(ua.probe(&trunk).await.unwrap(), 200);
        println!(
            "round {round}: first OPTIONS over TCP {:?}, over TLS with the handshake {:?}; \
             again over the open TLS connection {:?}",
            first[0],
            first[1],
            started.elapsed()
        );
    }
    let events = run_call(&ua, trunk, true).await;
    let log = proxy.kamailio.log();
    assert_eq!(
        events.last(),
        Some(&completed(Party::Local)),
        "{events:?}\n{log}"
    );
    assert!(log.contains("OPTIONS over tls"), "{log}");
    assert!(log.contains("challenging INVITE over tls"), "{log}");
    assert!(
        log.contains("authenticated INVITE over tls for trunkuser"),
        "{log}"
    );
    assert_eq!(ua.stats().await.unwrap().endpoint.auth_retries, 1);
    proxy.callee.finish(Duration::from_secs(30)).unwrap();
}

#[tokio::test]
async fn the_callee_hangs_up_through_the_proxy_over_our_tls_listener() {
    let ca = TestCa::new("Dialtone TLS test CA").unwrap();
    let server = ca.issue("proxy", &["localhost", "127.0.0.1"]).unwrap();
    let ours = ca.issue("dialtone", &["127.0.0.1"]).unwrap();
    let proxy = tls_proxy(
        &ca,
        &server,
        ClientCerts::NotAsked,
        "answer_then_callee_hangs_up_routed.xml",
    );
    let ua = start_ua(Some(&ours)).await;
    assert!(ua.tls_local_addr().is_some());
    let events = run_call(
        &ua,
        tls_trunk("localhost", proxy.tls_port, trusting(&ca)),
        false,
    )
    .await;
    assert_eq!(
        events.last(),
        Some(&completed(Party::Remote)),
        "{events:?}\n{}",
        proxy.kamailio.log()
    );
    proxy.callee.finish(Duration::from_secs(30)).unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_or_a_name_not_in_it_ends_the_call_as_tls_failed() {
    let ca = TestCa::new("Dialtone TLS test CA").unwrap();
    let stranger = TestCa::new("Some other CA").unwrap();
    let server = ca.issue("proxy", &["sip.example.test"]).unwrap();
    let proxy = tls_proxy(
        &ca,
        &server,
        ClientCerts::NotAsked,
        "answer_then_we_hang_up.xml",
    );
    let ua = start_ua(None).await;
    let refused = CallEvent::Failed {
        status: None,
        reason: EndReason::TlsFailed,
    };
    // The CA is not the one that signed the proxy's certificate.
    let events = run_call(
        &ua,
        tls_trunk("127.0.0.1", proxy.tls_port, trusting(&stranger)),
        true,
    )
    .await;
    assert_eq!(events.last(), Some(&refused), "{events:?}");
    // The right CA, but the address is not a name the certificate carries.
    let events = run_call(
        &ua,
        tls_trunk("127.0.0.1", proxy.tls_port, trusting(&ca)),
        true,
    )
    .await;
    assert_eq!(events.last(), Some(&refused), "{events:?}");
    assert!(!proxy.kamailio.log().contains("INVITE over tls"));
    // `tls_verify: false` (tests only) takes it all.
    let unverified = TrunkTls {
        verify: false,
        ..TrunkTls::default()
    };
    let events = run_call(
        &ua,
        tls_trunk("127.0.0.1", proxy.tls_port, unverified),
        true,
    )
    .await;
    assert_eq!(events.last(), Some(&completed(Party::Local)), "{events:?}");
    proxy.callee.finish(Duration::from_secs(30)).unwrap();
}

#[tokio::test]
async fn a_proxy_demanding_client_certificates_takes_ours_and_refuses_none() {
    let ca = TestCa::new("Dialtone TLS test CA").unwrap();
    let server = ca.issue("proxy", &["127.0.0.1"]).unwrap();
    let client = ca.issue("client", &["dialtone.test"]).unwrap();
    let proxy = tls_proxy(
        &ca,
        &server,
        ClientCerts::Required,
        "answer_then_we_hang_up.xml",
    );
    let ua = start_ua(None).await;
    let events = run_call(
        &ua,
        tls_trunk("127.0.0.1", proxy.tls_port, trusting(&ca)),
        true,
    )
    .await;
    assert!(
        matches!(events.last(), Some(CallEvent::Failed { status: None, .. })),
        "{events:?}"
    );
    let mutual = TrunkTls {
        client_cert_pem: Some(client.cert_pem.clone()),
        client_key_pem: Some(client.key_pem.clone()),
        ..trusting(&ca)
    };
    let events = run_call(&ua, tls_trunk("127.0.0.1", proxy.tls_port, mutual), true).await;
    assert_eq!(
        events.last(),
        Some(&completed(Party::Local)),
        "{events:?}\n{}",
        proxy.kamailio.log()
    );
    proxy.callee.finish(Duration::from_secs(30)).unwrap();
}

/// A trunk whose TLS settings change gets a new connection; the old one, dropped, reports its
/// end late, after the new one carries the next probe — and that end leaves the new
/// connection alone: every probe is answered, and one connection stays open.
#[tokio::test]
async fn a_late_end_of_a_replaced_connection_leaves_the_new_one_alone() {
    let ca = TestCa::new("Dialtone TLS test CA").unwrap();
    let server = ca.issue("proxy", &["127.0.0.1"]).unwrap();
    let proxy = tls_proxy(
        &ca,
        &server,
        ClientCerts::NotAsked,
        "answer_then_we_hang_up.xml",
    );
    let ua = start_ua(None).await;
    let before = tls_trunk("127.0.0.1", proxy.tls_port, trusting(&ca));
    assert_eq!(ua.probe(&before).await.unwrap(), 200);
    // The same CA written differently: other settings, so another connection.
    let mut changed = trusting(&ca);
    changed.ca_pem = changed.ca_pem.map(|pem| format!("{pem}\n"));
    let after = tls_trunk("127.0.0.1", proxy.tls_port, changed);
    for probe in 1..=3 {
        assert_eq!(
            ua.probe(&after).await.unwrap(),
            200,
            "probe {probe}\n{}",
            proxy.kamailio.log()
        );
    }
    assert_eq!(ua.stats().await.unwrap().tcp_connections, 1);
}

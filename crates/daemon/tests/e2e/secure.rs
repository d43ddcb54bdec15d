//! Secure trunks end to end against baresip, answering over SIP over TLS with its own
//! certificate from a CA the test makes: audio checked both ways in clear RTP and in SRTP (with
//! a capture showing nothing left in clear), and `srtp: required` refused by a callee without
//! SRTP; a TLS call left by a killed daemon hung up by the next start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dialtone_daemon::SipTls;
use dialtone_test_support::media::{Baresip, BaresipTls, CalleeSetup, speech_ulaw, write_wav};
use dialtone_test_support::pki::TestCa;
use dialtone_test_support::{SipTransport, Sipp, SippOptions, scenario};
use serde_json::json;

use super::{wait_final, world_on};

/// espeak-ng saying `text` at 8 kHz (baresip's G.711 wants its source so), then five seconds
/// of silence, as baresip's source file; and the speech alone.
fn speech_wav(dir: &Path, text: &str) -> (Vec<i16>, PathBuf) {
    let speech: Vec<i16> = speech_ulaw(dir, text)
        .unwrap()
        .into_iter()
        .map(dialtone_codec::ulaw_to_linear)
        .collect();
    let mut audio = speech.clone();
    audio.extend(std::iter::repeat_n(0i16, 8000 * 5));
    let wav = dir.join("callee.wav");
    write_wav(&wav, 8000, &audio).unwrap();
    (speech, wav)
}

/// baresip heard (decoded, and decrypted where it must) its own speech come back from
/// `builtin:echo`: loud frames for at least half the speech's length.
fn assert_heard_back(baresip: &Baresip, speech: &[i16]) {
    let (_, heard) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
    let loud = heard
        .chunks_exact(160)
        .filter(|f| dialtone_codec::level_dbfs(f) > -40.0)
        .count();
    assert!(
        loud * 160 > speech.len() / 2,
        "baresip heard its speech echoed: {loud} loud frames\n{}",
        baresip.log()
    );
}

/// baresip answering over TLS with a certificate from `ca`, playing `wav`, with `mediaenc`.
fn tls_callee(ca: &TestCa, wav: &Path, mediaenc: Option<&str>) -> Baresip {
    let certificate = ca.issue("baresip", &["127.0.0.1"]).unwrap();
    Baresip::callee_with(
        wav,
        &CalleeSetup {
            tls: Some(BaresipTls {
                certificate: certificate.combined_path().unwrap(),
                ca: ca.ca.cert_path.clone(),
            }),
            mediaenc,
            ..CalleeSetup::default()
        },
    )
    .unwrap()
}

/// baresip over TLS with `builtin:echo`: its speech comes back to it (energy where it spoke),
/// the call completes, and the trunk shows TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tls_carries_audio_both_ways() {
    let ca = TestCa::new("Dialtone e2e CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (speech, wav) = speech_wav(dir.path(), "Secure trunks carry the same voice.");
    let baresip = tls_callee(&ca, &wav, None);
    let (w, _) = secure_world(&ca, baresip.tls_port(), "off").await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        record["status"],
        "completed",
        "{record:#}\n{}",
        baresip.log()
    );
    assert_eq!(record["end_reason"]["code"], "max_duration", "{record:#}");
    assert_heard_back(&baresip, &speech);
    w.finish().await;
}

/// A daemon whose TLS listener has a certificate from `ca`, its trunk turned to `transport
/// tls` towards baresip at `port` with `srtp`; and a capture filter for what its RTP ports send
/// to baresip's.
async fn secure_world(ca: &TestCa, port: u16, srtp: &str) -> (super::World, String) {
    let cert = ca.issue("daemon", &["127.0.0.1"]).unwrap();
    let mut ours = (0, 0);
    let w = world_on(
        |c| {
            ours = c.rtp_ports;
            c.sip_tls = Some(SipTls {
                addr: "127.0.0.1:0".parse().unwrap(),
                cert: cert.cert_path.clone(),
                key: cert.key_path.clone(),
                advertised_port: None,
            });
        },
        None,
        &[],
    )
    .await;
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, t) = w
        .api
        .patch(
            &trunk,
            json!({"transport": "tls", "port": port, "tls_ca_pem": ca.ca.cert_pem, "srtp": srtp}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["srtp"], srtp);
    assert_eq!(t["transport"], "tls");
    assert_eq!(t["tls_verify"], true);
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"max_duration_seconds": 8}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let filter = format!(
        "udp src portrange {}-{} and dst portrange 47000-47999",
        ours.0, ours.1
    );
    (w, filter)
}

/// baresip over TLS with mandatory SRTP (SDES keys in the TLS-protected SDP), `srtp:
/// required` on the trunk: its speech comes back through `builtin:echo`, and every datagram we
/// sent it was SRTP — an 80-bit tag on each 20 ms PCMU packet and payload bytes as random as
/// ciphertext, not µ-law.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tls_and_srtp_carries_audio_and_nothing_in_clear() {
    use dialtone_test_support::sniff::{UdpSniffer, entropy_bits_per_byte};
    let ca = TestCa::new("Dialtone e2e CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (speech, wav) = speech_wav(dir.path(), "Nobody on the path hears this.");
    let baresip = tls_callee(&ca, &wav, Some("srtp-mand"));
    let (w, ours_to_baresip) = secure_world(&ca, baresip.tls_port(), "required").await;
    // What our RTP ports send to baresip's (even: RTP; RTCP goes to the odd one above).
    let sniffer = UdpSniffer::start(&ours_to_baresip).unwrap();
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    let datagrams = sniffer.stop().unwrap();
    assert_eq!(
        record["status"],
        "completed",
        "{record:#}\n{}",
        baresip.log()
    );
    assert_heard_back(&baresip, &speech);
    let rtp: Vec<&[u8]> = datagrams
        .iter()
        .filter(|d| d.dst_port % 2 == 0)
        .map(|d| d.payload.as_slice())
        .collect();
    assert!(rtp.len() > 100, "{} RTP datagrams captured", rtp.len());
    assert!(
        rtp.iter().all(|p| p.len() == 12 + 160 + 10),
        "every packet is a PCMU frame with its 80-bit SRTP tag: {:?}",
        rtp.iter()
            .map(|p| p.len())
            .collect::<std::collections::BTreeSet<_>>()
    );
    let payload: Vec<u8> = rtp
        .iter()
        .flat_map(|p| p.get(12..172).unwrap_or_default().iter().copied())
        .collect();
    let entropy = entropy_bits_per_byte(&payload);
    println!("SRTP payload entropy: {entropy:.2} bits per byte");
    assert!(
        entropy > 7.9,
        "payloads look like ciphertext: {entropy:.2} bits/byte"
    );
    w.finish().await;
}

/// `srtp: required` towards a callee with no SRTP: it refuses our RTP/SAVP offer and the call
/// ends `srtp_unavailable`; nothing was ever sent to it in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_required_to_a_callee_without_it_is_refused() {
    use dialtone_test_support::sniff::UdpSniffer;
    let ca = TestCa::new("Dialtone e2e CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("callee.wav");
    write_wav(&wav, 8000, &[1000i16; 8000 * 3]).unwrap();
    let baresip = tls_callee(&ca, &wav, None);
    let (w, ours_to_baresip) = secure_world(&ca, baresip.tls_port(), "required").await;
    let sniffer = UdpSniffer::start(&ours_to_baresip).unwrap();
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    let datagrams = sniffer.stop().unwrap();
    assert_eq!(record["status"], "failed", "{record:#}\n{}", baresip.log());
    assert_eq!(
        record["end_reason"]["code"], "srtp_unavailable",
        "{record:#}"
    );
    assert!(datagrams.is_empty(), "sent to the callee: {datagrams:?}");
    w.finish().await;
}

/// The whole secure path through a proxy: Kamailio with its TLS module demanding digest
/// authentication in front of baresip with mandatory SRTP (Kamailio relays to it over UDP; the
/// keys ride in the SDP it relays). The call completes and baresip hears its speech echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_tls_proxy_demanding_digest_auth_to_an_srtp_callee() {
    let ca = TestCa::new("Dialtone e2e CA").unwrap();
    let proxy_cert = ca.issue("kamailio", &["127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (speech, wav) = speech_wav(dir.path(), "Through the proxy and still private.");
    let baresip = Baresip::callee_with(
        &wav,
        &CalleeSetup {
            mediaenc: Some("srtp-mand"),
            ..CalleeSetup::default()
        },
    )
    .unwrap();
    let (kamailio, tls_port) = dialtone_test_support::Kamailio::start_tls(
        &dialtone_test_support::scenario("kamailio-tls-auth-proxy.cfg"),
        &[
            ("callee_port", baresip.port.to_string()),
            ("password", "hunter2".into()),
        ],
        &ca,
        &proxy_cert,
        false,
    )
    .unwrap();
    let (w, _) = secure_world(&ca, tls_port, "required").await;
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, t) = w
        .api
        .patch(
            &trunk,
            json!({"username": "trunkuser", "realm": "dialtone.test"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        record["status"],
        "completed",
        "{record:#}\n{}\n{}",
        kamailio.log(),
        baresip.log()
    );
    assert!(
        kamailio
            .log()
            .contains("authenticated INVITE over tls for trunkuser"),
        "{}",
        kamailio.log()
    );
    assert_heard_back(&baresip, &speech);
    w.finish().await;
}

/// The API's rules for a trunk's security fields: TLS brings port 5061 unless one is set,
/// `srtp` needs TLS (400 naming the field and why), a broken PEM and a client key that is not
/// the client certificate's are refused, the client key is never returned, and moving a trunk
/// off TLS drops its TLS settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_security_fields_follow_their_rules() {
    let ca = TestCa::new("Dialtone e2e CA").unwrap();
    let client = ca.issue("client", &["dialtone.test"]).unwrap();
    let w = super::world(None, &[]).await;
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, e) = w.api.patch(&trunk, json!({"srtp": "required"})).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "srtp");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("tls"),
        "{e}"
    );
    let (s, e) = w
        .api
        .patch(
            &trunk,
            json!({"transport": "tls", "tls_ca_pem": "-----BEGIN nonsense"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "tls_ca_pem");
    // A well-formed key of another certificate: every call would fail, so the trunk is refused.
    let other = ca.issue("other", &["other.test"]).unwrap();
    let (s, e) = w
        .api
        .patch(
            &trunk,
            json!({
                "transport": "tls", "tls_client_cert_pem": client.cert_pem,
                "tls_client_key_pem": other.key_pem,
            }),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "tls_client_key_pem", "{e}");
    let (s, t) = w
        .api
        .patch(
            &trunk,
            json!({
                "transport": "tls", "port": null, "tls_ca_pem": ca.ca.cert_pem, "srtp": "optional",
                "tls_client_cert_pem": client.cert_pem, "tls_client_key_pem": client.key_pem,
            }),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["port"], 5061);
    assert_eq!(t["has_tls_client_key"], true);
    assert!(t.get("tls_client_key_pem").is_none(), "write-only: {t}");
    assert!(!t.to_string().contains("PRIVATE KEY"), "{t}");
    let (s, t) = w
        .api
        .patch(&trunk, json!({"transport": "udp", "srtp": "off"}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["port"], 5060);
    assert_eq!(t["tls_ca_pem"], serde_json::Value::Null);
    assert_eq!(t["has_tls_client_key"], false);
    w.finish().await;
}

/// The real binary, killed with SIGKILL during a call through a TLS trunk (Kamailio's TLS
/// proxy, digest auth, in front of SIPp): the next start opens a TLS connection with the
/// trunk's settings (the test's CA) and sends the BYE from the dialog kept in storage along its
/// route set; the proxy relays it and SIPp's scenario, which waits for it, ends. The record is
/// closed as `engine_restart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_the_next_start_hangs_up_a_tls_call() {
    let ca = TestCa::new("Dialtone e2e CA").unwrap();
    let proxy_cert = ca.issue("kamailio", &["127.0.0.1"]).unwrap();
    let sipp = Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &SippOptions::default(),
    )
    .unwrap();
    let (kamailio, tls_port) = dialtone_test_support::Kamailio::start_tls(
        &scenario("kamailio-tls-auth-proxy.cfg"),
        &[
            ("callee_port", sipp.port.to_string()),
            ("password", "hunter2".into()),
        ],
        &ca,
        &proxy_cert,
        false,
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let http = dialtone_test_support::free_port().unwrap();
    let api = super::Api {
        base: format!("http://127.0.0.1:{http}"),
        http: reqwest::Client::new(),
    };
    let start = || super::dialtoned(data.path(), http, "32400-32499", &[]);
    let mut first = start();
    super::wait_up(&api.base).await;
    let (agent_id, _) = super::setup_agent(&api, tls_port).await;
    let (_, trunks) = api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, t) = api
        .patch(
            &trunk,
            json!({
                "transport": "tls", "port": tls_port, "tls_ca_pem": ca.ca.cert_pem,
                "username": "trunkuser", "realm": "dialtone.test",
            }),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let (_, call) = api
        .post(
            "/v1/calls",
            json!({"agent_id": agent_id, "to": "+15551230000"}),
        )
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    super::wait_status(&api, &id, "in_progress").await;
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = start();
    super::wait_up(&api.base).await;
    let record = wait_final(&api, &id).await;
    super::assert_ended(&record, "failed", "engine_restart", "engine");
    // SIPp got the BYE through the proxy and answered it; without it the scenario never ends.
    let finished = tokio::task::spawn_blocking(move || sipp.finish(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(finished.is_ok(), "{finished:?}\n{}", kamailio.log());
    second.kill().unwrap();
    second.wait().unwrap();
}

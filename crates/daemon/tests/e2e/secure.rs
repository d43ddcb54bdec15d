//! Secure trunks end to end: a call over SIP over TLS to baresip, answering with its own
//! certificate from a CA the test makes, with audio checked both ways; the daemon's own TLS
//! listener takes baresip's requests in the dialog.

use std::time::Duration;

use dialtone_daemon::SipTls;
use dialtone_test_support::media::{Baresip, BaresipTls, CalleeSetup, speech_ulaw, write_wav};
use dialtone_test_support::pki::TestCa;
use serde_json::json;

use super::{wait_final, world_on};

/// baresip over TLS with `builtin:echo`: its speech comes back to it (energy where it spoke),
/// the call completes, and the trunk shows TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tls_carries_audio_both_ways() {
    let ca = TestCa::new("Dialtone e2e CA").unwrap();
    let callee_cert = ca.issue("baresip", &["127.0.0.1"]).unwrap();
    let daemon_cert = ca.issue("daemon", &["127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // baresip's G.711 wants its source at 8 kHz.
    let speech: Vec<i16> = speech_ulaw(dir.path(), "Secure trunks carry the same voice.")
        .unwrap()
        .into_iter()
        .map(dialtone_codec::ulaw_to_linear)
        .collect();
    let mut audio = speech.clone();
    audio.extend(std::iter::repeat_n(0i16, 8000 * 5));
    let wav = dir.path().join("callee.wav");
    write_wav(&wav, 8000, &audio).unwrap();
    let baresip = Baresip::callee_with(
        &wav,
        &CalleeSetup {
            tls: Some(BaresipTls {
                certificate: callee_cert.combined_path().unwrap(),
                ca: ca.ca.cert_path.clone(),
            }),
            ..CalleeSetup::default()
        },
    )
    .unwrap();
    let w = world_on(
        |c| {
            c.sip_tls = Some(SipTls {
                addr: "127.0.0.1:0".parse().unwrap(),
                cert: daemon_cert.cert_path.clone(),
                key: daemon_cert.key_path.clone(),
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
            json!({"transport": "tls", "port": baresip.tls_port(), "tls_ca_pem": ca.ca.cert_pem}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["transport"], "tls");
    assert_eq!(t["tls_verify"], true);
    // The agent ends the call (our BYE over TLS) once the speech has come and gone.
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"max_duration_seconds": 8}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        record["status"],
        "completed",
        "{record:#}\n{}",
        baresip.log()
    );
    assert_eq!(record["end_reason"]["code"], "max_duration", "{record:#}");
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
    w.finish().await;
}

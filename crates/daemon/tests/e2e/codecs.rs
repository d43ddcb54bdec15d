//! Codecs end to end against baresip: G.722 (wideband) both ways.

use std::time::Duration;

use dialtone_test_support::media::{Baresip, speech_pcm16k, write_wav};
use serde_json::json;

use super::agent::trunk_to;
use super::{wait_final, world};

/// The share of `samples`' energy above 4 kHz (a first-difference high-pass, which passes
/// 4–8 kHz at 2–4× and 0–1 kHz at under 0.4×, against the plain energy): what narrowband G.711
/// cannot carry.
fn high_band_share(samples: &[i16]) -> f64 {
    let energy: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    let high: f64 = samples
        .windows(2)
        .map(|w| (f64::from(w[1]) - f64::from(w[0])).powi(2))
        .sum();
    high / energy.max(1.0)
}

/// baresip with only its `g722` module answers our offer with G.722: its speech (espeak-ng at
/// 16 kHz, sibilants and all) reaches `builtin:echo` and comes back wideband — what baresip
/// recorded is 16 kHz and keeps its energy above 4 kHz, both ways through G.722.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g722_carries_wideband_speech_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let speech = speech_pcm16k(
        dir.path(),
        "Sister Suzie sews six shirts for sixty soldiers.",
    )
    .unwrap();
    let mut audio = speech.clone();
    audio.extend(std::iter::repeat_n(0i16, 16000 * 5));
    let wav = dir.path().join("callee.wav");
    write_wav(&wav, 16000, &audio).unwrap();
    let baresip = Baresip::callee_with_codec(&wav, "g722").unwrap();
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": "builtin:echo"}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    let (rate, heard) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
    assert_eq!(rate, 16000, "baresip decoded G.722 at 16 kHz");
    // The echo: the frames that carry sound.
    let echoed: Vec<i16> = heard
        .chunks_exact(320)
        .filter(|f| dialtone_codec::level_dbfs(f) > -40.0)
        .flatten()
        .copied()
        .collect();
    assert!(
        echoed.len() > speech.len() / 2,
        "the echo came back: {} of {} samples",
        echoed.len(),
        speech.len()
    );
    let sent = high_band_share(&speech);
    let back = high_band_share(&echoed);
    println!("high-band share: sent {sent:.3}, echoed back {back:.3}");
    assert!(
        back > sent * 0.5,
        "the echo kept the band above 4 kHz: {back:.3} against {sent:.3} sent"
    );
    w.finish().await;
}

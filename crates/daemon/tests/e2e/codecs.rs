//! Codecs end to end against baresip: G.722 (wideband) both ways, and the trunk's codec
//! preference deciding what a callee that has every codec answers.

use std::time::Duration;

use dialtone_test_support::media::{
    Baresip, CalleeSetup, speech_pcm_at, speech_pcm16k, write_wav, write_wav_channels,
};
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

/// The trunk's `codecs` decide the codec of a call to baresip with Opus, G.722 and G.711
/// loaded (it takes the first codec of our offer it has, RFC 3264): the default preference
/// gets Opus, `["g722", "pcmu"]` G.722, `["pcma", "pcmu"]` PCMA. Each call's speech comes back
/// from `builtin:echo` (energy where baresip spoke, decoded at the codec's rate), and the record
/// names the codec in `media_stats.codec`. The API refuses an empty list, a codec named twice
/// and an unknown codec, naming `codecs`; `null` restores the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trunks_codec_preference_picks_the_codec() {
    let w = world(None, &[]).await;
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    assert_eq!(
        trunks["data"][0]["codecs"],
        json!(["opus", "g722", "pcmu", "pcma"]),
        "the default preference"
    );
    for (bad, why) in [
        (json!([]), "empty"),
        (json!(["pcmu", "g722", "pcmu"]), "twice"),
        (json!(["g729"]), "unknown"),
    ] {
        let (s, e) = w.api.patch(&trunk, json!({ "codecs": bad })).await;
        assert_eq!(s, 400, "{why}: {e}");
        assert_eq!(e["error"]["field"], "codecs", "{why}: {e}");
    }
    let (s, e) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": "builtin:echo"}),
        )
        .await;
    assert_eq!(s, 200, "{e}");
    let dir = tempfile::tempdir().unwrap();
    for (codecs, expected, rate, channels) in [
        (serde_json::Value::Null, "opus", 48000, 2),
        (json!(["g722", "pcmu"]), "g722", 16000, 1),
        (json!(["pcma", "pcmu"]), "pcma", 8000, 1),
    ] {
        // baresip wants its source at the codec's rate and channels.
        let speech = speech_pcm_at(dir.path(), "Seven silver swans swam silently.", rate).unwrap();
        let mut audio = speech.clone();
        audio.extend(std::iter::repeat_n(0i16, rate as usize * 5));
        let wav = dir.path().join(format!("callee-{expected}.wav"));
        write_wav_channels(&wav, rate, channels, &audio).unwrap();
        let baresip = Baresip::callee_with(
            &wav,
            &CalleeSetup {
                codecs: &["opus", "g722", "g711"],
                ..CalleeSetup::default()
            },
        )
        .unwrap();
        let (s, t) = w
            .api
            .patch(&trunk, json!({"port": baresip.port, "codecs": codecs}))
            .await;
        assert_eq!(s, 200, "{t}");
        let id = w.dispatch(json!({})).await;
        let record = wait_final(&w.api, &id).await;
        assert_eq!(record["status"], "completed", "{record:#}");
        assert_eq!(record["media_stats"]["codec"], expected, "{record:#}");
        assert_eq!(record["media_stats"]["srtp"], serde_json::Value::Null);
        let (heard_rate, heard) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
        let frame = heard_rate as usize / 50;
        let loud = heard
            .chunks_exact(frame)
            .filter(|f| dialtone_codec::level_dbfs(f) > -40.0)
            .count();
        println!(
            "{expected}: baresip decoded at {heard_rate} Hz, {loud} loud frames of {} sent",
            speech.len() / (rate as usize / 50)
        );
        assert!(
            loud * (rate as usize / 50) > speech.len() / 2,
            "{expected}: baresip heard its speech echoed: {loud} loud frames\n{}",
            baresip.log()
        );
    }
    let (_, t) = w.api.get(&trunk).await;
    assert_eq!(t["codecs"], json!(["pcma", "pcmu"]));
    let (s, t) = w.api.patch(&trunk, json!({"codecs": null})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["codecs"], json!(["opus", "g722", "pcmu", "pcma"]));
    w.finish().await;
}

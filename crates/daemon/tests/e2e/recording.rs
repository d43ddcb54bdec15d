//! Call recording end to end: an agent with `record` dials baresip, which plays espeak-ng
//! speech to `builtin:echo` and records what it hears; the recording fetched through the API
//! has baresip's speech on the left and the echo it heard on the right, aligned; ranges,
//! another organisation's 404 and deletion. Once with the local store, once with an S3 bucket
//! of a real S3-compatible server on loopback (`s3s-fs`).

use std::path::PathBuf;
use std::time::Duration;

use dialtone_storage::S3Settings;
use dialtone_test_support::media::{Baresip, speech_ulaw, ulaw_to_wav};
use dialtone_test_support::s3::{ACCESS_KEY_ID, S3Server, SECRET_ACCESS_KEY};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::agent::trunk_to;
use super::{KEY, World, second_org, wait_final, world, world_on};

/// Energy per millisecond of `samples` at `rate`: an envelope that compares across rates.
fn envelope(samples: &[i16], rate: usize) -> Vec<f64> {
    samples
        .chunks_exact(rate / 1000)
        .map(|ms| ms.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>().sqrt())
        .collect()
}

/// The lag (ms, of `b` behind `a`) in `-range..=range` with the highest Pearson correlation
/// of the two envelopes (means removed: unrelated envelopes score near 0), and that
/// correlation.
fn best_lag(a: &[f64], b: &[f64], range: i64) -> (i64, f64) {
    let centred = |x: &[f64]| {
        let mean = x.iter().sum::<f64>() / x.len().max(1) as f64;
        x.iter().map(|v| v - mean).collect::<Vec<f64>>()
    };
    let (a, b) = (centred(a), centred(b));
    let mut best = (0, f64::MIN);
    for lag in -range..=range {
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (i, x) in a.iter().enumerate() {
            let j = i as i64 + lag;
            if j < 0 {
                continue;
            }
            let Some(y) = b.get(j as usize) else { break };
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        let r = ab / (aa.sqrt() * bb.sqrt()).max(1e-9);
        if r > best.1 {
            best = (lag, r);
        }
    }
    best
}

/// µ-law bytes decoded to PCM at 8 kHz.
fn decoded(ulaw: &[u8]) -> Vec<i16> {
    ulaw.chunks_exact(160)
        .flat_map(|f| {
            let mut pcm = [0i16; 160];
            dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).decode(f, &mut pcm);
            pcm
        })
        .collect()
}

async fn fetch(w: &World, path: &str, key: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = w
        .api
        .http
        .get(format!("{}{path}", w.api.base))
        .bearer_auth(key);
    if let Some(range) = range {
        req = req.header("range", range);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_has_the_caller_left_and_what_it_heard_right() {
    let w = world(None, &[]).await;
    let recordings = w._dir.path().join("recordings");
    a_recorded_call(w, move |id| recordings.join(id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_kept_in_an_s3_bucket_is_served_and_deleted_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path(), "dialtone").await.unwrap();
    let settings = S3Settings {
        bucket: "dialtone".into(),
        prefix: "recordings/".into(),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(ACCESS_KEY_ID.into()),
        secret_access_key: Some(SECRET_ACCESS_KEY.into()),
        allow_http: true,
        server_side_encryption: Some("AES256".into()),
        max_retries: 2,
    };
    let w = world_on(|c| c.recording_s3 = Some(settings), None, &[]).await;
    let staging = w._dir.path().join("recordings");
    a_recorded_call(w, move |id| {
        assert!(
            !staging.join(id).exists(),
            "uploaded, the file is not kept locally"
        );
        server.object("dialtone", &format!("recordings/{id}"))
    })
    .await;
}

/// The recorded call; `stored` is the file its store keeps recording `id` in.
async fn a_recorded_call(w: World, stored: impl Fn(&str) -> PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let speech = speech_ulaw(dir.path(), "Hello this is a test of call recording").unwrap();
    // Silence after the speech leaves time for the echo; baresip hangs up when the file ends.
    let padded: Vec<u8> = speech.iter().copied().chain([0xffu8; 8000 * 4]).collect();
    let wav = dir.path().join("callee.wav");
    ulaw_to_wav(&padded, 8000, &wav).unwrap();
    let baresip = Baresip::callee(&wav).unwrap();
    trunk_to(&w.api, baresip.port).await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"record": true}),
        )
        .await;
    assert_eq!((s, &agent["record"]), (200, &json!(true)), "{agent}");
    // Recording is the agent's: a call cannot ask for it.
    let (s, refused) = w
        .api
        .post(
            "/v1/calls",
            json!({"agent_id": w.agent_id, "to": "+15551230000", "record": true}),
        )
        .await;
    assert_eq!((s, &refused["error"]["field"]), (400, &json!("record")));

    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    let recording = &record["recording"];
    assert_eq!(record["recording_error"], Value::Null, "{record:#}");
    assert_eq!(recording["format"], "wav", "{record:#}");
    assert_eq!(recording["channels"], "stereo");
    assert_eq!(recording["id"], format!("{id}.wav"));
    let url = recording["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/v1/calls/{id}/recording"));

    let response = fetch(&w, &url, KEY, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    let file = response.bytes().await.unwrap();
    assert_eq!(file.len() as u64, recording["bytes"].as_u64().unwrap());
    let digest: String = Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(recording["sha256"], digest);
    let object = stored(recording["id"].as_str().unwrap());
    assert_eq!(std::fs::read(&object).unwrap(), file, "the store's copy");
    assert_eq!(&file[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([file[22], file[23]]), 2, "stereo");
    let samples: Vec<i16> = file[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let (left, right): (Vec<i16>, Vec<i16>) =
        samples.chunks_exact(2).map(|lr| (lr[0], lr[1])).unzip();
    assert_eq!(
        recording["duration_ms"].as_u64().unwrap(),
        left.len() as u64 / 16
    );

    // Left: what baresip sent; right: what baresip heard (the echo).
    let sent = envelope(&decoded(&padded), 8000);
    let (rate, heard) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
    let heard = envelope(&heard, rate as usize);
    let (left, right) = (envelope(&left, 16000), envelope(&right, 16000));
    let (left_lag, left_r) = best_lag(&sent, &left, 1000);
    let (right_lag, right_r) = best_lag(&heard, &right, 1000);
    println!("left: lag {left_lag} ms, r {left_r:.3}; right: lag {right_lag} ms, r {right_r:.3}");
    assert!(
        left_r > 0.6,
        "left channel vs baresip's speech: r = {left_r:.3}; media {}",
        record["media_stats"]
    );
    assert!(
        right_r > 0.6,
        "right channel vs what baresip heard: r = {right_r:.3}; media {}",
        record["media_stats"]
    );
    // baresip's two recordings start together, and so do our two channels (one tick each,
    // on the media clock). The left channel is the caller as the agent heard it, out of our
    // jitter buffer; the right is what the agent played, as it went on the wire. So the left
    // lags the right by our jitter buffer's delay (0 up to its target), within one frame.
    let jitter_buffer_ms = record["media_stats"]["jitter_buffer_ms"].as_i64().unwrap();
    println!("the jitter buffer's target at the end: {jitter_buffer_ms} ms");
    assert!(
        (-20..=jitter_buffer_ms + 20).contains(&(left_lag - right_lag)),
        "left lags by {left_lag} ms, right by {right_lag} ms, the jitter buffer {jitter_buffer_ms} ms"
    );

    // A range, and one past the end.
    let part = fetch(&w, &url, KEY, Some("bytes=0-43")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 0-43/{}", file.len())
    );
    assert_eq!(part.bytes().await.unwrap(), file.slice(..44));
    let past = fetch(&w, &url, KEY, Some(&format!("bytes={}-", file.len()))).await;
    assert_eq!(past.status(), 416);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{}", file.len())
    );

    // Another organisation sees no such call.
    let (_, other_key) = second_org(&w.api, json!({})).await;
    assert_eq!(fetch(&w, &url, &other_key, None).await.status(), 404);
    let (s, _) = w
        .api
        .as_key(&other_key)
        .send(reqwest::Method::DELETE, &url, None)
        .await;
    assert_eq!(s, 404);

    // Deleted: gone from the store and from the record.
    let (s, _) = w.api.send(reqwest::Method::DELETE, &url, None).await;
    assert_eq!(s, 204);
    assert_eq!(fetch(&w, &url, KEY, None).await.status(), 404);
    assert!(!object.exists(), "removed from the store");
    let (_, after) = w.api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(after["recording"], Value::Null);
    let (s, _) = w.api.send(reqwest::Method::DELETE, &url, None).await;
    assert_eq!(s, 404);
    w.finish().await;
}

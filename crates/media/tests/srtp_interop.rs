#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Our SRTP against an independent implementation: libsrtp, through PyPI's `pylibsrtp`, in a
//! small Python peer (`tests/python/srtp_peer.py`) on loopback. A call's media (the real
//! driver: worker thread, sockets) and the peer send each other a PCMU tone as SRTP, in both
//! suites, with SRTCP reports both ways; each side checks the other's tone as audio
//! (frequency and level), and the peer checks that nothing it received was readable as
//! sent. The Python environment is `scripts/python-env.sh`'s (`DIALTONE_PYTHON`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dialtone_media::ring::RING_FRAMES;
use dialtone_media::{
    AudioFrame, FRAME_SAMPLES, FrameReceiver, FrameSender, MediaCodec, MediaConfig, MediaEngine,
    PortPool,
};
use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile};
use dialtone_test_support::audio::{sine, tone_amplitude};

const AMPLITUDE: f64 = 8000.0;
/// What we play, and what the peer plays.
const OUR_TONE: f64 = 1000.0;
const THEIR_TONE: f64 = 700.0;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter with pylibsrtp: `DIALTONE_PYTHON`, or the one `scripts/python-env.sh`
/// makes.
fn python() -> String {
    std::env::var("DIALTONE_PYTHON").unwrap_or_else(|_| {
        let out = Command::new(root().join("scripts/python-env.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

fn hex(key: &[u8; 16], salt: &[u8; 14]) -> String {
    key.iter().chain(salt).map(|b| format!("{b:02x}")).collect()
}

/// Keeps `sender` fed with our tone until the ring closes.
fn feed_tone(mut sender: FrameSender) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut index = 0usize;
        while !sender.is_closed() {
            while sender.free() > RING_FRAMES - 10 {
                let mut frame = AudioFrame::silence(Instant::now());
                sine(
                    16000,
                    OUR_TONE,
                    AMPLITUDE,
                    index * FRAME_SAMPLES,
                    &mut frame.samples,
                );
                index += 1;
                if sender.try_send(frame).is_err() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn collect(receiver: &mut FrameReceiver, frames: usize) -> Vec<i16> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < frames * FRAME_SAMPLES {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(f)) => out.extend(f.samples),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_srtp_and_libsrtp_hear_each_others_tones_in_both_suites() {
    let python = python();
    let engine = MediaEngine::new(1).unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 47140, 47159);
    for (suite, profile) in [
        ("80", SrtpProfile::Aes128CmHmacSha1_80),
        ("32", SrtpProfile::Aes128CmHmacSha1_32),
    ] {
        let (our_key, our_salt) = ([0x5a; 16], [0xa5; 14]);
        let (their_key, their_salt) = ([0x3c; 16], [0xc3; 14]);
        let port = pool.bind().unwrap();
        let mut peer = Command::new(&python)
            .arg(root().join("crates/media/tests/python/srtp_peer.py"))
            .arg(format!("127.0.0.1:{}", port.port()))
            .arg(suite)
            .arg(hex(&their_key, &their_salt))
            .arg(hex(&our_key, &our_salt))
            .arg(THEIR_TONE.to_string())
            .arg(OUR_TONE.to_string())
            .arg("5")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(peer.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let peer_port: u16 = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        let remote = SocketAddr::from(([127, 0, 0, 1], peer_port));
        let keys = SrtpKeys::new(
            profile,
            MasterKey::new(our_key, our_salt),
            MasterKey::new(their_key, their_salt),
        );
        let mut call = engine
            .start(
                port,
                MediaConfig {
                    // The peer has one socket: RTCP shares it (RFC 5761).
                    rtcp_mux: true,
                    srtp: Some(keys),
                    ..MediaConfig::new(MediaCodec::Pcmu, 0, Some(remote), 0x1234_5678)
                },
            )
            .unwrap();
        let feeder = feed_tone(call.take_outbound().unwrap());
        let mut inbound = call.take_inbound().unwrap();
        let heard = collect(&mut inbound, 150).await;
        let report = tokio::task::spawn_blocking(move || {
            let report = lines.next().unwrap().unwrap();
            assert!(peer.wait().unwrap().success());
            report
        })
        .await
        .unwrap();
        let stats = call.stop().await;
        feeder.await.unwrap();

        // The peer heard our tone, through libsrtp, and nothing in clear.
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        let n = |field: &str| report[field].as_f64().unwrap();
        assert!(n("rtp") >= 150.0, "suite {suite}: {report}");
        assert!(n("rtcp") >= 1.0, "our SRTCP opened: {report}");
        assert_eq!(n("failed"), 0.0, "{report}");
        assert_eq!(n("readable_as_sent"), 0.0, "{report}");
        assert!(
            (n("heard_amplitude") - AMPLITUDE).abs() < AMPLITUDE * 0.15,
            "suite {suite}: {report}"
        );
        assert!(n("elsewhere_amplitude") < AMPLITUDE * 0.06, "{report}");

        // We heard the peer's tone, and its SRTCP report about our stream.
        assert!(
            heard.len() >= 150 * FRAME_SAMPLES,
            "{} samples",
            heard.len()
        );
        let tail = &heard[heard.len() - 50 * FRAME_SAMPLES..];
        let at = tone_amplitude(tail, 16000, THEIR_TONE);
        assert!(
            (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
            "suite {suite}: heard {at:.0}"
        );
        assert!(tone_amplitude(tail, 16000, 1500.0) < AMPLITUDE * 0.06);
        assert_eq!(
            (
                stats.srtp_unauthenticated,
                stats.srtp_replayed,
                stats.malformed
            ),
            (0, 0, 0),
            "{stats:?}"
        );
        assert!(stats.rtcp_reports_in >= 1, "{stats:?}");
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! The media driver on real loopback sockets: worker threads, rings, DTMF, recording, RTP
//! timeout, and the ports going back to the pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_media::ring::RING_FRAMES;
use dialtone_media::{
    AudioFrame, FRAME_SAMPLES, FrameReceiver, FrameSender, MediaCall, MediaCodec, MediaConfig,
    MediaEngine, MediaEvent, PortPool,
};
use dialtone_rtp::DtmfEvent;
use dialtone_speech::InbandDtmf;
use dialtone_test_support::audio::{dtmf, sine, tone_amplitude};

const AMPLITUDE: f64 = 8000.0;

fn config(codec: MediaCodec, remote: SocketAddr, ssrc: u32) -> MediaConfig {
    let pt = match codec {
        MediaCodec::Opus => 111,
        MediaCodec::G722 => 9,
        _ => 0,
    };
    MediaConfig::new(codec, pt, Some(remote), ssrc)
}

/// Keeps `sender` fed with a tone at `hz`, paced by the ring's room, until `stop` is set.
fn feed_tone(mut sender: FrameSender, hz: f64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut index = 0usize;
        while !sender.is_closed() {
            while sender.free() > RING_FRAMES - 10 {
                let mut frame = AudioFrame::silence(Instant::now());
                sine(
                    16000,
                    hz,
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

/// Collects `frames` inbound frames (or what came within ten seconds).
async fn collect(receiver: &mut FrameReceiver, frames: usize) -> Vec<AudioFrame> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < frames {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(f)) => out.push(f),
            _ => break,
        }
    }
    out
}

fn joined(frames: &[AudioFrame]) -> Vec<i16> {
    frames.iter().flat_map(|f| f.samples).collect()
}

struct Pair {
    a: MediaCall,
    b: MediaCall,
}

fn pair(engine: &Arc<MediaEngine>, pool: &Arc<PortPool>, codec: MediaCodec) -> Pair {
    pair_with(engine, pool, codec, None)
}

/// A pair in PCMU where B (our side; A is the caller's) records as `record` says.
fn recording_pair(
    engine: &Arc<MediaEngine>,
    pool: &Arc<PortPool>,
    record: dialtone_media::RecordTo,
) -> Pair {
    pair_with(engine, pool, MediaCodec::Pcmu, Some(record))
}

fn pair_with(
    engine: &Arc<MediaEngine>,
    pool: &Arc<PortPool>,
    codec: MediaCodec,
    b_records: Option<dialtone_media::RecordTo>,
) -> Pair {
    let (pa, pb) = (pool.bind().unwrap(), pool.bind().unwrap());
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (a_addr, b_addr) = (addr(pa.port()), addr(pb.port()));
    let mut b = config(codec, a_addr, 2);
    b.record = b_records;
    Pair {
        a: engine.start(pa, config(codec, b_addr, 1)).unwrap(),
        b: engine.start(pb, b).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_tones_through_the_workers_in_every_codec() {
    let engine = MediaEngine::new(2).unwrap();
    assert_eq!(engine.workers(), 2);
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 45000, 45099);
    for codec in [
        MediaCodec::Pcmu,
        MediaCodec::Pcma,
        MediaCodec::Opus,
        MediaCodec::G722,
    ] {
        let Pair { mut a, mut b } = pair(&engine, &pool, codec);
        let feeders = [
            feed_tone(a.take_outbound().unwrap(), 1000.0),
            feed_tone(b.take_outbound().unwrap(), 700.0),
        ];
        let (mut a_in, mut b_in) = (a.take_inbound().unwrap(), b.take_inbound().unwrap());
        let (heard_by_b, heard_by_a) = tokio::join!(collect(&mut b_in, 60), collect(&mut a_in, 60));
        assert_eq!(heard_by_b.len(), 60, "{codec:?}");
        assert_eq!(heard_by_a.len(), 60, "{codec:?}");
        for (heard, hz, what) in [(&heard_by_b, 1000.0, "A→B"), (&heard_by_a, 700.0, "B→A")] {
            let tail = joined(&heard[40..]);
            let at = tone_amplitude(&tail, 16000, hz);
            assert!(
                (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
                "{codec:?} {what}: {at:.0}"
            );
            assert!(tone_amplitude(&tail, 16000, 1500.0) < AMPLITUDE * 0.05);
        }
        let (a_stats, b_stats) = (a.stop().await, b.stop().await);
        for f in feeders {
            f.await.unwrap();
        }
        assert!(
            a_stats.packets_out >= 60 && b_stats.packets_in >= 55,
            "{b_stats:?}"
        );
        assert_eq!((b_stats.malformed, b_stats.foreign), (0, 0));
        assert!(b_stats.voiced_frames_in >= 50);
    }
    assert_eq!(pool.in_use(), 0, "every port pair went back to the pool");
    let latency = engine.latency();
    assert!(latency.inbound.count >= 400 && latency.outbound.count >= 400);
    assert!(latency.step.count > 0);
    assert_eq!(latency.calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_sent_by_one_side_arrive_as_events_on_the_other() {
    let engine = MediaEngine::new(1).unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 45100, 45199);
    let Pair { a, mut b } = pair(&engine, &pool, MediaCodec::Pcmu);
    a.send_dtmf("42*").await.unwrap();
    assert!(matches!(
        a.send_dtmf("9z").await,
        Err(dialtone_media::MediaError::NotDtmf { digit: 'z' })
    ));
    let mut digits = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while digits.len() < 3 {
        match tokio::time::timeout_at(deadline, b.next_event()).await {
            Ok(Some(MediaEvent::Dtmf {
                event: DtmfEvent::Ended { digit, duration },
                ..
            })) => {
                assert_eq!(duration, Duration::from_millis(100));
                digits.push(digit);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert_eq!(digits, "42*");
    // Five packets a digit and two repeated ends, except the last digit's repeats, which may
    // still be on their way.
    assert!(a.stop().await.dtmf_packets_out >= 19);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_has_the_caller_left_and_the_agent_right() {
    let engine = MediaEngine::new(1).unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 45200, 45299);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call.wav");
    let Pair { mut a, mut b } = recording_pair(
        &engine,
        &pool,
        dialtone_media::RecordTo::stereo(path.clone()),
    );
    let feeders = [
        feed_tone(a.take_outbound().unwrap(), 1000.0),
        feed_tone(b.take_outbound().unwrap(), 700.0),
    ];
    let mut b_in = b.take_inbound().unwrap();
    assert_eq!(collect(&mut b_in, 100).await.len(), 100);
    let stats = b.stop().await;
    a.stop().await;
    for f in feeders {
        f.await.unwrap();
    }
    assert_eq!(stats.recording_dropped, 0);
    let wav = std::fs::read(&path).unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[8..16], b"WAVEfmt ");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "stereo");
    assert_eq!(
        u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]),
        16000
    );
    let data_len = u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]) as usize;
    assert_eq!(data_len, wav.len() - 44, "the header was finished");
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(samples.len() / 2 >= 100 * FRAME_SAMPLES);
    let (left, right): (Vec<i16>, Vec<i16>) =
        samples.chunks_exact(2).map(|lr| (lr[0], lr[1])).unzip();
    // One second from the middle of each channel.
    let middle = |c: &[i16]| c[c.len() / 2 - 8000..c.len() / 2 + 8000].to_vec();
    let (left, right) = (middle(&left), middle(&right));
    assert!(tone_amplitude(&left, 16000, 1000.0) > AMPLITUDE * 0.8);
    assert!(tone_amplitude(&left, 16000, 700.0) < AMPLITUDE * 0.05);
    assert!(tone_amplitude(&right, 16000, 700.0) > AMPLITUDE * 0.8);
    assert!(tone_amplitude(&right, 16000, 1000.0) < AMPLITUDE * 0.05);
}

/// What the agent played is recorded, not what it queued: while the far end holds the call
/// nothing is sent, and the agent's channel is silent though the agent kept feeding its tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_channel_is_silent_while_nothing_is_sent() {
    let engine = MediaEngine::new(1).unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 45400, 45499);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.wav");
    let Pair { mut a, mut b } = recording_pair(
        &engine,
        &pool,
        dialtone_media::RecordTo::stereo(path.clone()),
    );
    // Held from the start: B may not send.
    b.redirect(dialtone_media::Direction {
        sending: false,
        receiving: true,
        remote: None,
    });
    let feeders = [
        feed_tone(a.take_outbound().unwrap(), 1000.0),
        feed_tone(b.take_outbound().unwrap(), 700.0),
    ];
    let mut b_in = b.take_inbound().unwrap();
    assert_eq!(collect(&mut b_in, 100).await.len(), 100);
    b.stop().await;
    a.stop().await;
    for f in feeders {
        f.await.unwrap();
    }
    let wav = std::fs::read(&path).unwrap();
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let (left, right): (Vec<i16>, Vec<i16>) =
        samples.chunks_exact(2).map(|lr| (lr[0], lr[1])).unzip();
    let middle = |c: &[i16]| c[c.len() / 2 - 8000..c.len() / 2 + 8000].to_vec();
    assert!(tone_amplitude(&middle(&left), 16000, 1000.0) > AMPLITUDE * 0.8);
    assert!(
        right.iter().all(|s| *s == 0),
        "the held agent's tone was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_end_that_never_sends_times_out_once() {
    let engine = MediaEngine::new(1).unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 45300, 45399);
    let silent_peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut quiet = config(MediaCodec::Pcma, silent_peer.local_addr().unwrap(), 3);
    quiet.rtp_timeout = Duration::from_millis(300);
    let mut call = engine.start(pool.bind().unwrap(), quiet).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), call.next_event())
        .await
        .unwrap();
    assert!(matches!(
        event,
        Some(MediaEvent::RtpTimeout { silent_for }) if silent_for >= Duration::from_millis(300)
    ));
    // Our RTP still went out to it the whole time.
    let mut buf = [0u8; 300];
    silent_peer
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let n = silent_peer.recv(&mut buf).unwrap();
    assert_eq!(dialtone_rtp::parse(&buf[..n]).unwrap().payload_type, 0);
    let stats = call.stop().await;
    assert!(stats.packets_out >= 10);
    assert_eq!(pool.in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_recording_holds_both_sides_and_silences_masked_key_presses() {
    let engine = MediaEngine::new(1).unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 45300, 45399);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.wav");
    let Pair { mut a, mut b } = recording_pair(
        &engine,
        &pool,
        dialtone_media::RecordTo {
            path: path.clone(),
            mixed: true,
            mask_dtmf: true,
        },
    );
    let feeders = [
        feed_tone(a.take_outbound().unwrap(), 1000.0),
        feed_tone(b.take_outbound().unwrap(), 700.0),
    ];
    let mut b_in = b.take_inbound().unwrap();
    assert_eq!(collect(&mut b_in, 50).await.len(), 50);
    a.send_dtmf("5").await.unwrap();
    assert_eq!(collect(&mut b_in, 100).await.len(), 100);
    let (stats, outcome) = b.stop_recorded().await;
    a.stop().await;
    for f in feeders {
        f.await.unwrap();
    }
    assert_eq!(stats.dtmf_digits, 1);
    let wav = std::fs::read(&path).unwrap();
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1, "mono");
    assert_eq!(
        outcome,
        Some(dialtone_media::RecordingOutcome::Complete {
            frames: ((wav.len() - 44) / (FRAME_SAMPLES * 2)) as u64,
            bytes: wav.len() as u64,
        })
    );
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let frames: Vec<&[i16]> = samples.chunks_exact(FRAME_SAMPLES).collect();
    // The key press and its tail: a run of all-zero frames (neither side), the 100 ms press
    // and the 300 ms after it.
    let mut longest = 0;
    let mut run = 0;
    for f in &frames {
        run = if f.iter().all(|s| *s == 0) {
            run + 1
        } else {
            0
        };
        longest = longest.max(run);
    }
    assert!(longest >= 15, "longest silent run {longest} frames");
    // Before the press both sides are heard in the one channel.
    let before = joined_samples(&frames[20..45]);
    assert!(tone_amplitude(&before, 16000, 1000.0) > AMPLITUDE * 0.7);
    assert!(tone_amplitude(&before, 16000, 700.0) > AMPLITUDE * 0.7);
}

/// Frames of the in-band key press [`feed_key_tone`] sends: from frame 40, 200 ms of `7`.
const KEY_FRAMES: std::ops::Range<usize> = 40..50;

/// A 1000 Hz tone with the key `7` sent in-band over it at [`KEY_FRAMES`] (the tone stops
/// while the key sounds, as a phone's keypad does).
fn feed_key_tone(mut sender: FrameSender) -> tokio::task::JoinHandle<()> {
    let mut key = vec![0i16; KEY_FRAMES.len() * FRAME_SAMPLES];
    dtmf(16000, '7', AMPLITUDE / 2.0, &mut key);
    tokio::spawn(async move {
        let mut index = 0usize;
        while !sender.is_closed() {
            while sender.free() > RING_FRAMES - 10 {
                let mut frame = AudioFrame::silence(Instant::now());
                if KEY_FRAMES.contains(&index) {
                    let at = (index - KEY_FRAMES.start) * FRAME_SAMPLES;
                    frame.samples.copy_from_slice(&key[at..at + FRAME_SAMPLES]);
                } else {
                    let start = index * FRAME_SAMPLES;
                    sine(16000, 1000.0, AMPLITUDE, start, &mut frame.samples);
                }
                index += 1;
                if sender.try_send(frame).is_err() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_recording_silences_an_in_band_key_tone_whole_in_both_channels() {
    let engine = MediaEngine::new(1).unwrap();
    let pool = PortPool::new("127.0.0.1".parse().unwrap(), 45400, 45499);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masked.wav");
    let Pair { mut a, mut b } = recording_pair(
        &engine,
        &pool,
        dialtone_media::RecordTo {
            path: path.clone(),
            mixed: false,
            mask_dtmf: true,
        },
    );
    let feeders = [
        feed_key_tone(a.take_outbound().unwrap()),
        feed_tone(b.take_outbound().unwrap(), 700.0),
    ];
    let mut b_in = b.take_inbound().unwrap();
    let heard = collect(&mut b_in, 120).await;
    assert_eq!(heard.len(), 120);
    let (stats, outcome) = b.stop_recorded().await;
    a.stop().await;
    for f in feeders {
        f.await.unwrap();
    }
    assert_eq!(stats.dtmf_events, 0, "in-band only: no RFC 4733 event");
    // The speech loop's detector hears the key in what it is given (so the transcript masks it).
    let mut detector = InbandDtmf::default();
    let digits: Vec<char> = heard
        .iter()
        .filter_map(|f| detector.frame(&f.samples, 16000))
        .collect();
    assert_eq!(digits, ['7']);
    let wav = std::fs::read(&path).unwrap();
    assert!(matches!(
        outcome,
        Some(dialtone_media::RecordingOutcome::Complete { frames, .. })
            if frames == ((wav.len() - 44) / (FRAME_SAMPLES * 4)) as u64
    ));
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let (left, right): (Vec<i16>, Vec<i16>) =
        samples.chunks_exact(2).map(|lr| (lr[0], lr[1])).unzip();
    let frames = |c: &[i16]| -> Vec<Vec<i16>> {
        c.chunks_exact(FRAME_SAMPLES).map(<[i16]>::to_vec).collect()
    };
    let (left, right) = (frames(&left), frames(&right));
    // No frame of either channel holds the key's tone, not its start nor its end: the key's
    // two tones (4000 each) at no more than 500 in any frame, under what a tenth of a frame of
    // them gives (the 1000 Hz and 700 Hz tones leak up to 300 into a 20 ms frame). From
    // frame 20: the first frames hold the tones' onsets, which splash over every frequency.
    for (i, f) in left.iter().chain(&right).enumerate() {
        if i % left.len() < 20 {
            continue;
        }
        let (low, high) = (
            tone_amplitude(f, 16000, 852.0),
            tone_amplitude(f, 16000, 1209.0),
        );
        assert!(
            low < 500.0 && high < 500.0 && InbandDtmf::classify(f, 16000).is_none(),
            "frame {i} of {} (left, then right) holds the key: {low:.0} at 852 Hz, {high:.0} at 1209 Hz",
            left.len()
        );
    }
    // The silenced stretch, both channels at once: the key's 10 frames, the frame its start
    // may straddle and its tail; the 1000 Hz tone and the agent's 700 Hz on either side.
    // (From frame 20: the agent's first frames may be silence.)
    let silent: Vec<usize> = (20..left.len())
        .filter(|i| left[*i].iter().chain(&right[*i]).all(|s| *s == 0))
        .collect();
    let (first, last) = (silent[0], silent[silent.len() - 1]);
    assert_eq!(
        silent.len(),
        last - first + 1,
        "one silenced stretch: {silent:?}"
    );
    assert!(
        (10..=13).contains(&silent.len()),
        "silenced {} frames: {silent:?}",
        silent.len()
    );
    for i in [first - 2, last + 2] {
        assert!(
            tone_amplitude(&left[i], 16000, 1000.0) > AMPLITUDE * 0.7,
            "frame {i}"
        );
        assert!(
            tone_amplitude(&right[i], 16000, 700.0) > AMPLITUDE * 0.7,
            "frame {i}"
        );
    }
}

fn joined_samples(frames: &[&[i16]]) -> Vec<i16> {
    frames.iter().flat_map(|f| f.iter().copied()).collect()
}

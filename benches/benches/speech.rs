//! The speech loop's step per 20 ms frame: VAD (earshot + noise floor), endpointing, barge-in
//! and in-band DTMF on a caller frame, and one agent frame out of playout. Once for a caller
//! who never stops talking (the worst case), once for one who talks 1.2 s and pauses 2.3 s
//! (the capacity bench's callee; the VAD idles in the pauses). And answering-machine
//! detection's own share per frame (on top of the VAD): its word and pause tracking and the
//! beep detector, on speech (every frame a tone candidate) and on a beep.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dialtone_speech::{
    Amd, AmdConfig, FRAME_SAMPLES, FrameVoice, SpeechConfig, SpeechLoop, level_dbfs,
};

fn speech(c: &mut Criterion) {
    // A voice-like signal: a 150 Hz buzz with formant-ish harmonics, amplitude-modulated.
    let frames: Vec<[i16; FRAME_SAMPLES]> = (0..250)
        .map(|f| {
            std::array::from_fn(|i| {
                let t = (f * FRAME_SAMPLES + i) as f64 / 16000.0;
                let envelope = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                let v: f64 = [150.0, 450.0, 900.0, 2400.0]
                    .iter()
                    .map(|hz| (2.0 * std::f64::consts::PI * hz * t).sin())
                    .sum();
                (v * envelope * 3000.0) as i16
            })
        })
        .collect();
    // 60 talking frames, then 115 of silence.
    let paused: Vec<[i16; FRAME_SAMPLES]> = (0..175)
        .map(|f| {
            frames
                .get(f)
                .filter(|_| f < 60)
                .copied()
                .unwrap_or([0; FRAME_SAMPLES])
        })
        .collect();
    for (name, frames) in [
        ("speech/step_per_20ms_frame", &frames),
        ("speech/step_per_20ms_frame_talk_and_pause", &paused),
    ] {
        let t0 = Instant::now();
        let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
        let mut n = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                let frame = &frames[n % frames.len()];
                let now = t0 + Duration::from_millis(20 * n as u64);
                n += 1;
                if n.is_multiple_of(200) {
                    lp.play(vec![1000; 16000], None);
                }
                black_box(lp.handle_caller_frame(now, black_box(frame)));
                black_box(lp.next_agent_frame());
                while let Some(e) = lp.poll_event() {
                    black_box(e);
                }
            })
        });
    }
}

fn amd(c: &mut Criterion) {
    let voice: Vec<[i16; FRAME_SAMPLES]> = (0..250)
        .map(|f| {
            std::array::from_fn(|i| {
                let t = (f * FRAME_SAMPLES + i) as f64 / 16000.0;
                let v: f64 = [150.0, 450.0, 900.0, 2400.0]
                    .iter()
                    .map(|hz| (2.0 * std::f64::consts::PI * hz * t).sin())
                    .sum();
                (v * 3000.0) as i16
            })
        })
        .collect();
    let beep: Vec<[i16; FRAME_SAMPLES]> = (0..250)
        .map(|f| {
            std::array::from_fn(|i| {
                let t = (f * FRAME_SAMPLES + i) as f64 / 16000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * 1033.0 * t).sin()) as i16
            })
        })
        .collect();
    for (name, frames) in [
        ("speech/amd_per_20ms_frame_voice", &voice),
        ("speech/amd_per_20ms_frame_beep", &beep),
    ] {
        let mut detector = Amd::new(AmdConfig::default());
        let mut n = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                // A fresh detector every 10 s of audio: it stops listening once it has decided.
                if n.is_multiple_of(500) {
                    detector = Amd::new(AmdConfig::default());
                }
                let frame = &frames[n % frames.len()];
                n += 1;
                let voice = FrameVoice {
                    voiced: true,
                    score: 1.0,
                    level_dbfs: level_dbfs(frame),
                    noise_floor_dbfs: -60.0,
                };
                black_box(detector.frame(black_box(frame), voice, false));
            })
        });
    }
}

criterion_group!(benches, speech, amd);
criterion_main!(benches);

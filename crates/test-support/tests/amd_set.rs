//! The AMD clip set: both pools generate, hold enough varied clips of each kind, have speech
//! where they say and the beep where they say, and share no phrase.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use dialtone_test_support::WorkDir;
use dialtone_test_support::amd_set::{AmdClip, Pool, RATE, Truth, generate, normalise};
use dialtone_test_support::audio::tone_amplitude;

const PER_MS: usize = (RATE / 1000) as usize;

fn window(clip: &AmdClip, from_ms: u32, to_ms: u32) -> &[i16] {
    let len = clip.samples.len();
    let a = (from_ms as usize * PER_MS).min(len);
    let b = (to_ms as usize * PER_MS).clamp(a, len);
    &clip.samples[a..b]
}

fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// The beep's frequency at `ms` into the clip (chirps glide, two-step tones step).
fn beep_hz_at(clip: &AmdClip, ms: u32) -> f64 {
    let beep = clip.beep.as_ref().unwrap();
    if let Some((at, hz)) = beep.second
        && ms >= at
    {
        return f64::from(hz);
    }
    let t = f64::from(ms - beep.start_ms) / f64::from(beep.end_ms - beep.start_ms);
    f64::from(beep.hz) + f64::from(beep.chirp_hz) * (2.0 * t - 1.0)
}

/// The tone at the beep's frequency in the 30 ms from `ms`.
fn beep_at(clip: &AmdClip, ms: u32, hz_ms: u32) -> f64 {
    tone_amplitude(window(clip, ms, ms + 30), RATE, beep_hz_at(clip, hz_ms))
}

fn check(pool: Pool, clips: &[AmdClip]) {
    let persons = clips.iter().filter(|c| c.truth == Truth::Person).count();
    let machines = clips.len() - persons;
    assert!(
        persons >= 60 && machines >= 60,
        "{persons} persons, {machines} machines"
    );
    let beeps = clips.iter().filter(|c| c.beep.is_some()).count();
    assert!(
        (machines * 55 / 100..=machines * 80 / 100).contains(&beeps),
        "{beeps} beeps in {machines} machines"
    );
    for clip in clips {
        let name = &clip.name;
        assert!(!clip.speech.is_empty(), "{name}: no speech");
        assert_eq!(clip.texts.len(), clip.speech.len(), "{name}");
        let last = clip.speech.last().unwrap().1;
        assert_eq!(clip.greeting_end_ms, last, "{name}");
        match clip.truth {
            Truth::Person => {
                assert_eq!(clip.speech_end_ms, Some(clip.speech[0].1), "{name}");
                assert!(clip.beep.is_none(), "{name}");
                assert!(
                    clip.duration_ms() >= 6000,
                    "{name}: {} ms",
                    clip.duration_ms()
                );
                assert!(clip.duration_ms() >= last + 800, "{name}");
            }
            Truth::Machine => {
                assert_eq!(clip.speech_end_ms, None, "{name}");
                let after = clip.beep.as_ref().map_or(last, |b| b.end_ms);
                assert!(clip.duration_ms() >= after + 3000, "{name}");
            }
        }
        // Speech where claimed: each piece well above the line's floor (the clip's last
        // 500 ms, always silence or noise), and the silence after each piece quieter.
        let end = clip.duration_ms();
        let floor = rms(window(clip, end - 500, end));
        for (k, (a, b)) in clip.speech.iter().enumerate() {
            let piece = rms(window(clip, *a, *b));
            assert!(
                piece > 2.0 * floor + 20.0,
                "{name}: piece {k} ({a}–{b} ms) at {piece:.0}, floor {floor:.0}"
            );
            let next = clip.speech.get(k + 1).map_or(u32::MAX, |n| n.0);
            let quiet_to = next
                .min(b + 150)
                .min(clip.beep.as_ref().map_or(u32::MAX, |b| b.start_ms));
            if quiet_to > b + 60 {
                let after = rms(window(clip, b + 30, quiet_to));
                assert!(
                    after < 0.6 * piece,
                    "{name}: {after:.0} after piece {k} ending at {b} ms, piece {piece:.0}"
                );
            }
        }
        let first = clip.speech[0].0;
        if first > 80 {
            let before = rms(window(clip, 0, first - 30));
            let piece = rms(window(clip, first, clip.speech[0].1));
            assert!(
                before < 0.6 * piece,
                "{name}: {before:.0} before the first piece"
            );
        }
        // The beep where claimed, to about 20 ms.
        if let Some(beep) = &clip.beep {
            let first_end = beep.second.map_or(beep.end_ms, |(at, _)| at);
            let mid = (beep.start_ms + first_end) / 2 - 15;
            let middle = beep_at(clip, mid, mid + 15);
            let power = rms(window(clip, mid, mid + 30)).powi(2);
            assert!(
                middle * middle / 2.0 > 0.4 * power,
                "{name}: the tone is {middle:.0} of {:.0} rms",
                power.sqrt()
            );
            let onset = beep_at(clip, beep.start_ms + 10, beep.start_ms + 25);
            let before = beep_at(clip, beep.start_ms - 50, beep.start_ms);
            let tail = beep_at(clip, beep.end_ms - 40, beep.end_ms - 25);
            let after = beep_at(clip, beep.end_ms + 20, beep.end_ms - 1);
            assert!(
                onset > 0.5 * middle,
                "{name}: onset {onset:.0} of {middle:.0}"
            );
            assert!(tail > 0.5 * middle, "{name}: tail {tail:.0} of {middle:.0}");
            assert!(before < 0.2 * middle, "{name}: {before:.0} before the beep");
            assert!(after < 0.2 * middle, "{name}: {after:.0} after the beep");
        }
    }
    let mut styles: BTreeMap<(&str, &str), Vec<&AmdClip>> = BTreeMap::new();
    for clip in clips {
        let truth = match clip.truth {
            Truth::Person => "person",
            Truth::Machine => "machine",
        };
        styles.entry((truth, clip.style)).or_default().push(clip);
    }
    for ((truth, style), group) in &styles {
        let n = group.len();
        let secs = |f: &dyn Fn(&AmdClip) -> u32| {
            f64::from(group.iter().map(|c| f(c)).sum::<u32>()) / n as f64 / 1000.0
        };
        let first: Vec<u32> = group
            .iter()
            .map(|c| c.speech[0].1 - c.speech[0].0)
            .collect();
        println!(
            "{pool:?} {truth:7} {style:18} {n:3} clips, {:4.1} s long, first phrase {:.1}–{:.1} s, \
             greeting/first phrase ends at {:4.1} s on average, {} beeps, {} noisy",
            secs(&|c| c.duration_ms()),
            f64::from(*first.iter().min().unwrap()) / 1000.0,
            f64::from(*first.iter().max().unwrap()) / 1000.0,
            secs(&|c| c.speech_end_ms.unwrap_or(c.greeting_end_ms)),
            group.iter().filter(|c| c.beep.is_some()).count(),
            group.iter().filter(|c| c.snr_db.is_some()).count(),
        );
    }
}

#[test]
fn both_pools_generate_labelled_clips_that_share_no_phrase() {
    let dir = WorkDir::for_peer("amd-set").unwrap();
    let mut names = HashSet::new();
    let mut spoken = Vec::new();
    for pool in [Pool::Tuning, Pool::Holdout] {
        let started = Instant::now();
        let clips = generate(dir.path(), pool).unwrap();
        println!(
            "{pool:?}: {} clips in {:.1} s",
            clips.len(),
            started.elapsed().as_secs_f64()
        );
        check(pool, &clips);
        for clip in &clips {
            assert!(names.insert(clip.name.clone()), "{} twice", clip.name);
        }
        let texts: HashSet<String> = clips
            .iter()
            .flat_map(|c| c.texts.iter().map(|t| normalise(t)))
            .chain(pool.phrases().into_iter().map(normalise))
            .collect();
        spoken.push(texts);
        // Deterministic: the first clip again, sample for sample.
        if pool == Pool::Tuning {
            let again = generate(dir.path(), pool).unwrap();
            assert_eq!(again.len(), clips.len());
            assert!(
                again
                    .iter()
                    .zip(&clips)
                    .all(|(a, b)| a.samples == b.samples && a.name == b.name)
            );
        }
        let wav = dir.path().join("clip.wav");
        clips[0].write_wav(&wav).unwrap();
        let bytes = std::fs::read(&wav).unwrap();
        assert_eq!(bytes.len(), 44 + 2 * clips[0].samples.len());
    }
    let shared: Vec<_> = spoken[0].intersection(&spoken[1]).collect();
    assert!(shared.is_empty(), "phrases in both pools: {shared:?}");
}

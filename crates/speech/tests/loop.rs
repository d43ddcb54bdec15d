#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! The speech loop on a virtual clock, fed espeak-ng speech, tones, noise, silence and DTMF.

use std::time::{Duration, Instant};

use dialtone_speech::{
    BargeIn, FRAME_SAMPLES, InbandDtmf, SpeechConfig, SpeechEvent, SpeechLoop, level_dbfs,
};
use dialtone_test_support::audio::{dtmf, sine};
use dialtone_test_support::media::speech_pcm16k;

const FRAME: Duration = Duration::from_millis(20);

/// `ms` of silence.
fn silence(ms: u64) -> Vec<i16> {
    vec![0; (ms * 16) as usize]
}

/// Seeded white noise at about `dbfs` RMS.
fn noise(ms: u64, dbfs: f64, seed: u32) -> Vec<i16> {
    let amplitude = 32768.0 * 10f64.powf(dbfs / 20.0) * 3f64.sqrt();
    let mut x = seed | 1;
    (0..ms * 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((f64::from(x) / f64::from(u32::MAX) * 2.0 - 1.0) * amplitude) as i16
        })
        .collect()
}

fn speech(text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    speech_pcm16k(dir.path(), text).unwrap()
}

/// Feeds `audio` frame by frame from `t0`; returns the events with the frame index they came
/// after, and the agent frames that went out.
fn run(
    lp: &mut SpeechLoop,
    t0: Instant,
    audio: &[i16],
) -> (Vec<(usize, SpeechEvent)>, Vec<[i16; FRAME_SAMPLES]>) {
    let mut events = Vec::new();
    let mut out = Vec::new();
    for (i, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
        let now = t0 + FRAME * i as u32;
        lp.handle_caller_frame(now, frame);
        out.push(lp.next_agent_frame());
        while let Some(e) = lp.poll_event() {
            events.push((i, e));
        }
    }
    (events, out)
}

/// The index of the first 20 ms frame louder than -40 dBFS.
fn first_loud_frame(audio: &[i16]) -> usize {
    audio
        .chunks_exact(FRAME_SAMPLES)
        .position(|f| level_dbfs(f) > -40.0)
        .unwrap()
}

#[test]
fn one_sentence_is_one_utterance_from_its_onset_to_its_end() {
    let sentence = speech("Hello this is Dialtone calling about your appointment tomorrow");
    let audio: Vec<i16> = [silence(1000), sentence.clone(), silence(2000)].concat();
    let t0 = Instant::now();
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    let (events, _) = run(&mut lp, t0, &audio);
    let starts: Vec<_> = events
        .iter()
        .filter_map(|(i, e)| matches!(e, SpeechEvent::SpeechStarted { .. }).then_some(*i))
        .collect();
    let ends: Vec<_> = events
        .iter()
        .filter_map(|(i, e)| match e {
            SpeechEvent::SpeechEnded {
                duration, audio, ..
            } => Some((*i, *duration, audio.len())),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 1, "{events:?}");
    assert_eq!(ends.len(), 1, "{events:?}");
    // Started within 100 ms of the first loud frame.
    let onset = first_loud_frame(&audio);
    assert!(
        starts[0] >= onset && starts[0] <= onset + 5,
        "onset {onset}, started {}",
        starts[0]
    );
    // The utterance spans the sentence: its length within 20 %, its audio as long.
    let (ended, duration, samples) = ends[0];
    let spoken = Duration::from_millis(sentence.len() as u64 / 16);
    let ratio = duration.as_secs_f64() / spoken.as_secs_f64();
    assert!((0.8..=1.1).contains(&ratio), "{duration:?} of {spoken:?}");
    assert_eq!(samples as u64 / 16, duration.as_millis() as u64 + 20 - 20);
    // Reported after the endpointing silence, no later than a frame after it.
    let last_loud = audio
        .chunks_exact(FRAME_SAMPLES)
        .rposition(|f| level_dbfs(f) > -40.0)
        .unwrap();
    let waited = (ended - last_loud) as u64 * 20;
    assert!(
        (480..=620).contains(&waited),
        "ended {waited} ms after the last loud frame"
    );
}

#[test]
fn noise_tones_clicks_and_silence_are_not_speech() {
    let t0 = Instant::now();
    for (what, audio) in [
        ("silence", silence(3000)),
        ("white noise at -30 dBFS", noise(3000, -30.0, 7)),
        ("a 1 kHz tone", {
            let mut t = vec![0i16; 48000];
            sine(16000, 1000.0, 8000.0, 0, &mut t);
            t
        }),
    ] {
        let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
        let (events, _) = run(&mut lp, t0, &audio);
        assert!(
            !events.iter().any(|(_, e)| matches!(
                e,
                SpeechEvent::SpeechStarted { .. } | SpeechEvent::SpeechEnded { .. }
            )),
            "{what}: {events:?}"
        );
    }
    // A click: 120 ms of speech is shorter than the 200 ms minimum utterance.
    let word = speech("Yes");
    let onset = first_loud_frame(&word) * FRAME_SAMPLES;
    let click = word[onset..onset + 120 * 16].to_vec();
    let audio = [silence(500), click, silence(1500)].concat();
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    let (events, _) = run(&mut lp, t0, &audio);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, SpeechEvent::SpeechEnded { .. })),
        "{events:?}"
    );
}

/// A start too short to be an utterance (a click past the onset) is withdrawn once the
/// endpointing silence has passed: `SpeechDropped`, never `SpeechEnded`; the next utterance
/// starts and ends as usual.
#[test]
fn a_start_too_short_to_be_an_utterance_is_withdrawn() {
    let word = speech("Yes");
    let onset = first_loud_frame(&word) * FRAME_SAMPLES;
    let click = word[onset..onset + 120 * 16].to_vec();
    let sentence = speech("Hello this is Dialtone calling about your appointment");
    let audio = [silence(500), click, silence(1500), sentence, silence(1500)].concat();
    let t0 = Instant::now();
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    let (events, _) = run(&mut lp, t0, &audio);
    let kinds: Vec<(usize, &str)> = events
        .iter()
        .filter_map(|(i, e)| match e {
            SpeechEvent::SpeechStarted { .. } => Some((*i, "started")),
            SpeechEvent::SpeechDropped { .. } => Some((*i, "dropped")),
            SpeechEvent::SpeechEnded { .. } => Some((*i, "ended")),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = kinds.iter().map(|(_, k)| *k).collect();
    assert_eq!(
        names,
        ["started", "dropped", "started", "ended"],
        "{kinds:?}"
    );
    // Dropped once the endpointing silence (500 ms, 25 frames) followed the click's last
    // voiced frame, which it names, with the click's length.
    let Some((dropped_after, SpeechEvent::SpeechDropped { at, duration })) = events
        .iter()
        .find(|(_, e)| matches!(e, SpeechEvent::SpeechDropped { .. }))
    else {
        panic!("dropped")
    };
    let last_voiced = ((*at - t0).as_millis() / 20) as usize;
    assert!(
        (25..31).contains(&last_voiced),
        "the click is frames 25 to 30"
    );
    assert_eq!(*dropped_after, last_voiced + 25);
    assert!(*duration < Duration::from_millis(200), "{duration:?}");
}

/// The agent plays 3 s of tone marked "greeting"; the caller starts talking 1 s in.
fn barge(policy: BargeIn) -> (Vec<(usize, SpeechEvent)>, Vec<[i16; FRAME_SAMPLES]>, usize) {
    let t0 = Instant::now();
    let mut lp = SpeechLoop::new(
        SpeechConfig {
            barge_in: policy,
            ..SpeechConfig::default()
        },
        t0,
    );
    let mut greeting = vec![0i16; 48000];
    sine(16000, 440.0, 6000.0, 0, &mut greeting);
    lp.play(greeting, Some("greeting".into()));
    let audio = [
        silence(1000),
        speech("Sorry who is this please"),
        silence(1000),
    ]
    .concat();
    let onset = first_loud_frame(&audio);
    let (events, out) = run(&mut lp, t0, &audio);
    (events, out, onset)
}

#[test]
fn caller_speech_cuts_the_agent_within_100_ms_and_says_what_was_heard() {
    let (events, out, onset) = barge(BargeIn::On);
    let (at, cut) = events
        .iter()
        .find_map(|(i, e)| match e {
            SpeechEvent::BargeIn { cut, .. } => Some((*i, cut.clone())),
            _ => None,
        })
        .expect("a barge-in");
    assert!(
        at >= onset && (at - onset) * 20 <= 100,
        "cut {} ms after onset",
        (at - onset) * 20
    );
    assert_eq!(cut.mark.as_deref(), Some("greeting"));
    // Heard: every frame handed out before the cut (the cut frame's own agent audio is not).
    assert_eq!(cut.played_samples, at * FRAME_SAMPLES);
    assert_eq!(cut.played_samples + cut.dropped_samples, 48000);
    assert!(
        out[at..].iter().all(|f| f.iter().all(|s| *s == 0)),
        "silence after the cut"
    );
    assert!(
        out[..at].iter().all(|f| level_dbfs(f) > -20.0),
        "the greeting before it"
    );
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, SpeechEvent::PlayoutDone { .. }))
    );
}

#[test]
fn barge_in_off_lets_the_agent_finish_and_a_minimum_waits_for_it() {
    let (events, out, _) = barge(BargeIn::Off);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, SpeechEvent::BargeIn { .. }))
    );
    let done = events
        .iter()
        .find_map(|(i, e)| {
            matches!(e, SpeechEvent::PlayoutDone { mark } if mark == "greeting").then_some(*i)
        })
        .expect("the greeting finished");
    assert_eq!(done, 48000 / FRAME_SAMPLES - 1);
    assert!(out[..=done].iter().all(|f| level_dbfs(f) > -20.0));

    let (events, _, onset) = barge(BargeIn::After(Duration::from_millis(400)));
    let at = events
        .iter()
        .find_map(|(i, e)| matches!(e, SpeechEvent::BargeIn { .. }).then_some(*i))
        .expect("a barge-in");
    assert!(
        (at - onset) * 20 >= 400 && (at - onset) * 20 <= 500,
        "{}",
        (at - onset) * 20
    );
}

#[test]
fn marks_are_reported_as_their_audio_finishes() {
    let t0 = Instant::now();
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    lp.play(vec![1000; 500], Some("a".into()));
    lp.play(vec![2000; 500], None);
    lp.play(vec![3000; 100], Some("b".into()));
    let (events, out) = run(&mut lp, t0, &silence(200));
    let marks: Vec<_> = events
        .iter()
        .filter_map(|(i, e)| match e {
            SpeechEvent::PlayoutDone { mark } => Some((*i, mark.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(marks, vec![(1, "a"), (3, "b")]);
    assert_eq!(out[1][500 - 320 - 1], 1000);
    assert_eq!(out[1][500 - 320], 2000);
    assert_eq!(out[3][(1100 - 960) - 1], 3000);
    assert!(out[3][1100 - 960..].iter().all(|s| *s == 0));
    assert!(!lp.agent_speaking());
}

#[test]
fn in_band_digits_are_heard_unless_events_carry_them_and_speech_is_not_a_digit() {
    let t0 = Instant::now();
    let mut audio = silence(200);
    for digit in "159#*0".chars() {
        let mut tone = vec![0i16; 70 * 16];
        dtmf(16000, digit, 6000.0, &mut tone);
        audio.extend(tone);
        audio.extend(silence(60));
    }
    audio.extend(silence(300));
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    let (events, _) = run(&mut lp, t0, &audio);
    let digits: String = events
        .iter()
        .filter_map(|(_, e)| match e {
            SpeechEvent::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, "159#*0");
    // A call carrying key presses as RFC 4733 events does not listen for the tones.
    let mut events_only = SpeechLoop::new(
        SpeechConfig {
            inband_dtmf: false,
            ..SpeechConfig::default()
        },
        t0,
    );
    let (events, _) = run(&mut events_only, t0, &audio);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, SpeechEvent::Dtmf { .. })),
        "{events:?}"
    );
    // A key's tone while the agent speaks is no speech: no turn, no barge-in.
    let mut speaking = SpeechLoop::new(SpeechConfig::default(), t0);
    speaking.play(vec![3000; 16000 * 3], Some("answer".into()));
    let (events, _) = run(&mut speaking, t0, &audio);
    assert!(
        !events.iter().any(|(_, e)| matches!(
            e,
            SpeechEvent::BargeIn { .. } | SpeechEvent::SpeechStarted { .. }
        )),
        "{events:?}"
    );
    // Twist beyond the limit (high tone 12 dB over the low) is refused.
    let mut twisted = vec![0i16; 320];
    for (i, s) in twisted.iter_mut().enumerate() {
        let t = i as f64 / 16000.0;
        *s = (1500.0 * (2.0 * std::f64::consts::PI * 697.0 * t).sin()
            + 6000.0 * (2.0 * std::f64::consts::PI * 1209.0 * t).sin()) as i16;
    }
    assert_eq!(InbandDtmf::classify(&twisted, 16000), None);
    // A spoken sentence triggers nothing.
    let sentence = speech("One two three four five six seven eight nine zero");
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    let (events, _) = run(&mut lp, t0, &sentence);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, SpeechEvent::Dtmf { .. })),
        "{events:?}"
    );
}

#[test]
fn a_silent_caller_raises_one_timeout_but_not_while_the_agent_speaks() {
    let t0 = Instant::now();
    let config = SpeechConfig {
        silence_timeout: Some(Duration::from_secs(3)),
        ..SpeechConfig::default()
    };
    let mut lp = SpeechLoop::new(config, t0);
    // Two seconds of agent audio first: the clock starts when it ends.
    lp.play(vec![3000; 32000], None);
    let (events, _) = run(&mut lp, t0, &silence(8000));
    let timeouts: Vec<_> = events
        .iter()
        .filter_map(|(i, e)| matches!(e, SpeechEvent::SilenceTimeout { .. }).then_some(*i))
        .collect();
    assert_eq!(timeouts.len(), 1, "{events:?}");
    assert!((249..=251).contains(&timeouts[0]), "{}", timeouts[0]);
}

#[test]
fn speech_over_steady_background_noise_is_still_one_utterance() {
    let sentence = speech("Yes I will be there at ten");
    let clean: Vec<i16> = [silence(1500), sentence, silence(1500)].concat();
    let background = noise(clean.len() as u64 / 16, -45.0, 3);
    let mixed: Vec<i16> = clean
        .iter()
        .zip(&background)
        .map(|(a, b)| a.saturating_add(*b))
        .collect();
    let t0 = Instant::now();
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    let (events, _) = run(&mut lp, t0, &mixed);
    let ended = events
        .iter()
        .filter(|(_, e)| matches!(e, SpeechEvent::SpeechEnded { .. }))
        .count();
    let started = events
        .iter()
        .filter(|(_, e)| matches!(e, SpeechEvent::SpeechStarted { .. }))
        .count();
    assert_eq!(
        (started, ended),
        (1, 1),
        "{:?}",
        events
            .iter()
            .map(|(i, e)| (i, std::mem::discriminant(e)))
            .collect::<Vec<_>>()
    );
}

/// AMD on an opening in `mode`: every verdict in order, and the beeps (frequency, length).
fn amd(
    audio: &[i16],
    mode: dialtone_speech::AmdMode,
) -> (Vec<dialtone_speech::AmdVerdict>, Vec<(f32, Duration)>) {
    let t0 = Instant::now();
    let mut lp = SpeechLoop::new(
        SpeechConfig {
            amd: Some(dialtone_speech::AmdConfig::for_mode(mode)),
            ..SpeechConfig::default()
        },
        t0,
    );
    let (events, _) = run(&mut lp, t0, audio);
    let verdicts = events
        .iter()
        .filter_map(|(_, e)| match e {
            SpeechEvent::AnsweredBy { verdict } => Some(verdict.clone()),
            _ => None,
        })
        .collect();
    let beeps = events
        .iter()
        .filter_map(|(_, e)| match e {
            SpeechEvent::Beep { hz, duration, .. } => Some((*hz, *duration)),
            _ => None,
        })
        .collect();
    (verdicts, beeps)
}

#[test]
fn answering_machine_detection_tells_a_hello_from_a_greeting_and_hears_the_beep() {
    use dialtone_speech::{AmdMode, AmdReason, AnsweredBy};
    // A person: a short "Hello?" half a second in, then waiting.
    let human = [silence(500), speech("Hello?"), silence(3000)].concat();
    for mode in AmdMode::ALL {
        let (verdicts, beeps) = amd(&human, *mode);
        let [verdict] = verdicts.as_slice() else {
            panic!("{mode}: {verdicts:?}")
        };
        assert_eq!(
            (verdict.answered_by, verdict.reason()),
            (AnsweredBy::Human, AmdReason::AfterGreetingSilence)
        );
        assert!(verdict.after() < Duration::from_secs(2), "{verdict:?}");
        assert!(beeps.is_empty());
    }

    // A machine: a long greeting, then the beep.
    let greeting = speech(
        "Hi, you have reached the voicemail of John Smith. I cannot take your call right now. \
         Please leave a message after the tone.",
    );
    let mut tone = vec![0i16; 16000 / 2];
    sine(16000, 1000.0, 9000.0, 0, &mut tone);
    let machine = [
        silence(300),
        greeting.clone(),
        silence(300),
        tone,
        silence(2000),
    ]
    .concat();
    let (verdicts, beeps) = amd(&machine, AmdMode::Accurate);
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert_eq!(
        (verdicts[0].answered_by, verdicts[0].reason()),
        (AnsweredBy::Machine, AmdReason::LongGreeting)
    );
    let [(hz, length)] = beeps.as_slice() else {
        panic!("{beeps:?}")
    };
    assert!((hz - 1000.0).abs() <= 15.0, "{hz}");
    assert!(length.abs_diff(Duration::from_millis(500)) <= Duration::from_millis(20));
    // Fast: unsure while the first sentence runs on (the agent may speak), then the greeting's
    // sentences decide.
    let (verdicts, beeps) = amd(&machine, AmdMode::Fast);
    let answers: Vec<_> = verdicts
        .iter()
        .map(|v| (v.answered_by, v.reason()))
        .collect();
    assert_eq!(
        answers,
        [
            (AnsweredBy::Unknown, AmdReason::MaxAnalysisTime),
            (AnsweredBy::Machine, AmdReason::LongGreeting)
        ]
    );
    assert_eq!(verdicts[1].explanation.replaced, Some(AnsweredBy::Unknown));
    assert_eq!(beeps.len(), 1);

    // A greeting that opens like a person ("Hello?", a pause), then its beep: the beep
    // turns the verdict.
    let mut tone = vec![0i16; 16000 / 4];
    sine(16000, 850.0, 9000.0, 0, &mut tone);
    let opening = [
        silence(400),
        speech("Hello?"),
        silence(1200),
        tone,
        silence(1500),
    ]
    .concat();
    let (verdicts, _) = amd(&opening, AmdMode::Fast);
    let answers: Vec<_> = verdicts
        .iter()
        .map(|v| (v.answered_by, v.reason()))
        .collect();
    assert_eq!(
        answers,
        [
            (AnsweredBy::Human, AmdReason::AfterGreetingSilence),
            (AnsweredBy::Machine, AmdReason::Beep)
        ]
    );
    let heard = verdicts[1].explanation.beep_hz.unwrap();
    assert!(heard.abs_diff(850) <= 15, "{heard} Hz");
    assert_eq!(verdicts[1].explanation.replaced, Some(AnsweredBy::Human));

    // Nothing said: unknown — the agent speaks, and no one is hung up on.
    let (verdicts, _) = amd(&silence(4000), AmdMode::Fast);
    assert_eq!(
        verdicts
            .iter()
            .map(|v| (v.answered_by, v.reason()))
            .collect::<Vec<_>>(),
        [(AnsweredBy::Unknown, AmdReason::InitialSilence)]
    );
}

#[test]
fn a_mark_queued_after_the_audio_is_reported_when_the_audio_has_played() {
    // A speaker streams audio in chunks and only then knows where it ends: the mark comes as
    // an empty segment of its own.
    let t0 = Instant::now();
    let mut lp = SpeechLoop::new(SpeechConfig::default(), t0);
    lp.play(vec![500; 640], None);
    lp.play(Vec::new(), Some("end".into()));
    assert!(lp.agent_speaking());
    let (events, _) = run(&mut lp, t0, &silence(100));
    assert!(
        events.iter().any(
            |(i, e)| *i == 1 && matches!(e, SpeechEvent::PlayoutDone { mark } if mark == "end")
        ),
        "{events:?}"
    );
    assert!(!lp.agent_speaking());
}

//! The Media Streams core on a virtual clock: the speech loop is stepped a 20 ms frame at a
//! time with made-up instants, as the driver steps it with the media clock's.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dialtone_speech::{BargeIn, FRAME_SAMPLES, SpeechConfig, SpeechEvent, SpeechLoop};
use dialtone_test_support::audio::{sine, tone_amplitude};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn start() -> StreamStart {
    StreamStart {
        stream_sid: "MZ0123".into(),
        account_sid: "org-1".into(),
        call_sid: "call-1".into(),
        custom_parameters: [("name".to_owned(), "Ada".to_owned())].into(),
    }
}

/// A session, its speech loop (barge-in off, as for these calls by default) and the clock.
struct Bench {
    session: StreamsSession,
    speech: SpeechLoop,
    now: Instant,
    /// Marks echoed, with the frame (of the agent's playout) at which each was.
    echoed: Vec<(String, usize)>,
    /// The agent's frames played so far.
    played: Vec<[i16; FRAME_SAMPLES]>,
}

impl Bench {
    fn new() -> Self {
        let config = SpeechConfig {
            barge_in: BargeIn::Off,
            ..SpeechConfig::default()
        };
        let now = Instant::now();
        Self {
            session: StreamsSession::new(start()).unwrap(),
            speech: SpeechLoop::new(config, now),
            now,
            echoed: Vec::new(),
            played: Vec::new(),
        }
    }

    /// Everything queued for the app, as JSON.
    fn sent(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.session.poll_transmit(usize::MAX))
            .map(|t| serde_json::from_str(&t.text).unwrap())
            .collect()
    }

    fn app(&mut self, event: Value) -> AppEffect {
        self.session
            .handle_app(&event.to_string(), &mut self.speech, false)
            .unwrap()
    }

    /// One 20 ms tick: a silent caller frame in, the agent's next frame out.
    fn tick(&mut self) {
        self.now += Duration::from_millis(20);
        self.speech
            .handle_caller_frame(self.now, &[0; FRAME_SAMPLES]);
        self.played.push(self.speech.next_agent_frame());
        while let Some(event) = self.speech.poll_event() {
            if let SpeechEvent::PlayoutDone { mark } = event {
                assert!(self.session.playout_done(&mark));
            }
        }
        for event in self.sent() {
            if event["event"] == "mark" {
                let name = event["mark"]["name"].as_str().unwrap().to_owned();
                self.echoed.push((name, self.played.len()));
            }
        }
    }
}

/// `ms` of a 1 kHz tone as base64 µ-law at 8 kHz, cut into chunks of `chunk` bytes.
fn tone_chunks(ms: usize, chunk: usize) -> Vec<String> {
    let mut pcm = vec![0i16; ms * 8];
    sine(8000, 1000.0, 8000.0, 0, &mut pcm);
    let ulaw: Vec<u8> = pcm
        .iter()
        .map(|s| dialtone_codec::linear_to_ulaw(*s))
        .collect();
    ulaw.chunks(chunk).map(|c| STANDARD.encode(c)).collect()
}

#[test]
fn the_stream_opens_with_connected_then_start_naming_the_call() {
    let mut b = Bench::new();
    let sent = b.sent();
    assert_eq!(
        sent[0],
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    assert_eq!(
        sent[1],
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ0123", "start": {
            "streamSid": "MZ0123", "accountSid": "org-1", "callSid": "call-1",
            "tracks": ["inbound"], "customParameters": {"name": "Ada"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
    );
}

/// A caller frame the driver timed comes back with its event, so the driver can time the
/// audio's way to the app; the other events carry no time.
#[test]
fn a_timed_caller_frame_keeps_its_arrival_to_its_media_event() {
    let mut b = Bench::new();
    let opening: Vec<Option<Instant>> = std::iter::from_fn(|| b.session.poll_transmit(usize::MAX))
        .map(|t| t.arrived)
        .collect();
    assert_eq!(opening, [None, None], "connected and start");
    let arrived = b.now + Duration::from_millis(7);
    b.session.caller_frame(&[0; FRAME_SAMPLES], Some(arrived));
    b.session.dtmf('5');
    b.session.caller_frame(&[0; FRAME_SAMPLES], None);
    let sent: Vec<(String, Option<Instant>)> =
        std::iter::from_fn(|| b.session.poll_transmit(usize::MAX))
            .map(|t| {
                let event: Value = serde_json::from_str(&t.text).unwrap();
                (event["event"].as_str().unwrap().to_owned(), t.arrived)
            })
            .collect();
    assert_eq!(
        sent,
        [
            ("media".to_owned(), Some(arrived)),
            ("dtmf".to_owned(), None),
            ("media".to_owned(), None)
        ]
    );
}

#[test]
fn each_caller_frame_is_one_media_chunk_in_order_with_its_media_time() {
    let mut b = Bench::new();
    b.sent();
    let mut frame = [0i16; FRAME_SAMPLES];
    let mut heard = Vec::new();
    for i in 0..25 {
        sine(16_000, 1000.0, 8000.0, i * FRAME_SAMPLES, &mut frame);
        b.session.caller_frame(&frame, None);
        let sent = b.sent();
        assert_eq!(sent.len(), 1, "one event per frame, never a burst");
        let media = &sent[0];
        assert_eq!(media["event"], "media");
        assert_eq!(media["sequenceNumber"], (i + 2).to_string());
        assert_eq!(media["media"]["track"], "inbound");
        assert_eq!(media["media"]["chunk"], (i + 1).to_string());
        assert_eq!(media["media"]["timestamp"], (i * 20).to_string());
        let ulaw = STANDARD
            .decode(media["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(ulaw.len(), 160, "20 ms at 8 kHz");
        let mut pcm = [0i16; 160];
        dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).decode(&ulaw, &mut pcm);
        heard.extend_from_slice(&pcm);
    }
    // The caller's tone is heard as that tone at 8 kHz (past the resampler's delay).
    let tail = &heard[800..];
    assert!(tone_amplitude(tail, 8000, 1000.0) > 5000.0);
    assert!(tone_amplitude(tail, 8000, 2000.0) < 500.0);
}

#[test]
fn a_mark_comes_back_once_the_audio_before_it_has_played() {
    let mut b = Bench::new();
    b.sent();
    // 1 s of tone in uneven chunks, then a mark.
    for payload in tone_chunks(1000, 333) {
        b.app(json!({"event": "media", "streamSid": "MZ0123", "media": {"payload": payload}}));
    }
    b.app(json!({"event": "mark", "streamSid": "MZ0123", "mark": {"name": "tone-end"}}));
    for _ in 0..60 {
        b.tick();
    }
    assert_eq!(
        b.echoed,
        vec![("tone-end".to_owned(), 50)],
        "after 50 frames of 20 ms"
    );
    let toned = b
        .played
        .iter()
        .filter(|f| tone_amplitude(&f[..], 16_000, 1000.0) > 4000.0)
        .count();
    assert_eq!(toned, 50, "the whole second was played, at 16 kHz");
}

#[test]
fn clear_stops_the_audio_at_the_next_frame_and_echoes_every_pending_mark() {
    let mut b = Bench::new();
    b.sent();
    for payload in tone_chunks(1000, 160) {
        b.app(json!({"event": "media", "media": {"payload": payload}}));
    }
    b.app(json!({"event": "mark", "mark": {"name": "a"}}));
    for payload in tone_chunks(500, 160) {
        b.app(json!({"event": "media", "media": {"payload": payload}}));
    }
    b.app(json!({"event": "mark", "mark": {"name": "b"}}));
    for _ in 0..10 {
        b.tick();
    }
    assert!(b.echoed.is_empty());
    assert_eq!(b.app(json!({"event": "clear"})), AppEffect::Cleared);
    let marks: Vec<Value> = b
        .sent()
        .into_iter()
        .map(|e| e["mark"]["name"].clone())
        .collect();
    assert_eq!(
        marks,
        vec![json!("a"), json!("b")],
        "echoed at once, in order"
    );
    b.tick();
    let last = b.played.last().unwrap();
    assert!(
        last.iter().all(|s| *s == 0),
        "silence from the next frame on"
    );
}

#[test]
fn a_barge_in_echoes_the_pending_marks() {
    let mut b = Bench::new();
    b.sent();
    b.app(json!({"event": "media", "media": {"payload": tone_chunks(200, 1600)[0]}}));
    b.app(json!({"event": "mark", "mark": {"name": "m"}}));
    b.speech.clear_playout();
    b.session.playout_cleared();
    assert_eq!(b.sent()[0]["mark"]["name"], "m");
}

#[test]
fn keys_and_the_end_are_events_and_nothing_follows_stop() {
    let mut b = Bench::new();
    b.sent();
    b.session.dtmf('5');
    b.session.stop();
    b.session.stop();
    b.session.caller_frame(&[0; FRAME_SAMPLES], None);
    b.session.dtmf('6');
    let sent = b.sent();
    assert_eq!(
        sent,
        vec![
            json!({"event": "dtmf", "sequenceNumber": "2", "streamSid": "MZ0123",
                "dtmf": {"track": "inbound_track", "digit": "5"}}),
            json!({"event": "stop", "sequenceNumber": "3", "streamSid": "MZ0123",
                "stop": {"accountSid": "org-1", "callSid": "call-1"}}),
        ]
    );
}

#[test]
fn while_muted_the_apps_audio_is_dropped_and_its_marks_echoed_at_once() {
    let mut b = Bench::new();
    b.sent();
    let payload = tone_chunks(200, 1600)[0].clone();
    let media = json!({"event": "media", "media": {"payload": payload}}).to_string();
    b.session.handle_app(&media, &mut b.speech, true).unwrap();
    let mark = json!({"event": "mark", "mark": {"name": "m"}}).to_string();
    b.session.handle_app(&mark, &mut b.speech, true).unwrap();
    assert!(!b.speech.agent_speaking());
    assert_eq!(b.sent()[0]["mark"]["name"], "m");
}

#[test]
fn an_app_sending_faster_than_real_time_is_capped_at_60_s_of_playout() {
    let mut b = Bench::new();
    b.sent();
    // 1 s chunks: 60 fit, the rest are dropped and counted; marks still queue.
    let second = tone_chunks(1000, 8000)[0].clone();
    let media = json!({"event": "media", "media": {"payload": second}});
    for _ in 0..60 {
        assert_eq!(b.app(media.clone()), AppEffect::Queued);
    }
    assert_eq!(b.app(media.clone()), AppEffect::Overflowed);
    assert_eq!(b.app(media.clone()), AppEffect::Overflowed);
    assert_eq!(b.session.overflowed(), 2);
    assert_eq!(b.speech.queued_samples(), PLAYOUT_CAP_SAMPLES);
    b.app(json!({"event": "mark", "mark": {"name": "m"}}));
    // Once a second has played, a second's room is free again.
    for _ in 0..50 {
        b.tick();
    }
    assert_eq!(b.app(media), AppEffect::Queued);
    assert_eq!(b.session.overflowed(), 2);
}

#[test]
fn a_full_send_queue_drops_only_media_and_numbers_stay_contiguous() {
    let mut b = Bench::new();
    b.sent();
    b.session.caller_frame(&[0; FRAME_SAMPLES], None);
    b.session.dtmf('1');
    b.session.caller_frame(&[0; FRAME_SAMPLES], None);
    b.app(json!({"event": "mark", "mark": {"name": "m"}}));
    b.speech.clear_playout();
    b.session.playout_cleared();
    b.session.caller_frame(&[0; FRAME_SAMPLES], None);
    // The queue is short of room: the control events go, the caller's audio does not.
    let short: Vec<Value> = std::iter::from_fn(|| b.session.poll_transmit(CONTROL_ROOM))
        .map(|t| serde_json::from_str(&t.text).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = short
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["sequenceNumber"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, vec![("dtmf", "2"), ("mark", "3")]);
    assert_eq!(b.session.unsent(), 3);
    // With no room at all nothing goes, and a control event waits for room.
    b.session.dtmf('2');
    assert_eq!(b.session.poll_transmit(0), None);
    b.session.caller_frame(&[0; FRAME_SAMPLES], None);
    let sent = b.sent();
    assert_eq!(sent[0]["event"], "dtmf");
    assert_eq!(sent[0]["sequenceNumber"], "4");
    assert_eq!(sent[1]["event"], "media");
    assert_eq!(
        sent[1]["sequenceNumber"], "5",
        "no gap for the dropped audio"
    );
    assert_eq!(
        sent[1]["media"]["timestamp"], "60",
        "the media clock went on"
    );
}

#[test]
fn a_mark_echo_names_the_mark_played_even_after_the_engine_cleared_the_playout() {
    let mut b = Bench::new();
    b.sent();
    b.app(json!({"event": "media", "media": {"payload": tone_chunks(200, 1600)[0]}}));
    b.app(json!({"event": "mark", "mark": {"name": "a"}}));
    // The engine (its voicemail message taking over) clears the playout; "a" is echoed then.
    b.speech.clear_playout();
    b.session.playout_cleared();
    assert_eq!(b.sent()[0]["mark"]["name"], "a");
    b.app(json!({"event": "media", "media": {"payload": tone_chunks(200, 1600)[0]}}));
    b.app(json!({"event": "mark", "mark": {"name": "b"}}));
    for _ in 0..15 {
        b.tick();
    }
    assert_eq!(
        b.echoed,
        vec![("b".to_owned(), 10)],
        "b, once, after its 200 ms"
    );
}

#[test]
fn a_mark_cleared_without_notice_does_not_shift_later_echoes() {
    let mut b = Bench::new();
    b.sent();
    b.app(json!({"event": "mark", "mark": {"name": "lost"}}));
    b.speech.clear_playout();
    b.app(json!({"event": "media", "media": {"payload": tone_chunks(100, 800)[0]}}));
    b.app(json!({"event": "mark", "mark": {"name": "next"}}));
    for _ in 0..10 {
        b.tick();
    }
    assert_eq!(b.echoed, vec![("next".to_owned(), 5)]);
}

#[test]
fn the_engines_own_marks_are_not_the_apps() {
    let mut b = Bench::new();
    assert!(!b.session.playout_done("apology"));
}

#[test]
fn broken_frames_are_protocol_errors_and_unknown_events_are_ignored() {
    let mut b = Bench::new();
    let mut speech = SpeechLoop::new(SpeechConfig::default(), b.now);
    let mut handle = |text: &str| b.session.handle_app(text, &mut speech, false);
    assert!(matches!(
        handle("not json"),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        handle(r#"{"event":"media","media":{"payload":"***"}}"#),
        Err(ProtocolError::Payload)
    ));
    assert!(matches!(
        handle(r#"{"event":"mark"}"#),
        Err(ProtocolError::Malformed(_))
    ));
    assert_eq!(handle(r#"{"event":"hello"}"#), Ok(AppEffect::Queued));
    assert_eq!(
        b.session.invalid(),
        3,
        "counted; the unknown event is not invalid"
    );
}

#[test]
fn invalid_frames_change_nothing_and_the_stream_goes_on() {
    let mut b = Bench::new();
    b.sent();
    for bad in [
        "not json",
        r#"{"event":"media","media":{"payload":"***"}}"#,
        r#"{"event":"mark"}"#,
    ] {
        assert!(b.session.handle_app(bad, &mut b.speech, false).is_err());
    }
    assert!(b.sent().is_empty(), "nothing answered, nothing queued");
    assert!(!b.speech.agent_speaking());
    b.app(json!({"event": "media", "media": {"payload": tone_chunks(100, 800)[0]}}));
    b.app(json!({"event": "mark", "mark": {"name": "after"}}));
    for _ in 0..10 {
        b.tick();
    }
    assert_eq!(b.echoed, vec![("after".to_owned(), 5)]);
    assert_eq!(b.session.invalid(), 3);
}

proptest! {
    /// Whatever an app sends, the core answers without panicking.
    #[test]
    fn any_frame_gets_an_answer(text in any::<String>(), payload in "[A-Za-z0-9+/=]{0,64}") {
        let mut b = Bench::new();
        let mut speech = SpeechLoop::new(SpeechConfig::default(), b.now);
        let _ = b.session.handle_app(&text, &mut speech, false);
        let media = json!({"event": "media", "media": {"payload": payload}}).to_string();
        let _ = b.session.handle_app(&media, &mut speech, true);
        let _ = speech.next_agent_frame();
    }
}

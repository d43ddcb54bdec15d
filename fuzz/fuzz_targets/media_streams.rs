//! A Media Streams app's text frames as a call's session takes them: one frame a line, each
//! followed by a 20 ms tick (a caller frame in, the agent's frame out, the playout's marks
//! reported), the send queue's room chosen by the input. Every event sent to the app is JSON,
//! its `sequenceNumber`s count up by one, and no mark is echoed that the app did not send.
#![no_main]

use std::time::{Duration, Instant};

use dialtone_media_streams::{StreamStart, StreamsSession};
use dialtone_speech::{BargeIn, FRAME_SAMPLES, SpeechConfig, SpeechEvent, SpeechLoop};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&room, rest)) = data.split_first() else {
        return;
    };
    let start = StreamStart {
        stream_sid: "MZ0".into(),
        account_sid: "org".into(),
        call_sid: "call".into(),
        custom_parameters: Default::default(),
    };
    let Ok(mut session) = StreamsSession::new(start) else {
        return;
    };
    let mut now = Instant::now();
    let config = SpeechConfig {
        barge_in: if room & 1 == 0 {
            BargeIn::Off
        } else {
            BargeIn::On
        },
        ..SpeechConfig::default()
    };
    let mut speech = SpeechLoop::new(config, now);
    let mut sequence = 0u64;
    let mut marks_sent = 0usize;
    let mut marks_echoed = 0usize;
    let text = String::from_utf8_lossy(rest);
    for (i, line) in text.split('\n').enumerate() {
        let event = serde_json::from_str::<serde_json::Value>(line).ok();
        if event.is_some_and(|e| e["event"] == "mark") {
            marks_sent += 1;
        }
        let muted = i % 7 == 6;
        let _ = session.handle_app(line, &mut speech, muted);
        now += Duration::from_millis(20);
        speech.handle_caller_frame(now, &[0; FRAME_SAMPLES]);
        session.caller_frame(&speech.next_agent_frame(), Some(now));
        while let Some(event) = speech.poll_event() {
            match event {
                SpeechEvent::PlayoutDone { mark } => {
                    session.playout_done(&mark);
                }
                SpeechEvent::BargeIn { .. } => session.playout_cleared(),
                _ => {}
            }
        }
        while let Some(frame) = session.poll_transmit(usize::from(room)) {
            let event: serde_json::Value =
                serde_json::from_str(&frame.text).expect("every event sent is JSON");
            if event["event"] == "mark" {
                marks_echoed += 1;
            }
            if let Some(number) = event["sequenceNumber"].as_str() {
                sequence += 1;
                assert_eq!(number, sequence.to_string(), "sequence numbers count up");
            }
        }
    }
    session.stop();
    assert!(
        marks_echoed <= marks_sent,
        "{marks_echoed} echoes of {marks_sent} marks"
    );
});

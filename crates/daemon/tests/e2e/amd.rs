//! Answering-machine detection end to end: a real daemon dials baresip, which plays a person's
//! pick-up or a voicemail greeting (espeak-ng speech, a beep) as the callee and records what it
//! hears. The agent is `builtin:agent` on the scripted OpenAI-compatible server (its speech is
//! a 440 Hz tone, so the agent's audio is found on the wire by its tone) or `builtin:echo`.

use std::time::Duration;

use dialtone_test_support::audio::tone_amplitude;
use dialtone_test_support::media::{Baresip, speech_ulaw, ulaw_to_wav};
use dialtone_test_support::openai::{SPEECH_TONE_HZ, ScriptedOpenAi, TranscriptReply};
use serde_json::{Value, json};

use super::agent::{make_agent, trunk_to};
use super::{World, wait_final, world};

/// A part of what the callee plays.
enum Part<'a> {
    /// Silence, ms.
    Silence(u64),
    /// espeak-ng speech.
    Say(&'a str),
    /// A tone: Hz, ms.
    Beep(f64, u64),
}

/// baresip playing `parts` in order; returns it and the end of each part in its file, ms.
fn callee(dir: &std::path::Path, parts: &[Part<'_>]) -> (Baresip, Vec<u64>) {
    let mut ulaw: Vec<u8> = Vec::new();
    let mut ends = Vec::new();
    for part in parts {
        match part {
            Part::Silence(ms) => ulaw.extend(std::iter::repeat_n(0xffu8, (*ms * 8) as usize)),
            Part::Say(text) => ulaw.extend(speech_ulaw(dir, text).unwrap()),
            Part::Beep(hz, ms) => ulaw.extend((0..*ms * 8).map(|n| {
                let t = n as f64 / 8000.0;
                dialtone_codec::linear_to_ulaw(
                    (8000.0 * (std::f64::consts::TAU * hz * t).sin()) as i16,
                )
            })),
        }
        ends.push(ulaw.len() as u64 / 8);
    }
    let wav = dir.join("callee.wav");
    ulaw_to_wav(&ulaw, 8000, &wav).unwrap();
    (Baresip::callee(&wav).unwrap(), ends)
}

/// When the agent's tone first reached baresip, ms into its recording.
fn first_tone_ms(baresip: &Baresip) -> Option<u64> {
    let (rate, samples) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
    samples
        .chunks_exact(rate as usize / 50)
        .position(|f| tone_amplitude(f, rate, SPEECH_TONE_HZ) > 2000.0)
        .map(|frame| frame as u64 * 20)
}

/// A world whose agent is `builtin:agent` on a scripted provider, dialling baresip.
async fn agent_world(openai: &ScriptedOpenAi, baresip: &Baresip, settings: Value) -> World {
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    make_agent(&w, &openai.base_url(), settings).await;
    w
}

/// A voicemail greeting of three sentences, then its beep: the agent says nothing to the
/// greeting, and its message starts 100–600 ms after the beep ends (on the wire, as baresip
/// heard it), barge-in off so the beep's tail cannot cut it; the call hangs up when it has
/// played, and the record says why it was a machine and what the message waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_gets_its_message_after_the_beep_ends() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let (baresip, ends) = callee(
        dir.path(),
        &[
            Part::Silence(400),
            Part::Say("Hi, you have reached Sam Jones."),
            Part::Silence(450),
            Part::Say("I can't take your call right now."),
            Part::Silence(500),
            Part::Say("Please leave your name and number after the tone."),
            Part::Silence(400),
            Part::Beep(1000.0, 700),
            Part::Silence(9000),
        ],
    );
    let beep_end = ends[7];
    let message = "Hi Sam, this is Ava from Acme. Please call us back.";
    let w = agent_world(
        &openai,
        &baresip,
        json!({
            "first_message": "Hello, this is Ava from Acme.",
            "amd": {"mode": "accurate"},
            "voicemail_action": {"action": "leave_message", "message": message},
        }),
    )
    .await;
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["answered_by"], "machine", "{record:#}");
    let why = &record["answered_by_reason"];
    assert_eq!(why["code"], "long_greeting", "{record:#}");
    assert_eq!(why["message_after"], "beep", "{record:#}");
    assert!(why["phrases"].as_u64().unwrap() >= 3, "{why}");
    assert_eq!(
        record["end_reason"]["code"], "voicemail_message",
        "{record:#}"
    );
    assert_eq!(record["end_reason"]["by"], "agent");
    let transcript = record["transcript"].as_array().unwrap();
    assert_eq!(transcript.len(), 1, "{record:#}");
    assert_eq!(transcript[0]["text"], message);
    assert_eq!(transcript[0]["interrupted"], Value::Null);
    // Only the message went out (the first message never did), and it started after the beep.
    let heard = first_tone_ms(&baresip).expect("the message reached the callee");
    let after_beep = heard as i64 - beep_end as i64;
    println!(
        "the message reached the callee {after_beep} ms after the beep ended; the engine heard \
         the beep end {} ms after the answer, {} ms after it ended in the callee's file",
        why["message_at_ms"],
        why["message_at_ms"].as_i64().unwrap() - beep_end as i64
    );
    assert!(
        (100..=600).contains(&after_beep),
        "the message began {after_beep} ms after the beep's end"
    );
    w.finish().await;
}

/// A person's "Hello?" then waiting: a person, and the agent's first message follows their
/// word within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_says_hello_is_greeted_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let (baresip, ends) = callee(
        dir.path(),
        &[Part::Silence(600), Part::Say("Hello?"), Part::Silence(6000)],
    );
    let hello_end = ends[1];
    let w = agent_world(
        &openai,
        &baresip,
        json!({
            "first_message": "Hi, this is Ava from Acme.",
            "amd": true,
            "voicemail_action": "hangup",
        }),
    )
    .await;
    openai.push_transcript(TranscriptReply::Text("Hello?".into()));
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["answered_by"], "human", "{record:#}");
    let why = &record["answered_by_reason"];
    assert_eq!(why["code"], "after_greeting_silence", "{record:#}");
    assert_eq!(why["pause_ms"], 700, "{record:#}");
    assert_ne!(record["end_reason"]["code"], "voicemail", "{record:#}");
    assert_eq!(
        record["transcript"][0]["text"],
        "Hi, this is Ava from Acme."
    );
    let heard = first_tone_ms(&baresip).expect("the greeting reached the callee");
    let after_hello = heard as i64 - hello_end as i64;
    println!(
        "the agent's greeting reached the callee {after_hello} ms after their Hello?; the \
         verdict came {} ms after the answer, {} ms after the word's end in the callee's file",
        why["after_ms"],
        why["after_ms"].as_i64().unwrap() - hello_end as i64
    );
    assert!(
        (0..2000).contains(&after_hello),
        "greeted {after_hello} ms after the person's word"
    );
    w.finish().await;
}

/// A greeting that opens like a person ("Hello?", a pause) and goes on as a recording with no
/// beep: the agent greets the "person", then the machine's words (voicemail phrases in the
/// transcript) turn the verdict, the agent falls silent, and the message is left after the
/// greeting's final silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voicemail_words_turn_a_person_into_a_machine_and_the_message_follows_the_silence() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let words = "I'm not here right now, please leave a message.";
    let (baresip, ends) = callee(
        dir.path(),
        &[
            Part::Silence(400),
            Part::Say("Hello?"),
            Part::Silence(1100),
            Part::Say(words),
            Part::Silence(9000),
        ],
    );
    let greeting_end = ends[3];
    let message = "This is Ava from Acme, please call us back.";
    let w = agent_world(
        &openai,
        &baresip,
        json!({
            "first_message": "Hi, this is Ava.",
            "amd": true,
            "voicemail_action": {"action": "leave_message", "message": message},
        }),
    )
    .await;
    openai.push_transcript(TranscriptReply::Text("Hello?".into()));
    openai.push_transcript(TranscriptReply::Text(words.into()));
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["answered_by"], "machine", "{record:#}");
    let why = &record["answered_by_reason"];
    assert_eq!(why["code"], "voicemail_phrase", "{record:#}");
    assert_eq!(why["phrase"], "leave a message", "{record:#}");
    assert_eq!(why["replaced"], "human", "{record:#}");
    assert_eq!(why["message_after"], "silence", "{record:#}");
    let message_at = why["message_at_ms"].as_u64().unwrap();
    assert!(
        message_at > greeting_end,
        "the message ({message_at} ms) waited for the greeting's end ({greeting_end} ms)"
    );
    assert_eq!(
        record["end_reason"]["code"], "voicemail_message",
        "{record:#}"
    );
    let lines: Vec<&str> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "agent")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(lines.last(), Some(&message), "{record:#}");
    w.finish().await;
}

/// A long greeting with no beep and the `hangup` action: a machine, hung up on (`voicemail`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_is_hung_up_on_when_the_agent_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (baresip, _) = callee(
        dir.path(),
        &[
            Part::Silence(300),
            Part::Say("Thank you for calling Acme plumbing."),
            Part::Silence(400),
            Part::Say("Our office is closed."),
            Part::Silence(500),
            Part::Say("Our hours are eight to five, Monday to Friday."),
            Part::Silence(8000),
        ],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": "builtin:echo", "amd": {"mode": "accurate"}, "voicemail_action": "hangup"}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["answered_by"], "machine", "{record:#}");
    assert_eq!(record["answered_by_reason"]["code"], "long_greeting");
    assert_eq!(record["end_reason"]["code"], "voicemail", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "agent");
    w.finish().await;
}

/// An agent whose brain is not `builtin:agent` but which sets an `stt` for answering-machine
/// detection alone: the words of a greeting that opened like a person's make it a machine, and
/// the `hangup` action ends the call (`voicemail`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_stt_set_for_amd_alone_hears_the_voicemail_words() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let words = "Sorry I missed you, leave a message.";
    let (baresip, _) = callee(
        dir.path(),
        &[
            Part::Silence(400),
            Part::Say("Hello?"),
            Part::Silence(1100),
            Part::Say(words),
            Part::Silence(8000),
        ],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (s, provider) = w
        .api
        .post(
            "/v1/providers",
            json!({"name": "local", "kind": "openai", "base_url": openai.base_url(), "api_key": "sk-test"}),
        )
        .await;
    assert_eq!(s, 201, "{provider}");
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({
                "brain": "builtin:echo",
                "amd": true,
                "voicemail_action": "hangup",
                "stt": {"provider": "local", "model": "whisper-test"},
            }),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    openai.push_transcript(TranscriptReply::Text("Hello?".into()));
    openai.push_transcript(TranscriptReply::Text(words.into()));
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["answered_by"], "machine", "{record:#}");
    let why = &record["answered_by_reason"];
    assert_eq!(why["code"], "voicemail_phrase", "{record:#}");
    assert_eq!(why["replaced"], "human", "{record:#}");
    assert_eq!(record["end_reason"]["code"], "voicemail", "{record:#}");
    let uploads = openai
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/audio/transcriptions")
        .count();
    assert_eq!(uploads, 2, "each utterance transcribed once");
    w.finish().await;
}

/// A greeting that falls silent before its beep: the message starts on the silence, the late
/// beep cuts it, and it starts again after the beep; the transcript keeps the cut first try
/// (`interrupted`) and the whole second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_beep_starts_the_message_again_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let (baresip, ends) = callee(
        dir.path(),
        &[
            Part::Silence(300),
            Part::Say("Hi, you have reached Sam Jones."),
            Part::Silence(450),
            Part::Say("I can't take your call right now."),
            Part::Silence(500),
            Part::Say("Please leave your name and number."),
            Part::Silence(2600),
            Part::Beep(1400.0, 400),
            Part::Silence(9000),
        ],
    );
    let beep_end = ends[7];
    let message = "Hi Sam, this is Ava from Acme. Please call us back about your order.";
    let w = agent_world(
        &openai,
        &baresip,
        json!({
            "amd": {"mode": "accurate"},
            "voicemail_action": {"action": "leave_message", "message": message},
        }),
    )
    .await;
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["answered_by"], "machine", "{record:#}");
    let why = &record["answered_by_reason"];
    assert_eq!(why["message_after"], "beep", "{record:#}");
    assert_eq!(
        record["end_reason"]["code"], "voicemail_message",
        "{record:#}"
    );
    let lines = record["transcript"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{record:#}");
    assert_eq!(lines[0]["interrupted"], true, "{record:#}");
    let first = lines[0]["text"].as_str().unwrap();
    assert!(
        message.starts_with(first) && first.len() < message.len(),
        "the first try was cut to what played: {first:?}"
    );
    assert_eq!(lines[1]["text"], message);
    assert_eq!(lines[1]["interrupted"], Value::Null);
    let at = why["message_at_ms"].as_i64().unwrap();
    assert!(
        (beep_end as i64..beep_end as i64 + 200).contains(&at),
        "started again {} ms after the beep's end",
        at - beep_end as i64
    );
    w.finish().await;
}

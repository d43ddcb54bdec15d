//! `builtin:agent` with real speech recognition, no network: baresip speaks espeak-ng speech
//! as the callee, and the scripted OpenAI-compatible server hands each upload of the agent's
//! speech-to-text to PocketSphinx (`TranscriptReply::Recognise`, a grammar of a few phrases),
//! so what the model is told the caller said comes from the audio the engine heard, not from a
//! script.

use serde_json::{Value, json};

use dialtone_test_support::openai::{ChatReply, ScriptedCall, ScriptedOpenAi, TranscriptReply};

use super::agent::{callee, make_agent, trunk_to};
use super::{wait_final, world};

/// The phrases the recogniser's grammar allows; the callee says the first.
const PHRASES: [&str; 4] = [
    "yes I am interested",
    "no thank you",
    "call me back later",
    "my budget is five hundred dollars",
];

/// The callee's answer, as espeak-ng says it, is recognised from the call's audio: the
/// transcript's caller line and the user message of the model's request are the recognised
/// words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_hears_what_the_callee_says_through_real_speech_recognition() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    // The callee waits for the greeting (30 characters: 1.8 s of tone), answers, and listens.
    let baresip = callee(
        dir.path(),
        &[Ok(3000), Err("Yes, I am interested."), Ok(9000)],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    make_agent(
        &w,
        &openai.base_url(),
        json!({"first_message": "Hi {{context.name}}, this is Ava from Acme."}),
    )
    .await;
    openai.push_transcript(TranscriptReply::recognise(&PHRASES));
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Wonderful, I will send the details. Goodbye!".into()),
        calls: vec![ScriptedCall::new("call_1", "end_call", "{}")],
        fragment: 4,
        reuse_index: false,
    });
    openai.push_chat(ChatReply::text("Sam is interested."));

    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    let requests = openai.requests();
    let stt: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/audio/transcriptions")
        .collect();
    assert_eq!(
        (
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str(),
            stt.len()
        ),
        (Some("completed"), Some("agent"), 1),
        "one utterance recognised and answered; {record:#}\nuploads: {:?}",
        stt.iter().map(|r| r.wav).collect::<Vec<_>>()
    );
    let wav = stt[0].wav.unwrap();
    assert_eq!((wav.sample_rate, wav.channels, wav.bits), (16_000, 1, 16));

    let caller: Vec<&str> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "caller")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(caller.len(), 1, "{record:#}");
    assert_eq!(
        words(caller[0]),
        ["yes", "i", "am", "interested"],
        "{record:#}"
    );

    let chats: Vec<&Value> = requests
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json.as_ref())
        .collect();
    let user = chats[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|m| m["role"] == "user")
        .unwrap();
    assert_eq!(
        words(user["content"].as_str().unwrap()),
        ["yes", "i", "am", "interested"],
        "{:#}",
        chats[0]
    );
    assert_eq!(record["summary"], "Sam is interested.");
    w.finish().await;
}

/// `text`'s words, lowercase, without punctuation.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

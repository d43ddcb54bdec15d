//! `builtin:agent` end to end: a real daemon dials baresip, which plays espeak-ng speech as
//! the callee and records what it hears; the agent's providers are a scripted
//! OpenAI-compatible server (`dialtone_test_support::openai`: real HTTP and SSE on loopback,
//! standing in for services that would need the internet), its tool a loopback HTTP server
//! that checks the signature.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_test_support::media::{Baresip, speech_ulaw, ulaw_to_wav};
use dialtone_test_support::openai::{
    ChatReply, SPEECH_MS_PER_CHAR, SPEECH_TONE_HZ, ScriptedCall, ScriptedOpenAi, SpeechReply,
    TranscriptReply,
};
use serde_json::{Value, json};

use super::{Api, World, wait_final, world};

/// The tool's requests: signature header and body.
type ToolCalls = Arc<Mutex<Vec<(String, String)>>>;

/// A tool on loopback answering `answer` to every POST, recording each.
async fn tool_server(answer: Value) -> (String, ToolCalls) {
    use axum::http::HeaderMap;
    let got: ToolCalls = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/tool",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (g, answer) = (g.clone(), answer.clone());
            async move {
                let signature = headers
                    .get("dialtone-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                g.lock().unwrap().push((signature, body));
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tool", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

/// Points the world's trunk at `port` (baresip).
pub(super) async fn trunk_to(api: &Api, port: u16) {
    let (_, trunks) = api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, t) = api.patch(&trunk, json!({"port": port})).await;
    assert_eq!(s, 200, "{t}");
}

/// A provider named "local" at `base_url` and the world's agent turned into a `builtin:agent`
/// with `settings` laid over.
pub(super) async fn make_agent(w: &World, base_url: &str, settings: Value) {
    let (s, provider) = w
        .api
        .post(
            "/v1/providers",
            json!({"name": "local", "kind": "openai", "base_url": base_url, "api_key": "sk-test-secret"}),
        )
        .await;
    assert_eq!(s, 201, "{provider}");
    assert_eq!(provider["has_api_key"], true);
    let mut agent = json!({
        "brain": "builtin:agent",
        "persona": "You are Ava, a friendly sales assistant at Acme.",
        "instructions": "Find out whether {{context.name}} is interested and their budget.",
        "llm": {"provider": "local", "model": "gpt-test"},
        "stt": {"provider": "local", "model": "whisper-test"},
        "tts": {"provider": "local", "model": "tts-test"},
        "voice": "alloy",
        "language": "en-US",
    });
    if let (Some(a), Some(extra)) = (agent.as_object_mut(), settings.as_object()) {
        a.extend(extra.clone());
    }
    let (s, a) = w
        .api
        .patch(&format!("/v1/agents/{}", w.agent_id), agent)
        .await;
    assert_eq!(s, 200, "{a}");
}

/// baresip as the callee playing `parts`: silence (ms) and espeak-ng phrases, in order.
pub(super) fn callee(dir: &std::path::Path, parts: &[Result<u64, &str>]) -> Baresip {
    let mut ulaw: Vec<u8> = Vec::new();
    for part in parts {
        match part {
            Ok(ms) => ulaw.extend(std::iter::repeat_n(0xffu8, (*ms * 8) as usize)),
            Err(text) => ulaw.extend(speech_ulaw(dir, text).unwrap()),
        }
    }
    let wav = dir.join("callee.wav");
    ulaw_to_wav(&ulaw, 8000, &wav).unwrap();
    Baresip::callee(&wav).unwrap()
}

/// The 440 Hz share of what baresip heard, per 20 ms frame: how many frames carried the
/// scripted synthesiser's tone.
fn tone_frames(baresip: &Baresip) -> usize {
    let (rate, samples) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
    samples
        .chunks_exact(rate as usize / 50)
        .filter(|f| dialtone_test_support::audio::tone_amplitude(f, rate, SPEECH_TONE_HZ) > 2000.0)
        .count()
}

/// The lead-qualification pattern by configuration alone: the first message (its placeholder
/// filled from the context) is played when the callee answers; the caller's words are
/// transcribed and answered; the model's tool call is POSTed, signed, and its answer goes back
/// to the model; the goodbye is heard before `end_call` hangs up; the result is extracted
/// against `returns` and a summary written, both on the record before `call.ended`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_qualifies_a_lead_by_configuration_alone() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let (tool_url, tool_calls) = tool_server(json!({"free_slots": ["Monday 10:00"]})).await;
    // The callee waits for the greeting (40 characters: 2.4 s of tone), answers, and listens.
    let baresip = callee(
        dir.path(),
        &[
            Ok(3500),
            Err("Yes I am interested, my budget is five hundred dollars."),
            Ok(9000),
        ],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    make_agent(
        &w,
        &openai.base_url(),
        json!({
            "first_message": "Hi {{context.name}}, this is Ava from Acme.",
            "returns": {
                "type": "object",
                "properties": {"interested": {"type": "boolean"}, "budget": {"type": "number"}},
                "required": ["interested", "budget"]
            },
            "tools": [{
                "name": "check_calendar", "description": "Free slots for a call back",
                "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
                "url": tool_url,
            }],
        }),
    )
    .await;
    openai.push_transcript(TranscriptReply::Text(
        "Yes, I am interested. My budget is five hundred dollars.".into(),
    ));
    openai.push_chat(ChatReply::ToolCalls {
        text: None,
        calls: vec![ScriptedCall::new(
            "call_1",
            "check_calendar",
            r#"{"day": "monday"}"#,
        )],
        fragment: 4,
        reuse_index: false,
    });
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Great, I booked Monday at ten. Goodbye!".into()),
        calls: vec![ScriptedCall::new("call_2", "end_call", "{}")],
        fragment: 3,
        reuse_index: false,
    });
    // After the call: the summary (streamed), then the result (JSON schema).
    openai.push_chat(ChatReply::text(
        "Sam is interested, with a budget of 500 dollars.",
    ));
    openai.push_chat(ChatReply::text(r#"{"interested": true, "budget": 500}"#));

    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        (
            record["status"].as_str(),
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some("completed"), Some("completed"), Some("agent")),
        "{record:#}"
    );
    assert_eq!(
        record["result"],
        json!({"interested": true, "budget": 500}),
        "{record:#}"
    );
    assert_eq!(record["result_error"], Value::Null);
    assert_eq!(
        record["summary"],
        "Sam is interested, with a budget of 500 dollars."
    );
    let transcript = record["transcript"].as_array().unwrap();
    let said: Vec<(&str, &str)> = transcript
        .iter()
        .map(|l| (l["role"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("agent", "Hi Sam, this is Ava from Acme."),
            (
                "caller",
                "Yes, I am interested. My budget is five hundred dollars."
            ),
            ("tool", ""),
            ("agent", "Great, I booked Monday at ten. Goodbye!"),
            ("tool", ""),
        ],
        "{record:#}"
    );
    assert_eq!(transcript[2]["name"], "check_calendar");
    assert_eq!(transcript[2]["arguments"], json!({"day": "monday"}));
    assert_eq!(
        transcript[2]["result"],
        json!({"free_slots": ["Monday 10:00"]})
    );
    let stats = &record["agent_stats"];
    assert_eq!(stats["turns"], 2, "{stats}");
    assert_eq!(stats["tool_calls"], 2, "{stats}");
    assert!(
        stats["voice_to_voice_ms"]["max"].as_u64().is_some(),
        "{stats}"
    );

    // The tool got a signed POST with the call, the tool and the arguments as an object.
    let calls = tool_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let (signature, body) = &calls[0];
    let parts: Vec<&str> = signature.split(',').collect();
    let t = parts[0].strip_prefix("t=").unwrap();
    let expected =
        dialtone_test_support::openssl_hmac_sha256("whsec-test", &format!("{t}.{body}")).unwrap();
    assert_eq!(parts[1], format!("v1={expected}"));
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        json!({"call_id": id, "tool": "check_calendar", "arguments": {"day": "monday"}})
    );

    // What the model was asked: the persona, the filled instructions and the context in the
    // system message; the tools with the built-ins; the tool's answer in the second request.
    let requests = openai.requests();
    let chats: Vec<&Value> = requests
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json.as_ref())
        .collect();
    assert_eq!(chats.len(), 4, "{chats:#?}");
    let system = chats[0]["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("You are Ava"), "{system}");
    assert!(
        system.contains("Find out whether Sam is interested"),
        "{system}"
    );
    assert!(system.contains(r#""name":"Sam""#), "{system}");
    let tools: Vec<&str> = chats[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["check_calendar", "end_call", "send_dtmf"]);
    assert_eq!(chats[0]["model"], "gpt-test");
    assert_eq!(chats[0]["stream"], true);
    let last = chats[1]["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["role"], "tool");
    assert_eq!(last["tool_call_id"], "call_1");
    assert_eq!(chats[3]["response_format"]["type"], "json_schema");
    let auth = requests[0].header("authorization").unwrap();
    assert_eq!(auth, "Bearer sk-test-secret");
    // The caller's utterance went to speech recognition as a WAV of about its length.
    let stt = requests
        .iter()
        .find(|r| r.path == "/v1/audio/transcriptions")
        .unwrap();
    assert_eq!(stt.field("language").as_deref(), Some("en"));
    let heard = stt.wav.as_ref().unwrap().duration();
    assert!(
        (Duration::from_millis(2000)..Duration::from_millis(6000)).contains(&heard),
        "{heard:?}"
    );
    // The callee heard both of the agent's lines as audio: the scripted synthesiser's tone,
    // as long as their characters (60 ms each), within a few frames.
    let tone_ms = tone_frames(&baresip) as u64 * 20;
    let expected_ms = (30 + 39) * SPEECH_MS_PER_CHAR;
    assert!(
        tone_ms + 400 >= expected_ms && tone_ms <= expected_ms + 400,
        "heard {tone_ms} ms of the agent's speech, expected about {expected_ms} ms; baresip: {}",
        baresip.log()
    );
    // The latencies are Prometheus histograms (buckets, which aggregate across nodes), not
    // summaries.
    let metrics = w.api.metrics().await;
    for name in [
        "dialtone_agent_voice_to_voice_seconds",
        "dialtone_agent_llm_first_token_seconds",
    ] {
        let buckets: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .collect();
        assert!(
            buckets.iter().any(|l| l.contains(r#"le="+Inf""#)) && buckets.len() > 5,
            "{name}: {buckets:?}\n{metrics}"
        );
        // Labelled by the provider's kind, never by the tenant's name for it ("local").
        assert!(
            buckets.iter().all(|l| l.contains(r#"provider="openai""#)),
            "{name}: {buckets:?}"
        );
    }
    assert!(!metrics.contains(r#"provider="local""#), "{metrics}");
    w.finish().await;
}

/// A provider that cannot be reached is never dead air: the engine apologises with the local
/// synthesiser and ends the call with `brain_error`, the record saying which provider failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_ends_the_call_with_an_apology_and_brain_error() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let baresip = callee(dir.path(), &[Ok(15000)]);
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    make_agent(
        &w,
        &base_url,
        json!({"returns": {"type": "object"}, "tts": {"provider": "builtin:espeak"}, "voice": "en-us"}),
    )
    .await;
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        (
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some("brain_error"), Some("agent")),
        "{record:#}"
    );
    let why = record["result_error"].as_str().unwrap();
    assert!(why.contains("local could not be reached"), "{why}");
    assert!(
        record["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["text"].as_str().unwrap().contains("I'm sorry")),
        "{record:#}"
    );
    // The apology was heard: speech energy reached the callee.
    let (_, samples) = baresip
        .received_pcm(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}: {}\n{record:#}", baresip.log()));
    let voiced = samples
        .chunks_exact(160)
        .filter(|f| dialtone_media::level_dbfs(f) > -40.0)
        .count();
    assert!(
        voiced >= 25,
        "only {voiced} voiced frames: {}",
        baresip.log()
    );
    // An agent with no `returns` gets the failure on its record all the same.
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"returns": null}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["end_reason"]["code"], "brain_error", "{record:#}");
    let why = record["result_error"].as_str().unwrap_or_default();
    assert!(why.contains("local could not be reached"), "{record:#}");
    // Counted by what went wrong, never by the tenant's name for the provider.
    let metrics = w.api.metrics().await;
    assert!(
        metrics.contains("dialtone_agent_failures_total{kind=\"unreachable\"} 2"),
        "{metrics}"
    );
    w.finish().await;
}

/// Placeholders name keys the context must have: the dispatch is refused naming `context`;
/// an agent whose provider does not exist is refused at creation naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_and_providers_are_checked_before_any_call() {
    let openai = ScriptedOpenAi::start().await.unwrap();
    let w = world(None, &[]).await;
    make_agent(
        &w,
        &openai.base_url(),
        json!({"first_message": "Hello {{context.name}} about order {{context.order.id}}."}),
    )
    .await;
    let (s, e) = w
        .api
        .post(
            "/v1/calls",
            json!({"agent_id": w.agent_id, "to": "+15551230000", "context": {"name": "Sam"}}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("context")),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("order.id"),
        "{e}"
    );
    let (s, e) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"llm": {"provider": "nobody", "model": "m"}}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("llm.provider")),
        "{e}"
    );
    w.finish().await;
}

/// The caller talks over the agent (`barge_in` `"on"`): its speech stops within a few frames,
/// its line is cut to what was heard (`interrupted`), the model is asked with the cut line and
/// the caller's words, and a result the model cannot get right after one retry is refused
/// with `result_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_talks_over_the_agent_cuts_its_line_to_what_was_heard() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    // The greeting is 100 characters: 6 s of tone. The callee cuts in after 2 s.
    let greeting = "Hello Sam, this is Ava calling from Acme about the quote you asked for last week on our website.";
    let baresip = callee(
        dir.path(),
        &[Ok(2000), Err("Sorry, how much does it cost?"), Ok(5000)],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    make_agent(
        &w,
        &openai.base_url(),
        json!({
            "first_message": greeting,
            "barge_in": "on",
            "returns": {
                "type": "object",
                "properties": {"price_asked": {"type": "boolean"}},
                "required": ["price_asked"]
            },
        }),
    )
    .await;
    price_question_answered(&openai);
    openai.push_chat(ChatReply::text(r#"{"price_asked": "yes"}"#));
    openai.push_chat(ChatReply::text(r#"{"asked": true}"#));
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    let transcript = record["transcript"].as_array().unwrap();
    let first = &transcript[0];
    assert_eq!(first["role"], "agent", "{record:#}");
    assert_eq!(first["interrupted"], true, "{record:#}");
    let heard = first["text"].as_str().unwrap();
    assert!(
        greeting.starts_with(heard) && (10..80).contains(&heard.len()),
        "heard {heard:?}"
    );
    assert_eq!(transcript[1]["text"], "Sorry, how much does it cost?");
    assert_eq!(transcript[2]["text"], "It costs ten dollars a month.");
    assert_eq!(record["agent_stats"]["interruptions"], 1, "{record:#}");
    // The model was told what was heard, not what was meant to be said.
    let chats: Vec<Value> = openai.chat_requests();
    let messages = chats[0]["messages"].as_array().unwrap();
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], heard);
    assert_eq!(messages[2]["content"], "Sorry, how much does it cost?");
    // The extraction's two answers did not fit `returns`: no result, and why.
    assert_eq!(record["result"], Value::Null);
    let why = record["result_error"].as_str().unwrap();
    assert!(why.contains("price_asked"), "{why}");
    assert_eq!(chats.len(), 4, "the answer, the summary, two extractions");
    // On the wire: the callee heard the greeting's tone for about as long as the heard text
    // (60 ms a character) plus the answer's, and not the whole greeting.
    let tone_ms = tone_frames(&baresip) as u64 * 20;
    let expected_ms = (heard.len() as u64 + 29) * SPEECH_MS_PER_CHAR;
    assert!(
        tone_ms + 500 >= expected_ms && tone_ms <= expected_ms + 500,
        "heard {tone_ms} ms of tone; the cut line and the answer are {expected_ms} ms"
    );
    w.finish().await;
}

/// Without `barge_in`, `builtin:agent` hears a backchannel out: the callee's "Uh-huh" (about
/// 300 ms of speech) 1.5 s into the agent's 6 s greeting cuts nothing and starts no turn, yet
/// is on the record; its question 1.5 s later, longer than the 500 ms minimum, cuts the
/// greeting once it has gone on that long, and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_does_not_cut_the_agent_off_but_a_longer_utterance_does() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let greeting = "Hello Sam, this is Ava calling from Acme about the quote you asked for last week on our website.";
    let baresip = callee(
        dir.path(),
        &[
            Ok(1500),
            Err("Uh-huh."),
            Ok(1500),
            Err("Sorry, how much does it cost?"),
            Ok(5000),
        ],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    make_agent(&w, &openai.base_url(), json!({"first_message": greeting})).await;
    openai.push_transcript(TranscriptReply::Text("Uh-huh.".into()));
    price_question_answered(&openai);
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    let said: Vec<(&str, &str)> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["role"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(said.len(), 4, "{record:#}");
    assert_eq!(
        [said[1], said[2], said[3]],
        [
            ("caller", "Uh-huh."),
            ("caller", "Sorry, how much does it cost?"),
            ("agent", "It costs ten dollars a month."),
        ],
        "{record:#}"
    );
    // One interruption: the question's. The greeting played on through the backchannel (at
    // 60 ms a character, well past the 1.5 s where "Uh-huh" came) to the question's 500 ms.
    assert_eq!(record["agent_stats"]["interruptions"], 1, "{record:#}");
    let first = &record["transcript"][0];
    assert_eq!(first["interrupted"], true, "{record:#}");
    let heard = first["text"].as_str().unwrap();
    let heard_ms = heard.len() as u64 * SPEECH_MS_PER_CHAR;
    assert!(
        greeting.starts_with(heard) && (2800..5500).contains(&heard_ms),
        "heard {heard:?}, {heard_ms} ms"
    );
    // The model was asked once, after the question, the backchannel in its history.
    let chats: Vec<Value> = openai.chat_requests();
    assert_eq!(chats.len(), 2, "the answer and the summary");
    let users: Vec<&Value> = chats[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| &m["content"])
        .collect();
    assert_eq!(
        users,
        [&json!("Uh-huh."), &json!("Sorry, how much does it cost?")]
    );
    w.finish().await;
}

/// The first message is synthesised while the phone rings: the callee (SIPp) rings 2 s before
/// it answers and the synthesiser takes 1 s to its first audio, yet the first message's
/// request came before the answer and its audio reaches the callee right after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_is_synthesised_while_the_phone_rings() {
    let openai = ScriptedOpenAi::start().await.unwrap();
    // The callee's media: a socket of the test, which SIPp's answer names.
    let media = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp_port = media.local_addr().unwrap().port().to_string();
    let w = world(
        Some("callee_rings_then_listens.xml"),
        &[
            ("ring_ms", "2000"),
            ("talk_ms", "3000"),
            ("rtp_port", rtp_port.as_str()),
        ],
    )
    .await;
    make_agent(
        &w,
        &openai.base_url(),
        json!({"first_message": "Hi Sam, this is Ava from Acme."}),
    )
    .await;
    openai.push_speech(SpeechReply::Late {
        first_audio_after: Duration::from_secs(1),
    });
    // When the first packet carrying the synthesiser's tone came.
    let first_tone = tokio::spawn(async move {
        let mut packet = [0u8; 1500];
        let mut pcm = [0i16; 1500];
        loop {
            let n = media.recv(&mut packet).await.unwrap();
            let payload = packet.get(12..n).unwrap_or_default();
            let decoded =
                dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).decode(payload, &mut pcm);
            if pcm[..decoded].iter().any(|s| s.unsigned_abs() > 2000) {
                return std::time::SystemTime::now();
            }
        }
    });
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    };
    let at =
        |field: &str| dialtone_model::time::parse_rfc3339(record[field].as_str().unwrap()).unwrap();
    let answered = at("answered_at");
    assert!(answered - at("ringing_at") >= 1800, "{record:#}");
    let speech: Vec<_> = openai
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/audio/speech")
        .collect();
    assert_eq!(speech.len(), 1, "the first message, once");
    assert_eq!(
        speech[0].json.as_ref().unwrap()["input"],
        "Hi Sam, this is Ava from Acme."
    );
    let asked = ms(speech[0].received_at);
    assert!(
        asked + 1000 < answered,
        "synthesis asked for {} ms before the answer",
        answered - asked
    );
    let heard = ms(tokio::time::timeout(Duration::from_secs(5), first_tone)
        .await
        .expect("the callee heard the first message")
        .unwrap());
    // Right after the answer (whose time the record has to the millisecond, read as the
    // answer is handled: the first packet may go out a hair before it is written down), and
    // sooner than the synthesis takes (1 s to its first audio): it was made while it rang.
    assert!(
        (-100..900).contains(&(heard - answered)),
        "the first message reached the callee {} ms after the answer",
        heard - answered
    );
    w.finish().await;
}

/// The scripted answers after the caller asks the price: the question's transcript, the
/// model's answer, then the call's summary.
fn price_question_answered(openai: &ScriptedOpenAi) {
    openai.push_transcript(TranscriptReply::Text(
        "Sorry, how much does it cost?".into(),
    ));
    openai.push_chat(ChatReply::text("It costs ten dollars a month."));
    openai.push_chat(ChatReply::text("Sam asked about the price."));
}

/// What the model opens with in the barge-in tests of the streaming synthesisers: 107
/// characters, over 6 s of tone.
const STREAMED_OPENING: &str = "Hello Sam, this is Ava from Acme. I am calling about the quote \
                                you asked for. It is ready whenever you are.";

/// A call whose agent speaks through a provider of `kind` at `base_url`: the model opens with
/// [`STREAMED_OPENING`], a word every 20 ms (its clauses reach the synthesiser one by one), the
/// callee cuts in after 2.5 s and is answered. Checks that the opening was cut to whole words
/// from its start and heard on the wire about that long; returns what it kept.
async fn a_streamed_line_cut_by_the_caller(kind: &str, base_url: String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let baresip = callee(
        dir.path(),
        &[Ok(2500), Err("Sorry, how much does it cost?"), Ok(5000)],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (s, p) = w
        .api
        .post(
            "/v1/providers",
            json!({"name": "mouth", "kind": kind, "base_url": base_url, "api_key": "k-secret"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    make_agent(
        &w,
        &openai.base_url(),
        json!({"tts": {"provider": "mouth"}, "voice": "voice-1"}),
    )
    .await;
    openai.push_chat(ChatReply::words(
        STREAMED_OPENING,
        Duration::from_millis(20),
    ));
    price_question_answered(&openai);
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    let transcript = record["transcript"].as_array().unwrap();
    let first = &transcript[0];
    assert_eq!(
        (first["role"].as_str(), first["interrupted"].as_bool()),
        (Some("agent"), Some(true)),
        "{record:#}"
    );
    let heard = first["text"].as_str().unwrap().to_owned();
    assert!(
        STREAMED_OPENING.starts_with(&heard)
            && (10..80).contains(&heard.len())
            && STREAMED_OPENING[heard.len()..].starts_with(' '),
        "heard {heard:?}: whole words, the start of the line"
    );
    assert_eq!(transcript[1]["text"], "Sorry, how much does it cost?");
    assert_eq!(transcript[2]["text"], "It costs ten dollars a month.");
    // On the wire: the callee heard the opening's tone up to the words kept (the next word
    // was under way) and the answer's.
    let tone_ms = tone_frames(&baresip) as u64 * 20;
    let expected_ms = (heard.len() as u64 + 29) * SPEECH_MS_PER_CHAR;
    assert!(
        tone_ms + 500 >= expected_ms && tone_ms <= expected_ms + 800,
        "heard {tone_ms} ms of tone; the cut line and the answer are {expected_ms} ms"
    );
    // The barge-in's stop on the wire was timed (the speech loop's decision → the media tick
    // that dropped the queued audio), in a histogram with buckets.
    let metrics = w.api.metrics().await;
    let stops = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dialtone_barge_in_stop_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(stops >= Some(1), "{metrics}");
    assert!(
        metrics.contains("dialtone_barge_in_stop_seconds_bucket{le=\"0.02\"}"),
        "{metrics}"
    );
    w.finish().await;
    heard
}

/// With Cartesia the model's answer is one context on one connection, its clauses continued
/// as they stream; a caller who talks over it cuts the line to the words whose audio was
/// played (by Cartesia's word timestamps), and the context is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cartesia_line_is_one_context_and_a_barge_in_cuts_it_by_word_timestamps() {
    use dialtone_test_support::cartesia::{CartesiaReply, ScriptedCartesia};
    let cartesia = ScriptedCartesia::start().await.unwrap();
    // The opening's audio comes a little faster than it plays (a chunk of 100 ms every 80
    // ms): it is still being made when the caller cuts in.
    cartesia.push(CartesiaReply::Tone {
        delay: Duration::from_millis(80),
    });
    a_streamed_line_cut_by_the_caller("cartesia", cartesia.base_url()).await;
    // The opening was one context on one connection, continued clause by clause, timed
    // word by word, and cancelled when the caller cut in; the answer had a connection of its
    // own.
    let line = cartesia.ended(0, Duration::from_secs(5)).await.unwrap();
    assert_eq!(cartesia.sessions().len(), 2, "a connection a line");
    let requests = line.requests();
    assert!(
        requests
            .iter()
            .all(|r| r["context_id"] == requests[0]["context_id"]),
        "{requests:?}"
    );
    let continued = requests.iter().filter(|r| r["continue"] == true).count();
    assert!(continued >= 2, "{requests:?}");
    assert!(line.timestamps_sent >= 1);
    assert!(line.cancelled && line.client_closed, "{line:?}");
}

/// With ElevenLabs the model's answer is one `stream-input` connection fed its clauses as they
/// stream; a caller who talks over it cuts the line to the words whose audio was played (by
/// the characters' alignment), and the connection is closed before the audio is all made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elevenlabs_line_is_one_connection_and_a_barge_in_cuts_it_by_its_alignment() {
    use dialtone_test_support::elevenlabs::{ElevenLabsReply, ScriptedElevenLabs};
    let elevenlabs = ScriptedElevenLabs::start().await.unwrap();
    // 150 ms of audio every 120 ms: still being made when the caller cuts in.
    elevenlabs.push(ElevenLabsReply::Tone {
        delay: Duration::from_millis(120),
    });
    a_streamed_line_cut_by_the_caller("elevenlabs", elevenlabs.base_url()).await;
    let line = elevenlabs.ended(0, Duration::from_secs(5)).await.unwrap();
    assert_eq!(elevenlabs.sessions().len(), 2, "a connection a line");
    assert_eq!(line.handshake.param("sync_alignment"), Some("true"));
    let flushed = line.messages.iter().filter(|m| m["flush"] == true).count();
    assert!(flushed >= 2, "{:?}", line.messages);
    assert!(line.client_closed, "{line:?}");
    let all = STREAMED_OPENING.len() * 60 * 32 / 4801;
    assert!(line.audio_sent < all, "{} of {all}", line.audio_sent);
}

/// The streaming services end to end: Deepgram hears the caller (one websocket for the call,
/// the utterance streamed as it is spoken, then `Finalize` when the engine's VAD ends it),
/// Cartesia speaks for the agent (its audio resampled into the
/// call); scripted peers speaking their real websocket protocols on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_hears_through_deepgram_and_speaks_through_cartesia() {
    use dialtone_test_support::cartesia::{CartesiaReply, ScriptedCartesia};
    use dialtone_test_support::deepgram::{DeepgramReply, ScriptedDeepgram};
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let deepgram = ScriptedDeepgram::start().await.unwrap();
    let cartesia = ScriptedCartesia::start().await.unwrap();
    let baresip = callee(
        dir.path(),
        &[Ok(2500), Err("Yes I am interested."), Ok(6000)],
    );
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    for (name, kind, base_url) in [
        ("ears", "deepgram", deepgram.base_url()),
        ("mouth", "cartesia", cartesia.base_url()),
    ] {
        let (s, p) = w
            .api
            .post(
                "/v1/providers",
                json!({"name": name, "kind": kind, "base_url": base_url, "api_key": "k-secret"}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
    }
    make_agent(
        &w,
        &openai.base_url(),
        json!({
            "first_message": "Hi, this is Ava.",
            "stt": {"provider": "ears", "model": "nova-3"},
            "tts": {"provider": "mouth", "model": "sonic-2"},
            "voice": "a0e99841-438c-4a64-b679-ae501e7d6091",
        }),
    )
    .await;
    // The call's one socket: its first utterance has the words (should the VAD split it under
    // load, the rest has none).
    deepgram.push(DeepgramReply::Utterances(vec![vec![
        "Yes, I am interested.".into(),
    ]]));
    for _ in 0..2 {
        cartesia.push(CartesiaReply::Tone {
            delay: Duration::ZERO,
        });
    }
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Wonderful, goodbye!".into()),
        calls: vec![ScriptedCall::new("c1", "end_call", "{}")],
        fragment: 2,
        reuse_index: false,
    });
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        (
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some("completed"), Some("agent")),
        "{record:#}"
    );
    let said: Vec<(&str, &str)> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] != "tool")
        .map(|l| (l["role"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("agent", "Hi, this is Ava."),
            ("caller", "Yes, I am interested."),
            ("agent", "Wonderful, goodbye!"),
        ],
        "{record:#}"
    );
    // Deepgram got the utterance (about its length at 16 kHz) as it was spoken, on the
    // call's one socket: its audio began well before the VAD ended it with Finalize.
    let heard = deepgram.ended(0, Duration::from_secs(5)).await.unwrap();
    assert_eq!(deepgram.sessions().len(), 1, "one socket for the call");
    let seconds = heard.samples().len() as f64 / 16_000.0;
    assert!((0.8..4.0).contains(&seconds), "{seconds} s");
    assert!(
        heard.message_types().iter().any(|t| t == "Finalize"),
        "{heard:?}"
    );
    let (finalized, bytes) = *heard.finalized.last().unwrap();
    let first_audio = heard.first_audio_at.unwrap();
    let streamed_ahead = finalized.duration_since(first_audio);
    assert!(
        streamed_ahead >= Duration::from_millis(500),
        "the audio came {streamed_ahead:?} before Finalize"
    );
    assert!(bytes >= 16_000, "{bytes} bytes before Finalize");
    println!(
        "deepgram live: audio streamed from {streamed_ahead:?} before Finalize; {} interim \
         result(s) while the caller spoke; stt_ms {}",
        heard.live_interims, record["agent_stats"]["stt_ms"]
    );
    // The model was asked once on the caller's words: on the interim ones as the utterance
    // ended, that request kept when the final words matched.
    let asked = openai
        .requests()
        .into_iter()
        .filter_map(|r| r.json)
        .filter(|body| {
            body["messages"].as_array().and_then(|m| m.last())
                == Some(&json!({"role": "user", "content": "Yes, I am interested."}))
        })
        .count();
    assert_eq!(asked, 1);
    // Cartesia spoke both lines; the callee heard them as the tone.
    assert_eq!(cartesia.sessions().len(), 2);
    let tone_ms = tone_frames(&baresip) as u64 * 20;
    let expected_ms = (16 + 19) * SPEECH_MS_PER_CHAR;
    assert!(
        tone_ms + 400 >= expected_ms && tone_ms <= expected_ms + 400,
        "heard {tone_ms} ms of tone, expected about {expected_ms} ms"
    );
    w.finish().await;
}

/// The caller's key presses reach the model: SIPp presses 1 then # (RFC 4733) after the first
/// message; the model hears "[the caller pressed 1 #]" as the caller's message, answers and
/// hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_hears_the_callers_key_presses() {
    use dialtone_test_support::media::{sipp_dtmf_captures, sipp_key_presses};
    let presses = sipp_key_presses(&sipp_dtmf_captures().unwrap(), "1#");
    let openai = ScriptedOpenAi::start().await.unwrap();
    let w = world(
        Some("callee_presses_digits.xml"),
        &[("listen_ms", "1500"), ("presses", presses.as_str())],
    )
    .await;
    make_agent(
        &w,
        &openai.base_url(),
        json!({
            "first_message": "Press 1 to confirm.",
            "tts": {"provider": "builtin:espeak"},
            "voice": "en-us",
        }),
    )
    .await;
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Confirmed, goodbye!".into()),
        calls: vec![ScriptedCall::new("c1", "end_call", "{}")],
        fragment: 2,
        reuse_index: false,
    });
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        (
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some("completed"), Some("agent")),
        "{record:#}"
    );
    let caller: Vec<&str> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "caller")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(caller, ["[the caller pressed 1 #]"], "{record:#}");
    let asked = openai
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .find_map(|r| r.json)
        .unwrap();
    let messages = asked["messages"].as_array().unwrap();
    assert_eq!(
        messages.last().unwrap(),
        &json!({"role": "user", "content": "[the caller pressed 1 #]"}),
        "{asked:#}"
    );
    w.finish().await;
}

/// A tool that fails is never silence: its failure goes back to the model as the tool's
/// message, one per way of failing — a 500, an answer that is not JSON, an answer past
/// 64 KiB (one that never ends), and one that never comes (the 10 s timeout) — and the model
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_failures_reach_the_model_as_its_answers() {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let endless = || async {
        let piece = axum::body::Bytes::from(vec![b'a'; 8192]);
        let body = futures_util::stream::iter(
            std::iter::once(axum::body::Bytes::from_static(b"\""))
                .chain(std::iter::repeat(piece))
                .map(Ok::<_, std::convert::Infallible>),
        );
        axum::body::Body::from_stream(body)
    };
    let app = axum::Router::new()
        .route(
            "/broken",
            axum::routing::post(|| async { StatusCode::INTERNAL_SERVER_ERROR.into_response() }),
        )
        .route(
            "/prose",
            axum::routing::post(|| async { "Monday at ten works." }),
        )
        .route("/endless", axum::routing::post(endless))
        .route("/hang", axum::routing::post(std::future::pending::<String>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let baresip = callee(dir.path(), &[Ok(25_000)]);
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let tool = |name: &str| {
        json!({"name": name, "description": "Look something up",
               "parameters": {"type": "object", "properties": {}},
               "url": format!("{base}/{name}")})
    };
    let names = ["broken", "prose", "endless", "hang"];
    make_agent(
        &w,
        &openai.base_url(),
        json!({"tools": names.map(tool), "tts": {"provider": "builtin:espeak"}, "voice": "en-us"}),
    )
    .await;
    openai.push_chat(ChatReply::ToolCalls {
        text: None,
        calls: names
            .iter()
            .map(|name| ScriptedCall::new(&format!("call_{name}"), name, "{}"))
            .collect(),
        fragment: 8,
        reuse_index: false,
    });
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Sorry, I cannot look that up.".into()),
        calls: vec![ScriptedCall::new("bye", "end_call", "{}")],
        fragment: 8,
        reuse_index: false,
    });
    let started = std::time::Instant::now();
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        record["end_reason"]["code"].as_str(),
        Some("completed"),
        "{record:#}"
    );
    let chats: Vec<Value> = openai.chat_requests();
    assert!(chats.len() >= 2, "{chats:#?}");
    // Each call's answer, by call id (they come in the order the tools failed).
    let answers: std::collections::BTreeMap<String, Value> = chats[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            let content = serde_json::from_str(m["content"].as_str().unwrap()).unwrap();
            (m["tool_call_id"].as_str().unwrap().to_owned(), content)
        })
        .collect();
    let error = |text: &str| json!({"error": text});
    assert_eq!(
        answers,
        std::collections::BTreeMap::from([
            (
                "call_broken".to_owned(),
                error("the tool answered HTTP 500")
            ),
            (
                "call_prose".to_owned(),
                error("the tool's answer is not JSON")
            ),
            (
                "call_endless".to_owned(),
                error("the tool's answer is longer than 65536 bytes")
            ),
            (
                "call_hang".to_owned(),
                error("the tool did not answer within 10 s")
            ),
        ]),
        "{:#}",
        chats[1]
    );
    // The model was asked again once the hanging tool's 10 s were up, not before.
    assert!(started.elapsed() >= Duration::from_secs(10));
    let tool_lines: Vec<&Value> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "tool" && l["name"] != "end_call")
        .collect();
    assert_eq!(tool_lines.len(), 4, "{record:#}");
    assert!(
        tool_lines.iter().all(|l| l["result"]["error"].is_string()),
        "{record:#}"
    );
    w.finish().await;
}

/// `send_dtmf` goes out on the wire: the model sends 1, 2 and # and hangs up; baresip, the
/// callee, receives them as RFC 4733 telephone events, in order, and the tool's line on the
/// record says what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_send_dtmf_reaches_the_callee_as_rfc4733_events() {
    let dir = tempfile::tempdir().unwrap();
    let openai = ScriptedOpenAi::start().await.unwrap();
    let baresip = callee(dir.path(), &[Ok(12_000)]);
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    make_agent(&w, &openai.base_url(), json!({})).await;
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Entering the code.".into()),
        calls: vec![ScriptedCall::new(
            "keys",
            "send_dtmf",
            r#"{"digits":"12#"}"#,
        )],
        fragment: 5,
        reuse_index: false,
    });
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Done, goodbye!".into()),
        calls: vec![ScriptedCall::new("bye", "end_call", "{}")],
        fragment: 5,
        reuse_index: false,
    });
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        (
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some("completed"), Some("agent")),
        "{record:#}"
    );
    let line = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "send_dtmf")
        .cloned()
        .unwrap_or_else(|| panic!("no send_dtmf line: {record:#}"));
    assert_eq!(line["role"], "tool");
    assert_eq!(line["arguments"], json!({"digits": "12#"}));
    assert_eq!(line["result"], json!({"sent": "12#"}), "{record:#}");
    // baresip logs each RFC 4733 telephone event it decodes: `received event: '1' (end=0)` as
    // the key goes down, `(end=1)` as it comes up.
    let log = baresip.log();
    let pressed: String = log
        .lines()
        .filter(|l| l.starts_with("received event: '") && l.ends_with("(end=0)"))
        .filter_map(|l| l.split('\'').nth(1)?.chars().next())
        .collect();
    assert_eq!(pressed, "12#", "baresip: {log}");
    w.finish().await;
}

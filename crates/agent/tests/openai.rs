//! The OpenAI-compatible clients against the scripted OpenAI server of `dialtone-test-support`
//! (real HTTP on 127.0.0.1, the real wire format).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use dialtone_agent::{
    AgentError, ChatEvent, ChatMessage, ChatModel, ChatRequest, OpenAiChat, OpenAiProvider,
    OpenAiSpeech, OpenAiTranscriber, SpeechToText, TextToSpeech, ToolCall, ToolSpec, Usage,
};
use dialtone_test_support::audio::tone_amplitude;
use dialtone_test_support::openai::{
    ChatReply, SPEECH_AMPLITUDE, SPEECH_MS_PER_CHAR, SPEECH_TONE_HZ, ScriptedCall, ScriptedOpenAi,
    SpeechReply, TranscriptReply,
};
use serde_json::{Value, json};

const KEY: &str = "sk-test-5f1e2d";
const WAIT: Duration = Duration::from_secs(5);

fn provider(server: &ScriptedOpenAi) -> OpenAiProvider {
    OpenAiProvider::new("acme-llm", server.base_url(), Some(KEY.into())).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("You are brief."),
            ChatMessage::user("Hello?"),
        ],
        tools: vec![ToolSpec {
            name: "end_call".into(),
            description: "Hang up.".into(),
            parameters: json!({"type": "object", "properties": {}}),
        }],
    }
}

/// Every event of a stream, the error (if any) last.
async fn collect(
    mut rx: tokio::sync::mpsc::Receiver<Result<ChatEvent, AgentError>>,
) -> (Vec<ChatEvent>, Option<AgentError>) {
    let mut events = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("stream stalled")
    {
        match item {
            Ok(event) => events.push(event),
            Err(error) => {
                assert!(
                    rx.recv().await.is_none(),
                    "the channel closes after an error"
                );
                return (events, Some(error));
            }
        }
    }
    (events, None)
}

#[tokio::test]
async fn text_streams_as_deltas_in_order_then_finishes_with_usage() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::words(
        "Good morning, how can I help?",
        Duration::from_millis(20),
    ));
    let chat = OpenAiChat::new(provider(&server), "gpt-test")
        .with_temperature(Some(0.5))
        .with_max_tokens(Some(200));
    let (events, error) = collect(chat.stream(request())).await;
    assert_eq!(error, None);
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deltas,
        ["Good", " morning,", " how", " can", " I", " help?"]
    );
    assert_eq!(
        events.last(),
        Some(&ChatEvent::Finished {
            reason: Some("stop".into()),
            usage: Some(Usage {
                prompt_tokens: 2,
                completion_tokens: 6
            }),
        })
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    let body = sent.json.as_ref().unwrap();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 200);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": "Hello?"},
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "end_call", "description": "Hang up.",
            "parameters": {"type": "object", "properties": {}},
        }}])
    );
}

#[tokio::test]
async fn tool_call_arguments_split_across_chunks_come_whole() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::ToolCalls {
        text: Some("One moment.".into()),
        calls: vec![
            ScriptedCall::new("call_a", "lookup", r#"{"order": "A-1234", "full": true}"#),
            ScriptedCall::new("call_b", "send_dtmf", r#"{"digits": "12#"}"#),
        ],
        fragment: 3,
        reuse_index: false,
    });
    let chat = OpenAiChat::new(provider(&server), "gpt-test");
    let (events, error) = collect(chat.stream(request())).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            ChatEvent::TextDelta("One moment.".into()),
            ChatEvent::ToolCalls(vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "lookup".into(),
                    arguments: r#"{"order": "A-1234", "full": true}"#.into(),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "send_dtmf".into(),
                    arguments: r#"{"digits": "12#"}"#.into(),
                },
            ]),
            ChatEvent::Finished {
                reason: Some("tool_calls".into()),
                usage: events.iter().find_map(|e| match e {
                    ChatEvent::Finished { usage, .. } => *usage,
                    _ => None,
                }),
            },
        ]
    );
}

#[tokio::test]
async fn calls_sharing_index_zero_are_told_apart_by_their_ids() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::ToolCalls {
        text: None,
        calls: vec![
            ScriptedCall::new("id-1", "lookup", r#"{"q": "first"}"#),
            ScriptedCall::new("id-2", "lookup", r#"{"q": "second"}"#),
        ],
        fragment: 4,
        reuse_index: true,
    });
    let chat = OpenAiChat::new(provider(&server), "gpt-test");
    let (events, error) = collect(chat.stream(request())).await;
    assert_eq!(error, None);
    let calls = events
        .iter()
        .find_map(|e| match e {
            ChatEvent::ToolCalls(calls) => Some(calls.clone()),
            _ => None,
        })
        .unwrap();
    let got: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.id.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("id-1", r#"{"q": "first"}"#),
            ("id-2", r#"{"q": "second"}"#)
        ]
    );
}

#[tokio::test]
async fn a_server_error_is_a_status_retryable_for_500_and_not_for_401() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::error(500, "The server had an error"));
    server.push_chat(ChatReply::error(
        401,
        &format!("Incorrect API key provided: {KEY}"),
    ));
    let chat = OpenAiChat::new(provider(&server), "gpt-test");

    let (events, error) = collect(chat.stream(request())).await;
    assert!(events.is_empty());
    let error = error.unwrap();
    assert!(
        matches!(&error, AgentError::Status { status: 500, provider, detail }
            if provider == "acme-llm" && detail == "The server had an error"),
        "{error:?}"
    );
    assert!(error.is_retryable());

    let (_, error) = collect(chat.stream(request())).await;
    let error = error.unwrap();
    assert!(
        matches!(&error, AgentError::Status { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(
        !error.to_string().contains(KEY),
        "an echoed key is scrubbed: {error}"
    );
}

#[tokio::test]
async fn no_first_token_in_time_is_a_timeout() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::Hang);
    let chat = OpenAiChat::new(provider(&server), "gpt-test")
        .with_first_token_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (events, error) = collect(chat.stream(request())).await;
    assert!(events.is_empty());
    let error = error.unwrap();
    assert_eq!(
        error,
        AgentError::Timeout {
            provider: "acme-llm".into(),
            after: Duration::from_millis(300)
        }
    );
    assert!(error.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Whoever stops listening to a streamed answer (a barge-in dropping it) ends its HTTP request:
/// the server sees its client go away at once, even before the first token.
#[tokio::test]
async fn dropping_the_stream_closes_its_request() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::Hang);
    let chat = OpenAiChat::new(provider(&server), "gpt-test");
    let events = chat.stream(request());
    assert!(server.wait_requests(1, WAIT).await.is_some());
    assert!(
        !server.wait_abandoned(1, Duration::from_millis(200)).await,
        "the request stays open while the stream is listened to"
    );
    drop(events);
    assert!(
        server.wait_abandoned(1, Duration::from_secs(2)).await,
        "the request was still open after its stream was dropped"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let provider =
        OpenAiProvider::new("down", format!("http://127.0.0.1:{port}/v1"), None).unwrap();
    let chat = OpenAiChat::new(provider, "gpt-test");
    let (_, error) = collect(chat.stream(request())).await;
    let error = error.unwrap();
    assert!(
        matches!(&error, AgentError::Unreachable { provider, .. } if provider == "down"),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_stream_cut_before_its_end_is_a_protocol_error_after_the_text() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::Cut(vec!["Your order".into(), " is".into()]));
    let chat = OpenAiChat::new(provider(&server), "gpt-test");
    let (events, error) = collect(chat.stream(request())).await;
    assert_eq!(
        events,
        [
            ChatEvent::TextDelta("Your order".into()),
            ChatEvent::TextDelta(" is".into())
        ]
    );
    let error = error.unwrap();
    assert!(matches!(error, AgentError::Protocol { .. }), "{error:?}");
}

#[tokio::test]
async fn complete_json_asks_for_strict_json_schema_output() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_chat(ChatReply::text(r#"{"booked": true}"#));
    let chat = OpenAiChat::new(provider(&server), "gpt-test");
    // The agent's schema leaves `day` optional and extra keys allowed; strict Structured
    // Outputs take neither, so its strict form goes on the wire (a schema breaking the rules
    // would be refused with a 400, as OpenAI refuses it).
    let schema = json!({"type": "object", "properties": {"booked": {"type": "boolean"},
                                                         "day": {"type": "string"}},
                        "required": ["booked"]});
    let answer = chat
        .complete_json(request(), "call_result", &schema)
        .await
        .unwrap();
    assert_eq!(answer, r#"{"booked": true}"#);
    let body = server.requests()[0].json.clone().unwrap();
    let strict = json!({"type": "object", "properties": {"booked": {"type": "boolean"},
                                                         "day": {"type": ["string", "null"]}},
                        "required": ["booked", "day"], "additionalProperties": false});
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema",
               "json_schema": {"name": "call_result", "schema": strict, "strict": true}})
    );
    assert_eq!(body.get("stream"), None);
}

#[tokio::test]
async fn the_key_goes_as_a_bearer_and_never_into_debug() {
    let server = ScriptedOpenAi::start().await.unwrap();
    let provider = provider(&server);
    let chat = OpenAiChat::new(provider.clone(), "gpt-test");
    let (_, error) = collect(chat.stream(request())).await;
    assert_eq!(error, None);
    let sent = &server.requests()[0];
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    for shown in [format!("{provider:?}"), format!("{chat:?}")] {
        assert!(!shown.contains(KEY), "{shown}");
    }

    let keyless = OpenAiProvider::new("local", server.base_url(), None).unwrap();
    let (_, error) = collect(OpenAiChat::new(keyless, "m").stream(request())).await;
    assert_eq!(error, None);
    assert_eq!(server.requests()[1].header("authorization"), None);
}

#[tokio::test]
async fn transcription_uploads_a_wav_with_model_and_language() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_transcript(TranscriptReply::Text(" I'd like to book a table. ".into()));
    let stt = OpenAiTranscriber::new(provider(&server), "whisper-1");
    let audio = vec![100i16; 16_000 * 3 / 2];
    let text = stt.transcribe(audio, Some("en-US".into())).await.unwrap();
    assert_eq!(text, "I'd like to book a table.");

    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/audio/transcriptions");
    let wav = sent.wav.unwrap();
    assert_eq!((wav.sample_rate, wav.channels, wav.bits), (16_000, 1, 16));
    assert_eq!(wav.duration(), Duration::from_millis(1500));
    assert_eq!(sent.field("model").as_deref(), Some("whisper-1"));
    assert_eq!(sent.field("language").as_deref(), Some("en"));
    assert_eq!(sent.field("response_format").as_deref(), Some("json"));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    // Nothing scripted: silence is an empty transcript, not an error.
    let text = stt.transcribe(vec![0; 3200], None).await.unwrap();
    assert_eq!(text, "");
    assert_eq!(server.requests()[1].field("language"), None);

    server.push_transcript(TranscriptReply::Error {
        status: 429,
        message: "Rate limit reached".into(),
    });
    let error = stt.transcribe(vec![0; 3200], None).await.unwrap_err();
    assert!(
        matches!(&error, AgentError::Status { status: 429, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn speech_streams_a_resampled_tone_as_long_as_the_text_asks() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_speech(SpeechReply::Tone {
        delay: Duration::from_millis(5),
    });
    let tts = OpenAiSpeech::new(provider(&server));
    let text = "Your table is booked for eight.";
    let mut rx = tts.speak(text, None, Some("en-US"));
    let mut chunks = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, rx.recv()).await.unwrap() {
        chunks.push(chunk.unwrap());
    }
    assert!(chunks.len() > 2, "the audio came in pieces as it streamed");
    let audio: Vec<i16> = chunks.concat();
    let expected = text.chars().count() as u64 * SPEECH_MS_PER_CHAR * 16;
    let frame = 320;
    assert!(
        audio.len().abs_diff(expected as usize) <= frame,
        "{} samples for {expected}",
        audio.len()
    );
    // 440 Hz falls on a bin over 100 ms (44 cycles); skip the edges the filter smooths.
    let middle = &audio[1600..audio.len() - 1600];
    for window in middle.chunks_exact(1600) {
        let level = tone_amplitude(window, 16_000, SPEECH_TONE_HZ);
        assert!(
            (level - SPEECH_AMPLITUDE).abs() < SPEECH_AMPLITUDE * 0.05,
            "tone level {level}"
        );
        let other = tone_amplitude(window, 16_000, 1000.0);
        assert!(other < SPEECH_AMPLITUDE * 0.02, "1 kHz at {other}");
    }

    let body: Value = server.requests()[0].json.clone().unwrap();
    assert_eq!(
        body,
        json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"})
    );

    let mut rx = tts.speak("Hi.", Some("nova"), None);
    while rx.recv().await.is_some() {}
    assert_eq!(server.requests()[1].json.as_ref().unwrap()["voice"], "nova");
}

#[tokio::test]
async fn a_speech_error_is_one_err_then_the_end() {
    let server = ScriptedOpenAi::start().await.unwrap();
    server.push_speech(SpeechReply::Error {
        status: 503,
        message: "overloaded".into(),
    });
    let tts = OpenAiSpeech::new(provider(&server)).with_model("kokoro");
    let mut rx = tts.speak("Hello.", None, None);
    let first = rx.recv().await.unwrap();
    assert!(
        matches!(&first, Err(AgentError::Status { status: 503, detail, .. }) if detail == "overloaded"),
        "{first:?}"
    );
    assert!(rx.recv().await.is_none());
    assert_eq!(
        server.requests()[0].json.as_ref().unwrap()["model"],
        "kokoro"
    );
}

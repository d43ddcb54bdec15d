//! The streaming speech clients (Deepgram, Cartesia, ElevenLabs) against the scripted
//! websocket peers of `dialtone-test-support` (real websockets on 127.0.0.1, the real wire
//! protocols).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use dialtone_agent::{
    AgentError, BoxFuture, CartesiaSpeech, DeepgramTranscriber, ElevenLabsSpeech, ResolveAddresses,
    SpeechToText, Spoken, SpokenWord, StreamingProvider, StreamingSpeechToText,
    StreamingTextToSpeech, TextToSpeech, TurnSpeech,
};
use dialtone_test_support::audio::tone_amplitude;
use dialtone_test_support::cartesia::{CartesiaReply, ScriptedCartesia};
use dialtone_test_support::deepgram::{DeepgramReply, ScriptedDeepgram};
use dialtone_test_support::elevenlabs::{ElevenLabsReply, ScriptedElevenLabs};
use dialtone_test_support::websocket::{MS_PER_CHAR, TONE_AMPLITUDE, TONE_HZ};
use serde_json::json;
use tokio::sync::mpsc;

const KEY: &str = "dg-test-7c3a9e";
const WAIT: Duration = Duration::from_secs(5);

fn provider(base_url: String) -> StreamingProvider {
    StreamingProvider::new("acme-speech", base_url, Some(KEY.into()))
}

/// An utterance that is not silence: a ramp, so any sample lost or moved shows.
fn utterance(samples: usize) -> Vec<i16> {
    (0..samples).map(|i| (i % 2000) as i16 - 1000).collect()
}

#[tokio::test]
async fn deepgram_streams_the_utterance_then_finalizes_and_joins_the_final_results() {
    let peer = ScriptedDeepgram::start().await.unwrap();
    peer.push(DeepgramReply::Transcript(vec![
        "I'd like to book".into(),
        "a table for two.".into(),
    ]));
    let stt = DeepgramTranscriber::new(provider(peer.base_url()), "nova-3");
    let audio = utterance(16_000 * 3 / 2);
    let text = stt
        .transcribe(audio.clone(), Some("en-US".into()))
        .await
        .unwrap();
    assert_eq!(text, "I'd like to book a table for two.");

    let session = peer.ended(0, WAIT).await.expect("the connection ends");
    assert_eq!(
        session.samples(),
        audio,
        "the utterance, whole and in order"
    );
    assert_eq!(session.frames, 15, "100 ms frames");
    assert_eq!(session.audio_at_finalize, Some(audio.len() * 2));
    assert_eq!(session.message_types(), ["Finalize", "CloseStream"]);
    assert!(session.client_closed, "closed with a close frame");
    let handshake = &session.handshake;
    assert_eq!(handshake.path, "/v1/listen");
    for (name, value) in [
        ("encoding", "linear16"),
        ("sample_rate", "16000"),
        ("channels", "1"),
        ("model", "nova-3"),
        ("language", "en-US"),
        ("interim_results", "true"),
        ("punctuate", "true"),
    ] {
        assert_eq!(handshake.param(name), Some(value), "{name}");
    }
    assert_eq!(
        handshake.header("authorization"),
        Some(format!("Token {KEY}").as_str())
    );
    assert!(!format!("{stt:?}").contains(KEY), "{stt:?}");
}

#[tokio::test]
async fn deepgram_silence_is_an_empty_transcript_and_a_lost_finalize_ends_at_the_close() {
    let peer = ScriptedDeepgram::start().await.unwrap();
    let stt = DeepgramTranscriber::new(provider(peer.base_url()), "nova-3");
    let text = stt.transcribe(vec![0; 3200], None).await.unwrap();
    assert_eq!(text, "");
    let session = peer.ended(0, WAIT).await.unwrap();
    assert_eq!(session.handshake.param("language"), None);
    assert_eq!(session.samples().len(), 3200);

    peer.push(DeepgramReply::OnClose(vec![
        "Hello".into(),
        "there.".into(),
    ]));
    let text = stt.transcribe(utterance(8000), None).await.unwrap();
    assert_eq!(text, "Hello there.");

    let keyless = StreamingProvider::new("local", peer.base_url(), None);
    let stt = DeepgramTranscriber::new(keyless, "nova-3");
    stt.transcribe(vec![0; 1600], None).await.unwrap();
    let session = peer.ended(2, WAIT).await.unwrap();
    assert_eq!(session.handshake.header("authorization"), None);
}

#[tokio::test]
async fn deepgram_listens_live_on_one_socket_finalizing_each_utterance_and_keeping_alive() {
    let peer = ScriptedDeepgram::start().await.unwrap();
    peer.push(DeepgramReply::Utterances(vec![
        vec!["I'd like to book".into(), "a table.".into()],
        vec!["For two.".into()],
    ]));
    let stt = DeepgramTranscriber::new(provider(peer.base_url()), "nova-3")
        .with_keep_alive(Duration::from_millis(100));
    let mut listening = stt.listen(Some("en-US".into()));
    let first = utterance(16_000);
    for frame in first.chunks(320) {
        assert!(listening.push_audio(frame));
    }
    // Deepgram's interim result comes while the utterance goes on.
    let interim = tokio::time::timeout(WAIT, listening.interim())
        .await
        .unwrap();
    assert_eq!(interim.as_deref(), Some("I'd like to book a table."));
    let text = tokio::time::timeout(WAIT, listening.finish())
        .await
        .unwrap();
    assert_eq!(text.unwrap(), "I'd like to book a table.");
    // A quiet spell: KeepAlive, not audio.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = utterance(6400);
    for frame in second.chunks(320) {
        listening.push_audio(frame);
    }
    let text = tokio::time::timeout(WAIT, listening.finish())
        .await
        .unwrap();
    assert_eq!(text.unwrap(), "For two.");
    drop(listening);

    let session = peer.ended(0, WAIT).await.expect("the connection ends");
    assert_eq!(peer.sessions().len(), 1, "one socket for both utterances");
    assert_eq!(session.samples(), [first.clone(), second].concat());
    assert_eq!(session.audio_at_finalize, Some(first.len() * 2));
    let types = session.message_types();
    assert_eq!(
        types.first().map(String::as_str),
        Some("Finalize"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("CloseStream"),
        "{types:?}"
    );
    let keep_alives = types.iter().filter(|t| *t == "KeepAlive").count();
    assert!(keep_alives >= 2, "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "Finalize").count(), 2);
    assert_eq!(
        session.live_interims, 1,
        "the second utterance is too short"
    );
    assert!(session.client_closed);
    assert_eq!(session.handshake.param("interim_results"), Some("true"));
    assert_eq!(session.handshake.param("language"), Some("en-US"));
}

#[tokio::test]
async fn a_failed_deepgram_session_answers_each_utterance_with_its_failure() {
    let peer = ScriptedDeepgram::start().await.unwrap();
    peer.push(DeepgramReply::Refuse {
        status: 401,
        message: "Invalid credentials.".into(),
    });
    let stt = DeepgramTranscriber::new(provider(peer.base_url()), "nova-3");
    let listening = stt.listen(None);
    listening.push_audio(&utterance(1600));
    for _ in 0..2 {
        let error = tokio::time::timeout(WAIT, listening.finish())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(error, AgentError::Status { status: 401, .. }),
            "{error:?}"
        );
    }

    peer.push(DeepgramReply::Hang);
    let stt = stt.with_timeout(Duration::from_millis(300));
    let listening = stt.listen(None);
    listening.push_audio(&utterance(1600));
    let error = listening.finish().await.unwrap_err();
    assert!(matches!(error, AgentError::Timeout { .. }), "{error:?}");
}

/// Speech recognition's latency, utterance end → final transcript, of an utterance uploaded
/// once it ended against one streamed as it was spoken (1.5 s of audio paced in real time,
/// loopback). Prints the figures (`cargo test -p dialtone-agent --test streaming --
/// deepgram_latency --nocapture`); timings are not asserted.
#[tokio::test]
async fn deepgram_latency_of_an_upload_and_of_a_live_stream() {
    let peer = ScriptedDeepgram::start().await.unwrap();
    let stt = DeepgramTranscriber::new(provider(peer.base_url()), "nova-3");
    let audio = utterance(24_000);
    let mut upload = Vec::new();
    let mut live = Vec::new();
    for _ in 0..3 {
        peer.push(DeepgramReply::Transcript(vec!["Hello there.".into()]));
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        for _ in audio.chunks(320) {
            pace.tick().await;
        }
        let ended = std::time::Instant::now();
        let text = stt.transcribe(audio.clone(), None).await.unwrap();
        upload.push(ended.elapsed());
        assert_eq!(text, "Hello there.");

        peer.push(DeepgramReply::Transcript(vec!["Hello there.".into()]));
        let listening = stt.listen(None);
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        for frame in audio.chunks(320) {
            pace.tick().await;
            listening.push_audio(frame);
        }
        let ended = std::time::Instant::now();
        let text = listening.finish().await.unwrap();
        live.push(ended.elapsed());
        assert_eq!(text, "Hello there.");
    }
    println!(
        "deepgram stt latency (utterance end -> final transcript), 1.5 s utterance, loopback:"
    );
    println!("  upload after the end: {upload:?}");
    println!("  live stream:          {live:?}");
}

/// A resolver with fixed answers: the address for one name, a refusal for the rest.
#[derive(Debug)]
struct Pinned(std::net::SocketAddr);

impl ResolveAddresses for Pinned {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<Vec<std::net::SocketAddr>, String>> {
        let answer = match host {
            "speech.invalid" => Ok(vec![std::net::SocketAddr::new(self.0.ip(), port)]),
            other => Err(format!("{other} is refused")),
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn websockets_connect_to_the_resolvers_address_under_the_services_name() {
    let peer = ScriptedDeepgram::start().await.unwrap();
    let port: u16 = peer
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1")
        .parse()
        .unwrap();
    let pinned = std::sync::Arc::new(Pinned(format!("127.0.0.1:{port}").parse().unwrap()));
    // A name no DNS knows: only the resolver's answer can reach the peer.
    let named = StreamingProvider::new("dg", format!("http://speech.invalid:{port}/v1"), None)
        .with_resolver(pinned.clone());
    peer.push(DeepgramReply::Transcript(vec!["Hello.".into()]));
    let text = DeepgramTranscriber::new(named, "nova-3")
        .transcribe(utterance(1600), None)
        .await
        .unwrap();
    assert_eq!(text, "Hello.");
    let session = peer.ended(0, WAIT).await.unwrap();
    assert_eq!(
        session.handshake.header("host"),
        Some(format!("speech.invalid:{port}").as_str())
    );

    let refused = StreamingProvider::new("dg", peer.base_url(), None).with_resolver(pinned);
    let error = DeepgramTranscriber::new(refused, "nova-3")
        .transcribe(utterance(1600), None)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AgentError::Refused {
            provider: "dg".into(),
            detail: "127.0.0.1 is refused".into()
        }
    );
    assert_eq!(peer.sessions().len(), 1, "never connected");
}

#[tokio::test]
async fn deepgram_failures_map_to_agent_errors() {
    let peer = ScriptedDeepgram::start().await.unwrap();
    let stt = DeepgramTranscriber::new(provider(peer.base_url()), "nova-3")
        .with_timeout(Duration::from_millis(500));

    peer.push(DeepgramReply::Refuse {
        status: 401,
        message: "Invalid credentials.".into(),
    });
    let error = stt.transcribe(utterance(1600), None).await.unwrap_err();
    assert_eq!(
        error,
        AgentError::Status {
            provider: "acme-speech".into(),
            status: 401,
            detail: "Invalid credentials.".into(),
        }
    );
    assert!(!error.is_retryable());

    peer.push(DeepgramReply::Close {
        code: 1011,
        reason: "NET-0001: internal".into(),
    });
    let error = stt.transcribe(utterance(1600), None).await.unwrap_err();
    assert!(
        matches!(&error, AgentError::Unreachable { detail, .. } if detail.contains("1011")),
        "{error:?}"
    );
    assert!(error.is_retryable());

    peer.push(DeepgramReply::Close {
        code: 1008,
        reason: "DATA-0000: the payload cannot be decoded as audio".into(),
    });
    let error = stt.transcribe(utterance(1600), None).await.unwrap_err();
    assert!(
        matches!(&error, AgentError::Protocol { detail, .. } if detail.contains("DATA-0000")),
        "{error:?}"
    );

    peer.push(DeepgramReply::Hang);
    let error = stt.transcribe(utterance(1600), None).await.unwrap_err();
    assert_eq!(
        error,
        AgentError::Timeout {
            provider: "acme-speech".into(),
            after: Duration::from_millis(500),
        }
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let stt = DeepgramTranscriber::new(provider(format!("http://127.0.0.1:{port}/v1")), "m");
    let error = stt.transcribe(utterance(1600), None).await.unwrap_err();
    assert!(matches!(error, AgentError::Unreachable { .. }), "{error:?}");
}

/// Every chunk of a synthesis, the error (if any) last.
async fn collect(
    mut rx: mpsc::Receiver<Result<Vec<i16>, AgentError>>,
) -> (Vec<Vec<i16>>, Option<AgentError>) {
    let mut chunks = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("speech stalled")
    {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(error) => {
                assert!(
                    rx.recv().await.is_none(),
                    "the channel closes after an error"
                );
                return (chunks, Some(error));
            }
        }
    }
    (chunks, None)
}

/// `audio` is the tone, as long as `text` asks (within `slack` samples).
fn assert_tone_for(audio: &[i16], text: &str, slack: usize) {
    let expected = text.chars().count() as u64 * MS_PER_CHAR * 16;
    assert!(
        audio.len().abs_diff(expected as usize) <= slack,
        "{} samples for {expected}",
        audio.len()
    );
    // 440 Hz falls on a bin over 100 ms (44 cycles); skip the edges a resampler smooths.
    let middle = &audio[1600..audio.len() - 1600];
    for window in middle.chunks_exact(1600) {
        let level = tone_amplitude(window, 16_000, TONE_HZ);
        assert!(
            (level - TONE_AMPLITUDE).abs() < TONE_AMPLITUDE * 0.05,
            "tone level {level}"
        );
        let other = tone_amplitude(window, 16_000, 1000.0);
        assert!(other < TONE_AMPLITUDE * 0.02, "1 kHz at {other}");
    }
}

#[tokio::test]
async fn cartesia_streams_a_resampled_tone_as_long_as_the_text_asks() {
    let peer = ScriptedCartesia::start().await.unwrap();
    peer.push(CartesiaReply::Tone {
        delay: Duration::from_millis(5),
    });
    let tts = CartesiaSpeech::new(provider(peer.base_url()));
    let text = "Your table is booked for eight.";
    let (chunks, error) = collect(tts.speak(text, Some("voice-fr-1"), Some("fr-FR"))).await;
    assert_eq!(error, None);
    assert!(chunks.len() > 2, "the audio came in pieces as it streamed");
    assert_tone_for(&chunks.concat(), text, 320);

    let session = peer.ended(0, WAIT).await.unwrap();
    assert!(session.client_closed);
    assert!(!session.cancelled);
    assert_eq!(session.handshake.path, "/tts/websocket");
    assert_eq!(session.handshake.param("api_key"), Some(KEY));
    assert_eq!(
        session.handshake.param("cartesia_version"),
        Some("2024-06-10")
    );
    let mut request = session.messages[0].clone();
    let context_id = request["context_id"].take();
    assert!(context_id.as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(
        request,
        json!({
            "model_id": "sonic-2",
            "transcript": text,
            "voice": {"mode": "id", "id": "voice-fr-1"},
            "language": "fr",
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
            "context_id": null,
            "continue": false,
            "max_buffer_delay_ms": 0,
            "add_timestamps": true,
        })
    );
    assert!(!format!("{tts:?}").contains(KEY), "{tts:?}");

    let tts = tts.with_model("sonic-turbo");
    let (_, error) = collect(tts.speak("Hi.", None, None)).await;
    assert_eq!(error, None);
    let session = peer.ended(1, WAIT).await.unwrap();
    let request = &session.messages[0];
    assert_eq!(request["model_id"], "sonic-turbo");
    assert_eq!(
        request["voice"]["id"],
        dialtone_agent::cartesia::DEFAULT_CARTESIA_VOICE
    );
    assert_eq!(request.get("language"), None);
    assert_ne!(request["context_id"], context_id, "a context of its own");
}

#[tokio::test]
async fn cartesia_errors_are_one_err_then_the_end() {
    let peer = ScriptedCartesia::start().await.unwrap();
    let tts = CartesiaSpeech::new(provider(peer.base_url()));

    peer.push(CartesiaReply::Error {
        status: 400,
        message: "voice not found".into(),
    });
    let (chunks, error) = collect(tts.speak("Hello.", Some("nope"), None)).await;
    assert!(chunks.is_empty());
    assert_eq!(
        error,
        Some(AgentError::Status {
            provider: "acme-speech".into(),
            status: 400,
            detail: "voice not found".into(),
        })
    );

    peer.push(CartesiaReply::Refuse {
        status: 401,
        message: "Invalid API key".into(),
    });
    let (_, error) = collect(tts.speak("Hello.", None, None)).await;
    let error = error.unwrap();
    assert!(
        matches!(&error, AgentError::Status { status: 401, detail, .. } if detail == "Invalid API key"),
        "{error:?}"
    );
    assert!(!error.to_string().contains(KEY), "{error}");
}

#[tokio::test]
async fn cartesia_a_dropped_receiver_cancels_the_context_and_closes() {
    let peer = ScriptedCartesia::start().await.unwrap();
    peer.push(CartesiaReply::Tone {
        delay: Duration::from_millis(20),
    });
    let tts = CartesiaSpeech::new(provider(peer.base_url()));
    let text = "A long answer that the caller interrupts before it is over.".repeat(4);
    let mut rx = tts.speak(&text, None, None);
    let first = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    drop(rx);
    let session = peer.ended(0, WAIT).await.expect("the connection closes");
    assert!(session.cancelled, "{:?}", session.messages);
    assert_eq!(
        session.messages[1]["context_id"],
        session.messages[0]["context_id"]
    );
    assert!(session.client_closed);
    let all = text.len() * 60 * 48 / 4801;
    assert!(
        session.chunks_sent < all / 2,
        "{} of {all} chunks",
        session.chunks_sent
    );
}

#[tokio::test]
async fn elevenlabs_streams_the_tone_at_16_khz_as_long_as_the_text_asks() {
    let peer = ScriptedElevenLabs::start().await.unwrap();
    peer.push(ElevenLabsReply::Tone {
        delay: Duration::from_millis(5),
    });
    let tts = ElevenLabsSpeech::new(provider(peer.base_url()));
    let text = "Your table is booked for eight.";
    let (chunks, error) = collect(tts.speak(text, Some("voice x"), Some("en-US"))).await;
    assert_eq!(error, None);
    assert!(chunks.len() > 2, "the audio came in pieces as it streamed");
    assert_tone_for(&chunks.concat(), text, 0);

    let session = peer.ended(0, WAIT).await.unwrap();
    assert_eq!(
        session.handshake.path,
        "/v1/text-to-speech/voice%20x/stream-input"
    );
    assert_eq!(
        session.handshake.param("model_id"),
        Some("eleven_flash_v2_5")
    );
    assert_eq!(session.handshake.param("output_format"), Some("pcm_16000"));
    assert_eq!(session.handshake.header("xi-api-key"), Some(KEY));
    assert_eq!(
        session.messages,
        [
            json!({"text": " "}),
            json!({"text": format!("{text} "), "flush": true}),
            json!({"text": ""}),
        ]
    );
    assert!(!format!("{tts:?}").contains(KEY), "{tts:?}");

    let tts = tts.with_model("eleven_turbo_v2_5");
    let (_, error) = collect(tts.speak("Hi.", None, None)).await;
    assert_eq!(error, None);
    let session = peer.ended(1, WAIT).await.unwrap();
    assert_eq!(
        session.handshake.path,
        format!(
            "/v1/text-to-speech/{}/stream-input",
            dialtone_agent::elevenlabs::DEFAULT_ELEVENLABS_VOICE
        )
    );
    assert_eq!(
        session.handshake.param("model_id"),
        Some("eleven_turbo_v2_5")
    );
}

#[tokio::test]
async fn elevenlabs_errors_are_one_err_then_the_end() {
    let peer = ScriptedElevenLabs::start().await.unwrap();
    let tts = ElevenLabsSpeech::new(provider(peer.base_url()));

    peer.push(ElevenLabsReply::Error {
        message: "A voice with the voice_id nope was not found.".into(),
    });
    let (chunks, error) = collect(tts.speak("Hello.", Some("nope"), None)).await;
    assert!(chunks.is_empty());
    let error = error.unwrap();
    assert!(
        matches!(&error, AgentError::Protocol { detail, .. } if detail.contains("voice_id nope was not found")),
        "{error:?}"
    );

    peer.push(ElevenLabsReply::Refuse {
        status: 401,
        message: "Invalid API key".into(),
    });
    let (_, error) = collect(tts.speak("Hello.", None, None)).await;
    assert_eq!(
        error,
        Some(AgentError::Status {
            provider: "acme-speech".into(),
            status: 401,
            detail: "Invalid API key".into(),
        })
    );
}

#[tokio::test]
async fn elevenlabs_a_dropped_receiver_closes_the_connection() {
    let peer = ScriptedElevenLabs::start().await.unwrap();
    peer.push(ElevenLabsReply::Tone {
        delay: Duration::from_millis(20),
    });
    let tts = ElevenLabsSpeech::new(provider(peer.base_url()));
    let text = "A long answer that the caller interrupts before it is over.".repeat(4);
    let mut rx = tts.speak(&text, None, None);
    let first = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    drop(rx);
    let session = peer.ended(0, WAIT).await.expect("the connection closes");
    assert!(session.client_closed);
    let all = text.len() * 60 * 32 / 4801;
    assert!(
        session.audio_sent < all / 2,
        "{} of {all} audio messages",
        session.audio_sent
    );
}

/// What a line's speech gave until it ended: its audio, its words, its error.
async fn collect_line(speech: &mut TurnSpeech) -> (Vec<i16>, Vec<SpokenWord>, Option<AgentError>) {
    let (mut audio, mut words) = (Vec::new(), Vec::new());
    while let Some(item) = tokio::time::timeout(WAIT, speech.next())
        .await
        .expect("speech stalled")
    {
        match item {
            Ok(Spoken::Audio(chunk)) => audio.extend(chunk),
            Ok(Spoken::Words(more)) => words.extend(more),
            Err(error) => return (audio, words, Some(error)),
        }
    }
    (audio, words, None)
}

/// The first audio of a line's speech (words before it are skipped).
async fn first_audio(speech: &mut TurnSpeech) -> Vec<i16> {
    loop {
        match tokio::time::timeout(WAIT, speech.next()).await.unwrap() {
            Some(Ok(Spoken::Audio(audio))) => return audio,
            Some(Ok(Spoken::Words(_))) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// The words of `pieces` said one after another, [`MS_PER_CHAR`] ms a character (the
/// scripted peers' tone), the pieces' audio back to back.
fn tone_words(pieces: &[&str]) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        let mut at = 0;
        for word in piece.split(' ') {
            let chars = word.chars().count() as u64;
            out.push((
                word.to_owned(),
                offset + at * MS_PER_CHAR,
                offset + (at + chars) * MS_PER_CHAR,
            ));
            at += chars + 1;
        }
        offset += piece.chars().count() as u64 * MS_PER_CHAR;
    }
    out
}

fn in_ms(words: &[SpokenWord]) -> Vec<(String, u64, u64)> {
    words
        .iter()
        .map(|w| {
            (
                w.word.clone(),
                w.start.as_millis() as u64,
                w.end.as_millis() as u64,
            )
        })
        .collect()
}

#[tokio::test]
async fn cartesia_a_line_is_one_context_on_one_connection_continued_piece_by_piece() {
    let peer = ScriptedCartesia::start().await.unwrap();
    let tts = CartesiaSpeech::new(provider(peer.base_url()));
    let pieces = ["Your table is booked.", "It is for eight."];
    let mut speech = tts.open(Some("voice-1"), Some("en-US"));
    speech.push(pieces[0]);
    let first = first_audio(&mut speech).await;
    assert!(!first.is_empty());
    // The second piece comes once the first is being heard, as the model writes it, and the
    // end of the line after it.
    speech.push(pieces[1]);
    let second = first_audio(&mut speech).await;
    speech.finish();
    let (rest, words, error) = collect_line(&mut speech).await;
    assert_eq!(error, None);
    let samples = first.len() + second.len() + rest.len();
    let expected = (pieces[0].len() + pieces[1].len()) as u64 * MS_PER_CHAR * 16;
    assert!(
        samples.abs_diff(expected as usize) <= 320,
        "{samples} samples for {expected}"
    );
    // The words' times go on across the pieces: from the start of the line's audio (the
    // first piece's came before the second's audio).
    assert_eq!(in_ms(&words)[4..], tone_words(&pieces)[4..]);

    let session = peer.ended(0, WAIT).await.unwrap();
    assert_eq!(peer.sessions().len(), 1, "one connection for the line");
    assert!(!session.cancelled);
    assert!(session.client_closed);
    let requests = session.requests();
    let context = &requests[0]["context_id"];
    assert!(
        requests.iter().all(|r| &r["context_id"] == context),
        "one context: {requests:?}"
    );
    assert!(requests.iter().all(|r| r["add_timestamps"] == true));
    assert!(
        requests.iter().all(|r| r["max_buffer_delay_ms"] == 0),
        "each clause spoken as it comes, none held back for more text: {requests:?}"
    );
    let said: Vec<(&str, bool)> = requests
        .iter()
        .map(|r| {
            (
                r["transcript"].as_str().unwrap(),
                r["continue"].as_bool().unwrap(),
            )
        })
        .collect();
    // The end came after the last piece was sent: an empty transcript closes the context.
    assert_eq!(
        said,
        [
            ("Your table is booked. ", true),
            ("It is for eight. ", true),
            ("", false)
        ]
    );
    assert_eq!(session.timestamps_sent, 2);
}

#[tokio::test]
async fn cartesia_a_line_dropped_mid_way_cancels_its_context_and_closes() {
    let peer = ScriptedCartesia::start().await.unwrap();
    peer.push(CartesiaReply::Tone {
        delay: Duration::from_millis(20),
    });
    let tts = CartesiaSpeech::new(provider(peer.base_url()));
    let mut speech = tts.open(None, None);
    speech.push("A long answer that the caller interrupts before it is over.");
    first_audio(&mut speech).await;
    speech.push("And more of it.");
    drop(speech);
    let session = peer.ended(0, WAIT).await.expect("the connection closes");
    assert!(session.cancelled, "{:?}", session.messages);
    let cancel = session.messages.last().unwrap();
    assert_eq!(cancel["cancel"], true);
    assert_eq!(cancel["context_id"], session.messages[0]["context_id"]);
    assert!(session.client_closed);
    assert_eq!(peer.sessions().len(), 1);
}

#[tokio::test]
async fn elevenlabs_a_line_is_one_connection_fed_piece_by_piece_with_aligned_words() {
    let peer = ScriptedElevenLabs::start().await.unwrap();
    let tts = ElevenLabsSpeech::new(provider(peer.base_url()));
    let pieces = ["Your table is booked.", "It is for eight."];
    let mut speech = tts.open(Some("voice-1"), None);
    speech.push(pieces[0]);
    let first = first_audio(&mut speech).await;
    assert!(!first.is_empty());
    speech.push(pieces[1]);
    speech.finish();
    let (rest, words, error) = collect_line(&mut speech).await;
    assert_eq!(error, None);
    let samples = first.len() + rest.len();
    let expected = (pieces[0].len() + pieces[1].len()) as u64 * MS_PER_CHAR * 16;
    assert_eq!(samples as u64, expected);
    // The characters' times, from the start of each message's audio, become words timed
    // from the start of the line's audio.
    assert_eq!(in_ms(&words), tone_words(&pieces));

    let session = peer.ended(0, WAIT).await.unwrap();
    assert_eq!(peer.sessions().len(), 1, "one connection for the line");
    assert_eq!(session.handshake.param("sync_alignment"), Some("true"));
    assert_eq!(
        session.messages,
        [
            json!({"text": " "}),
            json!({"text": "Your table is booked. ", "flush": true}),
            json!({"text": "It is for eight. ", "flush": true}),
            json!({"text": ""}),
        ]
    );
}

#[tokio::test]
async fn elevenlabs_a_line_dropped_mid_way_closes_the_connection() {
    let peer = ScriptedElevenLabs::start().await.unwrap();
    peer.push(ElevenLabsReply::Tone {
        delay: Duration::from_millis(20),
    });
    let tts = ElevenLabsSpeech::new(provider(peer.base_url()));
    let text = "A long answer that the caller interrupts before it is over.".repeat(4);
    let mut speech = tts.open(None, None);
    speech.push(&text);
    first_audio(&mut speech).await;
    drop(speech);
    let session = peer.ended(0, WAIT).await.expect("the connection closes");
    assert!(session.client_closed);
    assert!(
        !session.messages.contains(&json!({"text": ""})),
        "the input was not ended: {:?}",
        session.messages
    );
    let all = text.len() * 60 * 32 / 4801;
    assert!(
        session.audio_sent < all / 2,
        "{} of {all} audio messages",
        session.audio_sent
    );
}

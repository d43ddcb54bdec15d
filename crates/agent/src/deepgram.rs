//! [`DeepgramTranscriber`]: Deepgram's streaming speech recognition (`kind: deepgram`) over
//! its websocket, `{base_url}/listen` (`https` becomes `wss`), connected with
//! `encoding=linear16&sample_rate=16000&channels=1`, the `model`, the `language` (when known),
//! `interim_results=true` and `punctuate=true`, and `Authorization: Token <key>`.
//!
//! Live ([`StreamingSpeechToText`]): one websocket a call, opened when the agent opens. The
//! caller's audio is sent as it arrives, from the start of each utterance the engine's voice
//! activity detection hears; when it ends the utterance, `{"type": "Finalize"}` flushes
//! Deepgram and the utterance's transcript is the `Results` with `is_final: true` since the
//! previous one, up to the one with `from_finalize: true`. Interim results (`is_final: false`)
//! are passed on as they come, after the utterance's final results so far. While no audio goes (the agent speaks, the line is quiet)
//! `{"type": "KeepAlive"}` is sent every [`DEFAULT_KEEP_ALIVE`], so Deepgram does not close a
//! quiet call; at the end, `{"type": "CloseStream"}` and a close frame. A failed session answers
//! every later utterance with its error.
//!
//! Per utterance ([`SpeechToText`], for an utterance heard before the conversation, or asked
//! again after a failure): a websocket of its own, the audio in frames of 100 ms, `Finalize`,
//! `CloseStream`; the final results up to `from_finalize` (or, failing that, until Deepgram
//! closes the stream after flushing).
//!
//! A refused upgrade (401 for a bad key…) is [`AgentError::Status`]; no answer within the
//! timeout, [`AgentError::Timeout`]. Deepgram's own `endpointing` and `utterance_end_ms` are
//! not asked for: the engine's voice activity detection ends utterances (it also drives
//! barge-in), and `Finalize` makes Deepgram's answer as quick.

use std::time::Duration;

use std::collections::VecDeque;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use crate::error::AgentError;
use crate::provider::ENGINE_RATE;
use crate::provider::{BoxFuture, Heard, Listening, SpeechToText, StreamingSpeechToText};
use crate::ws::{Incoming, Socket, StreamingProvider, language_tag};

/// Deepgram's API, for a provider that names no base URL.
pub const DEEPGRAM_BASE_URL: &str = "https://api.deepgram.com/v1";

/// Default wait for a transcript: the connection, the audio sent and the final result.
pub const DEFAULT_DEEPGRAM_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a live session with no audio to send says it is still there (Deepgram closes a
/// stream after about 10 s without audio or a `KeepAlive`).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(4);

/// Samples per binary frame sent (100 ms at 16 kHz).
const FRAME_SAMPLES: usize = ENGINE_RATE as usize / 10;

/// Deepgram speech recognition, made for one agent's `stt` setting.
#[derive(Debug, Clone)]
pub struct DeepgramTranscriber {
    provider: StreamingProvider,
    model: String,
    timeout: Duration,
    keep_alive: Duration,
}

impl DeepgramTranscriber {
    /// `model` (e.g. `nova-3`) at `provider` (whose base URL is like [`DEEPGRAM_BASE_URL`]).
    pub fn new(provider: StreamingProvider, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            timeout: DEFAULT_DEEPGRAM_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
        }
    }

    /// How long a transcription may take ([`DEFAULT_DEEPGRAM_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often a quiet live session sends `KeepAlive` ([`DEFAULT_KEEP_ALIVE`]).
    #[must_use]
    pub fn with_keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every;
        self
    }

    /// Connects to `/listen` in `language`, within the timeout.
    async fn connect(&self, language: Option<&str>) -> Result<Socket, AgentError> {
        let provider = &self.provider;
        let mut url = provider.url(&["listen"])?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("encoding", "linear16")
                .append_pair("sample_rate", &ENGINE_RATE.to_string())
                .append_pair("channels", "1")
                .append_pair("model", &self.model);
            if let Some(language) = language.and_then(language_tag) {
                query.append_pair("language", &language);
            }
            query
                .append_pair("interim_results", "true")
                .append_pair("punctuate", "true");
        }
        let headers: Vec<(&'static str, String)> = provider
            .api_key()
            .map(|key| ("authorization", format!("Token {key}")))
            .into_iter()
            .collect();
        provider.connect(&url, &headers, self.timeout).await
    }

    async fn run(&self, audio: Vec<i16>, language: Option<String>) -> Result<String, AgentError> {
        let provider = &self.provider;
        let limit = self.timeout;
        let deadline = Instant::now() + limit;
        let mut socket = self.connect(language.as_deref()).await?;
        let send_all = async {
            for frame in audio.chunks(FRAME_SAMPLES) {
                let bytes: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
                socket.feed(Message::binary(bytes)).await?;
            }
            socket
                .feed(Message::text(json!({"type": "Finalize"}).to_string()))
                .await?;
            socket
                .send(Message::text(json!({"type": "CloseStream"}).to_string()))
                .await
        };
        tokio::time::timeout_at(deadline, send_all)
            .await
            .map_err(|_| provider.timeout(limit))?
            .map_err(|e| provider.ws_error(e))?;
        let mut finals: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match provider.next(&mut socket, left).await {
                Err(AgentError::Timeout { .. }) => return Err(provider.timeout(limit)),
                other => other?,
            };
            let text = match message {
                Incoming::Closed => break,
                Incoming::Binary(_) => continue,
                Incoming::Text(text) => text,
            };
            match self.read(&text)? {
                Said::Final {
                    transcript,
                    from_finalize,
                } => {
                    if !transcript.is_empty() {
                        finals.push(transcript);
                    }
                    if from_finalize {
                        break;
                    }
                }
                Said::Metadata => break,
                Said::Interim(_) | Said::Other => {}
            }
        }
        provider.goodbye(&mut socket, None).await;
        Ok(finals.join(" "))
    }

    /// What a text message from Deepgram says.
    fn read(&self, text: &str) -> Result<Said, AgentError> {
        let provider = &self.provider;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| provider.protocol(format!("a message that is not JSON: {e}")))?;
        Ok(match value.get("type").and_then(Value::as_str) {
            Some("Results") => {
                let transcript = value
                    .pointer("/channel/alternatives/0/transcript")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned();
                let flag = |name: &str| value.get(name).and_then(Value::as_bool) == Some(true);
                if flag("is_final") || flag("from_finalize") {
                    Said::Final {
                        transcript: if flag("is_final") {
                            transcript
                        } else {
                            String::new()
                        },
                        from_finalize: flag("from_finalize"),
                    }
                } else {
                    Said::Interim(transcript)
                }
            }
            Some("Metadata") => Said::Metadata,
            Some("Error") => {
                let detail = ["description", "message", "err_msg"]
                    .iter()
                    .find_map(|key| value.get(key).and_then(Value::as_str))
                    .unwrap_or("an error without a description");
                return Err(provider.protocol(format!("it reported an error: {detail}")));
            }
            _ => Said::Other,
        })
    }

    /// A live session: connects, then sends what it is told and answers each finished
    /// utterance; after a failure it answers every utterance with the failure, until dropped.
    async fn serve(
        self,
        language: Option<String>,
        mut told: mpsc::UnboundedReceiver<Heard>,
        interim: mpsc::UnboundedSender<String>,
    ) {
        let failure = match self.connect(language.as_deref()).await {
            Ok(mut socket) => {
                let failure = self.live(&mut socket, &mut told, &interim).await;
                let close = json!({"type": "CloseStream"});
                self.provider.goodbye(&mut socket, Some(&close)).await;
                match failure {
                    Some(failure) => failure,
                    None => return,
                }
            }
            Err(error) => error,
        };
        tracing::debug!(%failure, "the Deepgram session failed");
        while let Some(heard) = told.recv().await {
            if let Heard::Finish(answer) = heard {
                let _ = answer.send(Err(failure.clone()));
            }
        }
    }

    /// The connected session until it is dropped (`None`) or fails (the failure, also given
    /// to the utterances waiting).
    async fn live(
        &self,
        socket: &mut Socket,
        told: &mut mpsc::UnboundedReceiver<Heard>,
        interim: &mpsc::UnboundedSender<String>,
    ) -> Option<AgentError> {
        let provider = &self.provider;
        // Utterances finalised and not yet answered, with when their answer is due.
        let mut waiting: VecDeque<(oneshot::Sender<Result<String, AgentError>>, Instant)> =
            VecDeque::new();
        let mut finals: Vec<String> = Vec::new();
        let mut last_sent = Instant::now();
        let failure = loop {
            let due = waiting.front().map(|(_, due)| *due);
            tokio::select! {
                heard = told.recv() => {
                    let message = match heard {
                        None => return None,
                        Some(Heard::Audio(audio)) => {
                            let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
                            Message::binary(bytes)
                        }
                        Some(Heard::Finish(answer)) => {
                            waiting.push_back((answer, Instant::now() + self.timeout));
                            Message::text(json!({"type": "Finalize"}).to_string())
                        }
                    };
                    if let Err(e) = socket.send(message).await {
                        break provider.ws_error(e);
                    }
                    last_sent = Instant::now();
                }
                incoming = provider.receive(socket) => {
                    let text = match incoming {
                        Ok(Incoming::Text(text)) => text,
                        Ok(Incoming::Binary(_)) => continue,
                        Ok(Incoming::Closed) => {
                            break provider.protocol("it closed the stream during the call");
                        }
                        Err(error) => break error,
                    };
                    match self.read(&text) {
                        Ok(Said::Final { transcript, from_finalize }) => {
                            if !transcript.is_empty() {
                                finals.push(transcript);
                            }
                            if from_finalize && let Some((answer, _)) = waiting.pop_front() {
                                let _ = answer.send(Ok(finals.join(" ")));
                                finals.clear();
                            }
                        }
                        Ok(Said::Interim(text)) => {
                            // Interim results cover what follows the last final one.
                            if !text.is_empty() {
                                let so_far: Vec<&str> =
                                    finals.iter().map(String::as_str).chain([text.as_str()]).collect();
                                let _ = interim.send(so_far.join(" "));
                            }
                        }
                        Ok(Said::Metadata | Said::Other) => {}
                        Err(error) => break error,
                    }
                }
                () = tokio::time::sleep_until(last_sent + self.keep_alive) => {
                    let keep_alive = Message::text(json!({"type": "KeepAlive"}).to_string());
                    if let Err(e) = socket.send(keep_alive).await {
                        break provider.ws_error(e);
                    }
                    last_sent = Instant::now();
                }
                () = until(due) => break provider.timeout(self.timeout),
            }
        };
        for (answer, _) in waiting {
            let _ = answer.send(Err(failure.clone()));
        }
        Some(failure)
    }
}

/// What a message from Deepgram says.
enum Said {
    /// A final result (its transcript empty for a `from_finalize` result that is not final).
    Final {
        transcript: String,
        from_finalize: bool,
    },
    /// An interim result.
    Interim(String),
    /// The stream's summary, sent as it closes.
    Metadata,
    /// Something else (`SpeechStarted`, `UtteranceEnd`…).
    Other,
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl StreamingSpeechToText for DeepgramTranscriber {
    fn listen(&self, language: Option<String>) -> Listening {
        let (listening, told, interim) = Listening::new();
        tokio::spawn(
            self.clone()
                .serve(language, told, interim)
                .in_current_span(),
        );
        listening
    }
}

impl SpeechToText for DeepgramTranscriber {
    fn transcribe(
        &self,
        audio: Vec<i16>,
        language: Option<String>,
    ) -> BoxFuture<'static, Result<String, AgentError>> {
        let this = self.clone();
        Box::pin(async move { this.run(audio, language).await })
    }
}

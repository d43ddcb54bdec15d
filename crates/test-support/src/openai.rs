//! A scripted peer speaking the real OpenAI wire protocol over real HTTP on 127.0.0.1 (an
//! ephemeral port), used in tests where the real service would need the internet.
//!
//! [`ScriptedOpenAi::start`] serves, under `/v1`:
//!
//! * `POST /v1/chat/completions` — with `"stream": true`, Server-Sent Events built from the next
//!   scripted [`ChatReply`] (text in chunks with a delay between them; tool calls whose
//!   arguments are split across chunks, optionally all at index 0 told apart only by their ids,
//!   as some servers do; an HTTP error with an OpenAI-style JSON error body; a hang that never
//!   sends the first token; a stream cut short), then a usage chunk when
//!   `stream_options.include_usage` asks for it, then `data: [DONE]`. With `stream` false or
//!   absent, the same reply as one JSON completion. With nothing scripted it answers
//!   [`DEFAULT_CHAT_TEXT`]. A `response_format` asking for a strict JSON schema that breaks
//!   the rules of strict Structured Outputs ([`strict_schema_violation`]) is refused with
//!   OpenAI's 400 `invalid_request_error`, as the real service refuses it.
//! * `POST /v1/audio/transcriptions` — reads the multipart upload (the WAV's sample rate and
//!   duration are recorded with the `model` and `language` fields) and answers
//!   `{"text": …}` from the scripted transcripts (by default an empty string), or, for a
//!   [`TranscriptReply::Recognise`], with what PocketSphinx recognises in the uploaded audio:
//!   real local speech recognition behind the OpenAI wire, no network.
//! * `POST /v1/audio/speech` — answers [`SPEECH_RATE`] Hz 16-bit little-endian mono PCM,
//!   streamed in odd-sized chunks: a pure [`SPEECH_TONE_HZ`] tone, [`SPEECH_MS_PER_CHAR`] ms
//!   per character of `input`, so a test can tell how much text was heard from how much audio
//!   played; its first chunk may be scripted to come late. Scripted errors too.
//!
//! Every request is recorded ([`RecordedRequest`]: path, headers, JSON body or multipart
//! fields, when it arrived) before it is answered; [`ScriptedOpenAi::wait_requests`] waits for
//! the Nth. A streamed chat answer whose client goes away before its end is counted
//! ([`ScriptedOpenAi::wait_abandoned`]).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::WorkDir;

/// What the chat endpoint says when nothing is scripted.
pub const DEFAULT_CHAT_TEXT: &str = "Hello from the scripted model.";

/// The speech endpoint's sample rate (OpenAI's `pcm` format).
pub const SPEECH_RATE: u32 = 24_000;

/// Milliseconds of speech per character of `input`.
pub const SPEECH_MS_PER_CHAR: u64 = 60;

/// The frequency of the speech endpoint's tone.
pub const SPEECH_TONE_HZ: f64 = 440.0;

/// The peak amplitude of the speech endpoint's tone.
pub const SPEECH_AMPLITUDE: f64 = 8000.0;

/// Bytes per chunk of speech streamed (odd, so samples straddle chunks).
pub const SPEECH_CHUNK_BYTES: usize = 4801;

/// Where Debian's `pocketsphinx-en-us` package puts the US English model: the acoustic model
/// in `en-us`, the pronouncing dictionary in `cmudict-en-us.dict`.
pub const SPHINX_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

/// The sample rate PocketSphinx's US English model takes, the only one
/// [`TranscriptReply::Recognise`] accepts.
pub const SPHINX_RATE: u32 = 16_000;

/// One scripted tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedCall {
    /// Its id.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments' JSON text (streamed in pieces).
    pub arguments: String,
}

impl ScriptedCall {
    /// A call `id` of `name` with `arguments`.
    pub fn new(id: &str, name: &str, arguments: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// One scripted answer of the chat endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatReply {
    /// Text streamed as these chunks, `delay` before each; `finish_reason` `stop`.
    Text {
        /// The chunks, in order.
        chunks: Vec<String>,
        /// The wait before each chunk.
        delay: Duration,
    },
    /// Tool calls (after `text`, if any), each call's arguments streamed in pieces of
    /// `fragment` characters; `finish_reason` `tool_calls`.
    ToolCalls {
        /// Text streamed before the calls.
        text: Option<String>,
        /// The calls.
        calls: Vec<ScriptedCall>,
        /// Characters of arguments per chunk (at least 1).
        fragment: usize,
        /// Every call at index 0, told apart only by its id.
        reuse_index: bool,
    },
    /// An HTTP error status with `{"error": {"message": …, "type": …}}`.
    Error {
        /// The status.
        status: u16,
        /// The error's message.
        message: String,
    },
    /// A 200 with the event-stream headers, and then nothing, until the client goes away.
    Hang,
    /// These text chunks, then the connection closes: no finish reason, no `[DONE]`.
    Cut(Vec<String>),
}

impl ChatReply {
    /// `text` streamed a word at a time (each chunk a word with the space before it), with no
    /// delay.
    pub fn text(text: &str) -> Self {
        Self::words(text, Duration::ZERO)
    }

    /// `text` streamed a word at a time, `delay` before each.
    pub fn words(text: &str, delay: Duration) -> Self {
        let mut chunks: Vec<String> = Vec::new();
        for (n, word) in text.split(' ').enumerate() {
            chunks.push(if n == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            });
        }
        Self::Text { chunks, delay }
    }

    /// An error status with `message`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::Error {
            status,
            message: message.into(),
        }
    }

    fn full_text(&self) -> Option<String> {
        match self {
            Self::Text { chunks, .. } => Some(chunks.concat()),
            Self::ToolCalls { text, .. } => text.clone(),
            Self::Cut(chunks) => Some(chunks.concat()),
            Self::Error { .. } | Self::Hang => None,
        }
    }
}

/// One scripted answer of the transcription endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptReply {
    /// `{"text": …}`.
    Text(String),
    /// An HTTP error status with an OpenAI-style error body.
    Error {
        /// The status.
        status: u16,
        /// The error's message.
        message: String,
    },
    /// Real local speech recognition, no network: PocketSphinx (`pocketsphinx_batch`, Debian
    /// packages `pocketsphinx` and `pocketsphinx-en-us`) decodes the uploaded WAV (16 kHz mono
    /// 16-bit) against a grammar allowing exactly one of `phrases`, and the answer is
    /// `{"text": …}` with the phrase it heard, lowercase words separated by single spaces.
    /// A grammar makes recognition deterministic where open dictation of synthetic speech
    /// over a telephone band would not be. The utterance is decoded whole, its cepstral mean
    /// taken over all of it (PocketSphinx's live estimate starts from wideband speech, far
    /// from a telephone band's, and loses the first words). Anything short of a phrase —
    /// PocketSphinx or its model missing or failing, an upload it cannot take, audio matching
    /// none of the phrases — answers HTTP 500 saying why, never an empty text.
    Recognise {
        /// The phrases the grammar allows: words in the model's dictionary.
        phrases: Vec<String>,
    },
}

impl TranscriptReply {
    /// Recognition by PocketSphinx against `phrases` (see [`TranscriptReply::Recognise`]).
    pub fn recognise(phrases: &[&str]) -> Self {
        Self::Recognise {
            phrases: phrases.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// One scripted answer of the speech endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeechReply {
    /// The tone, [`SPEECH_MS_PER_CHAR`] ms per character of `input`, `delay` before each chunk.
    Tone {
        /// The wait before each chunk.
        delay: Duration,
    },
    /// The tone, its first chunk only after `first_audio_after` (a service's time to first
    /// audio), the rest at once.
    Late {
        /// The wait before the first chunk.
        first_audio_after: Duration,
    },
    /// An HTTP error status with an OpenAI-style error body.
    Error {
        /// The status.
        status: u16,
        /// The error's message.
        message: String,
    },
}

/// What an uploaded WAV said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// Its sample rate.
    pub sample_rate: u32,
    /// Its channels.
    pub channels: u16,
    /// Bits per sample.
    pub bits: u16,
    /// Samples (per channel) in its data chunk.
    pub samples: u64,
}

impl WavInfo {
    /// How long it plays.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples as f64 / f64::from(self.sample_rate.max(1)))
    }
}

/// One field of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartField {
    /// Its name.
    pub name: String,
    /// Its file name, for a file.
    pub file_name: Option<String>,
    /// Its content type, when given.
    pub content_type: Option<String>,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// Its path (`/v1/chat/completions`…).
    pub path: String,
    /// Its headers, names lowercase (a repeated header keeps its last value).
    pub headers: BTreeMap<String, String>,
    /// Its body as JSON, for a JSON request.
    pub json: Option<Value>,
    /// Its fields, for a multipart request.
    pub fields: Vec<MultipartField>,
    /// The uploaded `file`, when it was a WAV that could be read.
    pub wav: Option<WavInfo>,
    /// When it arrived (the wall clock, to compare with a call record's times).
    pub received_at: SystemTime,
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A multipart text field's value.
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
    }
}

#[derive(Debug, Default)]
struct Script {
    chat: VecDeque<ChatReply>,
    transcripts: VecDeque<TranscriptReply>,
    speech: VecDeque<SpeechReply>,
    requests: Vec<RecordedRequest>,
    /// Streamed chat answers whose client went away before their end.
    abandoned: usize,
}

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<Script>,
    recorded: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, request: RecordedRequest) {
        self.lock().requests.push(request);
        self.recorded.notify_waiters();
    }

    /// A streamed chat answer's client went away before its end.
    fn abandoned(&self) {
        self.lock().abandoned += 1;
        self.recorded.notify_waiters();
    }

    /// Waits until `done` says yes of the script (at most `timeout`); whether it did.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Script) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// The scripted OpenAI-compatible server; see the [module documentation](self). It runs on
/// the tokio runtime it was started on and stops when dropped.
#[derive(Debug)]
pub struct ScriptedOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedOpenAi {
    /// Starts the server on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/audio/transcriptions", post(transcription))
            .route("/v1/audio/speech", post(speech))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client is given: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues the next chat answer.
    pub fn push_chat(&self, reply: ChatReply) {
        self.shared.lock().chat.push_back(reply);
    }

    /// Queues the next transcript.
    pub fn push_transcript(&self, reply: TranscriptReply) {
        self.shared.lock().transcripts.push_back(reply);
    }

    /// Queues the next speech answer (by default: the tone, without delay).
    pub fn push_speech(&self, reply: SpeechReply) {
        self.shared.lock().speech.push_back(reply);
    }

    /// Every request so far, in the order they came.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The JSON bodies of the chat completions requests so far, in the order they came.
    pub fn chat_requests(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .filter_map(|r| r.json)
            .collect()
    }

    /// Waits until at least `n` requests have come (at most `timeout`) and returns them all;
    /// `None` on timeout.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Option<Vec<RecordedRequest>> {
        let came = self
            .shared
            .wait_until(timeout, |script| script.requests.len() >= n)
            .await;
        came.then(|| self.requests())
    }

    /// Waits until the clients of `n` streamed chat answers have gone away before their end
    /// (closed the connection or reset the stream), at most `timeout`; whether they had.
    pub async fn wait_abandoned(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, |script| script.abandoned >= n)
            .await
    }

    /// Samples (at [`SPEECH_RATE`]) the speech endpoint answers for `input`.
    pub fn speech_samples(input: &str) -> u64 {
        input.chars().count() as u64 * SPEECH_MS_PER_CHAR * u64::from(SPEECH_RATE) / 1000
    }
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn error_response(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": "scripted_error", "code": null}});
    (status, axum::Json(body)).into_response()
}

/// A streamed body fed by the returned sender.
fn channel_body() -> (mpsc::Sender<Result<Bytes, Infallible>>, Body) {
    let (tx, rx) = mpsc::channel(16);
    (tx, Body::from_stream(ReceiverStream::new(rx)))
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.record(RecordedRequest {
        path: "/v1/chat/completions".into(),
        headers: header_map(&headers),
        json: Some(request.clone()),
        fields: Vec::new(),
        wav: None,
        received_at: SystemTime::now(),
    });
    if let Some(refusal) = strict_format_refusal(&request) {
        return refusal;
    }
    let reply = shared
        .lock()
        .chat
        .pop_front()
        .unwrap_or_else(|| ChatReply::text(DEFAULT_CHAT_TEXT));
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("scripted")
        .to_owned();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as u64;
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request.pointer("/stream_options/include_usage") == Some(&json!(true));
    match reply {
        ChatReply::Error { status, message } => error_response(status, &message),
        ChatReply::Hang => {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                tx.closed().await;
                shared.abandoned();
            });
            event_stream(body)
        }
        reply if !stream => {
            let (content, tool_calls, reason) = match &reply {
                ChatReply::ToolCalls { calls, .. } => (
                    reply.full_text(),
                    Some(
                        calls
                            .iter()
                            .map(|c| {
                                json!({"id": c.id, "type": "function",
                                       "function": {"name": c.name, "arguments": c.arguments}})
                            })
                            .collect::<Vec<_>>(),
                    ),
                    "tool_calls",
                ),
                _ => (reply.full_text(), None, "stop"),
            };
            let mut message = json!({"role": "assistant", "content": content});
            if let (Some(calls), Some(m)) = (tool_calls, message.as_object_mut()) {
                m.insert("tool_calls".into(), Value::Array(calls));
            }
            axum::Json(json!({
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": {"prompt_tokens": messages, "completion_tokens": 1},
            }))
            .into_response()
        }
        reply => {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let chunks = stream_chunks(&reply, &model, messages, include_usage);
                let cut = matches!(reply, ChatReply::Cut(_));
                for (delay, chunk) in chunks {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let event = format!("data: {chunk}\n\n");
                    if tx.send(Ok(Bytes::from(event))).await.is_err() {
                        shared.abandoned();
                        return;
                    }
                }
                if !cut
                    && tx
                        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
                        .await
                        .is_err()
                {
                    shared.abandoned();
                }
            });
            event_stream(body)
        }
    }
}

/// OpenAI's 400 for a `response_format` asking for a strict JSON schema that breaks the
/// rules of strict Structured Outputs ([`strict_schema_violation`]); `None` for any other
/// request.
fn strict_format_refusal(request: &Value) -> Option<Response> {
    let format = request.get("response_format")?;
    if format.get("type")? != "json_schema"
        || format.pointer("/json_schema/strict") != Some(&json!(true))
    {
        return None;
    }
    let name = format
        .pointer("/json_schema/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let schema = format
        .pointer("/json_schema/schema")
        .unwrap_or(&Value::Null);
    let why = strict_schema_violation(schema)?;
    let body = json!({"error": {
        "message": format!("Invalid schema for response_format '{name}': {why}"),
        "type": "invalid_request_error",
        "param": "response_format",
        "code": null,
    }});
    Some((StatusCode::BAD_REQUEST, axum::Json(body)).into_response())
}

/// The first rule of OpenAI's strict Structured Outputs that `schema` breaks, worded as
/// OpenAI words it (`In context=(…), …`), or `None` when it keeps them all: the root is an
/// object schema (not `anyOf`); every object schema (through `properties`, `items`, `anyOf`,
/// `$defs` and `definitions`) sets `additionalProperties` to `false` and lists every key of its
/// `properties` in `required`.
pub fn strict_schema_violation(schema: &Value) -> Option<String> {
    let root_is_object =
        schema.get("type") == Some(&json!("object")) || schema.get("properties").is_some();
    if !root_is_object || schema.get("anyOf").is_some() {
        return Some(
            "In context=(), the root schema must be an object schema, not anyOf.".to_owned(),
        );
    }
    strict_violation_at(schema, &mut Vec::new())
}

fn strict_violation_at(schema: &Value, context: &mut Vec<String>) -> Option<String> {
    let node = schema.as_object()?;
    let shown = || {
        let parts: Vec<String> = context.iter().map(|p| format!("'{p}'")).collect();
        match parts.len() {
            1 => format!("({},)", parts.concat()),
            _ => format!("({})", parts.join(", ")),
        }
    };
    let is_object = node.contains_key("properties")
        || match node.get("type") {
            Some(Value::String(kind)) => kind == "object",
            Some(Value::Array(kinds)) => kinds.iter().any(|k| k == "object"),
            _ => false,
        };
    if is_object {
        if node.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Some(format!(
                "In context={}, 'additionalProperties' is required to be supplied and to be \
                 false.",
                shown()
            ));
        }
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let properties = node.get("properties").and_then(Value::as_object);
        if let Some(missing) = properties
            .into_iter()
            .flat_map(|p| p.keys())
            .find(|key| !required.contains(&key.as_str()))
        {
            return Some(format!(
                "In context={}, 'required' is required to be supplied and to be an array \
                 including every key in properties. Missing '{missing}'.",
                shown()
            ));
        }
    }
    let mut children: Vec<(Vec<String>, &Value)> = Vec::new();
    for key in ["properties", "$defs", "definitions"] {
        for (name, child) in node
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            children.push((vec![key.to_owned(), name.clone()], child));
        }
    }
    match node.get("items") {
        Some(Value::Array(items)) => children.extend(
            items
                .iter()
                .enumerate()
                .map(|(n, item)| (vec!["items".to_owned(), n.to_string()], item)),
        ),
        Some(items) => children.push((vec!["items".to_owned()], items)),
        None => {}
    }
    for (n, branch) in node
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        children.push((vec!["anyOf".to_owned(), n.to_string()], branch));
    }
    for (path, child) in children {
        let depth = context.len();
        context.extend(path);
        let found = strict_violation_at(child, context);
        context.truncate(depth);
        if found.is_some() {
            return found;
        }
    }
    None
}

fn event_stream(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The `chat.completion.chunk`s of a streamed reply, each with the wait before it.
fn stream_chunks(
    reply: &ChatReply,
    model: &str,
    messages: u64,
    include_usage: bool,
) -> Vec<(Duration, Value)> {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut out = vec![(
        Duration::ZERO,
        chunk(json!({"role": "assistant", "content": ""}), None),
    )];
    let (texts, delay) = match reply {
        ChatReply::Text { chunks, delay } => (chunks.clone(), *delay),
        ChatReply::ToolCalls { text, .. } => (text.iter().cloned().collect(), Duration::ZERO),
        ChatReply::Cut(chunks) => (chunks.clone(), Duration::ZERO),
        ChatReply::Error { .. } | ChatReply::Hang => (Vec::new(), Duration::ZERO),
    };
    for text in &texts {
        out.push((delay, chunk(json!({"content": text}), None)));
    }
    if matches!(reply, ChatReply::Cut(_)) {
        return out;
    }
    let mut finish = "stop";
    if let ChatReply::ToolCalls {
        calls,
        fragment,
        reuse_index,
        ..
    } = reply
    {
        finish = "tool_calls";
        for (n, call) in calls.iter().enumerate() {
            let index = if *reuse_index { 0 } else { n };
            out.push((
                Duration::ZERO,
                chunk(
                    json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}]}),
                    None,
                ),
            ));
            let chars: Vec<char> = call.arguments.chars().collect();
            for piece in chars.chunks((*fragment).max(1)) {
                let piece: String = piece.iter().collect();
                out.push((
                    Duration::ZERO,
                    chunk(
                        json!({"tool_calls": [{"index": index,
                            "function": {"arguments": piece}}]}),
                        None,
                    ),
                ));
            }
        }
    }
    let pieces = (out.len() - 1) as u64;
    out.push((Duration::ZERO, chunk(json!({}), Some(finish))));
    if include_usage {
        out.push((
            Duration::ZERO,
            json!({
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": messages, "completion_tokens": pieces,
                          "total_tokens": messages + pieces},
            }),
        ));
    }
    out
}

async fn transcription(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let mut fields = Vec::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    return error_response(400, "the upload could not be read");
                };
                fields.push(MultipartField {
                    name,
                    file_name,
                    content_type,
                    bytes: bytes.to_vec(),
                });
            }
            Ok(None) => break,
            Err(e) => return error_response(400, &format!("not multipart: {e}")),
        }
    }
    let upload = fields
        .iter()
        .find(|f| f.name == "file")
        .map(|f| f.bytes.clone())
        .unwrap_or_default();
    shared.record(RecordedRequest {
        path: "/v1/audio/transcriptions".into(),
        headers: header_map(&headers),
        json: None,
        fields,
        wav: read_wav(&upload),
        received_at: SystemTime::now(),
    });
    let reply = shared.lock().transcripts.pop_front();
    match reply {
        Some(TranscriptReply::Error { status, message }) => error_response(status, &message),
        Some(TranscriptReply::Text(text)) => axum::Json(json!({"text": text})).into_response(),
        Some(TranscriptReply::Recognise { phrases }) => match recognise(&upload, &phrases).await {
            Ok(text) => axum::Json(json!({"text": text})).into_response(),
            Err(reason) => error_response(500, &reason),
        },
        None => axum::Json(json!({"text": ""})).into_response(),
    }
}

/// The JSGF grammar allowing exactly one of `phrases`, each lowercase, words separated by
/// single spaces.
fn phrase_grammar(phrases: &[String]) -> String {
    let alternatives: Vec<String> = phrases
        .iter()
        .map(|p| {
            p.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    format!(
        "#JSGF V1.0;\ngrammar phrases;\npublic <phrase> = {};\n",
        alternatives.join(" | ")
    )
}

/// What PocketSphinx recognises in `upload` (a 16 kHz mono 16-bit WAV) against a grammar of
/// `phrases`; the reason when it recognises none of them or cannot run.
async fn recognise(upload: &[u8], phrases: &[String]) -> Result<String, String> {
    let (info, pcm) = wav_data(upload).ok_or("the upload is not a WAV file")?;
    if (info.sample_rate, info.channels, info.bits) != (SPHINX_RATE, 1, 16) {
        return Err(format!(
            "PocketSphinx takes {SPHINX_RATE} Hz mono 16-bit audio, the upload is {} Hz, {} \
             channel(s), {} bits",
            info.sample_rate, info.channels, info.bits
        ));
    }
    let dir = WorkDir::for_peer("pocketsphinx").map_err(|e| e.to_string())?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.path().join(name), bytes).map_err(|e| format!("writing {name}: {e}"))
    };
    write("utterance.raw", pcm)?;
    write("phrases.gram", phrase_grammar(phrases).as_bytes())?;
    write("utterances.ctl", b"utterance\n")?;
    let model = std::path::Path::new(SPHINX_MODEL_DIR);
    let status = tokio::process::Command::new("pocketsphinx_batch")
        .arg("-hmm")
        .arg(model.join("en-us"))
        .arg("-dict")
        .arg(model.join("cmudict-en-us.dict"))
        .args([
            "-jsgf",
            "phrases.gram",
            "-ctl",
            "utterances.ctl",
            "-adcin",
            "yes",
        ])
        .args([
            "-cepdir",
            ".",
            "-cepext",
            ".raw",
            "-samprate",
            &SPHINX_RATE.to_string(),
        ])
        .args(["-hyp", "hypothesis.txt", "-logfn", "pocketsphinx.log"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| {
            format!(
                "cannot run pocketsphinx_batch (Debian packages pocketsphinx and \
                 pocketsphinx-en-us; scripts/setup.sh installs them): {e}"
            )
        })?;
    let log = std::fs::read_to_string(dir.path().join("pocketsphinx.log")).unwrap_or_default();
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("ERROR")).collect();
    if !status.success() {
        return Err(format!(
            "pocketsphinx_batch failed ({status}): {}",
            errors.join("; ")
        ));
    }
    let hypothesis = std::fs::read_to_string(dir.path().join("hypothesis.txt"))
        .map_err(|e| format!("reading PocketSphinx's hypothesis: {e}"))?;
    // One line per utterance: the words, then ` (utterance <score>)`.
    let words = hypothesis
        .lines()
        .next()
        .and_then(|l| l.rsplit_once(" (utterance "))
        .map_or("", |(words, _)| words.trim());
    if words.is_empty() {
        return Err(format!(
            "PocketSphinx recognised none of {phrases:?} in {:.2} s of audio: {}",
            info.duration().as_secs_f64(),
            errors.join("; ")
        ));
    }
    Ok(words.to_owned())
}

/// The format and length of a RIFF/WAVE file, read independently of any encoder under test.
fn read_wav(bytes: &[u8]) -> Option<WavInfo> {
    wav_data(bytes).map(|(info, _)| info)
}

/// The format of a RIFF/WAVE file and the samples of its data chunk (as many as are present).
fn wav_data(bytes: &[u8]) -> Option<(WavInfo, &[u8])> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = bytes.get(at..at + 4)?;
        let len = u32_at(at + 4)? as usize;
        let body = at + 8;
        if id == b"fmt " {
            format = Some((u16_at(body + 2)?, u32_at(body + 4)?, u16_at(body + 14)?));
        } else if id == b"data" {
            let (channels, sample_rate, bits) = format?;
            let frame = usize::from(channels) * usize::from(bits / 8);
            let present = len.min(bytes.len().saturating_sub(body));
            let info = WavInfo {
                sample_rate,
                channels,
                bits,
                samples: (present / frame.max(1)) as u64,
            };
            return Some((info, bytes.get(body..body + present)?));
        }
        at = body + len + (len & 1);
    }
    None
}

async fn speech(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.record(RecordedRequest {
        path: "/v1/audio/speech".into(),
        headers: header_map(&headers),
        json: Some(request.clone()),
        fields: Vec::new(),
        wav: None,
        received_at: SystemTime::now(),
    });
    let reply = shared
        .lock()
        .speech
        .pop_front()
        .unwrap_or(SpeechReply::Tone {
            delay: Duration::ZERO,
        });
    let (first_delay, delay) = match reply {
        SpeechReply::Error { status, message } => return error_response(status, &message),
        SpeechReply::Tone { delay } => (delay, delay),
        SpeechReply::Late { first_audio_after } => (first_audio_after, Duration::ZERO),
    };
    let input = request
        .get("input")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let samples = ScriptedOpenAi::speech_samples(input);
    let mut pcm = Vec::with_capacity(samples as usize * 2);
    for i in 0..samples {
        let t = i as f64 / f64::from(SPEECH_RATE);
        let s = (SPEECH_AMPLITUDE * (2.0 * std::f64::consts::PI * SPEECH_TONE_HZ * t).sin()).round()
            as i16;
        pcm.extend_from_slice(&s.to_le_bytes());
    }
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for (n, piece) in pcm.chunks(SPEECH_CHUNK_BYTES).enumerate() {
            let wait = if n == 0 { first_delay } else { delay };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                return;
            }
        }
    });
    ([(header::CONTENT_TYPE, "audio/pcm")], body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_tool_call_reply_streams_its_arguments_in_pieces_at_one_index_when_asked() {
        let reply = ChatReply::ToolCalls {
            text: None,
            calls: vec![
                ScriptedCall::new("a", "f", "{\"x\":1}"),
                ScriptedCall::new("b", "g", "{}"),
            ],
            fragment: 2,
            reuse_index: true,
        };
        let chunks = stream_chunks(&reply, "m", 1, true);
        let indices: Vec<u64> = chunks
            .iter()
            .filter_map(|(_, c)| c.pointer("/choices/0/delta/tool_calls/0/index")?.as_u64())
            .collect();
        assert!(indices.iter().all(|i| *i == 0));
        let arguments: String = chunks
            .iter()
            .filter_map(|(_, c)| {
                c.pointer("/choices/0/delta/tool_calls/0/function/arguments")?
                    .as_str()
            })
            .collect();
        assert_eq!(arguments, "{\"x\":1}{}");
        assert!(chunks.last().unwrap().1.get("usage").is_some());
    }

    /// A 16-bit mono WAV of `samples` at `rate`.
    fn wav(samples: &[i16], rate: u32) -> Vec<u8> {
        let data = u32::try_from(samples.len() * 2).unwrap();
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36 + data).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 1, 0]);
        wav.extend_from_slice(&rate.to_le_bytes());
        wav.extend_from_slice(&(rate * 2).to_le_bytes());
        wav.extend_from_slice(&[2, 0, 16, 0]);
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&data.to_le_bytes());
        for s in samples {
            wav.extend_from_slice(&s.to_le_bytes());
        }
        wav
    }

    const PHRASES: [&str; 4] = [
        "yes I am interested",
        "no thank you",
        "call me back later",
        "my budget is five hundred dollars",
    ];

    fn phrases() -> Vec<String> {
        PHRASES.iter().map(|p| (*p).to_owned()).collect()
    }

    /// espeak-ng speech is recognised, as it was synthesised (16 kHz) and as it reaches the
    /// engine over a call: through 8 kHz µ-law and back up to 16 kHz.
    #[tokio::test]
    async fn pocketsphinx_recognises_espeak_speech_wideband_and_over_a_telephone_band() {
        let dir = WorkDir::for_peer("espeak-ng").unwrap();
        for (phrase, expected) in [
            ("No, thank you.", "no thank you"),
            ("Yes, I am interested.", "yes i am interested"),
        ] {
            let pcm = crate::media::speech_pcm16k(dir.path(), phrase).unwrap();
            let heard = recognise(&wav(&pcm, SPHINX_RATE), &phrases()).await;
            assert_eq!(heard.as_deref(), Ok(expected), "wideband {phrase:?}");

            let ulaw = crate::media::speech_ulaw(dir.path(), phrase).unwrap();
            let path = dir.path().join("telephone.wav");
            crate::media::ulaw_to_wav(&ulaw, SPHINX_RATE, &path).unwrap();
            let heard = recognise(&std::fs::read(&path).unwrap(), &phrases()).await;
            assert_eq!(heard.as_deref(), Ok(expected), "telephone band {phrase:?}");
        }
    }

    /// Audio that is none of the phrases, or that the model cannot take, is an error saying
    /// why, never an empty text.
    #[tokio::test]
    async fn recognising_nothing_is_an_error_not_an_empty_text() {
        let silence = wav(&[0; 16_000], SPHINX_RATE);
        let why = recognise(&silence, &phrases()).await.unwrap_err();
        assert!(why.contains("recognised none of"), "{why}");
        let narrow = wav(&[0; 8000], 8000);
        let why = recognise(&narrow, &phrases()).await.unwrap_err();
        assert!(why.contains("8000 Hz"), "{why}");
        let why = recognise(b"not a wav", &phrases()).await.unwrap_err();
        assert!(why.contains("not a WAV"), "{why}");
    }

    #[test]
    fn strict_schemas_that_break_openais_rules_are_named_with_their_context() {
        let open = json!({"type": "object", "properties": {"a": {"type": "string"}},
                          "required": ["a"]});
        assert_eq!(
            strict_schema_violation(&open).as_deref(),
            Some(
                "In context=(), 'additionalProperties' is required to be supplied and to be \
                 false."
            )
        );
        let optional = json!({"type": "object", "additionalProperties": false, "required": [],
            "properties": {"a": {"type": "object", "additionalProperties": false,
                                 "properties": {"b": {"type": "string"}}}}});
        let why = strict_schema_violation(&optional).unwrap();
        assert!(why.starts_with("In context=(), 'required'"), "{why}");
        assert!(why.ends_with("Missing 'a'."), "{why}");
        let nested = json!({"type": "object", "additionalProperties": false, "required": ["a"],
            "properties": {"a": {"type": "array", "items": {"type": "object",
                                 "properties": {}, "required": []}}}});
        let why = strict_schema_violation(&nested).unwrap();
        assert!(
            why.starts_with("In context=('properties', 'a', 'items'), 'additionalProperties'"),
            "{why}"
        );
        assert!(strict_schema_violation(&json!({"anyOf": [open]})).is_some());
        let strict = json!({"type": "object", "additionalProperties": false, "required": ["a"],
            "properties": {"a": {"type": ["string", "null"]}}});
        assert_eq!(strict_schema_violation(&strict), None);
    }

    #[test]
    fn the_grammar_allows_each_phrase_in_lowercase_words() {
        let grammar = phrase_grammar(&["Yes  I am".into(), "no".into()]);
        assert!(
            grammar.ends_with("public <phrase> = yes i am | no;\n"),
            "{grammar}"
        );
    }

    #[test]
    fn wav_headers_are_read() {
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 1, 0]);
        wav.extend_from_slice(&16_000u32.to_le_bytes());
        wav.extend_from_slice(&32_000u32.to_le_bytes());
        wav.extend_from_slice(&[2, 0, 16, 0]);
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&6400u32.to_le_bytes());
        wav.extend_from_slice(&[0; 6400]);
        let info = read_wav(&wav).unwrap();
        assert_eq!(info.sample_rate, 16_000);
        assert_eq!(info.samples, 3200);
        assert_eq!(info.duration(), Duration::from_millis(200));
        assert_eq!(read_wav(b"RIFF"), None);
    }
}

//! `builtin:agent`: the conversation inside the engine. A thin driver around
//! [`dialtone_agent::Conversation`]: it steps the speech loop with the caller's frames, hands
//! the machine what happened (utterances, transcripts, the model's stream, synthesised audio,
//! playout marks, barge-ins, tool answers) and performs what the machine asks — speech
//! recognition and tool calls as tasks whose answers come back on a channel, the model's stream
//! and one synthesis at a time polled here, playout through the speech loop.
//!
//! With a synthesiser that speaks a whole line in one stream (Cartesia, ElevenLabs: `live_tts`,
//! the conversation's `speech_per_line`) a segment is an agent line: its speech opens at the
//! line's first piece (one connection, one context), is fed the next pieces as the model writes
//! them and ended with the line; the words' times it gives go to the conversation, which cuts
//! an interrupted line by them. Barge-in drops the speech, which cancels it at the service.
//!
//! With a live speech recogniser (Deepgram) the driver opens one session when the agent opens
//! and streams the caller's audio into it from the start of each utterance the speech loop
//! hears to its end ([`super::live_stt`]); the utterance's transcript is then the session's
//! answer to `finish`, so recognition has kept up while the caller spoke, and the last interim
//! words are handed to the conversation as the utterance ends (the model may start on them;
//! the final transcript decides). A start the speech loop drops (a click) is finished with its
//! words left unread. An utterance asked again (after a failure) is sent whole to the
//! per-utterance recogniser.
//!
//! A person is on the line when the call is answered, or — with answering-machine detection —
//! when the verdict is human (or a machine with `voicemail_action` `continue`); only then does
//! the agent open. When a provider fails for good the engine apologises with the local
//! synthesiser and ends the call with `brain_error`, the record keeping everything so far.
//! The caller's key presses (RFC 4733 events and in-band tones) go to the conversation as
//! caller input. After the call the transcript, `agent_stats`, the structured result (when the
//! agent has `returns`) and a summary are written before the call's final status is committed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dialtone_agent::{
    Action, AgentError, ChatEvent, ChatModel, Conversation, ConversationConfig, Line, SpeechToText,
    Spoken, StreamingSpeechToText, StreamingTextToSpeech, TextToSpeech, TurnSpeech, extract,
};
use dialtone_media::{FrameReceiver, FrameSender, MediaCall};
use dialtone_model::TranscriptLine;
use dialtone_model::time::{parse_rfc3339, rfc3339};
use dialtone_speech::{AnsweredBy, FRAME_SAMPLES, SpeechEvent};
use dialtone_storage::EndReason;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::live_stt::LiveRecognition;
use super::playout_marks::heard_parts;
use super::{
    APOLOGY, BrainContext, BrainInput, BrainRequest, Duties, IvrStep, Run, SilenceClock, Voicemail,
};
use crate::outbound;
use crate::webhooks::signature;

/// How long the summary may take after the call.
const SUMMARY_TIME: Duration = Duration::from_secs(10);
/// How long the result extraction (both tries) may take after the call.
const EXTRACTION_TIME: Duration = Duration::from_secs(20);
/// How long the work after the call may take: the summary, the extraction and the writes.
pub(crate) const AFTER_CALL: Duration = Duration::from_secs(35);
/// How long a tool has to answer.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest tool answer passed to the model.
const MAX_TOOL_ANSWER: usize = 64 * 1024;
/// The playout mark of a piece of the agent's speech: this prefix and the piece's id.
const SEGMENT_MARK: &str = "segment:";

/// Everything `builtin:agent` needs besides the media and the common brain context.
#[derive(Debug, Clone)]
pub(crate) struct AgentSetup {
    /// The conversation's settings.
    pub(crate) conversation: ConversationConfig,
    /// The language model, speech recognition and synthesis, with their providers' kinds (the
    /// metrics' label: never a tenant's name for a provider).
    pub(crate) llm: (Arc<dyn ChatModel>, String),
    pub(crate) stt: (Arc<dyn SpeechToText>, String),
    /// The same recogniser fed live, when it can be.
    pub(crate) live_stt: Option<Arc<dyn StreamingSpeechToText>>,
    pub(crate) tts: (Arc<dyn TextToSpeech>, String),
    /// The same synthesiser speaking a whole line in one stream, when it can (then the
    /// conversation has `speech_per_line`).
    pub(crate) live_tts: Option<Arc<dyn StreamingTextToSpeech>>,
    /// Runs the agent's HTTP tools.
    pub(crate) tools: ToolRunner,
    /// Answering-machine detection is on: the agent opens on the verdict.
    pub(crate) amd: bool,
    /// The first message's synthesis, started while the phone rings (taken by the first
    /// piece that says it).
    pub(crate) first_audio: Option<Arc<std::sync::Mutex<Option<FirstAudio>>>>,
}

/// The first message and its synthesis under way.
#[derive(Debug)]
pub(crate) struct FirstAudio {
    pub(crate) text: String,
    pub(crate) audio: mpsc::Receiver<Result<Vec<i16>, AgentError>>,
}

/// POSTs tool calls: `{"call_id", "tool", "arguments"}`, signed like webhooks, to addresses the
/// outbound policy allows. The answer is read as it streams in and given up past
/// [`MAX_TOOL_ANSWER`] bytes; the whole exchange has [`TOOL_TIMEOUT`].
#[derive(Debug, Clone)]
pub(crate) struct ToolRunner {
    client: outbound::Client,
    secret: Arc<str>,
    timeout: Duration,
}

impl ToolRunner {
    /// Tools called with `client`, signed with `secret`, given [`TOOL_TIMEOUT`] to answer.
    pub(crate) fn new(client: outbound::Client, secret: Arc<str>) -> Self {
        Self {
            client,
            secret,
            timeout: TOOL_TIMEOUT,
        }
    }

    /// The same, with `timeout` to answer.
    #[cfg(test)]
    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The tool's JSON answer, or why there is none (which the model hears).
    async fn call(
        &self,
        call_id: uuid::Uuid,
        name: &str,
        url: &str,
        arguments: Value,
    ) -> Result<Value, String> {
        let body = json!({"call_id": call_id, "tool": name, "arguments": arguments}).to_string();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let request = self
            .client
            .request(reqwest::Method::POST, url)
            .map_err(|e| format!("the tool cannot be reached: {e}"))?
            .header("Content-Type", "application/json")
            .header(
                "Dialtone-Signature",
                signature(&self.secret, timestamp, &body),
            )
            .timeout(self.timeout)
            .body(body);
        let too_slow = || {
            let waited = self.timeout;
            if waited.subsec_millis() == 0 {
                format!("the tool did not answer within {} s", waited.as_secs())
            } else {
                format!("the tool did not answer within {} ms", waited.as_millis())
            }
        };
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(too_slow()),
            Err(e) => {
                let why = outbound::cause_of(&e).map_or_else(|| e.to_string(), ToString::to_string);
                return Err(format!("the tool cannot be reached: {why}"));
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the tool answered HTTP {}", status.as_u16()));
        }
        let too_long = || format!("the tool's answer is longer than {MAX_TOOL_ANSWER} bytes");
        if response
            .content_length()
            .is_some_and(|length| length > MAX_TOOL_ANSWER as u64)
        {
            return Err(too_long());
        }
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.len() + chunk.len() > MAX_TOOL_ANSWER => {
                    return Err(too_long());
                }
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(too_slow()),
                Err(e) => return Err(format!("the tool's answer was cut off: {e}")),
            }
        }
        serde_json::from_slice(&answer).map_err(|_| "the tool's answer is not JSON".to_owned())
    }
}

/// What a task reports back to the driver.
enum Outcome {
    Transcript {
        utterance: u64,
        text: Result<String, AgentError>,
    },
    Tool {
        id: String,
        answer: Result<Value, String>,
    },
}

/// Starts `builtin:agent` on the call's media, on `runtime` (in the call's span).
pub(crate) fn start(
    runtime: &tokio::runtime::Handle,
    media: &mut MediaCall,
    context: BrainContext,
    setup: AgentSetup,
) -> Option<tokio::task::JoinHandle<()>> {
    let inbound = media.take_inbound()?;
    let outbound = media.take_outbound()?;
    Some(runtime.spawn(run(inbound, outbound, context, setup).in_current_span()))
}

/// A segment's synthesis: a piece spoken whole, or a line's speech fed as it is written.
enum Synthesis {
    Piece(mpsc::Receiver<Result<Vec<i16>, AgentError>>),
    Line(TurnSpeech),
}

/// The speech under way: the segment, and its synthesis.
struct Speaking {
    segment: u64,
    synthesis: Synthesis,
}

/// A segment waiting for the one before to be synthesised: its text so far, and whether that
/// is all of it.
struct Waiting {
    segment: u64,
    pieces: Vec<String>,
    ended: bool,
}

struct Driver {
    run: Run,
    conversation: Conversation,
    setup: AgentSetup,
    chat: Option<(u64, mpsc::Receiver<Result<ChatEvent, AgentError>>)>,
    speaking: Option<Speaking>,
    to_speak: VecDeque<Waiting>,
    /// Pieces whose audio is in the playout, in order, with the samples queued of each: a
    /// barge-in's cut reports what was dropped, and this tells which piece that cut and how
    /// much of it was heard.
    queued: VecDeque<(u64, usize)>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    /// A machine answered and the engine leaves the message: the agent is silent.
    voicemail: bool,
    /// A person is on the line and the agent has opened.
    opened: bool,
    /// The caller's utterance under way cut the agent off.
    barged: bool,
    /// The outbound ring watches the frame holding the first audio of an answer (its time on
    /// the wire ends voice-to-voice).
    answer_watched: bool,
    /// Why the conversation failed, when it did.
    failure: Option<AgentError>,
    /// The `transfer_call` tool call waiting for the transfer's outcome.
    transferring: Option<String>,
    /// The live recognition (with a live recogniser), open once the agent opened.
    live: LiveRecognition,
    /// The wall clock at the start, to date transcript lines.
    started: (Instant, SystemTime),
}

impl Driver {
    /// The agent opens, once, when a person is on the line.
    fn open(&mut self, now: Instant) {
        if !self.opened && self.failure.is_none() {
            self.opened = true;
            self.live.open();
            self.conversation.handle_answered(now);
        }
    }

    /// Everything the conversation asks for now.
    fn perform(&mut self, now: Instant) {
        if self.voicemail {
            // A machine answered and the engine leaves the message: the agent is silent.
            while self.conversation.poll_action().is_some() {}
            return;
        }
        while let Some(action) = self.conversation.poll_action() {
            match action {
                Action::Transcribe { utterance, audio } => {
                    // The utterance just ended was streamed live; one asked again is sent whole.
                    let text = self.live.take_transcript().unwrap_or_else(|| {
                        let stt = self.setup.stt.0.clone();
                        let language = self.run.context.language.clone();
                        Box::pin(async move { stt.transcribe(audio, language).await })
                    });
                    let outcomes = self.outcomes.clone();
                    tokio::spawn(
                        async move {
                            let text = text.await;
                            let _ = outcomes.send(Outcome::Transcript { utterance, text });
                        }
                        .in_current_span(),
                    );
                }
                Action::Chat {
                    request_id,
                    request,
                } => {
                    self.chat = Some((request_id, self.setup.llm.0.stream(request)));
                }
                Action::CancelChat => self.chat = None,
                Action::Speak { segment, text } => self.speak(segment, text),
                Action::EndSpeech { segment } => match &mut self.speaking {
                    Some(Speaking {
                        segment: under_way,
                        synthesis: Synthesis::Line(speech),
                    }) if *under_way == segment => speech.finish(),
                    _ => {
                        if let Some(waiting) =
                            self.to_speak.iter_mut().find(|w| w.segment == segment)
                        {
                            waiting.ended = true;
                        }
                    }
                },
                Action::StopSpeaking => {
                    self.speaking = None;
                    self.to_speak.clear();
                    self.queued.clear();
                    self.run.speech.clear_playout();
                    self.run.outbound.clear();
                }
                Action::CallTool {
                    id,
                    name,
                    url,
                    arguments,
                } => {
                    let tools = self.setup.tools.clone();
                    let call_id = self.run.context.call_id;
                    let outcomes = self.outcomes.clone();
                    tokio::spawn(
                        async move {
                            let answer = tools.call(call_id, &name, &url, arguments).await;
                            let _ = outcomes.send(Outcome::Tool { id, answer });
                        }
                        .in_current_span(),
                    );
                }
                Action::SendDtmf { id, digits } => {
                    let _ = self
                        .run
                        .context
                        .requests
                        .send(BrainRequest::SendDtmf(digits.clone()));
                    self.conversation
                        .handle_tool_answer(now, &id, Ok(json!({"sent": digits})));
                }
                Action::Transfer { id, .. } if self.transferring.is_some() => {
                    // One transfer at a time: the one under way keeps its tool call.
                    self.conversation.handle_tool_answer(
                        now,
                        &id,
                        Err("a transfer of this call is already under way".into()),
                    );
                }
                Action::Transfer { id, destination } => {
                    // A completed transfer ends the call; one that did not happen answers the
                    // tool with why (`transfer_failed`).
                    tracing::info!(to = %destination.to, "the agent transfers the caller");
                    self.transferring = Some(id);
                    let _ = self.run.context.requests.send(BrainRequest::Transfer {
                        to: destination.to.clone(),
                        mode: destination.mode,
                    });
                }
                Action::HangUp { reason } => {
                    let _ = self
                        .run
                        .context
                        .requests
                        .send(BrainRequest::HangUp { reason });
                }
                Action::Fail { error } => self.fail(error),
            }
        }
        self.next_speech();
    }

    /// A transfer did not happen: the model's `transfer_call` hears why, and the caller stays.
    fn transfer_failed(&mut self, now: Instant, sip_status: Option<u16>, message: &str) {
        let Some(id) = self.transferring.take() else {
            tracing::info!(%message, "a transfer the API asked for did not happen");
            return;
        };
        let status = sip_status.map_or_else(String::new, |s| format!(" (SIP {s})"));
        self.conversation.handle_tool_answer(
            now,
            &id,
            Err(format!(
                "the transfer did not happen: {message}{status}. The caller is still on the \
                 line: tell them and offer to help otherwise"
            )),
        );
    }

    /// Text for `segment`: more of the line under way, or of one waiting, or a new segment
    /// (one asked again after its synthesis failed keeps its place).
    fn speak(&mut self, segment: u64, text: String) {
        if let Some(Speaking {
            segment: under_way,
            synthesis: Synthesis::Line(speech),
        }) = &self.speaking
            && *under_way == segment
        {
            speech.push(&text);
        } else if let Some(waiting) = self.to_speak.iter_mut().find(|w| w.segment == segment) {
            waiting.pieces.push(text);
        } else {
            let at = self
                .to_speak
                .iter()
                .position(|w| w.segment > segment)
                .unwrap_or(self.to_speak.len());
            let waiting = Waiting {
                segment,
                pieces: vec![text],
                ended: false,
            };
            self.to_speak.insert(at, waiting);
        }
    }

    /// Starts synthesising the next segment once the one before is done: a line's speech fed
    /// what it has so far, or a piece spoken whole.
    fn next_speech(&mut self) {
        if self.speaking.is_some() {
            return;
        }
        let Some(Waiting {
            segment,
            pieces,
            ended,
        }) = self.to_speak.pop_front()
        else {
            return;
        };
        let text = pieces.join(" ");
        // The first message's synthesis began while the phone rang.
        let whole = ended || self.setup.live_tts.is_none();
        let early = self
            .setup
            .first_audio
            .take_if(|_| whole)
            .and_then(|cached| {
                let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
                cached.take().filter(|first| first.text == text)
            });
        let c = &self.run.context;
        let (voice, language) = (c.voice.as_deref(), c.language.as_deref());
        let synthesis = match (early, &self.setup.live_tts) {
            (Some(first), _) => Synthesis::Piece(first.audio),
            (None, Some(tts)) => {
                let mut speech = tts.open(voice, language);
                for piece in &pieces {
                    speech.push(piece);
                }
                if ended {
                    speech.finish();
                }
                Synthesis::Line(speech)
            }
            (None, None) => Synthesis::Piece(self.setup.tts.0.speak(&text, voice, language)),
        };
        self.speaking = Some(Speaking { segment, synthesis });
    }

    /// A provider failed for good: say sorry with the local synthesiser, then hang up.
    fn fail(&mut self, error: AgentError) {
        tracing::warn!(%error, "the conversation failed");
        metrics::counter!("dialtone_agent_failures_total", "kind" => error.kind()).increment(1);
        self.failure = Some(error);
        self.chat = None;
        self.speaking = None;
        self.to_speak.clear();
        self.queued.clear();
        self.run.speech.clear_playout();
        self.run.outbound.clear();
        self.run.say(APOLOGY, "apology");
    }

    /// The engine leaves a voicemail message: the agent stops talking and thinking.
    fn hush(&mut self) {
        self.voicemail = true;
        self.chat = None;
        self.speaking = None;
        self.to_speak.clear();
        self.queued.clear();
        self.live.close();
    }

    /// The caller pressed a key (RFC 4733 or in-band): caller input, once the agent opened.
    fn key(&mut self, now: Instant, digit: char) {
        if self.opened && !self.voicemail {
            self.conversation.handle_dtmf(now, digit);
        }
    }

    /// A speech event the engine's duties left to the brain.
    fn speech_event(&mut self, now: Instant, event: SpeechEvent) {
        match event {
            SpeechEvent::AnsweredBy { verdict } => {
                let person = verdict.answered_by != AnsweredBy::Machine
                    || self.run.context.voicemail == Voicemail::Continue;
                if person {
                    self.open(now);
                }
            }
            SpeechEvent::SpeechStarted { at } => {
                self.barged = false;
                self.live.speech_started(at);
            }
            SpeechEvent::SpeechDropped { .. } => {
                self.live.speech_dropped();
                if self.barged {
                    // It cut the agent off, and no words will come of it.
                    self.conversation.handle_dropped_start(now);
                }
            }
            SpeechEvent::SpeechEnded { at, audio, .. } if self.opened => {
                self.live.speech_ended();
                let over_agent = self.conversation.agent_speaking() && !self.barged;
                self.conversation
                    .handle_utterance(now, at, audio, over_agent);
                // Preemptive generation: the model may start on the interim words.
                if let Some(words) = self.live.take_heard_so_far() {
                    self.conversation.handle_early_words(now, &words);
                }
            }
            SpeechEvent::Dtmf { digit, .. } => self.key(now, digit),
            SpeechEvent::BargeIn { .. } if self.failure.is_some() => {
                // The caller talked over the apology (whose mark the cut dropped): end now.
                let _ = self.run.context.requests.send(BrainRequest::HangUp {
                    reason: EndReason::BrainError,
                });
            }
            SpeechEvent::BargeIn { at, cut } => {
                // The samples still queued were dropped; the rest of the pieces' audio played.
                let lengths: Vec<usize> = self.queued.iter().map(|(_, n)| *n).collect();
                let cut_piece = self
                    .queued
                    .drain(..)
                    .zip(heard_parts(lengths, cut.dropped_samples))
                    .find(|((_, samples), heard)| heard < samples)
                    .map(|((segment, _), heard)| (segment, heard));
                self.barged = true;
                self.run.barge_in(at);
                self.speaking = None;
                self.to_speak.clear();
                let (segment, played) = cut_piece.map_or((None, 0), |(s, p)| (Some(s), p));
                self.conversation.handle_barge_in(now, segment, played);
            }
            SpeechEvent::PlayoutDone { mark } => {
                if mark == "apology" && self.failure.is_some() {
                    let _ = self.run.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::BrainError,
                    });
                } else if let Some(segment) = mark
                    .strip_prefix(SEGMENT_MARK)
                    .and_then(|id| id.parse::<u64>().ok())
                {
                    self.queued.retain(|(s, _)| *s != segment);
                    self.conversation.handle_played(now, segment);
                }
            }
            other => tracing::trace!(?other, "speech event"),
        }
    }

    /// Audio (or the words' times) of the segment under way arrived, or its synthesis ended.
    fn speech_chunk(&mut self, now: Instant, chunk: Option<Result<Spoken, AgentError>>) {
        let Some(speaking) = &self.speaking else {
            return;
        };
        let segment = speaking.segment;
        match chunk {
            Some(Ok(Spoken::Words(words))) => {
                self.conversation.handle_speech_words(segment, words);
            }
            Some(Ok(Spoken::Audio(audio))) => {
                if self
                    .conversation
                    .handle_speech_audio(now, segment, audio.len())
                {
                    // Its first sample leaves in the frame after what the playout still holds.
                    let ahead = self.run.speech.queued_samples() / FRAME_SAMPLES;
                    self.run.outbound.watch(ahead);
                    self.answer_watched = true;
                }
                match self.queued.back_mut() {
                    Some((last, samples)) if *last == segment => *samples += audio.len(),
                    _ => self.queued.push_back((segment, audio.len())),
                }
                self.run.speech.play(audio, None);
            }
            Some(Err(error)) => {
                self.speaking = None;
                self.conversation
                    .handle_speech_done(now, segment, Err(error));
            }
            None => {
                self.speaking = None;
                self.run
                    .speech
                    .play(Vec::new(), Some(format!("{SEGMENT_MARK}{segment}")));
                self.conversation.handle_speech_done(now, segment, Ok(()));
            }
        }
    }

    /// A transcript line with wall-clock time.
    fn transcript_line(&self, line: &Line) -> TranscriptLine {
        let (instant, wall) = self.started;
        let at = if line.at >= instant {
            wall + (line.at - instant)
        } else {
            wall - (instant - line.at)
        };
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        TranscriptLine {
            role: line.role.to_owned(),
            text: line.text.clone(),
            at: rfc3339(ms).unwrap_or_default(),
            interrupted: line.interrupted.then_some(true),
            name: line.name.clone(),
            arguments: line.arguments.clone(),
            result: line.result.clone(),
        }
    }

    /// The record after the call: transcript, figures, result and summary.
    async fn finish(mut self) {
        self.conversation.handle_ended();
        let mut lines: Vec<TranscriptLine> = self
            .conversation
            .transcript()
            .map(|l| self.transcript_line(l))
            .collect();
        // What the engine said itself (a voicemail message, an apology) goes on the record too.
        lines.append(&mut self.run.transcript);
        // By time, not by text: RFC 3339 drops a fraction's trailing zeros ("….85Z" is later
        // than "….854Z" as text), and equal times keep the conversation's order.
        lines.sort_by_key(|l| parse_rfc3339(&l.at));
        let storage = self.run.context.storage.clone();
        let call_id = self.run.context.call_id;
        let transcript = serde_json::to_value(&lines).unwrap_or(Value::Null);
        if let Err(error) = storage.set_transcript(call_id, &transcript).await {
            tracing::error!(%error, "could not record the transcript");
        }
        let stats = self.conversation.stats().clone();
        record_metrics(&stats, &self.setup);
        let said: Vec<(&str, &str)> = lines
            .iter()
            .filter(|l| l.role != "tool")
            .map(|l| (l.role.as_str(), l.text.as_str()))
            .collect();
        let text = extract::transcript_text(said);
        let has_caller = lines.iter().any(|l| l.role == "caller");
        let llm = self.setup.llm.0.clone();
        let summary = match has_caller {
            true => tokio::time::timeout(SUMMARY_TIME, extract::summarise(llm.as_ref(), &text))
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!("the summary took too long");
                    None
                }),
            false => None,
        };
        let extraction = match (&self.run.context.returns, has_caller) {
            (Some(returns), true) => Some(
                tokio::time::timeout(
                    EXTRACTION_TIME,
                    extract::extract(llm.as_ref(), &text, returns),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the result extraction took longer than {} s",
                        EXTRACTION_TIME.as_secs()
                    ))
                }),
            ),
            _ => None,
        };
        let (result, result_error) = result_and_error(
            self.failure.as_ref().map(ToString::to_string),
            self.run.context.returns.is_some(),
            has_caller,
            extraction,
        );
        if let Err(error) = storage
            .set_agent_outcome(call_id, &stats.to_json(), summary.as_deref())
            .await
        {
            tracing::error!(%error, "could not record the agent's figures");
        }
        let written = match (&result, &result_error) {
            (None, None) => Ok(()),
            _ => {
                storage
                    .set_result(call_id, result.as_ref(), result_error.as_deref())
                    .await
            }
        };
        if let Err(error) = written {
            tracing::error!(%error, "could not record the result");
        }
    }
}

/// What the record says of a finished conversation: its result (extracted when the agent
/// `wants_result` and the caller spoke) and `result_error`, which names a provider's failure
/// whenever the conversation failed (with or without `returns`), else why there is no result.
fn result_and_error(
    failure: Option<String>,
    wants_result: bool,
    has_caller: bool,
    extraction: Option<Result<Value, String>>,
) -> (Option<Value>, Option<String>) {
    let (result, extraction_error) = match extraction {
        Some(Ok(value)) => (Some(value), None),
        Some(Err(why)) => (None, Some(why)),
        None => (None, None),
    };
    let error = match failure {
        Some(failure) if wants_result && !has_caller => Some(format!(
            "the conversation failed before the caller said anything: {failure}"
        )),
        Some(failure) => Some(format!("the conversation failed: {failure}")),
        None if wants_result && !has_caller => {
            Some("the caller said nothing to take a result from".to_owned())
        }
        None => extraction_error,
    };
    (result, error)
}

/// The conversation's latencies as Prometheus histograms, labelled by provider kind.
fn record_metrics(stats: &dialtone_agent::stats::AgentStats, setup: &AgentSetup) {
    let samples = [
        (
            "dialtone_agent_voice_to_voice_seconds",
            &setup.llm.1,
            &stats.voice_to_voice,
        ),
        ("dialtone_agent_stt_seconds", &setup.stt.1, &stats.stt),
        (
            "dialtone_agent_llm_first_token_seconds",
            &setup.llm.1,
            &stats.llm_first_token,
        ),
        (
            "dialtone_agent_tts_first_audio_seconds",
            &setup.tts.1,
            &stats.tts_first_audio,
        ),
    ];
    for (name, provider, samples) in samples {
        let histogram = metrics::histogram!(name, "provider" => provider.clone());
        for sample in samples.all() {
            histogram.record(sample.as_secs_f64());
        }
    }
}

async fn next_chat(
    chat: &mut Option<(u64, mpsc::Receiver<Result<ChatEvent, AgentError>>)>,
) -> (u64, Option<Result<ChatEvent, AgentError>>) {
    match chat {
        Some((id, events)) => (*id, events.recv().await),
        None => std::future::pending().await,
    }
}

async fn next_spoken(speaking: &mut Option<Speaking>) -> Option<Result<Spoken, AgentError>> {
    match speaking {
        Some(Speaking {
            synthesis: Synthesis::Piece(audio),
            ..
        }) => audio.recv().await.map(|a| a.map(Spoken::Audio)),
        Some(Speaking {
            synthesis: Synthesis::Line(speech),
            ..
        }) => speech.next().await,
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn run(
    mut inbound: FrameReceiver,
    outbound: FrameSender,
    context: BrainContext,
    setup: AgentSetup,
) {
    let (outcomes, mut outcomes_rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let amd = setup.amd;
    let live = LiveRecognition::new(setup.live_stt.clone(), context.language.clone());
    let mut d = Driver {
        voicemail: false,
        run: Run::new(context, outbound, now, IvrStep::Finished),
        conversation: Conversation::new(setup.conversation.clone()),
        setup,
        chat: None,
        speaking: None,
        to_speak: VecDeque::new(),
        queued: VecDeque::new(),
        outcomes,
        opened: false,
        barged: false,
        answer_watched: false,
        failure: None,
        transferring: None,
        live,
        started: (now, SystemTime::now()),
    };
    let mut duties = Duties::new(now);
    duties.speak_messages_with(d.setup.tts.0.clone());
    // What the callee says before the agent opens is transcribed for answering-machine
    // detection's words by the duties; once it has opened, the conversation's transcripts are.
    duties.listen_with(d.setup.stt.0.clone());
    if !amd {
        d.open(now);
    }
    let mut clock = SilenceClock::new();
    loop {
        d.perform(Instant::now());
        tokio::select! {
            biased;
            frame = inbound.recv() => {
                let Some(frame) = frame else { break };
                let now = Instant::now();
                d.run.speech.handle_caller_frame(now, &frame.samples);
                d.live.frame(now, &frame.samples);
                clock.heard(now);
                d.run.duty_timers(&mut duties, now);
            }
            Some(input) = d.run.context.inputs.recv() => match input {
                BrainInput::Dtmf(digit) => d.key(Instant::now(), digit),
                BrainInput::TransferFailed { sip_status, message, .. } => {
                    d.transfer_failed(Instant::now(), sip_status, &message);
                }
                BrainInput::Ended { .. } => break,
            },
            chunk = next_spoken(&mut d.speaking) => d.speech_chunk(Instant::now(), chunk),
            Some(words) = d.live.next_interim() => {
                tracing::debug!(%words, "interim transcript");
                d.live.interim(words);
            }
            (id, event) = next_chat(&mut d.chat) => {
                let now = Instant::now();
                match event {
                    Some(event) => d.conversation.handle_chat(now, id, event),
                    None => {
                        // The stream closed without its end (a client reports failures
                        // before closing): what came is the answer.
                        d.chat = None;
                        d.conversation.handle_chat(
                            now,
                            id,
                            Ok(ChatEvent::Finished { reason: None, usage: None }),
                        );
                    }
                }
            }
            Some(outcome) = outcomes_rx.recv() => {
                let now = Instant::now();
                match outcome {
                    Outcome::Transcript { utterance, text } => {
                        match &text {
                            Ok(words) => d.run.speech.heard_words(now, words),
                            // The live session failed: a new one for what comes next.
                            Err(_) if d.live.is_open() && !d.voicemail => d.live.open(),
                            Err(_) => {}
                        }
                        d.conversation.handle_transcript(now, utterance, text);
                    }
                    Outcome::Tool { id, answer } => {
                        d.conversation.handle_tool_answer(now, &id, answer);
                    }
                }
            }
            () = until(d.conversation.poll_timeout()) => {
                d.conversation.handle_timeout(Instant::now());
            }
            // The engine's own speech (an apology, a prompt).
            chunk = super::next_chunk(&mut d.run.speaking) => d.run.engine_speech(chunk),
            input = duties.next_input() => d.run.duty_input(&mut duties, input),
            now = clock.silence() => {
                d.run.speech.handle_caller_frame(now, &[0; FRAME_SAMPLES]);
                d.run.duty_timers(&mut duties, now);
            }
        }
        let now = Instant::now();
        while let Some(event) = d.run.speech.poll_event() {
            let engines = d.run.duty(&mut duties, &event);
            if duties.voicemail() && !d.voicemail {
                d.hush();
            }
            if !engines {
                d.speech_event(now, event);
            }
            if d.opened {
                duties.words_from_the_conversation();
            }
        }
        d.run.feed_outbound();
        if d.answer_watched
            && let Some(at) = d.run.outbound.watched_sent_at()
        {
            d.answer_watched = false;
            d.conversation.handle_answer_on_wire(at);
        }
        if d.run.outbound.is_closed() {
            break;
        }
    }
    d.run.finish_duties(duties).await;
    d.finish().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::outbound::PrivateDestinations;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tool server on loopback (plain HTTP/1.1 over TCP), answering by path: `/ok` JSON,
    /// `/broken` 500, `/prose` plain text, `/large` a JSON string 2 bytes over
    /// [`MAX_TOOL_ANSWER`] (its length said), `/endless` a JSON string that never ends (no
    /// length), `/hang` nothing at all.
    async fn tools() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket));
            }
        });
        base
    }

    /// Reads one request (headers, then `Content-Length` bytes of body) and answers it.
    async fn answer(mut socket: tokio::net::TcpStream) {
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let Ok(n) = socket.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buf[..n]);
            if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while request.len() < head_end + length {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let whole = |status: &str, kind: &str, body: &str| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let reply = match path.as_str() {
            "/ok" => whole("200 OK", "application/json", r#"{"free":true}"#),
            "/broken" => whole(
                "500 Internal Server Error",
                "application/json",
                r#"{"oops":1}"#,
            ),
            "/prose" => whole("200 OK", "text/plain", "Monday at ten works."),
            "/large" => whole(
                "200 OK",
                "application/json",
                &format!("\"{}\"", "a".repeat(MAX_TOOL_ANSWER)),
            ),
            "/endless" => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Connection: close\r\n\r\n\"";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = [b'a'; 8192];
                while socket.write_all(&piece).await.is_ok() {}
                return;
            }
            _ => return std::future::pending().await,
        };
        let _ = socket.write_all(reply.as_bytes()).await;
        let _ = socket.shutdown().await;
    }

    fn runner() -> ToolRunner {
        let client =
            outbound::Client::new(PrivateDestinations::All, Duration::from_secs(30)).unwrap();
        ToolRunner::new(client, Arc::from("whsec-test"))
    }

    async fn call(runner: &ToolRunner, url: &str) -> Result<Value, String> {
        runner
            .call(uuid::Uuid::nil(), "check", url, json!({"day": "monday"}))
            .await
    }

    #[tokio::test]
    async fn a_tools_failures_are_answers_the_model_can_speak_about() {
        let base = tools().await;
        let runner = runner();
        assert_eq!(
            runner.timeout,
            Duration::from_secs(10),
            "the contract's 10 s"
        );
        assert_eq!(
            call(&runner, &format!("{base}/ok")).await,
            Ok(json!({"free": true}))
        );
        assert_eq!(
            call(&runner, &format!("{base}/broken")).await,
            Err("the tool answered HTTP 500".into())
        );
        assert_eq!(
            call(&runner, &format!("{base}/prose")).await,
            Err("the tool's answer is not JSON".into())
        );
        for long in ["large", "endless"] {
            assert_eq!(
                call(&runner, &format!("{base}/{long}")).await,
                Err(format!(
                    "the tool's answer is longer than {MAX_TOOL_ANSWER} bytes"
                )),
                "{long}"
            );
        }
        let quick = runner.with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(
            call(&quick, &format!("{base}/hang")).await,
            Err("the tool did not answer within 300 ms".into())
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A provider's failure reaches `result_error` whatever the agent asks for, and keeps a
    /// result extracted from what the caller had said; without a failure, the reasons stand.
    #[test]
    fn a_failure_is_always_on_the_record() {
        let failed = || Some("local answered HTTP 500".to_owned());
        let extracted = || Some(Ok(serde_json::json!({"ok": true})));
        assert_eq!(
            result_and_error(failed(), false, true, None),
            (
                None,
                Some("the conversation failed: local answered HTTP 500".into())
            )
        );
        assert_eq!(
            result_and_error(failed(), true, true, extracted()),
            (
                Some(serde_json::json!({"ok": true})),
                Some("the conversation failed: local answered HTTP 500".into())
            )
        );
        assert_eq!(
            result_and_error(failed(), true, false, None).1,
            Some(
                "the conversation failed before the caller said anything: local answered HTTP 500"
                    .into()
            )
        );
        assert_eq!(result_and_error(None, false, true, None), (None, None));
        assert_eq!(
            result_and_error(None, true, false, None).1,
            Some("the caller said nothing to take a result from".into())
        );
        assert_eq!(
            result_and_error(None, true, true, Some(Err("bad".into()))),
            (None, Some("bad".into()))
        );
        assert_eq!(
            result_and_error(None, true, true, extracted()),
            (Some(serde_json::json!({"ok": true})), None)
        );
    }
}

//! The conversation machine: sans-IO, in the manner of the engine's call machine. It holds the
//! chat history, the transcript and the turn under way, and decides what happens next; the
//! engine's driver performs what it asks ([`Action`]: transcribe, ask the model, speak, run a
//! tool, hang up…) and reports back through the `handle_*` methods, each taking `now`.
//!
//! A turn: the caller's utterance ends → it is transcribed → the model is asked with the
//! history → its text is cut into pieces ([`ClauseSplitter`]) and each piece is spoken as it
//! completes (a segment of its own, or with a synthesiser that streams a whole line, the next
//! part of the line's one segment), so the first audio leaves before the model has finished → tool calls run after
//! the text (at most [`MAX_TOOL_ROUNDS`] rounds a turn; a filler phrase is said when a tool
//! takes over [`FILLER_AFTER`]) → the model is asked again with the tools' answers.
//!
//! Barge-in cancels the model and the synthesis and cuts the agent's line to what was played
//! (`interrupted`), by [`heard_part`]: the words the synthesiser timed within the audio played
//! where it gives word times (Cartesia, ElevenLabs), else the played share of the text; the
//! caller's new utterance then starts the next turn. An utterance that
//! comes while the agent speaks and did not barge in (shorter than the agent's minimum) is a
//! backchannel: it is kept in the transcript and the history but starts no turn.
//!
//! Preemptive generation: with a live recogniser the driver passes the words recognised so far
//! when the utterance ends ([`Conversation::handle_early_words`]); when nothing else is under
//! way the model is asked on them at once, its answer held back. The final transcript decides:
//! the same words (case and punctuation aside) and the held answer is the turn's (the time of
//! recognition saved), otherwise it is cancelled and the model asked on the final words.
//!
//! The caller's key presses (DTMF) are caller input too: digits pressed with no pause of
//! [`KEYS_PAUSE`] between them (or ended by `#`) become one caller message, `[the caller
//! pressed 1 2 3]`, which the model answers like words (so "press 1 to confirm" works); with
//! `mask_dtmf` the transcript line shows `****` instead (the model still hears the keys).
//!
//! Failure is never dead air: a provider error is retried once where nothing has been said
//! of the answer yet and the error may pass, else [`Action::Fail`] (the driver apologises with
//! the local synthesiser and ends the call with `brain_error`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dialtone_model::{EndReason, TransferDestination};
use serde_json::{Value, json};

use crate::chat::{ChatEvent, ChatMessage, ChatRequest, ToolCall};
use crate::clause::ClauseSplitter;
use crate::error::AgentError;
use crate::provider::ENGINE_RATE;
use crate::provider::SpokenWord;
use crate::stats::AgentStats;
use crate::tools::{ToolKind, Toolbox};

/// Most rounds of tool calls in one turn; the round after the last is asked without tools.
pub const MAX_TOOL_ROUNDS: u32 = 3;
/// A tool running longer than this gets a filler phrase, once a round.
pub const FILLER_AFTER: Duration = Duration::from_millis(1500);
/// The filler phrase.
pub const FILLER: &str = "One moment, please.";
/// The pause after the caller's last key press that ends the keys they meant.
pub const KEYS_PAUSE: Duration = Duration::from_millis(1200);

/// What a conversation is set up with.
#[derive(Debug, Clone)]
pub struct ConversationConfig {
    /// The system message (persona, instructions and context, placeholders filled).
    pub system_prompt: String,
    /// What the agent says first once a person answers (placeholders filled); `None`: the
    /// model opens.
    pub first_message: Option<String>,
    /// The functions offered.
    pub toolbox: Toolbox,
    /// Where `transfer_call` may go.
    pub destinations: Vec<TransferDestination>,
    /// Barge-in is off: an utterance during the agent's speech is answered once it finishes
    /// (with barge-in on, such an utterance was too short to interrupt: a backchannel).
    pub barge_in_off: bool,
    /// The caller's key presses are shown as `****` in the transcript.
    pub mask_dtmf: bool,
    /// The synthesiser speaks a whole line in one stream ([`StreamingTextToSpeech`]): the
    /// pieces of an agent line are one segment, continued piece by piece
    /// ([`Action::Speak`]) and closed with [`Action::EndSpeech`]; otherwise each piece is a
    /// segment of its own.
    ///
    /// [`StreamingTextToSpeech`]: crate::provider::StreamingTextToSpeech
    pub speech_per_line: bool,
}

/// What the driver is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Transcribe this utterance (16 kHz) and report with [`Conversation::handle_transcript`].
    Transcribe {
        /// The utterance's id.
        utterance: u64,
        /// Its audio.
        audio: Vec<i16>,
    },
    /// Ask the model; report events with [`Conversation::handle_chat`]. Replaces any request
    /// under way (whose events are then ignored).
    Chat {
        /// The request's id.
        request_id: u64,
        /// The request.
        request: ChatRequest,
    },
    /// Stop the model's answer under way.
    CancelChat,
    /// Synthesise `text` after the segments before it, and play it marked with `segment`
    /// (with `speech_per_line`, a later piece of the same segment continues its synthesis);
    /// report audio with [`Conversation::handle_speech_audio`], the words' times with
    /// [`Conversation::handle_speech_words`], the synthesis' end with
    /// [`Conversation::handle_speech_done`], the last sample played with
    /// [`Conversation::handle_played`].
    Speak {
        /// The piece's id.
        segment: u64,
        /// What to say.
        text: String,
    },
    /// The text of `segment` is all there (with `speech_per_line`): its synthesis may end.
    EndSpeech {
        /// The segment.
        segment: u64,
    },
    /// Drop every piece not yet synthesised or played, and stop the synthesis under way
    /// (the speech loop's playout is cleared by the driver).
    StopSpeaking,
    /// POST a tool call; report with [`Conversation::handle_tool_answer`].
    CallTool {
        /// The model's id for the call.
        id: String,
        /// The tool.
        name: String,
        /// Where it is served.
        url: String,
        /// Its arguments.
        arguments: Value,
    },
    /// Send these digits (RFC 4733); report with [`Conversation::handle_tool_answer`].
    SendDtmf {
        /// The model's id for the call.
        id: String,
        /// The digits.
        digits: String,
    },
    /// Transfer the caller; report with [`Conversation::handle_tool_answer`].
    Transfer {
        /// The model's id for the call.
        id: String,
        /// Where.
        destination: TransferDestination,
    },
    /// End the call (everything queued has been heard).
    HangUp {
        /// The end reason.
        reason: EndReason,
    },
    /// A provider failed for good: apologise and end the call with `brain_error`.
    Fail {
        /// What failed.
        error: AgentError,
    },
}

/// A transcript line as the machine keeps it (its time an [`Instant`]; the driver turns it
/// into wall-clock time).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// `agent`, `caller` or `tool`.
    pub role: &'static str,
    /// What was said (for an agent line cut short: what was heard).
    pub text: String,
    /// When.
    pub at: Instant,
    /// The caller cut the line short.
    pub interrupted: bool,
    /// A tool line: the tool.
    pub name: Option<String>,
    /// A tool line: its arguments.
    pub arguments: Option<Value>,
    /// A tool line: its answer.
    pub result: Option<Value>,
}

impl Line {
    fn said(role: &'static str, text: String, at: Instant) -> Self {
        Self {
            role,
            text,
            at,
            interrupted: false,
            name: None,
            arguments: None,
            result: None,
        }
    }
}

/// A piece of agent speech (with `speech_per_line`, a whole line, its text growing as the
/// model writes it).
#[derive(Debug)]
struct Segment {
    id: u64,
    text: String,
    /// More text may come (with `speech_per_line`, until the line is complete).
    open: bool,
    /// The transcript line and history message it belongs to (the filler has no message: the
    /// model's wire wants tool answers right after their calls).
    line: usize,
    message: Option<usize>,
    /// When synthesis was asked.
    asked: Instant,
    /// Samples synthesised so far, and whether that is all.
    samples: usize,
    synthesised: bool,
    /// Whether its last sample was played.
    played: bool,
    /// Whether the synthesis was retried once already.
    retried: bool,
    /// Its words' times, from synthesisers that give them.
    words: Vec<SpokenWord>,
}

/// A line a barge-in cut: its pieces still queued and what was heard of each.
#[derive(Debug)]
struct CutLine {
    line: usize,
    message: Option<usize>,
    queued: Vec<String>,
    heard: Vec<String>,
}

/// A model request under way.
#[derive(Debug)]
struct Request {
    id: u64,
    asked: Instant,
    request: ChatRequest,
    first_token: bool,
    splitter: ClauseSplitter,
    /// The transcript line and history message of its text, once it has some.
    line: Option<(usize, usize)>,
    calls: Vec<ToolCall>,
    retried: bool,
}

impl Request {
    /// How long the model took to its first token, the first time something of its answer
    /// comes (`None` after that).
    fn first_token_after(&mut self, now: Instant) -> Option<Duration> {
        (!std::mem::replace(&mut self.first_token, true))
            .then(|| now.saturating_duration_since(self.asked))
    }
}

/// A model request asked on an utterance's interim words, before its final transcript.
#[derive(Debug)]
struct Early {
    utterance: u64,
    guess: String,
    id: u64,
    asked: Instant,
    request: ChatRequest,
    /// Its events so far, held until the final transcript decides.
    held: Vec<(Instant, Result<ChatEvent, AgentError>)>,
}

/// Tool calls of a round awaiting their answers.
#[derive(Debug)]
struct ToolRound {
    waiting: Vec<String>,
    started: Instant,
    filler_said: bool,
}

/// The turn under way.
#[derive(Debug, Default)]
struct Turn {
    /// When the caller's utterance that started it ended (none for the opening).
    speech_end: Option<Instant>,
    /// Whether its first audio has been counted.
    answered: bool,
    request: Option<Request>,
    tools: Option<ToolRound>,
    rounds: u32,
    /// Caller messages that came while tool calls were out: they join the history after the
    /// tools' answers (the model's wire wants those right after its calls).
    deferred: Vec<String>,
}

/// An utterance out for transcription.
#[derive(Debug)]
struct Utterance {
    id: u64,
    /// When the endpointing ended it (and it went to speech recognition).
    ended: Instant,
    /// When its last voiced frame came: where the caller stopped speaking.
    spoke_until: Instant,
    audio: Vec<i16>,
    retried: bool,
    /// It came while the agent spoke.
    over_agent: bool,
}

/// One call's conversation.
#[derive(Debug)]
pub struct Conversation {
    config: ConversationConfig,
    history: Vec<ChatMessage>,
    lines: Vec<Line>,
    actions: VecDeque<Action>,
    next_id: u64,
    utterances: Vec<Utterance>,
    turn: Turn,
    segments: VecDeque<Segment>,
    /// Tool calls not yet answered, and their transcript lines.
    tool_lines: Vec<(String, usize)>,
    /// Answer the caller once the agent's speech has been heard (barge-in off).
    reply_after_speech: bool,
    /// The caller cut the agent off and their words are not transcribed yet: if they turn out
    /// to be none, the agent goes on rather than waiting in silence.
    resume_after_barge_in: bool,
    hang_up_after_speech: Option<EndReason>,
    /// The end of the caller's speech that the answer now queued replies to, until its first
    /// audio is on the wire (voice-to-voice).
    answer_from: Option<Instant>,
    /// The caller's key presses not yet passed on, and when the last came.
    keys: Option<(String, Instant)>,
    /// A request asked on interim words; once the final words matched, the one to adopt.
    early: Option<Early>,
    adopting: Option<Early>,
    stats: AgentStats,
    over: bool,
}

impl Conversation {
    /// A conversation about to start (the call is not answered yet).
    pub fn new(config: ConversationConfig) -> Self {
        let system = ChatMessage::system(config.system_prompt.clone());
        Self {
            config,
            history: vec![system],
            lines: Vec::new(),
            actions: VecDeque::new(),
            next_id: 1,
            utterances: Vec::new(),
            turn: Turn::default(),
            segments: VecDeque::new(),
            tool_lines: Vec::new(),
            reply_after_speech: false,
            resume_after_barge_in: false,
            hang_up_after_speech: None,
            answer_from: None,
            keys: None,
            early: None,
            adopting: None,
            stats: AgentStats::default(),
            over: false,
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Conversation::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let filler = self
            .turn
            .tools
            .as_ref()
            .filter(|round| !round.filler_said)
            .map(|round| round.started + FILLER_AFTER);
        let keys = self.keys.as_ref().map(|(_, last)| *last + KEYS_PAUSE);
        match (filler, keys) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The transcript so far.
    pub fn transcript(&self) -> impl Iterator<Item = &Line> {
        // An agent line nothing of which was heard is left out.
        self.lines
            .iter()
            .filter(|l| !(l.role == "agent" && l.interrupted && l.text.is_empty()))
    }

    /// The chat history so far (system message first).
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// The figures so far.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// Whether the agent has speech queued, being synthesised or playing.
    pub fn agent_speaking(&self) -> bool {
        self.segments.iter().any(|s| !s.played)
    }

    /// A person is on the line (answered, or AMD said human): the agent opens, with its first
    /// message or by asking the model.
    pub fn handle_answered(&mut self, now: Instant) {
        if self.over {
            return;
        }
        self.stats.turns += 1;
        match self.config.first_message.clone() {
            Some(text) => {
                let (line, message) = self.agent_line(now);
                self.speak(now, text, line, Some(message));
                self.end_speech(line);
            }
            None => self.ask(now),
        }
    }

    /// The caller finished an utterance (its audio at 16 kHz), its last voiced frame at
    /// `spoke_until` (the turn's voice-to-voice time counts from there); `over_agent` when the
    /// agent was speaking at the time and was not interrupted.
    pub fn handle_utterance(
        &mut self,
        now: Instant,
        spoke_until: Instant,
        audio: Vec<i16>,
        over_agent: bool,
    ) {
        if self.over {
            return;
        }
        let id = self.id();
        self.actions.push_back(Action::Transcribe {
            utterance: id,
            audio: audio.clone(),
        });
        self.utterances.push(Utterance {
            id,
            ended: now,
            spoke_until: spoke_until.min(now),
            audio,
            retried: false,
            over_agent,
        });
    }

    /// Speech recognition's answer for `utterance`.
    pub fn handle_transcript(
        &mut self,
        now: Instant,
        utterance: u64,
        text: Result<String, AgentError>,
    ) {
        let Some(index) = self.utterances.iter().position(|u| u.id == utterance) else {
            return;
        };
        if self.over {
            return;
        }
        let text = match text {
            Ok(text) => text,
            Err(error) => {
                let u = self.utterances.get_mut(index);
                if let Some(u) = u.filter(|u| error.is_retryable() && !u.retried) {
                    u.retried = true;
                    self.actions.push_back(Action::Transcribe {
                        utterance,
                        audio: u.audio.clone(),
                    });
                } else {
                    self.fail(error);
                }
                return;
            }
        };
        let u = self.utterances.remove(index);
        self.stats.stt.add(now.saturating_duration_since(u.ended));
        let text = text.trim().to_owned();
        if let Some(early) = self.early.take() {
            // The final words decide the request asked on the interim ones.
            if early.utterance == u.id && same_words(&early.guess, &text) {
                self.adopting = Some(early);
            } else {
                self.actions.push_back(Action::CancelChat);
            }
        }
        if text.is_empty() {
            self.resume_after_no_words(now);
            return;
        }
        self.caller_said(
            now,
            text.clone(),
            text,
            (u.ended, u.spoke_until),
            u.over_agent,
        );
        if self.adopting.take().is_some() {
            // The words matched but no turn started on them (the conversation moved on).
            self.actions.push_back(Action::CancelChat);
        }
    }

    /// The words recognised so far of the utterance just ended (its last interim transcript),
    /// before the final transcript: when nothing else is under way the model is asked on them
    /// now and its answer held until the final transcript decides.
    pub fn handle_early_words(&mut self, now: Instant, text: &str) {
        let text = text.trim();
        let idle = !self.over
            && self.early.is_none()
            && self.utterances.len() == 1
            && self.turn.request.is_none()
            && self.turn.tools.is_none()
            && !self.agent_speaking()
            && self.hang_up_after_speech.is_none()
            && !self.reply_after_speech;
        let Some(u) = self.utterances.first().filter(|u| idle && !u.over_agent) else {
            return;
        };
        if same_words(text, "") {
            return;
        }
        let mut messages = self.history.clone();
        messages.push(ChatMessage::user(text));
        let request = ChatRequest {
            messages,
            tools: self.config.toolbox.specs().to_vec(),
        };
        let utterance = u.id;
        let id = self.id();
        self.actions.push_back(Action::Chat {
            request_id: id,
            request: request.clone(),
        });
        self.early = Some(Early {
            utterance,
            guess: text.to_owned(),
            id,
            asked: now,
            request,
            held: Vec::new(),
        });
    }

    /// The caller pressed `digit` (RFC 4733 or in-band).
    pub fn handle_dtmf(&mut self, now: Instant, digit: char) {
        if self.over {
            return;
        }
        let keys = self.keys.get_or_insert_with(|| (String::new(), now));
        keys.0.push(digit);
        keys.1 = now;
        if digit == '#' {
            self.pass_keys(now);
        }
    }

    /// The keys pressed so far go to the model as the caller's message.
    fn pass_keys(&mut self, now: Instant) {
        let Some((digits, _)) = self.keys.take() else {
            return;
        };
        let spaced: Vec<String> = digits.chars().map(String::from).collect();
        let said = format!("[the caller pressed {}]", spaced.join(" "));
        let shown = match self.config.mask_dtmf {
            true => "[the caller pressed ****]".to_owned(),
            false => said.clone(),
        };
        self.caller_said(now, said, shown, (now, now), false);
    }

    /// What cut the agent off turned out too short to be an utterance (a click, a cough the
    /// speech loop dropped): the agent goes on, as after one transcribed as no words.
    pub fn handle_dropped_start(&mut self, now: Instant) {
        self.resume_after_no_words(now);
    }

    /// What cut the agent off was no words (a cough, noise): it goes on.
    fn resume_after_no_words(&mut self, now: Instant) {
        if std::mem::take(&mut self.resume_after_barge_in) {
            self.start_turn(now, None);
        }
    }

    /// The caller said `text` (shown as `shown` in the transcript) at `at`, having stopped
    /// speaking at `spoke_until`; `over_agent` when it came while the agent spoke and did not
    /// cut it off.
    fn caller_said(
        &mut self,
        now: Instant,
        text: String,
        shown: String,
        (at, spoke_until): (Instant, Instant),
        over_agent: bool,
    ) {
        self.lines.push(Line::said("caller", shown, at));
        self.resume_after_barge_in = false;
        let backchannel = over_agent && !self.config.barge_in_off;
        let answering = self.turn.tools.is_some()
            || self
                .turn
                .request
                .as_ref()
                .is_some_and(|r| r.line.is_some() || !r.calls.is_empty());
        if answering {
            // The answer's message (and its tool calls and their answers) come first in the
            // history; these words join it after them.
            self.turn.deferred.push(text);
            if !backchannel && self.hang_up_after_speech.is_none() {
                self.reply_after_speech = true;
            }
            return;
        }
        self.history.push(ChatMessage::user(text));
        if backchannel {
            return;
        }
        if self.agent_speaking() || self.hang_up_after_speech.is_some() {
            // Barge-in off: the agent finishes, then answers.
            self.reply_after_speech = self.hang_up_after_speech.is_none();
            return;
        }
        if let Some(request) = &self.turn.request
            && request.line.is_none()
        {
            // The model had not said anything of its answer yet: ask again with this too.
            self.actions.push_back(Action::CancelChat);
        }
        self.start_turn(now, Some(spoke_until));
    }

    /// An event of the model's answer to `request_id`.
    pub fn handle_chat(
        &mut self,
        now: Instant,
        request_id: u64,
        event: Result<ChatEvent, AgentError>,
    ) {
        if let Some(early) = self.early.as_mut().filter(|e| e.id == request_id) {
            early.held.push((now, event));
            return;
        }
        if self.over
            || self
                .turn
                .request
                .as_ref()
                .is_none_or(|r| r.id != request_id)
        {
            return;
        }
        match event {
            Ok(ChatEvent::TextDelta(delta)) => {
                let pieces = match self.turn.request.as_mut() {
                    Some(r) => {
                        if let Some(waited) = r.first_token_after(now) {
                            self.stats.llm_first_token.add(waited);
                        }
                        r.splitter.push(&delta)
                    }
                    None => Vec::new(),
                };
                for piece in pieces {
                    self.speak_answer(now, piece);
                }
            }
            Ok(ChatEvent::ToolCalls(calls)) => {
                if let Some(r) = self.turn.request.as_mut() {
                    if let Some(waited) = r.first_token_after(now) {
                        self.stats.llm_first_token.add(waited);
                    }
                    r.calls.extend(calls);
                }
            }
            Ok(ChatEvent::Finished { .. }) => self.finish_request(now),
            Err(error) => {
                let retry = self.turn.request.as_mut().filter(|r| {
                    error.is_retryable() && !r.retried && r.line.is_none() && r.calls.is_empty()
                });
                match retry {
                    Some(r) => {
                        r.retried = true;
                        r.asked = now;
                        r.first_token = false;
                        r.splitter = ClauseSplitter::new();
                        self.actions.push_back(Action::Chat {
                            request_id: r.id,
                            request: r.request.clone(),
                        });
                    }
                    None => self.fail(error),
                }
            }
        }
    }

    /// Audio of `segment` arrived from the synthesiser (`samples` long) and was queued. Returns
    /// `true` when it is the first audio answering the caller's utterance: the driver reports
    /// when its first sample reaches the wire ([`Conversation::handle_answer_on_wire`]), where
    /// voice-to-voice ends.
    pub fn handle_speech_audio(&mut self, now: Instant, segment: u64, samples: usize) -> bool {
        let Some(s) = self.segments.iter_mut().find(|s| s.id == segment) else {
            return false;
        };
        let mut answers = false;
        if s.samples == 0 && samples > 0 {
            self.stats
                .tts_first_audio
                .add(now.saturating_duration_since(s.asked));
            if !self.turn.answered {
                self.turn.answered = true;
                self.answer_from = self.turn.speech_end;
                answers = self.answer_from.is_some();
            }
        }
        s.samples += samples;
        answers
    }

    /// The first audio of the answer ([`Conversation::handle_speech_audio`]) went out on the
    /// wire at `at`: voice-to-voice is counted from the caller's last voiced frame to here.
    pub fn handle_answer_on_wire(&mut self, at: Instant) {
        if let Some(end) = self.answer_from.take() {
            self.stats
                .voice_to_voice
                .add(at.saturating_duration_since(end));
        }
    }

    /// The synthesiser timed these words of `segment` (from the start of its audio).
    pub fn handle_speech_words(&mut self, segment: u64, words: Vec<SpokenWord>) {
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == segment) {
            s.words.extend(words);
        }
    }

    /// The synthesis of `segment` ended: all its audio is queued, or it failed.
    pub fn handle_speech_done(
        &mut self,
        now: Instant,
        segment: u64,
        outcome: Result<(), AgentError>,
    ) {
        let Some(s) = self.segments.iter_mut().find(|s| s.id == segment) else {
            return;
        };
        match outcome {
            Ok(()) => s.synthesised = true,
            Err(error) if error.is_retryable() && !s.retried && s.samples == 0 => {
                s.retried = true;
                s.asked = now;
                s.words.clear();
                let (text, ended) = (s.text.clone(), !s.open);
                self.actions.push_back(Action::Speak { segment, text });
                if ended && self.config.speech_per_line {
                    self.actions.push_back(Action::EndSpeech { segment });
                }
            }
            Err(error) => self.fail(error),
        }
    }

    /// The last sample of `segment` was played.
    pub fn handle_played(&mut self, now: Instant, segment: u64) {
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == segment) {
            s.played = true;
        }
        while self.segments.front().is_some_and(|s| s.played) {
            self.segments.pop_front();
        }
        self.after_speech(now);
    }

    /// The caller cut the agent off: `segment` (if one was playing) had `played` samples
    /// heard. Everything later is dropped; the lines are cut to what was heard.
    pub fn handle_barge_in(&mut self, now: Instant, segment: Option<u64>, played: usize) {
        if self.over || !self.agent_speaking() && self.turn.request.is_none() {
            return;
        }
        self.stats.interruptions += 1;
        self.resume_after_barge_in = true;
        if self.turn.request.take().is_some() {
            self.actions.push_back(Action::CancelChat);
        }
        self.actions.push_back(Action::StopSpeaking);
        // What each affected line keeps: what it said before the queued segments (played and
        // gone), the segments played whole, and the heard part of the one cut.
        let mut affected: Vec<CutLine> = Vec::new();
        for s in self.segments.drain(..) {
            let heard = if s.played {
                s.text.clone()
            } else if Some(s.id) == segment {
                heard_part(&s.text, played, s.samples, s.synthesised, &s.words)
            } else {
                String::new()
            };
            match affected.iter_mut().find(|a| a.line == s.line) {
                Some(a) => {
                    a.queued.push(s.text);
                    a.heard.push(heard);
                }
                None => affected.push(CutLine {
                    line: s.line,
                    message: s.message,
                    queued: vec![s.text],
                    heard: vec![heard],
                }),
            }
        }
        for CutLine {
            line,
            message,
            queued,
            heard,
        } in affected
        {
            let queued = queued.join(" ");
            let cut = |said: &str| {
                let before = said
                    .get(..said.len().saturating_sub(queued.len()))
                    .unwrap_or_default()
                    .trim_end();
                std::iter::once(before)
                    .chain(heard.iter().map(String::as_str))
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            if let Some(l) = self.lines.get_mut(line) {
                l.text = cut(&l.text);
                l.interrupted = true;
            }
            if let Some(m) = message.and_then(|m| self.history.get_mut(m)) {
                m.content = m.content.as_deref().map(cut).filter(|t| !t.is_empty());
            }
        }
        // Calls still out are answered for the model: its wire wants every call answered.
        let waiting = self
            .turn
            .tools
            .take()
            .map(|r| r.waiting)
            .unwrap_or_default();
        for id in waiting {
            let result = json!({"error": "the caller interrupted before the answer came"});
            self.record_tool_result(&id, &result);
            self.history.push(ChatMessage::tool(id, result.to_string()));
        }
        self.flush_deferred();
        self.history
            .retain(|m| m.content.is_some() || !m.tool_calls.is_empty() || m.role_is_tool());
        // Indices into the history may have moved: nothing refers to them past this point.
        self.turn = Turn {
            speech_end: Some(now),
            ..Turn::default()
        };
        self.reply_after_speech = false;
        self.hang_up_after_speech = None;
    }

    /// A tool call's answer: its JSON result, or why it failed (the model hears either).
    pub fn handle_tool_answer(&mut self, now: Instant, id: &str, answer: Result<Value, String>) {
        let Some(round) = self.turn.tools.as_mut() else {
            return;
        };
        let Some(at) = round.waiting.iter().position(|w| w == id) else {
            return;
        };
        round.waiting.remove(at);
        let result = match answer {
            Ok(value) => value,
            Err(error) => json!({"error": error}),
        };
        self.record_tool_result(id, &result);
        self.history.push(ChatMessage::tool(id, result.to_string()));
        self.after_tools(now);
    }

    /// Timers: the caller's keys after their pause, the filler phrase of a slow tool.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .keys
            .as_ref()
            .is_some_and(|(_, last)| now >= *last + KEYS_PAUSE)
        {
            self.pass_keys(now);
        }
        let due = self
            .turn
            .tools
            .as_ref()
            .is_some_and(|r| !r.filler_said && now >= r.started + FILLER_AFTER);
        if due && !self.agent_speaking() {
            if let Some(r) = self.turn.tools.as_mut() {
                r.filler_said = true;
            }
            self.lines.push(Line::said("agent", String::new(), now));
            let line = self.lines.len() - 1;
            self.speak(now, FILLER.to_owned(), line, None);
            self.end_speech(line);
        } else if due && let Some(r) = self.turn.tools.as_mut() {
            // Something is being said already: no filler this round.
            r.filler_said = true;
        }
    }

    /// The call ended: nothing more is asked.
    pub fn handle_ended(&mut self) {
        self.over = true;
        self.actions.clear();
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn fail(&mut self, error: AgentError) {
        if self.over {
            return;
        }
        self.over = true;
        self.actions.clear();
        self.actions.push_back(Action::CancelChat);
        self.actions.push_back(Action::StopSpeaking);
        self.actions.push_back(Action::Fail { error });
    }

    fn start_turn(&mut self, now: Instant, speech_end: Option<Instant>) {
        self.turn = Turn {
            speech_end,
            ..Turn::default()
        };
        self.stats.turns += 1;
        self.ask(now);
    }

    /// Asks the model with the history (tools offered while rounds remain).
    fn ask(&mut self, now: Instant) {
        if let Some(early) = self.adopting.take() {
            let n = self.history.len();
            if self.turn.rounds == 0
                && early.request.messages.len() == n
                && early.request.messages.get(..n - 1) == self.history.get(..n - 1)
            {
                self.adopt(early);
                return;
            }
            self.actions.push_back(Action::CancelChat);
        }
        let id = self.id();
        let request = ChatRequest {
            messages: self.history.clone(),
            tools: if self.turn.rounds < MAX_TOOL_ROUNDS {
                self.config.toolbox.specs().to_vec()
            } else {
                Vec::new()
            },
        };
        self.actions.push_back(Action::Chat {
            request_id: id,
            request: request.clone(),
        });
        self.turn.request = Some(Request {
            id,
            asked: now,
            request,
            first_token: false,
            splitter: ClauseSplitter::new(),
            line: None,
            calls: Vec::new(),
            retried: false,
        });
    }

    /// The request asked on the interim words is the turn's: what it said meanwhile is
    /// taken in as if it came now.
    fn adopt(&mut self, early: Early) {
        self.turn.request = Some(Request {
            id: early.id,
            asked: early.asked,
            request: early.request,
            first_token: false,
            splitter: ClauseSplitter::new(),
            line: None,
            calls: Vec::new(),
            retried: false,
        });
        for (at, event) in early.held {
            self.handle_chat(at, early.id, event);
        }
    }

    /// A new agent line and assistant message; their indices.
    fn agent_line(&mut self, now: Instant) -> (usize, usize) {
        self.lines.push(Line::said("agent", String::new(), now));
        self.history.push(ChatMessage::assistant(String::new()));
        (self.lines.len() - 1, self.history.len() - 1)
    }

    /// Speaks a piece of the model's answer, on the answer's line.
    fn speak_answer(&mut self, now: Instant, piece: String) {
        let existing = self.turn.request.as_ref().and_then(|r| r.line);
        let (line, message) = match existing {
            Some(at) => at,
            None => {
                let at = self.agent_line(now);
                if let Some(r) = self.turn.request.as_mut() {
                    r.line = Some(at);
                }
                at
            }
        };
        self.speak(now, piece, line, Some(message));
    }

    /// Says `text` on `line`: a segment of its own, or (with `speech_per_line`) more of the
    /// line's open segment.
    fn speak(&mut self, now: Instant, text: String, line: usize, message: Option<usize>) {
        if let Some(l) = self.lines.get_mut(line) {
            append(&mut l.text, &text);
        }
        if let Some(m) = message.and_then(|m| self.history.get_mut(m)) {
            append(m.content.get_or_insert_with(String::new), &text);
        }
        if let Some(open) = self.segments.iter_mut().find(|s| s.open && s.line == line) {
            append(&mut open.text, &text);
            let segment = open.id;
            self.actions.push_back(Action::Speak { segment, text });
            return;
        }
        let segment = self.id();
        self.segments.push_back(Segment {
            id: segment,
            text: text.clone(),
            open: self.config.speech_per_line,
            line,
            message,
            asked: now,
            samples: 0,
            synthesised: false,
            played: false,
            retried: false,
            words: Vec::new(),
        });
        self.actions.push_back(Action::Speak { segment, text });
    }

    /// `line` has all its text: its open segment (with `speech_per_line`) is closed.
    fn end_speech(&mut self, line: usize) {
        if let Some(open) = self.segments.iter_mut().find(|s| s.open && s.line == line) {
            open.open = false;
            let segment = open.id;
            self.actions.push_back(Action::EndSpeech { segment });
        }
    }

    /// The model's answer is complete: speak the rest, then run its tool calls.
    fn finish_request(&mut self, now: Instant) {
        let Some(mut request) = self.turn.request.take() else {
            return;
        };
        if let Some(rest) = request.splitter.finish() {
            self.turn.request = Some(request);
            self.speak_answer(now, rest);
            let Some(r) = self.turn.request.take() else {
                return;
            };
            request = r;
        }
        if let Some((line, _)) = request.line {
            self.end_speech(line);
        }
        let calls = std::mem::take(&mut request.calls);
        if calls.is_empty() {
            if request.line.is_none() {
                // The model said nothing at all: nothing to hear, nothing to record.
                tracing::debug!("the model's answer was empty");
            }
            self.flush_deferred();
            self.after_speech(now);
            return;
        }
        // The calls belong to the answer's message (or a message of their own).
        match request.line.map(|(_, message)| message) {
            Some(message) => {
                if let Some(m) = self.history.get_mut(message) {
                    m.tool_calls.clone_from(&calls);
                }
            }
            None => self
                .history
                .push(ChatMessage::assistant_calls(None, calls.clone())),
        }
        self.stats.tool_calls += calls.len() as u32;
        self.turn.rounds += 1;
        let mut round = ToolRound {
            waiting: Vec::new(),
            started: now,
            filler_said: false,
        };
        let mut answers: Vec<(String, Value)> = Vec::new();
        for call in calls {
            let arguments = if call.arguments.trim().is_empty() {
                Ok(json!({}))
            } else {
                serde_json::from_str::<Value>(&call.arguments)
            };
            let mut line = Line::said("tool", String::new(), now);
            line.name = Some(call.name.clone());
            let arguments = match arguments {
                Ok(value) if value.is_object() => value,
                _ => {
                    line.arguments = Some(Value::String(call.arguments.clone()));
                    self.lines.push(line);
                    self.tool_lines
                        .push((call.id.clone(), self.lines.len() - 1));
                    answers.push((
                        call.id,
                        json!({"error": "the arguments are not a JSON object"}),
                    ));
                    continue;
                }
            };
            line.arguments = Some(arguments.clone());
            self.lines.push(line);
            self.tool_lines
                .push((call.id.clone(), self.lines.len() - 1));
            match self.config.toolbox.kind(&call.name).cloned() {
                Some(ToolKind::Http(url)) => {
                    round.waiting.push(call.id.clone());
                    self.actions.push_back(Action::CallTool {
                        id: call.id,
                        name: call.name,
                        url,
                        arguments,
                    });
                }
                Some(ToolKind::EndCall) => {
                    self.hang_up_after_speech = Some(EndReason::Completed);
                    answers.push((call.id, json!({"ok": true})));
                }
                Some(ToolKind::SendDtmf) => {
                    let digits = arguments
                        .get("digits")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    if !digits.is_empty()
                        && digits
                            .chars()
                            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
                    {
                        round.waiting.push(call.id.clone());
                        self.actions.push_back(Action::SendDtmf {
                            id: call.id,
                            digits,
                        });
                    } else {
                        answers.push((
                            call.id,
                            json!({"error": "`digits` must be keys 0-9, *, #, A-D"}),
                        ));
                    }
                }
                Some(ToolKind::TransferCall) => {
                    let name = arguments.get("destination").and_then(Value::as_str);
                    match self
                        .config
                        .destinations
                        .iter()
                        .find(|d| Some(d.name.as_str()) == name)
                    {
                        Some(destination) => {
                            round.waiting.push(call.id.clone());
                            self.actions.push_back(Action::Transfer {
                                id: call.id,
                                destination: destination.clone(),
                            });
                        }
                        None => answers.push((call.id, json!({"error": "no such destination"}))),
                    }
                }
                None => answers.push((call.id, json!({"error": "no such tool"}))),
            }
        }
        self.turn.tools = Some(round);
        for (id, result) in answers {
            self.record_tool_result(&id, &result);
            self.history.push(ChatMessage::tool(id, result.to_string()));
        }
        self.after_tools(now);
    }

    /// The caller's words held back while an answer was under way join the history.
    fn flush_deferred(&mut self) {
        for text in std::mem::take(&mut self.turn.deferred) {
            self.history.push(ChatMessage::user(text));
        }
    }

    /// Puts a tool's answer on its transcript line.
    fn record_tool_result(&mut self, id: &str, result: &Value) {
        let line = self
            .tool_lines
            .iter()
            .position(|(call, _)| call == id)
            .map(|at| self.tool_lines.swap_remove(at).1);
        if let Some(line) = line.and_then(|at| self.lines.get_mut(at)) {
            line.result = Some(result.clone());
        }
    }

    /// Once every tool of the round has answered: hang up after the goodbye, or ask again.
    fn after_tools(&mut self, now: Instant) {
        if self
            .turn
            .tools
            .as_ref()
            .is_some_and(|r| !r.waiting.is_empty())
        {
            return;
        }
        self.turn.tools = None;
        self.flush_deferred();
        if self.hang_up_after_speech.is_some() {
            self.after_speech(now);
            return;
        }
        self.ask(now);
    }

    /// When nothing more is to be said: hang up if asked, or answer a caller who spoke
    /// while the agent did.
    fn after_speech(&mut self, now: Instant) {
        if self.agent_speaking() || self.turn.request.is_some() || self.turn.tools.is_some() {
            return;
        }
        if let Some(reason) = self.hang_up_after_speech.take() {
            self.over = true;
            self.actions.push_back(Action::HangUp { reason });
            return;
        }
        if std::mem::take(&mut self.reply_after_speech) {
            self.start_turn(now, None);
        }
    }
}

impl ChatMessage {
    fn role_is_tool(&self) -> bool {
        self.role == crate::chat::Role::Tool
    }
}

/// Adds `piece` to `text` with a space between.
/// Whether two transcripts have the same words, case and punctuation aside.
fn same_words(a: &str, b: &str) -> bool {
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric())
                    .flat_map(char::to_lowercase)
                    .collect::<String>()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    words(a) == words(b)
}

fn append(text: &mut String, piece: &str) {
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(piece);
}

/// The words of `text` heard when `played` of its `samples` (16 kHz) were played (all
/// synthesised, or `samples` so far): the one policy for what an interrupted line keeps.
///
/// With the synthesiser's word times (`words`, from the start of the audio), as many of the
/// text's words as the timed words whose audio ended within what was played (counted off the
/// text's own words, which the service may spell otherwise). Without them, the whole words
/// within the played share of its characters.
pub fn heard_part(
    text: &str,
    played: usize,
    samples: usize,
    synthesised: bool,
    words: &[SpokenWord],
) -> String {
    if samples == 0 || played == 0 {
        return String::new();
    }
    if synthesised && played >= samples {
        return text.to_owned();
    }
    if !words.is_empty() {
        let played = Duration::from_secs_f64(played as f64 / f64::from(ENGINE_RATE));
        let heard = words.iter().take_while(|w| w.end <= played).count();
        return text
            .split_whitespace()
            .take(heard)
            .collect::<Vec<_>>()
            .join(" ");
    }
    let chars = text.chars().count();
    let heard = (chars as u128 * played.min(samples) as u128 / samples as u128) as usize;
    let mut out = String::new();
    let mut count = 0;
    for word in text.split_inclusive(' ') {
        count += word.chars().count();
        if count > heard + 1 {
            break;
        }
        out.push_str(word);
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests;

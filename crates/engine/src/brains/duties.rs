//! The engine's duties every brain shares, whatever brain runs the call:
//!
//! * **Answering-machine detection's verdicts** go on the record with their explanation
//!   (`answered_by`, `answered_by_reason`); a later `machine` verdict (a beep or voicemail words
//!   after a person-like "Hello?") replaces an earlier one.
//! * **The voicemail action** once a machine answered: `hangup` ends the call (`voicemail`);
//!   `leave_message` silences the brain, turns barge-in off (the greeting and its beep must
//!   never cut the message), synthesises the message at once (in the agent's own voice for
//!   `builtin:agent`, else the engine's espeak-ng), and plays it when its cue comes —
//!   the end of the beep, else the greeting's final silence, else a time limit — with
//!   [`MESSAGE_LEAD`] of silence before it; a beep heard while a message started on silence
//!   plays starts the message again after it (once). The call hangs up when the message has
//!   played (`voicemail_message`); the transcript holds what was actually played.
//! * **Voicemail words**: what the callee says while the detector listens is transcribed and
//!   its voicemail words given to it — with `builtin:agent`'s own recogniser until its
//!   conversation takes over, or with an `stt` set on an agent of another brain.
//! * **The silence guard**: "Are you still there?" once, then a hang-up (`silence_timeout`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_agent::{SpeechToText, TextToSpeech, heard_part};
use dialtone_model::{AmdExplanation, MessageCue};
use dialtone_speech::{AnsweredBy, BargeIn, SpeechEvent};
use dialtone_storage::EndReason;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{BrainContext, BrainRequest, Run, STILL_THERE, Synthesis, Voicemail, line};

/// Silence before a voicemail message (after the beep's end the recording has begun: a short
/// breath, so the first word is whole on every system).
const MESSAGE_LEAD: Duration = Duration::from_millis(250);
/// How long a message waits for its cue (a beep, or the greeting's final silence) before it
/// starts anyway: greetings that never pause (an IVR menu) do not keep the call forever.
const CUE_WAIT: Duration = Duration::from_secs(30);
/// The mark after a voicemail message.
const MESSAGE_MARK: &str = "voicemail-message";
/// Samples per millisecond at 16 kHz.
const SAMPLES_PER_MS: usize = 16;

/// What the duties waited for.
#[derive(Debug)]
pub(super) enum DutyInput {
    /// A chunk of the voicemail message's audio, or the end of its synthesis.
    MessageAudio(Option<Vec<i16>>),
    /// A transcript of what the callee said, for answering-machine detection.
    Heard(String),
}

/// Where the voicemail message is.
#[derive(Debug, Default)]
enum Message {
    /// No machine to leave one to (yet).
    #[default]
    None,
    /// A machine answered: the message is synthesised and waits for its cue.
    AwaitingCue {
        /// Since when.
        since: Instant,
    },
    /// The message is playing.
    Playing {
        /// What it waited for.
        cue: MessageCue,
        /// Whether it was started again after a late beep.
        restarted: bool,
        /// Its line in the transcript.
        line: usize,
    },
    /// The message has played; the call hangs up.
    Done,
}

/// The message's audio as it is synthesised, kept whole for a second start.
#[derive(Debug, Default)]
struct MessageAudio {
    /// Its synthesis, while under way.
    synthesis: Option<Synthesis>,
    /// The audio so far.
    samples: Vec<i16>,
    /// Whether the synthesis has ended.
    complete: bool,
    /// Whether it ended by failing (what came is all there is).
    failed: bool,
    /// Samples queued to the playout (the lead included), since the last start.
    queued: usize,
}

/// Writes a call's verdicts in order, off the speech path (a commit must not hold up the
/// audio); the last one is on the record before the brain's task ends ([`Run::finish_duties`]
/// waits for it), and a brain task cut short by the call's end takes its writer down with it
/// (no verdict is written after the call's final status).
#[derive(Debug)]
struct VerdictRecorder {
    verdicts: mpsc::UnboundedSender<(AnsweredBy, AmdExplanation)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for VerdictRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl VerdictRecorder {
    fn start(context: &BrainContext) -> Self {
        let (verdicts, mut rx) = mpsc::unbounded_channel::<(AnsweredBy, AmdExplanation)>();
        let (storage, call_id) = (context.storage.clone(), context.call_id);
        let task = tokio::spawn(
            async move {
                while let Some((who, why)) = rx.recv().await {
                    if let Err(error) = storage.set_answered_by(call_id, who, &why).await {
                        tracing::error!(%error, "could not record who answered");
                    }
                }
            }
            .in_current_span(),
        );
        Self { verdicts, task }
    }
}

/// The engine's duties of one call.
#[derive(Debug)]
pub(super) struct Duties {
    /// When the call was answered (the detector's zero).
    answered: Instant,
    /// Started with the first verdict.
    recorder: Option<VerdictRecorder>,
    /// The last verdict and its explanation, as recorded.
    verdict: Option<(AnsweredBy, AmdExplanation)>,
    message: Message,
    audio: MessageAudio,
    /// The silence guard asked "are you still there?" once already.
    prompted: bool,
    /// The voice of the voicemail message: the agent's own, when it has one (`builtin:agent`);
    /// else the engine's.
    message_voice: Option<Arc<dyn TextToSpeech>>,
    /// The recogniser the brain brings for answering-machine detection's words (`builtin:agent`'s
    /// own); else the context's `amd_listener`.
    listener: Option<Arc<dyn SpeechToText>>,
    /// The brain's conversation transcribes what the callee says now, and hands its words to
    /// the detector itself (`builtin:agent` once it has opened).
    words_elsewhere: bool,
    /// Transcripts of what the callee said while answering-machine detection listens, for its
    /// voicemail words.
    heard: (
        mpsc::UnboundedSender<String>,
        mpsc::UnboundedReceiver<String>,
    ),
}

impl Duties {
    /// The duties of a call answered at `answered`.
    pub(super) fn new(answered: Instant) -> Self {
        Self {
            answered,
            recorder: None,
            verdict: None,
            message: Message::None,
            audio: MessageAudio::default(),
            prompted: false,
            message_voice: None,
            listener: None,
            words_elsewhere: false,
            heard: mpsc::unbounded_channel(),
        }
    }

    /// Transcribes what the callee says, for answering-machine detection's words, with `stt`
    /// (the brain's own recogniser).
    pub(super) fn listen_with(&mut self, stt: Arc<dyn SpeechToText>) {
        self.listener = Some(stt);
    }

    /// From now on the brain's conversation transcribes the callee and gives the detector its
    /// words: no second transcription here.
    pub(super) fn words_from_the_conversation(&mut self) {
        self.words_elsewhere = true;
    }

    /// Leaves voicemail messages in `voice` (the agent's synthesiser) rather than the engine's.
    pub(super) fn speak_messages_with(&mut self, voice: Arc<dyn TextToSpeech>) {
        self.message_voice = Some(voice);
    }

    /// Whether the engine is leaving a voicemail message (waiting for its cue or playing it):
    /// the brain is silent meanwhile.
    pub(super) fn voicemail(&self) -> bool {
        !matches!(self.message, Message::None)
    }

    /// The next thing the duties wait for: a chunk of the message's audio (`None` when its
    /// synthesis ended) or a transcript of the callee; pending while neither can come.
    pub(super) async fn next_input(&mut self) -> DutyInput {
        let message = async {
            match &mut self.audio.synthesis {
                Some(rx) => match rx.recv().await {
                    Some(Ok(audio)) => Some(audio),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the voicemail message's synthesis failed");
                        self.audio.failed = true;
                        None
                    }
                    None => None,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = message => DutyInput::MessageAudio(chunk),
            // The sender lives in `self`: the channel never closes while this is polled.
            Some(words) = self.heard.1.recv() => DutyInput::Heard(words),
        }
    }

    /// Puts the verdict on the record (in order, without waiting for the commit).
    fn record_verdict(&mut self, context: &BrainContext) {
        if let Some(verdict) = &self.verdict {
            let recorder = self
                .recorder
                .get_or_insert_with(|| VerdictRecorder::start(context));
            let _ = recorder.verdicts.send(verdict.clone());
        }
    }

    fn ms_since_answer(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.answered).as_millis()).unwrap_or(u32::MAX)
    }
}

impl Run {
    /// The engine's reaction to a speech event every brain shares; true when it is the
    /// engine's alone (the brain does not see it).
    pub(super) fn duty(&mut self, duties: &mut Duties, event: &SpeechEvent) -> bool {
        match event {
            SpeechEvent::AnsweredBy { verdict } => {
                let who = verdict.answered_by;
                let why = &verdict.explanation;
                tracing::info!(
                    answered_by = who.as_str(),
                    reason = why.code.as_str(),
                    after_ms = why.after_ms,
                    greeting_ms = why.greeting_ms,
                    pause_ms = why.pause_ms,
                    "AMD"
                );
                duties.verdict = Some((who, why.clone()));
                duties.record_verdict(&self.context);
                if who == AnsweredBy::Machine {
                    match &self.context.voicemail {
                        Voicemail::HangUp => {
                            let _ = self.context.requests.send(BrainRequest::HangUp {
                                reason: EndReason::Voicemail,
                            });
                        }
                        Voicemail::LeaveMessage(message) => {
                            let message = message.clone();
                            self.await_cue(duties, &message);
                        }
                        Voicemail::Continue => {}
                    }
                }
                false
            }
            SpeechEvent::Beep { at, .. } => {
                match duties.message {
                    Message::AwaitingCue { .. } => {
                        self.start_message(duties, MessageCue::Beep, *at);
                    }
                    Message::Playing {
                        cue: MessageCue::Silence | MessageCue::Timeout,
                        restarted: false,
                        line,
                    } => {
                        // The beep came after the message began: what went before it was
                        // not recorded. Say it again, after the beep.
                        tracing::info!("a beep during the voicemail message: starting it again");
                        self.cut_message(duties, line);
                        self.start_message(duties, MessageCue::Beep, *at);
                        if let Message::Playing { restarted, .. } = &mut duties.message {
                            *restarted = true;
                        }
                    }
                    _ => {}
                }
                false
            }
            SpeechEvent::GreetingEnded { at, .. } => {
                if matches!(duties.message, Message::AwaitingCue { .. }) {
                    self.start_message(duties, MessageCue::Silence, *at);
                }
                false
            }
            SpeechEvent::PlayoutDone { mark } if mark == MESSAGE_MARK => {
                if let Message::Playing { line, .. } = duties.message
                    && duties.audio.failed
                {
                    // Its synthesis failed part way: the line says it was not all said.
                    if let Some(said) = self.transcript.get_mut(line) {
                        said.interrupted = Some(true);
                    }
                }
                duties.message = Message::Done;
                let _ = self.context.requests.send(BrainRequest::HangUp {
                    reason: EndReason::VoicemailMessage,
                });
                true
            }
            SpeechEvent::SilenceTimeout { .. } if duties.voicemail() => true,
            SpeechEvent::SilenceTimeout { .. } => {
                if duties.prompted {
                    let _ = self.context.requests.send(BrainRequest::HangUp {
                        reason: EndReason::SilenceTimeout,
                    });
                } else {
                    duties.prompted = true;
                    self.say(STILL_THERE, "still-there");
                }
                true
            }
            SpeechEvent::SpeechStarted { .. } => {
                duties.prompted = false;
                duties.voicemail()
            }
            SpeechEvent::SpeechEnded { audio, .. } => {
                let listener = duties
                    .listener
                    .clone()
                    .or_else(|| self.context.amd_listener.clone());
                if self.speech.amd_listening()
                    && !duties.words_elsewhere
                    && let Some(stt) = listener
                {
                    let (words, audio) = (duties.heard.0.clone(), audio.clone());
                    let language = self.context.language.clone();
                    tokio::spawn(
                        async move {
                            match stt.transcribe(audio, language).await {
                                Ok(text) => {
                                    let _ = words.send(text);
                                }
                                Err(error) => tracing::debug!(%error, "no words for AMD"),
                            }
                        }
                        .in_current_span(),
                    );
                }
                duties.voicemail()
            }
            _ => duties.voicemail(),
        }
    }

    /// A machine answered and a message is to be left: the brain falls silent, barge-in goes
    /// off, and the message is synthesised while the greeting plays.
    fn await_cue(&mut self, duties: &mut Duties, message: &str) {
        if duties.voicemail() {
            return;
        }
        self.speech.clear_playout();
        self.outbound.clear();
        self.speaking = None;
        self.speech.set_barge_in(BargeIn::Off);
        let c = &self.context;
        let tts = duties.message_voice.as_ref().unwrap_or(&c.tts);
        duties.audio = MessageAudio {
            synthesis: Some(tts.speak(message, c.voice.as_deref(), c.language.as_deref())),
            ..MessageAudio::default()
        };
        duties.message = Message::AwaitingCue {
            since: Instant::now(),
        };
    }

    /// The cue came: the message plays (what is synthesised so far at once, the rest as it
    /// comes), and the record says what it waited for.
    fn start_message(&mut self, duties: &mut Duties, cue: MessageCue, at: Instant) {
        let Voicemail::LeaveMessage(message) = self.context.voicemail.clone() else {
            return;
        };
        tracing::info!(cue = cue.as_str(), "leaving the voicemail message");
        duties.message = Message::Playing {
            cue,
            restarted: false,
            line: self.transcript.len(),
        };
        let mut audio = vec![0i16; MESSAGE_LEAD.as_millis() as usize * SAMPLES_PER_MS];
        audio.extend_from_slice(&duties.audio.samples);
        duties.audio.queued = audio.len();
        self.speech.play(audio, None);
        if duties.audio.complete {
            self.speech.play(Vec::new(), Some(MESSAGE_MARK.into()));
        }
        self.transcript.push(line("agent", &message));
        let at_ms = duties.ms_since_answer(at);
        if let Some((_, why)) = duties.verdict.as_mut() {
            why.message_after = Some(cue);
            why.message_at_ms = Some(at_ms);
        }
        duties.record_verdict(&self.context);
    }

    /// What the duties waited for came.
    pub(super) fn duty_input(&mut self, duties: &mut Duties, input: DutyInput) {
        match input {
            DutyInput::MessageAudio(chunk) => self.message_chunk(duties, chunk),
            DutyInput::Heard(words) => self.speech.heard_words(Instant::now(), &words),
        }
    }

    /// Audio of the message arrived, or its synthesis ended.
    fn message_chunk(&mut self, duties: &mut Duties, chunk: Option<Vec<i16>>) {
        let playing = matches!(duties.message, Message::Playing { .. });
        match chunk {
            Some(audio) => {
                duties.audio.samples.extend_from_slice(&audio);
                if playing {
                    duties.audio.queued += audio.len();
                    self.speech.play(audio, None);
                }
            }
            None => {
                duties.audio.synthesis = None;
                duties.audio.complete = true;
                if playing {
                    self.speech.play(Vec::new(), Some(MESSAGE_MARK.into()));
                }
            }
        }
    }

    /// Stops the message under way; its transcript line keeps what was played.
    fn cut_message(&mut self, duties: &mut Duties, line: usize) {
        let dropped = self
            .speech
            .clear_playout()
            .map_or(0, |cut| cut.dropped_samples);
        self.outbound.clear();
        let lead = MESSAGE_LEAD.as_millis() as usize * SAMPLES_PER_MS;
        let played = duties
            .audio
            .queued
            .saturating_sub(dropped)
            .saturating_sub(lead);
        let total = duties.audio.samples.len();
        if let Some(said) = self.transcript.get_mut(line)
            && (played < total || !duties.audio.complete || duties.audio.failed)
        {
            let whole = duties.audio.complete && !duties.audio.failed;
            said.text = heard_part(&said.text, played, total, whole, &[]);
            said.interrupted = Some(true);
        }
    }

    /// The engine's clocks common to every brain.
    pub(super) fn duty_timers(&mut self, duties: &mut Duties, now: Instant) {
        if let Message::AwaitingCue { since } = duties.message
            && now.saturating_duration_since(since) >= CUE_WAIT
        {
            tracing::info!("no beep and no end of the greeting heard: leaving the message anyway");
            self.start_message(duties, MessageCue::Timeout, now);
        }
    }

    /// At the end of the call: a message cut short by the hang-up keeps what was played, and
    /// the verdicts are on the record.
    pub(super) async fn finish_duties(&mut self, duties: Duties) {
        let mut duties = duties;
        if let Message::Playing { line, .. } = duties.message
            && (self.speech.agent_speaking() || !duties.audio.complete)
        {
            self.cut_message(&mut duties, line);
        }
        if let Some(mut recorder) = duties.recorder.take() {
            // Closing the channel ends the writer once the verdicts queued are written.
            let (closed, _) = mpsc::unbounded_channel();
            recorder.verdicts = closed;
            let _ = (&mut recorder.task).await;
        }
    }
}

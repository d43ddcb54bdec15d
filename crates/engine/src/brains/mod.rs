//! The built-in brains, which run with no external service:
//!
//! * `builtin:echo` — after each caller utterance ends, plays it back (VAD, endpointing, playout
//!   and barge-in end to end).
//! * `builtin:ivr` — speaks the effective instructions, collects DTMF digits (RFC 4733 or
//!   in-band; ended by `#` or a pause), speaks a confirmation, sets the result
//!   `{"digits": "..."}` (checked against the agent's `returns`) and hangs up. Digits are masked
//!   in the transcript and logs when the agent sets `mask_dtmf`.
//!
//! Three more live in modules of their own: `builtin:agent` (module `agent`: the conversation
//! inside the engine, STT → LLM → TTS with tools), an external AgentBridge server (module
//! `remote`) and a Twilio Media Streams app over a websocket (module `streams`).
//!
//! All run the [`SpeechLoop`] against the call's media rings: stepped by the caller's frames
//! as they arrive and by a 20 ms clock (a tick with no frame is a silent frame, so silence is
//! heard as silence), keeping at most two frames of agent audio ahead of the wire so a barge-in
//! is heard within a tick or two. Module `duties` holds what the engine does whatever the brain:
//! answering-machine detection's verdicts on the record, the voicemail action (hang up, or leave
//! the message after the beep), and the silence guard.

pub(crate) mod agent;
mod duties;
mod live_stt;
mod playout_marks;
mod remote;
mod streams;

pub use streams::{
    INBOUND_METRIC as MEDIA_STREAMS_INBOUND_METRIC,
    OUTBOUND_METRIC as MEDIA_STREAMS_OUTBOUND_METRIC,
};

use duties::Duties;

pub use remote::BRAIN_CONNECT_LIMIT;
pub(crate) use remote::{Session, start_remote};
pub(crate) use streams::{StreamsTarget, start_streams};

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_media::{AudioFrame, FrameReceiver, FrameSender, MediaCall};
use dialtone_model::TranscriptLine;
use dialtone_model::time::rfc3339;
use dialtone_speech::{FRAME_SAMPLES, SpeechConfig, SpeechEvent, SpeechLoop};
use dialtone_storage::{EndReason, EndedBy, Storage};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use dialtone_agent::{AgentError, SpeechToText, TextToSpeech};

/// What a brain asks of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrainRequest {
    /// End the call with this end reason.
    HangUp {
        /// The end reason.
        reason: EndReason,
    },
    /// Send these digits (RFC 4733).
    SendDtmf(String),
    /// Transfer the caller to `to` (`+E164` or a SIP URI); the outcome comes back as
    /// [`BrainInput::TransferFailed`] or as the call's end (`transferred`).
    Transfer {
        /// The destination.
        to: String,
        /// How (default: the agent's destination's mode, else `refer`).
        mode: Option<dialtone_model::TransferMode>,
    },
}

/// What the call tells a brain besides the audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrainInput {
    /// An RFC 4733 digit ended.
    Dtmf(char),
    /// A transfer did not happen (refused, or it failed): the caller is still the brain's.
    TransferFailed {
        /// The destination asked for.
        to: String,
        /// The SIP status that decided it, when one did.
        sip_status: Option<u16>,
        /// Why it failed; `None` when it was refused before it started.
        reason: Option<dialtone_model::TransferFailure>,
        /// Why, for people and models.
        message: String,
    },
    /// The call ended: who ended it, and the end reason.
    Ended {
        /// Who ended it.
        by: EndedBy,
        /// The end reason.
        reason: EndReason,
    },
}

/// Which built-in brain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// `builtin:echo`.
    Echo,
    /// `builtin:ivr`.
    Ivr,
}

impl Builtin {
    /// The built-in named `brain`, if it is one.
    pub(crate) fn named(brain: &str) -> Option<Self> {
        match brain {
            "builtin:echo" => Some(Self::Echo),
            "builtin:ivr" => Some(Self::Ivr),
            _ => None,
        }
    }
}

/// Everything a built-in brain needs besides the media.
pub(crate) struct BrainContext {
    pub(crate) storage: Storage,
    pub(crate) call_id: Uuid,
    pub(crate) speech: SpeechConfig,
    pub(crate) voicemail: Voicemail,
    pub(crate) requests: mpsc::UnboundedSender<BrainRequest>,
    pub(crate) inputs: mpsc::UnboundedReceiver<BrainInput>,
    pub(crate) instructions: Option<String>,
    pub(crate) voice: Option<String>,
    pub(crate) language: Option<String>,
    pub(crate) returns: Option<Value>,
    pub(crate) mask_dtmf: bool,
    pub(crate) tts: Arc<dyn TextToSpeech>,
    /// What answering-machine detection transcribes the callee with, for voicemail words
    /// (brains other than `builtin:agent`, when the agent sets `stt`).
    pub(crate) amd_listener: Option<Arc<dyn SpeechToText>>,
}

/// What to do when a machine answers (the agent's `voicemail_action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Voicemail {
    /// Carry on (a brain is told a machine answered).
    Continue,
    /// Hang up (end reason `voicemail`).
    HangUp,
    /// Wait for the beep, speak this, hang up (end reason `voicemail_message`).
    LeaveMessage(String),
}

/// Speech being synthesised: 16 kHz audio as it is made, or the synthesiser's failure.
type Synthesis = mpsc::Receiver<Result<Vec<i16>, AgentError>>;

/// What the engine says when a brain fails mid-call.
const APOLOGY: &str = "I'm sorry, something went wrong on our side. Goodbye.";
/// What the engine asks a silent caller once before hanging up.
const STILL_THERE: &str = "Are you still there?";
/// The histogram of barge-ins from the speech loop's decision to the agent's audio stopped on
/// the wire (the media worker's tick that dropped what was queued), seconds.
pub const BARGE_IN_STOP_METRIC: &str = "dialtone_barge_in_stop_seconds";

/// Starts `brain` on the call's media, on `runtime` (in the call's span).
pub(crate) fn start(
    runtime: &tokio::runtime::Handle,
    brain: Builtin,
    media: &mut MediaCall,
    context: BrainContext,
) -> Option<tokio::task::JoinHandle<()>> {
    let inbound = media.take_inbound()?;
    let outbound = media.take_outbound()?;
    Some(runtime.spawn(run(brain, inbound, outbound, context).in_current_span()))
}

/// Where the IVR is in its script.
#[derive(Debug, Clone, PartialEq)]
enum IvrStep {
    /// Speaking the instructions (digits may already come).
    Prompting,
    /// Waiting for digits; the prompt ended at this time.
    Collecting { since: Instant },
    /// Speaking the confirmation.
    Confirming,
    /// Done.
    Finished,
}

/// How long the IVR waits for the first digit after the prompt, and between digits.
const FIRST_DIGIT_WAIT: Duration = Duration::from_secs(10);
const NEXT_DIGIT_WAIT: Duration = Duration::from_secs(4);

struct Run {
    speech: SpeechLoop,
    outbound: FrameSender,
    context: BrainContext,
    transcript: Vec<TranscriptLine>,
    digits: String,
    last_digit: Option<Instant>,
    step: IvrStep,
    speaking: Option<(Synthesis, &'static str)>,
    /// When the speech loop decided on a barge-in whose audio has not yet stopped on the wire.
    stopping: Option<Instant>,
}

impl Run {
    /// A brain's run on `context`'s call from `now`, its IVR script at `step`.
    fn new(context: BrainContext, outbound: FrameSender, now: Instant, step: IvrStep) -> Self {
        Self {
            speech: SpeechLoop::new(context.speech, now),
            outbound,
            context,
            transcript: Vec::new(),
            digits: String::new(),
            last_digit: None,
            step,
            speaking: None,
            stopping: None,
        }
    }

    /// The caller barged in (the speech loop decided it at `at`, and dropped its playout): the
    /// frames already in the outbound ring go too. The time until the media worker has dropped
    /// them, the agent's audio stopped on the wire, is recorded as
    /// `dialtone_barge_in_stop_seconds` ([`Run::feed_outbound`] looks for it).
    fn barge_in(&mut self, at: Instant) {
        self.outbound.clear();
        self.stopping = Some(at);
    }

    /// Tops the outbound ring up to its lead with the agent's next frames, while it speaks; and
    /// records a barge-in's stop on the wire once the worker has made it.
    fn feed_outbound(&mut self) {
        if let Some(decided) = self.stopping
            && let Some(stopped) = self.outbound.cleared_at()
        {
            self.stopping = None;
            metrics::histogram!(BARGE_IN_STOP_METRIC)
                .record(stopped.saturating_duration_since(decided).as_secs_f64());
        }
        let lead = self.outbound.lead(self.speech.agent_speaking());
        while self.speech.agent_speaking() && self.outbound.queued() < lead {
            let frame = AudioFrame {
                samples: self.speech.next_agent_frame(),
                at: Instant::now(),
            };
            if self.outbound.try_send(frame).is_err() {
                break;
            }
        }
    }

    /// Audio of the engine's own speech under way, or its end (its mark follows its last
    /// sample).
    fn engine_speech(&mut self, chunk: Option<Vec<i16>>) {
        match chunk {
            Some(audio) => self.speech.play(audio, None),
            None => {
                if let Some((_, mark)) = self.speaking.take() {
                    self.speech.play(Vec::new(), Some(mark.to_owned()));
                }
            }
        }
    }

    fn say(&mut self, text: &str, mark: &'static str) {
        let c = &self.context;
        self.transcript.push(line("agent", text));
        self.speaking = Some((
            c.tts.speak(text, c.voice.as_deref(), c.language.as_deref()),
            mark,
        ));
    }

    fn shown_digits(&self) -> String {
        if self.context.mask_dtmf {
            "*".repeat(self.digits.chars().count())
        } else {
            self.digits.clone()
        }
    }

    async fn save_transcript(&mut self) {
        let transcript = serde_json::to_value(&self.transcript).unwrap_or(Value::Null);
        if let Err(error) = self
            .context
            .storage
            .set_transcript(self.context.call_id, &transcript)
            .await
        {
            tracing::error!(%error, "could not record the transcript");
        }
    }

    /// The IVR's reaction to a digit.
    fn digit(&mut self, digit: char) {
        if matches!(self.step, IvrStep::Confirming | IvrStep::Finished) {
            return;
        }
        // A key press stops the prompt: the caller knows what to do.
        if self.speech.clear_playout().is_some() {
            self.outbound.clear();
            self.speaking = None;
        }
        if digit == '#' {
            self.confirm();
            return;
        }
        self.digits.push(digit);
        self.last_digit = Some(Instant::now());
        self.step = IvrStep::Collecting {
            since: Instant::now(),
        };
    }

    fn confirm(&mut self) {
        self.step = IvrStep::Confirming;
        self.transcript
            .push(line("caller", &format!("DTMF {}", self.shown_digits())));
        let spoken: Vec<String> = self.digits.chars().map(String::from).collect();
        let text = if self.digits.is_empty() {
            "No digits were entered. Goodbye.".to_owned()
        } else if self.context.mask_dtmf {
            "Thank you, your entry was received. Goodbye.".to_owned()
        } else {
            format!("You entered {}. Thank you, goodbye.", spoken.join(" "))
        };
        self.say(&text, "confirmation");
    }

    /// Checks the result against the agent's `returns` and stores it, or why it is refused.
    async fn finish(&mut self) {
        self.step = IvrStep::Finished;
        self.save_transcript().await;
        let (result, error) = if self.digits.is_empty() {
            (None, Some("no digits were entered".to_owned()))
        } else {
            let result = json!({"digits": self.digits});
            match check_result(self.context.returns.as_ref(), &result) {
                Ok(()) => (Some(result), None),
                Err(e) => (None, Some(e)),
            }
        };
        if let Err(e) = self
            .context
            .storage
            .set_result(self.context.call_id, result.as_ref(), error.as_deref())
            .await
        {
            tracing::error!(error = %e, "could not record the result");
        }
        let _ = self.context.requests.send(BrainRequest::HangUp {
            reason: EndReason::Completed,
        });
    }

    /// Ticks of the IVR's clocks.
    fn timers(&mut self, now: Instant) {
        if let IvrStep::Collecting { since } = self.step {
            let waited = now.saturating_duration_since(self.last_digit.unwrap_or(since));
            let limit = if self.digits.is_empty() {
                FIRST_DIGIT_WAIT
            } else {
                NEXT_DIGIT_WAIT
            };
            if waited >= limit {
                self.confirm();
            }
        }
    }
}

/// A transcript line now.
fn line(role: &str, text: &str) -> TranscriptLine {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    TranscriptLine {
        role: role.to_owned(),
        text: text.to_owned(),
        at: rfc3339(now).unwrap_or_default(),
        ..TranscriptLine::default()
    }
}

/// Whether `result` satisfies the `returns` JSON Schema (none: anything goes).
pub(crate) fn check_result(returns: Option<&Value>, result: &Value) -> Result<(), String> {
    let Some(schema) = returns else {
        return Ok(());
    };
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("the agent's returns schema does not compile: {e}"))?;
    match validator.validate(result) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!(
            "the result does not match the agent's returns schema at {}: {e}",
            e.instance_path()
        )),
    }
}

async fn run(
    brain: Builtin,
    mut inbound: FrameReceiver,
    outbound: FrameSender,
    context: BrainContext,
) {
    let now = Instant::now();
    let mut run = Run::new(context, outbound, now, IvrStep::Prompting);
    let mut duties = Duties::new(now);
    if brain == Builtin::Ivr {
        let prompt = run
            .context
            .instructions
            .clone()
            .unwrap_or_else(|| "Please enter your digits, then press the pound key.".into());
        run.say(&prompt, "prompt");
    }
    let mut clock = SilenceClock::new();
    loop {
        tokio::select! {
            biased;
            frame = inbound.recv() => {
                let Some(frame) = frame else { break };
                let now = Instant::now();
                run.speech.handle_caller_frame(now, &frame.samples);
                clock.heard(now);
                if brain == Builtin::Ivr && !duties.voicemail() {
                    run.timers(now);
                }
                run.duty_timers(&mut duties, now);
            }
            Some(input) = run.context.inputs.recv() => match input {
                BrainInput::Dtmf(digit) if brain == Builtin::Ivr && !duties.voicemail() => {
                    run.digit(digit);
                }
                BrainInput::Dtmf(_) => {}
                // The built-ins never ask for a transfer; one the API asked for that failed
                // leaves them as they were.
                BrainInput::TransferFailed { .. } => {}
                BrainInput::Ended { .. } => break,
            },
            chunk = next_chunk(&mut run.speaking) => run.engine_speech(chunk),
            input = duties.next_input() => run.duty_input(&mut duties, input),
            now = clock.silence() => {
                run.speech.handle_caller_frame(now, &[0; FRAME_SAMPLES]);
                if brain == Builtin::Ivr && !duties.voicemail() {
                    run.timers(now);
                }
                run.duty_timers(&mut duties, now);
            }
        }
        while let Some(event) = run.speech.poll_event() {
            if run.duty(&mut duties, &event) {
                continue;
            }
            match event {
                SpeechEvent::SpeechEnded {
                    audio, duration, ..
                } if brain == Builtin::Echo => {
                    tracing::debug!(?duration, "echoing an utterance");
                    run.speech.play(audio, None);
                }
                SpeechEvent::BargeIn { at, cut } => {
                    tracing::debug!(played = cut.played_samples, "barge-in");
                    run.barge_in(at);
                }
                SpeechEvent::Dtmf { digit, .. } if brain == Builtin::Ivr => run.digit(digit),
                SpeechEvent::PlayoutDone { mark } => match mark.as_str() {
                    "prompt" if run.step == IvrStep::Prompting => {
                        run.step = IvrStep::Collecting {
                            since: Instant::now(),
                        };
                    }
                    "confirmation" => run.finish().await,
                    _ => {}
                },
                other => tracing::trace!(?other, "speech event"),
            }
        }
        run.feed_outbound();
        if run.outbound.is_closed() {
            break;
        }
    }
    run.finish_duties(duties).await;
    if brain == Builtin::Echo {
        if !run.transcript.is_empty() {
            // What the engine said itself (a voicemail message, a silence prompt).
            run.save_transcript().await;
        }
        if run.context.returns.is_some() {
            // The agent expects a result; this brain never makes one.
            let _ = run
                .context
                .storage
                .set_result(
                    run.context.call_id,
                    None,
                    Some("builtin:echo returns no structured result"),
                )
                .await;
        }
    }
    if brain == Builtin::Ivr && run.step != IvrStep::Finished {
        // The call ended mid-script: keep what was said, and say why there is no result.
        if !run.digits.is_empty() {
            run.transcript
                .push(line("caller", &format!("DTMF {}", run.shown_digits())));
        }
        run.save_transcript().await;
        let _ = run
            .context
            .storage
            .set_result(
                run.context.call_id,
                None,
                Some("the call ended before the digits were confirmed"),
            )
            .await;
    }
}

/// The speech loop's clock when the caller's frames stop coming: the media worker delivers a
/// frame every 20 ms while RTP flows, and those frames drive the loop; once none has come for
/// [`SILENCE_AFTER`], this stands in with a silent frame every 20 ms (silence is heard as
/// silence, and the turn-taking and duty timers go on). Each frame moves the deadline rather
/// than a separate 20 ms timer waking the task, so a flowing call wakes once per frame.
struct SilenceClock {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// How long without a caller frame before silence stands in (a frame and a half).
const SILENCE_AFTER: Duration = Duration::from_millis(30);
/// The speech loop's frame.
const FRAME: Duration = Duration::from_millis(20);

impl SilenceClock {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(SILENCE_AFTER)),
        }
    }

    /// A caller frame came at `now`.
    fn heard(&mut self, now: Instant) {
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(now + SILENCE_AFTER));
    }

    /// Waits until a silent frame is due; returns when it was due. A task that was held up
    /// does not catch up in a burst: the next one is due a frame after the one it serves.
    async fn silence(&mut self) -> Instant {
        (&mut self.sleep).await;
        let due = self.sleep.deadline().into_std();
        let next = (due + FRAME).max(Instant::now());
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(next));
        due
    }
}

/// The next chunk of the synthesis under way; `None` when it ended (a failure ends it too,
/// after a warning: the engine's own prompts have no better voice to fall back on).
async fn next_chunk(speaking: &mut Option<(Synthesis, &'static str)>) -> Option<Vec<i16>> {
    match speaking {
        Some((rx, _)) => match rx.recv().await? {
            Ok(audio) => Some(audio),
            Err(error) => {
                tracing::warn!(%error, "speech synthesis failed");
                None
            }
        },
        None => std::future::pending().await,
    }
}

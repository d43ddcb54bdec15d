//! The built-in brains, which run with no external service:
//!
//! * `builtin:echo` — after each caller utterance ends, plays it back (VAD, endpointing, playout
//!   and barge-in end to end).
//! * `builtin:ivr` — speaks the effective instructions, collects DTMF digits (RFC 4733 or
//!   in-band; ended by `#` or a pause), speaks a confirmation, sets the result
//!   `{"digits": "..."}` (checked against the agent's `returns`) and hangs up. Digits are masked
//!   in the transcript and logs when the agent sets `mask_dtmf`.
//!
//! Both run the [`SpeechLoop`] against the call's media rings: stepped by the caller's frames
//! as they arrive and by a 20 ms clock (a tick with no frame is a silent frame, so silence is
//! heard as silence), keeping at most two frames of agent audio ahead of the wire so a barge-in
//! is heard within a tick or two. With answering-machine detection on, the verdict goes on the
//! call record, and a machine ends the call when the agent's voicemail action says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_media::ring::RING_FRAMES;
use dialtone_media::{AudioFrame, FrameReceiver, FrameSender, MediaCall};
use dialtone_speech::{
    AmdConfig, AnsweredBy, FRAME_SAMPLES, SpeechConfig, SpeechEvent, SpeechLoop,
};
use dialtone_storage::{Storage, rfc3339};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::tts::TextToSpeech;

/// What a brain asks of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrainRequest {
    /// End the call with this end reason.
    HangUp {
        /// The end reason.
        reason: &'static str,
    },
}

/// What the call tells a brain besides the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrainInput {
    /// An RFC 4733 digit ended.
    Dtmf(char),
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
    pub(crate) amd: Option<AmdConfig>,
    pub(crate) hang_up_on_machine: bool,
    pub(crate) requests: mpsc::UnboundedSender<BrainRequest>,
    pub(crate) inputs: mpsc::UnboundedReceiver<BrainInput>,
    pub(crate) instructions: Option<String>,
    pub(crate) voice: Option<String>,
    pub(crate) language: Option<String>,
    pub(crate) returns: Option<Value>,
    pub(crate) mask_dtmf: bool,
    pub(crate) tts: Arc<dyn TextToSpeech>,
}

/// Starts `brain` on the call's media.
pub(crate) fn start(
    brain: Builtin,
    media: &mut MediaCall,
    context: BrainContext,
) -> Option<tokio::task::JoinHandle<()>> {
    let inbound = media.take_inbound()?;
    let outbound = media.take_outbound()?;
    Some(tokio::spawn(run(brain, inbound, outbound, context)))
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
    transcript: Vec<Value>,
    digits: String,
    last_digit: Option<Instant>,
    step: IvrStep,
    speaking: Option<(mpsc::Receiver<Vec<i16>>, &'static str)>,
}

impl Run {
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
        let transcript = Value::Array(self.transcript.clone());
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
            reason: "completed",
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
fn line(role: &str, text: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    json!({"role": role, "text": text, "at": rfc3339(now)})
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
    let config = SpeechConfig {
        amd: context.amd,
        ..SpeechConfig::default()
    };
    let mut run = Run {
        speech: SpeechLoop::new(config, Instant::now()),
        outbound,
        context,
        transcript: Vec::new(),
        digits: String::new(),
        last_digit: None,
        step: IvrStep::Prompting,
        speaking: None,
    };
    if brain == Builtin::Ivr {
        let prompt = run
            .context
            .instructions
            .clone()
            .unwrap_or_else(|| "Please enter your digits, then press the pound key.".into());
        run.say(&prompt, "prompt");
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard_since_tick = false;
    loop {
        tokio::select! {
            frame = inbound.recv() => {
                let Some(frame) = frame else { break };
                run.speech.handle_caller_frame(Instant::now(), &frame.samples);
                heard_since_tick = true;
            }
            Some(input) = run.context.inputs.recv() => match input {
                BrainInput::Dtmf(digit) if brain == Builtin::Ivr => run.digit(digit),
                BrainInput::Dtmf(_) => {}
            },
            chunk = next_chunk(&mut run.speaking) => match chunk {
                Some(audio) => run.speech.play(audio, None),
                None => {
                    // The synthesis ended: the mark follows its last sample.
                    if let Some((_, mark)) = run.speaking.take() {
                        run.speech.play(Vec::new(), Some(mark.to_owned()));
                    }
                }
            },
            _ = tick.tick() => {
                if !heard_since_tick {
                    run.speech.handle_caller_frame(Instant::now(), &[0; FRAME_SAMPLES]);
                }
                heard_since_tick = false;
                if brain == Builtin::Ivr {
                    run.timers(Instant::now());
                }
            }
        }
        while let Some(event) = run.speech.poll_event() {
            match event {
                SpeechEvent::SpeechEnded {
                    audio, duration, ..
                } if brain == Builtin::Echo => {
                    tracing::debug!(?duration, "echoing an utterance");
                    run.speech.play(audio, None);
                }
                SpeechEvent::BargeIn { cut, .. } => {
                    tracing::debug!(played = cut.played_samples, "barge-in");
                    run.outbound.clear();
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
                SpeechEvent::AnsweredBy { verdict } => {
                    let who = verdict.answered_by;
                    tracing::info!(answered_by = who.as_str(), reason = verdict.reason, "AMD");
                    if let Err(error) = run
                        .context
                        .storage
                        .set_answered_by(run.context.call_id, who.as_str())
                        .await
                    {
                        tracing::error!(%error, "could not record who answered");
                    }
                    if who == AnsweredBy::Machine && run.context.hang_up_on_machine {
                        let _ = run.context.requests.send(BrainRequest::HangUp {
                            reason: "voicemail",
                        });
                    }
                }
                other => tracing::trace!(?other, "speech event"),
            }
        }
        while run.speech.agent_speaking() && run.outbound.free() > RING_FRAMES - 2 {
            let frame = AudioFrame {
                samples: run.speech.next_agent_frame(),
                at: Instant::now(),
            };
            if run.outbound.try_send(frame).is_err() {
                break;
            }
        }
        if run.outbound.is_closed() {
            break;
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

/// The next chunk of speech being synthesised; pending while nothing is.
async fn next_chunk(
    speaking: &mut Option<(mpsc::Receiver<Vec<i16>>, &'static str)>,
) -> Option<Vec<i16>> {
    match speaking {
        Some((rx, _)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

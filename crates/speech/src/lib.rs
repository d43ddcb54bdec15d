//! # dialtone-speech — the agent's speech loop, sans-IO
//!
//! [`SpeechLoop`] sits between a call's media rings and its brain. It is fed the caller's
//! 16 kHz frames with the time they came ([`SpeechLoop::handle_caller_frame`]) and the agent's
//! audio ([`SpeechLoop::play`]); it gives back one agent frame per tick
//! ([`SpeechLoop::next_agent_frame`]) and [`SpeechEvent`]s ([`SpeechLoop::poll_event`]). It never
//! reads a clock or touches a socket, so every timing below runs on a virtual clock in tests.
//!
//! * **VAD** ([`vad`]): earshot's detector on 256-sample chunks, gated by level above an
//!   adaptive noise floor.
//! * **Turn-taking**: speech starts after [`SpeechConfig::onset`] of voiced frames and ends after
//!   [`SpeechConfig::endpointing_silence`] without one; an utterance shorter than
//!   [`SpeechConfig::min_utterance`] (a click, a cough) is dropped, and its start withdrawn
//!   ([`SpeechEvent::SpeechDropped`]). A finished utterance comes with its audio, for a brain
//!   to transcribe (or, for `builtin:echo`, to play back).
//! * **Barge-in** ([`BargeIn`]): caller speech during playout clears it — at onset, after a
//!   minimum length of speech, or never — and reports what of the cut segment was heard.
//! * **Playout** ([`playout`]): segments with marks; a mark is reported when its last sample
//!   leaves.
//! * **In-band DTMF** ([`dtmf`]): Goertzel detection for trunks that send digits as tones.
//! * **Silence guard**: no caller speech for [`SpeechConfig::silence_timeout`] raises
//!   [`SpeechEvent::SilenceTimeout`] once (the engine prompts or hangs up).
//! * **Answering-machine detection** ([`amd`], when [`SpeechConfig::amd`] is set): a
//!   [`SpeechEvent::AnsweredBy`] verdict from the first seconds (and a later `machine` one when
//!   a beep or voicemail words, [`SpeechLoop::heard_words`], overturn a `human` or `unknown`
//!   one); then the end of the voicemail [`SpeechEvent::Beep`], or with no beep the greeting's
//!   final silence ([`SpeechEvent::GreetingEnded`]), after which a message can be left.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub mod amd;
pub mod dtmf;
pub mod playout;
pub mod vad;

pub use amd::{
    Amd, AmdConfig, AmdEvent, AmdExplanation, AmdMode, AmdReason, AmdVerdict, AnsweredBy,
    BeepDetector, voicemail_phrase,
};
pub use dtmf::InbandDtmf;
pub use playout::{Cut, Playout};
pub use vad::{FrameVoice, VoiceDetector, level_dbfs};

/// Samples in one 20 ms frame at 16 kHz.
pub const FRAME_SAMPLES: usize = 320;
/// The speech loop's sample rate.
pub const SAMPLE_RATE: u32 = 16_000;
const FRAME: Duration = Duration::from_millis(20);
/// The longest utterance kept whole (longer ones keep their first minute).
const MAX_UTTERANCE_SAMPLES: usize = SAMPLE_RATE as usize * 60;

/// When caller speech interrupts the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeIn {
    /// Never: the agent finishes what it says.
    Off,
    /// As soon as speech is detected.
    On,
    /// Once the caller has spoken this long (ignores short acknowledgements).
    After(Duration),
}

/// Settings of the speech loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechConfig {
    /// earshot score from which a frame may be speech.
    pub vad_threshold: f32,
    /// How far above the noise floor a speech frame must be, dB.
    pub noise_margin_db: f32,
    /// Voiced time before speech counts as started.
    pub onset: Duration,
    /// Silence that ends an utterance.
    pub endpointing_silence: Duration,
    /// Shorter utterances are ignored.
    pub min_utterance: Duration,
    /// Barge-in policy.
    pub barge_in: BargeIn,
    /// Caller silence (while the agent is not speaking) that raises a timeout; `None`: never.
    pub silence_timeout: Option<Duration>,
    /// Answering-machine detection from the start; `None`: off.
    pub amd: Option<AmdConfig>,
    /// Listen for key presses in the audio. Off when the call carries them as RFC 4733
    /// events: a phone or gateway that sends both would have every press counted twice, and
    /// speech that happens to hold two DTMF tones would be taken for a key.
    pub inband_dtmf: bool,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            vad_threshold: 0.5,
            noise_margin_db: 6.0,
            onset: Duration::from_millis(60),
            endpointing_silence: Duration::from_millis(500),
            min_utterance: Duration::from_millis(200),
            barge_in: BargeIn::On,
            silence_timeout: None,
            amd: None,
            inband_dtmf: true,
        }
    }
}

/// What the speech loop tells the call.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechEvent {
    /// The caller started speaking (at the first voiced frame of the onset). Followed by a
    /// [`SpeechEvent::SpeechEnded`], or by a [`SpeechEvent::SpeechDropped`] when it was too short.
    SpeechStarted {
        /// When.
        at: Instant,
    },
    /// What started (a [`SpeechEvent::SpeechStarted`]) ended shorter than
    /// [`SpeechConfig::min_utterance`] (a click, a cough): no utterance, and no
    /// [`SpeechEvent::SpeechEnded`] for that start. A brain that began on the start (a live
    /// recognition fed its audio) drops what it has of it.
    SpeechDropped {
        /// When its last voiced frame came.
        at: Instant,
        /// From first to last voiced frame.
        duration: Duration,
    },
    /// The caller finished an utterance.
    SpeechEnded {
        /// When its last voiced frame came.
        at: Instant,
        /// From first to last voiced frame.
        duration: Duration,
        /// Its audio, 16 kHz, from onset to the last voiced frame.
        audio: Vec<i16>,
    },
    /// Caller speech cut the agent's playout.
    BargeIn {
        /// When the playout was cleared.
        at: Instant,
        /// What of the segment under way had been heard.
        cut: Cut,
    },
    /// A playout segment's last sample was played.
    PlayoutDone {
        /// Its mark.
        mark: String,
    },
    /// A digit heard in the audio (in-band DTMF).
    Dtmf {
        /// The digit.
        digit: char,
        /// When it was confirmed.
        at: Instant,
    },
    /// Answering-machine detection's verdict.
    AnsweredBy {
        /// The verdict and its reason.
        verdict: AmdVerdict,
    },
    /// A voicemail beep ended: a message can be left now.
    Beep {
        /// Its frequency.
        hz: f32,
        /// How long it lasted.
        duration: Duration,
        /// When its end was heard.
        at: Instant,
    },
    /// After a `machine` verdict and no beep, the greeting fell silent: a message can be left.
    GreetingEnded {
        /// When.
        at: Instant,
        /// How long it has been silent.
        silent_for: Duration,
    },
    /// The caller said nothing for the configured time.
    SilenceTimeout {
        /// How long.
        silent_for: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Turn {
    /// Nobody speaking (or shorter than the onset).
    Quiet { voiced_since: Option<Instant> },
    /// The caller is speaking.
    Speaking {
        started: Instant,
        last_voiced: Instant,
        barged: bool,
    },
}

/// The speech loop of one call.
#[derive(Debug)]
pub struct SpeechLoop {
    config: SpeechConfig,
    vad: VoiceDetector,
    dtmf: InbandDtmf,
    amd: Option<Amd>,
    playout: Playout,
    turn: Turn,
    /// The caller's audio since the onset began (voiced or not).
    utterance: Vec<i16>,
    /// Audio of the last voiced frame's end, as an index into `utterance`.
    utterance_voiced_len: usize,
    events: VecDeque<SpeechEvent>,
    done: Vec<Option<String>>,
    quiet_since: Option<Instant>,
    silence_reported: bool,
    frames: u64,
}

impl SpeechLoop {
    /// A speech loop with `config`, starting at `now`.
    pub fn new(config: SpeechConfig, now: Instant) -> Self {
        Self {
            vad: VoiceDetector::new(config.vad_threshold, config.noise_margin_db),
            config,
            dtmf: InbandDtmf::default(),
            amd: config.amd.map(Amd::new),
            playout: Playout::default(),
            turn: Turn::Quiet { voiced_since: None },
            utterance: Vec::with_capacity(SAMPLE_RATE as usize),
            utterance_voiced_len: 0,
            events: VecDeque::with_capacity(8),
            done: Vec::with_capacity(4),
            quiet_since: Some(now),
            silence_reported: false,
            frames: 0,
        }
    }

    /// Frames taken in so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Whether the caller is speaking now.
    pub fn caller_speaking(&self) -> bool {
        matches!(self.turn, Turn::Speaking { .. })
    }

    /// Whether agent audio is queued.
    pub fn agent_speaking(&self) -> bool {
        self.playout.is_playing()
    }

    /// Takes in one 20 ms frame of the caller (16 kHz) that arrived at `now`.
    pub fn handle_caller_frame(&mut self, now: Instant, frame: &[i16]) -> FrameVoice {
        self.frames += 1;
        let digit = self.dtmf.frame(frame, SAMPLE_RATE);
        if self.config.inband_dtmf
            && let Some(digit) = digit
        {
            self.events.push_back(SpeechEvent::Dtmf { digit, at: now });
        }
        let mut voice = self.vad.frame(frame);
        // A key's tone is no speech: it neither starts a turn nor barges in on the agent
        // (whose answer to the key would be cut by the key's own tail).
        voice.voiced &= !self.dtmf.hearing_tone();
        let agent_speaking = self.playout.is_playing();
        if let Some(amd) = self.amd.as_mut() {
            let heard = amd.frame(frame, voice, agent_speaking);
            self.amd_events(now, heard);
        }
        match self.turn {
            Turn::Quiet { voiced_since } => {
                if voice.voiced {
                    let since = voiced_since.unwrap_or(now);
                    if voiced_since.is_none() {
                        self.utterance.clear();
                    }
                    self.keep(frame);
                    self.utterance_voiced_len = self.utterance.len();
                    // The onset counts the frame's own 20 ms.
                    if now.saturating_duration_since(since) + FRAME >= self.config.onset {
                        self.turn = Turn::Speaking {
                            started: since,
                            last_voiced: now,
                            barged: false,
                        };
                        self.quiet_since = None;
                        self.events
                            .push_back(SpeechEvent::SpeechStarted { at: since });
                        self.maybe_barge_in(now);
                    } else {
                        self.turn = Turn::Quiet {
                            voiced_since: Some(since),
                        };
                    }
                } else {
                    self.turn = Turn::Quiet { voiced_since: None };
                }
            }
            Turn::Speaking {
                started,
                last_voiced,
                barged,
            } => {
                self.keep(frame);
                let last_voiced = if voice.voiced {
                    self.utterance_voiced_len = self.utterance.len();
                    now
                } else {
                    last_voiced
                };
                self.turn = Turn::Speaking {
                    started,
                    last_voiced,
                    barged,
                };
                if voice.voiced {
                    self.maybe_barge_in(now);
                }
                if now.saturating_duration_since(last_voiced) >= self.config.endpointing_silence {
                    self.end_utterance(now, started, last_voiced);
                }
            }
        }
        self.check_silence(now);
        voice
    }

    fn keep(&mut self, frame: &[i16]) {
        let room = MAX_UTTERANCE_SAMPLES.saturating_sub(self.utterance.len());
        self.utterance
            .extend_from_slice(frame.get(..room.min(frame.len())).unwrap_or_default());
    }

    fn end_utterance(&mut self, now: Instant, started: Instant, last_voiced: Instant) {
        let duration = last_voiced.saturating_duration_since(started) + FRAME;
        self.turn = Turn::Quiet { voiced_since: None };
        self.quiet_since = Some(now);
        self.silence_reported = false;
        if duration < self.config.min_utterance {
            self.utterance.clear();
            self.events.push_back(SpeechEvent::SpeechDropped {
                at: last_voiced,
                duration,
            });
            return;
        }
        self.utterance.truncate(self.utterance_voiced_len);
        let audio = std::mem::take(&mut self.utterance);
        self.events.push_back(SpeechEvent::SpeechEnded {
            at: last_voiced,
            duration,
            audio,
        });
    }

    fn maybe_barge_in(&mut self, now: Instant) {
        let Turn::Speaking {
            started,
            last_voiced,
            barged: false,
        } = self.turn
        else {
            return;
        };
        let due = match self.config.barge_in {
            BargeIn::Off => false,
            BargeIn::On => true,
            BargeIn::After(min) => now.saturating_duration_since(started) + FRAME >= min,
        };
        if due && let Some(cut) = self.playout.clear() {
            self.turn = Turn::Speaking {
                started,
                last_voiced,
                barged: true,
            };
            self.events.push_back(SpeechEvent::BargeIn { at: now, cut });
        }
    }

    fn check_silence(&mut self, now: Instant) {
        if self.playout.is_playing() {
            // The agent is talking: the caller's silence is listening, not dead air; after it
            // has spoken (a prompt), the guard starts again.
            self.quiet_since = self.quiet_since.map(|_| now);
            self.silence_reported = false;
            return;
        }
        if let (Some(limit), Some(since)) = (self.config.silence_timeout, self.quiet_since) {
            let silent_for = now.saturating_duration_since(since);
            if silent_for >= limit && !self.silence_reported {
                self.silence_reported = true;
                self.events
                    .push_back(SpeechEvent::SilenceTimeout { silent_for });
            }
        }
    }

    fn amd_events(&mut self, now: Instant, heard: Vec<AmdEvent>) {
        for event in heard {
            self.events.push_back(match event {
                AmdEvent::Verdict(verdict) => SpeechEvent::AnsweredBy { verdict },
                AmdEvent::Beep { hz, duration } => SpeechEvent::Beep {
                    hz,
                    duration,
                    at: now,
                },
                AmdEvent::GreetingEnded { silent_for } => SpeechEvent::GreetingEnded {
                    at: now,
                    silent_for,
                },
            });
        }
    }

    /// What the caller said, transcribed, for answering-machine detection: voicemail words
    /// make the verdict `machine` (before a verdict, or while a `human` or `unknown` one still
    /// listens).
    pub fn heard_words(&mut self, now: Instant, text: &str) {
        if let Some(amd) = self.amd.as_mut() {
            let heard = amd.heard_words(text);
            self.amd_events(now, heard);
        }
    }

    /// Whether answering-machine detection still listens (a transcript of what the callee says
    /// may still change its verdict: [`SpeechLoop::heard_words`]).
    pub fn amd_listening(&self) -> bool {
        self.amd.as_ref().is_some_and(Amd::listening)
    }

    /// Changes the barge-in policy (off while a voicemail message is left).
    pub fn set_barge_in(&mut self, barge_in: BargeIn) {
        self.config.barge_in = barge_in;
    }

    /// Queues agent audio (16 kHz); `mark` is reported when its last sample has played.
    pub fn play(&mut self, audio: Vec<i16>, mark: Option<String>) {
        self.playout.push(audio, mark);
    }

    /// Agent audio queued and not yet played, in samples (16 kHz).
    pub fn queued_samples(&self) -> usize {
        self.playout.queued_samples()
    }

    /// Clears the agent's playout (the brain asked); what of it was heard.
    pub fn clear_playout(&mut self) -> Option<Cut> {
        self.playout.clear()
    }

    /// The agent's next 20 ms frame (silence when nothing is queued).
    pub fn next_agent_frame(&mut self) -> [i16; FRAME_SAMPLES] {
        let mut frame = [0i16; FRAME_SAMPLES];
        self.done.clear();
        self.playout.next_frame(&mut frame, &mut self.done);
        for mark in self.done.drain(..).flatten() {
            self.events.push_back(SpeechEvent::PlayoutDone { mark });
        }
        frame
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<SpeechEvent> {
        self.events.pop_front()
    }
}

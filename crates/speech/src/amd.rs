//! Answering-machine detection from the first seconds of a call, on the VAD's per-frame
//! verdicts, with the classic parameters (those of Asterisk's AMD): a human says something short
//! ("Hello?") and waits; a machine plays a long greeting of many words, or says nothing at first.
//! And the voicemail beep: one pure tone held for a while, after which a message can be left.

use std::time::Duration;

const FRAME: Duration = Duration::from_millis(20);

/// Who answered: the call record's verdict, named once in the model.
pub use dialtone_model::AnsweredBy;

/// AMD settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdConfig {
    /// Silence before any speech longer than this: a machine.
    pub initial_silence: Duration,
    /// A greeting (first speech to last, before the pause after it) longer than this: a machine.
    pub greeting: Duration,
    /// Silence after a short greeting longer than this: a human waiting for an answer.
    pub after_greeting_silence: Duration,
    /// No verdict by then: unknown.
    pub total_analysis_time: Duration,
    /// Voiced stretches shorter than this are not words.
    pub min_word_length: Duration,
    /// Silence that separates words.
    pub between_words_silence: Duration,
    /// This many words in the greeting: a machine.
    pub maximum_words: u32,
}

impl Default for AmdConfig {
    fn default() -> Self {
        Self {
            initial_silence: Duration::from_millis(2500),
            greeting: Duration::from_millis(1500),
            after_greeting_silence: Duration::from_millis(800),
            total_analysis_time: Duration::from_millis(5000),
            min_word_length: Duration::from_millis(100),
            between_words_silence: Duration::from_millis(50),
            maximum_words: 3,
        }
    }
}

/// A verdict and the rule that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdVerdict {
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// `initial_silence`, `long_greeting`, `max_words`, `after_greeting_silence` or
    /// `max_analysis_time`.
    pub reason: &'static str,
    /// Time from the start of the analysis.
    pub after: Duration,
}

/// The detector of one call.
#[derive(Debug, Clone)]
pub struct Amd {
    config: AmdConfig,
    elapsed: Duration,
    greeting_start: Option<Duration>,
    last_voiced: Option<Duration>,
    voiced_run: Duration,
    silence_run: Duration,
    words: u32,
    in_word: bool,
    verdict: Option<AmdVerdict>,
}

impl Amd {
    /// A detector starting at the answer.
    pub fn new(config: AmdConfig) -> Self {
        Self {
            config,
            elapsed: Duration::ZERO,
            greeting_start: None,
            last_voiced: None,
            voiced_run: Duration::ZERO,
            silence_run: Duration::ZERO,
            words: 0,
            in_word: false,
            verdict: None,
        }
    }

    /// The verdict, once given.
    pub fn verdict(&self) -> Option<AmdVerdict> {
        self.verdict
    }

    fn decide(&mut self, answered_by: AnsweredBy, reason: &'static str) -> Option<AmdVerdict> {
        let verdict = AmdVerdict {
            answered_by,
            reason,
            after: self.elapsed,
        };
        self.verdict = Some(verdict);
        Some(verdict)
    }

    /// Takes one 20 ms frame's voice verdict; returns the AMD verdict when it is reached.
    pub fn frame(&mut self, voiced: bool) -> Option<AmdVerdict> {
        if self.verdict.is_some() {
            return None;
        }
        self.elapsed += FRAME;
        let c = self.config;
        if voiced {
            self.greeting_start.get_or_insert(self.elapsed - FRAME);
            self.last_voiced = Some(self.elapsed);
            self.silence_run = Duration::ZERO;
            self.voiced_run += FRAME;
            if !self.in_word && self.voiced_run >= c.min_word_length {
                self.in_word = true;
                self.words += 1;
                if self.words >= c.maximum_words {
                    return self.decide(AnsweredBy::Machine, "max_words");
                }
            }
            if let Some(start) = self.greeting_start
                && self.elapsed - start > c.greeting
            {
                return self.decide(AnsweredBy::Machine, "long_greeting");
            }
        } else {
            self.silence_run += FRAME;
            if self.silence_run >= c.between_words_silence {
                self.in_word = false;
                self.voiced_run = Duration::ZERO;
            }
            match self.greeting_start {
                None if self.elapsed >= c.initial_silence => {
                    return self.decide(AnsweredBy::Machine, "initial_silence");
                }
                Some(_) if self.words > 0 && self.silence_run >= c.after_greeting_silence => {
                    return self.decide(AnsweredBy::Human, "after_greeting_silence");
                }
                _ => {}
            }
        }
        if self.elapsed >= c.total_analysis_time {
            return self.decide(AnsweredBy::Unknown, "max_analysis_time");
        }
        None
    }
}

/// Detects the voicemail beep: one pure tone between 400 and 2500 Hz, at least -40 dBFS,
/// holding most of the frame's energy, steady (within 50 Hz) for 160 ms or more.
#[derive(Debug, Clone, Default)]
pub struct BeepDetector {
    hz: Option<f32>,
    frames: u32,
    reported: bool,
}

/// Frames a beep must last.
const BEEP_FRAMES: u32 = 8;

impl BeepDetector {
    /// The frequency of a pure tone in a 16 kHz frame, if that is what it is.
    pub fn tone(frame: &[i16]) -> Option<f32> {
        let energy = dialtone_codec::mean_square(frame) as f32;
        if energy < 1e-4 {
            return None;
        }
        let mut best = (0.0f32, 0.0f32);
        let mut hz = 400.0f32;
        while hz <= 2500.0 {
            let p = crate::dtmf::tone_power(frame, 16000.0, hz);
            if p > best.1 {
                best = (hz, p);
            }
            hz += 50.0;
        }
        (best.1 / energy >= 0.8).then_some(best.0)
    }

    /// Takes one frame; returns the beep's frequency once it has lasted long enough.
    pub fn frame(&mut self, frame: &[i16]) -> Option<f32> {
        let tone = Self::tone(frame);
        match (tone, self.hz) {
            (Some(t), Some(h)) if (t - h).abs() <= 50.0 => self.frames += 1,
            (Some(t), _) => {
                self.hz = Some(t);
                self.frames = 1;
                self.reported = false;
            }
            (None, _) => {
                self.hz = None;
                self.frames = 0;
            }
        }
        if self.frames >= BEEP_FRAMES && !self.reported {
            self.reported = true;
            return self.hz;
        }
        None
    }
}

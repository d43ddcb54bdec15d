//! Answering-machine detection from the first seconds of a call, on the VAD's per-frame
//! verdicts and the caller's audio, never reading a clock: one [`Amd::frame`] per 20 ms.
//!
//! **What tells a person from a machine.** Not the length of the first phrase alone ("Good
//! afternoon, Miller residence, Karen speaking." is a person): a person says something and then
//! *stops and waits* for the caller, while a greeting runs on, its pauses between sentences short.
//! So the verdict comes from the pause after the greeting:
//!
//! * a pause of [`AmdConfig::after_greeting_silence`] after a short greeting, or of
//!   [`AmdConfig::after_long_greeting_silence`] after a longer one: a **person**
//!   (`after_greeting_silence`) — about 0.7 s after a "Hello?", so the agent greets at once;
//! * speech running on past [`AmdConfig::greeting`], or saying [`AmdConfig::greeting_syllables`]
//!   syllables (how much was said, whatever the speech rate), without such a pause, or more than
//!   [`AmdConfig::maximum_words`] phrases over [`AmdConfig::many_phrases_greeting`] without one
//!   (sentence after sentence, read out): a **machine** (`long_greeting`);
//! * in `fast` mode, a greeting still running after [`AmdConfig::decide_within`]: **unknown**
//!   (the agent speaks; the rules above go on until the greeting ends);
//! * nothing said for [`AmdConfig::initial_silence`], or no rule by
//!   [`AmdConfig::total_analysis_time`]: **unknown** — treated as a person, never hung up on.
//!
//! Once the agent speaks after an `unknown` verdict, or a `human` verdict stands, the rules are
//! *settled*: what the callee says next is a conversation, never judged by its length.
//!
//! Words shorter than [`AmdConfig::min_word_length`] (a click, a burst of line noise) neither
//! start a greeting nor break a pause, so a noisy line is not a person before anyone spoke.
//!
//! **Listening on.** After a `human` or `unknown` verdict the detector keeps listening for
//! [`AmdConfig::listen_after_verdict`]: a voicemail beep turns the verdict into `machine` (a
//! greeting that opens with "Hello?" and a pause, then a recorded message and its beep); so do
//! voicemail words the caller of [`Amd::heard_words`] found in a transcript
//! ([`voicemail_phrase`]: only what greetings say and people do not — "leave a message", "after
//! the tone") until the rules have settled and [`WORDS_GRACE`] after (a transcript comes a while
//! after its words); and speech resuming at once after a `human` verdict (before the agent's
//! greeting could have been answered) and running on as a recording does. A `machine` verdict
//! is never taken back, and its detector listens on for [`MACHINE_LISTENING`] (for the beep).
//!
//! **When to leave the message.** After a `machine` verdict, [`AmdEvent::Beep`] comes when a
//! beep *ends* ([`BeepDetector`]); with no beep, [`AmdEvent::GreetingEnded`] once the greeting
//! has been silent for [`AmdConfig::final_silence`]. A beep that comes later still is reported
//! too (the engine starts its message again after it).

use std::time::Duration;

pub use dialtone_model::{AmdExplanation, AmdMode, AmdReason, AnsweredBy};

use crate::dtmf::tone_powers;
use crate::vad::FrameVoice;

const FRAME: Duration = Duration::from_millis(20);
/// How far below the loudest voiced frame the answerer's own speech may be; quieter voiced
/// frames are voices behind them.
const LOUD_RANGE_DB: f32 = 15.0;
/// How long after the rules settled a transcript's voicemail words still count (the
/// transcript of the last words before them comes after them).
pub const WORDS_GRACE: Duration = Duration::from_secs(3);
/// How long a `machine` verdict listens on, for the beep (a message that started on the
/// greeting's silence, or on a time limit, starts again after a late beep).
pub const MACHINE_LISTENING: Duration = Duration::from_secs(45);

/// AMD settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdConfig {
    /// Silence before any word this long: `unknown` (the agent speaks).
    pub initial_silence: Duration,
    /// A person's greeting is at most this long: speech running on longer without a person's
    /// pause is a machine's.
    pub greeting: Duration,
    /// A person's greeting says fewer syllables than this (whatever their rate): more without
    /// a person's pause is a machine's.
    pub greeting_syllables: u32,
    /// Speech running on this long without a verdict: `unknown` (the agent speaks; the rules
    /// go on, and a greeting reaching [`AmdConfig::greeting`] is still a machine's).
    pub decide_within: Duration,
    /// A greeting up to this long is short: [`AmdConfig::after_greeting_silence`] after it is
    /// a person.
    pub short_greeting: Duration,
    /// The pause after a short greeting that means a person waits.
    pub after_greeting_silence: Duration,
    /// The pause after a longer greeting that means a person waits.
    pub after_long_greeting_silence: Duration,
    /// No verdict by then: `unknown`.
    pub total_analysis_time: Duration,
    /// Speech resuming this soon after a `human` verdict (before the agent's greeting could
    /// have been answered) is watched as the rest of a greeting.
    pub resume_within: Duration,
    /// Speech resumed that soon running on this long without a person's pause: a machine.
    pub resumed_greeting: Duration,
    /// Voiced stretches shorter than this are not words.
    pub min_word_length: Duration,
    /// A pause at least this long separates phrases.
    pub between_words_silence: Duration,
    /// More phrases than this in a greeting of at least
    /// [`AmdConfig::many_phrases_greeting`] without a person's pause: a machine.
    pub maximum_words: u32,
    /// How long a greeting of more than [`AmdConfig::maximum_words`] phrases must be to be a
    /// machine's.
    pub many_phrases_greeting: Duration,
    /// After a machine's greeting with no beep, the silence that ends it.
    pub final_silence: Duration,
    /// How long a `human` or `unknown` verdict keeps listening for a beep or voicemail words.
    pub listen_after_verdict: Duration,
}

impl AmdConfig {
    /// The defaults of `mode`.
    pub fn for_mode(mode: AmdMode) -> Self {
        let fast = mode == AmdMode::Fast;
        Self {
            initial_silence: Duration::from_millis(if fast { 2500 } else { 3500 }),
            greeting: Duration::from_millis(if fast { 5500 } else { 6500 }),
            decide_within: Duration::from_millis(if fast { 2500 } else { 60_000 }),
            greeting_syllables: 24,
            short_greeting: Duration::from_millis(1200),
            after_greeting_silence: Duration::from_millis(700),
            after_long_greeting_silence: Duration::from_millis(if fast { 1100 } else { 1200 }),
            total_analysis_time: Duration::from_millis(if fast { 5000 } else { 9000 }),
            resume_within: Duration::from_millis(1500),
            resumed_greeting: Duration::from_millis(3500),
            min_word_length: Duration::from_millis(100),
            between_words_silence: Duration::from_millis(350),
            maximum_words: 2,
            many_phrases_greeting: Duration::from_millis(3400),
            final_silence: Duration::from_millis(1500),
            listen_after_verdict: Duration::from_secs(15),
        }
    }
}

impl Default for AmdConfig {
    fn default() -> Self {
        Self::for_mode(AmdMode::Fast)
    }
}

/// A verdict, the rule that gave it and the timings it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdVerdict {
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// Why, with the timings (from the answer).
    pub explanation: AmdExplanation,
}

impl AmdVerdict {
    /// The rule that decided.
    pub fn reason(&self) -> AmdReason {
        self.explanation.code
    }

    /// When it was given, from the answer.
    pub fn after(&self) -> Duration {
        Duration::from_millis(self.explanation.after_ms.into())
    }
}

/// What the detector says.
#[derive(Debug, Clone, PartialEq)]
pub enum AmdEvent {
    /// A verdict (a later one may turn `human` or `unknown` into `machine`).
    Verdict(AmdVerdict),
    /// A voicemail beep ended (whatever the verdict: after a `human` verdict one comes with
    /// a `machine` verdict before it).
    Beep {
        /// Its frequency.
        hz: f32,
        /// How long it lasted.
        duration: Duration,
    },
    /// After a `machine` verdict and no beep, the greeting fell silent for
    /// [`AmdConfig::final_silence`].
    GreetingEnded {
        /// How long it has been silent.
        silent_for: Duration,
    },
}

/// Finds syllables in the answerer's speech: peaks of its frame loudness standing
/// [`SYLLABLE_PROMINENCE_DB`] above the dips on either side (a vowel between consonants or
/// pauses), one every 150–300 ms in speech at any rate.
#[derive(Debug, Clone, Copy)]
struct SyllableTracker {
    /// The highest level since the last dip, and the dip before it.
    peak: f32,
    dip: f32,
}

/// How far a syllable's peak stands above the dips around it.
const SYLLABLE_PROMINENCE_DB: f32 = 4.0;

impl Default for SyllableTracker {
    fn default() -> Self {
        Self {
            peak: -100.0,
            dip: -100.0,
        }
    }
}

impl SyllableTracker {
    /// Takes a frame's level when it is the answerer's speech (`None` otherwise); true when a
    /// syllable's peak has just been passed.
    fn frame(&mut self, level: Option<f32>) -> bool {
        let level = level.unwrap_or(-100.0);
        if level > self.peak {
            self.peak = level;
            return false;
        }
        if self.peak - level >= SYLLABLE_PROMINENCE_DB {
            // Down from a peak: a syllable if it stood out from the dip before it; the next
            // rise starts from here.
            let syllable = self.peak - self.dip >= SYLLABLE_PROMINENCE_DB;
            self.peak = level;
            self.dip = level;
            return syllable;
        }
        self.dip = self.dip.min(level);
        false
    }
}

/// A run of speech frames (a word, once long enough).
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Its first frame's start.
    start: Duration,
    /// Its last speech frame's end.
    last: Duration,
    /// Speech in it.
    speech: Duration,
}

/// The longest dip inside a word (between syllables), from its last loud frame.
const WORD_GAP: Duration = Duration::from_millis(160);

/// The detector of one call.
#[derive(Debug, Clone)]
pub struct Amd {
    config: AmdConfig,
    beep: BeepDetector,
    elapsed: Duration,
    /// The first word's start (of the greeting, or of speech resuming after a `human`
    /// verdict).
    greeting_start: Option<Duration>,
    /// The very first word's start.
    first_word: Option<Duration>,
    /// The last word's end (a word: a voiced stretch of at least `min_word_length`).
    last_word_end: Option<Duration>,
    /// The run of speech under way.
    run: Option<Run>,
    phrases: u32,
    /// Syllables of the greeting (peaks of its loudness), and the tracker finding them.
    syllables: u32,
    syllable: SyllableTracker,
    longest_pause: Duration,
    verdict: Option<AmdVerdict>,
    /// When the rules had their say (a `human` verdict stood, or the agent spoke after an
    /// `unknown` one): only a beep, or voicemail words soon after, change the verdict now.
    settled: Option<Duration>,
    /// After a `human` verdict, speech resuming before this is watched as a greeting.
    resume_until: Duration,
    /// The loudest voiced frame so far, dBFS.
    loudest: f32,
    beep_heard: bool,
    greeting_ended: bool,
    /// Silence since the machine verdict (or the last sound after it).
    quiet_after_machine: Duration,
    events: Vec<AmdEvent>,
}

impl Amd {
    /// A detector starting at the answer.
    pub fn new(config: AmdConfig) -> Self {
        Self {
            config,
            beep: BeepDetector::default(),
            elapsed: Duration::ZERO,
            greeting_start: None,
            first_word: None,
            last_word_end: None,
            run: None,
            phrases: 0,
            syllables: 0,
            syllable: SyllableTracker::default(),
            longest_pause: Duration::ZERO,
            verdict: None,
            settled: None,
            resume_until: Duration::ZERO,
            loudest: -100.0,
            beep_heard: false,
            greeting_ended: false,
            quiet_after_machine: Duration::ZERO,
            events: Vec::with_capacity(2),
        }
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Option<&AmdVerdict> {
        self.verdict.as_ref()
    }

    fn ms(d: Duration) -> u32 {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
    }

    /// Whether it still listens: before a verdict, and for
    /// [`AmdConfig::listen_after_verdict`] after the last one (for a beep after a `machine`
    /// verdict, or for a beep or voicemail words overturning a `human` or `unknown` one).
    pub fn listening(&self) -> bool {
        self.verdict.as_ref().is_none_or(|v| {
            let window = if v.answered_by == AnsweredBy::Machine {
                MACHINE_LISTENING
            } else {
                self.config.listen_after_verdict
            };
            self.elapsed < v.after() + window
        })
    }

    fn settle(&mut self) {
        self.settled.get_or_insert(self.elapsed);
    }

    fn explanation(&self, code: AmdReason) -> AmdExplanation {
        let greeting = self
            .greeting_start
            .zip(self.last_word_end)
            .map(|(start, end)| Self::ms(end.saturating_sub(start)));
        AmdExplanation {
            initial_silence_ms: Some(Self::ms(self.first_word.unwrap_or(self.elapsed))),
            greeting_ms: greeting,
            pause_ms: self
                .last_word_end
                .map(|end| Self::ms(self.elapsed.saturating_sub(end).max(self.longest_pause))),
            phrases: self.greeting_start.map(|_| self.phrases),
            syllables: self.greeting_start.map(|_| self.syllables),
            ..AmdExplanation::new(code, Self::ms(self.elapsed))
        }
    }

    fn decide(&mut self, answered_by: AnsweredBy, explanation: AmdExplanation) {
        let replaced = self.verdict.as_ref().map(|v| v.answered_by);
        let verdict = AmdVerdict {
            answered_by,
            explanation: AmdExplanation {
                replaced,
                ..explanation
            },
        };
        self.verdict = Some(verdict.clone());
        self.quiet_after_machine = Duration::ZERO;
        self.events.push(AmdEvent::Verdict(verdict));
    }

    /// Whether a verdict may become `machine`: none yet, or a `human`/`unknown` one still
    /// listening.
    fn may_become_machine(&self) -> bool {
        self.verdict
            .as_ref()
            .is_none_or(|v| v.answered_by != AnsweredBy::Machine && self.listening())
    }

    /// Voicemail words found in what the caller said (a transcript of the first seconds):
    /// before a verdict, or while a `human`/`unknown` one listens, the verdict becomes
    /// `machine` (`voicemail_phrase`). Returns what it says.
    pub fn heard_words(&mut self, text: &str) -> Vec<AmdEvent> {
        let in_time = self
            .settled
            .is_none_or(|at| self.elapsed < at + WORDS_GRACE);
        if self.may_become_machine()
            && in_time
            && let Some(phrase) = voicemail_phrase(text)
        {
            let explanation = AmdExplanation {
                phrase: Some(phrase.to_owned()),
                ..self.explanation(AmdReason::VoicemailPhrase)
            };
            self.decide(AnsweredBy::Machine, explanation);
        }
        std::mem::take(&mut self.events)
    }

    /// Takes one 20 ms frame (16 kHz), the VAD's reading of it (whether voiced, and its level)
    /// and whether the agent is speaking; returns what it says.
    pub fn frame(
        &mut self,
        samples: &[i16],
        voice: FrameVoice,
        agent_speaking: bool,
    ) -> Vec<AmdEvent> {
        if !self.listening() {
            return Vec::new();
        }
        self.elapsed += FRAME;
        let tone = self.beep.frame(samples);
        let tonal = self.beep.in_tone();
        let voiced = voice.voiced && !tonal;
        let level = voice.level_dbfs;
        let loud = voiced && self.loud_enough(level);
        self.words(voiced, loud);
        if self.syllable.frame(loud.then_some(level)) && self.greeting_start.is_some() {
            self.syllables += 1;
        }
        if let Some((hz, duration)) = tone {
            self.beep_heard = true;
            if self.may_become_machine() {
                let explanation = AmdExplanation {
                    beep_hz: Some(hz.round() as u32),
                    beep_ms: Some(Self::ms(duration)),
                    ..self.explanation(AmdReason::Beep)
                };
                self.decide(AnsweredBy::Machine, explanation);
            }
            self.events.push(AmdEvent::Beep { hz, duration });
        }
        let verdict = self.verdict.as_ref().map(|v| (v.answered_by, v.reason()));
        if agent_speaking
            && matches!(
                verdict,
                Some((AnsweredBy::Unknown, AmdReason::InitialSilence))
            )
        {
            // The agent speaks to a callee who said nothing: what they answer is a reply.
            self.settle();
        }
        match verdict {
            Some((AnsweredBy::Machine, _)) => self.await_message_cue(voiced || tonal),
            _ if self.settled.is_none() => self.rules(),
            _ => {}
        }
        std::mem::take(&mut self.events)
    }

    /// Whether a voiced frame is the answerer's own speech rather than voices behind them
    /// (a television, an office): within [`LOUD_RANGE_DB`] of the loudest voiced frame so far.
    fn loud_enough(&mut self, level: f32) -> bool {
        self.loudest = self.loudest.max(level);
        level >= self.loudest - LOUD_RANGE_DB
    }

    /// Tracks words, phrases and pauses. A word is a run of the answerer's speech (`loud`
    /// voiced frames; quieter voiced frames between them count, dips of up to [`WORD_GAP`]
    /// are bridged) holding [`AmdConfig::min_word_length`] of voice; it ends at its last loud
    /// frame, so voices behind the answerer neither start a word nor stretch one.
    fn words(&mut self, voiced: bool, loud: bool) {
        let c = self.config;
        if let Some(run) = self.run
            && self.elapsed - run.last > WORD_GAP
        {
            self.run = None;
        }
        if !voiced {
            return;
        }
        let start = self.elapsed - FRAME;
        let Some(run) = (match (&mut self.run, loud) {
            (Some(run), _) => Some(run),
            (None, true) => Some(self.run.insert(Run {
                start,
                last: start,
                speech: Duration::ZERO,
            })),
            (None, false) => None,
        }) else {
            return;
        };
        run.speech += FRAME;
        if loud {
            run.last = self.elapsed;
        }
        let Run {
            start,
            speech,
            last,
        } = *run;
        if speech < c.min_word_length {
            return;
        }
        if self.greeting_start.is_none() {
            self.greeting_start = Some(start);
            self.first_word.get_or_insert(start);
            self.phrases = 1;
            self.syllables = 0;
        } else if let Some(end) = self.last_word_end
            && end < start
        {
            // A new word after a pause.
            let pause = start - end;
            if pause >= c.between_words_silence {
                self.phrases += 1;
            }
            self.longest_pause = self.longest_pause.max(pause);
        }
        self.last_word_end = Some(last);
    }

    /// The rules, before a verdict and while a `human` or `unknown` one may still change: an
    /// `unknown` one becomes `human` when the greeting ends as a person's; speech resuming at
    /// once after a `human` verdict and running on as a recording does makes it `machine`.
    fn rules(&mut self) {
        let c = self.config;
        let verdict = self.verdict.as_ref().map(|v| v.answered_by);
        let Some(start) = self.greeting_start else {
            match verdict {
                None if self.elapsed >= c.initial_silence => {
                    let explanation = self.explanation(AmdReason::InitialSilence);
                    self.decide(AnsweredBy::Unknown, explanation);
                }
                Some(AnsweredBy::Human) if self.elapsed > self.resume_until => self.settle(),
                _ => {}
            }
            return;
        };
        if verdict == Some(AnsweredBy::Human) && start > self.resume_until {
            // The person spoke again, after the agent had its turn: a conversation.
            self.settle();
            return;
        }
        let end = self.last_word_end.unwrap_or(start);
        let length = end - start;
        let pause = self.elapsed - end;
        let waits = if length <= c.short_greeting {
            c.after_greeting_silence
        } else {
            c.after_long_greeting_silence
        };
        if self.phrases > c.maximum_words && length >= c.many_phrases_greeting {
            // Sentence after sentence with short pauses between: read out, not said.
            let explanation = self.explanation(AmdReason::LongGreeting);
            self.decide(AnsweredBy::Machine, explanation);
        } else if pause >= waits {
            if verdict == Some(AnsweredBy::Human) {
                // What followed the first words ended as a person's does too.
                self.settle();
            } else {
                let explanation = self.explanation(AmdReason::AfterGreetingSilence);
                self.decide(AnsweredBy::Human, explanation);
                // Watch what comes next: a recording goes on at once. (After a silent answer
                // the agent spoke first, and the rules settled when it did.)
                self.resume_until = self.elapsed + c.resume_within;
                self.greeting_start = None;
                self.last_word_end = None;
            }
        } else if length >= c.greeting
            || self.syllables >= c.greeting_syllables
            || (verdict == Some(AnsweredBy::Human) && length >= c.resumed_greeting)
        {
            let explanation = self.explanation(AmdReason::LongGreeting);
            self.decide(AnsweredBy::Machine, explanation);
        } else if verdict.is_none()
            && (self.elapsed - start >= c.decide_within || self.elapsed >= c.total_analysis_time)
        {
            let explanation = self.explanation(AmdReason::MaxAnalysisTime);
            self.decide(AnsweredBy::Unknown, explanation);
        }
    }

    /// After a `machine` verdict: the greeting's final silence, when no beep came.
    fn await_message_cue(&mut self, sound: bool) {
        if self.beep_heard || self.greeting_ended {
            return;
        }
        self.quiet_after_machine = if sound {
            Duration::ZERO
        } else {
            self.quiet_after_machine + FRAME
        };
        if self.quiet_after_machine >= self.config.final_silence {
            self.greeting_ended = true;
            self.events.push(AmdEvent::GreetingEnded {
                silent_for: self.quiet_after_machine,
            });
        }
    }
}

/// Phrases of voicemail greetings that people do not say to a caller (so "he's not available"
/// or "I'll call you back" are not among them), in the languages agents speak (lower case,
/// matched on words with punctuation ignored).
const VOICEMAIL_PHRASES: &[&str] = &[
    // English
    "leave a message",
    "leave your message",
    "leave me a message",
    "leave a voicemail",
    "leave your name",
    "record your message",
    "after the tone",
    "after the beep",
    "at the tone",
    "at the beep",
    "please record",
    "when you have finished recording",
    "when you are finished recording",
    "voice mailbox",
    "voicemail box",
    "mailbox is full",
    // Spanish
    "deje su mensaje",
    "deje un mensaje",
    "después del tono",
    "buzón de voz",
    // French
    "laissez un message",
    "laissez votre message",
    "après le bip",
    "messagerie vocale",
    // German
    "hinterlassen sie eine nachricht",
    "nach dem signalton",
    "nach dem piepton",
    // Portuguese, Italian
    "deixe sua mensagem",
    "deixe uma mensagem",
    "caixa postal",
    "lasci un messaggio",
    "segreteria telefonica",
];

/// The voicemail phrase in `text`, if it has one ("leave a message", "after the tone",
/// "record your message"…, in English and a few other languages).
pub fn voicemail_phrase(text: &str) -> Option<&'static str> {
    let words: String = text
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '’' => '\'',
            c if c.is_alphanumeric() || c == '\'' => c,
            _ => ' ',
        })
        .collect();
    let normalised = format!(
        " {} ",
        words.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    VOICEMAIL_PHRASES
        .iter()
        .find(|phrase| normalised.contains(&format!(" {phrase} ")))
        .copied()
}

/// Detects a voicemail beep and reports it when it *ends*: one tone between 400 and 2,000 Hz
/// (its harmonics allowed, a slight chirp or a step to another tone allowed) holding most of
/// the frame's energy, at least -45 dBFS, lasting 140 ms to 2.5 s. Speech is refused by its
/// sub-harmonic (a voice's fundamental lies below the tone the search finds) and its changing
/// pitch; DTMF by its second tone.
#[derive(Debug, Clone, Default)]
pub struct BeepDetector {
    /// The tone under way: its first frequency and how many frames it has lasted.
    tone: Option<(f32, u32)>,
    /// The last tonal frame's frequency.
    last_hz: f32,
    /// Non-tonal frames since the last tonal one inside a tone (one is forgiven).
    gap: u32,
}

/// Frames a beep must last (140 ms).
const BEEP_MIN_FRAMES: u32 = 7;
/// Frames a beep may last (2.5 s): a longer tone is something else (a fax's answer tone).
const BEEP_MAX_FRAMES: u32 = 125;
/// The lowest and highest beep frequency searched.
const BEEP_LOW_HZ: f32 = 380.0;
const BEEP_HIGH_HZ: f32 = 2100.0;
/// The quietest beep, dBFS.
const BEEP_MIN_DBFS: f32 = -45.0;
/// How far a beep's frequency may move from one frame to the next and still be the same tone
/// (a chirp); a larger step starts a new tone but keeps the beep's length.
const BEEP_GLIDE_HZ: f32 = 60.0;

impl BeepDetector {
    /// The frequency of a tone in a 16 kHz frame, if that is what it is.
    pub fn tone(frame: &[i16]) -> Option<f32> {
        let energy = dialtone_codec::mean_square(frame) as f32;
        if 10.0 * energy.max(1e-10).log10() < BEEP_MIN_DBFS {
            return None;
        }
        let estimate = zero_crossing_hz(frame)?;
        if !(BEEP_LOW_HZ - 100.0..=BEEP_HIGH_HZ + 100.0).contains(&estimate) {
            return None;
        }
        // Refine around the estimate in 10 Hz steps (the 20 ms window's bins are 50 Hz wide:
        // a tone between bins would lose half its power to a coarse grid), all in one pass.
        let low = (estimate - 80.0).clamp(BEEP_LOW_HZ, BEEP_HIGH_HZ - 160.0);
        let grid: [f32; 17] = std::array::from_fn(|i| low + 10.0 * i as f32);
        let powers = tone_powers(frame, 16000.0, &grid);
        let (hz, fundamental) = grid
            .iter()
            .zip(powers)
            .fold(
                (0.0f32, 0.0f32),
                |best, (hz, p)| if p > best.1 { (*hz, p) } else { best },
            );
        if fundamental < 0.35 * energy {
            return None;
        }
        // Its harmonics, and the sub-harmonics a voice's fundamental would be at.
        let [second, third, half, a_third] =
            tone_powers(frame, 16000.0, &[2.0 * hz, 3.0 * hz, hz / 2.0, hz / 3.0]);
        let harmonics = fundamental + second + if 3.0 * hz < 7800.0 { third } else { 0.0 };
        (harmonics >= 0.75 * energy && half + a_third <= 0.05 * energy).then_some(hz)
    }

    /// Whether a tone is under way.
    pub fn in_tone(&self) -> bool {
        self.tone.is_some()
    }

    /// Takes one frame; returns the beep's frequency and length when it ends.
    pub fn frame(&mut self, frame: &[i16]) -> Option<(f32, Duration)> {
        match (Self::tone(frame), self.tone) {
            (Some(hz), Some((first, frames))) => {
                if (hz - self.last_hz).abs() > BEEP_GLIDE_HZ && frames < BEEP_MIN_FRAMES {
                    // Not one tone yet: start again from this one.
                    self.tone = Some((hz, 1));
                } else {
                    self.tone = Some((first, frames + 1 + self.gap));
                }
                self.last_hz = hz;
                self.gap = 0;
                None
            }
            (Some(hz), None) => {
                self.tone = Some((hz, 1));
                self.last_hz = hz;
                self.gap = 0;
                None
            }
            (None, Some((first, frames))) => {
                if self.gap == 0 && frames >= BEEP_MIN_FRAMES {
                    // One frame's dropout is forgiven inside a beep.
                    self.gap = 1;
                    return None;
                }
                self.tone = None;
                self.gap = 0;
                (BEEP_MIN_FRAMES..=BEEP_MAX_FRAMES)
                    .contains(&frames)
                    .then(|| (first, FRAME * frames))
            }
            (None, None) => None,
        }
    }
}

/// A frequency estimate from the zero crossings of a frame (a tone crosses twice a period; its
/// harmonics, weaker, rarely add crossings), refined by Goertzel afterwards.
fn zero_crossing_hz(frame: &[i16]) -> Option<f32> {
    let crossings = frame
        .windows(2)
        .filter(|w| matches!(w, [a, b] if (*a < 0) != (*b < 0)))
        .count();
    (frame.len() > 1).then(|| crossings as f32 * 16000.0 / (2.0 * (frame.len() - 1) as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the VAD would say of `frame`: `voiced`, at the frame's level.
    fn heard(frame: &[i16], voiced: bool) -> FrameVoice {
        FrameVoice {
            voiced,
            score: if voiced { 1.0 } else { 0.0 },
            level_dbfs: crate::level_dbfs(frame),
            noise_floor_dbfs: -100.0,
        }
    }

    fn sine(hz: f32, ms: usize, amplitude: f32) -> Vec<i16> {
        (0..ms * 16)
            .map(|n| (amplitude * (std::f32::consts::TAU * hz * n as f32 / 16000.0).sin()) as i16)
            .collect()
    }

    fn beeps(audio: &[i16]) -> Vec<(f32, Duration)> {
        let mut d = BeepDetector::default();
        audio.chunks(320).filter_map(|f| d.frame(f)).collect()
    }

    #[test]
    fn a_beep_is_reported_when_it_ends_at_any_frequency_between_the_grid() {
        for hz in [425.0, 1000.0, 1033.0, 1400.0, 1975.0] {
            let audio = [sine(hz, 500, 8000.0), vec![0; 3200]].concat();
            let found = beeps(&audio);
            assert_eq!(found.len(), 1, "{hz} Hz: {found:?}");
            let (f, d) = found[0];
            assert!((f - hz).abs() <= 15.0, "{hz} Hz heard as {f}");
            assert!(d.abs_diff(Duration::from_millis(500)) <= FRAME, "{d:?}");
        }
    }

    #[test]
    fn a_blip_dtmf_and_a_two_tone_are_not_beeps() {
        assert!(beeps(&[sine(1000.0, 100, 8000.0), vec![0; 3200]].concat()).is_empty());
        let dtmf: Vec<i16> = sine(770.0, 400, 6000.0)
            .iter()
            .zip(sine(1336.0, 400, 6000.0))
            .map(|(a, b)| a + b)
            .collect();
        assert!(beeps(&[dtmf, vec![0; 3200]].concat()).is_empty());
    }

    #[test]
    fn harmonics_and_a_chirp_are_still_a_beep_and_a_voice_is_not() {
        let rich: Vec<i16> = sine(800.0, 400, 6000.0)
            .iter()
            .zip(sine(1600.0, 400, 2500.0))
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(beeps(&[rich, vec![0; 3200]].concat()).len(), 1);
        let chirp: Vec<i16> = (0..16 * 600)
            .map(|n| {
                let t = n as f32 / 16000.0;
                (8000.0 * (std::f32::consts::TAU * (1000.0 * t + 25.0 * t * t)).sin()) as i16
            })
            .collect();
        assert_eq!(beeps(&[chirp, vec![0; 3200]].concat()).len(), 1);
        // A vowel: 200 Hz with its harmonics; the strongest in the beep band is the 2nd.
        let vowel: Vec<i16> = (0..16 * 600)
            .map(|n| {
                let t = n as f32 / 16000.0;
                let tau = std::f32::consts::TAU;
                (4000.0 * (tau * 200.0 * t).sin()
                    + 5000.0 * (tau * 400.0 * t).sin()
                    + 2000.0 * (tau * 600.0 * t).sin()) as i16
            })
            .collect();
        assert!(beeps(&[vowel, vec![0; 3200]].concat()).is_empty());
    }

    /// Drives a detector with `(ms, kind)` stretches: `'v'` the answerer's voice, `'q'` a
    /// voice 26 dB quieter behind them, `'.'` silence; every verdict with its time.
    fn drive(amd: &mut Amd, script: &[(u64, char)]) -> Vec<(AnsweredBy, AmdReason, u32)> {
        let mut seed = 1u32;
        let mut out = Vec::new();
        for (ms, kind) in script {
            for _ in 0..ms / 20 {
                let amplitude = match kind {
                    'v' => 8000,
                    'q' => 400,
                    _ => 0,
                };
                let frame: Vec<i16> = (0..320)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        ((seed >> 16) as i32 % amplitude.max(1)) as i16
                    })
                    .collect();
                for event in amd.frame(&frame, heard(&frame, *kind != '.'), false) {
                    if let AmdEvent::Verdict(v) = event {
                        out.push((v.answered_by, v.reason(), v.explanation.after_ms));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_long_introduction_then_waiting_is_a_person_and_sentences_read_out_a_machine() {
        let mut amd = Amd::new(AmdConfig::default());
        let verdicts = drive(&mut amd, &[(400, '.'), (4200, 'v'), (3000, '.')]);
        assert_eq!(
            verdicts,
            [
                (AnsweredBy::Unknown, AmdReason::MaxAnalysisTime, 2900),
                (AnsweredBy::Human, AmdReason::AfterGreetingSilence, 5700)
            ]
        );
        let mut amd = Amd::new(AmdConfig::for_mode(AmdMode::Accurate));
        let greeting = [
            (300, '.'),
            (1400, 'v'),
            (500, '.'),
            (1200, 'v'),
            (600, '.'),
            (1500, 'v'),
            (3000, '.'),
        ];
        let verdicts = drive(&mut amd, &greeting);
        assert_eq!(
            verdicts,
            [(AnsweredBy::Machine, AmdReason::LongGreeting, 4100)]
        );
    }

    #[test]
    fn voices_behind_a_person_neither_lengthen_nor_end_their_pause() {
        let mut amd = Amd::new(AmdConfig::default());
        let verdicts = drive(&mut amd, &[(300, '.'), (500, 'v'), (6000, 'q')]);
        assert_eq!(
            verdicts,
            [(AnsweredBy::Human, AmdReason::AfterGreetingSilence, 1500)]
        );
    }

    #[test]
    fn a_recording_resuming_after_its_hello_turns_the_verdict_and_words_do_too() {
        let mut amd = Amd::new(AmdConfig::default());
        let verdicts = drive(
            &mut amd,
            &[(300, '.'), (500, 'v'), (900, '.'), (3800, 'v'), (1000, '.')],
        );
        let turned: Vec<_> = verdicts.iter().map(|v| (v.0, v.1)).collect();
        assert_eq!(
            turned,
            [
                (AnsweredBy::Human, AmdReason::AfterGreetingSilence),
                (AnsweredBy::Machine, AmdReason::LongGreeting)
            ]
        );
        assert_eq!(
            amd.verdict().unwrap().explanation.replaced,
            Some(AnsweredBy::Human)
        );
        // A person who said "Hello?" and then talks with the agent stays a person, whatever
        // their words a while later.
        let mut amd = Amd::new(AmdConfig::default());
        let verdicts = drive(
            &mut amd,
            &[
                (300, '.'),
                (500, 'v'),
                (3000, '.'),
                (6000, 'v'),
                (4000, '.'),
            ],
        );
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert!(
            amd.heard_words("you can leave a message with me")
                .is_empty()
        );
        // Voicemail words soon after a person verdict (the transcript of what followed the
        // "Hello?") overturn it.
        let mut amd = Amd::new(AmdConfig::default());
        drive(&mut amd, &[(300, '.'), (500, 'v'), (900, '.')]);
        let events = amd.heard_words("Sorry, please leave a message after the tone");
        let Some(AmdEvent::Verdict(v)) = events.first() else {
            panic!("{events:?}")
        };
        assert_eq!(
            (v.answered_by, v.reason(), v.explanation.phrase.as_deref()),
            (
                AnsweredBy::Machine,
                AmdReason::VoicemailPhrase,
                Some("leave a message")
            )
        );
    }

    #[test]
    fn a_silent_answer_is_unknown_and_the_reply_to_the_agent_is_never_judged() {
        let mut amd = Amd::new(AmdConfig::default());
        let mut verdicts = drive(&mut amd, &[(3000, '.')]);
        // The agent speaks; the callee answers at length, sentence after sentence.
        let frame = [0i16; 320];
        for _ in 0..50 {
            assert!(amd.frame(&frame, heard(&frame, false), true).is_empty());
        }
        verdicts.extend(drive(
            &mut amd,
            &[
                (2000, 'v'),
                (500, '.'),
                (2000, 'v'),
                (500, '.'),
                (3000, 'v'),
                (2000, '.'),
            ],
        ));
        assert_eq!(
            verdicts,
            [(AnsweredBy::Unknown, AmdReason::InitialSilence, 2500)]
        );
    }

    #[test]
    fn after_a_machine_verdict_the_greetings_final_silence_is_the_cue_without_a_beep() {
        let mut amd = Amd::new(AmdConfig::for_mode(AmdMode::Accurate));
        let mut cue = None;
        let mut elapsed = 0;
        for (ms, voiced) in [
            (300, false),
            (7000, true),
            (700, false),
            (1000, true),
            (3000, false),
        ] {
            for _ in 0..ms / 20 {
                elapsed += 20;
                let frame = [if voiced { 3000i16 } else { 0 }; 320];
                for event in amd.frame(&frame, heard(&frame, voiced), false) {
                    if let AmdEvent::GreetingEnded { silent_for } = event {
                        cue = Some((elapsed, silent_for));
                    }
                }
            }
        }
        // The pause within the greeting was not its end; 1.5 s after its last word was.
        assert_eq!(
            cue,
            Some((300 + 7000 + 700 + 1000 + 1500, Duration::from_millis(1500)))
        );
    }

    #[test]
    fn syllables_are_the_peaks_of_loudness_at_any_rate() {
        for (per_second, seconds) in [(3.0f32, 3.0f32), (6.0, 2.0)] {
            let mut tracker = SyllableTracker::default();
            let frames = (seconds * 50.0) as usize;
            let found = (0..frames + 10)
                .filter(|i| {
                    // Loudness swinging 12 dB per syllable; then silence.
                    let t = *i as f32 / 50.0;
                    let level = (*i < frames)
                        .then(|| -30.0 + 6.0 * (std::f32::consts::TAU * per_second * t).cos());
                    tracker.frame(level)
                })
                .count();
            let expected = (per_second * seconds) as usize;
            assert!(
                found.abs_diff(expected) <= 1,
                "{found} syllables, {expected} spoken"
            );
        }
    }

    #[test]
    fn voicemail_phrases_are_found_in_words_not_inside_them() {
        assert_eq!(
            voicemail_phrase("Hi, you've reached Sam. Please leave a message!"),
            Some("leave a message")
        );
        assert_eq!(
            voicemail_phrase("He’s not available, I’ll call you back"),
            None
        );
        assert_eq!(
            voicemail_phrase("Please record your message."),
            Some("record your message")
        );
        assert_eq!(voicemail_phrase("Hello? Who is this?"), None);
        assert_eq!(voicemail_phrase("the voice mailboxes"), None);
    }
}

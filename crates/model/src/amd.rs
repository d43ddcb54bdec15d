//! Answering-machine detection on the wire: the agent's `amd.mode`, and the call record's
//! `answered_by_reason` — the rule that gave the verdict ([`AmdReason`]), the timings it used
//! and, when a voicemail message was left, what it waited for ([`MessageCue`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::wire_enum;

wire_enum! {
    /// How the detector trades speed for evidence.
    pub enum AmdMode ("AMD mode") {
        /// A verdict soon, biased to "person": a greeting still running 2.5 s after its first
        /// word is `unknown` (the agent speaks) while the rules go on, and a person is greeted
        /// 0.7 s after a short greeting, 1.1 s after a longer one.
        Fast = "fast",
        /// Waits for more evidence: 1.2 s of pause after a long greeting before saying "person",
        /// 3.5 s of silence before `unknown`, and no `unknown` while a greeting runs.
        Accurate = "accurate",
    }
}

wire_enum! {
    /// The rule behind a verdict.
    pub enum AmdReason ("AMD reason") {
        /// Person: a greeting, then a pause a person makes waiting for the caller.
        AfterGreetingSilence = "after_greeting_silence",
        /// Machine: the greeting ran on without the pause a person makes.
        LongGreeting = "long_greeting",
        /// Machine: a voicemail beep was heard.
        Beep = "beep",
        /// Machine: the words were a voicemail greeting's ("leave a message", "not available"…).
        VoicemailPhrase = "voicemail_phrase",
        /// Unknown: nothing was said (the agent speaks and keeps listening).
        InitialSilence = "initial_silence",
        /// Unknown: no rule decided within the analysis time (the agent speaks and keeps
        /// listening).
        MaxAnalysisTime = "max_analysis_time",
    }
}

wire_enum! {
    /// What a voicemail message waited for before it started.
    pub enum MessageCue ("message cue") {
        /// The end of the beep.
        Beep = "beep",
        /// No beep: the greeting's final silence.
        Silence = "silence",
        /// Neither came in time: the message started anyway.
        Timeout = "timeout",
    }
}

/// Why answering-machine detection said what it said: the call record's `answered_by_reason`.
/// Times are from the answer, in ms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AmdExplanation {
    /// The rule that decided (the last verdict's, when a later one replaced an earlier).
    pub code: AmdReason,
    /// When the verdict was given.
    pub after_ms: u32,
    /// Silence before the first word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_silence_ms: Option<u32>,
    /// The greeting's length so far: first word to last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting_ms: Option<u32>,
    /// The pause after the greeting that decided (person), or the longest within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<u32>,
    /// Phrases (speech between pauses of 350 ms or more) in the greeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrases: Option<u32>,
    /// Syllables in the greeting (how much was said, whatever the rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syllables: Option<u32>,
    /// The verdict this one replaced (a person or unknown verdict a beep or voicemail words
    /// overturned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<crate::AnsweredBy>,
    /// The beep's frequency, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beep_hz: Option<u32>,
    /// The beep's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beep_ms: Option<u32>,
    /// The voicemail words heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrase: Option<String>,
    /// What the voicemail message waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_after: Option<MessageCue>,
    /// When the voicemail message started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_at_ms: Option<u32>,
}

impl AmdExplanation {
    /// The explanation of a verdict by `code` at `after_ms`, with no timings yet.
    pub fn new(code: AmdReason, after_ms: u32) -> Self {
        Self {
            code,
            after_ms,
            initial_silence_ms: None,
            greeting_ms: None,
            pause_ms: None,
            phrases: None,
            syllables: None,
            replaced: None,
            beep_hz: None,
            beep_ms: None,
            phrase: None,
            message_after: None,
            message_at_ms: None,
        }
    }
}

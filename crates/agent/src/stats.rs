//! The conversation's figures: counts and latency samples, reported on the call record as
//! `agent_stats` (`turns`, `interruptions`, `tool_calls`, and p50/max of `voice_to_voice_ms`,
//! `stt_ms`, `llm_first_token_ms`, `tts_first_audio_ms`).

use std::time::Duration;

use serde_json::{Value, json};

/// Latency samples of one kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Adds one.
    pub fn add(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// The samples so far.
    pub fn all(&self) -> &[Duration] {
        &self.0
    }

    /// `{"p50", "max"}` in ms, or null with no sample.
    fn summary(&self) -> Value {
        if self.0.is_empty() {
            return Value::Null;
        }
        let mut sorted: Vec<u128> = self.0.iter().map(Duration::as_millis).collect();
        sorted.sort_unstable();
        let p50 = sorted.get((sorted.len() - 1) / 2).copied().unwrap_or(0);
        let max = sorted.last().copied().unwrap_or(0);
        json!({"p50": p50 as u64, "max": max as u64})
    }
}

/// Everything counted and timed in one conversation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStats {
    /// Answers the agent gave (its opening included).
    pub turns: u32,
    /// Times the caller cut the agent off.
    pub interruptions: u32,
    /// Tool calls the model made.
    pub tool_calls: u32,
    /// Caller speech end → first agent audio of the answer.
    pub voice_to_voice: Samples,
    /// Utterance end → its transcript.
    pub stt: Samples,
    /// Request → the model's first token.
    pub llm_first_token: Samples,
    /// Text sent to synthesis → its first audio.
    pub tts_first_audio: Samples,
}

impl AgentStats {
    /// As the call record shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "turns": self.turns,
            "interruptions": self.interruptions,
            "tool_calls": self.tool_calls,
            "voice_to_voice_ms": self.voice_to_voice.summary(),
            "stt_ms": self.stt.summary(),
            "llm_first_token_ms": self.llm_first_token.summary(),
            "tts_first_audio_ms": self.tts_first_audio.summary(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_the_median_and_the_maximum() {
        let mut stats = AgentStats {
            turns: 3,
            ..AgentStats::default()
        };
        for ms in [300, 100, 200] {
            stats.voice_to_voice.add(Duration::from_millis(ms));
        }
        let json = stats.to_json();
        assert_eq!(json["voice_to_voice_ms"], json!({"p50": 200, "max": 300}));
        assert_eq!(json["stt_ms"], Value::Null);
        assert_eq!(json["turns"], 3);
    }
}

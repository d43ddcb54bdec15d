//! Call recording: the agent's `record` setting ([`Record`]) and what a finished recording puts
//! on the call record ([`RecordingView`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

/// The rule `record` breaks, in the API's words.
const RECORD_RULE: &str = "`record` must be true, false or {\"channels\": \"stereo\" | \"mixed\", \"format\": \"wav\", \"mask_dtmf\": true | false}";

/// An agent's `record`: `false` (the default), `true` (stereo WAV), or the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Record {
    /// No recording.
    #[default]
    Off,
    /// Record with these options.
    On(RecordOptions),
}

/// How a call is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordOptions {
    /// `stereo` (the default: caller left, agent right) or `mixed` (one channel, both sides).
    #[serde(default)]
    pub channels: RecordChannels,
    /// `wav` (16 kHz, 16-bit PCM; the default).
    #[serde(default)]
    pub format: RecordFormat,
    /// Key presses are silenced in both channels; absent: as the agent's `mask_dtmf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_dtmf: Option<bool>,
}

crate::names::wire_enum! {
    /// A recording's channels.
    #[derive(Default)]
    pub enum RecordChannels ("recording channels") {
        /// Caller left, agent right.
        #[default]
        Stereo = "stereo",
        /// Both sides summed into one channel.
        Mixed = "mixed",
    }
}

crate::names::wire_enum! {
    /// A recording's file format.
    #[derive(Default)]
    pub enum RecordFormat ("recording format") {
        /// RIFF WAVE, 16 kHz, 16-bit PCM.
        #[default]
        Wav = "wav",
    }
}

impl Record {
    /// The options, when recording.
    pub fn options(self) -> Option<RecordOptions> {
        match self {
            Self::Off => None,
            Self::On(options) => Some(options),
        }
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_bool(false),
            Self::On(o) if *o == RecordOptions::default() => s.serialize_bool(true),
            Self::On(o) => o.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) => Ok(Self::Off),
            Value::Bool(true) => Ok(Self::On(RecordOptions::default())),
            Value::Object(o) => serde_json::from_value(Value::Object(o))
                .map(Self::On)
                .map_err(|_| serde::de::Error::custom(RECORD_RULE)),
            _ => Err(serde::de::Error::custom(RECORD_RULE)),
        }
    }
}

/// The call record's `recording`, once the file is complete: where to fetch it
/// (`GET /v1/calls/{id}/recording`), what it is, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordingView {
    /// The recording's id in its store.
    pub id: String,
    /// Where the API serves it.
    pub url: String,
    /// `wav`.
    pub format: RecordFormat,
    /// `stereo` or `mixed`.
    pub channels: RecordChannels,
    /// Length of the audio.
    pub duration_ms: u64,
    /// Size of the file.
    pub bytes: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_setting_reads_back_as_written() {
        for written in [
            json!(false),
            json!(true),
            json!({"channels": "mixed", "format": "wav", "mask_dtmf": true}),
        ] {
            let read: Record = serde_json::from_value(written.clone()).unwrap();
            assert_eq!(serde_json::to_value(read).unwrap(), written);
        }
        let partial: Record = serde_json::from_value(json!({"mask_dtmf": false})).unwrap();
        assert_eq!(
            partial
                .options()
                .map(|o| (o.channels, o.format, o.mask_dtmf)),
            Some((RecordChannels::Stereo, RecordFormat::Wav, Some(false)))
        );
        assert_eq!(Record::default().options(), None);
    }

    #[test]
    fn anything_else_is_refused_with_the_rule() {
        for bad in [
            json!("yes"),
            json!({"channels": "left"}),
            json!({"format": "mp3"}),
            json!({"bitrate": 3}),
        ] {
            let e = serde_json::from_value::<Record>(bad.clone()).unwrap_err();
            assert_eq!(e.to_string(), RECORD_RULE, "{bad}");
        }
    }
}

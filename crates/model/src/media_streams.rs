//! The Twilio Media Streams protocol, as a websocket brain (`brain: "ws://…" | "wss://…"`)
//! speaks it: the events the engine sends ([`ToApp`]) and the ones it reads ([`FromApp`]),
//! every field named once here. JSON text frames; audio is base64 µ-law at 8 kHz, mono.
//!
//! Engine → app: `connected`, `start`, `media` (one 20 ms chunk each), `dtmf`, `mark` (the
//! echo of an app's mark once the audio queued before it has played), `stop`.
//! App → engine: `media` (any chunk size), `mark`, `clear`; other events are ignored, as the
//! original ignores them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `brain` schemes of a Media Streams app.
pub const SCHEMES: [&str; 2] = ["ws://", "wss://"];

/// Whether `brain` names a Media Streams app (a `ws://` or `wss://` URL).
pub fn is_media_streams(brain: &str) -> bool {
    SCHEMES.iter().any(|scheme| brain.starts_with(scheme))
}

/// The track the caller's audio is on.
pub const INBOUND_TRACK: &str = "inbound";
/// The track a `dtmf` event names (as the original spells it).
pub const DTMF_TRACK: &str = "inbound_track";
/// The `mediaFormat` encoding.
pub const ENCODING: &str = "audio/x-mulaw";
/// The audio's sample rate.
pub const SAMPLE_RATE: u32 = 8_000;
/// The protocol named in `connected`.
pub const PROTOCOL: &str = "Call";
/// The protocol version named in `connected`.
pub const VERSION: &str = "1.0.0";

/// An event the engine sends to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ToApp {
    /// The websocket is up.
    Connected {
        /// `Call`.
        protocol: String,
        /// `1.0.0`.
        version: String,
    },
    /// The stream's metadata.
    Start {
        /// The message's sequence number (from 1), as a string.
        #[serde(rename = "sequenceNumber")]
        sequence_number: String,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The call and its format.
        start: Start,
    },
    /// 20 ms of the caller's audio.
    Media {
        /// The message's sequence number.
        #[serde(rename = "sequenceNumber")]
        sequence_number: String,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The audio.
        media: Media,
    },
    /// A key the caller pressed.
    Dtmf {
        /// The message's sequence number.
        #[serde(rename = "sequenceNumber")]
        sequence_number: String,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The digit.
        dtmf: Dtmf,
    },
    /// An app's mark, echoed: the audio queued before it has played (or was cleared).
    Mark {
        /// The message's sequence number.
        #[serde(rename = "sequenceNumber")]
        sequence_number: String,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The mark.
        mark: Mark,
    },
    /// The call ended.
    Stop {
        /// The message's sequence number.
        #[serde(rename = "sequenceNumber")]
        sequence_number: String,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The call.
        stop: Stop,
    },
}

/// `start`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    /// The stream.
    pub stream_sid: String,
    /// The organisation's id.
    pub account_sid: String,
    /// The call's id.
    pub call_sid: String,
    /// `["inbound"]`.
    pub tracks: Vec<String>,
    /// The call's context, every value a string.
    pub custom_parameters: BTreeMap<String, String>,
    /// µ-law, 8 kHz, mono.
    pub media_format: MediaFormat,
}

/// The audio's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw`.
    pub encoding: String,
    /// 8000.
    pub sample_rate: u32,
    /// 1.
    pub channels: u32,
}

/// `media`'s body (engine → app).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// `inbound`.
    pub track: String,
    /// The chunk's number (from 1), as a string.
    pub chunk: String,
    /// Milliseconds of audio before this chunk since the stream started, as a string.
    pub timestamp: String,
    /// Base64 µ-law.
    pub payload: String,
}

/// `dtmf`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dtmf {
    /// `inbound_track`.
    pub track: String,
    /// The digit.
    pub digit: String,
}

/// A mark's body (both ways).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The app's name for the point in its audio.
    pub name: String,
}

/// `stop`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    /// The organisation's id.
    pub account_sid: String,
    /// The call's id.
    pub call_sid: String,
}

/// An event the app sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum FromApp {
    /// Audio to play to the caller.
    Media {
        /// The audio.
        media: AppMedia,
    },
    /// A point in the audio sent so far, to be echoed when it has played.
    Mark {
        /// The mark.
        mark: Mark,
    },
    /// Drop the audio queued and echo the pending marks.
    Clear,
    /// Any other event (ignored).
    #[serde(other)]
    Other,
}

/// `media`'s body (app → engine).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppMedia {
    /// Base64 µ-law, 8 kHz.
    pub payload: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn events_are_spelled_as_the_original_spells_them() {
        let media = ToApp::Media {
            sequence_number: "3".into(),
            stream_sid: "MZ1".into(),
            media: Media {
                track: INBOUND_TRACK.into(),
                chunk: "1".into(),
                timestamp: "0".into(),
                payload: "//8=".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&media).unwrap(),
            serde_json::json!({"event": "media", "sequenceNumber": "3", "streamSid": "MZ1",
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "//8="}})
        );
        let app: FromApp =
            serde_json::from_str(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"end"}}"#)
                .unwrap();
        assert_eq!(
            app,
            FromApp::Mark {
                mark: Mark { name: "end".into() }
            }
        );
        let clear: FromApp =
            serde_json::from_str(r#"{"event":"clear","streamSid":"MZ1"}"#).unwrap();
        assert_eq!(clear, FromApp::Clear);
        let other: FromApp = serde_json::from_str(r#"{"event":"hello"}"#).unwrap();
        assert_eq!(other, FromApp::Other);
        assert!(serde_json::from_str::<FromApp>(r#"{"event":"media","media":{}}"#).is_err());
    }

    #[test]
    fn websocket_urls_are_media_streams_brains() {
        assert!(is_media_streams("wss://app.example.com/stream"));
        assert!(is_media_streams("ws://127.0.0.1:8765/"));
        assert!(!is_media_streams("grpc://127.0.0.1:50051"));
    }
}

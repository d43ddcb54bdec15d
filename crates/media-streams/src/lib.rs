//! # dialtone-media-streams — the sans-IO core of a Twilio Media Streams bridge
//!
//! [`StreamsSession`] is one call's stream: what goes on the websocket and what the app's
//! events do to the call's playout. No socket, no clock: the driver hands it the caller's
//! 20 ms frames as the media clock delivers them (so `media` is paced by that clock and its
//! `timestamp` is the media time, never a burst) and the app's text frames; it queues the
//! events to send and plays the app's audio into the [`SpeechLoop`].
//!
//! Marks: an app's `mark` is queued into the playout right behind the audio sent before it, so
//! the speech loop reports it when that audio's last sample has left for the wire; only then
//! is it echoed. `clear` drops the queued audio and echoes every pending mark at once, as does
//! a barge-in (when the agent turns the speech loop's barge-in on).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dialtone_codec::{G711, G711Law, Resampler};
use dialtone_model::media_streams::{
    self as ms, Dtmf, FromApp, Mark, Media, MediaFormat, Start, Stop, ToApp,
};
use dialtone_speech::{FRAME_SAMPLES, SpeechLoop};

/// Samples of a 20 ms frame at 8 kHz.
const NARROW_FRAME: usize = FRAME_SAMPLES / 2;
/// The most of the app's audio the playout holds (60 s at 16 kHz): an app sending faster than
/// real time past it has the excess dropped and counted, never buffered without bound.
pub const PLAYOUT_CAP_SAMPLES: usize = 60 * dialtone_speech::SAMPLE_RATE as usize;
/// Room the driver's send queue keeps for control events (`mark`, `dtmf`, `stop`): below it
/// the caller's `media` is dropped, never those.
pub const CONTROL_ROOM: usize = 32;
/// The most events that wait here for room in the send queue; past it new `media` is dropped.
const OUT_LIMIT: usize = 64;
/// What the playout's marks of the app start with, so they are told from the engine's own.
const MARK_PREFIX: &str = "\u{0}app:";

/// Who the stream belongs to, as `start` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The stream's id.
    pub stream_sid: String,
    /// The organisation's id.
    pub account_sid: String,
    /// The call's id.
    pub call_sid: String,
    /// The call's context, every value a string.
    pub custom_parameters: BTreeMap<String, String>,
}

/// An event for the app, as its text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The frame.
    pub text: String,
    /// For a `media` event whose caller frame the driver timed
    /// ([`StreamsSession::caller_frame`]): when its audio reached the engine.
    pub arrived: Option<Instant>,
}

/// What an app's event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEffect {
    /// Nothing the driver must act on (audio or a mark queued, an event ignored).
    Queued,
    /// The app's audio was dropped: the playout already holds [`PLAYOUT_CAP_SAMPLES`].
    Overflowed,
    /// The playout was cleared: the driver drops what is already on its way to the wire.
    Cleared,
}

/// An app's frame the protocol has no answer for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not an event (not JSON, or a known event missing a field).
    #[error("not a Media Streams event: {0}")]
    Malformed(String),
    /// A `media` payload that is not base64.
    #[error("a media payload is not base64")]
    Payload,
}

/// One call's Media Streams stream.
pub struct StreamsSession {
    start: StreamStart,
    sequence: u64,
    chunks: u64,
    /// Events to send, each with the arrival of the caller audio it carries when timed.
    out: VecDeque<(ToApp, Option<Instant>)>,
    narrow: Resampler,
    narrow_frame: [i16; NARROW_FRAME],
    encoded: [u8; NARROW_FRAME],
    ulaw: G711,
    /// The last 8 kHz sample of the app's audio (the wideband interpolation's left end).
    last_app_sample: i16,
    /// The app's marks not yet echoed, in order.
    pending: VecDeque<String>,
    stopped: bool,
    /// The app's `media` events dropped over [`PLAYOUT_CAP_SAMPLES`].
    overflowed: u64,
    /// The caller's `media` events dropped because the app did not keep up.
    unsent: u64,
    /// The app's invalid frames, ignored.
    invalid: u64,
}

impl StreamsSession {
    /// A stream for `start`; `connected` and `start` are queued.
    pub fn new(start: StreamStart) -> Result<Self, dialtone_codec::CodecError> {
        let mut session = Self {
            start,
            sequence: 0,
            chunks: 0,
            out: VecDeque::new(),
            narrow: Resampler::new(dialtone_speech::SAMPLE_RATE, ms::SAMPLE_RATE)?,
            narrow_frame: [0; NARROW_FRAME],
            encoded: [0; NARROW_FRAME],
            ulaw: G711::new(G711Law::Mu),
            last_app_sample: 0,
            pending: VecDeque::new(),
            stopped: false,
            overflowed: 0,
            unsent: 0,
            invalid: 0,
        };
        session.out.push_back((
            ToApp::Connected {
                protocol: ms::PROTOCOL.into(),
                version: ms::VERSION.into(),
            },
            None,
        ));
        let start = ToApp::Start {
            sequence_number: String::new(),
            stream_sid: session.start.stream_sid.clone(),
            start: Start {
                stream_sid: session.start.stream_sid.clone(),
                account_sid: session.start.account_sid.clone(),
                call_sid: session.start.call_sid.clone(),
                tracks: vec![ms::INBOUND_TRACK.into()],
                custom_parameters: session.start.custom_parameters.clone(),
                media_format: MediaFormat {
                    encoding: ms::ENCODING.into(),
                    sample_rate: ms::SAMPLE_RATE,
                    channels: 1,
                },
            },
        };
        session.out.push_back((start, None));
        Ok(session)
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// One 20 ms frame of the caller (16 kHz) as the media clock delivered it: one `media`.
    /// `arrived`, when the driver times this frame, is when its audio reached the engine; it
    /// comes back with the event ([`Transmit::arrived`]).
    pub fn caller_frame(&mut self, frame: &[i16], arrived: Option<Instant>) {
        if self.stopped {
            return;
        }
        let mut wide = [0i16; FRAME_SAMPLES];
        let n = frame.len().min(FRAME_SAMPLES);
        if let (Some(dst), Some(src)) = (wide.get_mut(..n), frame.get(..n)) {
            dst.copy_from_slice(src);
        }
        if self.narrow.process(&wide, &mut self.narrow_frame).is_err() {
            self.narrow_frame = [0; NARROW_FRAME];
        }
        let encoded = self.ulaw.encode(&self.narrow_frame, &mut self.encoded);
        let payload = STANDARD.encode(self.encoded.get(..encoded).unwrap_or_default());
        let timestamp = (self.chunks * 20).to_string();
        self.chunks += 1;
        if self.out.len() >= OUT_LIMIT {
            self.unsent += 1;
            return;
        }
        let media = ToApp::Media {
            sequence_number: String::new(),
            stream_sid: self.start.stream_sid.clone(),
            media: Media {
                track: ms::INBOUND_TRACK.into(),
                chunk: self.chunks.to_string(),
                timestamp,
                payload,
            },
        };
        self.out.push_back((media, arrived));
    }

    /// A key the caller pressed (RFC 4733 or in-band).
    pub fn dtmf(&mut self, digit: char) {
        if self.stopped {
            return;
        }
        let event = ToApp::Dtmf {
            sequence_number: String::new(),
            stream_sid: self.start.stream_sid.clone(),
            dtmf: Dtmf {
                track: ms::DTMF_TRACK.into(),
                digit: digit.to_string(),
            },
        };
        self.out.push_back((event, None));
    }

    /// The call ended: `stop` is queued (once), and nothing after it.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let stop = ToApp::Stop {
            sequence_number: String::new(),
            stream_sid: self.start.stream_sid.clone(),
            stop: Stop {
                account_sid: self.start.account_sid.clone(),
                call_sid: self.start.call_sid.clone(),
            },
        };
        self.out.push_back((stop, None));
        self.stopped = true;
    }

    /// An app's text frame: its audio and marks go into `speech`'s playout, `clear` empties it.
    /// While `muted` (the engine's own voicemail message plays) the app's audio is dropped and
    /// its marks echoed at once, nothing of the engine's playout touched.
    /// An invalid frame (not JSON, a known event missing a field, a payload not base64) is
    /// counted and changes nothing: as under Twilio, the driver logs and ignores it.
    pub fn handle_app(
        &mut self,
        text: &str,
        speech: &mut SpeechLoop,
        muted: bool,
    ) -> Result<AppEffect, ProtocolError> {
        let effect = self.apply(text, speech, muted);
        if effect.is_err() {
            self.invalid += 1;
        }
        effect
    }

    fn apply(
        &mut self,
        text: &str,
        speech: &mut SpeechLoop,
        muted: bool,
    ) -> Result<AppEffect, ProtocolError> {
        let event: FromApp =
            serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        match event {
            FromApp::Media { media } => {
                let ulaw = STANDARD
                    .decode(media.payload.as_bytes())
                    .map_err(|_| ProtocolError::Payload)?;
                if muted {
                    return Ok(AppEffect::Queued);
                }
                if speech.queued_samples() + ulaw.len() * 2 > PLAYOUT_CAP_SAMPLES {
                    self.overflowed += 1;
                    return Ok(AppEffect::Overflowed);
                }
                speech.play(self.widen(&ulaw), None);
            }
            FromApp::Mark { mark } if muted => self.echo(mark.name),
            FromApp::Mark { mark } => {
                speech.play(Vec::new(), Some(format!("{MARK_PREFIX}{}", mark.name)));
                self.pending.push_back(mark.name);
            }
            FromApp::Clear if muted => self.playout_cleared(),
            FromApp::Clear => {
                speech.clear_playout();
                self.playout_cleared();
                return Ok(AppEffect::Cleared);
            }
            FromApp::Other => {}
        }
        Ok(AppEffect::Queued)
    }

    /// µ-law at 8 kHz to 16 kHz PCM: each sample, preceded by the midpoint from the one
    /// before (no delay, any chunk size, no state but the last sample).
    fn widen(&mut self, ulaw: &[u8]) -> Vec<i16> {
        let mut narrow = vec![0i16; ulaw.len()];
        let n = self.ulaw.decode(ulaw, &mut narrow);
        let mut wide = Vec::with_capacity(n * 2);
        for &sample in narrow.iter().take(n) {
            let mid = (i32::from(self.last_app_sample) + i32::from(sample)) / 2;
            wide.push(mid as i16);
            wide.push(sample);
            self.last_app_sample = sample;
        }
        wide
    }

    /// A playout mark the speech loop reported; `true` when it was the app's (its echo is
    /// queued), `false` when it is the engine's own.
    pub fn playout_done(&mut self, mark: &str) -> bool {
        let Some(name) = mark.strip_prefix(MARK_PREFIX) else {
            return false;
        };
        // The name is the playout mark's own: a mark already echoed (its playout cleared) is
        // not echoed twice, and never shifts the names of those after it.
        if let Some(at) = self.pending.iter().position(|pending| pending == name)
            && let Some(name) = self.pending.remove(at)
        {
            self.echo(name);
        }
        true
    }

    /// The playout was cleared (the app's `clear`, a barge-in, or the engine's voicemail
    /// message taking over): every pending mark is echoed now.
    pub fn playout_cleared(&mut self) {
        while let Some(name) = self.pending.pop_front() {
            self.echo(name);
        }
    }

    fn echo(&mut self, name: String) {
        if self.stopped {
            return;
        }
        let mark = ToApp::Mark {
            sequence_number: String::new(),
            stream_sid: self.start.stream_sid.clone(),
            mark: Mark { name },
        };
        self.out.push_back((mark, None));
    }

    /// How many of the app's `media` events were dropped over the playout's cap.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// How many of the app's frames were invalid (and ignored).
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// How many of the caller's `media` events were dropped because the app did not keep up.
    pub fn unsent(&self) -> u64 {
        self.unsent
    }

    /// The next event to send, as its text frame, numbered as it leaves (so `sequenceNumber`
    /// has no gaps), given the `room` left in the driver's send queue. With
    /// [`CONTROL_ROOM`] or less, `media` is dropped (counted) and only control events go; with
    /// none, they wait here.
    pub fn poll_transmit(&mut self, room: usize) -> Option<Transmit> {
        while room <= CONTROL_ROOM && matches!(self.out.front(), Some((ToApp::Media { .. }, _))) {
            self.out.pop_front();
            self.unsent += 1;
        }
        if room == 0 {
            return None;
        }
        let (mut event, arrived) = self.out.pop_front()?;
        if let Some(number) = sequence_number(&mut event) {
            *number = self.next_sequence();
        }
        let text = serde_json::to_string(&event).ok()?;
        Some(Transmit { text, arrived })
    }
}

/// The event's `sequenceNumber` (all but `connected` have one).
fn sequence_number(event: &mut ToApp) -> Option<&mut String> {
    match event {
        ToApp::Connected { .. } => None,
        ToApp::Start {
            sequence_number, ..
        }
        | ToApp::Media {
            sequence_number, ..
        }
        | ToApp::Dtmf {
            sequence_number, ..
        }
        | ToApp::Mark {
            sequence_number, ..
        }
        | ToApp::Stop {
            sequence_number, ..
        } => Some(sequence_number),
    }
}

#[cfg(test)]
mod tests;

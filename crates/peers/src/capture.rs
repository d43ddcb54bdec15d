//! RTP captures for SIPp's `play_pcap_audio`, which replays a capture's datagrams with their
//! recorded timing and rewrites nothing in them: whatever sequence numbers, timestamps and SSRC
//! the capture holds are what the far end receives.
//!
//! [`RtpCapture`] composes one stream the way a telephone sends it: 20 ms PCMU packets on one
//! SSRC, sequence numbers rising by one per packet, the media clock advancing 160 ticks per 20 ms
//! whether or not a packet carries audio, and key presses as RFC 4733 events *in* that stream:
//! the payloads and spacing of SIPp's captures ([`crate::dtmf::KeyPress`]), each event packet on
//! the stream's next sequence number and stamped with the media time the event began (RFC 4733
//! §2.2.1), sent instead of the audio while the key is down (so the tone is not heard twice),
//! the audio resuming on the next 20 ms slot after the event's last packet.

use std::path::Path;
use std::time::Duration;

use dialtone_rtp::RtpSender;

use crate::PeerError;
use crate::dtmf::KeyPress;
use crate::pcap::PcapWriter;

/// One packet's worth of audio: 20 ms.
pub const FRAME: Duration = Duration::from_millis(20);
/// Media clock ticks of one frame at 8 kHz.
const FRAME_TICKS: u32 = 160;
/// Payload type of PCMU (RFC 3551).
const PCMU: u8 = 0;
/// The stream's SSRC.
const SSRC: u32 = 0x5eed;

/// One RTP stream being composed, and the capture it makes.
#[derive(Debug, Clone)]
pub struct RtpCapture {
    sender: RtpSender,
    /// When the next packet goes out, since the stream began.
    at: Duration,
    pcap: PcapWriter,
}

impl Default for RtpCapture {
    fn default() -> Self {
        Self::new()
    }
}

impl RtpCapture {
    /// An empty PCMU stream; its first packet carries sequence number 0 and timestamp 0.
    pub fn new() -> Self {
        Self {
            sender: RtpSender::new(SSRC, 0, 0, PCMU),
            at: Duration::ZERO,
            pcap: PcapWriter::new(),
        }
    }

    /// How long the stream runs so far: when its next packet would go out.
    pub fn elapsed(&self) -> Duration {
        self.at
    }

    /// Sends 20 ms packets of the µ-law samples `ulaw` yields, 160 to a packet (the last one as
    /// many as are left), until the stream has run `until` or `ulaw` ends.
    pub fn audio(&mut self, ulaw: &mut impl Iterator<Item = u8>, until: Duration) -> &mut Self {
        let mut frame = Vec::with_capacity(FRAME_TICKS as usize);
        let mut packet = [0u8; 256];
        while self.at < until {
            frame.clear();
            frame.extend(ulaw.by_ref().take(FRAME_TICKS as usize));
            if frame.is_empty() {
                break;
            }
            if let Ok(n) = self.sender.write(&frame, frame.len() as u32, &mut packet) {
                self.pcap.udp(self.at, packet.get(..n).unwrap_or_default());
            }
            self.at += FRAME;
        }
        self
    }

    /// Sends `press` as an RFC 4733 event of payload type `payload_type` (the callee's
    /// `telephone-event`): its packets with their captured payloads and spacing, on the next
    /// sequence numbers, stamped with the media time the press starts at. The media clock runs
    /// on meanwhile: the next audio packet goes out on the first 20 ms slot after the press's
    /// last packet, with the timestamp of that slot.
    pub fn key_press(&mut self, press: &KeyPress, payload_type: u8) -> &mut Self {
        let start = self.sender.timestamp();
        let mut packet = [0u8; 256];
        for p in &press.packets {
            if let Ok(n) =
                self.sender
                    .write_event(payload_type, p.marker, start, &p.payload, &mut packet)
            {
                self.pcap
                    .udp(self.at + p.offset, packet.get(..n).unwrap_or_default());
            }
        }
        let last = press.packets.last().map_or(Duration::ZERO, |p| p.offset);
        let slots = (last.as_micros() / FRAME.as_micros()) as u32 + 1;
        self.sender.skip(slots * FRAME_TICKS);
        self.at += FRAME * slots;
        self
    }

    /// Writes the capture to `path`.
    pub fn write(&self, path: &Path) -> Result<(), PeerError> {
        std::fs::write(path, self.pcap.bytes())
            .map_err(PeerError::io(format!("writing {}", path.display())))
    }
}

/// Writes `ulaw` as a capture of 20 ms PCMU packets ([`RtpCapture::audio`]).
pub fn write_rtp_pcap(path: &Path, ulaw: &[u8]) -> Result<(), PeerError> {
    RtpCapture::new()
        .audio(&mut ulaw.iter().copied(), Duration::MAX)
        .write(path)
}

/// The sound of a quiet room on a telephone line, as µ-law: white noise about 67 dB below full
/// scale (uniform in ±24), far under any voice detector's threshold. Endless, and the same
/// every time (a fixed-seed xorshift).
pub fn room_tone() -> impl Iterator<Item = u8> {
    let mut state = 0x2545_f491_u32;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let sample = (state % 49) as i16 - 24;
        dialtone_codec::linear_to_ulaw(sample)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::{EventPacket, sipp_dtmf_captures};
    use dialtone_rtp::dtmf::EventPayload;
    use dialtone_rtp::parse;

    /// (time, sequence, timestamp, payload type, marker, payload length) of every packet.
    fn packets(capture: &RtpCapture) -> Vec<(Duration, u16, u32, u8, bool, usize)> {
        crate::pcap::read_udp(capture.pcap.bytes())
            .unwrap()
            .into_iter()
            .map(|(at, datagram)| {
                let p = parse(datagram).unwrap();
                assert_eq!(p.ssrc, SSRC);
                (
                    at,
                    p.sequence,
                    p.timestamp,
                    p.payload_type,
                    p.marker,
                    p.payload.len(),
                )
            })
            .collect()
    }

    fn press(offsets_ms: &[u64]) -> KeyPress {
        KeyPress {
            key: '5',
            packets: offsets_ms
                .iter()
                .enumerate()
                .map(|(i, ms)| EventPacket {
                    offset: Duration::from_millis(*ms),
                    marker: i == 0,
                    payload: EventPayload {
                        code: 5,
                        end: i + 1 == offsets_ms.len(),
                        volume: 10,
                        duration: (*ms as u16 + 20) * 8,
                    }
                    .to_bytes()
                    .to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn audio_is_20_ms_packets_on_one_clock() {
        let mut c = RtpCapture::new();
        c.audio(&mut [0xffu8; 500].into_iter(), Duration::MAX);
        let p = packets(&c);
        assert_eq!(
            p,
            [
                (Duration::ZERO, 0, 0, 0, true, 160),
                (FRAME, 1, 160, 0, false, 160),
                (FRAME * 2, 2, 320, 0, false, 160),
                (FRAME * 3, 3, 480, 0, false, 20),
            ]
        );
        assert_eq!(c.elapsed(), FRAME * 4);
    }

    #[test]
    fn a_key_press_takes_the_audio_s_place_in_the_same_stream() {
        let mut c = RtpCapture::new();
        c.audio(&mut room_tone(), FRAME * 2)
            .key_press(&press(&[0, 20, 40, 40]), 101)
            .audio(&mut room_tone(), FRAME * 6);
        let p = packets(&c);
        let summary: Vec<(u64, u16, u32, u8, bool)> = p
            .iter()
            .map(|(at, seq, ts, pt, m, _)| (at.as_millis() as u64, *seq, *ts, *pt, *m))
            .collect();
        assert_eq!(
            summary,
            [
                (0, 0, 0, 0, true),
                (20, 1, 160, 0, false),
                // The event: its start timestamp on every packet, the end sent twice.
                (40, 2, 320, 101, true),
                (60, 3, 320, 101, false),
                (80, 4, 320, 101, false),
                (80, 5, 320, 101, false),
                // Audio resumes on the next slot, on the media clock that kept running.
                (100, 6, 800, 0, false),
            ]
        );
    }

    #[test]
    fn a_press_from_sipp_s_capture_keeps_its_payloads() {
        let press = KeyPress::read(&sipp_dtmf_captures().unwrap(), '1').unwrap();
        let events: Vec<EventPayload> = press
            .packets
            .iter()
            .map(|p| EventPayload::parse(&p.payload).unwrap())
            .collect();
        assert!(events.iter().all(|e| e.code == 1));
        assert!(events.last().unwrap().end);
        assert!(press.packets[0].marker);
        let mut c = RtpCapture::new();
        c.audio(&mut room_tone(), FRAME * 3).key_press(&press, 101);
        let sent = packets(&c);
        let sequences: Vec<u16> = sent.iter().map(|p| p.1).collect();
        assert_eq!(
            sequences,
            (0..sent.len() as u16).collect::<Vec<_>>(),
            "one packet per sequence number"
        );
        assert!(sent[3..].iter().all(|p| p.2 == 480 && p.3 == 101));
    }

    #[test]
    fn room_tone_is_quiet_but_not_silent() {
        let samples: Vec<f64> = room_tone()
            .take(8000)
            .map(|u| f64::from(dialtone_codec::ulaw_to_linear(u)))
            .collect();
        let rms = (samples.iter().map(|s| s * s).sum::<f64>() / 8000.0).sqrt();
        let dbfs = 20.0 * (rms / 32768.0).log10();
        assert!((-72.0..=-62.0).contains(&dbfs), "{dbfs} dBFS");
        assert!(samples.iter().all(|s| s.abs() <= 32.0));
    }
}

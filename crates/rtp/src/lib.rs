//! # dialtone-rtp — sans-IO RTP for Dialtone
//!
//! Packet parsing (zero-copy, through `rtp-rs`) and building into caller-owned buffers, the
//! sender's sequence/timestamp/SSRC state, and the receiver's per-source state of RFC 3550:
//! extended sequence numbers across wrap, loss counts, and the interarrival jitter estimate of
//! Appendix A.8. Nothing here owns a socket or reads a clock: arrival times are arguments.
//! SRTP and SRTCP (RFC 3711, the SDES suites of RFC 4568) protect and unprotect packets in
//! place in [`srtp`].
//!
//! What the receiver counts, and what it does not:
//!
//! * **Silence suppression and talkspurts** (marker bit) cost nothing: a sender that stops
//!   sending in a pause keeps its sequence numbers consecutive (RFC 3550 §5.1, one per packet
//!   *sent*) and its timestamps on the media clock, so the next talkspurt shows no gap to count
//!   and no change in transit time to call jitter. A marker bit forgives nothing: packets lost
//!   at the end of a talkspurt are lost.
//! * **RFC 4733 events** (once [`RtpReceiver::with_telephone_event`] names their payload type)
//!   share the stream's sequence numbers, so they count for loss like audio; but every packet
//!   of an event carries the event's *start* as its timestamp (RFC 4733 §2.2.1), not the instant
//!   it was sent, so they take no part in the jitter estimate, which A.8 defines on sampling
//!   timestamps. Where an event has got to is its timestamp plus its duration field (§2.3.5).
//! * **A timeline jump** — a change of a second or more in transit time between two packets —
//!   is the sender's doing, not the network's, and is no jitter sample.
//!   When the sender's media clock jumps *ahead* across a sequence gap (a stream spliced from
//!   captures, a media relay switching sources on one SSRC), the missing sequence numbers cover
//!   more media time than has passed: they were never sent in real time, so they are not
//!   expected and not lost ([`ReceiverStats::skipped`]). A real loss, however long, leaves a
//!   gap in arrival time as wide as the gap in media time, and is counted in full.
//! * **A new SSRC, or a jump of the sequence number by 3000 or more** (A.1's `MAX_DROPOUT`),
//!   restarts the count (RFC 3550 A.1's resynchronisation).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dialtone_rtp::{RtpReceiver, RtpSender, parse};
//!
//! let mut sender = RtpSender::new(0x1234, 100, 0, 0);
//! let mut receiver = RtpReceiver::new(8000);
//! let t0 = Instant::now();
//! let mut buf = [0u8; 200];
//! for i in 0..3u32 {
//!     let n = sender.write(&[0xff; 160], 160, &mut buf).unwrap();
//!     let packet = parse(&buf[..n]).unwrap();
//!     receiver.on_packet(t0 + Duration::from_millis(20 * u64::from(i)), &packet);
//! }
//! assert_eq!(receiver.stats().packets, 3);
//! assert_eq!(receiver.stats().lost, 0);
//! ```

use std::time::Instant;

pub mod dtmf;
pub mod jitter;
pub mod rtcp;
pub mod srtp;

use dtmf::EventPayload;
pub use dtmf::{DtmfEvent, DtmfReceiver, DtmfSender};
pub use jitter::{JitterBuffer, JitterStats, Playout};
pub use rtcp::{RemoteReport, ReportBlock, RtcpSession, SenderInfo};

/// Errors from parsing or building packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Not an RTP version 2 packet, or its header, CSRC list, extension or padding overruns it.
    #[error("malformed RTP packet: {reason}")]
    Malformed {
        /// What was wrong.
        reason: &'static str,
    },
    /// An SRTP or SRTCP packet whose authentication tag does not match (forged, corrupted,
    /// or under another key).
    #[error("SRTP authentication failed")]
    Unauthenticated,
    /// An SRTP or SRTCP packet received before, or older than the replay window (for
    /// protecting: a packet index already used).
    #[error("SRTP packet replayed or too old")]
    Replayed,
    /// The master key protected all the packets it may (2^48 SRTP, 2^31 SRTCP).
    #[error("SRTP master key exhausted")]
    KeyExhausted,
    /// The output buffer is too small.
    #[error("RTP packet needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload without padding.
    pub payload: &'a [u8],
}

/// Whether a datagram on an rtcp-mux port is RTCP (RFC 5761 §4: packet types 192–223).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// Parses an RTP packet; never panics on any input.
pub fn parse(datagram: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let reader = rtp_rs::RtpReader::new(datagram).map_err(|e| RtpError::Malformed {
        reason: match e {
            rtp_rs::RtpReaderError::BufferTooShort(_) => "shorter than its header",
            rtp_rs::RtpReaderError::UnsupportedVersion(_) => "version is not 2",
            rtp_rs::RtpReaderError::HeadersTruncated { .. } => "headers truncated",
            rtp_rs::RtpReaderError::PaddingLengthInvalid(_) => "invalid padding length",
        },
    })?;
    Ok(RtpPacket {
        payload_type: reader.payload_type(),
        marker: reader.mark(),
        sequence: u16::from(reader.sequence_number()),
        timestamp: reader.timestamp(),
        ssrc: reader.ssrc(),
        payload: reader.payload(),
    })
}

/// The sending side of one RTP stream.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    payload_type: u8,
    marker_next: bool,
    packets: u64,
    octets: u64,
}

impl RtpSender {
    /// A stream with the given SSRC, first sequence number and timestamp (random in
    /// production, RFC 3550 §5.1), and payload type.
    pub fn new(ssrc: u32, sequence: u16, timestamp: u32, payload_type: u8) -> Self {
        Self {
            ssrc,
            sequence,
            timestamp,
            payload_type,
            marker_next: true,
            packets: 0,
            octets: 0,
        }
    }

    /// Writes the next packet carrying `payload` worth `samples` clock ticks into `out`;
    /// returns its length. The first packet (and the first after [`RtpSender::talkspurt`])
    /// carries the marker bit.
    pub fn write(
        &mut self,
        payload: &[u8],
        samples: u32,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let n = self.build(
            self.payload_type,
            self.marker_next,
            self.timestamp,
            payload,
            out,
        )?;
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.marker_next = false;
        Ok(n)
    }

    /// Builds one packet with the next sequence number and counts it.
    fn build(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let builder = rtp_rs::RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(self.ssrc)
            .sequence(rtp_rs::Seq::from(self.sequence))
            .timestamp(timestamp)
            .marked(marker)
            .payload(payload);
        let needed = builder.target_length();
        let n = builder
            .build_into(out)
            .map_err(|_| RtpError::BufferTooSmall {
                needed,
                available: out.len(),
            })?;
        self.sequence = self.sequence.wrapping_add(1);
        self.packets += 1;
        self.octets += payload.len() as u64;
        Ok(n)
    }

    /// Writes a packet of another payload type that does not advance the media clock (an RFC
    /// 4733 event: its packets carry the event's start `timestamp`); returns its length.
    pub fn write_event(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        self.build(payload_type, marker, timestamp, payload, out)
    }

    /// The timestamp the next audio packet will carry.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Skips `samples` of media time without sending (silence suppression).
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Marks the next packet as the start of a talkspurt.
    pub fn talkspurt(&mut self) {
        self.marker_next = true;
    }

    /// Packets sent.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Payload octets sent.
    pub fn octets(&self) -> u64 {
        self.octets
    }

    /// The SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
}

/// Whether a change of `d` media clock ticks in transit time (arrival minus timestamp) from one
/// packet to the next is a jump of the sender's timeline rather than network jitter: a second
/// (`clock_rate` ticks) or more, either way. Neither jitter estimate here (the receiver's RFC
/// 3550 A.8 and the jitter buffer's) takes such a jump as a sample.
pub(crate) fn timeline_jump(d: f64, clock_rate: u32) -> bool {
    d.abs() >= f64::from(clock_rate)
}

/// What the receiver made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// In order or ahead (a gap means loss, possibly recovered by reordering).
    InOrder {
        /// The extended (32-bit, wrap-counted) sequence number.
        extended_sequence: u64,
    },
    /// Behind the highest sequence seen: reordered or duplicated.
    Late {
        /// Its extended sequence number.
        extended_sequence: u64,
    },
    /// A new SSRC, or a jump so large the stream restarted: state was reset, and this packet
    /// starts the new count at its own sequence number.
    Resync,
}

/// Receiver statistics (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReceiverStats {
    /// Packets received from the current source.
    pub packets: u64,
    /// Packets received from every source of the stream.
    pub total_packets: u64,
    /// Payload octets received.
    pub octets: u64,
    /// Expected minus received, never negative.
    pub lost: u64,
    /// Packets that arrived behind the highest sequence.
    pub late: u64,
    /// Times the source changed or jumped.
    pub resyncs: u64,
    /// Sequence numbers the current source skipped while its media clock jumped ahead of the
    /// arrival clock: never sent in real time, so neither expected nor lost.
    pub skipped: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
}

/// A forward jump of the sequence number this large restarts the count (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A packet up to this far behind the highest sequence number is late, not a restart (A.1).
const MAX_MISORDER: u16 = 100;

#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    base_sequence: u64,
    max_sequence: u16,
    cycles: u64,
    epoch: Instant,
    /// The last sampled (non-event) packet's arrival (in timestamp units since `epoch`) and
    /// RTP timestamp, for the jitter estimate.
    last_sampled: Option<(f64, u32)>,
    /// The last in-order packet's arrival and the media time it reached, for telling a jump
    /// of the sender's timeline from a loss.
    last_reach: Option<(f64, u32)>,
    jitter: f64,
    expected_prior: u64,
    received_prior: u64,
    /// Sequence numbers skipped at timeline jumps.
    skipped: u64,
}

impl Source {
    fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_sequence)
    }

    /// Packets expected so far (RFC 3550 A.3), less those skipped at timeline jumps.
    fn expected(&self) -> u64 {
        (self.extended_max() + 1)
            .saturating_sub(self.base_sequence)
            .saturating_sub(self.skipped)
    }
}

/// The receiving side of one RTP stream.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    clock_rate: u32,
    telephone_event: Option<u8>,
    source: Option<Source>,
    stats: ReceiverStats,
}

impl RtpReceiver {
    /// A receiver for a stream with `clock_rate` Hz media clock.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            telephone_event: None,
            source: None,
            stats: ReceiverStats::default(),
        }
    }

    /// Takes packets of `payload_type` (when one was negotiated) as RFC 4733 events: they count
    /// for loss, but not for jitter, and an event reaches its start plus its duration so far.
    pub fn with_telephone_event(mut self, payload_type: Option<u8>) -> Self {
        self.telephone_event = payload_type;
        self
    }

    /// Accounts for a packet that arrived at `arrival`.
    pub fn on_packet(&mut self, arrival: Instant, packet: &RtpPacket<'_>) -> Arrival {
        let rate = f64::from(self.clock_rate);
        let restart = match &self.source {
            None => true,
            Some(s) if s.ssrc != packet.ssrc => true,
            Some(s) => {
                let delta = packet.sequence.wrapping_sub(s.max_sequence);
                (MAX_DROPOUT..=u16::MAX - MAX_MISORDER).contains(&delta)
            }
        };
        if restart {
            // Loss and jitter are per source: a new source starts them afresh.
            let resyncs = self.stats.resyncs + u64::from(self.source.is_some());
            let total_packets = self.stats.total_packets;
            self.stats = ReceiverStats {
                resyncs,
                total_packets,
                ..ReceiverStats::default()
            };
            self.source = Some(Source {
                ssrc: packet.ssrc,
                base_sequence: u64::from(packet.sequence),
                max_sequence: packet.sequence,
                cycles: 0,
                epoch: arrival,
                last_sampled: None,
                last_reach: None,
                jitter: 0.0,
                expected_prior: 0,
                received_prior: 0,
                skipped: 0,
            });
        }
        let Some(source) = self.source.as_mut() else {
            return Arrival::Resync;
        };
        self.stats.packets += 1;
        self.stats.total_packets += 1;
        self.stats.octets += packet.payload.len() as u64;
        let arrival_units = arrival
            .saturating_duration_since(source.epoch)
            .as_secs_f64()
            * rate;
        // The change in transit time since an earlier packet, in timestamp units; the
        // timestamps' difference in modular arithmetic, so a timestamp wrapping past 2^32
        // mid-stream is one step like any other.
        let transit_change = |(earlier_arrival, earlier_timestamp): (f64, u32), timestamp: u32| {
            let sent = f64::from(timestamp.wrapping_sub(earlier_timestamp).cast_signed());
            arrival_units - earlier_arrival - sent
        };
        let event = self
            .telephone_event
            .is_some_and(|pt| pt == packet.payload_type);
        let reach = match event.then(|| EventPayload::parse(packet.payload)).flatten() {
            Some(e) => packet.timestamp.wrapping_add(u32::from(e.duration)),
            None => packet.timestamp,
        };
        if !event {
            // Interarrival jitter, RFC 3550 A.8, in timestamp units.
            if let Some(earlier) = source.last_sampled {
                let d = transit_change(earlier, packet.timestamp).abs();
                if !timeline_jump(d, self.clock_rate) {
                    source.jitter += (d - source.jitter) / 16.0;
                }
            }
            source.last_sampled = Some((arrival_units, packet.timestamp));
            self.stats.jitter_ms = source.jitter / rate * 1000.0;
        }

        let delta = packet.sequence.wrapping_sub(source.max_sequence);
        let verdict = if restart {
            source.last_reach = Some((arrival_units, reach));
            Arrival::Resync
        } else if delta == 0 || delta > u16::MAX - MAX_MISORDER {
            self.stats.late += 1;
            // A late packet from before the last wrap belongs to the previous cycle.
            let cycles = if packet.sequence > source.max_sequence {
                source.cycles.saturating_sub(1 << 16)
            } else {
                source.cycles
            };
            Arrival::Late {
                extended_sequence: cycles + u64::from(packet.sequence),
            }
        } else {
            if delta > 1
                && let Some(earlier) = source.last_reach
            {
                let d = transit_change(earlier, reach);
                if timeline_jump(d, self.clock_rate) && d < 0.0 {
                    // The media clock ran ahead of the arrival clock across the gap.
                    source.skipped += u64::from(delta - 1);
                    self.stats.skipped += u64::from(delta - 1);
                }
            }
            source.last_reach = Some((arrival_units, reach));
            if packet.sequence < source.max_sequence {
                source.cycles += 1 << 16;
            }
            source.max_sequence = packet.sequence;
            Arrival::InOrder {
                extended_sequence: source.extended_max(),
            }
        };
        // RFC 3550 A.3: late packets fill their gap; duplicates may hide a loss.
        self.stats.lost = source.expected().saturating_sub(self.stats.packets);
        verdict
    }

    /// Statistics so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The RTCP reception report block for the current source, with the fraction lost since
    /// the previous call (RFC 3550 A.3); `None` before the first packet.
    pub fn report_block(&mut self) -> Option<ReportBlock> {
        let source = self.source.as_mut()?;
        let expected = source.expected();
        let expected_interval = expected - source.expected_prior.min(expected);
        let received_interval = self.stats.packets - source.received_prior.min(self.stats.packets);
        source.expected_prior = expected;
        source.received_prior = self.stats.packets;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        Some(ReportBlock {
            ssrc: source.ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(self.stats.lost).unwrap_or(i32::MAX),
            highest_sequence: source.extended_max() as u32,
            jitter: source.jitter as u32,
            last_sr: 0,
            delay_since_last_sr: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut s = RtpSender::new(ssrc, seq, ts, 0);
        let mut buf = vec![0u8; 200];
        let n = s.write(&[0xff; 160], 160, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn builds_and_parses() {
        let mut s = RtpSender::new(7, 65535, 4_294_967_200, 8);
        let mut buf = [0u8; 64];
        let n = s.write(&[1, 2, 3], 160, &mut buf).unwrap();
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(
            (p.payload_type, p.marker, p.sequence, p.ssrc),
            (8, true, 65535, 7)
        );
        assert_eq!(p.payload, &[1, 2, 3]);
        let n = s.write(&[4], 160, &mut buf).unwrap();
        let p = parse(&buf[..n]).unwrap();
        assert_eq!((p.sequence, p.marker), (0, false));
        assert_eq!(p.timestamp, 4_294_967_200u32.wrapping_add(160));
        assert_eq!(s.packets(), 2);
        assert!(matches!(
            s.write(&[0; 100], 160, &mut [0u8; 20]),
            Err(RtpError::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x80]).is_err());
        assert!(parse(&[0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // CSRC count says 15 but the packet has none.
        assert!(parse(&[0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(!is_rtcp(&[0x80, 0, 0, 6]));
    }

    #[test]
    fn counts_loss_across_sequence_wrap() {
        let mut r = RtpReceiver::new(8000);
        let t0 = Instant::now();
        let seqs = [65533u16, 65534, 65535, 0, 2, 3];
        for (i, seq) in seqs.iter().enumerate() {
            let p = packet(*seq, 160 * i as u32, 1);
            r.on_packet(
                t0 + Duration::from_millis(20 * i as u64),
                &parse(&p).unwrap(),
            );
        }
        let s = r.stats();
        assert_eq!(s.packets, 6);
        assert_eq!(s.lost, 1, "sequence 1 never came");
        assert_eq!(s.jitter_ms, 0.0);
    }

    #[test]
    fn reordered_packets_are_late_and_not_lost() {
        let mut r = RtpReceiver::new(8000);
        let t0 = Instant::now();
        for (i, seq) in [10u16, 12, 11, 13].iter().enumerate() {
            let p = packet(*seq, 160 * u32::from(*seq), 1);
            let v = r.on_packet(
                t0 + Duration::from_millis(20 * i as u64),
                &parse(&p).unwrap(),
            );
            if *seq == 11 {
                assert_eq!(
                    v,
                    Arrival::Late {
                        extended_sequence: 11
                    }
                );
            }
        }
        assert_eq!(r.stats().lost, 0);
        assert_eq!(r.stats().late, 1);
    }

    #[test]
    fn new_ssrc_resyncs() {
        let mut r = RtpReceiver::new(8000);
        let t0 = Instant::now();
        r.on_packet(t0, &parse(&packet(100, 0, 1)).unwrap());
        let v = r.on_packet(t0, &parse(&packet(9000, 5, 2)).unwrap());
        assert_eq!(v, Arrival::Resync);
        let v = r.on_packet(t0, &parse(&packet(9002, 325, 2)).unwrap());
        assert!(matches!(v, Arrival::InOrder { .. }));
        let s = r.stats();
        assert_eq!(
            (s.resyncs, s.packets, s.total_packets, s.lost),
            (1, 2, 3, 1)
        );
    }

    #[test]
    fn report_blocks_give_the_loss_of_each_interval() {
        let mut r = RtpReceiver::new(8000);
        assert_eq!(r.report_block(), None);
        let t0 = Instant::now();
        // 0..100 with every fourth packet missing, then 100..200 complete.
        for seq in (0..200u16).filter(|s| *s >= 100 || s % 4 != 1) {
            r.on_packet(t0, &parse(&packet(seq, 160 * u32::from(seq), 9)).unwrap());
            if seq == 99 {
                let block = r.report_block().unwrap();
                assert_eq!((block.ssrc, block.fraction_lost), (9, 64));
                assert_eq!(block.highest_sequence, 99);
            }
        }
        let block = r.report_block().unwrap();
        assert_eq!(block.fraction_lost, 0);
        assert_eq!((block.cumulative_lost, block.highest_sequence), (25, 199));
    }

    #[test]
    fn jitter_follows_uneven_arrival() {
        let mut r = RtpReceiver::new(8000);
        let t0 = Instant::now();
        let mut at = t0;
        for i in 0..200u32 {
            // Alternating 10 ms and 30 ms gaps around the 20 ms packet clock.
            at += Duration::from_millis(if i % 2 == 0 { 10 } else { 30 });
            r.on_packet(at, &parse(&packet(i as u16, 160 * i, 1)).unwrap());
        }
        let j = r.stats().jitter_ms;
        assert!((9.0..=11.0).contains(&j), "jitter {j} ms");
    }

    const EVENT: u8 = 101;

    /// A stream on a virtual clock: packets go in at `at` (ms since the start).
    struct Wire {
        receiver: RtpReceiver,
        t0: Instant,
    }

    impl Wire {
        fn new() -> Self {
            Self {
                receiver: RtpReceiver::new(8000).with_telephone_event(Some(EVENT)),
                t0: Instant::now(),
            }
        }

        fn send(&mut self, at_ms: f64, pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) {
            let packet = RtpPacket {
                payload_type: pt,
                marker,
                sequence: seq,
                timestamp: ts,
                ssrc: 0x0e05_384e,
                payload,
            };
            let at = self.t0 + Duration::from_secs_f64(at_ms / 1000.0);
            self.receiver.on_packet(at, &packet);
        }

        /// 20 ms audio packets `seqs`, the first sent at `at_ms` with timestamp `ts`.
        fn talk(&mut self, at_ms: f64, seqs: std::ops::Range<u16>, ts: u32, marker: bool) {
            for (i, seq) in (0u32..).zip(seqs) {
                let at = at_ms + 20.0 * f64::from(i);
                self.send(at, 0, marker && i == 0, seq, ts + 160 * i, &[0xff; 160]);
            }
        }

        /// A key press as telephones send it (and SIPp's captures hold it): `updates` packets
        /// 20 ms apart from `at_ms`, all with the event's start timestamp `ts`, then the end
        /// sent three times; sequence numbers from `seq`. Returns the next sequence number.
        fn press(&mut self, at_ms: f64, seq: u16, ts: u32, updates: u16) -> u16 {
            let mut seq = seq;
            for i in 0..updates + 3 {
                let end = i >= updates;
                let duration = 160 * (i.min(updates) + 1);
                let payload = EventPayload {
                    code: 1,
                    end,
                    volume: 10,
                    duration,
                }
                .to_bytes();
                let at = at_ms + 20.0 * f64::from(i.min(updates));
                self.send(at, EVENT, i == 0, seq, ts, &payload);
                seq = seq.wrapping_add(1);
            }
            seq
        }

        fn stats(&self) -> ReceiverStats {
            self.receiver.stats()
        }
    }

    #[test]
    fn silence_suppression_is_neither_loss_nor_jitter() {
        let mut w = Wire::new();
        // A second of speech, two seconds of silence sent as nothing, a talkspurt (marker bit)
        // on the next sequence number with the timestamp of its real time.
        w.talk(0.0, 1000..1050, 0, true);
        w.talk(3000.0, 1050..1100, 24_000, true);
        let s = w.stats();
        assert_eq!((s.packets, s.lost, s.skipped, s.resyncs), (100, 0, 0, 0));
        assert!(s.jitter_ms < 0.01, "{s:?}");
    }

    #[test]
    fn a_marker_bit_forgives_no_loss() {
        let mut w = Wire::new();
        // The last three packets of a talkspurt are lost; the next talkspurt starts after a
        // pause, marked, its sequence number three past the last one received.
        w.talk(0.0, 0..47, 0, true);
        w.talk(1500.0, 50..100, 12_000, true);
        let s = w.stats();
        assert_eq!((s.lost, s.skipped), (3, 0), "{s:?}");
    }

    #[test]
    fn rfc4733_events_in_the_stream_count_for_loss_but_are_no_jitter() {
        let stream = |receiver: RtpReceiver| {
            let mut w = Wire {
                receiver,
                t0: Instant::now(),
            };
            // Audio, a 160 ms key press in its place (7 updates, the end three times), audio
            // again on the media clock that ran on, twice over.
            w.talk(0.0, 0..50, 0, true);
            let next = w.press(1000.0, 50, 8000, 7);
            w.talk(1160.0, next..next + 20, 9280, false);
            let next = next + 20;
            let next = w.press(1560.0, next, 12_480, 7);
            w.talk(1720.0, next..next + 10, 13_760, false);
            w.stats()
        };
        let s = stream(RtpReceiver::new(8000).with_telephone_event(Some(EVENT)));
        assert_eq!((s.packets, s.lost, s.skipped), (100, 0, 0), "{s:?}");
        assert!(s.jitter_ms < 0.01, "{s:?}");
        // Taken as audio, the events' fixed timestamps would read as 5-20 ms of jitter.
        let s = stream(RtpReceiver::new(8000));
        assert!(s.jitter_ms > 5.0, "{s:?}");
    }

    #[test]
    fn key_presses_spliced_from_captures_are_no_loss_and_no_jitter() {
        // What `dialtone demo` received while its callee replayed SIPp's captures of 1 and #,
        // 400 ms apart: one SSRC, but sequence numbers and timestamps from the recorded call,
        // ten seconds of it between the two presses.
        let mut w = Wire::new();
        let next = w.press(0.0, 7984, 13_280, 7);
        assert_eq!(next, 7994);
        w.press(400.0, 8436, 92_640, 7);
        let s = w.stats();
        assert_eq!(
            (s.packets, s.lost, s.skipped, s.resyncs),
            (20, 0, 442, 0),
            "{s:?}"
        );
        assert_eq!(s.jitter_ms, 0.0);
    }

    #[test]
    fn a_long_outage_is_loss_however_long() {
        // 440 packets lost: 8.8 s pass on the arrival clock as on the media clock.
        let mut w = Wire::new();
        w.talk(0.0, 0..50, 0, true);
        w.talk(1000.0 + 8800.0, 490..540, 160 * 490, false);
        let s = w.stats();
        assert_eq!((s.lost, s.skipped), (440, 0), "{s:?}");
        assert!(s.jitter_ms < 0.01, "{s:?}");
        let block = w.receiver.report_block().unwrap();
        assert_eq!(block.cumulative_lost, 440);
    }

    #[test]
    fn a_spliced_gap_leaves_the_report_blocks_clean() {
        let mut w = Wire::new();
        w.talk(0.0, 0..50, 0, true);
        assert_eq!(w.receiver.report_block().unwrap().fraction_lost, 0);
        // The next 20 ms slot carries a packet 300 sequence numbers and a minute of media time
        // on: a relay switched its source without a new SSRC.
        w.talk(1000.0, 350..400, 480_000, true);
        let block = w.receiver.report_block().unwrap();
        assert_eq!((block.fraction_lost, block.cumulative_lost), (0, 0));
        assert_eq!(block.highest_sequence, 399);
        assert_eq!(w.stats().skipped, 300);
    }

    #[test]
    fn a_sender_that_stops_its_clock_is_no_jitter() {
        // A hold whose silence does not advance the timestamp: three seconds on the arrival
        // clock, twenty milliseconds on the media clock, no gap in the sequence numbers.
        let mut w = Wire::new();
        w.talk(0.0, 0..50, 0, true);
        w.talk(4000.0, 50..100, 8000, true);
        let s = w.stats();
        assert_eq!((s.lost, s.skipped), (0, 0), "{s:?}");
        assert!(s.jitter_ms < 0.01, "{s:?}");
    }

    #[test]
    fn a_timestamp_wrapping_past_its_32_bits_is_no_jitter() {
        let mut r = RtpReceiver::new(8000);
        let mut at = Instant::now();
        let first = u32::MAX - 160 * 50;
        for i in 0..100u32 {
            at += Duration::from_millis(20);
            let timestamp = first.wrapping_add(160 * i);
            r.on_packet(at, &parse(&packet(i as u16, timestamp, 1)).unwrap());
        }
        // Steady 20 ms packets: nothing but the arrival times' rounding.
        let j = r.stats().jitter_ms;
        assert!(j < 0.001, "jitter {j} ms");
    }
}

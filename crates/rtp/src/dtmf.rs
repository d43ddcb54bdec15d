//! RFC 4733 telephone-events (DTMF digits carried as RTP packets).
//!
//! [`DtmfReceiver`] turns the packets of one stream into [`DtmfEvent`]s: a digit starts with
//! its first packet (marker bit or not: the start packet may be lost), continues while packets
//! with the same RTP timestamp update its duration, and ends with the first packet carrying
//! the E bit; the redundant end packets, and any retransmission after the end, are absorbed. An
//! event longer than the 16-bit duration field can express arrives as segments with new
//! timestamps and no marker (§2.5.1.3): they continue the same digit. A digit whose end packets
//! are all lost is ended by [`DtmfReceiver::handle_timeout`].
//!
//! [`DtmfSender`] produces the packets to send for queued digits, one per 20 ms tick: the first
//! with the marker bit, then updates with a growing duration, all with the event's start
//! timestamp, and three end packets with the final duration.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::RtpPacket;

/// A digit event of RFC 4733 §3.2 (DTMF: 0–9, `*`, `#`, A–D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEvent {
    /// A key went down.
    Started {
        /// The digit.
        digit: char,
    },
    /// The key came up after `duration`.
    Ended {
        /// The digit.
        digit: char,
        /// How long it was held.
        duration: Duration,
    },
}

/// The DTMF digit of an RFC 4733 event code, if it is one.
pub fn digit_of(code: u8) -> Option<char> {
    match code {
        0..=9 => char::from_digit(u32::from(code), 10),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + code - 12)),
        _ => None,
    }
}

/// The RFC 4733 event code of a DTMF digit.
pub fn code_of(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => u8::try_from(digit.to_digit(10)?).ok(),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The fields of one telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code.
    pub code: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in media clock ticks.
    pub duration: u16,
}

impl EventPayload {
    /// Reads the first four bytes of a payload (extra bytes, such as RFC 2198 redundancy
    /// trailers we did not negotiate, are ignored).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let [code, flags, hi, lo, ..] = *payload else {
            return None;
        };
        Some(Self {
            code,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([hi, lo]),
        })
    }

    /// The four payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let [hi, lo] = self.duration.to_be_bytes();
        [
            self.code,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            hi,
            lo,
        ]
    }
}

#[derive(Debug, Clone, Copy)]
struct Current {
    digit: char,
    code: u8,
    /// RTP timestamp of the segment being received.
    timestamp: u32,
    /// Ticks of the segments before this one.
    earlier_ticks: u64,
    /// Latest duration of this segment.
    ticks: u16,
    ended: bool,
    last_packet: Instant,
}

/// How long a digit may go without packets before it is taken as ended.
const EVENT_TIMEOUT: Duration = Duration::from_millis(300);

/// The receiving side of one stream's telephone-events.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    current: Option<Current>,
    events: VecDeque<DtmfEvent>,
    malformed: u64,
}

impl DtmfReceiver {
    /// A receiver for events on a `clock_rate` Hz media clock (8000 for telephone-event/8000).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            current: None,
            events: VecDeque::with_capacity(8),
            malformed: 0,
        }
    }

    /// Payloads that were too short or carried a non-DTMF event.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    fn duration(&self, ticks: u64) -> Duration {
        Duration::from_micros(ticks * 1_000_000 / u64::from(self.clock_rate))
    }

    fn end_current(&mut self) {
        if let Some(c) = self.current.as_mut()
            && !c.ended
        {
            c.ended = true;
            let total = c.earlier_ticks + u64::from(c.ticks);
            let (digit, duration) = (c.digit, self.duration(total));
            self.events.push_back(DtmfEvent::Ended { digit, duration });
        }
    }

    /// Takes in one telephone-event packet that arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, packet: &RtpPacket<'_>) {
        let Some(event) = EventPayload::parse(packet.payload) else {
            self.malformed += 1;
            return;
        };
        let Some(digit) = digit_of(event.code) else {
            self.malformed += 1;
            return;
        };
        if let Some(c) = self.current.as_mut() {
            if c.timestamp == packet.timestamp {
                // An update or a (redundant) end packet of the segment we know.
                if c.ended {
                    return;
                }
                c.ticks = c.ticks.max(event.duration);
                c.last_packet = now;
                if event.end {
                    self.end_current();
                }
                return;
            }
            let continues = !c.ended
                && !packet.marker
                && c.code == event.code
                && packet.timestamp.wrapping_sub(c.timestamp) <= u32::from(u16::MAX) + 1;
            if continues {
                // The next segment of a long event.
                c.earlier_ticks += u64::from(packet.timestamp.wrapping_sub(c.timestamp));
                c.timestamp = packet.timestamp;
                c.ticks = event.duration;
                c.last_packet = now;
                if event.end {
                    self.end_current();
                }
                return;
            }
            if c.ended && packet.timestamp.wrapping_sub(c.timestamp) > u32::MAX / 2 {
                // A stray packet of an event before the one just ended.
                return;
            }
        }
        // A new event: whatever was running ended without its end packets.
        self.end_current();
        self.current = Some(Current {
            digit,
            code: event.code,
            timestamp: packet.timestamp,
            earlier_ticks: 0,
            ticks: event.duration,
            ended: false,
            last_packet: now,
        });
        self.events.push_back(DtmfEvent::Started { digit });
        if event.end {
            self.end_current();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if a digit is down.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current
            .filter(|c| !c.ended)
            .map(|c| c.last_packet + EVENT_TIMEOUT)
    }

    /// Ends a digit whose packets stopped without an end packet.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|at| now >= at) {
            self.end_current();
        }
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.events.pop_front()
    }
}

/// One telephone-event packet to send: its payload and RTP header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The four payload bytes.
    pub payload: [u8; 4],
    /// The marker bit (set on the first packet of an event).
    pub marker: bool,
    /// The event's start timestamp (the same for all its packets).
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    code: u8,
    timestamp: u32,
    ticks_sent: u32,
    end_packets: u8,
}

/// How many times the end packet is sent (RFC 4733 §2.5.1.4).
const END_PACKETS: u8 = 3;

/// The sending side: digits in, one packet per 20 ms tick out.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    queue: VecDeque<u8>,
    current: Option<Sending>,
    tone_ticks: u32,
    gap_frames: u32,
    gap_left: u32,
    frame_ticks: u32,
    volume: u8,
}

impl DtmfSender {
    /// A sender of digits `tone` long, `gap` apart, on a `clock_rate` Hz clock with 20 ms
    /// packets.
    pub fn new(clock_rate: u32, tone: Duration, gap: Duration) -> Self {
        let frame_ticks = clock_rate / 50;
        let ticks = |d: Duration| (d.as_micros() * u128::from(clock_rate) / 1_000_000) as u32;
        Self {
            queue: VecDeque::with_capacity(32),
            current: None,
            tone_ticks: ticks(tone).clamp(frame_ticks, u32::from(u16::MAX)),
            gap_frames: (gap.as_millis() / 20) as u32,
            gap_left: 0,
            frame_ticks,
            volume: 10,
        }
    }

    /// Queues `digits`; returns the first character that is not a DTMF digit, queuing none.
    pub fn send(&mut self, digits: &str) -> Result<(), char> {
        let codes: Vec<u8> = digits
            .chars()
            .map(|d| code_of(d).ok_or(d))
            .collect::<Result<_, _>>()?;
        self.queue.extend(codes);
        Ok(())
    }

    /// Whether an event is being sent now (audio must pause).
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Whether digits are queued or being sent.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// The packet for this tick, if an event is under way; `media_timestamp` is the stream's
    /// timestamp now, which a new event starts at.
    pub fn tick(&mut self, media_timestamp: u32) -> Option<EventPacket> {
        if self.current.is_none() {
            if self.gap_left > 0 {
                self.gap_left -= 1;
                return None;
            }
            let code = self.queue.pop_front()?;
            self.current = Some(Sending {
                code,
                timestamp: media_timestamp,
                ticks_sent: 0,
                end_packets: 0,
            });
        }
        let s = self.current.as_mut()?;
        let marker = s.ticks_sent == 0;
        s.ticks_sent = (s.ticks_sent + self.frame_ticks).min(self.tone_ticks);
        let end = s.ticks_sent >= self.tone_ticks;
        if end {
            s.end_packets += 1;
        }
        let packet = EventPacket {
            payload: EventPayload {
                code: s.code,
                end,
                volume: self.volume,
                duration: u16::try_from(s.ticks_sent).unwrap_or(u16::MAX),
            }
            .to_bytes(),
            marker,
            timestamp: s.timestamp,
        };
        if s.end_packets >= END_PACKETS {
            self.current = None;
            self.gap_left = self.gap_frames;
        }
        Some(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ts: u32, marker: bool, payload: &[u8]) -> RtpPacket<'_> {
        RtpPacket {
            payload_type: 101,
            marker,
            sequence: 0,
            timestamp: ts,
            ssrc: 1,
            payload,
        }
    }

    fn drain(r: &mut DtmfReceiver) -> Vec<DtmfEvent> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    #[test]
    fn codes_and_digits_map_both_ways() {
        for (d, c) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('D', 15),
        ] {
            assert_eq!(code_of(d), Some(c));
            assert_eq!(digit_of(c), Some(d));
        }
        assert_eq!(code_of('x'), None);
        assert_eq!(digit_of(16), None);
        let p = EventPayload {
            code: 5,
            end: true,
            volume: 10,
            duration: 1200,
        };
        assert_eq!(EventPayload::parse(&p.to_bytes()), Some(p));
        assert_eq!(EventPayload::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn sender_output_is_what_the_receiver_reads() {
        let mut s = DtmfSender::new(8000, Duration::from_millis(100), Duration::from_millis(60));
        s.send("1#").unwrap();
        assert_eq!(s.send("12x"), Err('x'));
        let mut r = DtmfReceiver::new(8000);
        let t0 = Instant::now();
        let mut ts = 1000u32;
        let mut packets = Vec::new();
        for tick in 0..40u64 {
            if let Some(p) = s.tick(ts) {
                packets.push(p);
                r.handle_packet(
                    t0 + Duration::from_millis(20 * tick),
                    &packet(p.timestamp, p.marker, &p.payload),
                );
            }
            ts += 160;
        }
        assert!(s.is_idle());
        // 100 ms = 5 updates (the last with E) plus 2 more end packets, per digit.
        assert_eq!(packets.len(), 14);
        assert!(packets[0].marker && !packets[1].marker);
        assert!(packets[..7].iter().all(|p| p.timestamp == 1000));
        let ends: Vec<_> = packets[4..7]
            .iter()
            .map(|p| EventPayload::parse(&p.payload).unwrap())
            .collect();
        assert!(ends.iter().all(|e| e.end && e.duration == 800));
        // The second digit starts after the 60 ms gap at its own timestamp.
        assert_eq!(packets[7].timestamp, 1000 + 160 * 10);
        assert_eq!(
            drain(&mut r),
            vec![
                DtmfEvent::Started { digit: '1' },
                DtmfEvent::Ended {
                    digit: '1',
                    duration: Duration::from_millis(100)
                },
                DtmfEvent::Started { digit: '#' },
                DtmfEvent::Ended {
                    digit: '#',
                    duration: Duration::from_millis(100)
                },
            ]
        );
    }

    #[test]
    fn lost_start_and_lost_end_packets_still_give_one_digit_each() {
        let mut r = DtmfReceiver::new(8000);
        let t0 = Instant::now();
        // Digit 5: start packet lost; only an update and the end arrive.
        r.handle_packet(t0, &packet(100, false, &[5, 10, 0x01, 0x40]));
        r.handle_packet(t0, &packet(100, false, &[5, 0x8a, 0x03, 0x20]));
        r.handle_packet(t0, &packet(100, false, &[5, 0x8a, 0x03, 0x20]));
        // Digit 7: every end packet lost; the next digit ends it.
        r.handle_packet(t0, &packet(2000, true, &[7, 10, 0, 160]));
        r.handle_packet(t0, &packet(2000, false, &[7, 10, 1, 64]));
        r.handle_packet(t0, &packet(4000, true, &[8, 10, 0, 160]));
        // Digit 8: its packets stop; the timeout ends it.
        assert!(r.poll_timeout().is_some());
        r.handle_timeout(t0 + Duration::from_millis(100));
        let before_timeout = drain(&mut r);
        r.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(
            before_timeout,
            vec![
                DtmfEvent::Started { digit: '5' },
                DtmfEvent::Ended {
                    digit: '5',
                    duration: Duration::from_millis(100)
                },
                DtmfEvent::Started { digit: '7' },
                DtmfEvent::Ended {
                    digit: '7',
                    duration: Duration::from_millis(40)
                },
                DtmfEvent::Started { digit: '8' },
            ]
        );
        assert_eq!(
            drain(&mut r),
            vec![DtmfEvent::Ended {
                digit: '8',
                duration: Duration::from_millis(20)
            }]
        );
    }

    #[test]
    fn a_long_event_in_segments_is_one_digit() {
        let mut r = DtmfReceiver::new(8000);
        let t0 = Instant::now();
        r.handle_packet(t0, &packet(0, true, &[0, 10, 0xff, 0xff]));
        // Next segment: new timestamp, same event, no marker.
        r.handle_packet(t0, &packet(65535, false, &[0, 10, 0x00, 0xa0]));
        r.handle_packet(t0, &packet(65535, false, &[0, 0x8a, 0x01, 0x40]));
        let events = drain(&mut r);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            DtmfEvent::Ended {
                digit: '0',
                duration: Duration::from_micros((65535 + 320) * 125)
            }
        );
    }

    #[test]
    fn garbage_is_counted_not_a_digit() {
        let mut r = DtmfReceiver::new(8000);
        let t0 = Instant::now();
        r.handle_packet(t0, &packet(0, true, &[1, 2]));
        r.handle_packet(t0, &packet(0, true, &[40, 10, 0, 160]));
        assert_eq!(r.malformed(), 2);
        assert_eq!(r.poll_event(), None);
    }
}

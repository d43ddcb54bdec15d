//! RTCP (RFC 3550 §6): sender and receiver reports, SDES CNAME, BYE, and the round-trip time
//! they let us measure.
//!
//! [`RtcpSession`] is sans-IO: [`handle_packet`](RtcpSession::handle_packet) reads a compound
//! packet that arrived at `now`, [`poll_timeout`](RtcpSession::poll_timeout) says when the next
//! report is due (the §6.2 interval: 5 s minimum, randomised between 0.5 and 1.5 of it, the
//! first after half), and [`write_report`](RtcpSession::write_report) writes the compound
//! report (SR when we sent media since the last one, else RR, then SDES) into a caller-owned
//! buffer. Wall-clock time for the NTP timestamps is derived from one `SystemTime` reading taken
//! at construction plus the monotonic `now`s passed in, so tests run on a virtual clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::RtpError;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// RFC 3550 §6.2 minimum report interval.
const MIN_INTERVAL: Duration = Duration::from_secs(5);

const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;
const BYE: u8 = 203;

/// One reception report block (RFC 3550 §6.4.1) about a source we receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire, clamped).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from that source (0: none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// What we sent since the stream began (the SR sender info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// RTP timestamp corresponding to `now`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// What the far end told us about the stream we send, and the round trip.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RemoteReport {
    /// Fraction of our packets it lost in its last interval (0.0–1.0).
    pub fraction_lost: f64,
    /// Packets of ours it lost in all.
    pub cumulative_lost: i32,
    /// The jitter it measures on our stream, in timestamp units.
    pub jitter: u32,
    /// Round-trip time from its last report block (LSR/DLSR), if it had our SR.
    pub round_trip: Option<Duration>,
    /// Reports received.
    pub reports: u64,
    /// Whether it said BYE.
    pub bye: bool,
}

/// The RTCP state of one RTP session (one SSRC of ours).
#[derive(Debug, Clone)]
pub struct RtcpSession {
    ssrc: u32,
    cname: String,
    epoch: Instant,
    epoch_ntp: u64,
    next_report: Instant,
    rng: u32,
    /// The far end's last SR: its NTP middle 32 bits and when it arrived.
    last_sr: Option<(u32, Instant)>,
    remote: RemoteReport,
    malformed: u64,
}

fn ntp_of(wallclock: SystemTime) -> u64 {
    let since = wallclock.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

impl RtcpSession {
    /// A session for our `ssrc` and `cname`, started at `now` when the wall clock read
    /// `wallclock`.
    pub fn new(ssrc: u32, cname: &str, now: Instant, wallclock: SystemTime) -> Self {
        let mut session = Self {
            ssrc,
            cname: cname.chars().take(255).collect(),
            epoch: now,
            epoch_ntp: ntp_of(wallclock),
            next_report: now,
            rng: ssrc | 1,
            last_sr: None,
            remote: RemoteReport::default(),
            malformed: 0,
        };
        session.next_report = now + session.interval() / 2;
        session
    }

    /// The randomised report interval (xorshift, seeded by the SSRC: no RNG needed here).
    fn interval(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let factor = 0.5 + f64::from(self.rng % 1000) / 1000.0;
        MIN_INTERVAL.mul_f64(factor)
    }

    fn ntp(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch);
        let fraction = (u128::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        self.epoch_ntp
            .wrapping_add(since.as_secs() << 32)
            .wrapping_add(fraction as u64)
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_report
    }

    /// The far end's view of our stream.
    pub fn remote(&self) -> RemoteReport {
        self.remote
    }

    /// Datagrams that were not valid RTCP.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The report block about the source we receive from, with LSR/DLSR filled in from its
    /// last SR.
    pub fn with_last_sr(&self, now: Instant, mut block: ReportBlock) -> ReportBlock {
        if let Some((lsr, at)) = self.last_sr {
            block.last_sr = lsr;
            let delay = now.saturating_duration_since(at);
            block.delay_since_last_sr =
                u32::try_from(delay.as_micros() * 65536 / 1_000_000).unwrap_or(u32::MAX);
        }
        block
    }

    /// Writes a compound report (SR or RR, then SDES CNAME) into `out`, schedules the next one,
    /// and returns its length. `sender` is given when we sent media since the last report;
    /// `received` is the block about the source we receive, if any.
    pub fn write_report(
        &mut self,
        now: Instant,
        sender: Option<SenderInfo>,
        received: Option<ReportBlock>,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let mut w = Writer::new(out);
        let blocks = u8::from(received.is_some());
        let start = w.len;
        match sender {
            Some(info) => {
                w.header(blocks, SR, 0)?;
                w.u32(self.ssrc)?;
                let ntp = self.ntp(now);
                w.u32((ntp >> 32) as u32)?;
                w.u32(ntp as u32)?;
                w.u32(info.rtp_timestamp)?;
                w.u32(info.packets)?;
                w.u32(info.octets)?;
            }
            None => {
                w.header(blocks, RR, 0)?;
                w.u32(self.ssrc)?;
            }
        }
        if let Some(b) = received {
            let b = self.with_last_sr(now, b);
            w.u32(b.ssrc)?;
            let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
            w.u32((u32::from(b.fraction_lost) << 24) | lost)?;
            w.u32(b.highest_sequence)?;
            w.u32(b.jitter)?;
            w.u32(b.last_sr)?;
            w.u32(b.delay_since_last_sr)?;
        }
        w.finish_length(start)?;
        // SDES with one chunk: our SSRC and CNAME, null-terminated, padded to 32 bits.
        let start = w.len;
        w.header(1, SDES, 0)?;
        w.u32(self.ssrc)?;
        let cname = self.cname.as_bytes();
        w.byte(1)?;
        w.byte(cname.len() as u8)?;
        w.bytes(cname)?;
        w.byte(0)?;
        while !(w.len - start).is_multiple_of(4) {
            w.byte(0)?;
        }
        w.finish_length(start)?;
        self.next_report = now + self.interval();
        Ok(w.len)
    }

    /// Writes a BYE for our SSRC into `out`; returns its length.
    pub fn write_bye(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        let mut w = Writer::new(out);
        w.header(1, BYE, 0)?;
        w.u32(self.ssrc)?;
        w.finish_length(0)?;
        Ok(w.len)
    }

    /// Reads a compound RTCP packet that arrived at `now`. A malformed one is counted and
    /// reported as an error; what was read before the fault is kept.
    pub fn handle_packet(&mut self, now: Instant, datagram: &[u8]) -> Result<(), RtpError> {
        let result = self.read_compound(now, datagram);
        if result.is_err() {
            self.malformed += 1;
        }
        result
    }

    fn read_compound(&mut self, now: Instant, datagram: &[u8]) -> Result<(), RtpError> {
        let malformed = |reason| RtpError::Malformed { reason };
        if datagram.len() < 8 {
            return Err(malformed("RTCP shorter than a header"));
        }
        let mut at = 0;
        while at < datagram.len() {
            let header = datagram
                .get(at..at + 4)
                .ok_or(malformed("RTCP header truncated"))?;
            let (first, kind) = match header {
                [first, kind, _, _] => (*first, *kind),
                _ => return Err(malformed("RTCP header truncated")),
            };
            if first >> 6 != 2 {
                return Err(malformed("RTCP version is not 2"));
            }
            let count = usize::from(first & 0x1f);
            let words = usize::from(u16::from_be_bytes([
                *header.get(2).unwrap_or(&0),
                *header.get(3).unwrap_or(&0),
            ]));
            let end = at + 4 + words * 4;
            let body = datagram
                .get(at + 4..end)
                .ok_or(malformed("RTCP length runs past the datagram"))?;
            match kind {
                SR => {
                    let ntp_hi = be32(body, 4).ok_or(malformed("SR too short"))?;
                    let ntp_lo = be32(body, 8).ok_or(malformed("SR too short"))?;
                    self.last_sr = Some(((ntp_hi << 16) | (ntp_lo >> 16), now));
                    self.read_blocks(now, body.get(24..).unwrap_or_default(), count)?;
                }
                RR => self.read_blocks(now, body.get(4..).unwrap_or_default(), count)?,
                BYE => self.remote.bye = true,
                _ => {}
            }
            at = end;
        }
        Ok(())
    }

    fn read_blocks(&mut self, now: Instant, blocks: &[u8], count: usize) -> Result<(), RtpError> {
        for i in 0..count {
            let block = blocks.get(i * 24..i * 24 + 24).ok_or(RtpError::Malformed {
                reason: "report block truncated",
            })?;
            if be32(block, 0) != Some(self.ssrc) {
                continue;
            }
            let loss = be32(block, 4).unwrap_or(0);
            let lost = ((loss << 8) as i32) >> 8;
            let lsr = be32(block, 16).unwrap_or(0);
            let dlsr = be32(block, 20).unwrap_or(0);
            self.remote.fraction_lost = f64::from(loss >> 24) / 256.0;
            self.remote.cumulative_lost = lost;
            self.remote.jitter = be32(block, 12).unwrap_or(0);
            self.remote.reports += 1;
            if lsr != 0 {
                // RFC 3550 §6.4.1: RTT = A - LSR - DLSR, all in 1/65536 s.
                let arrival = (self.ntp(now) >> 16) as u32;
                let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
                if rtt < u32::MAX / 2 {
                    self.remote.round_trip =
                        Some(Duration::from_micros(u64::from(rtt) * 1_000_000 / 65536));
                }
            }
        }
        Ok(())
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self { out, len: 0 }
    }

    fn byte(&mut self, b: u8) -> Result<(), RtpError> {
        let available = self.out.len();
        let slot = self.out.get_mut(self.len).ok_or(RtpError::BufferTooSmall {
            needed: self.len + 1,
            available,
        })?;
        *slot = b;
        self.len += 1;
        Ok(())
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), RtpError> {
        bytes.iter().try_for_each(|b| self.byte(*b))
    }

    fn u32(&mut self, v: u32) -> Result<(), RtpError> {
        self.bytes(&v.to_be_bytes())
    }

    fn header(&mut self, count: u8, kind: u8, length: u16) -> Result<(), RtpError> {
        self.byte(0x80 | (count & 0x1f))?;
        self.byte(kind)?;
        self.bytes(&length.to_be_bytes())
    }

    /// Fills in the length field of the packet that started at `start`.
    fn finish_length(&mut self, start: usize) -> Result<(), RtpError> {
        let words = u16::try_from((self.len - start) / 4 - 1).unwrap_or(u16::MAX);
        let [hi, lo] = words.to_be_bytes();
        let available = self.out.len();
        let field = self
            .out
            .get_mut(start + 2..start + 4)
            .ok_or(RtpError::BufferTooSmall {
                needed: start + 4,
                available,
            })?;
        field.copy_from_slice(&[hi, lo]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_give_the_round_trip_time() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = RtcpSession::new(0xaaaa, "a@dialtone", t0, wall);
        let mut b = RtcpSession::new(0xbbbb, "b@peer", t0, wall);
        let mut buf = [0u8; 256];
        // A sends an SR; it takes 30 ms to reach B.
        let n = a
            .write_report(
                t0,
                Some(SenderInfo {
                    rtp_timestamp: 8000,
                    packets: 50,
                    octets: 8000,
                }),
                None,
                &mut buf,
            )
            .unwrap();
        assert_eq!(buf[1], SR);
        b.handle_packet(t0 + Duration::from_millis(30), &buf[..n])
            .unwrap();
        // B answers 100 ms later with an RR whose block is about A; it takes 30 ms back.
        let block = ReportBlock {
            ssrc: 0xaaaa,
            fraction_lost: 64,
            cumulative_lost: 3,
            highest_sequence: 1049,
            jitter: 40,
            ..ReportBlock::default()
        };
        let n = b
            .write_report(t0 + Duration::from_millis(130), None, Some(block), &mut buf)
            .unwrap();
        assert_eq!(buf[1], RR);
        a.handle_packet(t0 + Duration::from_millis(160), &buf[..n])
            .unwrap();
        let remote = a.remote();
        assert_eq!(remote.reports, 1);
        assert_eq!(remote.fraction_lost, 0.25);
        assert_eq!((remote.cumulative_lost, remote.jitter), (3, 40));
        let rtt = remote.round_trip.unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(60)) < Duration::from_millis(1),
            "{rtt:?}"
        );
        let n = a.write_bye(&mut buf).unwrap();
        b.handle_packet(t0, &buf[..n]).unwrap();
        assert!(b.remote().bye);
    }

    #[test]
    fn the_interval_is_randomised_around_five_seconds() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(77, "x", t0, SystemTime::now());
        let first = s.poll_timeout() - t0;
        assert!(first >= Duration::from_millis(1250) && first <= Duration::from_millis(3750));
        let mut buf = [0u8; 128];
        let mut intervals = Vec::new();
        for _ in 0..20 {
            let now = s.poll_timeout();
            s.write_report(now, None, None, &mut buf).unwrap();
            intervals.push(s.poll_timeout() - now);
        }
        assert!(
            intervals
                .iter()
                .all(|i| *i >= Duration::from_millis(2500) && *i <= Duration::from_millis(7500))
        );
        assert!(intervals.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(1, "x", t0, SystemTime::now());
        for bad in [
            &[][..],
            &[0x80, 200, 0, 1],
            &[0x80, 200, 0, 9, 0, 0, 0, 1],
            &[0x40, 201, 0, 1, 0, 0, 0, 1],
            &[0x81, 201, 0, 1, 0, 0, 0, 1],
        ] {
            assert!(s.handle_packet(t0, bad).is_err(), "{bad:?}");
        }
        assert_eq!(s.malformed(), 5);
        assert!(matches!(
            s.write_report(t0, None, None, &mut [0u8; 10]),
            Err(RtpError::BufferTooSmall { .. })
        ));
    }
}

//! An adaptive jitter buffer driven by `now`.
//!
//! Packets go in as they arrive ([`JitterBuffer::push`]); the media clock takes one frame out
//! every frame period ([`JitterBuffer::pop`]). The buffer
//!
//! * reorders by extended sequence number and drops duplicates and packets that come after
//!   their playout time (counted);
//! * holds a target delay derived from the measured interarrival jitter (RFC 3550 A.8): two
//!   frames (40 ms at 20 ms frames) on a clean network, growing under jitter up to a hard
//!   maximum, shrinking back one frame at a time once the network has been calm;
//! * reports a lost frame as [`Playout::Lost`] so the codec can conceal it;
//! * handles clock drift: a buffer that stays deeper than its target drops a frame, one that
//!   runs dry re-buffers, so it neither grows without bound nor starves for long;
//! * catches up on a backlog: when more than twice its target plus [`CATCH_UP_SLACK`] is
//!   buffered — the reader was held up, or a stalled network delivered in one burst — it
//!   skips to the newest target's worth plus one frame at once, rather than playing every
//!   later frame that much late for the rest of the call. A smaller excess is left to the
//!   drift rule, which drains it a frame at a time and keeps it as a cushion meanwhile.
//!
//! Slots are allocated once; pushing and popping do not allocate.

use std::time::{Duration, Instant};

use crate::RtpPacket;

/// What the media clock gets for one frame period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The frame's payload, in order.
    Frame {
        /// The payload as it arrived.
        payload: &'a [u8],
        /// Its RTP timestamp.
        timestamp: u32,
        /// Its payload type (the codec's, or comfort noise).
        payload_type: u8,
        /// When its packet arrived.
        arrival: Instant,
    },
    /// The frame due now never arrived (or arrived too late): conceal it.
    Lost,
    /// Nothing to play: still buffering, or the stream stopped.
    Empty,
}

/// Counters of the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames played from packets.
    pub played: u64,
    /// Frames reported lost (concealed).
    pub lost: u64,
    /// Packets dropped because their frame had already been played or concealed.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Frames dropped to bring an over-deep buffer back to its target (drift, delay shrink).
    pub drained: u64,
    /// Times the buffer ran dry and started buffering again.
    pub rebuffers: u64,
    /// Current target delay in frames.
    pub target_frames: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    sequence: Option<u64>,
    timestamp: u32,
    payload_type: u8,
    arrival: Option<Instant>,
    payload: Vec<u8>,
}

/// The jitter buffer of one stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    slots: Vec<Slot>,
    frame: Duration,
    samples_per_frame: u32,
    clock_rate: u32,
    min_frames: u32,
    max_frames: u32,
    target_frames: u32,
    next: Option<u64>,
    highest: Option<u64>,
    playing: bool,
    buffering_since: Option<Instant>,
    transit: Option<f64>,
    jitter: f64,
    calm_since: Option<Instant>,
    deep_pops: u32,
    dry_pops: u32,
    stats: JitterStats,
}

/// Largest payload a slot keeps (an Opus frame is at most 1275 bytes).
const SLOT_BYTES: usize = 1500;
/// How long the network must be calm before the target shrinks by one frame.
const CALM: Duration = Duration::from_secs(2);
/// Frames beyond twice the target the buffer may hold before it skips to the newest ones
/// (160 ms of 20 ms frames).
pub const CATCH_UP_SLACK: u32 = 8;

impl JitterBuffer {
    /// A buffer for frames of `frame` duration at `clock_rate` Hz, keeping between two frames
    /// and `max_delay` of delay.
    pub fn new(frame: Duration, clock_rate: u32, max_delay: Duration) -> Self {
        let frame_ms = frame.as_millis().max(1);
        let max_frames = u32::try_from(max_delay.as_millis() / frame_ms)
            .unwrap_or(u32::MAX)
            .max(2);
        let capacity = (max_frames as usize * 2).max(16);
        Self {
            slots: vec![
                Slot {
                    sequence: None,
                    timestamp: 0,
                    payload_type: 0,
                    arrival: None,
                    payload: Vec::with_capacity(SLOT_BYTES),
                };
                capacity
            ],
            frame,
            samples_per_frame: (u128::from(clock_rate) * frame.as_micros() / 1_000_000) as u32,
            clock_rate: clock_rate.max(1),
            min_frames: 2,
            max_frames,
            target_frames: 2,
            next: None,
            highest: None,
            playing: false,
            buffering_since: None,
            transit: None,
            jitter: 0.0,
            calm_since: None,
            deep_pops: 0,
            dry_pops: 0,
            stats: JitterStats {
                target_frames: 2,
                ..JitterStats::default()
            },
        }
    }

    /// Counters, and the current target.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The delay the buffer aims for now.
    pub fn target_delay(&self) -> Duration {
        self.frame * self.target_frames
    }

    fn slot_index(&self, sequence: u64) -> usize {
        (sequence % self.slots.len() as u64) as usize
    }

    /// Accepts a packet with its extended sequence number (from [`crate::RtpReceiver`]).
    pub fn push(&mut self, now: Instant, sequence: u64, packet: &RtpPacket<'_>) {
        let (timestamp, payload) = (packet.timestamp, packet.payload);
        if self.next.is_some_and(|n| sequence < n) {
            self.stats.late += 1;
            return;
        }
        // A packet too far ahead of the playout point restarts the stream around it.
        if self
            .next
            .is_some_and(|n| sequence >= n + self.slots.len() as u64)
        {
            self.reset_playout();
        }
        let index = self.slot_index(sequence);
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.sequence == Some(sequence) {
            self.stats.duplicates += 1;
            return;
        }
        slot.sequence = Some(sequence);
        slot.timestamp = timestamp;
        slot.payload_type = packet.payload_type;
        slot.arrival = Some(now);
        slot.payload.clear();
        slot.payload.extend_from_slice(
            payload
                .get(..SLOT_BYTES.min(payload.len()))
                .unwrap_or_default(),
        );
        self.highest = Some(self.highest.map_or(sequence, |h| h.max(sequence)));
        if self.next.is_none() {
            self.next = Some(sequence);
            self.buffering_since = Some(now);
        }
        self.observe_jitter(now, timestamp);
    }

    /// RFC 3550 A.8 on arrival times, then the target: about three jitters, in whole frames.
    fn observe_jitter(&mut self, now: Instant, timestamp: u32) {
        let epoch = self.buffering_since.unwrap_or(now);
        let arrival =
            now.saturating_duration_since(epoch).as_secs_f64() * f64::from(self.clock_rate);
        let transit = arrival - f64::from(timestamp);
        if let Some(previous) = self.transit {
            let d = (transit - previous).abs();
            // A jump of the sender's timeline (a resync, a clock stopped) is not jitter.
            if !crate::timeline_jump(d, self.clock_rate) {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.transit = Some(transit);
        let jitter_frames = self.jitter / f64::from(self.samples_per_frame.max(1));
        let wanted =
            ((3.0 * jitter_frames).ceil() as u32 + 1).clamp(self.min_frames, self.max_frames);
        if wanted > self.target_frames {
            self.target_frames = wanted;
            self.calm_since = None;
        } else if wanted < self.target_frames {
            let since = *self.calm_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= CALM {
                self.target_frames -= 1;
                self.calm_since = Some(now);
            }
        } else {
            self.calm_since = None;
        }
        self.stats.target_frames = self.target_frames;
    }

    /// Forgets everything buffered (the source changed): the next packet starts afresh.
    pub fn reset(&mut self) {
        self.reset_playout();
    }

    fn reset_playout(&mut self) {
        for slot in &mut self.slots {
            slot.sequence = None;
        }
        self.next = None;
        self.highest = None;
        self.playing = false;
        self.transit = None;
        self.stats.rebuffers += 1;
    }

    /// Frames buffered from the playout point to the highest sequence seen.
    fn depth(&self) -> u64 {
        match (self.next, self.highest) {
            (Some(n), Some(h)) if h >= n => h - n + 1,
            _ => 0,
        }
    }

    /// The payload of the frame the next [`pop`](Self::pop) plays, if it is here: after a
    /// [`Playout::Lost`], a codec with forward error correction rebuilds the lost frame from it.
    pub fn peek_next(&self) -> Option<&[u8]> {
        let next = self.next?;
        self.slots
            .get(self.slot_index(next))
            .filter(|s| s.sequence == Some(next))
            .map(|s| s.payload.as_slice())
    }

    /// The frame due at `now` (call once per frame period).
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        let Some(next) = self.next else {
            return Playout::Empty;
        };
        if !self.playing {
            let waited = self
                .buffering_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.target_delay());
            let depth = self.depth();
            if depth >= u64::from(self.target_frames) || (waited && depth > 0) {
                self.playing = true;
            } else {
                return Playout::Empty;
            }
        }
        let depth = self.depth();
        if depth > u64::from(2 * self.target_frames + CATCH_UP_SLACK) {
            return self.catch_up(now, next, depth);
        }
        // Drift and shrink: a buffer persistently deeper than its target drops a frame.
        if depth > u64::from(self.target_frames) + 1 {
            self.deep_pops += 1;
            if self.deep_pops >= 25 {
                self.deep_pops = 0;
                let index = self.slot_index(next);
                if let Some(slot) = self.slots.get_mut(index)
                    && slot.sequence == Some(next)
                {
                    slot.sequence = None;
                }
                self.stats.drained += 1;
                self.next = Some(next + 1);
                return self.pop_at(now, next + 1);
            }
        } else {
            self.deep_pops = 0;
        }
        self.pop_at(now, next)
    }

    /// Drops the frames from `next` up to the newest target's worth plus one of a
    /// `depth`-frame backlog, and plays the first one kept.
    fn catch_up(&mut self, now: Instant, next: u64, depth: u64) -> Playout<'_> {
        let keep = next + depth - u64::from(self.target_frames + 1);
        for sequence in next..keep {
            let index = self.slot_index(sequence);
            if let Some(slot) = self.slots.get_mut(index)
                && slot.sequence == Some(sequence)
            {
                slot.sequence = None;
                self.stats.drained += 1;
            }
        }
        self.deep_pops = 0;
        self.pop_at(now, keep)
    }

    fn pop_at(&mut self, now: Instant, sequence: u64) -> Playout<'_> {
        let index = self.slot_index(sequence);
        self.next = Some(sequence + 1);
        let present = self
            .slots
            .get(index)
            .is_some_and(|s| s.sequence == Some(sequence));
        if present {
            self.dry_pops = 0;
            self.stats.played += 1;
            let Some(slot) = self.slots.get_mut(index) else {
                return Playout::Empty;
            };
            slot.sequence = None;
            return Playout::Frame {
                payload: &slot.payload,
                timestamp: slot.timestamp,
                payload_type: slot.payload_type,
                arrival: slot.arrival.unwrap_or(now),
            };
        }
        if self.highest.is_some_and(|h| h > sequence) {
            // A later frame is here: this one is lost.
            self.stats.lost += 1;
            return Playout::Lost;
        }
        // Nothing buffered: conceal a few frames, then wait for the stream to come back.
        self.dry_pops += 1;
        if self.dry_pops > self.target_frames {
            self.dry_pops = 0;
            self.playing = false;
            self.buffering_since = Some(now);
            self.stats.rebuffers += 1;
            self.next = Some(sequence);
            return Playout::Empty;
        }
        self.stats.lost += 1;
        Playout::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    fn frame(timestamp: u32, payload: &[u8]) -> RtpPacket<'_> {
        RtpPacket {
            payload_type: 0,
            marker: false,
            sequence: 0,
            timestamp,
            ssrc: 1,
            payload,
        }
    }

    fn buffer() -> JitterBuffer {
        JitterBuffer::new(FRAME, 8000, Duration::from_millis(300))
    }

    /// Plays the arrivals (`(arrival offset ms, sequence)`) against a 20 ms playout clock for
    /// `ticks` frames; returns what came out ("1", "2", "lost", "-").
    fn run(jb: &mut JitterBuffer, arrivals: &[(u64, u64)], ticks: u64) -> Vec<String> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut pending: Vec<(u64, u64)> = arrivals.to_vec();
        pending.sort();
        let mut i = 0;
        for tick in 0..ticks {
            let now_ms = tick * 20;
            while i < pending.len() && pending[i].0 <= now_ms {
                let (at, seq) = pending[i];
                jb.push(
                    t0 + Duration::from_millis(at),
                    seq,
                    &frame((seq * 160) as u32, &[seq as u8; 160]),
                );
                i += 1;
            }
            out.push(match jb.pop(t0 + Duration::from_millis(now_ms)) {
                Playout::Frame { payload, .. } => payload[0].to_string(),
                Playout::Lost => "lost".into(),
                Playout::Empty => "-".into(),
            });
        }
        out
    }

    #[test]
    fn clean_network_plays_in_order_after_40_ms() {
        let mut jb = buffer();
        let arrivals: Vec<(u64, u64)> = (0..10).map(|s| (s * 20, s)).collect();
        let out = run(&mut jb, &arrivals, 11);
        assert_eq!(
            out[..2],
            ["-", "0"],
            "playout starts once two frames are in (20 ms)"
        );
        assert_eq!(out[2..11], ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        assert_eq!(jb.target_delay(), Duration::from_millis(40));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn reordering_is_fixed_and_loss_reported_once() {
        let mut jb = buffer();
        let arrivals = [
            (0, 0),
            (20, 1),
            (40, 3),
            (45, 2),
            (60, 4),
            (100, 6),
            (120, 7),
        ];
        let out = run(&mut jb, &arrivals, 9);
        assert_eq!(out, ["-", "0", "1", "2", "3", "4", "lost", "6", "7"]);
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped_and_counted() {
        let mut jb = buffer();
        let t0 = Instant::now();
        jb.push(t0, 10, &frame(0, &[1]));
        jb.push(t0, 10, &frame(0, &[1]));
        jb.push(t0, 11, &frame(160, &[2]));
        assert!(matches!(jb.pop(t0 + FRAME * 2), Playout::Frame { .. }));
        jb.push(t0 + FRAME * 2, 10, &frame(0, &[1]));
        assert_eq!(jb.stats().duplicates, 1);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn target_grows_under_jitter_and_shrinks_when_calm() {
        let mut jb = buffer();
        // Packets arrive in bursts: two at once every 40 ms (±20 ms jitter).
        let jittery: Vec<(u64, u64)> = (0..200).map(|s| ((s / 2) * 40 + 10, s)).collect();
        let out = run(&mut jb, &jittery, 200);
        let grown = jb.target_delay();
        assert!(grown >= Duration::from_millis(60), "target {grown:?}");
        let lost_late: usize = out[20..].iter().filter(|o| *o == "lost").count();
        assert_eq!(
            lost_late, 0,
            "once adapted, bursts play without loss: {out:?}"
        );
        // Then a clean network for 10 s: the target comes back down.
        let mut jb2 = jb.clone();
        let t0 = Instant::now();
        for s in 0..500u64 {
            let now = t0 + Duration::from_millis(s * 20);
            jb2.push(now, 200 + s, &frame(((200 + s) * 160) as u32, &[0; 160]));
            let _ = jb2.pop(now);
        }
        assert!(
            jb2.target_delay() < grown,
            "{:?} !< {grown:?}",
            jb2.target_delay()
        );
        assert_eq!(jb2.target_delay(), Duration::from_millis(40));
    }

    /// Ten minutes of a sender whose packets come every `period_us` against the 20 ms playout
    /// clock; `on_pop` sees each pop's result and the buffer depth after it.
    fn drift(jb: &mut JitterBuffer, period_us: u64, mut on_pop: impl FnMut(bool, u64)) {
        let t0 = Instant::now();
        let mut sent = 0u64;
        for tick in 0..30_000u64 {
            let now = t0 + Duration::from_micros(tick * 20_000);
            while sent * period_us <= tick * 20_000 {
                jb.push(
                    t0 + Duration::from_micros(sent * period_us),
                    sent,
                    &frame((sent * 160) as u32, &[0; 160]),
                );
                sent += 1;
            }
            let played = matches!(jb.pop(now), Playout::Frame { .. });
            on_pop(played, jb.depth());
        }
    }

    #[test]
    fn a_fast_sender_clock_is_drained_and_the_buffer_stays_bounded() {
        let mut jb = buffer();
        // The sender's clock runs 1% fast: a packet every 19.8 ms.
        let mut max_depth = 0;
        drift(&mut jb, 19_800, |_, depth| max_depth = max_depth.max(depth));
        assert!(max_depth <= 6, "depth grew to {max_depth}");
        assert!(jb.stats().drained >= 250, "{:?}", jb.stats());
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_slow_sender_clock_conceals_and_rebuffers_without_growing() {
        let mut jb = buffer();
        let mut lost_or_empty = 0;
        drift(&mut jb, 20_200, |played, _| {
            if !played {
                lost_or_empty += 1;
            }
        });
        // 1% slow: about 300 frames short over 30 000; each is made up once, not more.
        assert!(
            (250..=700).contains(&lost_or_empty),
            "{lost_or_empty} {:?}",
            jb.stats()
        );
        assert!(jb.depth() <= 4);
    }

    /// Pushes frame `s` (its payload all `s`) as having arrived at `at`.
    fn push_arrived(jb: &mut JitterBuffer, at: Instant, s: u64) {
        jb.push(at, s, &frame((s * 160) as u32, &[s as u8; 160]));
    }

    #[test]
    fn a_backlog_from_a_reader_held_up_is_skipped_at_once() {
        let mut jb = buffer();
        let t0 = Instant::now();
        // The reader starts 500 ms late: 25 frames, which arrived 20 ms apart, come in at once.
        for s in 0..25u64 {
            push_arrived(&mut jb, t0 + FRAME * s as u32, s);
        }
        let mut played = Vec::new();
        for tick in 0..10u32 {
            let now = t0 + FRAME * (25 + tick);
            if tick > 0 {
                push_arrived(&mut jb, now, u64::from(24 + tick));
            }
            if let Playout::Frame {
                payload, arrival, ..
            } = jb.pop(now)
            {
                played.push((payload[0], now.saturating_duration_since(arrival)));
            }
        }
        assert_eq!(played.first().map(|p| p.0), Some(22), "{played:?}");
        assert!(
            played.iter().all(|(_, late)| *late <= FRAME * 3),
            "every frame plays within the target and a frame of arriving: {played:?}"
        );
        assert_eq!(jb.stats().drained, 22);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_small_backlog_is_kept_as_a_cushion_and_drained_a_frame_at_a_time() {
        let mut jb = buffer();
        let t0 = Instant::now();
        // The reader starts 160 ms late: eight frames at once, within the catch-up's slack.
        for s in 0..8u64 {
            push_arrived(&mut jb, t0 + FRAME * s as u32, s);
        }
        let first = match jb.pop(t0 + FRAME * 8) {
            Playout::Frame { payload, .. } => payload[0],
            other => panic!("{other:?}"),
        };
        assert_eq!(first, 0, "nothing skipped");
        assert_eq!(jb.stats().drained, 0);
    }

    #[test]
    fn a_stream_that_stops_rebuffers_then_resumes() {
        let mut jb = buffer();
        let arrivals: Vec<(u64, u64)> = (0..5)
            .map(|s| (s * 20, s))
            .chain((50..55).map(|s| (s * 20, s)))
            .collect();
        let out = run(&mut jb, &arrivals, 60);
        // Two frames concealed after each stop, then silence until the stream is back.
        assert_eq!(out.iter().filter(|o| *o == "lost").count(), 4, "{out:?}");
        assert!(
            out.contains(&"50".to_string()) && out.contains(&"54".to_string()),
            "{out:?}"
        );
        assert!(jb.stats().rebuffers >= 1);
    }
}

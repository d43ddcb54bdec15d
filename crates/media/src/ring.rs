//! The lock-free single-producer single-consumer rings (rtrb) between a media worker and the
//! speech loop, one each way per call.
//!
//! Toward the speech loop ([`FrameReceiver`]): the worker pushes one 16 kHz frame per 20 ms;
//! a consumer that falls behind loses the *oldest* frames (it drops them itself when it finds
//! the ring more than half full, so what it hears next is recent), and when the ring is
//! completely full the worker drops the new frame; both count as overflow. The worker wakes the
//! consumer through a [`tokio::sync::Notify`] after each push.
//!
//! From the speech loop ([`FrameSender`]): the agent side pushes frames; the worker pops one per
//! tick and sends silence (counted as underflow) when none is there. The agent side keeps
//! [`FrameSender::lead`] frames queued while it speaks: one, so a frame waits at most a tick,
//! and one more each time the worker found the ring empty in the middle of the agent's speech
//! (the speech loop ran late), up to [`MAX_LEAD`]. [`FrameSender::clear`] asks the worker to
//! discard everything queued (barge-in).
//!
//! Wire times ([`WireClock`]): the agent side can ask when one frame it pushes is taken to be sent
//! ([`FrameSender::watch`], [`FrameSender::watched_sent_at`]: the first audio of an answer, for
//! voice-to-voice) and when the worker discarded the queue on its last
//! [`FrameSender::clear`] ([`FrameSender::cleared_at`]: a barge-in's audio stopping). The worker
//! stamps them with its tick's `now` through atomics: nothing on its side waits or allocates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use crate::MediaError;

/// Samples in one 20 ms frame at 16 kHz, the speech loop's format.
pub const FRAME_SAMPLES: usize = 320;

/// Frames each ring holds (half a second).
pub const RING_FRAMES: usize = 25;

/// The most frames [`FrameSender::lead`] keeps queued ahead of the worker (60 ms).
pub const MAX_LEAD: usize = 3;

/// One 20 ms frame of 16 kHz mono PCM16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFrame {
    /// The samples.
    pub samples: [i16; FRAME_SAMPLES],
    /// Inbound: when the RTP packet carrying it arrived (for a concealed frame, when it was
    /// made). Outbound: when the agent side queued it.
    pub at: Instant,
}

impl AudioFrame {
    /// A silent frame stamped `at`.
    pub fn silence(at: Instant) -> Self {
        Self {
            samples: [0; FRAME_SAMPLES],
            at,
        }
    }
}

/// Counters both ends of a call's rings update.
#[derive(Debug)]
pub(crate) struct RingCounters {
    pub(crate) inbound_overflow: AtomicU64,
    pub(crate) outbound_overflow: AtomicU64,
    /// Ticks at which the worker found the outbound ring empty.
    pub(crate) outbound_underflow: AtomicU64,
    pub(crate) clear_outbound: AtomicBool,
    pub(crate) wire: WireClock,
}

impl RingCounters {
    /// Counters at zero, wire times counted from `epoch`.
    fn new(epoch: Instant) -> Self {
        Self {
            inbound_overflow: AtomicU64::new(0),
            outbound_overflow: AtomicU64::new(0),
            outbound_underflow: AtomicU64::new(0),
            clear_outbound: AtomicBool::new(false),
            wire: WireClock::new(epoch),
        }
    }
}

/// When chosen outbound frames left, stamped by the worker. Times are nanoseconds after `epoch`
/// plus one, so that zero means "not yet".
#[derive(Debug)]
pub(crate) struct WireClock {
    epoch: Instant,
    /// The ordinal (counting every frame pushed, from 1) of the frame whose send time is wanted;
    /// 0: none.
    watched: AtomicU64,
    /// When the watched frame was taken to be sent.
    watched_sent: AtomicU64,
    /// When the worker discarded the queue after the last clear request.
    cleared: AtomicU64,
}

impl WireClock {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            watched: AtomicU64::new(0),
            watched_sent: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn time(&self, stamp: u64) -> Option<Instant> {
        let after = stamp.checked_sub(1)?;
        Some(self.epoch + std::time::Duration::from_nanos(after))
    }

    /// The worker took the frame numbered `ordinal` to send it at `now`.
    pub(crate) fn taken(&self, ordinal: u64, now: Instant) {
        if self.watched.load(Ordering::Acquire) == ordinal {
            self.watched_sent.store(self.stamp(now), Ordering::Release);
        }
    }

    /// The worker discarded the queue at `now`, as asked.
    pub(crate) fn cleared(&self, now: Instant) {
        self.cleared.store(self.stamp(now), Ordering::Release);
    }
}

/// The speech loop's end of the inbound ring.
#[derive(Debug)]
pub struct FrameReceiver {
    ring: rtrb::Consumer<AudioFrame>,
    notify: Arc<Notify>,
    counters: Arc<RingCounters>,
}

impl FrameReceiver {
    pub(crate) fn new(
        ring: rtrb::Consumer<AudioFrame>,
        notify: Arc<Notify>,
        counters: Arc<RingCounters>,
    ) -> Self {
        Self {
            ring,
            notify,
            counters,
        }
    }

    /// The next frame if one is ready, after dropping the oldest ones when the consumer has
    /// fallen more than half a ring behind.
    pub fn try_recv(&mut self) -> Option<AudioFrame> {
        let backlog = self.ring.slots();
        if backlog > RING_FRAMES / 2 {
            let excess = backlog - RING_FRAMES / 2;
            if let Ok(chunk) = self.ring.read_chunk(excess) {
                chunk.commit_all();
                self.counters
                    .inbound_overflow
                    .fetch_add(excess as u64, Ordering::Relaxed);
            }
        }
        self.ring.pop().ok()
    }

    /// The next frame if one is ready, after dropping the oldest so that at most `backlog`
    /// frames were waiting (a relay keeps its delay bounded; the dropped ones count as
    /// overflow).
    pub(crate) fn try_recv_recent(&mut self, backlog: usize) -> Option<AudioFrame> {
        let waiting = self.ring.slots();
        if waiting > backlog {
            let excess = waiting - backlog;
            if let Ok(chunk) = self.ring.read_chunk(excess) {
                chunk.commit_all();
                self.counters
                    .inbound_overflow
                    .fetch_add(excess as u64, Ordering::Relaxed);
            }
        }
        self.ring.pop().ok()
    }

    /// Waits for the next frame; `None` once the call's media has stopped and the ring is
    /// drained.
    pub async fn recv(&mut self) -> Option<AudioFrame> {
        loop {
            if let Some(frame) = self.try_recv() {
                return Some(frame);
            }
            if self.ring.is_abandoned() {
                return None;
            }
            self.notify.notified().await;
        }
    }
}

/// The speech loop's end of the outbound ring.
#[derive(Debug)]
pub struct FrameSender {
    ring: rtrb::Producer<AudioFrame>,
    counters: Arc<RingCounters>,
    /// Frames pushed so far (the ordinal of the last one).
    pushed: u64,
    lead: usize,
    /// The worker's underflow count at the last [`lead`](Self::lead).
    underflows_seen: u64,
    /// Whether the agent was speaking at the last [`lead`](Self::lead).
    was_speaking: bool,
}

impl FrameSender {
    pub(crate) fn new(ring: rtrb::Producer<AudioFrame>, counters: Arc<RingCounters>) -> Self {
        Self {
            ring,
            counters,
            pushed: 0,
            lead: 1,
            underflows_seen: 0,
            was_speaking: false,
        }
    }

    /// How many frames to keep queued now, given whether the agent is `speaking`: one, plus
    /// one for each time so far the worker found the ring empty between two calls that were
    /// both made while speaking, up to [`MAX_LEAD`]. Call it every time the queue is topped up.
    pub fn lead(&mut self, speaking: bool) -> usize {
        let underflows = self.counters.outbound_underflow.load(Ordering::Relaxed);
        if speaking && self.was_speaking && underflows > self.underflows_seen {
            self.lead = (self.lead + 1).min(MAX_LEAD);
        }
        self.underflows_seen = underflows;
        self.was_speaking = speaking;
        self.lead
    }

    /// Frames queued and not yet taken by the worker.
    pub fn queued(&self) -> usize {
        RING_FRAMES.saturating_sub(self.ring.slots())
    }

    /// Queues a frame for sending. When the ring is full the frame is dropped and counted as
    /// overflow: the caller paces itself with [`free`](Self::free).
    pub fn try_send(&mut self, frame: AudioFrame) -> Result<(), MediaError> {
        self.ring.push(frame).map_err(|_| {
            self.counters
                .outbound_overflow
                .fetch_add(1, Ordering::Relaxed);
            MediaError::RingFull
        })?;
        self.pushed += 1;
        Ok(())
    }

    /// Asks for the time the worker takes a frame to send it: the one pushed after
    /// `frames_later` more (0: the next one pushed). It replaces the frame watched before.
    pub fn watch(&mut self, frames_later: usize) {
        let wire = &self.counters.wire;
        wire.watched_sent.store(0, Ordering::Relaxed);
        wire.watched
            .store(self.pushed + frames_later as u64 + 1, Ordering::Release);
    }

    /// When the watched frame ([`watch`](Self::watch)) was taken to be sent; `None` until then,
    /// and for good after a [`clear`](Self::clear) (which drops or unwatches it).
    pub fn watched_sent_at(&self) -> Option<Instant> {
        let wire = &self.counters.wire;
        wire.time(wire.watched_sent.load(Ordering::Acquire))
    }

    /// Room left in the ring, in frames.
    pub fn free(&self) -> usize {
        self.ring.slots()
    }

    /// Whether the media worker has stopped reading (the call's media ended).
    pub fn is_closed(&self) -> bool {
        self.ring.is_abandoned()
    }

    /// Discards every frame not yet sent, at the worker's next tick (barge-in).
    pub fn clear(&self) {
        // A watched frame not yet pushed would be another's after the clear: unwatched.
        self.counters.wire.watched.store(0, Ordering::Release);
        self.counters.wire.cleared.store(0, Ordering::Relaxed);
        self.counters.clear_outbound.store(true, Ordering::Release);
    }

    /// When the worker discarded the queue after the last [`clear`](Self::clear): from that tick
    /// on, none of it goes out. `None` until it has.
    pub fn cleared_at(&self) -> Option<Instant> {
        let wire = &self.counters.wire;
        wire.time(wire.cleared.load(Ordering::Acquire))
    }
}

/// The worker's ends of a call's rings, and the speech loop's.
pub(crate) type CallRings = (
    (rtrb::Producer<AudioFrame>, rtrb::Consumer<AudioFrame>),
    (FrameReceiver, FrameSender),
    Arc<Notify>,
    Arc<RingCounters>,
);

/// The two rings of a call, their wire times counted from `epoch`.
pub(crate) fn call_rings(epoch: Instant) -> CallRings {
    let (to_speech, from_worker) = rtrb::RingBuffer::new(RING_FRAMES);
    let (to_worker, from_agent) = rtrb::RingBuffer::new(RING_FRAMES);
    let notify = Arc::new(Notify::new());
    let counters = Arc::new(RingCounters::new(epoch));
    (
        (to_speech, from_agent),
        (
            FrameReceiver::new(from_worker, notify.clone(), counters.clone()),
            FrameSender::new(to_worker, counters.clone()),
        ),
        notify,
        counters,
    )
}

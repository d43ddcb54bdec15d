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
#[derive(Debug, Default)]
pub(crate) struct RingCounters {
    pub(crate) inbound_overflow: AtomicU64,
    pub(crate) outbound_overflow: AtomicU64,
    /// Ticks at which the worker found the outbound ring empty.
    pub(crate) outbound_underflow: AtomicU64,
    pub(crate) clear_outbound: AtomicBool,
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
        })
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
        self.counters.clear_outbound.store(true, Ordering::Release);
    }
}

/// The worker's ends of a call's rings, and the speech loop's.
pub(crate) type CallRings = (
    (rtrb::Producer<AudioFrame>, rtrb::Consumer<AudioFrame>),
    (FrameReceiver, FrameSender),
    Arc<Notify>,
    Arc<RingCounters>,
);

/// The two rings of a call.
pub(crate) fn call_rings() -> CallRings {
    let (to_speech, from_worker) = rtrb::RingBuffer::new(RING_FRAMES);
    let (to_worker, from_agent) = rtrb::RingBuffer::new(RING_FRAMES);
    let notify = Arc::new(Notify::new());
    let counters = Arc::new(RingCounters::default());
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

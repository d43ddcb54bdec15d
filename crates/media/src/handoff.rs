//! What a media worker hands to an ordinary thread instead of doing itself.
//!
//! Waking a tokio task (a speech loop's `Notify`, a call's event channel) takes locks that
//! tokio threads also hold: the waiter list of the `Notify`, the runtime's queue of tasks woken
//! from outside it. A real-time worker that meets one of those locks held by a preempted
//! ordinary thread waits for that thread to be scheduled again, and every call it serves waits
//! with it. Closing a stopped call's sockets and returning its ports to the pool is the same:
//! a mutex shared with the threads that bind ports. So the worker only queues such work on a
//! lock-free ring and unparks a companion thread, scheduled like any other, that does it. A
//! full ring (the companion far behind) is the one case the worker does the work itself.

use std::sync::Arc;
use std::thread::Thread;

use tokio::sync::{Notify, mpsc as tokio_mpsc};

use crate::pipeline::MediaEvent;

/// Items the ring holds: two ticks of wake-ups for the most calls a worker serves in practice.
const HANDOFF_SLOTS: usize = 4096;

/// How many items the worker queues before it unparks the companion mid-pass, so the first
/// calls' speech loops do not wait for the last call's tick.
const UNPARK_EVERY: u32 = 64;

/// One piece of work a worker leaves to its companion.
pub(crate) enum Handoff {
    /// A frame went into this speech loop's ring.
    WakeSpeechLoop(Arc<Notify>),
    /// A media event for the call's owner.
    Event(tokio_mpsc::UnboundedSender<MediaEvent>, MediaEvent),
    /// A stopped call, released here.
    Release(Box<dyn Release>),
}

/// A stopped call's last steps, off the worker: its final statistics taken, its sockets closed
/// and ports back in the pool, then its owner told. The worker hands over the box it already
/// holds, so it neither allocates nor frees for it.
pub(crate) trait Release: Send {
    fn release(self: Box<Self>);
}

impl Handoff {
    fn run(self) {
        match self {
            Handoff::WakeSpeechLoop(notify) => notify.notify_one(),
            Handoff::Event(events, event) => {
                let _ = events.send(event);
            }
            Handoff::Release(call) => call.release(),
        }
    }
}

/// The worker's end: queues work and unparks the companion.
pub(crate) struct HandoffQueue {
    /// Declared before `companion`, so it is dropped (the ring abandoned) before the companion
    /// is unparked for the last time.
    ring: rtrb::Producer<Handoff>,
    companion: Companion,
    queued_since_unpark: u32,
}

/// The companion thread, unparked once more when the worker's end is dropped.
struct Companion(Thread);

impl Drop for Companion {
    fn drop(&mut self) {
        self.0.unpark();
    }
}

impl HandoffQueue {
    /// Queues `work`, or does it here if the companion has fallen a whole ring behind.
    pub(crate) fn push(&mut self, work: Handoff) {
        match self.ring.push(work) {
            Ok(()) => {
                self.queued_since_unpark += 1;
                if self.queued_since_unpark >= UNPARK_EVERY {
                    self.unpark();
                }
            }
            Err(rtrb::PushError::Full(work)) => work.run(),
        }
    }

    /// Lets the companion run what is queued.
    pub(crate) fn unpark(&mut self) {
        if self.queued_since_unpark > 0 {
            self.queued_since_unpark = 0;
            self.companion.0.unpark();
        }
    }
}

/// Starts the companion thread `name`; returns the worker's end of its ring and the thread,
/// which ends once that end is dropped and the ring is worked off.
pub(crate) fn spawn_companion(
    name: String,
) -> std::io::Result<(HandoffQueue, std::thread::JoinHandle<()>)> {
    let (ring, mut work) = rtrb::RingBuffer::<Handoff>::new(HANDOFF_SLOTS);
    let companion = std::thread::Builder::new().name(name).spawn(move || {
        loop {
            let abandoned = work.is_abandoned();
            while let Ok(item) = work.pop() {
                item.run();
            }
            if abandoned {
                return;
            }
            std::thread::park();
        }
    })?;
    let queue = HandoffQueue {
        ring,
        companion: Companion(companion.thread().clone()),
        queued_since_unpark: 0,
    };
    Ok((queue, companion))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;
    use crate::MediaStats;

    /// Stands in for a stopped call: counts its drops (its sockets and port lease), then
    /// tells its owner.
    struct Stopped {
        drops: Arc<AtomicUsize>,
        reply: Option<oneshot::Sender<MediaStats>>,
        stats: MediaStats,
    }

    impl Release for Stopped {
        fn release(mut self: Box<Self>) {
            let (reply, stats) = (self.reply.take(), self.stats);
            self.drops.fetch_add(1, Ordering::SeqCst);
            drop(self);
            if let Some(reply) = reply {
                let _ = reply.send(stats);
            }
        }
    }

    fn stopped(
        drops: &Arc<AtomicUsize>,
        reply: Option<oneshot::Sender<MediaStats>>,
        stats: MediaStats,
    ) -> Handoff {
        Handoff::Release(Box::new(Stopped {
            drops: drops.clone(),
            reply,
            stats,
        }))
    }

    #[tokio::test]
    async fn the_companion_wakes_speech_loops_passes_events_and_releases_calls_in_order() {
        let (mut queue, _companion) = spawn_companion("handoff-test".into()).unwrap();
        let notify = Arc::new(Notify::new());
        let woken = notify.notified();
        let (events_tx, mut events) = tokio_mpsc::unbounded_channel();
        let drops = Arc::new(AtomicUsize::new(0));
        let (reply_tx, reply) = oneshot::channel();
        let stats = MediaStats {
            packets_in: 7,
            ..MediaStats::default()
        };

        queue.push(Handoff::WakeSpeechLoop(notify.clone()));
        queue.push(Handoff::Event(events_tx.clone(), MediaEvent::FarEndBye));
        queue.push(stopped(&drops, Some(reply_tx), stats));
        queue.unpark();

        woken.await;
        assert!(matches!(events.recv().await, Some(MediaEvent::FarEndBye)));
        assert_eq!(reply.await.unwrap(), stats);
        // The call was released before its owner heard it stopped.
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_full_ring_is_worked_off_by_the_worker_itself() {
        let (ring, mut work) = rtrb::RingBuffer::<Handoff>::new(1);
        // A companion that never runs: the worker must not lose what does not fit.
        let mut queue = HandoffQueue {
            ring,
            companion: Companion(std::thread::current()),
            queued_since_unpark: 0,
        };
        let (events_tx, mut events) = tokio_mpsc::unbounded_channel();
        queue.push(Handoff::Event(events_tx.clone(), MediaEvent::FarEndBye));
        queue.push(Handoff::Event(
            events_tx,
            MediaEvent::RtpTimeout {
                silent_for: std::time::Duration::from_secs(1),
            },
        ));
        assert!(matches!(
            events.try_recv(),
            Ok(MediaEvent::RtpTimeout { .. })
        ));
        assert!(work.pop().is_ok(), "the first item stayed queued");
    }

    #[test]
    fn the_companion_works_off_the_ring_and_ends_when_the_worker_drops_its_end() {
        let (mut queue, companion) = spawn_companion("handoff-test".into()).unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            queue.push(stopped(&drops, None, MediaStats::default()));
        }
        drop(queue);
        companion.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }
}

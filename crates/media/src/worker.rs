//! A media worker: one OS thread (not a tokio worker) serving many calls.
//!
//! The worker does not wake per packet. Every 10 ms (half a pacing tick) it asks one epoll
//! (mio, with no wait) which of its calls' RTP and RTCP sockets have datagrams, drains them,
//! and hands each to its call's [`CallMedia::receive`] with the time the kernel received it
//! ([`crate::arrival`]), so batching the reads costs the jitter buffer nothing. Every second
//! wake is the 20 ms tick, in three passes: every call's packet out
//! ([`CallMedia::tick_outbound`]), so a call's send time does not move with how much there
//! was to read or decode; the sockets read; every call's inbound half
//! ([`CallMedia::tick_inbound`]: jitter buffer, decode, speech ring). At a thousand calls that
//! is a hundred wake-ups a second instead of fifty thousand. Reads and ticks are scheduled on
//! absolute deadlines (`next += 10 ms`), so the pacing does not drift; a worker that falls more
//! than 100 ms behind (the machine stalled) skips the missed ticks and counts them rather than
//! sending a burst. Commands (start, stop, redirect, DTMF) arrive over a channel with a mio
//! `Waker` on a second epoll, the one the worker sleeps in. Waking the speech loops, passing
//! events on and releasing stopped calls is left to a companion thread ([`crate::handoff`]),
//! so the worker takes no lock a tokio thread holds.
//!
//! A worker's calls and schedule are its [`Shard`], behind a lock its own thread takes for
//! each step. The hypervisor stops a virtual CPU for 10 ms now and then, and a worker whose
//! CPU stopped (its timer with it) would send its calls' packets that much late, past the
//! budget. So each worker also wakes [`STAND_IN_AFTER`] past every other worker's deadline,
//! and takes any step still untaken there (`try_lock`: never one its owner is in), counted in
//! [`WorkerLatency::steps_stood_in`]. A worker serving hundreds of calls spends much of each
//! tick inside its step, so its CPU often stops there, holding the shard: each call is
//! therefore also behind a lock of its own, and a stand-in that finds the shard held sends the
//! overdue tick's packet of every call the owner has not reached
//! ([`SharedShard::send_overdue_packets`]); only the call the owner stopped in waits for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, TryLockError, TryLockResult, mpsc,
};
use std::time::{Duration, Instant};

use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::arrival::{StampBuffer, drain_stamped, enable_receive_timestamps, for_each_ready};
use crate::handoff::{Handoff, HandoffQueue, Release};
use crate::histogram::LatencyHistogram;
use crate::pipeline::{CallMedia, Direction, MAX_DATAGRAM, MediaEvent, Transmit};
use crate::{BoundPort, MediaStats, PortLease};

const TICK: Duration = Duration::from_millis(20);
/// How often the sockets are read: twice per tick, so an RFC 4733 digit's end reaches the
/// speech loop within 10 ms of arriving.
pub(crate) const READ_EVERY: Duration = Duration::from_millis(10);
const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per epoll call; more ready sockets take more calls.
const EVENTS: usize = 1024;
/// Call slots a worker reserves up front, so serving up to this many calls never grows its
/// tables (a growth that moves a large block takes the process's memory-map lock).
const CALL_SLOTS: usize = 1024;
/// How often a call's shared statistics are refreshed, in ticks.
const PUBLISH_EVERY: u32 = 10;

/// Latency histograms and counters of one worker.
#[derive(Debug, Default)]
pub struct WorkerLatency {
    /// RTP packet received by the kernel → its 16 kHz frame in the speech ring (includes the
    /// jitter buffer's delay).
    pub inbound: LatencyHistogram,
    /// Agent frame queued → its RTP packet handed to the kernel.
    pub outbound: LatencyHistogram,
    /// CPU time of one call's tick (jitter buffer, decode, resample, ring, encode, send).
    pub step: LatencyHistogram,
    /// How late each tick started after its deadline (the thread's wake-up latency).
    pub tick_lateness: LatencyHistogram,
    /// Ticks skipped because the worker fell behind.
    pub ticks_skipped: AtomicU64,
    /// Steps (reads, ticks, or a tick's packets while this worker held its shard) another
    /// worker took because this one's thread had not done them [`STAND_IN_AFTER`] past their
    /// deadline.
    pub steps_stood_in: AtomicU64,
    /// Calls being served.
    pub calls: AtomicU64,
}

/// What a worker is asked to do.
pub(crate) enum Command {
    Start(Box<Served>),
    Redirect(u64, Direction),
    Answered(u64),
    Splice(u64, Option<Box<crate::Splice>>),
    Dtmf(u64, String, oneshot::Sender<Result<(), crate::MediaError>>),
    Stop(u64, Option<oneshot::Sender<MediaStats>>),
    Shutdown,
}

/// A call as a worker serves it, built (and boxed) by the thread that starts it, so the worker
/// neither allocates nor frees for its calls.
pub(crate) struct Served {
    id: u64,
    media: CallMedia,
    rtp: MioSocket,
    rtcp: MioSocket,
    _lease: PortLease,
    events: tokio_mpsc::UnboundedSender<MediaEvent>,
    shared: Arc<Mutex<MediaStats>>,
    send_errors: u64,
    /// CPU time of this tick's outbound half, for the step histogram.
    outbound_step: Duration,
    /// The deadline of the last tick whose packet went out, by whichever worker sent it.
    sent_for: Option<Instant>,
    /// Who hears the final statistics once the call is released.
    stopped: Option<oneshot::Sender<MediaStats>>,
}

impl Served {
    /// Call `id` on `port` (its sockets switched to kernel receive timestamps here, off the
    /// worker).
    pub(crate) fn new(
        id: u64,
        media: CallMedia,
        port: BoundPort,
        events: tokio_mpsc::UnboundedSender<MediaEvent>,
        shared: Arc<Mutex<MediaStats>>,
    ) -> Box<Self> {
        let BoundPort { rtp, rtcp, lease } = port;
        for socket in [&rtp, &rtcp] {
            if let Err(error) = enable_receive_timestamps(socket) {
                tracing::warn!(%error, "no kernel receive timestamps: packets are timed when read");
            }
        }
        Box::new(Self {
            id,
            media,
            rtp: MioSocket::from_std(rtp),
            rtcp: MioSocket::from_std(rtcp),
            _lease: lease,
            events,
            shared,
            send_errors: 0,
            outbound_step: Duration::ZERO,
            sent_for: None,
            stopped: None,
        })
    }

    fn send(rtp: &MioSocket, rtcp: &MioSocket, errors: &mut u64, t: Transmit<'_>) {
        let socket = if t.rtcp { rtcp } else { rtp };
        if socket.send_to(t.data, t.to).is_err() {
            *errors += 1;
        }
    }

    /// The call's packet of the tick due at `deadline`, unless it went out already; whether
    /// it went now.
    fn send_packet(&mut self, deadline: Instant, latency: &WorkerLatency) -> bool {
        if self.sent_for.is_some_and(|sent| sent >= deadline) {
            return false;
        }
        let started = Instant::now();
        let (rtp, rtcp, errors) = (&self.rtp, &self.rtcp, &mut self.send_errors);
        let queued = self
            .media
            .tick_outbound(started, &mut |t| Served::send(rtp, rtcp, errors, t));
        let done = Instant::now();
        self.outbound_step = done - started;
        self.sent_for = Some(deadline);
        if let Some(queued) = queued {
            latency
                .outbound
                .record(done.saturating_duration_since(queued));
        }
        true
    }

    /// Hands the call's media events, and its speech loop's wake-up when a frame went into its
    /// ring, to the companion thread.
    fn hand_off(&mut self, handoff: &mut HandoffQueue) {
        if let Some(notify) = self.media.take_speech_due() {
            handoff.push(Handoff::WakeSpeechLoop(notify.clone()));
        }
        while let Some(event) = self.media.poll_event() {
            handoff.push(Handoff::Event(self.events.clone(), event));
        }
    }

    fn final_stats(&self) -> MediaStats {
        let mut stats = self.media.stats();
        stats.send_errors = self.send_errors;
        stats
    }

    fn publish(&self) {
        if let Ok(mut shared) = self.shared.try_lock() {
            *shared = self.final_stats();
        }
    }
}

impl Release for Served {
    fn release(mut self: Box<Self>) {
        let stats = self.final_stats();
        if let Ok(mut shared) = self.shared.lock() {
            *shared = stats;
        }
        let stopped = self.stopped.take();
        // Sockets closed and ports back in the pool before the owner hears it stopped.
        drop(self);
        if let Some(stopped) = stopped {
            let _ = stopped.send(stats);
        }
    }
}

/// A call slot: the call served there, if any, behind a lock of its own.
type CallSlot = Mutex<Option<Box<Served>>>;

/// A shard's call slots. Only a step that holds the shard adds slots (under the write lock);
/// a stand-in reads them while the owner holds the shard.
type CallSlots = RwLock<Vec<CallSlot>>;

fn lock_slot(slot: &CallSlot) -> MutexGuard<'_, Option<Box<Served>>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The guard of a lock `attempt` tried, unless another thread holds it (a lock poisoned by a
/// panic is taken as it is, like every lock here).
fn untaken<G>(attempt: TryLockResult<G>) -> Option<G> {
    match attempt {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn read_slots(slots: &CallSlots) -> RwLockReadGuard<'_, Vec<CallSlot>> {
    slots.read().unwrap_or_else(PoisonError::into_inner)
}

/// The slot serving call `id`, and its call locked, if any does.
fn find_slot(slots: &[CallSlot], id: u64) -> Option<(usize, MutexGuard<'_, Option<Box<Served>>>)> {
    slots
        .iter()
        .map(lock_slot)
        .enumerate()
        .find(|(_, call)| call.as_ref().is_some_and(|c| c.id == id))
}

/// What a worker serves: its calls and their sockets, and the schedule of its reads and
/// ticks. Its own thread takes its steps; another worker stands in for a step its thread has
/// left [`STAND_IN_AFTER`] overdue ([`SharedShard::stand_in`]).
pub(crate) struct Shard {
    /// Every call's sockets, asked without waiting at each read.
    sockets: Poll,
    ready: Events,
    stamps: StampBuffer,
    commands: mpsc::Receiver<Command>,
    calls: Arc<CallSlots>,
    free: Vec<usize>,
    latency: Arc<WorkerLatency>,
    buf: Box<[u8; MAX_DATAGRAM]>,
    handoff: HandoffQueue,
    /// When the next step (a read; every second one also the tick) is due.
    next_read: Instant,
    reads: u32,
    ticks: u32,
    /// Told to shut down, or every handle to it is gone.
    closed: bool,
}

/// A shard as every worker sees it: locked by whichever thread takes its step, its next
/// deadline readable without the lock.
pub(crate) struct SharedShard {
    shard: Mutex<Shard>,
    /// The shard's `next_read` in nanoseconds after `epoch`; `u64::MAX` once closed.
    due: AtomicU64,
    /// The deadline of the shard's next tick not yet taken, the same way.
    tick_due: AtomicU64,
    epoch: Instant,
    /// The shard's call slots, for [`Self::send_overdue_packets`].
    calls: Arc<CallSlots>,
    latency: Arc<WorkerLatency>,
}

/// How long past its deadline a step waits for its own worker before another stands in: over
/// the tick lateness of a busy machine (p99 under 1.5 ms), well under the 10 ms a call may
/// lose before a packet is a gap.
pub(crate) const STAND_IN_AFTER: Duration = Duration::from_millis(3);

/// How long a worker leaves a shard whose lock another thread holds before it asks again.
const LOCKED_BACKOFF: Duration = Duration::from_millis(1);

/// The most ticks of packets a stand-in sends a call at once for a held shard: a stand-in
/// that was itself stopped longer skips the rest, as [`skip_missed_ticks`] does.
const MOST_TICKS_SENT_AT_ONCE: u32 = 5;

impl SharedShard {
    fn lock(&self) -> MutexGuard<'_, Shard> {
        self.shard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the shard's next step is due (far in the future once it is closed).
    fn due(&self) -> Instant {
        self.instant(&self.due)
    }

    /// `nanos` after the epoch (far in the future for `u64::MAX`).
    fn instant(&self, nanos: &AtomicU64) -> Instant {
        self.epoch
            .checked_add(Duration::from_nanos(nanos.load(Ordering::Acquire)))
            .unwrap_or_else(|| self.epoch + Duration::from_secs(u64::from(u32::MAX)))
    }

    fn publish_due(&self, shard: &Shard) {
        let nanos = |at: Instant| {
            if shard.closed {
                u64::MAX
            } else {
                u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
                    .unwrap_or(u64::MAX)
            }
        };
        // Every second step is a tick: the next one is, after an odd count of steps.
        let next_tick = if !shard.reads.is_multiple_of(2) {
            shard.next_read
        } else {
            shard.next_read + READ_EVERY
        };
        self.due.store(nanos(shard.next_read), Ordering::Release);
        self.tick_due.store(nanos(next_tick), Ordering::Release);
    }

    /// Takes, for a worker whose thread has not, the step due [`STAND_IN_AFTER`] before `now`
    /// (a stopped CPU holds that thread and its timer). False when the shard's own thread (or
    /// another stand-in) holds it.
    fn stand_in(&self, now: Instant) -> bool {
        let Some(mut shard) = untaken(self.shard.try_lock()) else {
            return false;
        };
        if !shard.closed && now >= shard.next_read + STAND_IN_AFTER {
            shard.apply_commands();
            if !shard.closed {
                shard.latency.steps_stood_in.fetch_add(1, Ordering::Relaxed);
                shard.step(now);
            }
            self.publish_due(&shard);
        }
        true
    }

    /// For a shard another thread holds (its owner in its step, perhaps on a stopped CPU):
    /// sends the packet of every call not itself held for each tick due [`STAND_IN_AFTER`]
    /// before `now` and after `sent_for`, the last tick this stand-in sent for, which it
    /// moves on.
    fn send_overdue_packets(&self, now: Instant, sent_for: &mut Instant) {
        let Some(slots) = untaken(self.calls.try_read()) else {
            return;
        };
        let mut deadline = self.instant(&self.tick_due);
        while deadline <= *sent_for {
            deadline += TICK;
        }
        let mut sent = false;
        for _ in 0..MOST_TICKS_SENT_AT_ONCE {
            if deadline + STAND_IN_AFTER > now {
                break;
            }
            // From the last call back, so an owner that is only late, going forwards, and
            // this stand-in meet in the middle rather than queue on the same calls.
            for slot in slots.iter().rev() {
                if let Some(call) = untaken(slot.try_lock()).as_mut().and_then(|c| c.as_mut()) {
                    sent |= call.send_packet(deadline, &self.latency);
                }
            }
            *sent_for = deadline;
            deadline += TICK;
        }
        if sent {
            self.latency.steps_stood_in.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Another worker's shard as a worker watches it.
struct Watched {
    shard: Arc<SharedShard>,
    /// When to look at it again after finding it held.
    retry: Instant,
    /// The last tick whose packets this worker sent for the shard's owner.
    sent_for: Instant,
}

/// A worker thread: sleeps until its own shard's next step or another worker's overdue one.
pub(crate) struct Worker {
    /// Where the worker sleeps: the command waker only.
    poll: Poll,
    own: Arc<SharedShard>,
    others: Vec<Watched>,
}

impl Worker {
    /// A worker whose first read is at `first_read` and that leaves waking and releasing to
    /// `handoff`'s companion thread ([`crate::handoff`]).
    pub(crate) fn new(
        latency: Arc<WorkerLatency>,
        handoff: HandoffQueue,
        first_read: Instant,
    ) -> std::io::Result<(Self, Arc<Waker>, mpsc::Sender<Command>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, commands) = mpsc::channel();
        let calls = Arc::new(RwLock::new(Vec::with_capacity(CALL_SLOTS)));
        let shard = Shard {
            sockets: Poll::new()?,
            ready: Events::with_capacity(EVENTS),
            stamps: StampBuffer::default(),
            commands,
            calls: calls.clone(),
            free: Vec::with_capacity(CALL_SLOTS),
            latency: latency.clone(),
            buf: Box::new([0; MAX_DATAGRAM]),
            handoff,
            next_read: first_read,
            reads: 0,
            ticks: 0,
            closed: false,
        };
        let own = Arc::new(SharedShard {
            shard: Mutex::new(shard),
            due: AtomicU64::new(0),
            tick_due: AtomicU64::new(READ_EVERY.as_nanos() as u64),
            epoch: first_read,
            calls,
            latency,
        });
        Ok((
            Self {
                poll,
                own,
                others: Vec::new(),
            },
            waker,
            tx,
        ))
    }

    /// The shard this worker's thread serves.
    pub(crate) fn shard(&self) -> Arc<SharedShard> {
        self.own.clone()
    }

    /// Has this worker stand in for the steps of those of `shards` not its own that their
    /// threads leave overdue.
    pub(crate) fn stand_in_for(&mut self, shards: impl IntoIterator<Item = Arc<SharedShard>>) {
        let now = Instant::now();
        self.others = shards
            .into_iter()
            .filter(|shard| !Arc::ptr_eq(shard, &self.own))
            .map(|shard| Watched {
                sent_for: shard.epoch,
                shard,
                retry: now,
            })
            .collect();
    }

    /// Runs until its shard is told to shut down (or every handle to it is gone).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(8);
        loop {
            let wake = self
                .others
                .iter()
                .map(|other| (other.shard.due() + STAND_IN_AFTER).max(other.retry))
                .fold(self.own.due(), Instant::min);
            let remaining = wake.saturating_duration_since(Instant::now());
            if remaining >= Duration::from_millis(1) {
                // epoll counts whole milliseconds and rounds up: wait in it for the whole ones
                // below the deadline (commands wake it), and sleep the rest precisely.
                let whole = Duration::from_millis(remaining.as_millis() as u64);
                if let Err(error) = self.poll.poll(&mut events, Some(whole))
                    && error.kind() != std::io::ErrorKind::Interrupted
                {
                    tracing::error!(%error, "media worker poll failed");
                    return;
                }
                if !self.serve_own(None) {
                    return;
                }
                continue;
            }
            std::thread::sleep(remaining);
            let now = Instant::now();
            if !self.serve_own(Some(now)) {
                return;
            }
            for other in &mut self.others {
                if now >= other.retry
                    && now >= other.shard.due() + STAND_IN_AFTER
                    && !other.shard.stand_in(now)
                {
                    other.retry = now + LOCKED_BACKOFF;
                    other.shard.send_overdue_packets(now, &mut other.sent_for);
                }
            }
        }
    }

    /// Applies the own shard's commands and, at `now`, takes its step if due; false once it is
    /// closed.
    fn serve_own(&self, now: Option<Instant>) -> bool {
        let mut shard = self.own.lock();
        shard.apply_commands();
        if let Some(now) = now
            && !shard.closed
            && now >= shard.next_read
        {
            shard.step(now);
        }
        self.own.publish_due(&shard);
        !shard.closed
    }
}

impl Shard {
    /// The step due: a read, or every second one the tick; a shard far behind first skips
    /// the ticks it missed.
    fn step(&mut self, now: Instant) {
        let skipped = skip_missed_ticks(&mut self.next_read, now);
        if skipped > 0 {
            self.latency
                .ticks_skipped
                .fetch_add(u64::from(skipped), Ordering::Relaxed);
        }
        self.reads = self.reads.wrapping_add(1);
        if self.reads.is_multiple_of(2) {
            self.ticks = self.ticks.wrapping_add(1);
            self.latency
                .tick_lateness
                .record(now.saturating_duration_since(self.next_read));
            self.tick(self.next_read, self.ticks.is_multiple_of(PUBLISH_EVERY));
        } else {
            self.read_sockets();
        }
        self.next_read += READ_EVERY;
    }

    /// Drains every socket that has datagrams.
    fn read_sockets(&mut self) {
        let Self {
            sockets,
            ready,
            calls,
            buf,
            stamps,
            handoff,
            ..
        } = self;
        let calls = read_slots(calls);
        let drained = for_each_ready(sockets, ready, |token| {
            drain_call(&calls, buf.as_mut_slice(), stamps, handoff, token.0);
        });
        if let Err(error) = drained {
            tracing::error!(%error, "media worker cannot poll its sockets");
        }
        handoff.unpark();
    }

    /// Every call's tick: first every call's packet out, then the sockets read, then every
    /// call's inbound half, its speech loop's wake-up and its events handed off.
    fn tick(&mut self, now: Instant, publish: bool) {
        for slot in read_slots(&self.calls).iter() {
            // A call held by another worker is having this tick's packet sent by it.
            if let Some(call) = untaken(slot.try_lock()).as_mut().and_then(|c| c.as_mut()) {
                call.send_packet(now, &self.latency);
            }
        }
        self.read_sockets();
        for slot in read_slots(&self.calls).iter() {
            let mut call = lock_slot(slot);
            let Some(call) = call.as_mut() else {
                continue;
            };
            let started = Instant::now();
            let (rtp, rtcp, errors) = (&call.rtp, &call.rtcp, &mut call.send_errors);
            let arrival = call
                .media
                .tick_inbound(now, &mut |t| Served::send(rtp, rtcp, errors, t));
            let done = Instant::now();
            self.latency
                .step
                .record(call.outbound_step + (done - started));
            if let Some(arrival) = arrival {
                self.latency
                    .inbound
                    .record(done.saturating_duration_since(arrival));
            }
            call.hand_off(&mut self.handoff);
            if publish {
                call.publish();
            }
        }
        self.handoff.unpark();
    }

    /// Applies pending commands; one to shut down (or every handle gone) closes the shard.
    fn apply_commands(&mut self) {
        while !self.closed {
            match self.commands.try_recv() {
                Ok(Command::Start(call)) => self.start(call),
                Ok(Command::Redirect(id, direction)) => {
                    self.with_call(id, |call| call.media.redirect(direction));
                }
                Ok(Command::Answered(id)) => {
                    self.with_call(id, |call| call.media.answered(Instant::now()));
                }
                Ok(Command::Splice(id, splice)) => {
                    self.with_call(id, |call| call.media.splice(splice.map(|s| *s)));
                }
                Ok(Command::Dtmf(id, digits, reply)) => {
                    let result = self
                        .with_call(id, |call| call.media.send_dtmf(&digits))
                        .unwrap_or(Err(crate::MediaError::Stopped));
                    let _ = reply.send(result);
                }
                Ok(Command::Stop(id, reply)) => self.stop(id, reply),
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => self.closed = true,
                Err(mpsc::TryRecvError::Empty) => return,
            }
        }
    }

    /// Runs `f` on call `id`, if the shard serves it.
    fn with_call<T>(&self, id: u64, f: impl FnOnce(&mut Served) -> T) -> Option<T> {
        let slots = read_slots(&self.calls);
        let (_, mut call) = find_slot(&slots, id)?;
        call.as_mut().map(|c| f(c))
    }

    fn start(&mut self, mut call: Box<Served>) {
        let used = read_slots(&self.calls).len();
        let slot = self.free.pop().unwrap_or(used);
        let registry = self.sockets.registry();
        let registered = registry
            .register(&mut call.rtp, Token(slot * 2), Interest::READABLE)
            .and_then(|()| {
                registry.register(&mut call.rtcp, Token(slot * 2 + 1), Interest::READABLE)
            });
        if let Err(error) = registered {
            tracing::error!(%error, "cannot watch RTP sockets; the call has no media");
            let _ = registry.deregister(&mut call.rtp);
            self.free.push(slot);
            self.handoff.push(Handoff::Release(call));
            self.handoff.unpark();
            return;
        }
        if slot == used {
            self.calls
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Mutex::new(Some(call)));
        } else if let Some(entry) = read_slots(&self.calls).get(slot) {
            *lock_slot(entry) = Some(call);
        }
        self.latency.calls.fetch_add(1, Ordering::Relaxed);
        // Packets may have arrived before the registration: read them now.
        for token in [slot * 2, slot * 2 + 1] {
            drain_call(
                &read_slots(&self.calls),
                self.buf.as_mut_slice(),
                &mut self.stamps,
                &mut self.handoff,
                token,
            );
        }
        self.handoff.unpark();
    }

    fn stop(&mut self, id: u64, reply: Option<oneshot::Sender<MediaStats>>) {
        let slots = read_slots(&self.calls);
        let Some((slot, mut call)) =
            find_slot(&slots, id).and_then(|(slot, mut entry)| Some((slot, entry.take()?)))
        else {
            return;
        };
        drop(slots);
        let (rtp, rtcp, errors) = (&call.rtp, &call.rtcp, &mut call.send_errors);
        call.media.bye(&mut |t| Served::send(rtp, rtcp, errors, t));
        let registry = self.sockets.registry();
        let _ = registry.deregister(&mut call.rtp);
        let _ = registry.deregister(&mut call.rtcp);
        call.hand_off(&mut self.handoff);
        call.stopped = reply;
        self.handoff.push(Handoff::Release(call));
        self.handoff.unpark();
        self.free.push(slot);
        self.latency.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// For a worker more than five ticks behind `next_read` at `now` (the machine stalled): moves
/// it on by the whole ticks missed, so it keeps its place in the 20 ms rather than sending
/// them in a burst, and returns how many.
fn skip_missed_ticks(next_read: &mut Instant, now: Instant) -> u32 {
    let behind = now.saturating_duration_since(*next_read);
    if behind <= 5 * TICK {
        return 0;
    }
    let skipped = u32::try_from(behind.as_micros() / TICK.as_micros()).unwrap_or(u32::MAX);
    *next_read += TICK * skipped;
    skipped
}

/// Where worker `index` of `workers` puts its ticks within the 20 ms: evenly apart, so the
/// workers' busiest moments do not meet, each one's CPU is free for the rest of the machine
/// while another ticks, and a worker is not kept waiting by an equal one's whole tick.
pub(crate) fn phase(index: usize, workers: usize) -> Duration {
    let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(0) % workers;
    TICK * index / workers
}

/// Reads every datagram queued on the socket of `token` (a call's slot, RTP even, RTCP odd)
/// into its call, then hands the call's events off.
fn drain_call(
    calls: &[CallSlot],
    buf: &mut [u8],
    stamps: &mut StampBuffer,
    handoff: &mut HandoffQueue,
    token: usize,
) {
    let (slot, on_rtcp) = (token / 2, token % 2 == 1);
    let Some(mut call) = calls.get(slot).map(lock_slot) else {
        return;
    };
    let Some(call) = call.as_mut() else {
        return;
    };
    let socket = if on_rtcp { &call.rtcp } else { &call.rtp };
    let media = &mut call.media;
    drain_stamped(socket, buf, stamps, |datagram, bytes| {
        media.receive(datagram.arrived, datagram.source, bytes, on_rtcp);
    });
    call.hand_off(handoff);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RING_FRAMES;
    use crate::{AudioFrame, FRAME_SAMPLES, MediaCodec, MediaConfig, PortPool};
    use dialtone_test_support::audio::{sine, tone_amplitude};

    const AMPLITUDE: f64 = 8000.0;
    /// The tone each of the two calls sends the other.
    const TONES: [f64; 2] = [1000.0, 700.0];

    /// Two workers' shards, of which only the second's thread runs (the first's CPU might as
    /// well have stopped for good): a call on each, sending each other tones.
    struct StalledPair {
        shards: Vec<Arc<SharedShard>>,
        handles: Vec<(mpsc::Sender<Command>, Arc<Waker>)>,
        figures: Vec<Arc<WorkerLatency>>,
        companions: Vec<std::thread::JoinHandle<()>>,
        thread: std::thread::JoinHandle<()>,
        pool: Arc<PortPool>,
        /// Each call's speech rings and the frames its speech side heard.
        ends: Vec<(
            crate::ring::FrameReceiver,
            crate::ring::FrameSender,
            Vec<AudioFrame>,
        )>,
        sent: [usize; 2],
    }

    impl StalledPair {
        fn start(first_port: u16) -> Self {
            let start = Instant::now() + READ_EVERY;
            let (mut workers, mut companions, mut handles, mut figures) =
                (vec![], vec![], vec![], vec![]);
            for i in 0..2 {
                let latency = Arc::new(WorkerLatency::default());
                let (handoff, companion) =
                    crate::handoff::spawn_companion(format!("test-handoff-{i}")).unwrap();
                let (worker, waker, commands) =
                    Worker::new(latency.clone(), handoff, start + phase(i, 2)).unwrap();
                workers.push(worker);
                companions.push(companion);
                handles.push((commands, waker));
                figures.push(latency);
            }
            let shards: Vec<_> = workers.iter().map(Worker::shard).collect();
            let mut running = workers.pop().unwrap();
            running.stand_in_for(shards.iter().cloned());
            drop(workers);
            let thread = std::thread::spawn(move || running.run());

            let pool = PortPool::new("127.0.0.1".parse().unwrap(), first_port, first_port + 19);
            let ports = [pool.bind().unwrap(), pool.bind().unwrap()];
            let addresses: Vec<_> = ports
                .iter()
                .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p.port())))
                .collect();
            let mut ends = Vec::new();
            for (i, port) in ports.into_iter().enumerate() {
                let config =
                    MediaConfig::new(MediaCodec::Pcmu, 0, Some(addresses[1 - i]), i as u32);
                let (media, inbound, outbound) =
                    CallMedia::new(config, Instant::now(), std::time::SystemTime::now()).unwrap();
                let (events, _) = tokio_mpsc::unbounded_channel();
                let shared = Arc::new(Mutex::new(media.stats()));
                let call = Served::new(i as u64, media, port, events, shared);
                let (commands, waker) = &handles[i];
                commands.send(Command::Start(call)).unwrap();
                waker.wake().unwrap();
                ends.push((inbound, outbound, Vec::new()));
            }
            Self {
                shards,
                handles,
                figures,
                companions,
                thread,
                pool,
                ends,
                sent: [0; 2],
            }
        }

        /// Keeps both calls' agents talking and their callers' frames collected until call
        /// `i` has heard `frames[i]` in all, each (or ten seconds went by).
        fn exchange_until(&mut self, frames: [usize; 2]) {
            for _ in 0..500 {
                for (i, (inbound, outbound, heard)) in self.ends.iter_mut().enumerate() {
                    while outbound.free() > RING_FRAMES - 10 {
                        let mut frame = AudioFrame::silence(Instant::now());
                        sine(
                            16000,
                            TONES[i],
                            AMPLITUDE,
                            self.sent[i] * FRAME_SAMPLES,
                            &mut frame.samples,
                        );
                        self.sent[i] += 1;
                        outbound.try_send(frame).unwrap();
                    }
                    while let Some(frame) = inbound.try_recv() {
                        heard.push(frame);
                    }
                }
                if self
                    .ends
                    .iter()
                    .zip(frames)
                    .all(|((_, _, heard), frames)| heard.len() >= frames)
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// How loud call `i` heard the other's tone in its frames `from..from + 20`.
        fn heard_tone(&self, i: usize, from: usize) -> f64 {
            let heard = &self.ends[i].2;
            assert!(
                heard.len() >= from + 20,
                "call {i} heard {} frames",
                heard.len()
            );
            let tail: Vec<i16> = heard[from..from + 20]
                .iter()
                .flat_map(|f| f.samples)
                .collect();
            tone_amplitude(&tail, 16000, TONES[1 - i])
        }

        fn stood_in(&self, worker: usize) -> u64 {
            self.figures[worker].steps_stood_in.load(Ordering::Relaxed)
        }

        fn shut_down(self) {
            for (commands, waker) in &self.handles {
                commands.send(Command::Shutdown).unwrap();
                waker.wake().unwrap();
            }
            self.thread.join().unwrap();
            // A companion ends once its shard is gone.
            drop(self.shards);
            for companion in self.companions {
                companion.join().unwrap();
            }
            assert_eq!(
                self.pool.in_use(),
                0,
                "both calls' ports went back with their shards"
            );
        }
    }

    #[test]
    fn a_worker_serves_the_calls_of_one_whose_thread_does_not_run() {
        let mut pair = StalledPair::start(46100);
        pair.exchange_until([60, 60]);
        for i in 0..2 {
            // Each call hears the other's tone: the stalled worker's call both sent and read.
            let at = pair.heard_tone(i, 40);
            assert!(
                (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
                "call {i}: {at:.0}"
            );
        }
        assert!(pair.stood_in(0) > 0);
        assert!(pair.figures[0].tick_lateness.snapshot().count > 0);
        assert_eq!(pair.stood_in(1), 0);
        pair.shut_down();
    }

    /// The stalled worker's thread stopped inside its step, holding its shard (as a virtual
    /// CPU stops wherever its thread is): its call's packets still go out.
    #[test]
    fn a_worker_sends_the_packets_of_calls_whose_owner_stopped_inside_its_step() {
        let mut pair = StalledPair::start(46120);
        pair.exchange_until([20, 20]);
        let stalled = pair.shards[0].clone();
        let held = stalled.lock();
        let heard = |pair: &StalledPair, i: usize| pair.ends[i].2.len();
        let (before, stalled_heard, stood_in) =
            (heard(&pair, 1), heard(&pair, 0), pair.stood_in(0));
        pair.exchange_until([0, before + 60]);
        // Call 1 (the running worker's) goes on hearing call 0's tone from the held shard.
        let at = pair.heard_tone(1, before + 30);
        assert!(
            (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
            "call 1 heard the held shard's call at {at:.0}"
        );
        assert!(pair.stood_in(0) > stood_in);
        // What call 0 receives waits for its shard.
        assert!(heard(&pair, 0) < stalled_heard + 10);
        drop(held);
        drop(stalled);
        pair.shut_down();
    }

    #[test]
    fn workers_tick_evenly_apart_within_the_pacing_tick() {
        let ms = Duration::from_millis;
        assert_eq!(phase(0, 1), Duration::ZERO);
        assert_eq!([phase(0, 2), phase(1, 2)], [ms(0), ms(10)]);
        assert_eq!(
            (0..4).map(|i| phase(i, 4)).collect::<Vec<_>>(),
            [ms(0), ms(5), ms(10), ms(15)]
        );
        // Every phase stays inside one tick, whatever it is asked.
        assert!(phase(7, 4) < TICK && phase(3, 0) < TICK);
    }

    #[test]
    fn a_worker_far_behind_skips_whole_ticks_and_keeps_its_place() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut next_read = start + ms(10);
        // Up to five ticks late it catches up read by read.
        assert_eq!(skip_missed_ticks(&mut next_read, start + ms(110)), 0);
        assert_eq!(next_read, start + ms(10));
        // 137 ms late: six whole ticks skipped, in the same place in the 20 ms (10 + 6 × 20).
        assert_eq!(skip_missed_ticks(&mut next_read, start + ms(147)), 6);
        assert_eq!(next_read, start + ms(130));
    }
}

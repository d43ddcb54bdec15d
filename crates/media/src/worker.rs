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
//! [`WorkerLatency::steps_stood_in`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, mpsc};
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
    /// Steps (reads and ticks) another worker took because this one's thread had not run
    /// [`STAND_IN_AFTER`] past their deadline.
    pub steps_stood_in: AtomicU64,
    /// Calls being served.
    pub calls: AtomicU64,
}

/// What a worker is asked to do.
pub(crate) enum Command {
    Start(Box<Served>),
    Redirect(u64, Direction),
    Answered(u64),
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
            stopped: None,
        })
    }

    fn send(rtp: &MioSocket, rtcp: &MioSocket, errors: &mut u64, t: Transmit<'_>) {
        let socket = if t.rtcp { rtcp } else { rtp };
        if socket.send_to(t.data, t.to).is_err() {
            *errors += 1;
        }
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

/// What a worker serves: its calls and their sockets, and the schedule of its reads and
/// ticks. Its own thread takes its steps; another worker stands in for a step its thread has
/// left [`STAND_IN_AFTER`] overdue ([`SharedShard::stand_in`]).
pub(crate) struct Shard {
    /// Every call's sockets, asked without waiting at each read.
    sockets: Poll,
    ready: Events,
    stamps: StampBuffer,
    commands: mpsc::Receiver<Command>,
    calls: Vec<Option<Box<Served>>>,
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
    epoch: Instant,
}

/// How long past its deadline a step waits for its own worker before another stands in: over
/// the tick lateness of a busy machine (p99 under 1.5 ms), well under the 10 ms a call may
/// lose before a packet is a gap.
pub(crate) const STAND_IN_AFTER: Duration = Duration::from_millis(3);

/// How long a worker leaves a shard whose lock another thread holds before it asks again.
const LOCKED_BACKOFF: Duration = Duration::from_millis(1);

impl SharedShard {
    fn lock(&self) -> MutexGuard<'_, Shard> {
        self.shard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the shard's next step is due (far in the future once it is closed).
    fn due(&self) -> Instant {
        let nanos = self.due.load(Ordering::Acquire);
        self.epoch
            .checked_add(Duration::from_nanos(nanos))
            .unwrap_or_else(|| self.epoch + Duration::from_secs(u64::from(u32::MAX)))
    }

    fn publish_due(&self, shard: &Shard) {
        let nanos = if shard.closed {
            u64::MAX
        } else {
            u64::try_from(
                shard
                    .next_read
                    .saturating_duration_since(self.epoch)
                    .as_nanos(),
            )
            .unwrap_or(u64::MAX)
        };
        self.due.store(nanos, Ordering::Release);
    }

    /// Takes, for a worker whose thread has not, the step due [`STAND_IN_AFTER`] before `now`
    /// (a stopped CPU holds that thread and its timer). False when the shard's own thread (or
    /// another stand-in) holds it.
    fn stand_in(&self, now: Instant) -> bool {
        let mut shard = match self.shard.try_lock() {
            Ok(shard) => shard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
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
}

/// A worker thread: sleeps until its own shard's next step or another worker's overdue one.
pub(crate) struct Worker {
    /// Where the worker sleeps: the command waker only.
    poll: Poll,
    own: Arc<SharedShard>,
    /// The other workers' shards, each with when to look at it again after finding it locked.
    others: Vec<(Arc<SharedShard>, Instant)>,
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
        let shard = Shard {
            sockets: Poll::new()?,
            ready: Events::with_capacity(EVENTS),
            stamps: StampBuffer::default(),
            commands,
            calls: Vec::with_capacity(CALL_SLOTS),
            free: Vec::with_capacity(CALL_SLOTS),
            latency,
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
            epoch: first_read,
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
            .map(|shard| (shard, now))
            .collect();
    }

    /// Runs until its shard is told to shut down (or every handle to it is gone).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(8);
        loop {
            let wake = self
                .others
                .iter()
                .map(|(other, retry)| (other.due() + STAND_IN_AFTER).max(*retry))
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
            for (other, retry) in &mut self.others {
                if now >= *retry && now >= other.due() + STAND_IN_AFTER && !other.stand_in(now) {
                    *retry = now + LOCKED_BACKOFF;
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
        let drained = for_each_ready(sockets, ready, |token| {
            drain_call(calls, buf.as_mut_slice(), stamps, handoff, token.0);
        });
        if let Err(error) = drained {
            tracing::error!(%error, "media worker cannot poll its sockets");
        }
        handoff.unpark();
    }

    /// Every call's tick: first every call's packet out, then the sockets read, then every
    /// call's inbound half, its speech loop's wake-up and its events handed off.
    fn tick(&mut self, now: Instant, publish: bool) {
        for call in self.calls.iter_mut().flatten() {
            let started = Instant::now();
            let (rtp, rtcp, errors) = (&call.rtp, &call.rtcp, &mut call.send_errors);
            let queued = call
                .media
                .tick_outbound(&mut |t| Served::send(rtp, rtcp, errors, t));
            let done = Instant::now();
            call.outbound_step = done - started;
            if let Some(queued) = queued {
                self.latency
                    .outbound
                    .record(done.saturating_duration_since(queued));
            }
        }
        self.read_sockets();
        for call in self.calls.iter_mut().flatten() {
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
                    if let Some(call) = self.find(id) {
                        call.media.redirect(direction);
                    }
                }
                Ok(Command::Answered(id)) => {
                    if let Some(call) = self.find(id) {
                        call.media.answered(Instant::now());
                    }
                }
                Ok(Command::Dtmf(id, digits, reply)) => {
                    let result = match self.find(id) {
                        Some(call) => call.media.send_dtmf(&digits),
                        None => Err(crate::MediaError::Stopped),
                    };
                    let _ = reply.send(result);
                }
                Ok(Command::Stop(id, reply)) => self.stop(id, reply),
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => self.closed = true,
                Err(mpsc::TryRecvError::Empty) => return,
            }
        }
    }

    fn find(&mut self, id: u64) -> Option<&mut Served> {
        self.calls
            .iter_mut()
            .flatten()
            .find(|c| c.id == id)
            .map(|c| &mut **c)
    }

    fn start(&mut self, mut call: Box<Served>) {
        let slot = self.free.pop().unwrap_or(self.calls.len());
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
        if slot == self.calls.len() {
            self.calls.push(Some(call));
        } else if let Some(entry) = self.calls.get_mut(slot) {
            *entry = Some(call);
        }
        self.latency.calls.fetch_add(1, Ordering::Relaxed);
        // Packets may have arrived before the registration: read them now.
        for token in [slot * 2, slot * 2 + 1] {
            drain_call(
                &mut self.calls,
                self.buf.as_mut_slice(),
                &mut self.stamps,
                &mut self.handoff,
                token,
            );
        }
        self.handoff.unpark();
    }

    fn stop(&mut self, id: u64, reply: Option<oneshot::Sender<MediaStats>>) {
        let Some(slot) = self
            .calls
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.id == id))
        else {
            return;
        };
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
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
    calls: &mut [Option<Box<Served>>],
    buf: &mut [u8],
    stamps: &mut StampBuffer,
    handoff: &mut HandoffQueue,
    token: usize,
) {
    let (slot, on_rtcp) = (token / 2, token % 2 == 1);
    let Some(Some(call)) = calls.get_mut(slot) else {
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

    /// Two workers' shards, of which only the second's thread runs (the first's CPU might as
    /// well have stopped for good): a call on each, sending each other tones.
    #[test]
    fn a_worker_serves_the_calls_of_one_whose_thread_does_not_run() {
        const AMPLITUDE: f64 = 8000.0;
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
        drop((workers, shards));
        let thread = std::thread::spawn(move || running.run());

        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 46100, 46119);
        let ports = [pool.bind().unwrap(), pool.bind().unwrap()];
        let addresses: Vec<_> = ports
            .iter()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p.port())))
            .collect();
        let mut ends = Vec::new();
        for (i, port) in ports.into_iter().enumerate() {
            let config = MediaConfig::new(MediaCodec::Pcmu, 0, Some(addresses[1 - i]), i as u32);
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

        let tones = [1000.0, 700.0];
        let mut sent = [0usize; 2];
        for _ in 0..500 {
            for (i, (inbound, outbound, heard)) in ends.iter_mut().enumerate() {
                while outbound.free() > RING_FRAMES - 10 {
                    let mut frame = AudioFrame::silence(Instant::now());
                    sine(
                        16000,
                        tones[i],
                        AMPLITUDE,
                        sent[i] * FRAME_SAMPLES,
                        &mut frame.samples,
                    );
                    sent[i] += 1;
                    outbound.try_send(frame).unwrap();
                }
                while let Some(frame) = inbound.try_recv() {
                    heard.push(frame);
                }
            }
            if ends.iter().all(|(_, _, heard)| heard.len() >= 60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (i, (_, _, heard)) in ends.iter().enumerate() {
            assert!(heard.len() >= 60, "call {i} heard {} frames", heard.len());
            let tail: Vec<i16> = heard[40..60].iter().flat_map(|f| f.samples).collect();
            // Each call hears the other's tone: the stalled worker's call both sent and read.
            let at = tone_amplitude(&tail, 16000, tones[1 - i]);
            assert!(
                (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
                "call {i}: {at:.0}"
            );
        }
        let stalled = &figures[0];
        assert!(stalled.steps_stood_in.load(Ordering::Relaxed) > 0);
        assert!(stalled.tick_lateness.snapshot().count > 0);
        assert_eq!(figures[1].steps_stood_in.load(Ordering::Relaxed), 0);

        for (commands, waker) in &handles {
            commands.send(Command::Shutdown).unwrap();
            waker.wake().unwrap();
        }
        thread.join().unwrap();
        for companion in companions {
            companion.join().unwrap();
        }
        assert_eq!(
            pool.in_use(),
            0,
            "both calls' ports went back with their shards"
        );
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

//! # dialtone-media — the media driver
//!
//! Owns the RTP sockets and the 20 ms clock; protocol work is in `dialtone-rtp`, codec work in
//! `dialtone-codec`, and one call's step in the sans-IO [`CallMedia`] ([`pipeline`]).
//!
//! * [`PortPool`] hands out an even RTP port and the odd RTCP port above it from a configured
//!   range.
//! * [`MediaEngine`] runs media worker threads (one per core by default), separate from the
//!   tokio workers; each serves many calls, reading their sockets every 10 ms with the kernel's
//!   receive timestamps ([`arrival`]) on one pacing clock ([`worker`]), under `SCHED_FIFO`
//!   where permitted ([`Scheduling`]).
//! * [`MediaEngine::start`] hands a call to a worker and returns its [`MediaCall`]: a
//!   [`FrameReceiver`] of 16 kHz frames toward the speech loop and a [`FrameSender`] of agent
//!   frames back, both lock-free SPSC rings ([`ring`]); [`MediaEvent`]s (DTMF, RTP timeout,
//!   RTCP BYE); hold/resume/re-address; RFC 4733 digits to send; statistics; optional stereo
//!   recording ([`MediaConfig::record`]; key presses masked out of it, in-band ones on the
//!   writer's side: `dtmf_mask`); SRTP and SRTCP with the call's SDES keys
//!   ([`MediaConfig::srtp`]).
//! * Latency histograms per worker ([`WorkerLatency`]): packet in → frame in the speech ring,
//!   agent frame → packet out, and the CPU time of each call's tick.
//!
//! ```no_run
//! # async fn run() -> Result<(), dialtone_media::MediaError> {
//! use std::time::Duration;
//! use dialtone_media::{MediaCodec, MediaConfig, MediaEngine, PortPool};
//!
//! let engine = MediaEngine::new(0)?;
//! let pool = PortPool::new("127.0.0.1".parse().unwrap(), 20000, 20999);
//! let remote = "127.0.0.1:30000".parse().ok();
//! let mut call = engine.start(pool.bind()?, MediaConfig::new(MediaCodec::Pcmu, 0, remote, 0x1234))?;
//! let mut inbound = call.take_inbound().unwrap();
//! while let Some(frame) = inbound.recv().await {
//!     // 320 samples of 16 kHz audio from the caller.
//! #   let _ = frame;
//! }
//! let stats = call.stop().await;
//! # let _ = stats;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc as tokio_mpsc, oneshot};

pub mod arrival;
mod dtmf_mask;
mod handoff;
mod histogram;
pub mod pipeline;
mod recording;
pub mod ring;
pub mod splice;
pub mod worker;

pub use histogram::{LatencyHistogram, LatencySnapshot};
pub use pipeline::{
    CallMedia, Direction, MediaCodec, MediaConfig, MediaEvent, TickTimes, Transmit,
};
pub use recording::{RecordTo, RecordingOutcome};
pub use ring::{AudioFrame, FRAME_SAMPLES, FrameReceiver, FrameSender};
pub use splice::{Feed, Splice};
pub use worker::WorkerLatency;

use worker::{Command, Served, Worker};

/// Errors of the media driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Every port pair of the range is taken.
    #[error("no free RTP port in {first}-{last}")]
    PortsExhausted {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// Binding a socket failed for another reason than the port being taken.
    #[error("cannot bind RTP socket on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A media worker thread could not be started.
    #[error("cannot start a media worker: {source}")]
    Worker {
        /// The OS error.
        source: std::io::Error,
    },
    /// The codec could not be set up.
    #[error(transparent)]
    Codec(#[from] dialtone_codec::CodecError),
    /// The recording file could not be written.
    #[error("cannot record to {path}: {source}")]
    Recording {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A digit to send is not a DTMF digit.
    #[error("{digit:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotDtmf {
        /// The offending character.
        digit: char,
    },
    /// The far end did not negotiate telephone-event, so digits cannot be sent.
    #[error("the far end did not negotiate RFC 4733 telephone-event")]
    NoTelephoneEvent,
    /// The call's media has stopped.
    #[error("the call's media has stopped")]
    Stopped,
    /// The outbound ring is full: the agent side is half a second ahead of the wire.
    #[error("the outbound audio ring is full")]
    RingFull,
}

/// Even RTP ports from a range, each with the odd RTCP port above it.
#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    first: u16,
    last: u16,
    in_use: Mutex<BTreeSet<u16>>,
}

/// A bound RTP socket and its RTCP socket; the ports return to the pool when dropped.
#[derive(Debug)]
pub struct BoundPort {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
}

/// Holds a port pair out of the pool until dropped.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    pool: Arc<PortPool>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool
            .in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}

impl BoundPort {
    /// The RTP port (RTCP is the next one).
    pub fn port(&self) -> u16 {
        self.lease.port
    }
}

impl PortPool {
    /// A pool of the even ports in `first..=last` (with their odd neighbours) on `ip`.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> Arc<Self> {
        Arc::new(Self {
            ip,
            first,
            last,
            in_use: Mutex::new(BTreeSet::new()),
        })
    }

    /// Port pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.in_use.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn bind_one(&self, port: u16) -> Result<Option<UdpSocket>, MediaError> {
        let addr = SocketAddr::new(self.ip, port);
        match UdpSocket::bind(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(socket) => Ok(Some(socket)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
            Err(source) => Err(MediaError::Bind { addr, source }),
        }
    }

    /// Binds the first free even port and the odd one above it (skipping ports other programs
    /// hold).
    pub fn bind(self: &Arc<Self>) -> Result<BoundPort, MediaError> {
        let start = self.first + (self.first % 2);
        for port in (start..self.last).step_by(2) {
            if !self
                .in_use
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(port)
            {
                continue;
            }
            let lease = PortLease {
                port,
                pool: self.clone(),
            };
            let Some(rtp) = self.bind_one(port)? else {
                continue;
            };
            let Some(rtcp) = self.bind_one(port + 1)? else {
                continue;
            };
            return Ok(BoundPort { rtp, rtcp, lease });
        }
        Err(MediaError::PortsExhausted {
            first: self.first,
            last: self.last,
        })
    }
}

/// Counters and levels of one call's media (serialised as-is onto the call record).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MediaStats {
    /// RTP packets received and accepted.
    pub packets_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Packets lost on the way in (RFC 3550).
    pub lost: u64,
    /// Interarrival jitter in ms.
    pub jitter_ms: f64,
    /// Datagrams that were not RTP.
    pub malformed: u64,
    /// RTP packets of a payload type that was not negotiated (dropped).
    pub unknown_payload: u64,
    /// Packets from an address other than the latched one.
    pub foreign: u64,
    /// Inbound frames dropped because the speech loop fell behind.
    pub inbound_overflow: u64,
    /// Agent frames refused because the outbound ring was full.
    pub outbound_overflow: u64,
    /// Ticks with no agent frame ready (silence was sent).
    pub outbound_underflow: u64,
    /// Agent frames discarded by a clear (barge-in).
    pub cleared_frames: u64,
    /// Inbound frames whose level was above -40 dBFS (speech or tone, not silence).
    pub voiced_frames_in: u64,
    /// Loudest inbound frame, RMS in dBFS.
    pub peak_level_dbfs: f64,
    /// Inbound frames the jitter buffer reported lost and the codec concealed.
    pub concealed_frames: u64,
    /// Payloads the codec could not decode (concealed instead).
    pub undecodable: u64,
    /// Frames of comfort noise played (RFC 3389).
    pub comfort_noise_frames: u64,
    /// Packets that came after their playout time.
    pub late_packets: u64,
    /// The jitter buffer's current target delay in ms.
    pub jitter_buffer_ms: u32,
    /// RFC 4733 digit events received (starts and ends).
    pub dtmf_events: u64,
    /// RFC 4733 digits received whole (their end came).
    pub dtmf_digits: u64,
    /// RFC 4733 packets sent.
    pub dtmf_packets_out: u64,
    /// RTCP reports sent.
    pub rtcp_reports_out: u64,
    /// RTCP reports received about our stream.
    pub rtcp_reports_in: u64,
    /// RTCP datagrams that could not be read (on an SRTP call, also SRTCP that failed
    /// authentication or was replayed, and RTCP in clear).
    pub rtcp_malformed: u64,
    /// Round-trip time from RTCP, in ms.
    pub round_trip_ms: Option<f64>,
    /// Fraction of our packets the far end reported lost in its last interval.
    pub remote_fraction_lost: f64,
    /// Recording ticks dropped because the disk fell behind.
    pub recording_dropped: u64,
    /// Bridged: ticks at which the other leg had no frame to relay (silence went out).
    pub relay_underflow: u64,
    /// Bridged: inbound frames not relayed because the other leg was behind or gone.
    pub relay_overflow: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// SRTP packets whose authentication failed, RTP in clear among them (dropped).
    pub srtp_unauthenticated: u64,
    /// SRTP packets replayed or older than the replay window (dropped).
    pub srtp_replayed: u64,
    /// Packets that could not be protected, and so were not sent.
    pub srtp_unsent: u64,
}

pub use dialtone_codec::level_dbfs;

#[derive(Debug, Clone)]
struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl WorkerHandle {
    fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok() && self.waker.wake().is_ok()
    }
}

/// The media worker threads and their companions ([`handoff`]).
#[derive(Debug)]
pub struct MediaEngine {
    /// Where each worker's commands go.
    workers: Vec<WorkerHandle>,
    latency: Vec<Arc<WorkerLatency>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
}

/// Latency figures merged over every worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaLatency {
    /// RTP packet received by the kernel → frame in the speech ring.
    pub inbound: LatencySnapshot,
    /// Agent frame queued → RTP packet sent.
    pub outbound: LatencySnapshot,
    /// CPU time of one call's tick.
    pub step: LatencySnapshot,
    /// How late the workers' ticks started.
    pub tick_lateness: LatencySnapshot,
    /// Ticks skipped because a worker fell behind.
    pub ticks_skipped: u64,
    /// Steps (or a tick's packets) one worker took for another whose thread had not done them
    /// past their deadline.
    pub steps_stood_in: u64,
    /// Calls being served.
    pub calls: u64,
}

/// How the media threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// Like every other thread.
    Normal,
    /// `SCHED_FIFO` at the lowest real-time priority: a worker whose tick is due runs before
    /// any ordinary thread (tokio workers, the database, a load generator), so a busy machine
    /// delays no packet. The kernel's real-time throttling still leaves the rest of the
    /// machine its share. Where the process may not (no `CAP_SYS_NICE` or `RLIMIT_RTPRIO`), the
    /// workers run as [`Scheduling::Normal`] and say so once.
    Realtime,
    /// Ordinary scheduling at nice −10 ([`FAVOURED_NICE`]): for the calls' speech loops, which
    /// must keep up with the audio, over signalling, storage and the API. On a busy machine the
    /// scheduler gives such a thread about nine times the CPU share of a nice-0 one; it never
    /// goes ahead of real-time threads, and never starves the others. Needs `CAP_SYS_NICE` (or
    /// `RLIMIT_NICE`); where the process may not, the thread stays at its nice value.
    Favoured,
}

/// The nice value of [`Scheduling::Favoured`] threads.
pub const FAVOURED_NICE: i32 = -10;

/// `thread-priority`'s cross-platform value that it maps to nice −10 on Linux: it spreads
/// 0..=99 over nice 19..=−20 as `-20 + ⌊39 × (1 − p/99)⌋`, and p = 72 gives ⌊10.6⌋ = 10.
const FAVOURED_CROSSPLATFORM: u8 = 72;

impl Scheduling {
    /// Puts the calling thread under this scheduling; false where it may not.
    pub fn apply_to_this_thread(self) -> bool {
        use thread_priority::{
            NormalThreadSchedulePolicy, RealtimeThreadSchedulePolicy, ThreadPriority,
            ThreadPriorityValue, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        match self {
            Scheduling::Normal => true,
            Scheduling::Realtime => set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Min,
                ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
            )
            .is_ok(),
            Scheduling::Favoured => ThreadPriorityValue::try_from(FAVOURED_CROSSPLATFORM)
                .is_ok_and(|favoured| {
                    set_thread_priority_and_policy(
                        thread_native_id(),
                        ThreadPriority::Crossplatform(favoured),
                        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
                    )
                    .is_ok()
                }),
        }
    }
}

impl MediaEngine {
    /// Starts `workers` media threads (0: one per available core), scheduled normally.
    pub fn new(workers: usize) -> Result<Arc<Self>, MediaError> {
        Self::with_scheduling(workers, Scheduling::Normal)
    }

    /// Starts `workers` media threads (0: one per available core), scheduled as `scheduling`
    /// says.
    pub fn with_scheduling(
        workers: usize,
        scheduling: Scheduling,
    ) -> Result<Arc<Self>, MediaError> {
        let count = if workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            workers
        };
        let mut handles = Vec::with_capacity(count);
        let mut latency = Vec::with_capacity(count);
        let mut workers = Vec::with_capacity(count);
        let mut companions = Vec::with_capacity(count);
        let start = Instant::now() + worker::READ_EVERY;
        for i in 0..count {
            let figures = Arc::new(WorkerLatency::default());
            let (handoff, companion) = handoff::spawn_companion(format!("dialtone-handoff-{i}"))
                .map_err(|source| MediaError::Worker { source })?;
            companions.push(companion);
            let (worker, waker, commands) =
                Worker::new(figures.clone(), handoff, start + worker::phase(i, count))
                    .map_err(|source| MediaError::Worker { source })?;
            handles.push(WorkerHandle { commands, waker });
            latency.push(figures);
            workers.push(worker);
        }
        let every_shard: Vec<_> = workers.iter().map(Worker::shard).collect();
        let mut threads = Vec::with_capacity(count * 2);
        for (i, mut worker) in workers.into_iter().enumerate() {
            worker.stand_in_for(every_shard.iter().cloned());
            let thread = std::thread::Builder::new()
                .name(format!("dialtone-media-{i}"))
                .spawn(move || {
                    if !scheduling.apply_to_this_thread() && i == 0 {
                        tracing::warn!(
                            "media workers run without real-time scheduling (not permitted here)"
                        );
                    }
                    worker.run();
                })
                .map_err(|source| MediaError::Worker { source })?;
            threads.push(thread);
        }
        drop(every_shard);
        // Joined after the workers: a companion ends once its worker's shard, which every
        // worker holds, is dropped with its handoff ring.
        threads.extend(companions);
        Ok(Arc::new(Self {
            workers: handles,
            latency,
            threads: Mutex::new(threads),
            next_worker: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Worker threads running.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Each worker's latency histograms.
    pub fn worker_latency(&self) -> &[Arc<WorkerLatency>] {
        &self.latency
    }

    /// Latency merged over the workers.
    pub fn latency(&self) -> MediaLatency {
        let mut merged = MediaLatency::default();
        for w in &self.latency {
            merged.inbound.merge(&w.inbound.snapshot());
            merged.outbound.merge(&w.outbound.snapshot());
            merged.step.merge(&w.step.snapshot());
            merged.tick_lateness.merge(&w.tick_lateness.snapshot());
            merged.ticks_skipped += w.ticks_skipped.load(Ordering::Relaxed);
            merged.steps_stood_in += w.steps_stood_in.load(Ordering::Relaxed);
            merged.calls += w.calls.load(Ordering::Relaxed);
        }
        merged
    }

    /// Starts a call's media on `port` (the least recently chosen worker serves it).
    pub fn start(&self, port: BoundPort, config: MediaConfig) -> Result<MediaCall, MediaError> {
        let telephone_event = config.telephone_event.is_some();
        let (mut media, inbound, outbound) =
            CallMedia::new(config, Instant::now(), SystemTime::now())?;
        let recording_done = media.take_recording_done();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let index = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1);
        let worker = self
            .workers
            .get(index)
            .cloned()
            .ok_or(MediaError::Stopped)?;
        let (events_tx, events) = tokio_mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(media.stats()));
        let call = Served::new(id, media, port, events_tx, shared.clone());
        if !worker.send(Command::Start(call)) {
            return Err(MediaError::Stopped);
        }
        Ok(MediaCall {
            id,
            worker,
            inbound: Some(inbound),
            outbound: Some(outbound),
            events,
            stats: shared,
            telephone_event,
            recording_done,
            stopped: false,
        })
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for w in &self.workers {
            w.send(Command::Shutdown);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A running call's media. Dropping it stops the media (without waiting).
#[derive(Debug)]
pub struct MediaCall {
    id: u64,
    worker: WorkerHandle,
    inbound: Option<FrameReceiver>,
    outbound: Option<FrameSender>,
    events: tokio_mpsc::UnboundedReceiver<MediaEvent>,
    stats: Arc<Mutex<MediaStats>>,
    telephone_event: bool,
    recording_done: Option<oneshot::Receiver<RecordingOutcome>>,
    stopped: bool,
}

impl MediaCall {
    /// The caller's audio, 16 kHz frames, for the one consumer that takes it.
    pub fn take_inbound(&mut self) -> Option<FrameReceiver> {
        self.inbound.take()
    }

    /// Hands back the caller's audio taken by [`MediaCall::take_inbound`], for its next
    /// consumer (early media is listened to before the brain takes over at answer).
    pub fn restore_inbound(&mut self, inbound: FrameReceiver) {
        self.inbound = Some(inbound);
    }

    /// The agent's audio ring, for the one producer that takes it.
    pub fn take_outbound(&mut self) -> Option<FrameSender> {
        self.outbound.take()
    }

    /// The call was answered: the RTP timeout counts from now (media started with early
    /// media may have been silent while the phone rang).
    pub fn answered(&self) {
        self.worker.send(Command::Answered(self.id));
    }

    /// Applies a new offer/answer: hold, resume, or a new far-end address.
    pub fn redirect(&self, direction: Direction) {
        self.worker.send(Command::Redirect(self.id, direction));
    }

    /// Splices the call for a bridged transfer ([`splice`]): the splice's feed goes to the
    /// wire instead of the agent's audio (which is dropped), and inbound frames are copied
    /// where it says, from the worker's next tick; `None` gives the wire back to the agent.
    pub fn splice(&self, splice: Option<Splice>) {
        self.worker
            .send(Command::Splice(self.id, splice.map(Box::new)));
    }

    /// Sends `digits` as RFC 4733 events (100 ms each, 60 ms apart). The request is made at
    /// once; the returned future (which borrows nothing) says whether the worker took it.
    pub fn send_dtmf(
        &self,
        digits: &str,
    ) -> impl std::future::Future<Output = Result<(), MediaError>> + Send + 'static {
        let checked = if !self.telephone_event {
            Err(MediaError::NoTelephoneEvent)
        } else if let Some(digit) = digits
            .chars()
            .find(|d| dialtone_rtp::dtmf::code_of(*d).is_none())
        {
            Err(MediaError::NotDtmf { digit })
        } else {
            let (reply, result) = oneshot::channel();
            if self
                .worker
                .send(Command::Dtmf(self.id, digits.to_owned(), reply))
            {
                Ok(result)
            } else {
                Err(MediaError::Stopped)
            }
        };
        async move { checked?.await.unwrap_or(Err(MediaError::Stopped)) }
    }

    /// The next media event; `None` once the media has stopped.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }

    /// The latest statistics (refreshed every 200 ms).
    pub fn stats(&self) -> MediaStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the media (sockets closed, ports back in the pool, recording complete) and
    /// returns the final statistics.
    pub async fn stop(self) -> MediaStats {
        self.stop_recorded().await.0
    }

    /// Like [`stop`](Self::stop), with how the recording ended (when the call recorded).
    pub async fn stop_recorded(mut self) -> (MediaStats, Option<RecordingOutcome>) {
        self.stopped = true;
        let (reply, stats) = oneshot::channel();
        let final_stats = if self.worker.send(Command::Stop(self.id, Some(reply))) {
            stats.await.unwrap_or_else(|_| self.stats())
        } else {
            self.stats()
        };
        let recording = match self.recording_done.take() {
            Some(done) => Some(
                match tokio::time::timeout(RECORDING_FINISH_LIMIT, done).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => RecordingOutcome::Failed("the recording writer stopped".into()),
                    Err(_) => RecordingOutcome::Failed(format!(
                        "the recording was not finished within {} s",
                        RECORDING_FINISH_LIMIT.as_secs()
                    )),
                },
            ),
            None => None,
        };
        (final_stats, recording)
    }
}

/// How long stopping a recorded call waits for the writer to finish its file: a hung disk
/// fails the recording, never the call's end.
const RECORDING_FINISH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for MediaCall {
    fn drop(&mut self) {
        if !self.stopped {
            self.worker.send(Command::Stop(self.id, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's nice value, from `/proc/thread-self/stat` (the 19th field).
    fn nice_of_this_thread() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_favoured_thread_runs_at_nice_minus_ten_where_permitted() {
        std::thread::spawn(|| {
            let before = nice_of_this_thread();
            if Scheduling::Favoured.apply_to_this_thread() {
                assert_eq!(nice_of_this_thread(), FAVOURED_NICE);
            } else {
                assert_eq!(nice_of_this_thread(), before, "refused, and left alone");
            }
        })
        .join()
        .unwrap();
        // Only that thread: this one keeps its own.
        assert_ne!(nice_of_this_thread(), FAVOURED_NICE);
    }

    #[test]
    fn pool_hands_out_even_ports_with_their_rtcp_neighbour_and_takes_them_back() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 41001, 41009);
        let a = pool.bind().unwrap();
        let b = pool.bind().unwrap();
        assert_eq!(a.port() % 2, 0);
        assert_ne!(a.port(), b.port());
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.port() + 1);
        assert_eq!(pool.in_use(), 2);
        drop(a);
        assert_eq!(pool.in_use(), 1);
        // A port another program holds is skipped.
        let squatter = UdpSocket::bind("127.0.0.1:41006").unwrap();
        let c = pool.bind().unwrap();
        let d = pool.bind().unwrap();
        assert!(c.port() != 41006 && d.port() != 41006);
        assert!(matches!(
            pool.bind(),
            Err(MediaError::PortsExhausted { .. })
        ));
        drop(squatter);
        assert_eq!(pool.bind().unwrap().port(), 41006);
    }
}

//! Every simulated call's RTP, on a few OS threads rather than a tokio task and timer per
//! call, so a thousand callees cost the shared cores little and their meters measure Dialtone,
//! not the load generator's scheduling.
//!
//! A stream thread wakes every 2 ms. It reads the sockets that have datagrams (one epoll asked
//! without waiting) and meters each datagram at the time the kernel received it
//! ([`dialtone_media::arrival`]), so a late wake-up does not show up as a gap in Dialtone's
//! audio; then it sends the packets that are due. Each call keeps its own 20 ms clock from
//! when it was answered (missed ticks are sent late, in a burst, as before), so the calls'
//! packets spread over the 20 ms like a trunk's.
//!
//! The threads run at the daemon's media workers' real-time priority, and under `SCHED_FIFO` a
//! thread holds its CPU from an equal one until it sleeps. So a stream thread gives way
//! ([`GiveWay`]) every half millisecond of work: on a machine it shares with the daemon, a
//! media worker whose tick is due waits at most that long for the load generator.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dialtone_media::Scheduling;
use dialtone_media::arrival::{
    StampBuffer, drain_stamped, enable_receive_timestamps, for_each_ready,
};
use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token};
use tokio::sync::mpsc as tokio_mpsc;

use crate::LoadgenError;
use crate::voice::{CallMeasure, CallVoice};

/// How often a stream thread wakes.
const SLOT: Duration = Duration::from_millis(2);
/// One packet per call this often.
const PACKET_EVERY: Duration = Duration::from_millis(20);
/// Readiness events taken per epoll call.
const EVENTS: usize = 1024;
/// The longest a stream thread works before it lets an equal real-time thread run.
const GIVE_WAY_AFTER: Duration = Duration::from_micros(500);

/// When a thread that runs long stretches should let the other threads of its priority run.
#[derive(Debug, Clone, Copy)]
struct GiveWay {
    since: Instant,
}

impl GiveWay {
    fn from(now: Instant) -> Self {
        Self { since: now }
    }

    /// True (and the stretch starts again) when `now` is `GIVE_WAY_AFTER` past its start.
    fn due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) < GIVE_WAY_AFTER {
            return false;
        }
        self.since = now;
        true
    }

    /// Yields the CPU if due (`sched_yield`: the thread goes behind the others of its priority
    /// that are waiting for this CPU).
    fn yield_if_due(&mut self) {
        if self.due(Instant::now()) {
            std::thread::yield_now();
        }
    }
}

/// One call's result: its id, what its meter saw, and its talkspurts still awaiting an answer.
pub type Measured = (String, CallMeasure, u64);

enum Command {
    Start {
        id: String,
        socket: UdpSocket,
        remote: Option<SocketAddr>,
        voice: Box<CallVoice>,
    },
    Stop(String),
}

/// The stream threads.
#[derive(Debug)]
pub struct Streams {
    threads: Vec<mpsc::Sender<Command>>,
    placed: HashMap<String, usize>,
    next: usize,
}

impl Streams {
    /// Starts `threads` stream threads (at least one); each call's result goes to `measured`
    /// when it stops, or when the `Streams` is dropped.
    pub fn new(
        threads: usize,
        measured: &tokio_mpsc::UnboundedSender<Measured>,
    ) -> Result<Self, LoadgenError> {
        let mut senders = Vec::new();
        for n in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let thread = StreamThread::new(rx, measured.clone())
                .map_err(LoadgenError::io("creating a stream thread's epoll"))?;
            std::thread::Builder::new()
                .name(format!("loadgen-rtp-{n}"))
                .spawn(move || {
                    // Like the daemon's media workers: a due packet is not held up by the
                    // other threads on the machine (where permitted).
                    if !Scheduling::Realtime.apply_to_this_thread() && n == 0 {
                        tracing::warn!("stream threads run without real-time scheduling");
                    }
                    thread.run();
                })
                .map_err(LoadgenError::io("starting a stream thread"))?;
            senders.push(tx);
        }
        Ok(Self {
            threads: senders,
            placed: HashMap::new(),
            next: 0,
        })
    }

    /// Streams `voice` from non-blocking `socket` to `remote` (nowhere when `None`: it only
    /// listens) under `id`.
    pub fn start(
        &mut self,
        id: String,
        socket: UdpSocket,
        remote: Option<SocketAddr>,
        voice: CallVoice,
    ) {
        let n = self.next % self.threads.len().max(1);
        self.next = self.next.wrapping_add(1);
        if let Some(thread) = self.threads.get(n) {
            self.placed.insert(id.clone(), n);
            let _ = thread.send(Command::Start {
                id,
                socket,
                remote,
                voice: Box::new(voice),
            });
        }
    }

    /// Stops the stream `id`; its result follows on the channel.
    pub fn stop(&mut self, id: &str) {
        if let Some(thread) = self.placed.remove(id).and_then(|n| self.threads.get(n)) {
            let _ = thread.send(Command::Stop(id.to_owned()));
        }
    }
}

struct Stream {
    id: String,
    socket: MioSocket,
    remote: Option<SocketAddr>,
    voice: Box<CallVoice>,
    next_send: Instant,
}

struct StreamThread {
    commands: mpsc::Receiver<Command>,
    measured: tokio_mpsc::UnboundedSender<Measured>,
    poll: Poll,
    streams: Vec<Option<Stream>>,
    free: Vec<usize>,
}

impl StreamThread {
    fn new(
        commands: mpsc::Receiver<Command>,
        measured: tokio_mpsc::UnboundedSender<Measured>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            commands,
            measured,
            poll: Poll::new()?,
            streams: Vec::new(),
            free: Vec::new(),
        })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let (mut buf, mut out) = (vec![0u8; 1500], vec![0u8; 1500]);
        let mut stamps = StampBuffer::default();
        let mut next_wake = Instant::now();
        loop {
            if !self.apply_commands() {
                break;
            }
            let mut give_way = GiveWay::from(Instant::now());
            self.read(&mut events, &mut buf, &mut stamps, &mut give_way);
            let now = Instant::now();
            for stream in self.streams.iter_mut().flatten() {
                if stream.next_send <= now {
                    give_way.yield_if_due();
                }
                while stream.next_send <= now {
                    if let (Some(to), Ok(n)) =
                        (stream.remote, stream.voice.next_packet(now, &mut out))
                    {
                        let _ = stream.socket.send_to(out.get(..n).unwrap_or_default(), to);
                    }
                    stream.next_send += PACKET_EVERY;
                }
            }
            next_wake += SLOT;
            let now = Instant::now();
            if next_wake < now {
                // Behind (the machine stalled): wake on the next slot from now.
                next_wake = now;
            }
            std::thread::sleep(next_wake.saturating_duration_since(now));
        }
        for slot in 0..self.streams.len() {
            self.finish(slot);
        }
    }

    /// Applies pending commands; false once the [`Streams`] is gone.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Start {
                    id,
                    socket,
                    remote,
                    voice,
                }) => self.start(id, socket, remote, voice),
                Ok(Command::Stop(id)) => {
                    if let Some(slot) = self
                        .streams
                        .iter()
                        .position(|s| s.as_ref().is_some_and(|s| s.id == id))
                    {
                        self.finish(slot);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn start(
        &mut self,
        id: String,
        socket: UdpSocket,
        remote: Option<SocketAddr>,
        voice: Box<CallVoice>,
    ) {
        if let Err(error) = enable_receive_timestamps(&socket) {
            tracing::warn!(%error, "no kernel receive timestamps: packets are timed when read");
        }
        let slot = self.free.pop().unwrap_or(self.streams.len());
        let mut socket = MioSocket::from_std(socket);
        if let Err(error) =
            self.poll
                .registry()
                .register(&mut socket, Token(slot), Interest::READABLE)
        {
            tracing::warn!(%error, "cannot watch a stream's socket");
            self.free.push(slot);
            let _ = self.measured.send((id, voice.measure(), 0));
            return;
        }
        let stream = Stream {
            id,
            socket,
            remote,
            next_send: Instant::now(),
            voice,
        };
        match self.streams.get_mut(slot) {
            Some(entry) => *entry = Some(stream),
            None => self.streams.push(Some(stream)),
        }
    }

    /// Ends the stream in `slot` and sends its result.
    fn finish(&mut self, slot: usize) {
        let Some(mut stream) = self.streams.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut stream.socket);
        self.free.push(slot);
        let pending = stream.voice.pending_talkspurts(Instant::now());
        let _ = self
            .measured
            .send((stream.id, stream.voice.measure(), pending));
    }

    /// Drains every socket that has datagrams into its meter.
    fn read(
        &mut self,
        events: &mut Events,
        buf: &mut [u8],
        stamps: &mut StampBuffer,
        give_way: &mut GiveWay,
    ) {
        let streams = &mut self.streams;
        let read = for_each_ready(&mut self.poll, events, |token| {
            give_way.yield_if_due();
            if let Some(Some(stream)) = streams.get_mut(token.0) {
                let voice = &mut stream.voice;
                drain_stamped(&stream.socket, buf, stamps, |datagram, bytes| {
                    voice.receive(datagram.arrived, bytes);
                });
            }
        });
        if let Err(error) = read {
            tracing::warn!(%error, "a stream thread cannot poll its sockets");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_thread_gives_way_after_each_half_millisecond_of_work() {
        let start = Instant::now();
        let mut give_way = GiveWay::from(start);
        assert!(!give_way.due(start + Duration::from_micros(499)));
        assert!(give_way.due(start + Duration::from_micros(500)));
        // The next stretch counts from the yield.
        assert!(!give_way.due(start + Duration::from_micros(900)));
        assert!(give_way.due(start + Duration::from_micros(1000)));
    }
}

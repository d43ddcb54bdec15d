//! CPU time per call-second of one media worker thread carrying N full-duplex G.711 calls on
//! loopback, against a bare UDP reflector thread moving the same packets (the physical limit).
//!
//! A far-end thread plays every call's other side: each 20 ms it sends one PCMU packet to each
//! call and reads back what the calls sent; it also stands in for the speech loop, moving each
//! call's 16 kHz frames from its inbound ring to its outbound ring (echo). Then the same far
//! end talks to a reflector thread that only receives each datagram and sends it back. The
//! CPU time of the worker and of the reflector is read from `/proc` (per thread).
//!
//! With `RECORD=1` every call also records a stereo WAV (into a temporary directory): the
//! worker's CPU then includes handing each tick to the recording's ring, and the shared
//! recording writer thread's CPU is reported beside it.
//!
//! `cargo bench -p dialtone-benches --bench media_worker` (env `CALLS`, default 200,
//! `SECONDS`, default 10, `RECORD`, default 0).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dialtone_media::{
    FrameReceiver, FrameSender, MediaCall, MediaCodec, MediaConfig, MediaEngine, PortPool,
};
use dialtone_rtp::RtpSender;
use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token};

fn env(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let ticks_per_second = 100.0;
    let mut total = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that closes the name: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0);
        let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
        total += (utime + stime) / ticks_per_second;
    }
    total
}

/// The far ends: one socket per call, a packet each way per call per 20 ms.
struct FarEnds {
    sockets: Vec<UdpSocket>,
    targets: Vec<SocketAddr>,
    senders: Vec<RtpSender>,
    received: u64,
}

impl FarEnds {
    fn new(targets: Vec<SocketAddr>) -> Self {
        let sockets = targets
            .iter()
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let senders = (0..targets.len())
            .map(|i| RtpSender::new(i as u32 + 1, 0, 0, 0))
            .collect();
        Self {
            sockets,
            targets,
            senders,
            received: 0,
        }
    }

    /// Runs for `seconds`, calling `between` once per tick (the speech-loop stand-in).
    fn run(&mut self, seconds: u64, mut between: impl FnMut()) {
        let payload = [0x55u8; 160];
        let mut packet = [0u8; 200];
        let mut buf = [0u8; 1500];
        let start = Instant::now();
        let mut next = start;
        while start.elapsed() < Duration::from_secs(seconds) {
            for ((socket, target), sender) in self
                .sockets
                .iter()
                .zip(&self.targets)
                .zip(&mut self.senders)
            {
                let n = sender.write(&payload, 160, &mut packet).unwrap();
                let _ = socket.send_to(&packet[..n], target);
            }
            between();
            next += Duration::from_millis(20);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            for socket in &self.sockets {
                while socket.recv(&mut buf).is_ok() {
                    self.received += 1;
                }
            }
        }
    }
}

/// A thread that sends every datagram back where it came from, nothing else.
fn reflector(
    count: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<SocketAddr>, std::thread::JoinHandle<u64>) {
    let mut sockets: Vec<MioSocket> = (0..count)
        .map(|_| MioSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap())
        .collect();
    let addrs = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let handle = std::thread::Builder::new()
        .name("reflector".into())
        .spawn(move || {
            let mut poll = Poll::new().unwrap();
            for (i, s) in sockets.iter_mut().enumerate() {
                poll.registry()
                    .register(s, Token(i), Interest::READABLE)
                    .unwrap();
            }
            let mut events = Events::with_capacity(1024);
            let mut buf = [0u8; 1500];
            let mut moved = 0;
            while !stop.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(100)))
                    .unwrap();
                for event in events.iter() {
                    let socket = &sockets[event.token().0];
                    while let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                        moved += 1;
                    }
                }
            }
            moved
        })
        .unwrap();
    (addrs, handle)
}

fn main() {
    let calls = env("CALLS", 200) as usize;
    let seconds = env("SECONDS", 10);
    let record = env("RECORD", 0) == 1;
    let recordings = tempfile::tempdir().unwrap();
    let call_seconds = (calls as u64 * seconds) as f64;

    // Dialtone: one media worker, N calls.
    let engine = MediaEngine::new(1).unwrap();
    // Below the kernel's ephemeral range (32768 up), where the far ends' sockets are bound.
    let pool = PortPool::new(
        "127.0.0.1".parse().unwrap(),
        24000,
        24000 + 2 * calls as u16 + 10,
    );
    let mut far = FarEnds::new(Vec::new());
    let mut media: Vec<MediaCall> = Vec::new();
    let mut rings: Vec<(FrameReceiver, FrameSender)> = Vec::new();
    let mut targets = Vec::new();
    for (i, socket) in (0..calls)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .enumerate()
    {
        let port = pool.bind().unwrap();
        targets.push(SocketAddr::from(([127, 0, 0, 1], port.port())));
        let mut call = engine
            .start(
                port,
                MediaConfig {
                    rtp_timeout: Duration::from_secs(3600),
                    record: record.then(|| {
                        dialtone_media::RecordTo::stereo(recordings.path().join(format!("{i}.wav")))
                    }),
                    ..MediaConfig::new(
                        MediaCodec::Pcmu,
                        0,
                        Some(socket.local_addr().unwrap()),
                        i as u32 + 1000,
                    )
                },
            )
            .unwrap();
        rings.push((call.take_inbound().unwrap(), call.take_outbound().unwrap()));
        media.push(call);
        socket.set_nonblocking(true).unwrap();
        far.sockets.push(socket);
    }
    far.targets = targets;
    far.senders = (0..calls)
        .map(|i| RtpSender::new(i as u32 + 1, 0, 0, 0))
        .collect();
    let cpu_before = thread_cpu("dialtone-media");
    let writer_before = thread_cpu("dialtone-record");
    far.run(seconds, || {
        for (inbound, outbound) in &mut rings {
            while let Some(mut frame) = inbound.try_recv() {
                frame.at = Instant::now();
                let _ = outbound.try_send(frame);
            }
        }
    });
    let ours = thread_cpu("dialtone-media") - cpu_before;
    let writer = thread_cpu("dialtone-record") - writer_before;
    let ours_received = far.received;
    let latency = engine.latency();
    let mut dropped = 0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for call in media {
        dropped += runtime.block_on(call.stop()).recording_dropped;
    }

    // The reflector, same far ends, same packet rate.
    let stop = Arc::new(AtomicBool::new(false));
    let (addrs, handle) = reflector(calls, stop.clone());
    let mut far = FarEnds::new(addrs);
    let cpu_before = thread_cpu("reflector");
    far.run(seconds, || {});
    let reflected = thread_cpu("reflector") - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let moved = handle.join().unwrap();

    let per_call_second = |cpu: f64| cpu / call_seconds * 1e6;
    println!(
        "media worker: {calls} full-duplex G.711 calls for {seconds} s on one worker{}",
        if record { ", each recorded" } else { "" }
    );
    if record {
        println!(
            "  recording writer  {:>8.1} µs CPU per call-second ({writer:.2} s CPU; {dropped} ticks dropped)",
            per_call_second(writer)
        );
    }
    println!(
        "  dialtone worker   {:>8.1} µs CPU per call-second ({ours:.2} s CPU; {ours_received} packets back)",
        per_call_second(ours)
    );
    println!(
        "  bare reflector    {:>8.1} µs CPU per call-second ({reflected:.2} s CPU; {moved} packets moved)",
        per_call_second(reflected)
    );
    println!(
        "  ratio             {:>8.2}",
        ours / reflected.max(f64::EPSILON)
    );
    println!(
        "  per-call tick p50 {:?} p99 {:?}; packet in → speech ring p50 {:?} p99 {:?}; agent frame → wire p50 {:?} p99 {:?}; ticks skipped {}",
        latency.step.quantile(0.5),
        latency.step.quantile(0.99),
        latency.inbound.quantile(0.5),
        latency.inbound.quantile(0.99),
        latency.outbound.quantile(0.5),
        latency.outbound.quantile(0.99),
        latency.ticks_skipped,
    );
}

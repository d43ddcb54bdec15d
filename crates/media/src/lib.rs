//! # dialtone-media — the media driver
//!
//! Owns the RTP sockets and the 20 ms clock; the protocol work is in `dialtone-rtp` and the
//! codec work in `dialtone-codec`. A [`PortPool`] hands out even RTP ports from a configured
//! range; [`MediaSession::start`] runs one call's media: every packet in is parsed, accounted
//! (RFC 3550 statistics) and put into the adaptive jitter buffer; every 20 ms one frame comes
//! out of it (decoded, or concealed when lost) into the call's inbound queue, and one frame
//! from the outbound queue (or silence) is encoded and sent. The far end's address is
//! latched from its first valid packet (symmetric RTP), after which packets from elsewhere are
//! counted and dropped.
//!
//! Frames are 20 ms of 8 kHz mono PCM ([`FRAME_SAMPLES`] samples).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialtone_codec::{Concealer, G711, G711Law};
use dialtone_rtp::{Arrival, JitterBuffer, Playout, RtpReceiver, RtpSender, is_rtcp, parse};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// One 20 ms frame of 8 kHz mono PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// Frames queued in each direction before the oldest are dropped (one second).
const QUEUE_FRAMES: usize = 50;

/// Errors of the media driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Every port of the range is taken.
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
}

/// Even RTP ports from a range; the odd port above each is left for RTCP.
#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    first: u16,
    last: u16,
    in_use: Mutex<BTreeSet<u16>>,
}

/// A bound RTP socket whose port returns to the pool when dropped.
#[derive(Debug)]
pub struct BoundPort {
    socket: UdpSocket,
    port: u16,
    pool: Arc<PortPool>,
}

impl BoundPort {
    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for BoundPort {
    fn drop(&mut self) {
        self.pool
            .in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}

impl PortPool {
    /// A pool of the even ports in `first..=last` on `ip`.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> Arc<Self> {
        Arc::new(Self {
            ip,
            first,
            last,
            in_use: Mutex::new(BTreeSet::new()),
        })
    }

    /// Ports currently handed out.
    pub fn in_use(&self) -> usize {
        self.in_use.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Binds the first free even port (skipping ports other programs hold).
    pub fn bind(self: &Arc<Self>) -> Result<BoundPort, MediaError> {
        let start = self.first + (self.first % 2);
        for port in (start..=self.last).step_by(2) {
            {
                let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
                if !used.insert(port) {
                    continue;
                }
            }
            let addr = SocketAddr::new(self.ip, port);
            let bound = std::net::UdpSocket::bind(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(UdpSocket::from_std);
            match bound {
                Ok(socket) => {
                    return Ok(BoundPort {
                        socket,
                        port,
                        pool: self.clone(),
                    });
                }
                Err(e) => {
                    self.in_use
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&port);
                    if e.kind() != std::io::ErrorKind::AddrInUse {
                        return Err(MediaError::Bind { addr, source: e });
                    }
                }
            }
        }
        Err(MediaError::PortsExhausted {
            first: self.first,
            last: self.last,
        })
    }
}

/// Counters and levels of one call's media.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaStats {
    /// RTP packets received and accepted.
    pub packets_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Packets lost on the way in (RFC 3550).
    pub lost: u64,
    /// Interarrival jitter in ms.
    pub jitter_ms: f64,
    /// Datagrams that were not RTP, or not of the negotiated payload types.
    pub malformed: u64,
    /// Packets from an address other than the latched one.
    pub foreign: u64,
    /// Inbound frames dropped because the consumer fell behind.
    pub inbound_overflow: u64,
    /// Ticks with no outbound frame ready (silence was sent).
    pub outbound_underflow: u64,
    /// Inbound frames whose level was above -40 dBFS (speech or tone, not silence).
    pub voiced_frames_in: u64,
    /// Loudest inbound frame, RMS in dBFS.
    pub peak_level_dbfs: f64,
    /// Inbound frames the jitter buffer reported lost and the concealer filled in.
    pub concealed_frames: u64,
    /// Packets that came after their playout time.
    pub late_packets: u64,
    /// The jitter buffer's current target delay in ms.
    pub jitter_buffer_ms: u32,
}

/// RMS level of a frame in dBFS (-100 for digital silence).
pub fn level_dbfs(frame: &[i16]) -> f64 {
    if frame.is_empty() {
        return -100.0;
    }
    let energy: f64 = frame.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / frame.len() as f64;
    if energy <= 0.0 {
        return -100.0;
    }
    (10.0 * (energy / (32768.0f64 * 32768.0)).log10()).max(-100.0)
}

/// What the far end agreed to in the latest offer/answer (a re-INVITE can change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// Whether we may send (false while the far end holds the call).
    pub sending: bool,
    /// Where to send; `None` keeps the latched address.
    pub remote: Option<SocketAddr>,
}

/// How to run one call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Where the SDP says to send; replaced by the source of the first valid packet.
    pub remote: Option<SocketAddr>,
    /// G.711 law of the negotiated codec.
    pub law: G711Law,
    /// Payload type we send.
    pub send_payload_type: u8,
    /// Payload type we accept.
    pub receive_payload_type: u8,
    /// The peer's telephone-event payload type, if any (events are accepted, not decoded yet).
    pub telephone_event: Option<u8>,
}

/// A running call's media. Dropping it stops the task.
#[derive(Debug)]
pub struct MediaSession {
    inbound: Option<mpsc::Receiver<Frame>>,
    /// Frames to send; silence goes out when none is queued.
    pub outbound: mpsc::Sender<Frame>,
    stats: watch::Receiver<MediaStats>,
    control: watch::Sender<Direction>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<MediaStats>>,
}

impl MediaSession {
    /// Starts the media task on `port` with `config`; `ssrc` and `sequence` seed the sender.
    pub fn start(port: BoundPort, config: MediaConfig, ssrc: u32, sequence: u16) -> MediaSession {
        let (in_tx, inbound) = mpsc::channel(QUEUE_FRAMES);
        let (outbound, out_rx) = mpsc::channel(QUEUE_FRAMES);
        let (stats_tx, stats) = watch::channel(MediaStats {
            peak_level_dbfs: -100.0,
            ..MediaStats::default()
        });
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (control, control_rx) = watch::channel(Direction {
            sending: true,
            remote: config.remote,
        });
        let task = tokio::spawn(run(
            port,
            config,
            (ssrc, sequence),
            in_tx,
            out_rx,
            control_rx,
            stats_tx,
            stop_rx,
        ));
        MediaSession {
            inbound: Some(inbound),
            outbound,
            stats,
            control,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The queue of decoded inbound frames, for the one consumer that takes it.
    pub fn take_inbound(&mut self) -> Option<mpsc::Receiver<Frame>> {
        self.inbound.take()
    }

    /// Applies a new offer/answer: hold (stop sending), resume, or a new far-end address.
    pub fn redirect(&self, direction: Direction) {
        let _ = self.control.send(direction);
    }

    /// The latest statistics.
    pub fn stats(&self) -> MediaStats {
        *self.stats.borrow()
    }

    /// Stops the task and returns the final statistics.
    pub async fn stop(mut self) -> MediaStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|_| *self.stats.borrow()),
            None => *self.stats.borrow(),
        }
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    port: BoundPort,
    config: MediaConfig,
    (ssrc, sequence): (u32, u16),
    inbound: mpsc::Sender<Frame>,
    mut outbound: mpsc::Receiver<Frame>,
    mut control: watch::Receiver<Direction>,
    publish: watch::Sender<MediaStats>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> MediaStats {
    let codec = G711::new(config.law);
    let mut sender = RtpSender::new(
        ssrc,
        sequence,
        u32::from(sequence) * 7,
        config.send_payload_type,
    );
    let mut receiver = RtpReceiver::new(8000);
    let mut jitter = JitterBuffer::new(Duration::from_millis(20), 8000, Duration::from_millis(300));
    let mut concealer = Concealer::new(FRAME_SAMPLES);
    let mut remote = config.remote;
    let mut latched = false;
    let mut stats = *publish.borrow();
    let mut buf = vec![0u8; 2048];
    let mut packet = [0u8; 12 + FRAME_SAMPLES];
    let mut payload = [0u8; FRAME_SAMPLES];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last_publish = Instant::now();
    let mut sending = true;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            changed = control.changed() => {
                if changed.is_err() {
                    break;
                }
                let direction = *control.borrow_and_update();
                if direction.sending && !sending {
                    sender.talkspurt();
                }
                sending = direction.sending;
                if let Some(to) = direction.remote
                    && Some(to) != remote
                {
                    // A new address from a re-INVITE: send there and latch afresh.
                    remote = Some(to);
                    latched = false;
                }
            }
            received = port.socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let datagram = buf.get(..n).unwrap_or_default();
                if is_rtcp(datagram) {
                    continue;
                }
                if latched && Some(source) != remote {
                    stats.foreign += 1;
                    continue;
                }
                let Ok(rtp) = parse(datagram) else {
                    stats.malformed += 1;
                    continue;
                };
                if Some(rtp.payload_type) == config.telephone_event {
                    continue;
                }
                if rtp.payload_type != config.receive_payload_type {
                    stats.malformed += 1;
                    continue;
                }
                if !latched {
                    // Symmetric RTP: answer where the media really comes from.
                    remote = Some(source);
                    latched = true;
                }
                let now = Instant::now();
                let sequence = match receiver.on_packet(now, &rtp) {
                    Arrival::InOrder { extended_sequence } | Arrival::Late { extended_sequence } => extended_sequence,
                    Arrival::Resync => {
                        jitter.reset();
                        u64::from(rtp.sequence)
                    }
                };
                jitter.push(now, sequence, rtp.timestamp, rtp.payload);
            }
            _ = tick.tick() => {
                // Inbound: one frame out of the jitter buffer per tick, losses concealed.
                let mut decoded: Frame = [0; FRAME_SAMPLES];
                let have = match jitter.pop(Instant::now()) {
                    Playout::Frame { payload, .. } => {
                        let samples = codec.decode(payload, &mut decoded);
                        concealer.good(&decoded);
                        let level = level_dbfs(decoded.get(..samples).unwrap_or_default());
                        if level > -40.0 {
                            stats.voiced_frames_in += 1;
                        }
                        stats.peak_level_dbfs = stats.peak_level_dbfs.max(level);
                        true
                    }
                    Playout::Lost => {
                        concealer.conceal(&mut decoded);
                        true
                    }
                    Playout::Empty => false,
                };
                if have && inbound.try_send(decoded).is_err() {
                    stats.inbound_overflow += 1;
                }
                let frame = outbound.try_recv().unwrap_or_else(|_| {
                    stats.outbound_underflow += 1;
                    [0; FRAME_SAMPLES]
                });
                let Some(to) = remote else { continue };
                if !sending {
                    // On hold: the media clock runs on, nothing is sent.
                    sender.skip(FRAME_SAMPLES as u32);
                    continue;
                }
                let n = codec.encode(&frame, &mut payload);
                if let Ok(len) = sender.write(payload.get(..n).unwrap_or_default(), FRAME_SAMPLES as u32, &mut packet)
                    && port.socket.send_to(packet.get(..len).unwrap_or_default(), to).await.is_ok()
                {
                    stats.packets_out += 1;
                }
            }
        }
        let r = receiver.stats();
        stats.packets_in = r.total_packets;
        stats.lost = r.lost;
        stats.jitter_ms = r.jitter_ms;
        let j = jitter.stats();
        stats.concealed_frames = j.lost;
        stats.late_packets = j.late;
        stats.jitter_buffer_ms = j.target_frames * 20;
        if last_publish.elapsed() >= Duration::from_millis(200) {
            last_publish = Instant::now();
            let _ = publish.send(stats);
        }
    }
    let _ = publish.send(stats);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_dbfs(&[0; 160]), -100.0);
        let full: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
            .collect();
        assert!(level_dbfs(&full) > -0.01);
        let tone: Vec<i16> = (0..160)
            .map(|i| {
                (10000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin())
                    as i16
            })
            .collect();
        let l = level_dbfs(&tone);
        assert!((-13.5..=-12.5).contains(&l), "{l}");
    }

    async fn recv_within(socket: &tokio::net::UdpSocket, buf: &mut [u8]) -> Option<usize> {
        tokio::time::timeout(Duration::from_millis(300), socket.recv(buf))
            .await
            .ok()
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn hold_stops_sending_and_resume_starts_again() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 43000, 43999);
        let port = pool.bind().unwrap();
        let far = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session = MediaSession::start(
            port,
            MediaConfig {
                remote: Some(far.local_addr().unwrap()),
                law: G711Law::A,
                send_payload_type: 8,
                receive_payload_type: 8,
                telephone_event: None,
            },
            9,
            1,
        );
        let mut buf = [0u8; 256];
        let n = recv_within(&far, &mut buf).await.unwrap();
        let first = parse(&buf[..n]).unwrap();
        assert_eq!(first.payload_type, 8);
        let first_timestamp = first.timestamp;
        session.redirect(Direction {
            sending: false,
            remote: None,
        });
        // Drain what was in flight; then nothing arrives for a whole timeout while held.
        while recv_within(&far, &mut buf).await.is_some() {}
        session.redirect(Direction {
            sending: true,
            remote: None,
        });
        let n = recv_within(&far, &mut buf).await.unwrap();
        let resumed = parse(&buf[..n]).unwrap();
        assert!(resumed.marker, "a resumed stream starts a talkspurt");
        assert!(resumed.timestamp.wrapping_sub(first_timestamp) >= 160 * 10);
        session.stop().await;
    }

    #[tokio::test]
    async fn pool_hands_out_even_ports_and_takes_them_back() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 41001, 41007);
        let a = pool.bind().unwrap();
        let b = pool.bind().unwrap();
        assert_eq!(a.port() % 2, 0);
        assert_ne!(a.port(), b.port());
        assert_eq!(pool.in_use(), 2);
        drop(a);
        assert_eq!(pool.in_use(), 1);
    }

    #[tokio::test]
    async fn a_tone_goes_out_paced_and_comes_back_measured() {
        // Two sessions on loopback, each the other's far end.
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 42000, 42999);
        let a_port = pool.bind().unwrap();
        let b_port = pool.bind().unwrap();
        let (a_addr, b_addr) = (
            SocketAddr::from(([127, 0, 0, 1], a_port.port())),
            SocketAddr::from(([127, 0, 0, 1], b_port.port())),
        );
        let config = |remote| MediaConfig {
            remote: Some(remote),
            law: G711Law::Mu,
            send_payload_type: 0,
            receive_payload_type: 0,
            telephone_event: Some(101),
        };
        let a = MediaSession::start(a_port, config(b_addr), 1, 10);
        let mut b = MediaSession::start(b_port, config(a_addr), 2, 20);
        let mut b_inbound = b.take_inbound().unwrap();
        let tone: Frame = std::array::from_fn(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin()) as i16
        });
        for _ in 0..25 {
            a.outbound.send(tone).await.unwrap();
        }
        let mut voiced = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while voiced < 20 && tokio::time::Instant::now() < deadline {
            if let Ok(Some(frame)) =
                tokio::time::timeout(Duration::from_secs(1), b_inbound.recv()).await
                && level_dbfs(&frame) > -20.0
            {
                voiced += 1;
            }
        }
        assert!(voiced >= 20, "only {voiced} tone frames arrived");
        let a_stats = a.stop().await;
        let b_stats = b.stop().await;
        assert!(a_stats.packets_out >= 20);
        assert!(b_stats.packets_in >= 20);
        assert!(b_stats.voiced_frames_in >= 20);
        // An amplitude-8000 sine is -15.3 dBFS RMS; G.711 keeps it within a fraction of a dB.
        assert!(b_stats.peak_level_dbfs > -16.5);
        assert_eq!(b_stats.malformed, 0);
    }
}

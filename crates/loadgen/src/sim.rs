//! The simulator's driver: the sans-IO [`Callee`] on a UDP socket (a tokio task), and each
//! answered call's [`CallVoice`] on its own RTP socket and 20 ms clock, on the stream threads
//! ([`crate::streams`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::LoadgenError;
use crate::callee::{Callee, CalleeConfig, CalleeEvent, EndedBy, Outcome};
use crate::streams::{Measured, Streams};
use crate::voice::{CallMeasure, CallVoice, VoiceScript};

/// Live counts, for progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimCounts {
    /// INVITEs taken.
    pub offered: u64,
    /// Calls answered (ACK received).
    pub answered: u64,
    /// Calls over.
    pub ended: u64,
    /// Calls live now.
    pub live: u64,
    /// The most live at once.
    pub max_live: u64,
    /// RTP sockets that could not be bound.
    pub media_errors: u64,
    /// Calls that ended without their handshake: no ACK for our 200, no answer to our BYE.
    pub timeouts: u64,
}

/// What the simulator saw of one call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    /// SIP Call-ID.
    pub call_id: String,
    /// Dialtone's call id (`X-Dialtone-Call-Id`).
    pub dispatch_id: Option<String>,
    /// What the simulator did with it.
    pub outcome: String,
    /// When the INVITE came.
    #[serde(skip)]
    pub offered_at: Option<Instant>,
    /// Whether the ACK of our 200 came.
    pub answered: bool,
    /// When it came.
    #[serde(skip)]
    pub answered_at: Option<Instant>,
    /// From the ACK to the end, ms.
    pub held_ms: u64,
    /// Who ended it (`caller`, `callee`, `timeout`), if it ended.
    pub ended_by: Option<String>,
    /// The audio measure, for answered calls.
    pub measure: Option<CallMeasure>,
    /// Talkspurts whose answer window was still open when the call ended.
    pub pending_talkspurts: u64,
}

/// Reads a running simulator's counts.
#[derive(Debug, Clone)]
pub struct SimWatch(Arc<Mutex<SimCounts>>);

impl SimWatch {
    /// The counts now.
    pub fn counts(&self) -> SimCounts {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Command {
    Stop(oneshot::Sender<Vec<CallRecord>>),
}

/// A running simulator.
#[derive(Debug)]
pub struct Simulator {
    /// The SIP address (UDP) to point a trunk at.
    pub sip_addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    counts: Arc<Mutex<SimCounts>>,
    offered_at: Arc<Mutex<HashMap<String, Instant>>>,
    answer_delay: Duration,
}

impl Simulator {
    /// Binds `config.sip_addr` (port 0 picks one) and starts answering; RTP ports come from
    /// `rtp_ports`; every answered call plays `script`, on `stream_threads` threads.
    pub async fn start(
        mut config: CalleeConfig,
        rtp_ports: (u16, u16),
        script: VoiceScript,
        stream_threads: usize,
    ) -> Result<Self, LoadgenError> {
        let socket = UdpSocket::bind(config.sip_addr)
            .await
            .map_err(LoadgenError::io(format!(
                "binding SIP on {}",
                config.sip_addr
            )))?;
        let sip_addr = socket
            .local_addr()
            .map_err(LoadgenError::io("reading the SIP address"))?;
        config.sip_addr = sip_addr;
        let answer_delay = config.answer_delay;
        let (commands, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(Mutex::new(SimCounts::default()));
        let offered_at = Arc::new(Mutex::new(HashMap::new()));
        let callee = Callee::new(config, rtp_ports);
        let (measured_tx, measured) = mpsc::unbounded_channel::<Measured>();
        let streams = Streams::new(stream_threads, &measured_tx)?;
        drop(measured_tx);
        tokio::spawn(run(
            socket,
            callee,
            script,
            (streams, measured),
            rx,
            counts.clone(),
            offered_at.clone(),
        ));
        Ok(Self {
            sip_addr,
            commands,
            counts,
            offered_at,
            answer_delay,
        })
    }

    /// How long the callees wait from an INVITE to their 200.
    pub fn answer_delay(&self) -> Duration {
        self.answer_delay
    }

    /// The counts now.
    pub fn counts(&self) -> SimCounts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle that reads the counts from elsewhere (a sampling thread) while the simulator
    /// runs.
    pub fn watch(&self) -> SimWatch {
        SimWatch(self.counts.clone())
    }

    /// When the INVITE of Dialtone's call `dispatch_id` arrived, if it has.
    pub fn offered_at(&self, dispatch_id: &str) -> Option<Instant> {
        self.offered_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(dispatch_id)
            .copied()
    }

    /// Stops: live calls' audio stops and every call's record comes back.
    pub async fn stop(self) -> Vec<CallRecord> {
        let (reply, records) = oneshot::channel();
        if self.commands.send(Command::Stop(reply)).is_err() {
            return Vec::new();
        }
        records.await.unwrap_or_default()
    }
}

async fn run(
    socket: UdpSocket,
    mut callee: Callee,
    script: VoiceScript,
    (mut streams, mut measured): (Streams, mpsc::UnboundedReceiver<Measured>),
    mut commands: mpsc::UnboundedReceiver<Command>,
    counts: Arc<Mutex<SimCounts>>,
    offered_at: Arc<Mutex<HashMap<String, Instant>>>,
) {
    let mut records: HashMap<String, CallRecord> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut ssrc = 0x5157_0000u32;
    let far = Duration::from_secs(3600);
    let stop_reply = loop {
        let wake = callee
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + far);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = received {
                    callee.handle_datagram(Instant::now(), source, buf.get(..n).unwrap_or_default());
                }
            }
            _ = tokio::time::sleep_until(wake) => callee.handle_timeout(Instant::now()),
            Some((id, measure, pending)) = measured.recv() => {
                if let Some(r) = records.get_mut(&id) {
                    r.measure = Some(measure);
                    r.pending_talkspurts = pending;
                }
                continue;
            }
            command = commands.recv() => match command {
                Some(Command::Stop(reply)) => break Some(reply),
                None => break None,
            },
        }
        while let Some(event) = callee.poll_event() {
            let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
            match event {
                CalleeEvent::Offered {
                    call_id,
                    dispatch_id,
                    outcome,
                } => {
                    c.offered += 1;
                    c.live += 1;
                    c.max_live = c.max_live.max(c.live);
                    let now = Instant::now();
                    if let Some(id) = &dispatch_id {
                        offered_at
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id.clone(), now);
                    }
                    records.insert(
                        call_id.clone(),
                        CallRecord {
                            call_id,
                            dispatch_id,
                            outcome: match outcome {
                                Outcome::Answer => "answer",
                                Outcome::Busy => "busy",
                                Outcome::Fail => "fail",
                                Outcome::NoAnswer => "no_answer",
                            }
                            .into(),
                            offered_at: Some(now),
                            answered: false,
                            answered_at: None,
                            held_ms: 0,
                            ended_by: None,
                            measure: None,
                            pending_talkspurts: 0,
                        },
                    );
                }
                CalleeEvent::Answering {
                    call_id,
                    rtp_port,
                    session,
                } => {
                    ssrc = ssrc.wrapping_add(1);
                    let bind = SocketAddr::new(
                        socket
                            .local_addr()
                            .map_or([127, 0, 0, 1].into(), |a| a.ip()),
                        rtp_port,
                    );
                    let started = std::net::UdpSocket::bind(bind)
                        .and_then(|s| s.set_nonblocking(true).map(|()| s));
                    let voice = CallVoice::new(
                        Instant::now(),
                        session.codec.codec,
                        session.codec.send_payload_type,
                        session.codec.receive_payload_type,
                        ssrc,
                    )
                    .map(|v| script.apply(v, session.telephone_event));
                    match (started, voice) {
                        (Ok(rtp), Ok(voice)) => {
                            streams.start(call_id, rtp, session.remote_rtp, voice);
                        }
                        (Err(error), _) => {
                            c.media_errors += 1;
                            tracing::warn!(%error, port = rtp_port, "cannot bind an RTP port");
                        }
                        (_, Err(error)) => {
                            c.media_errors += 1;
                            tracing::warn!(%error, "cannot set up the call's audio");
                        }
                    }
                }
                CalleeEvent::Confirmed { call_id } => {
                    c.answered += 1;
                    if let Some(r) = records.get_mut(&call_id) {
                        r.answered = true;
                        r.answered_at = Some(Instant::now());
                    }
                }
                CalleeEvent::Ended { call_id, by } => {
                    c.ended += 1;
                    if by == EndedBy::Timeout {
                        c.timeouts += 1;
                    }
                    c.live = c.live.saturating_sub(1);
                    if let Some(r) = records.get_mut(&call_id) {
                        r.held_ms = r.answered_at.map_or(0, |a| a.elapsed().as_millis() as u64);
                        r.ended_by = Some(
                            match by {
                                EndedBy::Caller => "caller",
                                EndedBy::Callee => "callee",
                                EndedBy::Timeout => "timeout",
                            }
                            .into(),
                        );
                    }
                    streams.stop(&call_id);
                }
            }
        }
        while let Some((to, bytes)) = callee.poll_transmit() {
            let _ = socket.send_to(&bytes, to).await;
        }
    };
    // Stop the audio still running: the stream threads send every call's measure and end,
    // and the channel closes once the last one is in.
    drop(streams);
    while let Some((id, measure, pending)) = measured.recv().await {
        if let Some(r) = records.get_mut(&id) {
            r.measure = Some(measure);
            r.pending_talkspurts = pending;
        }
    }
    if let Some(reply) = stop_reply {
        let _ = reply.send(records.into_values().collect());
    }
}

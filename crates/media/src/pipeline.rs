//! One call's media step, sans-IO: datagrams in with the time they arrived
//! ([`CallMedia::receive`]), one 20 ms tick at a time out ([`CallMedia::tick`]), packets to send
//! handed to a callback. The media worker owns the sockets and the clock; this owns the
//! protocol and audio state, so it runs on a virtual clock in tests and benches.
//!
//! Inbound: RTCP is read (round trip, far-end loss, BYE); RTP from anywhere but the latched
//! source is counted and dropped — except from the address the signalling named, which takes
//! the latch back from a stray stream (a previous call's far end still sending to a reused
//! port must not hijack the call); audio and comfort-noise packets go into the jitter buffer,
//! telephone-events to the RFC 4733 receiver (with a silent placeholder in the jitter buffer,
//! so a digit is neither heard as a tone nor concealed as loss), unknown payload types are
//! counted and dropped. Each tick one frame leaves the jitter buffer: decoded, concealed
//! (G.711 repeat-and-fade, Opus FEC from the next packet or libopus PLC), comfort noise or
//! silence, resampled to 16 kHz and pushed into the speech ring.
//!
//! Outbound: each tick one agent frame is popped (silence on underflow), resampled and encoded,
//! or replaced by a telephone-event packet while digits are being sent, and packetised; while
//! held, the media clock advances without sending. RTCP reports go out on the RFC interval.
//!
//! SRTP ([`MediaConfig::srtp`]): every datagram in is authenticated and decrypted (SRTP or
//! SRTCP, RFC 3711) before anything else reads it — a packet that fails is counted and
//! dropped, and latches nothing; every packet out is protected in place in the packet buffer
//! just before it is handed over, and one that cannot be is not sent: nothing leaves in clear.
//! Neither direction allocates.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use dialtone_codec::{
    Concealer, G711, G711Law, G722Decoder, G722Encoder, OpusDecoder, OpusEncoder, Resampler,
};
use dialtone_rtp::srtp::{MAX_OVERHEAD, SrtpKeys, SrtpSession};
use dialtone_rtp::{
    Arrival, DtmfEvent, DtmfReceiver, DtmfSender, JitterBuffer, Playout, RtcpSession, RtpError,
    RtpPacket, RtpReceiver, RtpSender, SenderInfo, is_rtcp, parse,
};
use tokio::sync::{Notify, oneshot};

use crate::recording::{RecordTo, Recorder, RecordingOutcome, StereoFrame};
use crate::ring::{
    AudioFrame, FRAME_SAMPLES, FrameReceiver, FrameSender, RingCounters, call_rings,
};
use crate::splice::{Splice, Spliced};
use crate::{MediaError, MediaStats, level_dbfs};

/// RTP payload type of comfort noise (RFC 3389).
pub const COMFORT_NOISE: u8 = 13;
/// The speech loop's sample rate.
pub const SPEECH_RATE: u32 = 16_000;
/// Largest datagram handled.
pub const MAX_DATAGRAM: usize = 1500;
/// A masked key press stays silent in the recording this many ticks past its end: the audio
/// of its moment leaves the jitter buffer up to 300 ms after the event came in.
const MASK_TAIL_TICKS: u32 = 15;

/// The negotiated audio codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaCodec {
    /// G.711 µ-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// Opus, 48 kHz RTP clock, coded here at 16 kHz.
    Opus,
    /// G.722, 16 kHz audio on an 8 kHz RTP clock (RFC 3551): no resampling either way.
    G722,
}

impl MediaCodec {
    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma | Self::G722 => 8000,
            Self::Opus => 48000,
        }
    }
}

/// How to run one call's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Where the SDP says to send RTP; replaced by the source of the first valid packet.
    pub remote: Option<SocketAddr>,
    /// Where the SDP says to send RTCP (`None`: the RTP address's port + 1, or the RTP address
    /// itself with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTP and RTCP share the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// The codec.
    pub codec: MediaCodec,
    /// Payload type we send.
    pub send_payload_type: u8,
    /// Payload type we accept.
    pub receive_payload_type: u8,
    /// The telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    /// The far end is taken as gone after this long without a packet.
    pub rtp_timeout: Duration,
    /// Record the call: where and how.
    pub record: Option<RecordTo>,
    /// Our SSRC (random per call, RFC 3550 §8).
    pub ssrc: u32,
    /// The first sequence number (random).
    pub initial_sequence: u16,
    /// The first timestamp (random).
    pub initial_timestamp: u32,
    /// RTCP CNAME.
    pub cname: String,
    /// SRTP keys: the call's media is SRTP and SRTCP, both ways. `Debug` hides them.
    pub srtp: Option<SrtpKeys>,
}

impl MediaConfig {
    /// A configuration sending to `remote` with `codec` on `payload_type` both ways, SSRC
    /// `ssrc`, telephone-event on PT 101, a 30 s RTP timeout, no recording; change the rest
    /// with struct update syntax.
    pub fn new(codec: MediaCodec, payload_type: u8, remote: Option<SocketAddr>, ssrc: u32) -> Self {
        Self {
            remote,
            remote_rtcp: None,
            rtcp_mux: false,
            codec,
            send_payload_type: payload_type,
            receive_payload_type: payload_type,
            telephone_event: Some(101),
            rtp_timeout: Duration::from_secs(30),
            record: None,
            ssrc,
            initial_sequence: ssrc as u16,
            initial_timestamp: ssrc.rotate_left(16),
            cname: format!("dialtone-{ssrc:08x}"),
            srtp: None,
        }
    }
}

/// What the far end agreed to in the latest offer/answer (a re-INVITE can change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// Whether we may send (false while the far end holds the call).
    pub sending: bool,
    /// Whether the far end will send (false while we are held or the stream is inactive;
    /// the RTP timeout is suspended then).
    pub receiving: bool,
    /// Where to send; `None` keeps the latched address.
    pub remote: Option<SocketAddr>,
}

/// Something the media layer tells the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// An RFC 4733 digit started or ended (`at`: when the packet arrived).
    Dtmf {
        /// The event.
        event: DtmfEvent,
        /// When its packet arrived.
        at: Instant,
    },
    /// No RTP for the configured timeout while the far end should be sending.
    RtpTimeout {
        /// How long it has been quiet.
        silent_for: Duration,
    },
    /// The far end sent an RTCP BYE.
    FarEndBye,
}

/// A packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Destination.
    pub to: SocketAddr,
    /// From the RTCP socket (false: the RTP socket).
    pub rtcp: bool,
    /// The datagram.
    pub data: &'a [u8],
}

/// Times the worker turns into latency figures after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickTimes {
    /// Arrival of the packet whose frame went into the speech ring this tick.
    pub inbound_arrival: Option<Instant>,
    /// When the agent queued the frame sent this tick.
    pub outbound_queued: Option<Instant>,
}

enum Decoder {
    G711 {
        codec: G711,
        concealer: Concealer,
        upsample: Box<Resampler>,
        pcm: Box<[i16; 160]>,
    },
    Opus(OpusDecoder),
    G722 {
        codec: Box<G722Decoder>,
        concealer: Concealer,
    },
}

enum Encoder {
    G711 {
        codec: G711,
        downsample: Box<Resampler>,
        pcm: Box<[i16; 160]>,
    },
    Opus(OpusEncoder),
    G722(Box<G722Encoder>),
}

/// The G.711 coder of a G.711 codec (µ-law for anything else; never asked then).
fn g711(codec: MediaCodec) -> G711 {
    G711::new(if codec == MediaCodec::Pcma {
        G711Law::A
    } else {
        G711Law::Mu
    })
}

impl Decoder {
    fn new(codec: MediaCodec) -> Result<Self, MediaError> {
        Ok(match codec {
            MediaCodec::Pcmu | MediaCodec::Pcma => Self::G711 {
                codec: g711(codec),
                concealer: Concealer::new(160),
                upsample: Box::new(Resampler::new(8000, SPEECH_RATE)?),
                pcm: Box::new([0; 160]),
            },
            MediaCodec::Opus => Self::Opus(OpusDecoder::new(SPEECH_RATE)?),
            MediaCodec::G722 => Self::G722 {
                codec: Box::default(),
                concealer: Concealer::new(FRAME_SAMPLES),
            },
        })
    }

    /// Decodes a payload into a 16 kHz frame; a corrupt payload is concealed and reported.
    fn decode(&mut self, payload: &[u8], out: &mut [i16; FRAME_SAMPLES]) -> bool {
        match self {
            Self::G711 {
                codec,
                concealer,
                upsample,
                pcm,
            } => {
                let n = codec.decode(payload, &mut pcm[..]);
                if let Some(rest) = pcm.get_mut(n..) {
                    rest.fill(0);
                }
                concealer.good(&pcm[..]);
                upsample.process(&pcm[..], out).is_ok()
            }
            Self::Opus(decoder) => decoder.decode(payload, out).is_ok(),
            Self::G722 { codec, concealer } => {
                let decoded = codec.decode(payload, out);
                if let Some(rest) = out.get_mut(decoded.as_ref().map_or(0, |n| *n)..) {
                    rest.fill(0);
                }
                concealer.good(&out[..]);
                decoded.is_ok()
            }
        }
    }

    fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16; FRAME_SAMPLES]) {
        let done = match self {
            Self::G711 {
                concealer,
                upsample,
                pcm,
                ..
            } => {
                concealer.conceal(&mut pcm[..]);
                upsample.process(&pcm[..], out).is_ok()
            }
            Self::Opus(decoder) => decoder.recover(next, out).is_ok(),
            Self::G722 { concealer, .. } => {
                concealer.conceal(&mut out[..]);
                true
            }
        };
        if !done {
            out.fill(0);
        }
    }
}

impl Encoder {
    fn new(codec: MediaCodec) -> Result<Self, MediaError> {
        Ok(match codec {
            MediaCodec::Pcmu | MediaCodec::Pcma => Self::G711 {
                codec: g711(codec),
                downsample: Box::new(Resampler::new(SPEECH_RATE, 8000)?),
                pcm: Box::new([0; 160]),
            },
            MediaCodec::Opus => Self::Opus(OpusEncoder::new(SPEECH_RATE)?),
            MediaCodec::G722 => Self::G722(Box::default()),
        })
    }

    fn encode(&mut self, frame: &[i16; FRAME_SAMPLES], out: &mut [u8]) -> Option<usize> {
        match self {
            Self::G711 {
                codec,
                downsample,
                pcm,
            } => {
                downsample.process(frame, &mut pcm[..]).ok()?;
                Some(codec.encode(&pcm[..], out))
            }
            Self::Opus(encoder) => encoder.encode(frame, out).ok(),
            Self::G722(encoder) => encoder.encode(frame, out).ok(),
        }
    }
}

/// One call's media state.
pub struct CallMedia {
    config: MediaConfig,
    remote: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    latched: bool,
    /// The far end's address as the SDP (or the latest re-offer) gave it.
    signalled: Option<SocketAddr>,
    sending: bool,
    receiving: bool,
    samples_per_frame: u32,
    /// The call's SRTP contexts, when it is SRTP.
    srtp: Option<SrtpSession>,
    receiver: RtpReceiver,
    jitter: JitterBuffer,
    dtmf_in: DtmfReceiver,
    dtmf_out: DtmfSender,
    rtcp: RtcpSession,
    sender: RtpSender,
    sent_since_report: bool,
    decoder: Decoder,
    encoder: Encoder,
    to_speech: rtrb::Producer<AudioFrame>,
    from_agent: rtrb::Consumer<AudioFrame>,
    /// Frames taken from `from_agent`, sent or discarded (the ordinal of the last one).
    outbound_taken: u64,
    notify: Arc<Notify>,
    /// A frame went into the speech ring and the loop has not been woken for it.
    speech_due: bool,
    counters: Arc<RingCounters>,
    recorder: Option<Recorder>,
    /// A bridged transfer's splice: what is sent instead of the agent's audio, and where
    /// inbound frames are copied.
    splice: Option<Spliced>,
    recording_done: Option<oneshot::Receiver<RecordingOutcome>>,
    /// The agent's frame of this tick, for the recording's second channel.
    recorded_agent: [i16; FRAME_SAMPLES],
    /// Ticks the recording stays silent for (a key press being masked).
    masked_ticks: u32,
    events: VecDeque<MediaEvent>,
    last_arrival: Instant,
    timed_out: bool,
    bye_reported: bool,
    last_audio: Option<(u64, u32)>,
    noise: u32,
    stats: MediaStats,
    packet: [u8; MAX_DATAGRAM],
    payload: [u8; MAX_DATAGRAM],
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("ssrc", &self.config.ssrc)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl CallMedia {
    /// A call's media starting at `now` (when the wall clock read `wallclock`), with the speech
    /// loop's ends of its rings. When `config.record` names a file its writer starts now (a
    /// file that cannot be created leaves the call unrecorded, its outcome `Failed`).
    pub fn new(
        config: MediaConfig,
        now: Instant,
        wallclock: SystemTime,
    ) -> Result<(Self, FrameReceiver, FrameSender), MediaError> {
        let ((to_speech, from_agent), (inbound, outbound), notify, counters) = call_rings(now);
        // A recording that cannot start leaves the call unrecorded, never without media.
        let (recorder, recording_done) = match config.record.as_ref().map(Recorder::start) {
            Some(Ok((recorder, done))) => (Some(recorder), Some(done)),
            Some(Err(error)) => {
                tracing::error!(%error, "the call is not recorded");
                let (failed, done) = oneshot::channel();
                let _ = failed.send(RecordingOutcome::Failed(error.to_string()));
                (None, Some(done))
            }
            None => (None, None),
        };
        let clock = config.codec.clock_rate();
        let remote_rtcp = config
            .remote_rtcp
            .or_else(|| config.remote.map(|r| rtcp_address(r, config.rtcp_mux)));
        let media = Self {
            remote: config.remote,
            remote_rtcp,
            latched: false,
            signalled: config.remote,
            sending: true,
            receiving: true,
            samples_per_frame: clock / 50,
            srtp: config.srtp.as_ref().map(SrtpSession::new),
            receiver: RtpReceiver::new(clock).with_telephone_event(config.telephone_event),
            jitter: JitterBuffer::new(Duration::from_millis(20), clock, Duration::from_millis(300)),
            dtmf_in: DtmfReceiver::new(clock),
            dtmf_out: DtmfSender::new(clock, Duration::from_millis(100), Duration::from_millis(60)),
            rtcp: RtcpSession::new(config.ssrc, &config.cname, now, wallclock),
            sender: RtpSender::new(
                config.ssrc,
                config.initial_sequence,
                config.initial_timestamp,
                config.send_payload_type,
            ),
            sent_since_report: false,
            decoder: Decoder::new(config.codec)?,
            encoder: Encoder::new(config.codec)?,
            to_speech,
            from_agent,
            outbound_taken: 0,
            notify,
            speech_due: false,
            counters,
            recorder,
            splice: None,
            recording_done,
            recorded_agent: [0; FRAME_SAMPLES],
            masked_ticks: 0,
            events: VecDeque::with_capacity(16),
            last_arrival: now,
            timed_out: false,
            bye_reported: false,
            last_audio: None,
            noise: config.ssrc | 1,
            stats: MediaStats {
                peak_level_dbfs: -100.0,
                ..MediaStats::default()
            },
            packet: [0; MAX_DATAGRAM],
            payload: [0; MAX_DATAGRAM],
            config,
        };
        Ok((media, inbound, outbound))
    }

    /// Resolves once the recording file is complete (after this call's media is dropped);
    /// `None` when not recording or already taken.
    pub fn take_recording_done(&mut self) -> Option<oneshot::Receiver<RecordingOutcome>> {
        self.recording_done.take()
    }

    /// Takes in one datagram from `source` that arrived at `now` on the RTP socket (or the
    /// RTCP socket when `on_rtcp_socket`); on an SRTP call, once it is authenticated and
    /// decrypted.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
        on_rtcp_socket: bool,
    ) {
        let rtcp = on_rtcp_socket || is_rtcp(datagram);
        if self.srtp.is_some() && !rtcp && self.is_foreign(source) {
            // Dropped before the crypto, as cheaply as in clear.
            self.stats.foreign += 1;
            return;
        }
        let Some(srtp) = self.srtp.as_mut() else {
            self.receive_clear(now, source, datagram, rtcp);
            return;
        };
        let mut clear = [0u8; MAX_DATAGRAM];
        let Some(buf) = clear.get_mut(..datagram.len()) else {
            self.stats.malformed += 1;
            return;
        };
        buf.copy_from_slice(datagram);
        let opened = if rtcp {
            srtp.unprotect_rtcp(buf)
        } else {
            srtp.unprotect_rtp(buf)
        };
        match opened {
            Ok(len) => {
                let clear = buf.get(..len).unwrap_or_default();
                self.receive_clear(now, source, clear, rtcp);
            }
            Err(_) if rtcp => self.stats.rtcp_malformed += 1,
            Err(RtpError::Replayed) => self.stats.srtp_replayed += 1,
            Err(RtpError::Unauthenticated) => self.stats.srtp_unauthenticated += 1,
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// [`receive`](Self::receive) for a datagram in clear: RTCP (`rtcp`) or RTP.
    fn receive_clear(&mut self, now: Instant, source: SocketAddr, datagram: &[u8], rtcp: bool) {
        if rtcp {
            if self.rtcp.handle_packet(now, datagram).is_err() {
                self.stats.rtcp_malformed += 1;
            }
            if self.rtcp.remote().bye && !self.bye_reported {
                self.bye_reported = true;
                self.events.push_back(MediaEvent::FarEndBye);
            }
            return;
        }
        if self.is_foreign(source) {
            self.stats.foreign += 1;
            return;
        }
        let Ok(rtp) = parse(datagram) else {
            self.stats.malformed += 1;
            return;
        };
        let audio = rtp.payload_type == self.config.receive_payload_type;
        let event = Some(rtp.payload_type) == self.config.telephone_event;
        let noise = rtp.payload_type == COMFORT_NOISE;
        if !(audio || event || noise) {
            self.stats.unknown_payload += 1;
            return;
        }
        if !self.latched || Some(source) != self.remote {
            // Symmetric RTP: answer where the media really comes from (or, once the signalled
            // address itself sends, there).
            self.remote = Some(source);
            if self.config.remote_rtcp.is_none() {
                self.remote_rtcp = Some(rtcp_address(source, self.config.rtcp_mux));
            }
            self.latched = true;
        }
        self.last_arrival = now;
        self.timed_out = false;
        let sequence = match self.receiver.on_packet(now, &rtp) {
            Arrival::InOrder { extended_sequence } | Arrival::Late { extended_sequence } => {
                extended_sequence
            }
            Arrival::Resync => {
                self.jitter.reset();
                self.last_audio = None;
                u64::from(rtp.sequence)
            }
        };
        if event {
            self.dtmf_in.handle_packet(now, &rtp);
            self.take_dtmf_events(now);
            // A silent placeholder where the audio would have been, on the audio timeline.
            if let Some((audio_sequence, audio_timestamp)) = self.last_audio
                && sequence > audio_sequence
            {
                let frames = (sequence - audio_sequence) as u32;
                let placeholder = RtpPacket {
                    timestamp: audio_timestamp
                        .wrapping_add(frames.wrapping_mul(self.samples_per_frame)),
                    payload: &[],
                    ..rtp
                };
                self.jitter.push(now, sequence, &placeholder);
            }
            return;
        }
        self.last_audio = Some((sequence, rtp.timestamp));
        self.jitter.push(now, sequence, &rtp);
    }

    /// Whether RTP from `source` is someone else's: the call latched another source, and
    /// `source` is not the address the signalling named.
    fn is_foreign(&self, source: SocketAddr) -> bool {
        self.latched && Some(source) != self.remote && Some(source) != self.signalled
    }

    /// The call was answered at `now`: the RTP timeout counts from here (early media may have
    /// stopped long before, while the phone rang).
    pub fn answered(&mut self, now: Instant) {
        self.last_arrival = now;
        self.timed_out = false;
    }

    /// Applies a new offer/answer: hold, resume, or a new far-end address.
    pub fn redirect(&mut self, direction: Direction) {
        if direction.sending && !self.sending {
            self.sender.talkspurt();
        }
        self.sending = direction.sending;
        if direction.receiving && !self.receiving {
            self.timed_out = false;
        }
        self.receiving = direction.receiving;
        if let Some(to) = direction.remote
            && Some(to) != self.remote
        {
            // A new address from a re-INVITE: send there and latch afresh.
            self.remote = Some(to);
            self.signalled = Some(to);
            if self.config.remote_rtcp.is_none() {
                self.remote_rtcp = Some(rtcp_address(to, self.config.rtcp_mux));
            }
            self.latched = false;
        }
    }

    /// Splices the call ([`crate::splice`]): its feed goes to the wire instead of the agent's
    /// audio, its inbound frames are copied where the splice says; `None` gives the wire back
    /// to the agent.
    pub fn splice(&mut self, splice: Option<Splice>) {
        self.splice = splice.map(Spliced::new);
    }

    /// Queues RFC 4733 digits to send.
    pub fn send_dtmf(&mut self, digits: &str) -> Result<(), MediaError> {
        if self.config.telephone_event.is_none() {
            return Err(MediaError::NoTelephoneEvent);
        }
        self.dtmf_out
            .send(digits)
            .map_err(|digit| MediaError::NotDtmf { digit })
    }

    /// The next event for the call.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// Statistics so far.
    pub fn stats(&self) -> MediaStats {
        let mut stats = self.stats;
        let r = self.receiver.stats();
        stats.packets_in = r.total_packets;
        stats.lost = r.lost;
        stats.jitter_ms = r.jitter_ms;
        let j = self.jitter.stats();
        stats.concealed_frames = j.lost;
        stats.late_packets = j.late;
        stats.jitter_buffer_ms = j.target_frames * 20;
        stats.inbound_overflow += self.counters.inbound_overflow.load(Ordering::Relaxed);
        stats.outbound_overflow = self.counters.outbound_overflow.load(Ordering::Relaxed);
        stats.outbound_underflow = self.counters.outbound_underflow.load(Ordering::Relaxed);
        let remote = self.rtcp.remote();
        stats.remote_fraction_lost = remote.fraction_lost;
        stats.round_trip_ms = remote.round_trip.map(|d| d.as_secs_f64() * 1000.0);
        stats.rtcp_reports_in = remote.reports;
        stats.recording_dropped = self.recorder.as_ref().map_or(0, Recorder::dropped);
        stats
    }

    fn comfort_noise(&mut self, level: u8, out: &mut [i16; FRAME_SAMPLES]) {
        // RFC 3389: the level byte is -dBov; uniform noise of that RMS.
        let rms = 32767.0 * 10f32.powf(-f32::from(level.min(127)) / 20.0);
        let peak = rms * 3f32.sqrt();
        for s in out.iter_mut() {
            self.noise = self
                .noise
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let unit = (self.noise >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            *s = (unit * peak) as i16;
        }
    }

    /// Runs one 20 ms tick at `now`, handing packets to send to `send`, and wakes the speech
    /// loop if a frame went into its ring.
    pub fn tick(&mut self, now: Instant, send: &mut dyn FnMut(Transmit<'_>)) -> TickTimes {
        let outbound_queued = self.tick_outbound(now, send);
        let inbound_arrival = self.tick_inbound(now, send);
        self.wake_speech_loop();
        TickTimes {
            inbound_arrival,
            outbound_queued,
        }
    }

    /// The outbound half of [`tick`](Self::tick) at `now`: one agent frame (or silence) to the
    /// wire. Returns when the agent queued the frame sent. A driver serving many calls sends
    /// every call's packet first, so how long the reads and the inbound halves take does not
    /// move the calls' send times from one tick to the next.
    pub fn tick_outbound(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(Transmit<'_>),
    ) -> Option<Instant> {
        if self.counters.clear_outbound.swap(false, Ordering::AcqRel) {
            let queued = self.from_agent.slots();
            if let Ok(chunk) = self.from_agent.read_chunk(queued) {
                chunk.commit_all();
            }
            self.outbound_taken += queued as u64;
            self.stats.cleared_frames += queued as u64;
            self.counters.wire.cleared(now);
        }
        let (mut agent, mut queued) = match self.from_agent.pop() {
            Ok(frame) => {
                self.outbound_taken += 1;
                self.counters.wire.taken(self.outbound_taken, now);
                (frame.samples, Some(frame.at))
            }
            Err(_) => {
                self.counters
                    .outbound_underflow
                    .fetch_add(1, Ordering::Relaxed);
                ([0; FRAME_SAMPLES], None)
            }
        };
        if let Some(splice) = self.splice.as_mut() {
            // The agent's frame is dropped: the splice's feed goes out instead.
            queued = None;
            if !splice.outbound(&mut agent) {
                self.stats.relay_underflow += 1;
            }
        }
        let sent = self.send_tick(&agent, send);
        if self.recorder.is_some() {
            // What the caller heard: silence on hold or while a key press went out instead.
            self.recorded_agent = if sent { agent } else { [0; FRAME_SAMPLES] };
        }
        queued
    }

    /// The inbound half of [`tick`](Self::tick) at `now`, after the sockets were read: timers,
    /// one frame from the jitter buffer into the speech ring (its speech loop is woken by
    /// [`wake_speech_loop`](Self::wake_speech_loop), which a driver serving many calls leaves
    /// to another thread: waking a task takes locks the tokio side also holds),
    /// the recording, the RTCP report. Returns the arrival of the packet whose frame went
    /// into the ring.
    pub fn tick_inbound(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(Transmit<'_>),
    ) -> Option<Instant> {
        let mut inbound_arrival = None;
        self.dtmf_in.handle_timeout(now);
        self.take_dtmf_events(now);
        let silent_for = now.saturating_duration_since(self.last_arrival);
        if self.receiving && !self.timed_out && silent_for >= self.config.rtp_timeout {
            self.timed_out = true;
            self.events.push_back(MediaEvent::RtpTimeout { silent_for });
        }

        let mut caller = AudioFrame::silence(now);
        let mut produced = true;
        let mut noise_level = None;
        match self.jitter.pop(now) {
            Playout::Frame {
                payload,
                payload_type,
                arrival,
                ..
            } => {
                caller.at = arrival;
                if payload_type == self.config.receive_payload_type {
                    if !self.decoder.decode(payload, &mut caller.samples) {
                        self.stats.undecodable += 1;
                        self.decoder.conceal(None, &mut caller.samples);
                    }
                    let level = level_dbfs(&caller.samples);
                    if level > -40.0 {
                        self.stats.voiced_frames_in += 1;
                    }
                    self.stats.peak_level_dbfs = self.stats.peak_level_dbfs.max(level);
                } else if payload_type == COMFORT_NOISE {
                    noise_level = Some(payload.first().copied().unwrap_or(127));
                }
            }
            Playout::Lost => {
                let next = self.jitter.peek_next();
                self.decoder.conceal(next, &mut caller.samples);
            }
            Playout::Empty => produced = false,
        }
        if let Some(level) = noise_level {
            self.stats.comfort_noise_frames += 1;
            self.comfort_noise(level, &mut caller.samples);
        }
        let mut to_speech = produced;
        if produced && let Some(splice) = self.splice.as_mut() {
            if !splice.inbound(&caller) {
                self.stats.relay_overflow += 1;
            }
            to_speech = !splice.relaying();
        }
        if to_speech {
            if self.to_speech.push(caller).is_ok() {
                self.speech_due = true;
                inbound_arrival = Some(caller.at);
            } else {
                self.stats.inbound_overflow += 1;
            }
        }
        if let Some(recorder) = self.recorder.as_mut() {
            let frame = if self.masked_ticks > 0 {
                self.masked_ticks -= 1;
                StereoFrame::SILENCE
            } else {
                StereoFrame {
                    caller: if produced {
                        caller.samples
                    } else {
                        [0; FRAME_SAMPLES]
                    },
                    agent: self.recorded_agent,
                }
            };
            recorder.push(frame);
        }

        if now >= self.rtcp.poll_timeout() {
            self.send_report(now, send);
        }
        inbound_arrival
    }

    /// Wakes the speech loop if a tick put a frame in its ring since the last wake.
    pub fn wake_speech_loop(&mut self) {
        if let Some(notify) = self.take_speech_due() {
            notify.notify_one();
        }
    }

    /// What to wake if a tick put a frame in the speech ring since the last wake, for a driver
    /// that wakes it from another thread ([`crate::handoff`]).
    pub(crate) fn take_speech_due(&mut self) -> Option<&Arc<Notify>> {
        std::mem::take(&mut self.speech_due).then_some(&self.notify)
    }

    /// Counts and forwards the RFC 4733 receiver's events.
    fn take_dtmf_events(&mut self, now: Instant) {
        while let Some(event) = self.dtmf_in.poll_event() {
            self.stats.dtmf_events += 1;
            if self.config.record.as_ref().is_some_and(|r| r.mask_dtmf) {
                self.masked_ticks = match event {
                    DtmfEvent::Started { .. } => u32::MAX,
                    DtmfEvent::Ended { .. } => MASK_TAIL_TICKS,
                };
            }
            if matches!(event, DtmfEvent::Ended { .. }) {
                self.stats.dtmf_digits += 1;
            }
            self.events.push_back(MediaEvent::Dtmf { event, at: now });
        }
    }

    /// Sends the tick's packet: the agent's audio, or an RFC 4733 event in its place, or
    /// nothing on hold. Whether the agent's audio went out (what the recording keeps of it).
    fn send_tick(
        &mut self,
        agent: &[i16; FRAME_SAMPLES],
        send: &mut dyn FnMut(Transmit<'_>),
    ) -> bool {
        let Some(to) = self.remote.filter(|_| self.sending) else {
            // On hold (or nowhere to send yet): the media clock runs on, nothing is sent.
            self.sender.skip(self.samples_per_frame);
            return false;
        };
        if let (Some(pt), Some(event)) = (
            self.config.telephone_event,
            self.dtmf_out.tick(self.sender.timestamp()),
        ) {
            if let Ok(n) = self.sender.write_event(
                pt,
                event.marker,
                event.timestamp,
                &event.payload,
                room(&mut self.packet, self.srtp.is_some()),
            ) && self.transmit(n, to, false, send)
            {
                self.stats.packets_out += 1;
                self.stats.dtmf_packets_out += 1;
                self.sent_since_report = true;
            }
            self.sender.skip(self.samples_per_frame);
            return false;
        }
        let Some(n) = self.encoder.encode(agent, &mut self.payload) else {
            self.sender.skip(self.samples_per_frame);
            return false;
        };
        let payload = self.payload.get(..n).unwrap_or_default();
        if let Ok(len) = self.sender.write(
            payload,
            self.samples_per_frame,
            room(&mut self.packet, self.srtp.is_some()),
        ) && self.transmit(len, to, false, send)
        {
            self.stats.packets_out += 1;
            self.sent_since_report = true;
        }
        true
    }

    fn send_report(&mut self, now: Instant, send: &mut dyn FnMut(Transmit<'_>)) {
        let sender = self.sent_since_report.then(|| SenderInfo {
            rtp_timestamp: self.sender.timestamp(),
            packets: self.sender.packets() as u32,
            octets: self.sender.octets() as u32,
        });
        self.sent_since_report = false;
        let block = self.receiver.report_block();
        let Ok(n) = self.rtcp.write_report(
            now,
            sender,
            block,
            room(&mut self.packet, self.srtp.is_some()),
        ) else {
            return;
        };
        if let Some(to) = self.remote_rtcp
            && self.transmit(n, to, true, send)
        {
            self.stats.rtcp_reports_out += 1;
        }
    }

    /// Sends an RTCP BYE (the call's media is ending).
    pub fn bye(&mut self, send: &mut dyn FnMut(Transmit<'_>)) {
        if let Some(to) = self.remote_rtcp
            && let Ok(n) = self
                .rtcp
                .write_bye(room(&mut self.packet, self.srtp.is_some()))
        {
            self.transmit(n, to, true, send);
        }
    }

    /// Sends the RTP (or, `rtcp`, RTCP) packet in the packet buffer's first `len` bytes to
    /// `to`, protected on an SRTP call; whether it went. A packet that cannot be protected is
    /// counted and not sent.
    fn transmit(
        &mut self,
        len: usize,
        to: SocketAddr,
        rtcp: bool,
        send: &mut dyn FnMut(Transmit<'_>),
    ) -> bool {
        let len = match self.srtp.as_mut() {
            None => len,
            Some(srtp) => {
                let sealed = if rtcp {
                    srtp.protect_rtcp(&mut self.packet, len)
                } else {
                    srtp.protect_rtp(&mut self.packet, len)
                };
                match sealed {
                    Ok(len) => len,
                    Err(_) => {
                        self.stats.srtp_unsent += 1;
                        return false;
                    }
                }
            }
        };
        send(Transmit {
            to,
            rtcp: rtcp && !self.config.rtcp_mux,
            data: self.packet.get(..len).unwrap_or_default(),
        });
        true
    }
}

/// The part of `packet` a packet may take: all of it, or on an SRTP call (`srtp`) all but
/// the room protecting adds.
fn room(packet: &mut [u8], srtp: bool) -> &mut [u8] {
    let room = packet
        .len()
        .saturating_sub(if srtp { MAX_OVERHEAD } else { 0 });
    packet.get_mut(..room).unwrap_or_default()
}

/// Where RTCP goes when the SDP did not say: the same address with rtcp-mux, else port + 1.
fn rtcp_address(rtp: SocketAddr, mux: bool) -> SocketAddr {
    if mux {
        rtp
    } else {
        SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
    }
}

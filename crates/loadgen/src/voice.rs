//! One simulated callee's audio, sans-IO: speech-like talkspurts sent on a 20 ms clock, and a
//! meter of what comes back (packets, interarrival jitter, gaps beyond the 20 ms clock, late
//! packets, voiced audio, and whether each talkspurt was answered by audio — what an echoing
//! agent must do).
//!
//! The meter also times turns on the wire: from the end of each talkspurt (the send time of its
//! last packet) to the first voiced packet back, when the far end was silent as the talkspurt
//! ended; and barge-ins: from the start of a talkspurt (the send time of its first packet) that
//! began while the far end was speaking, to the first silent packet back.
//!
//! The talkspurts are a generated voice (a 140 Hz buzz with harmonics under a syllable
//! envelope) or, with [`CallVoice::with_source`], consecutive stretches of a recording
//! ([`read_wav`]). With [`CallVoice::with_digits`] the callee also presses keys as RFC 4733
//! telephone-events in its first pause.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_codec::{G711, G711Law, OpusDecoder, OpusEncoder, Resampler};
use dialtone_rtp::dtmf::DtmfSender;
use dialtone_rtp::{Arrival, RtpReceiver, RtpSender};
use dialtone_sdp::AudioCodec;

use crate::LoadgenError;

/// Samples in 20 ms at 8 kHz, the simulator's audio rate.
pub const FRAME: usize = 160;
/// Length of a talkspurt and of the silence after it.
pub const TALK: Duration = Duration::from_millis(1200);
/// Silence between talkspurts.
pub const PAUSE: Duration = Duration::from_millis(2300);
/// An arrival later than this after the previous one is a gap (20 ms clock + 10 ms).
pub const GAP: Duration = Duration::from_millis(30);

/// Gaps a call keeps the times of; a call with more is judged by these and the count.
pub const GAP_SPANS_KEPT: usize = 16;
/// After a talkspurt ends, audio coming back within this window answers it.
pub const ANSWER_WINDOW: (Duration, Duration) =
    (Duration::from_millis(200), Duration::from_millis(2300));

/// When the digits start: this long into the first pause.
pub const DIGITS_AFTER_TALK: Duration = Duration::from_millis(300);

/// Level above which a frame is voiced, dBFS.
const VOICED_DBFS: f64 = -40.0;

/// The far end is speaking at an instant when its last voiced packet came within this.
const SPEAKING_WITHIN: Duration = Duration::from_millis(40);

/// Turns and barge-ins a call keeps the times of.
pub const TIMINGS_KEPT: usize = 64;

/// Samples after which the generated voice repeats: 0.25 s, a whole number of cycles of the
/// envelope (4 Hz) and of every partial (140, 280, 420 Hz).
const VOICE_PERIOD: usize = 2000;

/// The speech-like signal at sample `n` (8 kHz) of a talkspurt: a 140 Hz voice with two
/// harmonics under a 4 Hz syllable envelope.
fn voice_wave(n: usize) -> f64 {
    let t = n as f64 / 8000.0;
    let tau = std::f64::consts::TAU;
    let envelope = 0.55 + 0.45 * (tau * 4.0 * t).sin();
    let wave = 0.6 * (tau * 140.0 * t).sin()
        + 0.3 * (tau * 280.0 * t).sin()
        + 0.1 * (tau * 420.0 * t).sin();
    9000.0 * envelope * wave
}

/// [`voice_wave`] as samples, computed once for a period; a thousand callees read it.
fn voice_sample(n: usize) -> i16 {
    static TABLE: std::sync::OnceLock<Box<[i16]>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..VOICE_PERIOD).map(|n| voice_wave(n) as i16).collect());
    table.get(n % VOICE_PERIOD).copied().unwrap_or(0)
}

enum Encoder {
    G711(G711),
    Opus(Box<OpusEncoder>),
}

enum Decoder {
    G711(G711),
    Opus(Box<OpusDecoder>),
}

/// What every callee plays: the recording its talkspurts come from (generated voice when
/// none) and the digits it presses.
#[derive(Debug, Clone, Default)]
pub struct VoiceScript {
    /// 8 kHz samples ([`read_wav`]).
    pub source: Option<Arc<[i16]>>,
    /// RFC 4733 digits pressed in the first pause (none when empty, or when the call did not
    /// negotiate telephone-event).
    pub digits: String,
}

impl VoiceScript {
    /// `voice` as this script has it play, on a call whose telephone-event payload type is
    /// `telephone_event`.
    pub fn apply(&self, mut voice: CallVoice, telephone_event: Option<u8>) -> CallVoice {
        if let Some(source) = &self.source {
            voice = voice.with_source(source.clone());
        }
        match telephone_event {
            Some(pt) => voice.with_digits(&self.digits, pt),
            None => voice,
        }
    }
}

/// What came back on one call.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CallMeasure {
    /// RTP packets sent.
    pub packets_out: u64,
    /// RTP packets received.
    pub packets_in: u64,
    /// Packets the sender's sequence numbers say were lost.
    pub lost: u64,
    /// Packets behind the highest sequence seen.
    pub late: u64,
    /// RFC 3550 interarrival jitter at the end, ms.
    pub jitter_ms: f64,
    /// Arrivals more than 30 ms after the previous one.
    pub gaps: u64,
    /// The longest interval between two arrivals, ms.
    pub max_interval_ms: f64,
    /// When it ended, ms after the call's audio started.
    pub max_interval_at_ms: f64,
    /// Received frames above -40 dBFS.
    pub voiced_in: u64,
    /// Talkspurts sent (complete ones).
    pub talkspurts: u64,
    /// Talkspurts answered by voiced audio within the window after them.
    pub answered_talkspurts: u64,
    /// Datagrams that were not RTP of the negotiated payload.
    pub malformed: u64,
    /// RFC 4733 digits sent.
    pub digits_sent: u64,
    /// The first RTP packet of the call's audio, ms after the call's audio started (the
    /// answer): how long the far end took to start its media.
    pub first_packet_ms: Option<f64>,
    /// Per talkspurt that ended with the far end silent and was answered within the answer
    /// window: its last packet sent → the first voiced packet back, ms (the first
    /// [`TIMINGS_KEPT`]).
    pub turn_ms: Vec<f64>,
    /// Talkspurts that ended while the far end was still speaking (not timed as turns).
    pub turns_talked_over: u64,
    /// Per talkspurt that started while the far end was speaking: its first packet sent → the
    /// first silent packet back, ms (the first [`TIMINGS_KEPT`]).
    pub barge_in_ms: Vec<f64>,
    /// Talkspurts that started while the far end was speaking and did not silence it before
    /// they ended.
    pub barge_ins_missed: u64,
    /// The first [`GAP_SPANS_KEPT`] gaps: when the packet before each arrived, and the one
    /// after it.
    #[serde(skip)]
    pub gap_spans: Vec<(Instant, Instant)>,
    /// When the first talkspurt's answer window closed without an answer.
    #[serde(skip)]
    pub first_miss_at: Option<Instant>,
}

/// One call's audio both ways.
pub struct CallVoice {
    sender: RtpSender,
    encoder: Encoder,
    decoder: Decoder,
    receiver: RtpReceiver,
    timestamp_step: u32,
    receive_payload_type: u8,
    started: Instant,
    sample: usize,
    last_arrival: Option<Instant>,
    /// Ends of talkspurts still waiting for an answer.
    awaiting: Vec<Instant>,
    /// The end of the last talkspurt, while its turn waits for voiced audio.
    turn_from: Option<Instant>,
    /// The start of a talkspurt that began over the far end's speech, until it goes silent.
    barge_from: Option<Instant>,
    /// When the last voiced packet came.
    last_voiced: Option<Instant>,
    measure: CallMeasure,
    pcm: Vec<i16>,
    /// The recording the talkspurts come from (8 kHz), if not generated.
    source: Option<Arc<[i16]>>,
    /// Samples of `source` used so far.
    source_at: usize,
    /// Digits to press, the telephone-event payload type, and the sender once they started.
    digits: Option<(String, u8)>,
    dtmf: Option<(DtmfSender, u8)>,
}

impl std::fmt::Debug for CallVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallVoice")
            .field("measure", &self.measure)
            .finish_non_exhaustive()
    }
}

impl CallVoice {
    /// Audio for a call negotiated as `codec` (send and receive payload types), from `now`.
    pub fn new(
        now: Instant,
        codec: AudioCodec,
        send_payload_type: u8,
        receive_payload_type: u8,
        ssrc: u32,
    ) -> Result<Self, LoadgenError> {
        let (encoder, decoder, timestamp_step) = match codec {
            AudioCodec::Opus => (
                Encoder::Opus(Box::new(OpusEncoder::new(8000)?)),
                Decoder::Opus(Box::new(OpusDecoder::new(8000)?)),
                960,
            ),
            AudioCodec::Pcma => (
                Encoder::G711(G711::new(G711Law::A)),
                Decoder::G711(G711::new(G711Law::A)),
                160,
            ),
            _ => (
                Encoder::G711(G711::new(G711Law::Mu)),
                Decoder::G711(G711::new(G711Law::Mu)),
                160,
            ),
        };
        let clock = if codec == AudioCodec::Opus {
            48_000
        } else {
            8000
        };
        Ok(Self {
            sender: RtpSender::new(ssrc, (ssrc >> 16) as u16, ssrc, send_payload_type),
            encoder,
            decoder,
            receiver: RtpReceiver::new(clock),
            timestamp_step,
            receive_payload_type,
            started: now,
            sample: 0,
            last_arrival: None,
            awaiting: Vec::new(),
            turn_from: None,
            barge_from: None,
            last_voiced: None,
            measure: CallMeasure::default(),
            pcm: vec![0; FRAME * 6],
            source: None,
            source_at: 0,
            digits: None,
            dtmf: None,
        })
    }

    /// Talkspurts from `samples` (8 kHz, played on from where the last talkspurt stopped, and
    /// looped) instead of the generated voice.
    pub fn with_source(mut self, samples: Arc<[i16]>) -> Self {
        self.source = (!samples.is_empty()).then_some(samples);
        self
    }

    /// Presses `digits` as RFC 4733 events on `payload_type` in the first pause.
    pub fn with_digits(mut self, digits: &str, payload_type: u8) -> Self {
        self.digits = (!digits.is_empty()).then(|| (digits.to_owned(), payload_type));
        self
    }

    /// The next telephone-event packet, once the digits are due; audio pauses meanwhile.
    fn next_event(&mut self, at: Duration, out: &mut [u8]) -> Option<Result<usize, LoadgenError>> {
        if at >= TALK + DIGITS_AFTER_TALK
            && let Some((digits, payload_type)) = self.digits.take()
        {
            let mut sender =
                DtmfSender::new(8000, Duration::from_millis(100), Duration::from_millis(60));
            if sender.send(&digits).is_ok() {
                self.measure.digits_sent = digits.chars().count() as u64;
                self.dtmf = Some((sender, payload_type));
            }
        }
        let (sender, payload_type) = self.dtmf.as_mut()?;
        let Some(event) = sender.tick(self.sender.timestamp()) else {
            if sender.is_idle() {
                self.dtmf = None;
            }
            return None;
        };
        let written = self
            .sender
            .write_event(
                *payload_type,
                event.marker,
                event.timestamp,
                &event.payload,
                out,
            )
            .map_err(LoadgenError::from);
        self.sender.skip(self.timestamp_step);
        Some(written)
    }

    /// The next 20 ms packet, written into `out`; returns its length. Call it on a 20 ms clock.
    pub fn next_packet(&mut self, now: Instant, out: &mut [u8]) -> Result<usize, LoadgenError> {
        let period = TALK + PAUSE;
        let at = Duration::from_micros((self.sample as u64 / 8) * 1000);
        let in_cycle = Duration::from_nanos((at.as_nanos() % period.as_nanos()) as u64);
        let talking = in_cycle < TALK;
        let mut frame = [0i16; FRAME];
        if talking {
            match &self.source {
                Some(source) => {
                    for s in frame.iter_mut() {
                        *s = source
                            .get(self.source_at % source.len())
                            .copied()
                            .unwrap_or(0);
                        self.source_at += 1;
                    }
                }
                None => {
                    for (i, s) in frame.iter_mut().enumerate() {
                        *s = voice_sample(self.sample + i);
                    }
                }
            }
        }
        let next_in_cycle = in_cycle + Duration::from_millis(20);
        if talking && in_cycle < Duration::from_millis(20) {
            self.talkspurt_starts(now);
        }
        if talking && next_in_cycle >= TALK {
            self.measure.talkspurts += 1;
            self.awaiting.push(now);
            self.talkspurt_ends(now);
        }
        self.sample += FRAME;
        if let Some(event) = self.next_event(at, out) {
            self.measure.packets_out += 1;
            return event;
        }
        let mut payload = [0u8; 400];
        let n = match &mut self.encoder {
            Encoder::G711(g) => g.encode(&frame, &mut payload),
            Encoder::Opus(o) => o.encode(&frame, &mut payload)?,
        };
        let encoded = payload.get(..n).unwrap_or_default();
        let written = self.sender.write(encoded, self.timestamp_step, out)?;
        self.measure.packets_out += 1;
        Ok(written)
    }

    /// Whether the far end was speaking at `now`.
    fn far_end_speaking(&self, now: Instant) -> bool {
        self.last_voiced
            .is_some_and(|v| now.saturating_duration_since(v) <= SPEAKING_WITHIN)
    }

    /// The first packet of a talkspurt is sent at `now`: over the far end's speech, a barge-in.
    fn talkspurt_starts(&mut self, now: Instant) {
        if self.barge_from.take().is_some() {
            self.measure.barge_ins_missed += 1;
        }
        if self.far_end_speaking(now) {
            self.barge_from = Some(now);
        }
    }

    /// The last packet of a talkspurt is sent at `now`: a turn, if the far end is silent.
    fn talkspurt_ends(&mut self, now: Instant) {
        if self.barge_from.take().is_some() {
            self.measure.barge_ins_missed += 1;
        }
        if self.far_end_speaking(now) {
            self.measure.turns_talked_over += 1;
            self.turn_from = None;
        } else {
            self.turn_from = Some(now);
        }
    }

    /// Times the turn or the barge-in under way with a packet of audio that arrived at `now`.
    fn time_turns(&mut self, now: Instant, voiced: bool) {
        let ms = |from: Instant| now.saturating_duration_since(from).as_secs_f64() * 1000.0;
        if voiced && let Some(from) = self.turn_from.take() {
            let m = &mut self.measure;
            if now.saturating_duration_since(from) <= ANSWER_WINDOW.1
                && m.turn_ms.len() < TIMINGS_KEPT
            {
                m.turn_ms.push(ms(from));
            }
        }
        if !voiced && let Some(from) = self.barge_from.take() {
            let m = &mut self.measure;
            if m.barge_in_ms.len() < TIMINGS_KEPT {
                m.barge_in_ms.push(ms(from));
            }
        }
        if voiced {
            self.last_voiced = Some(now);
        }
    }

    /// A datagram that arrived at `now`.
    pub fn receive(&mut self, now: Instant, datagram: &[u8]) {
        let Ok(packet) = dialtone_rtp::parse(datagram) else {
            if !dialtone_rtp::is_rtcp(datagram) {
                self.measure.malformed += 1;
            }
            return;
        };
        if packet.payload_type != self.receive_payload_type {
            // Telephone-events and comfort noise are not the audio measured here.
            return;
        }
        let since_start_ms = now.saturating_duration_since(self.started).as_secs_f64() * 1000.0;
        match self.last_arrival {
            None => self.measure.first_packet_ms = Some(since_start_ms),
            Some(last) => {
                let interval = now.saturating_duration_since(last);
                if interval > GAP {
                    self.measure.gaps += 1;
                    if self.measure.gap_spans.len() < GAP_SPANS_KEPT {
                        self.measure.gap_spans.push((last, now));
                    }
                }
                let ms = interval.as_secs_f64() * 1000.0;
                if ms > self.measure.max_interval_ms {
                    self.measure.max_interval_ms = ms;
                    self.measure.max_interval_at_ms = since_start_ms;
                }
            }
        }
        self.last_arrival = Some(now);
        if let Arrival::Late { .. } = self.receiver.on_packet(now, &packet) {
            return;
        }
        let decoded = match &mut self.decoder {
            Decoder::G711(g) => g.decode(packet.payload, &mut self.pcm),
            Decoder::Opus(o) => o.decode(packet.payload, &mut self.pcm).unwrap_or(0),
        };
        let voiced =
            dialtone_codec::level_dbfs(self.pcm.get(..decoded).unwrap_or_default()) > VOICED_DBFS;
        self.time_turns(now, voiced);
        if voiced {
            self.measure.voiced_in += 1;
            let before = self.awaiting.len();
            self.awaiting.retain(|end| {
                let since = now.saturating_duration_since(*end);
                !(since >= ANSWER_WINDOW.0 && since <= ANSWER_WINDOW.1)
            });
            self.measure.answered_talkspurts += (before - self.awaiting.len()) as u64;
        }
        // Talkspurts whose window has passed stay unanswered.
        let mut missed = None;
        self.awaiting.retain(|end| {
            let open = now.saturating_duration_since(*end) <= ANSWER_WINDOW.1;
            if !open {
                let closed = *end + ANSWER_WINDOW.1;
                missed = Some(missed.map_or(closed, |m: Instant| m.min(closed)));
            }
            open
        });
        if self.measure.first_miss_at.is_none() {
            self.measure.first_miss_at = missed;
        }
    }

    /// The measure so far.
    pub fn measure(&self) -> CallMeasure {
        let stats = self.receiver.stats();
        CallMeasure {
            packets_in: stats.packets,
            lost: stats.lost,
            late: stats.late,
            jitter_ms: stats.jitter_ms,
            ..self.measure.clone()
        }
    }

    /// Talkspurts whose answer window had not closed by `now` (they are not counted as missed).
    pub fn pending_talkspurts(&self, now: Instant) -> u64 {
        self.awaiting
            .iter()
            .filter(|end| now.saturating_duration_since(**end) < ANSWER_WINDOW.1)
            .count() as u64
    }

    /// When this call's audio started.
    pub fn started(&self) -> Instant {
        self.started
    }
}

/// Reads a 16-bit PCM WAV file (mono, or the first channel; 8, 16 or 48 kHz) as 8 kHz samples
/// for [`CallVoice::with_source`].
pub fn read_wav(path: &Path) -> Result<Vec<i16>, LoadgenError> {
    let bytes =
        std::fs::read(path).map_err(LoadgenError::io(format!("reading {}", path.display())))?;
    let bad = |reason: &'static str| LoadgenError::Wav {
        file: path.to_path_buf(),
        reason,
    };
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(bad("not a RIFF/WAVE file"));
    }
    let (mut at, mut format, mut data) = (12usize, None, None);
    while let Some(header) = bytes.get(at..at + 8) {
        let (id, size) = header.split_at(4);
        let size =
            u32::from_le_bytes(size.try_into().map_err(|_| bad("truncated chunk"))?) as usize;
        let body = bytes
            .get(at + 8..at + 8 + size)
            .ok_or(bad("a chunk runs past the end of the file"))?;
        match id {
            b"fmt " => format = Some(body),
            b"data" => data = Some(body),
            _ => {}
        }
        at += 8 + size + size % 2;
    }
    let format = format.ok_or(bad("no fmt chunk"))?;
    let field = |range: std::ops::Range<usize>| -> Result<u32, LoadgenError> {
        let b = format.get(range).ok_or(bad("fmt chunk too short"))?;
        Ok(b.iter()
            .rev()
            .fold(0u32, |v, byte| (v << 8) | u32::from(*byte)))
    };
    let (encoding, channels, rate, bits) =
        (field(0..2)?, field(2..4)?, field(4..8)?, field(14..16)?);
    if encoding != 1 || bits != 16 {
        return Err(bad("only 16-bit PCM is read"));
    }
    let channels = channels.max(1) as usize;
    let samples: Vec<i16> = data
        .ok_or(bad("no data chunk"))?
        .chunks_exact(2 * channels)
        .filter_map(|frame| Some(i16::from_le_bytes([*frame.first()?, *frame.get(1)?])))
        .collect();
    let stages: &[(u32, u32)] = match rate {
        8000 => &[],
        16000 => &[(16000, 8000)],
        48000 => &[(48000, 16000), (16000, 8000)],
        _ => return Err(bad("the rate must be 8, 16 or 48 kHz")),
    };
    let mut pcm = samples;
    for &(from, to) in stages {
        let mut resampler = Resampler::new(from, to)?;
        let (n_in, n_out) = (resampler.input_samples(), resampler.output_samples());
        let mut out = Vec::with_capacity(pcm.len() * n_out / n_in + n_out);
        let mut frame = vec![0i16; n_out];
        for chunk in pcm.chunks(n_in) {
            let mut input = chunk.to_vec();
            input.resize(n_in, 0);
            let n = resampler.process(&input, &mut frame)?;
            out.extend_from_slice(frame.get(..n).unwrap_or_default());
        }
        pcm = out;
    }
    Ok(pcm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_voice_repeats_every_quarter_second() {
        for n in (0..40_000).step_by(7) {
            assert!(
                (f64::from(voice_sample(n)) - voice_wave(n)).abs() < 1.001,
                "sample {n}"
            );
        }
    }

    /// Two voices wired back to back on a virtual clock: B plays back what A sent, 600 ms
    /// late, like an echoing agent; A's talkspurts are all answered and no gap is seen.
    #[test]
    fn an_echo_answers_every_talkspurt_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut a = CallVoice::new(t0, AudioCodec::Pcmu, 0, 0, 11).unwrap();
        let mut b = CallVoice::new(t0, AudioCodec::Pcmu, 0, 0, 22).unwrap();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; 1500];
        for tick in 0..500u64 {
            let now = t0 + Duration::from_millis(20 * tick);
            let n = a.next_packet(now, &mut buf).unwrap();
            sent.push(buf[..n].to_vec());
            // B sends A's packet from 30 ticks ago, re-stamped as its own stream.
            let n = b.next_packet(now, &mut buf).unwrap();
            let echo = if tick >= 30 {
                let old = dialtone_rtp::parse(&sent[(tick - 30) as usize]).unwrap();
                let mut s = RtpSender::new(22, tick as u16, tick as u32 * 160, 0);
                let mut out = [0u8; 1500];
                let m = s.write(old.payload, 160, &mut out).unwrap();
                out[..m].to_vec()
            } else {
                buf[..n].to_vec()
            };
            a.receive(now + Duration::from_millis(1), &echo);
        }
        let m = a.measure();
        let end = t0 + Duration::from_millis(20 * 500);
        assert!(m.talkspurts >= 2, "{m:?}");
        assert_eq!(
            m.answered_talkspurts + a.pending_talkspurts(end),
            m.talkspurts,
            "{m:?}"
        );
        assert_eq!(m.gaps, 0);
        assert!(m.voiced_in > 100);
        let first = m.first_packet_ms.unwrap_or(f64::NAN);
        assert!(
            (first - 1.0).abs() < 1e-6,
            "the first echo came 1 ms in: {m:?}"
        );
    }

    /// A far end like an agent on a virtual clock: it speaks 3 s starting 600 ms after each
    /// talkspurt ends and goes silent 120 ms after a talkspurt starts over it. Every turn and
    /// every barge-in is timed to the tick.
    #[test]
    fn turns_and_barge_ins_are_timed_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut a = CallVoice::new(t0, AudioCodec::Pcmu, 0, 0, 11).unwrap();
        let mut agent = RtpSender::new(22, 0, 0, 0);
        let mut tone = [0u8; FRAME];
        let mut loud = [0i16; FRAME];
        for (n, s) in loud.iter_mut().enumerate() {
            *s = ((n as f64 * 0.3).sin() * 8000.0) as i16;
        }
        G711::new(G711Law::Mu).encode(&loud, &mut tone);
        let (mut buf, mut out) = ([0u8; 1500], [0u8; 1500]);
        let (talk, cycle) = (60u64, 175u64); // ticks: 1.2 s talking, 3.5 s a cycle
        for tick in 0..700u64 {
            let now = t0 + Duration::from_millis(20 * tick);
            a.next_packet(now, &mut buf).unwrap();
            let in_cycle = tick % cycle;
            // Speaking from 30 ticks after the talkspurt's last packet (tick talk - 1) for 150
            // ticks, cut 6 ticks into the next talkspurt.
            let since_end = (tick + cycle - (talk - 1)) % cycle;
            let speaking = tick >= talk - 1 + 30 && (30..150).contains(&since_end) && {
                let next_start = in_cycle < talk;
                !(next_start && in_cycle >= 6)
            };
            let payload = if speaking { tone } else { [0xff; FRAME] };
            let m = agent.write(&payload, 160, &mut out).unwrap();
            a.receive(now + Duration::from_millis(1), &out[..m]);
        }
        let m = a.measure();
        assert_eq!(m.turn_ms.len(), 4, "{m:?}");
        assert!(m.turn_ms.iter().all(|t| (t - 601.0).abs() < 1e-6), "{m:?}");
        assert_eq!(m.barge_in_ms.len(), 3, "{m:?}");
        assert!(
            m.barge_in_ms.iter().all(|t| (t - 121.0).abs() < 1e-6),
            "{m:?}"
        );
        assert_eq!((m.barge_ins_missed, m.turns_talked_over), (0, 0), "{m:?}");
    }

    #[test]
    fn silence_answers_nothing_and_a_stall_is_a_gap() {
        let t0 = Instant::now();
        let mut a = CallVoice::new(t0, AudioCodec::Pcmu, 0, 0, 11).unwrap();
        let mut quiet = RtpSender::new(5, 0, 0, 0);
        let mut buf = [0u8; 1500];
        let mut out = [0u8; 1500];
        for tick in 0..300u64 {
            let now = t0 + Duration::from_millis(20 * tick);
            a.next_packet(now, &mut buf).unwrap();
            // A stall of 60 ms once.
            if tick == 100 || tick == 101 {
                continue;
            }
            let m = quiet.write(&[0xff; 160], 160, &mut out).unwrap();
            a.receive(now, &out[..m]);
        }
        let m = a.measure();
        assert_eq!(m.answered_talkspurts, 0);
        assert_eq!(m.gaps, 1);
        assert!((59.0..61.0).contains(&m.max_interval_ms), "{m:?}");
        assert_eq!(m.voiced_in, 0);
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Two calls' media steps joined by a simulated wire on a virtual clock: audio checked as
//! audio through every codec, under a seeded impairment model, with DTMF, comfort noise,
//! RTCP, hold, barge-in clearing, RTP timeout and symmetric-RTP latching. No sockets, no
//! sleeps.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use dialtone_media::{
    AudioFrame, CallMedia, Direction, FRAME_SAMPLES, FrameReceiver, FrameSender, MediaCodec,
    MediaConfig, MediaEvent, level_dbfs,
};
use dialtone_rtp::{DtmfEvent, RtpSender};
use dialtone_test_support::audio::{sine, syllabic_gain, syllabic_sine, tone_amplitude};

const AMPLITUDE: f64 = 8000.0;

fn a_addr() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}
fn b_addr() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn config(codec: MediaCodec, remote: SocketAddr, ssrc: u32) -> MediaConfig {
    let pt = match codec {
        MediaCodec::Pcmu => 0,
        MediaCodec::Pcma => 8,
        MediaCodec::Opus => 111,
        MediaCodec::G722 => 9,
    };
    MediaConfig {
        rtp_timeout: Duration::from_secs(5),
        ..MediaConfig::new(codec, pt, Some(remote), ssrc)
    }
}

/// A seeded model of a bad network.
#[derive(Debug, Clone, Copy, Default)]
struct Impairment {
    latency_ms: u64,
    jitter_ms: u64,
    loss: f64,
    /// Chance a loss starts a burst, and chance each next packet of the burst is lost too.
    burst_start: f64,
    burst_continue: f64,
    duplicate: f64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A datagram in flight, ordered by delivery time.
#[derive(PartialEq, Eq)]
struct InFlight {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to_b: bool,
    rtcp: bool,
    data: Vec<u8>,
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct Side {
    media: CallMedia,
    inbound: FrameReceiver,
    outbound: FrameSender,
    /// Frames that reached the speech ring, with the tick they came out at.
    heard: Vec<(Instant, AudioFrame)>,
    events: Vec<MediaEvent>,
}

struct Wire {
    t0: Instant,
    a: Side,
    b: Side,
    model: Impairment,
    rng: Rng,
    in_burst: bool,
    flight: BinaryHeap<InFlight>,
    order: u64,
    /// A's clock runs this much fast (+) or slow (-), in parts per million.
    a_drift_ppm: i64,
    /// Packets A→B the model dropped, and duplicated.
    dropped: u64,
    duplicated: u64,
    a_silent: bool,
}

fn side(config: MediaConfig, t0: Instant) -> Side {
    let (media, inbound, outbound) = CallMedia::new(config, t0, SystemTime::now()).unwrap();
    Side {
        media,
        inbound,
        outbound,
        heard: Vec::new(),
        events: Vec::new(),
    }
}

impl Wire {
    fn new(codec: MediaCodec, model: Impairment, seed: u64) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            a: side(config(codec, b_addr(), 0xa1), t0),
            b: side(config(codec, a_addr(), 0xb2), t0),
            model,
            rng: Rng(seed),
            in_burst: false,
            flight: BinaryHeap::new(),
            order: 0,
            a_drift_ppm: 0,
            dropped: 0,
            duplicated: 0,
            a_silent: false,
        }
    }

    fn send(&mut self, now: Instant, from_a: bool, rtcp: bool, data: &[u8]) {
        // Only A→B is impaired; B→A is clean with the same latency.
        let mut copies = 1;
        if from_a && !rtcp {
            let lost = if self.in_burst {
                self.rng.next() < self.model.burst_continue
            } else {
                self.rng.next() < self.model.loss
            };
            if lost && !self.in_burst {
                self.in_burst = self.rng.next() < self.model.burst_start;
            } else if !lost {
                self.in_burst = false;
            }
            if lost {
                self.dropped += 1;
                return;
            }
            if self.rng.next() < self.model.duplicate {
                copies = 2;
                self.duplicated += 1;
            }
        }
        for _ in 0..copies {
            let jitter = if from_a {
                (self.rng.next() * self.model.jitter_ms as f64) as u64
            } else {
                0
            };
            self.order += 1;
            self.flight.push(InFlight {
                at: now + Duration::from_millis(self.model.latency_ms + jitter),
                order: self.order,
                from: if from_a { a_addr() } else { b_addr() },
                to_b: from_a,
                rtcp,
                data: data.to_vec(),
            });
        }
    }

    fn deliver_until(&mut self, now: Instant) {
        while self.flight.peek().is_some_and(|p| p.at <= now) {
            let p = self.flight.pop().unwrap();
            let to = if p.to_b { &mut self.b } else { &mut self.a };
            to.media.receive(p.at, p.from, &p.data, p.rtcp);
        }
    }

    /// Runs `ticks` of B's 20 ms clock; A ticks on its own (drifting) clock. `feed` fills
    /// the agent rings before each tick.
    fn run(&mut self, ticks: u64, mut feed: impl FnMut(&mut Side, &mut Side, u64)) {
        let start = self.b.heard.len() as u64;
        let mut a_tick = start;
        for tick in start..start + ticks {
            let now = self.t0 + Duration::from_millis(20 * tick);
            // A's ticks that fall before this one.
            loop {
                let a_at_us = (a_tick * 20_000) as i64 * 1_000_000 / (1_000_000 + self.a_drift_ppm);
                let a_at = self.t0 + Duration::from_micros(a_at_us as u64);
                if a_at > now {
                    break;
                }
                self.deliver_until(a_at);
                if !self.a_silent {
                    feed(&mut self.a, &mut self.b, a_tick);
                    let mut out = Vec::new();
                    self.a
                        .media
                        .tick(a_at, &mut |t| out.push((t.rtcp, t.data.to_vec())));
                    for (rtcp, data) in out {
                        self.send(a_at, true, rtcp, &data);
                    }
                }
                a_tick += 1;
            }
            self.deliver_until(now);
            let mut out = Vec::new();
            self.b
                .media
                .tick(now, &mut |t| out.push((t.rtcp, t.data.to_vec())));
            for (rtcp, data) in out {
                self.send(now, false, rtcp, &data);
            }
            for s in [&mut self.a, &mut self.b] {
                while let Some(frame) = s.inbound.try_recv() {
                    s.heard.push((now, frame));
                }
                while let Some(e) = s.media.poll_event() {
                    s.events.push(e);
                }
            }
            // Keep B's heard list aligned with ticks even when nothing came out.
            if self.b.heard.len() as u64 <= tick {
                self.b.heard.push((now, AudioFrame::silence(now)));
            }
        }
    }
}

fn tone_frame(hz: f64, index: u64, at: Instant) -> AudioFrame {
    let mut f = AudioFrame::silence(at);
    sine(
        16000,
        hz,
        AMPLITUDE,
        index as usize * FRAME_SAMPLES,
        &mut f.samples,
    );
    f
}

/// The last `frames` frames joined, for a Goertzel window on whole bins.
fn tail(heard: &[(Instant, AudioFrame)], frames: usize) -> Vec<i16> {
    heard[heard.len() - frames..]
        .iter()
        .flat_map(|(_, f)| f.samples)
        .collect()
}

fn assert_tone(samples: &[i16], hz: f64, what: &str) {
    let at = tone_amplitude(samples, 16000, hz);
    assert!(
        (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
        "{what}: {hz} Hz at {at:.0}, sent {AMPLITUDE}"
    );
    for other in [300.0, 1500.0, 2500.0, 5000.0] {
        let leak = tone_amplitude(samples, 16000, other);
        assert!(
            leak < AMPLITUDE * 0.06,
            "{what}: {other} Hz leaks {leak:.0}"
        );
    }
}

#[test]
fn tones_cross_both_ways_in_every_codec() {
    for codec in [
        MediaCodec::Pcmu,
        MediaCodec::Pcma,
        MediaCodec::Opus,
        MediaCodec::G722,
    ] {
        let mut wire = Wire::new(
            codec,
            Impairment {
                latency_ms: 5,
                ..Impairment::default()
            },
            1,
        );
        wire.run(100, |a, b, tick| {
            let at = Instant::now();
            a.outbound.try_send(tone_frame(1000.0, tick, at)).unwrap();
            b.outbound.try_send(tone_frame(700.0, tick, at)).unwrap();
        });
        assert_tone(&tail(&wire.b.heard, 10), 1000.0, &format!("{codec:?} A→B"));
        assert_tone(&tail(&wire.a.heard, 10), 700.0, &format!("{codec:?} B→A"));
        let (a, b) = (wire.a.media.stats(), wire.b.media.stats());
        assert!(
            a.packets_out >= 99 && b.packets_in >= 95,
            "{codec:?}: {a:?} {b:?}"
        );
        assert_eq!((b.lost, b.concealed_frames, b.malformed), (0, 0, 0));
        assert!(
            b.jitter_buffer_ms <= 40,
            "clean network: {} ms",
            b.jitter_buffer_ms
        );
    }
}

#[test]
fn audio_stays_continuous_under_loss_jitter_reordering_duplication_and_drift() {
    for (seed, drift_ppm) in [(7u64, 0i64), (11, 1000), (13, -1000)] {
        let model = Impairment {
            latency_ms: 20,
            jitter_ms: 60,
            loss: 0.05,
            burst_start: 0.3,
            burst_continue: 0.5,
            duplicate: 0.02,
        };
        let mut wire = Wire::new(MediaCodec::Pcmu, model, seed);
        wire.a_drift_ppm = drift_ppm;
        // 60 s of tone.
        let ticks = 3000;
        wire.run(ticks, |a, _, tick| {
            let _ = a
                .outbound
                .try_send(tone_frame(1000.0, tick, Instant::now()));
        });
        let b = wire.b.media.stats();
        let what = format!("seed {seed} drift {drift_ppm} ppm: {b:?}");
        // Continuous: after start-up a frame reaches the speech ring on nearly every tick
        // (a slow sender makes the buffer re-buffer now and then; never for long).
        let silent_ticks = wire.b.heard[50..]
            .iter()
            .filter(|(_, f)| f.samples.iter().all(|s| *s == 0))
            .count();
        assert!(silent_ticks < 60, "{silent_ticks} silent ticks; {what}");
        // What was lost was concealed, no more: concealed ≤ lost on the wire + late + re-buffer.
        assert!(
            b.concealed_frames <= wire.dropped + b.late_packets + 60,
            "{what}"
        );
        assert!(b.concealed_frames >= wire.dropped / 2, "{what}");
        // Bounded delay: the buffer adapted up but stayed within its maximum.
        assert!((60..=300).contains(&b.jitter_buffer_ms), "{what}");
        let worst = wire.b.heard[50..]
            .iter()
            .map(|(out, f)| out.saturating_duration_since(f.at))
            .max()
            .unwrap();
        assert!(
            worst <= Duration::from_millis(400),
            "worst delay {worst:?}; {what}"
        );
        // It is still the tone, not noise: the average frame over the last second.
        let mut hits = 0;
        for window in wire.b.heard[ticks as usize - 200..].chunks(4) {
            let s: Vec<i16> = window.iter().flat_map(|(_, f)| f.samples).collect();
            if tone_amplitude(&s, 16000, 1000.0) > AMPLITUDE * 0.5 {
                hits += 1;
            }
        }
        assert!(hits >= 40, "only {hits}/50 windows carry the tone; {what}");
    }
}

#[test]
fn opus_fec_rebuilds_lost_frames() {
    let mut wire = Wire::new(
        MediaCodec::Opus,
        Impairment {
            latency_ms: 10,
            loss: 0.1,
            ..Impairment::default()
        },
        5,
    );
    wire.run(500, |a, _, tick| {
        let mut f = AudioFrame::silence(Instant::now());
        syllabic_sine(
            16000,
            1000.0,
            AMPLITUDE,
            tick as usize * FRAME_SAMPLES,
            &mut f.samples,
        );
        a.outbound.try_send(f).unwrap();
    });
    let b = wire.b.media.stats();
    assert!(b.concealed_frames >= 30, "{b:?}");
    // Frames carry the tone at its syllabic level (frame j is sent at tick j and played at
    // tick j + 2, after 10 ms on the wire and the 40 ms buffer). Concealment alone gets a lost
    // frame and the one after it wrong; FEC rebuilds many lost frames, so fewer are off than
    // one and a half per loss..
    let off = wire.b.heard[50..]
        .iter()
        .enumerate()
        .filter(|(i, (_, f))| {
            let t = (*i as f64 + 50.0 - 1.5) * 0.02;
            let expected = AMPLITUDE * syllabic_gain(t);
            (tone_amplitude(&f.samples, 16000, 1000.0) - expected).abs() > expected * 0.35
        })
        .count();
    assert!(
        off * 2 < b.concealed_frames as usize * 3,
        "{off} frames off their level; {b:?}"
    );
}

#[test]
fn dtmf_goes_across_as_events_and_is_not_heard() {
    let mut wire = Wire::new(
        MediaCodec::Pcmu,
        Impairment {
            latency_ms: 5,
            ..Impairment::default()
        },
        3,
    );
    wire.a.media.send_dtmf("1#9").unwrap();
    assert!(matches!(
        wire.a.media.send_dtmf("5x"),
        Err(dialtone_media::MediaError::NotDtmf { digit: 'x' })
    ));
    wire.run(60, |a, _, tick| {
        let _ = a
            .outbound
            .try_send(tone_frame(1000.0, tick, Instant::now()));
    });
    let digits: Vec<(char, Duration)> = wire
        .b
        .events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Dtmf {
                event: DtmfEvent::Ended { digit, duration },
                ..
            } => Some((*digit, *duration)),
            _ => None,
        })
        .collect();
    let ms100 = Duration::from_millis(100);
    assert_eq!(digits, vec![('1', ms100), ('#', ms100), ('9', ms100)]);
    let b = wire.b.media.stats();
    assert_eq!(b.concealed_frames, 0, "events are not losses: {b:?}");
    assert_eq!(b.dtmf_events, 6);
    assert_eq!(b.dtmf_digits, 3);
    // While digits were on the wire the ring got silence, not the tone.
    let quiet = wire.b.heard[..20]
        .iter()
        .filter(|(_, f)| level_dbfs(&f.samples) < -60.0)
        .count();
    assert!(quiet >= 10, "only {quiet} quiet frames during the digits");
    assert_tone(&tail(&wire.b.heard, 10), 1000.0, "audio after the digits");
}

#[test]
fn comfort_noise_and_unknown_payload_types_do_not_break_the_stream() {
    let t0 = Instant::now();
    let (mut media, mut inbound, _outbound) =
        CallMedia::new(config(MediaCodec::Pcmu, a_addr(), 1), t0, SystemTime::now()).unwrap();
    let mut buf = [0u8; 300];
    let mut heard = Vec::new();
    for i in 0..40u64 {
        let now = t0 + Duration::from_millis(20 * i);
        // One stream (SSRC 9, one sequence space): comfort noise at -40 dBov for ticks
        // 10..20, audio around it.
        let (payload_type, payload): (u8, &[u8]) = match i {
            10..20 => (13, &[40]),
            _ => (0, &[0xff; 160]),
        };
        let mut packet = RtpSender::new(9, 100 + i as u16, (i * 160) as u32, payload_type);
        let n = packet.write(payload, 160, &mut buf).unwrap();
        media.receive(now, a_addr(), &buf[..n], false);
        if i % 5 == 0 {
            let mut odd = RtpSender::new(9, 5000, 0, 99);
            let n = odd.write(&[1, 2, 3], 160, &mut buf).unwrap();
            media.receive(now, a_addr(), &buf[..n], false);
        }
        media.tick(now, &mut |_| {});
        while let Some(f) = inbound.try_recv() {
            heard.push(f);
        }
    }
    let stats = media.stats();
    assert_eq!(stats.unknown_payload, 8);
    assert_eq!(stats.comfort_noise_frames, 10);
    assert_eq!(stats.concealed_frames, 0);
    let noise_levels: Vec<f64> = heard
        .iter()
        .map(|f| level_dbfs(&f.samples))
        .filter(|l| *l > -100.0)
        .collect();
    assert_eq!(noise_levels.len(), 10, "{noise_levels:?}");
    assert!(
        noise_levels.iter().all(|l| (-43.0..=-37.0).contains(l)),
        "{noise_levels:?}"
    );
    assert!(heard.len() >= 35);
}

#[test]
fn rtcp_reports_give_round_trip_and_loss() {
    let mut wire = Wire::new(
        MediaCodec::Pcma,
        Impairment {
            latency_ms: 15,
            loss: 0.1,
            ..Impairment::default()
        },
        9,
    );
    wire.run(1000, |a, b, tick| {
        let _ = a
            .outbound
            .try_send(tone_frame(1000.0, tick, Instant::now()));
        let _ = b.outbound.try_send(tone_frame(700.0, tick, Instant::now()));
    });
    let (a, b) = (wire.a.media.stats(), wire.b.media.stats());
    assert!(
        a.rtcp_reports_out >= 2 && b.rtcp_reports_out >= 2,
        "{a:?} {b:?}"
    );
    assert!(a.rtcp_reports_in >= 1, "{a:?}");
    let rtt = a.round_trip_ms.expect("A measured a round trip");
    assert!((29.0..=31.0).contains(&rtt), "rtt {rtt} ms");
    // B saw about 10 % of A's packets lost and told A so.
    assert!((0.02..=0.25).contains(&a.remote_fraction_lost), "{a:?}");
    assert_eq!(a.rtcp_malformed + b.rtcp_malformed, 0);
}

#[test]
fn hold_stops_sending_and_resume_restarts_with_a_marker() {
    let mut wire = Wire::new(MediaCodec::Pcmu, Impairment::default(), 2);
    wire.run(10, |_, _, _| {});
    let before = wire.a.media.stats().packets_out;
    wire.a.media.redirect(Direction {
        sending: false,
        receiving: true,
        remote: None,
    });
    wire.run(10, |_, _, _| {});
    assert_eq!(wire.a.media.stats().packets_out, before);
    wire.a.media.redirect(Direction {
        sending: true,
        receiving: true,
        remote: None,
    });
    let t = wire.t0 + Duration::from_millis(20 * 25);
    let mut sent = Vec::new();
    wire.a.media.tick(t, &mut |p| sent.push(p.data.to_vec()));
    let packet = dialtone_rtp::parse(&sent[0]).unwrap();
    assert!(packet.marker, "a resumed stream starts a talkspurt");
}

#[test]
fn clear_discards_queued_agent_audio_at_the_next_tick() {
    let t0 = Instant::now();
    let (mut media, _inbound, mut outbound) =
        CallMedia::new(config(MediaCodec::Pcmu, a_addr(), 1), t0, SystemTime::now()).unwrap();
    for i in 0..20 {
        outbound.try_send(tone_frame(1000.0, i, t0)).unwrap();
    }
    let mut sent = Vec::new();
    media.tick(t0, &mut |p| sent.push(p.data.to_vec()));
    outbound.clear();
    for i in 1..=2 {
        media.tick(t0 + Duration::from_millis(20 * i), &mut |p| {
            sent.push(p.data.to_vec())
        });
    }
    let first = dialtone_rtp::parse(&sent[0]).unwrap();
    assert!(
        first.payload.iter().any(|b| *b != 0xff),
        "the tone went out"
    );
    // The tick after the clear carries only what the resampler still held (its 2 ms delay,
    // and its filter's ringing); then silence.
    let level = |p: &[u8]| {
        let mut pcm = vec![0i16; p.len()];
        dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).decode(p, &mut pcm);
        level_dbfs(&pcm)
    };
    let after = dialtone_rtp::parse(&sent[1]).unwrap().payload;
    assert!(level(&after[..80]) > -30.0 && level(&after[100..]) < -60.0);
    assert!(level(dialtone_rtp::parse(&sent[2]).unwrap().payload) < -90.0);
    let stats = media.stats();
    assert_eq!(stats.cleared_frames, 19);
    assert_eq!(outbound.free(), dialtone_media::ring::RING_FRAMES);
}

#[test]
fn a_silent_far_end_raises_one_rtp_timeout_unless_it_holds_us() {
    let mut wire = Wire::new(MediaCodec::Pcmu, Impairment::default(), 4);
    wire.run(20, |_, _, _| {});
    wire.a_silent = true;
    wire.run(300, |_, _, _| {});
    let timeouts: Vec<_> = wire
        .b
        .events
        .iter()
        .filter(|e| matches!(e, MediaEvent::RtpTimeout { .. }))
        .collect();
    assert_eq!(timeouts.len(), 1);
    if let MediaEvent::RtpTimeout { silent_for } = timeouts[0] {
        assert!(*silent_for >= Duration::from_secs(5));
    }

    // Held (the far end sends nothing by agreement): no timeout.
    let mut wire = Wire::new(MediaCodec::Pcmu, Impairment::default(), 4);
    wire.b.media.redirect(Direction {
        sending: true,
        receiving: false,
        remote: None,
    });
    wire.a_silent = true;
    wire.run(400, |_, _, _| {});
    assert!(wire.b.events.is_empty(), "{:?}", wire.b.events);
}

#[test]
fn the_rtp_timeout_counts_afresh_from_the_answer() {
    let timeouts = |wire: &Wire| {
        wire.b
            .events
            .iter()
            .filter(|e| matches!(e, MediaEvent::RtpTimeout { .. }))
            .count()
    };
    // Early media that fell silent while the phone rang for six seconds.
    let mut wire = Wire::new(MediaCodec::Pcmu, Impairment::default(), 4);
    wire.run(20, |_, _, _| {});
    wire.a_silent = true;
    wire.run(300, |_, _, _| {});
    assert_eq!(timeouts(&wire), 1);
    let answered_at = wire.t0 + Duration::from_millis(20 * wire.b.heard.len() as u64);
    wire.b.media.answered(answered_at);
    wire.run(200, |_, _, _| {});
    assert_eq!(
        timeouts(&wire),
        1,
        "four seconds after the answer is not yet five"
    );
    wire.run(100, |_, _, _| {});
    assert_eq!(timeouts(&wire), 2);
}

#[test]
fn the_far_end_is_latched_from_its_first_packet_and_strangers_are_ignored() {
    let t0 = Instant::now();
    // The SDP said 10.255.255.1, which is not where the media comes from (NAT).
    let sdp_address: SocketAddr = "10.255.255.1:7000".parse().unwrap();
    let real: SocketAddr = "127.0.0.5:7002".parse().unwrap();
    let stranger: SocketAddr = "127.0.0.6:9999".parse().unwrap();
    let (mut media, _inbound, _outbound) = CallMedia::new(
        config(MediaCodec::Pcmu, sdp_address, 1),
        t0,
        SystemTime::now(),
    )
    .unwrap();
    let mut to = Vec::new();
    media.tick(t0, &mut |p| to.push((p.to, p.rtcp)));
    assert_eq!(to[0], (sdp_address, false));
    let mut peer = RtpSender::new(3, 1, 0, 0);
    let mut buf = [0u8; 200];
    let n = peer.write(&[0xff; 160], 160, &mut buf).unwrap();
    media.receive(t0, real, &buf[..n], false);
    let n = peer.write(&[0xff; 160], 160, &mut buf).unwrap();
    media.receive(t0, stranger, &buf[..n], false);
    to.clear();
    media.tick(t0 + Duration::from_millis(20), &mut |p| {
        to.push((p.to, p.rtcp))
    });
    assert_eq!(to[0], (real, false));
    let stats = media.stats();
    assert_eq!((stats.packets_in, stats.foreign), (1, 1));
}

#[test]
fn the_signalled_peer_takes_the_latch_back_from_a_stray_stream() {
    let t0 = Instant::now();
    // The SDP named the real peer; a previous call's far end still sends to this reused port.
    let real: SocketAddr = "127.0.0.5:7002".parse().unwrap();
    let stray: SocketAddr = "127.0.0.6:9999".parse().unwrap();
    let (mut media, _inbound, _outbound) =
        CallMedia::new(config(MediaCodec::Pcmu, real, 1), t0, SystemTime::now()).unwrap();
    let mut old = RtpSender::new(9, 100, 0, 0);
    let mut peer = RtpSender::new(3, 1, 0, 0);
    let mut buf = [0u8; 200];
    let n = old.write(&[0xff; 160], 160, &mut buf).unwrap();
    media.receive(t0, stray, &buf[..n], false);
    let mut to = Vec::new();
    media.tick(t0, &mut |p| to.push(p.to));
    assert_eq!(to, [stray], "latched to the first packet");
    for i in 1..4u64 {
        let at = t0 + Duration::from_millis(20 * i);
        let n = peer.write(&[0xff; 160], 160, &mut buf).unwrap();
        media.receive(at, real, &buf[..n], false);
        let n = old.write(&[0xff; 160], 160, &mut buf).unwrap();
        media.receive(at, stray, &buf[..n], false);
        to.clear();
        media.tick(at, &mut |p| to.push(p.to));
        assert_eq!(to, [real], "the signalled address wins");
    }
    assert_eq!(
        media.stats().foreign,
        3,
        "the stray is ignored once the peer speaks"
    );
}

#[test]
fn garbage_datagrams_are_counted_and_the_stream_goes_on() {
    let t0 = Instant::now();
    let (mut media, _inbound, _outbound) =
        CallMedia::new(config(MediaCodec::Opus, a_addr(), 1), t0, SystemTime::now()).unwrap();
    for bad in [&[][..], &[0x80], &[0x40; 20], &[0x80, 200, 0, 50, 1, 2]] {
        media.receive(t0, a_addr(), bad, false);
    }
    media.receive(t0, a_addr(), &[0x80, 201, 0, 1], true);
    // An Opus packet whose payload is garbage: concealed, counted, no panic.
    let mut peer = RtpSender::new(3, 1, 0, 111);
    let mut buf = [0u8; 200];
    for i in 0..5u64 {
        let n = peer
            .write(&[0xff, 0xff, 0xff, 0xff], 960, &mut buf)
            .unwrap();
        media.receive(
            t0 + Duration::from_millis(20 * i),
            a_addr(),
            &buf[..n],
            false,
        );
        media.tick(t0 + Duration::from_millis(20 * i), &mut |_| {});
    }
    let stats = media.stats();
    assert_eq!(stats.malformed, 3);
    assert_eq!(stats.rtcp_malformed, 2);
    assert!(stats.undecodable >= 3, "{stats:?}");
}

#[test]
fn the_outbound_half_only_sends_and_the_inbound_half_only_fills_the_speech_ring() {
    let t0 = Instant::now();
    let (mut media, mut inbound, mut outbound) =
        CallMedia::new(config(MediaCodec::Pcmu, a_addr(), 1), t0, SystemTime::now()).unwrap();
    let mut far = RtpSender::new(9, 0, 0, 0);
    let mut packet = [0u8; 200];
    for i in 0..3u64 {
        let mut pcm = [0i16; 160];
        for (n, s) in pcm.iter_mut().enumerate() {
            *s = (AMPLITUDE
                * (std::f64::consts::TAU * 1000.0 * (i * 160 + n as u64) as f64 / 8000.0).sin())
                as i16;
        }
        let mut payload = [0u8; 160];
        dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).encode(&pcm, &mut payload);
        let n = far.write(&payload, 160, &mut packet).unwrap();
        media.receive(
            t0 + Duration::from_millis(20 * i),
            a_addr(),
            &packet[..n],
            false,
        );
    }
    outbound.try_send(tone_frame(1000.0, 0, t0)).unwrap();
    let mut sent = Vec::new();
    let queued = media.tick_outbound(t0, &mut |p| sent.push((p.rtcp, p.data.to_vec())));
    assert_eq!(
        queued,
        Some(t0),
        "the agent's frame, with the time it was queued"
    );
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].0 && dialtone_rtp::parse(&sent[0].1).is_ok());
    assert!(
        inbound.try_recv().is_none(),
        "nothing reached the speech loop yet"
    );

    // The jitter buffer holds its delay: give it the time, then the inbound half plays out.
    let mut frames = 0;
    for i in 1..=4 {
        let now = t0 + Duration::from_millis(20 * i);
        let arrival = media.tick_inbound(now, &mut |p| {
            assert!(p.rtcp, "the inbound half sends RTCP at most");
        });
        media.wake_speech_loop();
        if arrival.is_some() {
            frames += 1;
            let frame = inbound.try_recv().expect("the frame is in the ring");
            assert!(level_dbfs(&frame.samples) > -20.0, "the far end's tone");
        }
    }
    assert!(frames >= 2, "{frames} frames played out");
}

#[test]
fn the_agent_keeps_one_frame_queued_and_one_more_after_each_underflow_while_it_speaks() {
    let t0 = Instant::now();
    let (mut media, _inbound, mut outbound) =
        CallMedia::new(config(MediaCodec::Pcmu, a_addr(), 1), t0, SystemTime::now()).unwrap();
    let tick = |media: &mut CallMedia| media.tick_outbound(t0, &mut |_| {});
    // Silence before the agent speaks starves the worker, and costs no lead.
    tick(&mut media);
    assert_eq!(outbound.lead(false), 1);
    assert_eq!(outbound.lead(true), 1, "the first top-up of an utterance");
    outbound.try_send(tone_frame(1000.0, 0, t0)).unwrap();
    assert_eq!(outbound.queued(), 1);
    assert!(tick(&mut media).is_some(), "the frame went out");
    assert_eq!(outbound.lead(true), 1, "on time: no underflow");
    // The speech loop is late: the worker finds nothing mid-utterance.
    assert!(tick(&mut media).is_none());
    assert_eq!(outbound.lead(true), 2);
    // Pauses cost nothing; every late top-up while speaking adds one, up to the most.
    tick(&mut media);
    assert_eq!(outbound.lead(false), 2);
    assert_eq!(outbound.lead(true), 2);
    for _ in 0..3 {
        tick(&mut media);
        outbound.lead(true);
    }
    assert_eq!(outbound.lead(true), dialtone_media::ring::MAX_LEAD);
    assert!(media.stats().outbound_underflow >= 6);
}

/// The agent side learns when a frame it chose was taken to be sent, and when a clear took
/// effect: the worker stamps them with its ticks' times (the first audio of an answer, and a
/// barge-in's audio stopping, on the wire).
#[test]
fn the_worker_stamps_when_a_watched_frame_leaves_and_when_a_clear_took_effect() {
    let t0 = Instant::now();
    let tick_at = |ms: u64| t0 + Duration::from_millis(ms);
    let (mut media, _inbound, mut outbound) =
        CallMedia::new(config(MediaCodec::Pcmu, a_addr(), 1), t0, SystemTime::now()).unwrap();
    // Two frames already queued; the one after them is watched.
    outbound.try_send(AudioFrame::silence(t0)).unwrap();
    outbound.try_send(AudioFrame::silence(t0)).unwrap();
    outbound.watch(0);
    outbound.try_send(tone_frame(1000.0, 0, t0)).unwrap();
    media.tick_outbound(tick_at(20), &mut |_| {});
    media.tick_outbound(tick_at(40), &mut |_| {});
    assert_eq!(
        outbound.watched_sent_at(),
        None,
        "two frames were ahead of it"
    );
    media.tick_outbound(tick_at(60), &mut |_| {});
    assert_eq!(outbound.watched_sent_at(), Some(tick_at(60)));

    // A frame watched two pushes ahead, discarded by a clear before it goes: never sent.
    outbound.watch(2);
    for _ in 0..4 {
        outbound.try_send(tone_frame(1000.0, 0, t0)).unwrap();
    }
    assert_eq!(outbound.cleared_at(), None, "nothing cleared yet");
    outbound.clear();
    assert_eq!(outbound.cleared_at(), None, "asked, not yet done");
    media.tick_outbound(tick_at(80), &mut |_| {});
    assert_eq!(outbound.cleared_at(), Some(tick_at(80)));
    assert_eq!(
        outbound.watched_sent_at(),
        None,
        "the watched frame was discarded"
    );
    assert_eq!(media.stats().cleared_frames, 4);

    // Frames pushed after the clear keep their numbers: the next one watched is stamped.
    outbound.watch(0);
    outbound.try_send(tone_frame(1000.0, 0, t0)).unwrap();
    media.tick_outbound(tick_at(100), &mut |_| {});
    assert_eq!(outbound.watched_sent_at(), Some(tick_at(100)));
    outbound.clear();
    assert_eq!(
        outbound.cleared_at(),
        None,
        "a new clear forgets the last one's time"
    );
    media.tick_outbound(tick_at(120), &mut |_| {});

    // A frame watched before it is pushed, then a clear: the frames pushed after the clear are
    // other audio, and none of them is taken for the watched one.
    outbound.watch(1);
    outbound.clear();
    for _ in 0..3 {
        outbound.try_send(tone_frame(1000.0, 0, t0)).unwrap();
    }
    for ms in [140, 160, 180, 200] {
        media.tick_outbound(tick_at(ms), &mut |_| {});
    }
    assert_eq!(outbound.watched_sent_at(), None, "unwatched by the clear");
}

//! Splicing a call's media, for a bridged transfer: what goes to the wire instead of the
//! agent's audio, and where the call's inbound frames are copied.
//!
//! ```text
//!  leg A's worker tick:  agent ring ─▶ (popped, dropped: the brain is muted)
//!                        Feed::Ringback ─▶ generated 440+480 Hz, 2 s on / 4 s off ─▶ A's wire
//!                        Feed::Frames(B's inbound ring) ─▶ A's wire
//!                        A's inbound frame ─▶ B's outbound ring (bridged: not A's speech
//!                        ring, the muted brain does not listen in; with ringback it does)
//! ```
//!
//! Two calls are bridged by splicing one of them (A) with the other's (B) rings: B's worker
//! decodes B's far end into its inbound ring, A's worker takes those frames as A's outbound
//! audio and copies A's decoded inbound frames into B's outbound ring, which B's worker
//! encodes. Everything happens on the media clock, one frame per tick; both directions keep at
//! most [`RELAY_BACKLOG`] frames queued (older or excess frames are dropped and counted), so a
//! worker that ran late cannot build up delay.

use std::f32::consts::TAU;

use crate::ring::{AudioFrame, FRAME_SAMPLES, FrameReceiver, FrameSender};

/// The most frames a relay direction keeps queued between the two workers (40 ms).
pub const RELAY_BACKLOG: usize = 2;

/// The ringback tone's frequencies (North American ringback: 440 + 480 Hz).
const RINGBACK_HZ: [f32; 2] = [440.0, 480.0];
/// Each tone's amplitude (about −19 dBFS each).
const RINGBACK_AMPLITUDE: f32 = 3_600.0;
/// Ticks of tone, then ticks of silence (2 s on, 4 s off).
const RINGBACK_ON_TICKS: u64 = 100;
const RINGBACK_PERIOD_TICKS: u64 = 300;
/// The speech loop's sample rate, for the tone.
const RATE: f32 = 16_000.0;

/// What a spliced call sends instead of its agent's audio.
#[derive(Debug)]
pub enum Feed {
    /// A ringback tone generated on the media clock (the caller waits for a destination).
    Ringback,
    /// Another call's inbound frames (its far end's voice), one per tick.
    Frames(FrameReceiver),
}

/// A splice of a call's media ([`crate::MediaCall::splice`]).
#[derive(Debug)]
pub struct Splice {
    /// What goes to the wire.
    pub feed: Feed,
    /// Where the call's inbound frames are copied as well (another call's outbound ring).
    pub copy_to: Option<FrameSender>,
}

/// A splice in place on a call, with its tone clock.
#[derive(Debug)]
pub(crate) struct Spliced {
    splice: Splice,
    ticks: u64,
}

impl Spliced {
    pub(crate) fn new(splice: Splice) -> Self {
        Self { splice, ticks: 0 }
    }

    /// Whether another call's frames go out (bridged): the call's own inbound frames are then
    /// the other call's alone, not the speech loop's.
    pub(crate) fn relaying(&self) -> bool {
        matches!(self.splice.feed, Feed::Frames(_))
    }

    /// This tick's outbound frame; `false` when the feed had none (silence then).
    pub(crate) fn outbound(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> bool {
        let tick = self.ticks;
        self.ticks += 1;
        match &mut self.splice.feed {
            Feed::Ringback => {
                ringback(tick, out);
                true
            }
            Feed::Frames(frames) => match frames.try_recv_recent(RELAY_BACKLOG) {
                Some(frame) => {
                    *out = frame.samples;
                    true
                }
                None => {
                    out.fill(0);
                    false
                }
            },
        }
    }

    /// Copies this tick's inbound frame; `false` when it was dropped (the other side is
    /// [`RELAY_BACKLOG`] frames behind, or gone).
    pub(crate) fn inbound(&mut self, frame: &AudioFrame) -> bool {
        match &mut self.splice.copy_to {
            Some(to) if to.queued() < RELAY_BACKLOG => to.try_send(*frame).is_ok(),
            Some(_) => false,
            None => true,
        }
    }
}

/// The ringback tone's frame at `tick` (phase-continuous through the cadence).
fn ringback(tick: u64, out: &mut [i16; FRAME_SAMPLES]) {
    if tick % RINGBACK_PERIOD_TICKS >= RINGBACK_ON_TICKS {
        out.fill(0);
        return;
    }
    let first = (tick % RINGBACK_PERIOD_TICKS) as usize * FRAME_SAMPLES;
    for (i, sample) in out.iter_mut().enumerate() {
        let t = (first + i) as f32 / RATE;
        let value: f32 = RINGBACK_HZ
            .iter()
            .map(|hz| (TAU * hz * t).sin() * RINGBACK_AMPLITUDE)
            .sum();
        *sample = value as i16;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::ring::call_rings;

    fn energy_at(samples: &[i16], hz: f32) -> f32 {
        // Goertzel power, normalised by length.
        let k = 2.0 * (TAU * hz / RATE).cos();
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in samples {
            let s0 = f32::from(x) + k * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len() as f32
    }

    #[test]
    fn ringback_is_440_and_480_hz_two_seconds_on_four_off() {
        let mut spliced = Spliced::new(Splice {
            feed: Feed::Ringback,
            copy_to: None,
        });
        let mut heard = Vec::new();
        let mut frame = [0; FRAME_SAMPLES];
        for _ in 0..RINGBACK_PERIOD_TICKS {
            assert!(spliced.outbound(&mut frame));
            heard.extend_from_slice(&frame);
        }
        let on = &heard[..FRAME_SAMPLES * 100];
        let off = &heard[FRAME_SAMPLES * 100..];
        assert!(off.iter().all(|&s| s == 0), "silent for four seconds");
        let (a, b, other) = (
            energy_at(on, 440.0),
            energy_at(on, 480.0),
            energy_at(on, 1000.0),
        );
        assert!(a > 1000.0 * other && b > 1000.0 * other, "{a} {b} {other}");
    }

    #[test]
    fn relayed_frames_keep_a_bounded_backlog_both_ways() {
        // B's rings: its worker's producer toward the speech side, and the outbound ring.
        let ((mut b_in, mut b_out_worker), (b_inbound, b_outbound), _, _) =
            call_rings(Instant::now());
        let mut spliced = Spliced::new(Splice {
            feed: Feed::Frames(b_inbound),
            copy_to: Some(b_outbound),
        });
        let now = Instant::now();
        let frame_of = |v: i16| AudioFrame {
            samples: [v; FRAME_SAMPLES],
            at: now,
        };
        // B's far end spoke five frames while A's worker was late: A sends the most recent.
        for v in 1..=5 {
            b_in.push(frame_of(v)).unwrap();
        }
        let mut out = [0; FRAME_SAMPLES];
        assert!(spliced.outbound(&mut out));
        assert_eq!(out[0], 4, "the backlog beyond two frames is dropped");
        assert!(spliced.outbound(&mut out));
        assert_eq!(out[0], 5);
        assert!(!spliced.outbound(&mut out), "nothing: silence");
        assert_eq!(out, [0; FRAME_SAMPLES]);
        // A's caller: copied to B until B's worker is two frames behind.
        assert!(spliced.inbound(&frame_of(7)));
        assert!(spliced.inbound(&frame_of(8)));
        assert!(!spliced.inbound(&frame_of(9)));
        assert_eq!(b_out_worker.pop().unwrap().samples[0], 7);
        assert!(spliced.inbound(&frame_of(10)));
        assert_eq!(b_out_worker.pop().unwrap().samples[0], 8);
        assert_eq!(b_out_worker.pop().unwrap().samples[0], 10);
    }

    /// Two calls' media on one virtual clock, A spliced with B's rings as a bridge does it:
    /// B's far end goes silent → loud at `onset`; the number of ticks until A's far end gets a
    /// loud packet is the relay's delay (B's jitter buffer included), for B ticked before A
    /// (`b_first`) or after it in each round. A's far end speaks throughout: B's far end must
    /// hear it by then, and A's brain must hear nothing.
    fn relay_delay_ticks(b_first: bool) -> u64 {
        use std::net::SocketAddr;
        use std::time::{Duration, SystemTime};

        use dialtone_codec::{G711, G711Law};
        use dialtone_rtp::RtpSender;

        use crate::{CallMedia, MediaCodec, MediaConfig};

        let (peer_a, peer_b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:40002".parse().unwrap(),
        );
        let t0 = Instant::now();
        let config = |peer, ssrc| MediaConfig {
            rtp_timeout: Duration::from_secs(3600),
            ..MediaConfig::new(MediaCodec::Pcmu, 0, Some(peer), ssrc)
        };
        let (mut a, mut a_in, _a_out) =
            CallMedia::new(config(peer_a, 1), t0, SystemTime::now()).unwrap();
        let (mut b, b_in, b_out) =
            CallMedia::new(config(peer_b, 2), t0, SystemTime::now()).unwrap();
        a.splice(Some(Splice {
            feed: Feed::Frames(b_in),
            copy_to: Some(b_out),
        }));
        let ulaw = G711::new(G711Law::Mu);
        let mut loud = [0u8; 160];
        let tone: Vec<i16> = (0..160)
            .map(|i| (8000.0 * (TAU * 1000.0 * i as f32 / 8000.0).sin()) as i16)
            .collect();
        ulaw.encode(&tone, &mut loud);
        let mut quiet = [0u8; 160];
        ulaw.encode(&[0i16; 160], &mut quiet);
        let mut far_b = RtpSender::new(9, 0, 0, 0);
        let mut far_a = RtpSender::new(8, 0, 0, 0);
        let mut datagram = [0u8; 1500];
        let onset = 10u64;
        // Whether B's far end heard A's, which speaks all along.
        let mut b_heard = false;
        for tick in 0..60u64 {
            let now = t0 + Duration::from_millis(tick * 20);
            let payload = if tick >= onset { &loud } else { &quiet };
            let n = far_b.write(payload, 160, &mut datagram).unwrap();
            b.receive(now, peer_b, &datagram[..n], false);
            let n = far_a.write(&loud, 160, &mut datagram).unwrap();
            a.receive(now, peer_a, &datagram[..n], false);
            let mut tick_b = |b: &mut CallMedia| {
                b.tick(now, &mut |t| {
                    if !t.rtcp && t.to == peer_b {
                        let mut pcm = [0i16; 160];
                        ulaw.decode(&t.data[12..], &mut pcm);
                        b_heard |= pcm.iter().any(|s| s.unsigned_abs() > 4000);
                    }
                });
            };
            let mut heard = false;
            let mut tick_a = |a: &mut CallMedia| {
                a.tick(now, &mut |t| {
                    // 12 bytes of RTP header, then µ-law: loud bytes are far from 0xFF/0x7F.
                    if !t.rtcp && t.to == peer_a {
                        let mut pcm = [0i16; 160];
                        ulaw.decode(&t.data[12..], &mut pcm);
                        heard |= pcm.iter().any(|s| s.unsigned_abs() > 4000);
                    }
                });
            };
            if b_first {
                tick_b(&mut b);
                tick_a(&mut a);
            } else {
                tick_a(&mut a);
                tick_b(&mut b);
            }
            if heard {
                assert!(a_in.try_recv().is_none(), "the brain hears nothing bridged");
                assert!(b_heard, "B's far end hears A's too");
                return tick - onset;
            }
        }
        panic!("A's far end never heard B's");
    }

    #[test]
    fn the_relay_adds_at_most_one_tick_to_the_far_legs_jitter_buffer() {
        let same_round = relay_delay_ticks(true);
        let next_round = relay_delay_ticks(false);
        println!("relay delay: {same_round} ticks (B ticked first), {next_round} (A first)");
        // The jitter buffer's playout delay on a clean stream is one frame (20 ms): the relay
        // adds nothing when B's frame is in its ring before A's tick, one tick otherwise.
        assert_eq!(next_round, same_round + 1);
        assert!(same_round <= 2, "{same_round} ticks");
    }
}

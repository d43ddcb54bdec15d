//! Splicing a call's media, for a bridged transfer: what goes to the wire instead of the
//! agent's audio, and where the call's inbound frames are copied.
//!
//! ```text
//!  leg A's worker tick:  agent ring ─▶ (popped, dropped: the brain is muted)
//!                        Feed::Ringback ─▶ generated 440+480 Hz, 2 s on / 4 s off ─▶ A's wire
//!                        Feed::Frames(B's inbound ring) ─▶ A's wire
//!                        A's inbound frame ─▶ A's speech ring, and copy ─▶ B's outbound ring
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
        let ((mut b_in, mut b_out_worker), (b_inbound, b_outbound), _, _) = call_rings();
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
}

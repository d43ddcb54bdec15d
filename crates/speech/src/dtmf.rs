//! In-band DTMF (digits sent as tones inside the audio, for trunks without RFC 4733): Goertzel
//! power at the eight DTMF frequencies of each 20 ms frame, with the usual checks so speech does
//! not trigger it — the two tones must carry most of the frame's energy, stand out from the
//! other tones of their group, keep the twist within limits, and last at least 40 ms; a digit
//! is reported once, when confirmed, and again only after a pause.

const LOW: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const HIGH: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// The two tones must hold this share of the frame's energy.
const TONE_SHARE: f32 = 0.75;
/// Twist limits (high tone relative to low tone), dB.
const MAX_FORWARD_TWIST_DB: f32 = 8.0;
const MAX_REVERSE_TWIST_DB: f32 = 4.0;
/// Frames a digit must last (2 × 20 ms).
const CONFIRM_FRAMES: u32 = 2;
/// The weakest tone heard, dBFS (per tone).
const MIN_TONE_DBFS: f32 = -36.0;

/// Power of `samples` at `hz` (Goertzel, one filter alone: the reference the side-by-side
/// filters are checked against), normalised so a sine's power is its mean square (a
/// full-scale sine gives 0.5).
#[cfg(test)]
fn tone_power(samples: &[i16], rate: f32, hz: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / rate;
    let coefficient = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for x in samples {
        let s0 = f32::from(*x) / 32768.0 + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let n = samples.len().max(1) as f32;
    (s1 * s1 + s2 * s2 - coefficient * s1 * s2) * 2.0 / (n * n)
}

/// Goertzel powers of `samples` at each of `hz`, the `N` filters run side by side in one pass
/// over the samples (independent recurrences: the loop vectorises and does not wait on one
/// filter's chain), normalised as [`tone_power`].
pub(crate) fn tone_powers<const N: usize>(samples: &[i16], rate: f32, hz: &[f32; N]) -> [f32; N] {
    let coefficients = hz.map(|hz| 2.0 * (2.0 * std::f32::consts::PI * hz / rate).cos());
    let (mut s1, mut s2) = ([0.0f32; N], [0.0f32; N]);
    for x in samples {
        let x = f32::from(*x) / 32768.0;
        for ((a, b), c) in s1.iter_mut().zip(s2.iter_mut()).zip(&coefficients) {
            let s0 = x + c * *a - *b;
            *b = *a;
            *a = s0;
        }
    }
    let n = samples.len().max(1) as f32;
    let mut powers = [0.0f32; N];
    for (((p, a), b), c) in powers.iter_mut().zip(&s1).zip(&s2).zip(&coefficients) {
        *p = (a * a + b * b - c * a * b) * 2.0 / (n * n);
    }
    powers
}

/// Goertzel powers of the four tones of each group, in one pass.
fn group_powers(samples: &[i16], rate: f32) -> ([f32; 4], [f32; 4]) {
    let [l0, l1, l2, l3, h0, h1, h2, h3] = tone_powers(
        samples,
        rate,
        &[
            LOW[0], LOW[1], LOW[2], LOW[3], HIGH[0], HIGH[1], HIGH[2], HIGH[3],
        ],
    );
    ([l0, l1, l2, l3], [h0, h1, h2, h3])
}

/// The strongest tone of a group, its power, and the next strongest's.
fn strongest(powers: &[f32; 4]) -> (usize, f32, f32) {
    let mut best = 0;
    for (i, p) in powers.iter().enumerate() {
        if *p > powers.get(best).copied().unwrap_or(0.0) {
            best = i;
        }
    }
    let top = powers.get(best).copied().unwrap_or(0.0);
    let second = powers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, p)| *p)
        .fold(0.0f32, f32::max);
    (best, top, second)
}

fn db(ratio: f32) -> f32 {
    10.0 * ratio.max(1e-12).log10()
}

/// The in-band DTMF detector of one stream.
#[derive(Debug, Clone, Default)]
pub struct InbandDtmf {
    candidate: Option<char>,
    frames: u32,
    reported: bool,
}

impl InbandDtmf {
    /// Which digit, if any, a frame at `rate` Hz holds.
    pub fn classify(samples: &[i16], rate: u32) -> Option<char> {
        let rate = rate as f32;
        let energy = dialtone_codec::mean_square(samples) as f32;
        // A tone's Goertzel power is at most twice the frame's mean square (Cauchy-Schwarz), so
        // a frame too quiet to hold a tone at MIN_TONE_DBFS needs no filters at all.
        if energy <= 0.0 || 2.0 * energy < 10f32.powf(MIN_TONE_DBFS / 10.0) {
            return None;
        }
        let (low_powers, high_powers) = group_powers(samples, rate);
        let (row, low, low_next) = strongest(&low_powers);
        let (column, high, high_next) = strongest(&high_powers);
        // A sine of power p has mean square p (with this normalisation): compare to energy.
        let share = (low + high) / energy;
        let twist = db(high / low.max(1e-12));
        let clear = db(low / low_next.max(1e-12)) > 6.0 && db(high / high_next.max(1e-12)) > 6.0;
        let loud = db(low) > MIN_TONE_DBFS && db(high) > MIN_TONE_DBFS;
        let twist_ok = (-MAX_REVERSE_TWIST_DB..=MAX_FORWARD_TWIST_DB).contains(&twist);
        if share >= TONE_SHARE && clear && loud && twist_ok {
            KEYS.get(row).and_then(|r| r.get(column)).copied()
        } else {
            None
        }
    }

    /// Whether the last frame held a key's tone.
    pub fn hearing_tone(&self) -> bool {
        self.candidate.is_some()
    }

    /// Frames the tone heard now has lasted, this one included (0: none heard).
    pub fn tone_frames(&self) -> u32 {
        self.frames
    }

    /// Frames a tone lasts before it is reported as a digit.
    pub const CONFIRM_FRAMES: u32 = CONFIRM_FRAMES;

    /// Takes one 20 ms frame at `rate` Hz; returns a digit once it has lasted long enough.
    pub fn frame(&mut self, samples: &[i16], rate: u32) -> Option<char> {
        let digit = Self::classify(samples, rate);
        if digit.is_some() && digit == self.candidate {
            self.frames += 1;
        } else {
            self.candidate = digit;
            self.frames = u32::from(digit.is_some());
            self.reported = false;
        }
        if self.frames >= CONFIRM_FRAMES && !self.reported {
            self.reported = true;
            return self.candidate;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eight_filters_side_by_side_measure_what_each_does_alone() {
        let samples: Vec<i16> = (0..320)
            .map(|n| {
                let t = n as f32 / 16000.0;
                let tau = std::f32::consts::TAU;
                (8000.0 * (tau * 770.0 * t).sin() + 6000.0 * (tau * 1477.0 * t).sin()) as i16
            })
            .collect();
        let (low, high) = group_powers(&samples, 16000.0);
        for (hz, power) in LOW.iter().chain(&HIGH).zip(low.iter().chain(&high)) {
            let alone = tone_power(&samples, 16000.0, *hz);
            assert!(
                (power - alone).abs() <= alone.abs() * 1e-3 + 1e-9,
                "{hz} Hz: {power} side by side, {alone} alone"
            );
        }
        assert_eq!(InbandDtmf::classify(&samples, 16000), Some('6'));
    }
}

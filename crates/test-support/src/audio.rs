//! Audio checked as audio: sine generation and a Goertzel amplitude estimate, so a test can say
//! "a 1 kHz tone came out at the level it went in, and nothing else did".

/// Fills `out` with a sine at `hz` and peak `amplitude`, sampled at `rate`, starting at sample
/// index `start` of the tone (so consecutive frames join without a phase jump).
pub fn sine(rate: u32, hz: f64, amplitude: f64, start: usize, out: &mut [i16]) {
    for (i, o) in out.iter_mut().enumerate() {
        let t = (start + i) as f64 / f64::from(rate);
        *o = (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16;
    }
}

/// The peak amplitude of the component at `hz` in `samples` (Goertzel). Exact for a pure
/// tone when `hz` falls on a bin, i.e. `hz * samples.len() / rate` is whole.
pub fn tone_amplitude(samples: &[i16], rate: u32, hz: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coefficient = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s0 = f64::from(*x) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    2.0 * power.max(0.0).sqrt() / n
}

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

/// The gain of [`syllabic_sine`] at `seconds` into the tone: between 0.3 and 1.0, swinging at
/// 3 Hz like syllables.
pub fn syllabic_gain(seconds: f64) -> f64 {
    0.65 + 0.35 * (2.0 * std::f64::consts::PI * 3.0 * seconds).sin()
}

/// Like [`sine`], with the amplitude following [`syllabic_gain`]. Speech codecs treat it as
/// speech; a steady tone is classed as stationary noise (Opus then sends no FEC for it).
pub fn syllabic_sine(rate: u32, hz: f64, amplitude: f64, start: usize, out: &mut [i16]) {
    sine(rate, hz, amplitude, start, out);
    for (i, o) in out.iter_mut().enumerate() {
        let t = (start + i) as f64 / f64::from(rate);
        *o = (f64::from(*o) * syllabic_gain(t)).round() as i16;
    }
}

/// Fills `out` with the DTMF tone pair of `digit` (each tone at `amplitude` peak), sampled at
/// `rate`; silence for a character that is not a DTMF digit.
pub fn dtmf(rate: u32, digit: char, amplitude: f64, out: &mut [i16]) {
    let (low, high) = match digit {
        '1' => (697.0, 1209.0),
        '2' => (697.0, 1336.0),
        '3' => (697.0, 1477.0),
        'A' => (697.0, 1633.0),
        '4' => (770.0, 1209.0),
        '5' => (770.0, 1336.0),
        '6' => (770.0, 1477.0),
        'B' => (770.0, 1633.0),
        '7' => (852.0, 1209.0),
        '8' => (852.0, 1336.0),
        '9' => (852.0, 1477.0),
        'C' => (852.0, 1633.0),
        '*' => (941.0, 1209.0),
        '0' => (941.0, 1336.0),
        '#' => (941.0, 1477.0),
        'D' => (941.0, 1633.0),
        _ => {
            out.fill(0);
            return;
        }
    };
    for (i, o) in out.iter_mut().enumerate() {
        let t = i as f64 / f64::from(rate);
        let v = amplitude
            * ((2.0 * std::f64::consts::PI * low * t).sin()
                + (2.0 * std::f64::consts::PI * high * t).sin());
        *o = v.round().clamp(-32768.0, 32767.0) as i16;
    }
}

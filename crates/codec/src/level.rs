//! How loud a frame of 16-bit PCM is.
//!
//! The sum of squares is taken in integers: exact, and (unlike a floating-point sum, whose
//! order the compiler must keep) vectorised, which matters in the per-frame paths of the media
//! worker and the speech loop.

/// Mean square of `samples` relative to full scale (a full-scale square wave is 1); 0 for none.
pub fn mean_square(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: i64 = samples
        .iter()
        .map(|s| i64::from(i32::from(*s) * i32::from(*s)))
        .sum();
    sum as f64 / (samples.len() as f64 * 32768.0 * 32768.0)
}

/// RMS level of `samples` in dBFS (-100 for digital silence or none).
pub fn level_dbfs(samples: &[i16]) -> f64 {
    let power = mean_square(samples);
    if power <= 0.0 {
        return -100.0;
    }
    (10.0 * power.log10()).max(-100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_silence_full_scale_and_a_sine() {
        assert_eq!(level_dbfs(&[0; 160]), -100.0);
        assert_eq!(level_dbfs(&[]), -100.0);
        assert_eq!(mean_square(&[i16::MIN; 4]), 1.0);
        assert!(level_dbfs(&[i16::MAX; 160]) > -0.01);
        let sine: Vec<i16> = (0..8000)
            .map(|n| (16384.0 * (std::f64::consts::TAU * 1000.0 * n as f64 / 8000.0).sin()) as i16)
            .collect();
        // Half scale is -6.02 dB; a sine's RMS is 3.01 dB under its peak.
        assert!(
            (level_dbfs(&sine) + 9.03).abs() < 0.01,
            "{}",
            level_dbfs(&sine)
        );
    }

    #[test]
    fn the_integer_sum_agrees_with_a_floating_one() {
        let samples: Vec<i16> = (0..320u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 16) as u16 as i16)
            .collect();
        let float = samples
            .iter()
            .map(|s| (f64::from(*s) / 32768.0).powi(2))
            .sum::<f64>()
            / samples.len() as f64;
        assert!((mean_square(&samples) - float).abs() < 1e-12);
    }
}

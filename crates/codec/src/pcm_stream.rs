//! A stream (or a whole clip) of 16-bit little-endian PCM bytes at one rate turned into samples
//! at another: bytes are taken in pieces as the network delivers them (an odd byte waits for its
//! partner), resampled in whole 20 ms frames by a [`Resampler`], and handed out in chunks. The
//! resampler's delay is taken off the front and flushed at the end, so the output is exactly as
//! long as the input (in time) and not shifted.
//!
//! This is where speech from outside the media path comes to the engine's rate: speech
//! synthesisers' streams (24 kHz and the like) and the PCM clips an AgentBridge brain plays.
//! Unlike the frame [`Resampler`], it allocates as it goes.

use crate::{CodecError, Resampler};

/// Bytes of PCM at one rate in, samples at another out.
#[derive(Debug)]
pub struct PcmResampler {
    resampler: Resampler,
    from: u32,
    to: u32,
    odd: Option<u8>,
    pending: Vec<i16>,
    frame: Vec<i16>,
    out: Vec<i16>,
    /// Output samples still to drop (the resampler's delay).
    skip: usize,
    samples_in: u64,
    samples_out: u64,
}

/// A whole clip of PCM16LE `bytes` at `from` Hz as samples at `to` Hz, exactly as long in time
/// (a trailing odd byte is not a sample). The rates are those [`Resampler`] knows.
pub fn resample_pcm_clip(bytes: &[u8], from: u32, to: u32) -> Result<Vec<i16>, CodecError> {
    let mut pcm = PcmResampler::new(from, to)?;
    pcm.push_bytes(bytes);
    let mut out = pcm.take_chunk(1).unwrap_or_default();
    out.extend(pcm.finish());
    Ok(out)
}

impl PcmResampler {
    /// For PCM at `from` Hz to come out at `to` Hz (rates [`Resampler`] knows).
    pub fn new(from: u32, to: u32) -> Result<Self, CodecError> {
        let resampler = Resampler::new(from, to)?;
        Ok(Self {
            frame: vec![0; resampler.output_samples()],
            pending: Vec::with_capacity(resampler.input_samples() * 2),
            skip: resampler.delay(),
            resampler,
            from,
            to,
            odd: None,
            out: Vec::new(),
            samples_in: 0,
            samples_out: 0,
        })
    }

    /// Takes the next bytes of the stream.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            match self.odd.take() {
                None => self.odd = Some(*b),
                Some(lo) => self.pending.push(i16::from_le_bytes([lo, *b])),
            }
        }
        let n_in = self.resampler.input_samples();
        let whole = self.pending.len() / n_in * n_in;
        self.samples_in += whole as u64;
        let frames: Vec<i16> = self.pending.drain(..whole).collect();
        for input in frames.chunks_exact(n_in) {
            self.resample(input);
        }
    }

    /// The output so far, once at least `min` samples are ready.
    pub fn take_chunk(&mut self, min: usize) -> Option<Vec<i16>> {
        (self.out.len() >= min.max(1)).then(|| std::mem::take(&mut self.out))
    }

    /// The end of the stream: the last partial frame padded with silence, the resampler
    /// flushed; returns what is left (the whole output is then as long as the input in time).
    pub fn finish(&mut self) -> Vec<i16> {
        let n_in = self.resampler.input_samples();
        self.samples_in += self.pending.len() as u64;
        let wanted = (self.samples_in * u64::from(self.to) + u64::from(self.from) / 2)
            / u64::from(self.from);
        let mut input = std::mem::take(&mut self.pending);
        input.resize(n_in, 0);
        // Enough silence after the end to push the delayed tail out.
        let frames = 2 + self.resampler.delay() / self.resampler.output_samples().max(1);
        for _ in 0..frames {
            if self.samples_out >= wanted {
                break;
            }
            self.resample(&input);
            input.fill(0);
        }
        let extra = usize::try_from(self.samples_out.saturating_sub(wanted)).unwrap_or(0);
        self.out.truncate(self.out.len().saturating_sub(extra));
        self.samples_out -= extra as u64;
        std::mem::take(&mut self.out)
    }

    fn resample(&mut self, input: &[i16]) {
        let Ok(n) = self.resampler.process(input, &mut self.frame) else {
            return;
        };
        let produced = self.frame.get(..n).unwrap_or_default();
        let dropped = self.skip.min(produced.len());
        self.skip -= dropped;
        let kept = produced.get(dropped..).unwrap_or_default();
        self.out.extend_from_slice(kept);
        self.samples_out += kept.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use dialtone_test_support::audio::{sine, tone_amplitude};
    use proptest::prelude::*;

    /// 24 kHz bytes: `silent` samples of silence, then a 440 Hz tone to `total` samples.
    fn input(silent: usize, total: usize) -> Vec<u8> {
        let mut samples = vec![0i16; total];
        sine(24_000, 440.0, 8000.0, 0, &mut samples[silent..]);
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn run(bytes: &[u8], piece: usize) -> Vec<i16> {
        let mut pcm = PcmResampler::new(24_000, 16_000).unwrap();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            pcm.push_bytes(chunk);
            if let Some(samples) = pcm.take_chunk(1600) {
                out.extend(samples);
            }
        }
        out.extend(pcm.finish());
        out
    }

    #[test]
    fn the_output_is_as_long_as_the_input_and_not_shifted() {
        // 200 ms of silence then 300 ms of tone, in odd-sized pieces.
        let out = run(&input(4800, 12_000), 4801);
        assert_eq!(out.len(), 8000);
        let level = |range: std::ops::Range<usize>| tone_amplitude(&out[range], 16_000, 440.0);
        assert!(level(0..3000) < 400.0, "silence first: {}", level(0..3000));
        assert!(
            level(3400..8000) > 7600.0,
            "then the tone: {}",
            level(3400..8000)
        );
    }

    /// PCM16LE bytes at `rate`: `silent` samples of silence, then a 1 kHz tone to `total`.
    fn clip(rate: u32, silent: usize, total: usize) -> Vec<u8> {
        let mut samples = vec![0i16; total];
        sine(rate, 1000.0, 8000.0, 0, &mut samples[silent..]);
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn a_clip_at_each_rate_keeps_its_length_its_tone_and_its_timing() {
        for from in [8_000, 16_000, 24_000, 48_000] {
            let per_ms = from as usize / 1000;
            // 100 ms of silence, then 413 ms of tone: not a whole number of 20 ms frames.
            let out =
                resample_pcm_clip(&clip(from, 100 * per_ms, 513 * per_ms), from, 16_000).unwrap();
            assert_eq!(out.len(), 513 * 16, "{from} Hz: exactly as long");
            let onset = out.iter().position(|s| s.unsigned_abs() > 4000).unwrap();
            assert!(
                onset.abs_diff(1600) <= 8,
                "{from} Hz: the tone starts at 100 ms, not at sample {onset}"
            );
            let level = |range: std::ops::Range<usize>, hz| tone_amplitude(&out[range], 16_000, hz);
            assert!(level(0..1440, 1000.0) < 80.0, "{from} Hz: silence first");
            let body = level(1760..8192, 1000.0);
            assert!(
                (body - 8000.0).abs() < 240.0,
                "{from} Hz: the tone at {body:.0}"
            );
            let last = level(8208 - 320..8208, 1000.0);
            assert!(
                last > 7200.0,
                "{from} Hz: the tone to the end, {last:.0} in the last 20 ms"
            );
            for stray in [3000.0, 7000.0] {
                let level = level(1760..8192, stray);
                assert!(level < 80.0, "{from} Hz: {level:.0} at {stray} Hz");
            }
        }
    }

    #[test]
    fn short_and_odd_clips_keep_their_length() {
        for from in [8_000, 16_000, 24_000, 48_000] {
            for samples in [0usize, 1, 7, 159, 161, 479, 481, 961] {
                let mut bytes = clip(from, 0, samples);
                let expected = (samples as u64 * 16_000 + u64::from(from) / 2) / u64::from(from);
                let out = resample_pcm_clip(&bytes, from, 16_000).unwrap();
                assert_eq!(out.len() as u64, expected, "{samples} samples at {from} Hz");
                bytes.push(0x7f);
                assert_eq!(
                    resample_pcm_clip(&bytes, from, 16_000).unwrap(),
                    out,
                    "a trailing odd byte is not a sample"
                );
            }
        }
    }

    #[test]
    fn a_rate_the_resampler_does_not_know_is_refused() {
        assert!(matches!(
            resample_pcm_clip(&[0; 64], 11_025, 16_000),
            Err(CodecError::UnsupportedRate { rate: 11_025, .. })
        ));
    }

    proptest! {
        #[test]
        fn any_piece_size_gives_the_same_audio(
            piece in 1usize..3000,
            samples in 0usize..5000,
        ) {
            let bytes = input(0, samples);
            let whole = run(&bytes, bytes.len());
            prop_assert_eq!(whole.len(), (samples * 2 + 1) / 3);
            prop_assert_eq!(run(&bytes, piece), whole);
        }
    }
}

//! Sample-rate conversion of fixed 20 ms mono frames with rubato's synchronous FFT resampler
//! (8 k→16 k, 48 k→16 k, 16 k→8 k, 16 k→48 k, and 24 k↔16 k for brains that speak 24 kHz).
//!
//! Buffers are allocated when the resampler is made; [`Resampler::process`] converts
//! `i16` → `f32` → `i16` through them and does not allocate. The FFT method delays the signal
//! by [`Resampler::delay`] output samples (a few ms), constant for the stream's life.

use audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use crate::CodecError;

/// Converts 20 ms frames from one rate to another (or copies them when the rates match).
pub struct Resampler {
    fft: Option<Fft<f32>>,
    input: Vec<f32>,
    output: Vec<f32>,
    from: u32,
    to: u32,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

const RATES: [u32; 6] = [8000, 16000, 22050, 24000, 32000, 48000];

impl Resampler {
    /// A resampler of 20 ms frames from `from` Hz to `to` Hz (8, 16, 22.05, 24, 32 or 48 kHz;
    /// 22.05 kHz is what espeak-ng speaks).
    pub fn new(from: u32, to: u32) -> Result<Self, CodecError> {
        for rate in [from, to] {
            if !RATES.contains(&rate) {
                return Err(CodecError::UnsupportedRate {
                    codec: "resampler",
                    rate,
                });
            }
        }
        let (input_len, output_len) = (from as usize / 50, to as usize / 50);
        let fft = if from == to {
            None
        } else {
            Some(
                Fft::new(from as usize, to as usize, input_len, 1, FixedSync::Both).map_err(
                    |source| CodecError::ResamplerSetup {
                        from,
                        to,
                        source: Box::new(source),
                    },
                )?,
            )
        };
        Ok(Self {
            fft,
            input: vec![0.0; input_len],
            output: vec![0.0; output_len],
            from,
            to,
        })
    }

    /// Input samples per frame.
    pub fn input_samples(&self) -> usize {
        self.input.len()
    }

    /// Output samples per frame.
    pub fn output_samples(&self) -> usize {
        self.output.len()
    }

    /// How many output samples the conversion delays the signal by.
    pub fn delay(&self) -> usize {
        self.fft.as_ref().map_or(0, |f| f.output_delay())
    }

    /// Converts one frame (`input` exactly [`input_samples`](Self::input_samples) long) into
    /// `out` (at least [`output_samples`](Self::output_samples)); returns the samples written.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, CodecError> {
        let (expected, wanted) = (self.input.len(), self.output.len());
        if input.len() != expected {
            return Err(CodecError::FrameSize {
                expected,
                got: input.len(),
            });
        }
        let got = out.len();
        let out = out.get_mut(..wanted).ok_or(CodecError::FrameSize {
            expected: wanted,
            got,
        })?;
        let Some(fft) = self.fft.as_mut() else {
            out.copy_from_slice(input);
            return Ok(wanted);
        };
        for (f, s) in self.input.iter_mut().zip(input) {
            *f = f32::from(*s) / 32768.0;
        }
        let adapter_error = |_| CodecError::FrameSize { expected, got };
        let input = SequentialSlice::new(&self.input, 1, expected).map_err(adapter_error)?;
        let mut output =
            SequentialSlice::new_mut(&mut self.output, 1, wanted).map_err(adapter_error)?;
        fft.process_into_buffer(&input, &mut output, None)
            .map_err(|source| CodecError::Resample {
                from: self.from,
                to: self.to,
                source: Box::new(source),
            })?;
        for (o, f) in out.iter_mut().zip(&self.output) {
            *o = (f * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        Ok(wanted)
    }
}

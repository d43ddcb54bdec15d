//! # dialtone-codec — audio codecs for Dialtone
//!
//! * G.711 µ-law and A-law (ITU-T G.711), encoding 16-bit linear PCM into caller-owned byte
//!   buffers and back. Decoding uses 256-entry tables built at compile time; encoding is a few
//!   integer operations per sample. A [`Concealer`] stands in for lost G.711 frames.
//! * G.722 ([`G722Encoder`], [`G722Decoder`]): wideband, 16 kHz in 64 kbit/s, through the
//!   `audio-codec` crate.
//! * Opus ([`OpusEncoder`], [`OpusDecoder`]) through libopus at 8, 16 or 48 kHz, with in-band
//!   FEC and packet-loss concealment.
//! * [`level_dbfs`] and [`mean_square`]: how loud a frame is.
//! * [`Resampler`]: fixed 20 ms frames between 8, 16, 24, 32 and 48 kHz (a half-band FIR of
//!   our own for 8 k↔16 k, rubato's FFT resampler for the rest).
//! * [`PcmResampler`] and [`resample_pcm_clip`]: a stream or a clip of PCM16LE bytes at one of
//!   those rates as samples at another, exactly as long and not shifted by the resampler's
//!   delay (speech synthesisers' streams, an AgentBridge brain's clips).
//!
//! The codecs and [`Resampler`] work on 20 ms mono frames in caller-owned buffers; after
//! construction nothing allocates per frame. [`PcmResampler`], for audio from outside the media
//! path, allocates as it goes.
//!
//! ```
//! use dialtone_codec::{G711, G711Law};
//! let pcm = [0i16, 1000, -1000, 32000];
//! let mut encoded = [0u8; 4];
//! let mut decoded = [0i16; 4];
//! let codec = G711::new(G711Law::Mu);
//! codec.encode(&pcm, &mut encoded);
//! codec.decode(&encoded, &mut decoded);
//! assert!((decoded[1] - 1000).abs() < 40);
//! ```

mod g722;
mod level;
mod opus;
mod pcm_stream;
mod resample;

pub use g722::{G722_FRAME_BYTES, G722_FRAME_SAMPLES, G722Decoder, G722Encoder};
pub use level::{level_dbfs, mean_square};
pub use opus::{OpusDecoder, OpusEncoder};
pub use pcm_stream::{PcmResampler, resample_pcm_clip};
pub use resample::Resampler;

/// Errors of the codecs and resamplers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The codec or resampler does not run at this rate.
    #[error("{codec} does not support {rate} Hz")]
    UnsupportedRate {
        /// Which codec or component.
        codec: &'static str,
        /// The rate asked for.
        rate: u32,
    },
    /// A buffer is not one frame long.
    #[error("frame of {got} samples where {expected} are needed")]
    FrameSize {
        /// Samples needed.
        expected: usize,
        /// Samples given.
        got: usize,
    },
    /// The G.722 coder refused a frame (a buffer too small, a payload it cannot take).
    #[error("G.722 could not {operation}: {detail}")]
    G722 {
        /// What was being done.
        operation: &'static str,
        /// Its error.
        detail: String,
    },
    /// libopus refused an operation (a corrupt packet, a bad setting).
    #[error("opus could not {operation}: {source}")]
    Opus {
        /// What was being done.
        operation: &'static str,
        /// libopus's error.
        source: audiopus::Error,
    },
    /// The resampler could not be built for these rates.
    #[error("cannot resample {from} Hz to {to} Hz: {source}")]
    ResamplerSetup {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// rubato's error.
        source: Box<rubato::ResamplerConstructionError>,
    },
    /// Resampling a frame failed.
    #[error("resampling {from} Hz to {to} Hz failed: {source}")]
    Resample {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// rubato's error.
        source: Box<rubato::ResampleError>,
    },
}

/// Which G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711Law {
    /// µ-law (PCMU, RTP payload type 0), North America and Japan.
    Mu,
    /// A-law (PCMA, RTP payload type 8), elsewhere.
    A,
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Encodes one linear sample to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(ULAW_CLIP) + ULAW_BIAS;
    // Exponent: position of the highest set bit above bit 7 (0..=7).
    let exponent = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | ((exponent as i32) << 4) | mantissa) as u8
}

/// Decodes one µ-law byte to a linear sample.
pub const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one linear sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let (mask, magnitude) = if sample >= 0 {
        (0xd5u8, i32::from(sample) >> 3)
    } else {
        (0x55u8, (-i32::from(sample) - 1) >> 3)
    };
    // Segment: 0 for magnitudes below 32, then one per doubling, up to 7.
    let segment = (32 - (magnitude as u32 | 0x1f).leading_zeros()).saturating_sub(5);
    let value = if segment >= 8 {
        0x7f
    } else {
        let shift = if segment < 2 { 1 } else { segment };
        ((segment << 4) as i32 | ((magnitude >> shift) & 0x0f)) as u8
    };
    value ^ mask
}

/// Decodes one A-law byte to a linear sample.
pub const fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

// invariant: `i` runs over 0..256, the table's length.
#[allow(clippy::indexing_slicing)]
const fn table(law: G711Law) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match law {
            G711Law::Mu => ulaw_to_linear(i as u8),
            G711Law::A => alaw_to_linear(i as u8),
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = table(G711Law::Mu);
static ALAW_TABLE: [i16; 256] = table(G711Law::A);

/// A G.711 coder of one law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct G711 {
    law: G711Law,
}

impl G711 {
    /// A coder for `law`.
    pub fn new(law: G711Law) -> Self {
        Self { law }
    }

    /// The law.
    pub fn law(&self) -> G711Law {
        self.law
    }

    /// Encodes `pcm` into `out`; returns the number of bytes written (the shorter length).
    pub fn encode(&self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        let encode = match self.law {
            G711Law::Mu => linear_to_ulaw,
            G711Law::A => linear_to_alaw,
        };
        for (o, s) in out.iter_mut().zip(pcm) {
            *o = encode(*s);
        }
        n
    }

    /// Decodes `encoded` into `out`; returns the number of samples written.
    pub fn decode(&self, encoded: &[u8], out: &mut [i16]) -> usize {
        let n = encoded.len().min(out.len());
        let table = match self.law {
            G711Law::Mu => &ULAW_TABLE,
            G711Law::A => &ALAW_TABLE,
        };
        for (o, b) in out.iter_mut().zip(encoded) {
            *o = table.get(usize::from(*b)).copied().unwrap_or_default();
        }
        n
    }
}

/// Packet-loss concealment for codecs without their own (G.711): a lost frame is the last good
/// frame again, each repetition quieter, fading to silence after a few, so a loss sounds like a
/// brief dip rather than a click or a hole.
#[derive(Debug, Clone)]
pub struct Concealer {
    last: Vec<i16>,
    losses: u32,
}

impl Concealer {
    /// A concealer for frames of `samples` samples.
    pub fn new(samples: usize) -> Self {
        Self {
            last: vec![0; samples],
            losses: 0,
        }
    }

    /// Remembers a frame that arrived.
    pub fn good(&mut self, frame: &[i16]) {
        for (l, s) in self.last.iter_mut().zip(frame) {
            *l = *s;
        }
        self.losses = 0;
    }

    /// Writes the stand-in for a lost frame into `out`.
    pub fn conceal(&mut self, out: &mut [i16]) {
        self.losses += 1;
        // Gain 0.7, 0.49, 0.34, ... and silence from the sixth loss on.
        let gain = if self.losses > 5 {
            0.0
        } else {
            0.7f32.powi(self.losses as i32)
        };
        for (o, l) in out.iter_mut().zip(&self.last) {
            *o = (f32::from(*l) * gain).round() as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concealment_repeats_and_fades_to_silence() {
        let mut c = Concealer::new(4);
        c.good(&[1000, -1000, 500, 0]);
        let mut out = [0i16; 4];
        c.conceal(&mut out);
        assert_eq!(out, [700, -700, 350, 0]);
        c.conceal(&mut out);
        assert_eq!(out, [490, -490, 245, 0]);
        for _ in 0..4 {
            c.conceal(&mut out);
        }
        assert_eq!(out, [0; 4]);
        c.good(&[10, 10, 10, 10]);
        c.conceal(&mut out);
        assert_eq!(out, [7; 4]);
    }

    #[test]
    fn known_ulaw_values() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn known_alaw_values() {
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for b in 0..=255u8 {
            // µ-law has two zeros (0x7f and 0xff); both decode to 0, which encodes as 0xff.
            let back = linear_to_ulaw(ulaw_to_linear(b));
            assert!(
                back == b || (ulaw_to_linear(b) == 0 && back == 0xff),
                "µ {b:#x}"
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "A {b:#x}");
        }
    }

    #[test]
    fn quantisation_error_stays_within_the_segment_step() {
        for law in [G711Law::Mu, G711Law::A] {
            let codec = G711::new(law);
            for s in (i16::MIN..=i16::MAX).step_by(7) {
                let mut e = [0u8; 1];
                let mut d = [0i16; 1];
                codec.encode(&[s], &mut e);
                codec.decode(&e, &mut d);
                let error = (i32::from(s) - i32::from(d[0])).abs();
                // Half a quantisation step: about 1/32 of the magnitude, at least a few LSBs.
                let bound = i32::from(s).abs() / 32 + 20;
                assert!(error <= bound, "{law:?} {s} -> {}", d[0]);
            }
        }
    }

    #[test]
    fn buffers_of_different_lengths_use_the_shorter() {
        let codec = G711::new(G711Law::A);
        let mut out = [0u8; 2];
        assert_eq!(codec.encode(&[1, 2, 3], &mut out), 2);
        let mut pcm = [0i16; 5];
        assert_eq!(codec.decode(&[0xd5; 3], &mut pcm), 3);
    }
}

//! G.722 (ITU-T G.722, 64 kbit/s sub-band ADPCM): 16 kHz audio, 20 ms frames of 320 samples
//! into 160 bytes and back. The RTP clock of G.722 is 8000 Hz (RFC 3551's historical error),
//! which is the media layer's business, not this one's.
//!
//! The coding itself is the `audio-codec` crate's (pure Rust, no allocation in
//! `encode_into`/`decode_into`): the standard's bit-exact tables and filters are better taken
//! from a maintained crate than typed again. This wrapper fixes the frame size and maps its
//! errors into [`CodecError`].

use audio_codec::g722::{G722Decoder as Decoder, G722Encoder as Encoder};
use audio_codec::{Decoder as _, Encoder as _};

use crate::CodecError;

/// Samples in a 20 ms G.722 frame (16 kHz).
pub const G722_FRAME_SAMPLES: usize = 320;
/// Bytes of a 20 ms G.722 frame (64 kbit/s).
pub const G722_FRAME_BYTES: usize = 160;

/// A G.722 encoder of one stream (its ADPCM state carries from frame to frame).
pub struct G722Encoder(Encoder);

/// A G.722 decoder of one stream.
pub struct G722Decoder(Decoder);

impl std::fmt::Debug for G722Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("G722Encoder")
    }
}

impl std::fmt::Debug for G722Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("G722Decoder")
    }
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self(Encoder::new())
    }
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self(Decoder::new())
    }
}

impl G722Encoder {
    /// Encodes one 20 ms frame (320 samples at 16 kHz) into `out` (at least 160 bytes);
    /// returns the bytes written.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if pcm.len() != G722_FRAME_SAMPLES {
            return Err(CodecError::FrameSize {
                expected: G722_FRAME_SAMPLES,
                got: pcm.len(),
            });
        }
        self.0.encode_into(pcm, out).map_err(|e| CodecError::G722 {
            operation: "encode",
            detail: format!("{e:?}"),
        })
    }
}

impl G722Decoder {
    /// Decodes a payload (160 bytes for 20 ms) into `out` (two samples a byte, 16 kHz);
    /// returns the samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        self.0
            .decode_into(payload, out)
            .map_err(|e| CodecError::G722 {
                operation: "decode",
                detail: format!("{e:?}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tone goes through at its frequency and level, and silence stays silent.
    #[test]
    fn a_tone_comes_back_as_the_tone_and_silence_as_silence() {
        use dialtone_test_support::audio::{sine, tone_amplitude};
        let mut encoder = G722Encoder::default();
        let mut decoder = G722Decoder::default();
        let mut decoded = Vec::new();
        for frame in 0..50 {
            let mut pcm = [0i16; G722_FRAME_SAMPLES];
            sine(16000, 1000.0, 8000.0, frame * G722_FRAME_SAMPLES, &mut pcm);
            let mut bytes = [0u8; G722_FRAME_BYTES];
            assert_eq!(encoder.encode(&pcm, &mut bytes).unwrap(), G722_FRAME_BYTES);
            let mut out = [0i16; G722_FRAME_SAMPLES];
            assert_eq!(
                decoder.decode(&bytes, &mut out).unwrap(),
                G722_FRAME_SAMPLES
            );
            decoded.extend_from_slice(&out);
        }
        // After the codec's settling, the tone at its level; the 7 kHz band kept (a 6 kHz
        // tone, which G.711 cannot carry, passes too).
        let tail = &decoded[16000 / 2..];
        let amplitude = tone_amplitude(tail, 16000, 1000.0);
        assert!((7000.0..9000.0).contains(&amplitude), "{amplitude}");
        let mut wide = Vec::new();
        for frame in 0..25 {
            let mut pcm = [0i16; G722_FRAME_SAMPLES];
            sine(16000, 6000.0, 8000.0, frame * G722_FRAME_SAMPLES, &mut pcm);
            let mut bytes = [0u8; G722_FRAME_BYTES];
            encoder.encode(&pcm, &mut bytes).unwrap();
            let mut out = [0i16; G722_FRAME_SAMPLES];
            decoder.decode(&bytes, &mut out).unwrap();
            wide.extend_from_slice(&out);
        }
        let amplitude = tone_amplitude(&wide[16000 / 4..], 16000, 6000.0);
        assert!(amplitude > 4000.0, "{amplitude}");
        let mut quiet = [0i16; G722_FRAME_SAMPLES];
        for _ in 0..10 {
            let mut bytes = [0u8; G722_FRAME_BYTES];
            encoder
                .encode(&[0; G722_FRAME_SAMPLES], &mut bytes)
                .unwrap();
            decoder.decode(&bytes, &mut quiet).unwrap();
        }
        assert!(quiet.iter().all(|s| s.abs() < 64), "{:?}", &quiet[..8]);
        assert!(encoder.encode(&[0; 100], &mut [0; 160]).is_err());
    }
}

//! Opus (RFC 6716) through libopus, mono, 20 ms frames, at 8, 16 or 48 kHz.
//!
//! The encoder runs in VoIP mode with in-band FEC on, so a lost packet can be rebuilt from the
//! redundancy carried in the next one; the decoder does that ([`OpusDecoder::recover`]) when
//! the next packet is already buffered, and falls back to libopus's own concealment otherwise.
//! Every call writes into a caller-owned buffer.

use audiopus::coder::{Decoder, Encoder};
use audiopus::packet::Packet;
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate, Signal};

use crate::CodecError;

fn sample_rate(rate: u32) -> Result<SampleRate, CodecError> {
    match rate {
        8000 => Ok(SampleRate::Hz8000),
        16000 => Ok(SampleRate::Hz16000),
        48000 => Ok(SampleRate::Hz48000),
        _ => Err(CodecError::UnsupportedRate {
            codec: "opus",
            rate,
        }),
    }
}

fn opus_error(operation: &'static str) -> impl FnOnce(audiopus::Error) -> CodecError {
    move |source| CodecError::Opus { operation, source }
}

/// An Opus encoder of 20 ms mono frames.
#[derive(Debug)]
pub struct OpusEncoder {
    inner: Encoder,
    frame_samples: usize,
}

impl OpusEncoder {
    /// An encoder for PCM at `rate` Hz (8000, 16000 or 48000): 24 kbit/s, speech, complexity 5,
    /// FEC tuned for 10 % loss.
    pub fn new(rate: u32) -> Result<Self, CodecError> {
        let mut inner = Encoder::new(sample_rate(rate)?, Channels::Mono, Application::Voip)
            .map_err(opus_error("create encoder"))?;
        inner
            .set_bitrate(Bitrate::BitsPerSecond(24_000))
            .map_err(opus_error("set bitrate"))?;
        inner
            .set_inband_fec(true)
            .map_err(opus_error("enable FEC"))?;
        inner
            .set_packet_loss_perc(10)
            .map_err(opus_error("set expected loss"))?;
        // Telephone audio is speech: keep the encoder in SILK, whose LBRR carries the FEC
        // (a CELT frame has none).
        inner
            .set_signal(Signal::Voice)
            .map_err(opus_error("set signal type"))?;
        // Complexity 5 of 10: a third of the CPU of the default for speech that sounds the same
        // on a phone call (see the codec benches); a node encodes one stream per call.
        inner
            .set_complexity(5)
            .map_err(opus_error("set complexity"))?;
        Ok(Self {
            inner,
            frame_samples: rate as usize / 50,
        })
    }

    /// Samples in one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Encodes one 20 ms frame into `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if pcm.len() != self.frame_samples {
            return Err(CodecError::FrameSize {
                expected: self.frame_samples,
                got: pcm.len(),
            });
        }
        self.inner.encode(pcm, out).map_err(opus_error("encode"))
    }
}

/// An Opus decoder to mono PCM at one rate.
#[derive(Debug)]
pub struct OpusDecoder {
    inner: Decoder,
    frame_samples: usize,
}

impl OpusDecoder {
    /// A decoder producing PCM at `rate` Hz (8000, 16000 or 48000), whatever rate the sender
    /// encoded at.
    pub fn new(rate: u32) -> Result<Self, CodecError> {
        let inner = Decoder::new(sample_rate(rate)?, Channels::Mono)
            .map_err(opus_error("create decoder"))?;
        Ok(Self {
            inner,
            frame_samples: rate as usize / 50,
        })
    }

    /// Samples in one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    fn frame<'a>(&self, out: &'a mut [i16]) -> Result<MutSignals<'a, i16>, CodecError> {
        let got = out.len();
        let frame = out
            .get_mut(..self.frame_samples)
            .ok_or(CodecError::FrameSize {
                expected: self.frame_samples,
                got,
            })?;
        MutSignals::try_from(frame).map_err(opus_error("borrow output"))
    }

    /// Decodes `packet` into `out` (at least one frame long); returns the samples written.
    /// A corrupt packet is an error, never a panic.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let packet = Packet::try_from(packet).map_err(opus_error("read packet"))?;
        let signals = self.frame(out)?;
        self.inner
            .decode(Some(packet), signals, false)
            .map_err(opus_error("decode"))
    }

    /// Writes a stand-in for one lost 20 ms frame into `out`: rebuilt from the FEC data in
    /// `next` (the packet after the lost one) when it is at hand, else concealed by libopus.
    pub fn recover(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Result<usize, CodecError> {
        let signals = self.frame(out)?;
        match next.and_then(|p| Packet::try_from(p).ok()) {
            Some(packet) => self
                .inner
                .decode(Some(packet), signals, true)
                .map_err(opus_error("decode FEC")),
            None => self
                .inner
                .decode(None, signals, false)
                .map_err(opus_error("conceal")),
        }
    }
}

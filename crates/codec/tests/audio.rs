#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Tones through every codec and resampler come out at the frequency and level they went in.

use dialtone_codec::{CodecError, G711, G711Law, OpusDecoder, OpusEncoder, Resampler};
use dialtone_test_support::audio::{sine, tone_amplitude};

const AMPLITUDE: f64 = 8000.0;

/// Asserts `frame` is a 1 kHz tone of about `AMPLITUDE` with little energy at other tones.
fn assert_1khz(frame: &[i16], rate: u32, what: &str) {
    let at_tone = tone_amplitude(frame, rate, 1000.0);
    assert!(
        (at_tone - AMPLITUDE).abs() < AMPLITUDE * 0.12,
        "{what}: 1 kHz at {at_tone:.0}, sent {AMPLITUDE}"
    );
    for other in [500.0, 1500.0, 2500.0] {
        let leak = tone_amplitude(frame, rate, other);
        assert!(leak < AMPLITUDE * 0.05, "{what}: {other} Hz at {leak:.0}");
    }
}

#[test]
fn g711_keeps_a_tone() {
    for law in [G711Law::Mu, G711Law::A] {
        let codec = G711::new(law);
        let mut pcm = [0i16; 160];
        sine(8000, 1000.0, AMPLITUDE, 0, &mut pcm);
        let mut encoded = [0u8; 160];
        let mut decoded = [0i16; 160];
        codec.encode(&pcm, &mut encoded);
        codec.decode(&encoded, &mut decoded);
        assert_1khz(&decoded, 8000, &format!("{law:?}"));
    }
}

#[test]
fn opus_keeps_a_tone_at_every_rate() {
    for rate in [8000, 16000, 48000] {
        let mut encoder = OpusEncoder::new(rate).unwrap();
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let n = encoder.frame_samples();
        let mut pcm = vec![0i16; n];
        let mut packet = [0u8; 1500];
        let mut decoded = vec![0i16; n];
        for i in 0..30 {
            sine(rate, 1000.0, AMPLITUDE, i * n, &mut pcm);
            let len = encoder.encode(&pcm, &mut packet).unwrap();
            assert!(len < 200, "{rate}: {len} bytes for 20 ms at 24 kbit/s");
            assert_eq!(decoder.decode(&packet[..len], &mut decoded).unwrap(), n);
        }
        // After the codec's start-up, a decoded frame is the tone.
        assert_1khz(&decoded, rate, &format!("opus {rate}"));
    }
}

#[test]
fn opus_rebuilds_a_lost_frame_from_the_next_packets_fec() {
    let rate = 16000;
    let mut encoder = OpusEncoder::new(rate).unwrap();
    let mut decoder = OpusDecoder::new(rate).unwrap();
    let mut pcm = [0i16; 320];
    let mut packets = Vec::new();
    for i in 0..40 {
        sine(rate, 1000.0, AMPLITUDE, i * 320, &mut pcm);
        let mut packet = [0u8; 1500];
        let len = encoder.encode(&pcm, &mut packet).unwrap();
        packets.push(packet[..len].to_vec());
    }
    let mut out = [0i16; 320];
    for p in &packets[..30] {
        decoder.decode(p, &mut out).unwrap();
    }
    // Packet 30 is lost; 31 is buffered, so its FEC rebuilds 30.
    assert_eq!(decoder.recover(Some(&packets[31]), &mut out).unwrap(), 320);
    assert_1khz(&out, rate, "FEC");
    decoder.decode(&packets[31], &mut out).unwrap();
    // Nothing buffered: libopus conceals, which keeps the tone going rather than a hole.
    assert_eq!(decoder.recover(None, &mut out).unwrap(), 320);
    assert!(tone_amplitude(&out, rate, 1000.0) > AMPLITUDE * 0.3);
}

#[test]
fn opus_refuses_bad_input_without_panicking() {
    let mut decoder = OpusDecoder::new(16000).unwrap();
    let mut out = [0i16; 320];
    assert!(matches!(
        decoder.decode(&[], &mut out),
        Err(CodecError::Opus { .. })
    ));
    // A packet whose TOC announces more audio than one frame holds.
    assert!(decoder.decode(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
    let mut short = [0i16; 100];
    assert!(matches!(
        decoder.decode(&[0x08, 0x00], &mut short),
        Err(CodecError::FrameSize {
            expected: 320,
            got: 100
        })
    ));
    assert!(matches!(
        OpusEncoder::new(44100),
        Err(CodecError::UnsupportedRate { rate: 44100, .. })
    ));
    let mut encoder = OpusEncoder::new(8000).unwrap();
    assert!(encoder.encode(&[0; 100], &mut [0u8; 100]).is_err());
}

#[test]
fn every_resampler_keeps_a_tone() {
    for (from, to) in [
        (8000, 16000),
        (48000, 16000),
        (16000, 8000),
        (16000, 48000),
        (24000, 16000),
        (16000, 24000),
        (16000, 16000),
    ] {
        let mut resampler = Resampler::new(from, to).unwrap();
        let (n_in, n_out) = (resampler.input_samples(), resampler.output_samples());
        assert_eq!((n_in, n_out), (from as usize / 50, to as usize / 50));
        let mut input = vec![0i16; n_in];
        let mut output = vec![0i16; n_out];
        for i in 0..10 {
            sine(from, 1000.0, AMPLITUDE, i * n_in, &mut input);
            assert_eq!(resampler.process(&input, &mut output).unwrap(), n_out);
        }
        assert_1khz(&output, to, &format!("{from}->{to}"));
        assert!(
            resampler.delay() < n_out,
            "{from}->{to} delays less than a frame"
        );
    }
}

#[test]
fn downsampling_removes_what_the_lower_rate_cannot_carry() {
    // 6 kHz fits at 16 kHz but not at 8 kHz: it must be filtered out, not folded to 2 kHz.
    let mut resampler = Resampler::new(16000, 8000).unwrap();
    let mut input = [0i16; 320];
    let mut output = [0i16; 160];
    for i in 0..10 {
        sine(16000, 6000.0, AMPLITUDE, i * 320, &mut input);
        resampler.process(&input, &mut output).unwrap();
    }
    assert!(tone_amplitude(&output, 8000, 2000.0) < AMPLITUDE * 0.02);
}

#[test]
fn resampler_refuses_wrong_frames_and_rates() {
    assert!(matches!(
        Resampler::new(11025, 16000),
        Err(CodecError::UnsupportedRate { rate: 11025, .. })
    ));
    let mut resampler = Resampler::new(8000, 16000).unwrap();
    assert!(matches!(
        resampler.process(&[0; 100], &mut [0; 320]),
        Err(CodecError::FrameSize {
            expected: 160,
            got: 100
        })
    ));
    assert!(resampler.process(&[0; 160], &mut [0; 100]).is_err());
}

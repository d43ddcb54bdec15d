#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Tones through every codec and resampler come out at the frequency and level they went in.

use dialtone_codec::{CodecError, G711, G711Law, OpusDecoder, OpusEncoder, Resampler};
use dialtone_test_support::audio::{sine, syllabic_sine, tone_amplitude};

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
fn opus_fec_rebuilds_lost_frames_better_than_concealment_alone() {
    let rate = 16000;
    let mut encoder = OpusEncoder::new(rate).unwrap();
    let mut packets = Vec::new();
    let mut pcm = [0i16; 320];
    for i in 0..400 {
        syllabic_sine(rate, 1000.0, AMPLITUDE, i * 320, &mut pcm);
        let mut packet = [0u8; 1500];
        let len = encoder.encode(&pcm, &mut packet).unwrap();
        packets.push(packet[..len].to_vec());
    }
    // 10 % of the packets lost (seeded), never two in a row, none at the start.
    let mut seed = 5u64;
    let mut lost = vec![false; 400];
    for i in 20..398 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lost[i] = !lost[i - 1] && seed.is_multiple_of(10);
    }
    let mut reference = OpusDecoder::new(rate).unwrap();
    let mut with_fec = OpusDecoder::new(rate).unwrap();
    let mut plc_only = OpusDecoder::new(rate).unwrap();
    let (mut want, mut fec_out, mut plc_out) = ([0i16; 320], [0i16; 320], [0i16; 320]);
    let (mut fec_error, mut plc_error, mut rebuilt, mut losses) = (0.0, 0.0, 0, 0);
    for i in 0..399 {
        reference.decode(&packets[i], &mut want).unwrap();
        if lost[i] {
            losses += 1;
            with_fec
                .recover(Some(&packets[i + 1]), &mut fec_out)
                .unwrap();
            plc_only.recover(None, &mut plc_out).unwrap();
        } else {
            with_fec.decode(&packets[i], &mut fec_out).unwrap();
            plc_only.decode(&packets[i], &mut plc_out).unwrap();
        }
        if lost[i] || i > 0 && lost[i - 1] {
            // The lost frame and the one after it, against the lossless decode.
            let w = tone_amplitude(&want, rate, 1000.0);
            let f = (tone_amplitude(&fec_out, rate, 1000.0) - w).abs() / w;
            fec_error += f;
            plc_error += (tone_amplitude(&plc_out, rate, 1000.0) - w).abs() / w;
            if lost[i] && f < 0.2 {
                rebuilt += 1;
            }
        }
    }
    assert!(losses >= 25, "{losses} losses");
    // libopus sends FEC only for frames its VAD finds active enough, so not every loss is
    // rebuilt; many are, and the losses sound far closer to the original than concealment.
    assert!(rebuilt * 5 >= losses * 2, "{rebuilt} of {losses} rebuilt");
    assert!(
        fec_error < plc_error * 0.7,
        "FEC error {fec_error:.1}, PLC error {plc_error:.1}"
    );
    // Concealment alone still keeps the tone going rather than leaving a hole.
    assert!(tone_amplitude(&plc_out, rate, 1000.0) > AMPLITUDE * 0.05);
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
        (22050, 16000),
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

#[test]
fn upsampling_leaves_no_image_above_the_lower_rate() {
    // 1 kHz at 8 kHz, upsampled: its mirror at 7 kHz must be filtered out.
    let mut resampler = Resampler::new(8000, 16000).unwrap();
    let mut input = [0i16; 160];
    let mut output = [0i16; 320];
    for i in 0..10 {
        sine(8000, 1000.0, AMPLITUDE, i * 160, &mut input);
        resampler.process(&input, &mut output).unwrap();
    }
    assert_1khz(&output, 16000, "8000->16000");
    assert!(tone_amplitude(&output, 16000, 7000.0) < AMPLITUDE * 0.002);
}

#[test]
fn the_telephone_band_passes_flat_both_ways() {
    // 300 Hz to 3.4 kHz keep their level through 8 k→16 k→8 k, delayed by the two filters.
    for hz in [300.0, 1000.0, 2000.0, 3000.0, 3400.0] {
        let mut up = Resampler::new(8000, 16000).unwrap();
        let mut down = Resampler::new(16000, 8000).unwrap();
        let (mut input, mut wide, mut output) = ([0i16; 160], [0i16; 320], [0i16; 160]);
        for i in 0..10 {
            sine(8000, hz, AMPLITUDE, i * 160, &mut input);
            up.process(&input, &mut wide).unwrap();
            down.process(&wide, &mut output).unwrap();
        }
        let level = tone_amplitude(&output, 8000, hz);
        assert!(
            (level - AMPLITUDE).abs() < AMPLITUDE * 0.12,
            "{hz} Hz came back at {level:.0}"
        );
    }
}

#[test]
fn a_click_comes_out_after_the_stated_delay() {
    for (from, to) in [(8000, 16000), (16000, 8000)] {
        let mut resampler = Resampler::new(from, to).unwrap();
        let mut input = vec![0i16; resampler.input_samples()];
        let mut output = vec![0i16; resampler.output_samples()];
        input[0] = 16000;
        resampler.process(&input, &mut output).unwrap();
        let peak = (0..output.len())
            .max_by_key(|&i| output[i].unsigned_abs())
            .unwrap();
        assert!(
            peak.abs_diff(resampler.delay()) <= 1,
            "{from}->{to}: peak at {peak}, delay says {}",
            resampler.delay()
        );
    }
}

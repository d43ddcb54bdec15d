//! Media hot paths, per 20 ms frame: G.711, G.722 and Opus encode/decode, each resampler, RTP
//! write and parse, SRTP protect and unprotect (both suites), the jitter buffer push+pop, and
//! one call's whole media step (a packet in, one tick: jitter buffer, decode, resample, speech
//! ring, agent ring, resample, encode, packet out) for G.711, G.722 and Opus, and for G.711 in
//! clear and under SRTP side by side (`media/call_step_g711/{clear,srtp}`; the SRTP one also
//! protects the far end's packet, one `srtp/protect` more than the call itself does).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use dialtone_codec::{
    G711, G711Law, G722Decoder, G722Encoder, OpusDecoder, OpusEncoder, Resampler,
};
use dialtone_media::{AudioFrame, CallMedia, MediaCodec, MediaConfig};
use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile, SrtpSession};
use dialtone_rtp::{JitterBuffer, Playout, RtpPacket, RtpSender, parse};

fn tone<const N: usize>(rate: f64) -> [i16; N] {
    std::array::from_fn(|i| {
        (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate).sin()) as i16
    })
}

fn codecs(c: &mut Criterion) {
    let pcm: [i16; 160] = tone(8000.0);
    let ulaw = G711::new(G711Law::Mu);
    let mut encoded = [0u8; 160];
    let mut decoded = [0i16; 160];
    c.bench_function("codec/g711_ulaw_encode_20ms", |b| {
        b.iter(|| ulaw.encode(black_box(&pcm), &mut encoded))
    });
    ulaw.encode(&pcm, &mut encoded);
    c.bench_function("codec/g711_ulaw_decode_20ms", |b| {
        b.iter(|| ulaw.decode(black_box(&encoded), &mut decoded))
    });

    let wide: [i16; 320] = tone(16000.0);
    let mut g722_encoder = G722Encoder::default();
    let mut g722_decoder = G722Decoder::default();
    let mut g722 = [0u8; 160];
    let mut g722_out = [0i16; 320];
    c.bench_function("codec/g722_encode_20ms", |b| {
        b.iter(|| g722_encoder.encode(black_box(&wide), &mut g722).unwrap())
    });
    c.bench_function("codec/g722_decode_20ms", |b| {
        b.iter(|| {
            g722_decoder
                .decode(black_box(&g722), &mut g722_out)
                .unwrap()
        })
    });
    let mut opus_encoder = OpusEncoder::new(16000).unwrap();
    let mut opus_decoder = OpusDecoder::new(16000).unwrap();
    let mut packet = [0u8; 1500];
    let mut out = [0i16; 320];
    c.bench_function("codec/opus_16k_encode_20ms", |b| {
        b.iter(|| opus_encoder.encode(black_box(&wide), &mut packet).unwrap())
    });
    let n = opus_encoder.encode(&wide, &mut packet).unwrap();
    c.bench_function("codec/opus_16k_decode_20ms", |b| {
        b.iter(|| {
            opus_decoder
                .decode(black_box(&packet[..n]), &mut out)
                .unwrap()
        })
    });

    for (from, to) in [(8000, 16000), (48000, 16000), (16000, 8000), (16000, 48000)] {
        let mut resampler = Resampler::new(from, to).unwrap();
        let input = vec![1000i16; resampler.input_samples()];
        let mut output = vec![0i16; resampler.output_samples()];
        c.bench_function(
            &format!("resample/{}k_to_{}k_20ms", from / 1000, to / 1000),
            |b| b.iter(|| resampler.process(black_box(&input), &mut output).unwrap()),
        );
    }
}

fn rtp(c: &mut Criterion) {
    let encoded = [0xffu8; 160];
    let mut sender = RtpSender::new(1, 0, 0, 0);
    let mut packet = [0u8; 172];
    c.bench_function("rtp/write_and_parse", |b| {
        b.iter(|| {
            let n = sender.write(black_box(&encoded), 160, &mut packet).unwrap();
            black_box(parse(&packet[..n]).unwrap());
        })
    });

    let t0 = Instant::now();
    let mut jitter = JitterBuffer::new(Duration::from_millis(20), 8000, Duration::from_millis(300));
    let mut seq = 0u64;
    c.bench_function("rtp/jitter_buffer_push_pop", |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(seq * 20);
            let packet = RtpPacket {
                payload_type: 0,
                marker: false,
                sequence: seq as u16,
                timestamp: (seq * 160) as u32,
                ssrc: 1,
                payload: black_box(&encoded),
            };
            jitter.push(now, seq, &packet);
            seq += 1;
            black_box(matches!(jitter.pop(now), Playout::Frame { .. }));
        })
    });
}

fn srtp_keys(profile: SrtpProfile) -> (SrtpKeys, SrtpKeys) {
    let ours = MasterKey::new([1; 16], [2; 14]);
    let theirs = MasterKey::new([3; 16], [4; 14]);
    (
        SrtpKeys::new(profile, ours.clone(), theirs.clone()),
        SrtpKeys::new(profile, theirs, ours),
    )
}

/// SRTP per G.711 packet (12-byte header, 160 bytes of payload): protect alone, and protect
/// then unprotect (each iteration writes a new packet: a sequence number is protected once).
fn srtp(c: &mut Criterion) {
    for (profile, name) in [
        (SrtpProfile::Aes128CmHmacSha1_80, "80"),
        (SrtpProfile::Aes128CmHmacSha1_32, "32"),
    ] {
        let (ours, theirs) = srtp_keys(profile);
        let (mut us, mut them) = (SrtpSession::new(&ours), SrtpSession::new(&theirs));
        let mut sender = RtpSender::new(1, 0, 0, 0);
        let payload = [0xd5u8; 160];
        let mut packet = [0u8; 200];
        c.bench_function(&format!("srtp/protect_g711_{name}"), |b| {
            b.iter(|| {
                let n = sender.write(black_box(&payload), 160, &mut packet).unwrap();
                black_box(us.protect_rtp(&mut packet, n).unwrap())
            })
        });
        let mut sender = RtpSender::new(2, 0, 0, 0);
        c.bench_function(&format!("srtp/protect_and_unprotect_g711_{name}"), |b| {
            b.iter(|| {
                let n = sender.write(black_box(&payload), 160, &mut packet).unwrap();
                let n = us.protect_rtp(&mut packet, n).unwrap();
                black_box(them.unprotect_rtp(&mut packet[..n]).unwrap())
            })
        });
    }
}

/// One call's full-duplex step: a packet in, one tick, the agent's frame back out.
fn call_step(c: &mut Criterion) {
    for (codec, pt, name) in [
        (MediaCodec::Pcmu, 0u8, "g711"),
        (MediaCodec::G722, 9, "g722"),
        (MediaCodec::Opus, 111, "opus"),
    ] {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let t0 = Instant::now();
        let config = MediaConfig {
            rtp_timeout: Duration::from_secs(3600),
            ..MediaConfig::new(codec, pt, Some(peer), 7)
        };
        let (mut media, mut inbound, mut outbound) =
            CallMedia::new(config, t0, SystemTime::now()).unwrap();
        // The far end's packets: real encoded audio of the codec.
        let samples = codec.clock_rate() / 50;
        let mut far_end = RtpSender::new(9, 0, 0, pt);
        let payload: Vec<u8> = match codec {
            MediaCodec::Opus => {
                let mut e = OpusEncoder::new(16000).unwrap();
                let mut p = [0u8; 1500];
                let n = e.encode(&tone::<320>(16000.0), &mut p).unwrap();
                p[..n].to_vec()
            }
            MediaCodec::G722 => {
                let mut p = [0u8; 160];
                G722Encoder::default()
                    .encode(&tone::<320>(16000.0), &mut p)
                    .unwrap();
                p.to_vec()
            }
            _ => {
                let mut p = [0u8; 160];
                G711::new(G711Law::Mu).encode(&tone::<160>(8000.0), &mut p);
                p.to_vec()
            }
        };
        let mut datagram = [0u8; 1500];
        let agent = AudioFrame {
            samples: tone(16000.0),
            at: t0,
        };
        let mut tick = 0u64;
        c.bench_function(&format!("media/call_step_in_and_out_{name}"), |b| {
            b.iter(|| {
                let now = t0 + Duration::from_millis(tick * 20);
                tick += 1;
                let n = far_end.write(&payload, samples, &mut datagram).unwrap();
                media.receive(now, peer, &datagram[..n], false);
                let _ = outbound.try_send(agent);
                media.tick(now, &mut |t| {
                    black_box(t.data.len());
                });
                black_box(inbound.try_recv());
            })
        });
    }
}

/// The G.711 call step in clear and under SRTP (`AES_CM_128_HMAC_SHA1_80`), side by side.
fn call_step_srtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("media/call_step_g711");
    for secure in [false, true] {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let t0 = Instant::now();
        let (ours, theirs) = srtp_keys(SrtpProfile::Aes128CmHmacSha1_80);
        let config = MediaConfig {
            rtp_timeout: Duration::from_secs(3600),
            srtp: secure.then_some(ours),
            ..MediaConfig::new(MediaCodec::Pcmu, 0, Some(peer), 7)
        };
        let (mut media, mut inbound, mut outbound) =
            CallMedia::new(config, t0, SystemTime::now()).unwrap();
        let mut far_end = RtpSender::new(9, 0, 0, 0);
        let mut far_srtp = secure.then(|| SrtpSession::new(&theirs));
        let mut payload = [0u8; 160];
        G711::new(G711Law::Mu).encode(&tone::<160>(8000.0), &mut payload);
        let mut datagram = [0u8; 1500];
        let agent = AudioFrame {
            samples: tone(16000.0),
            at: t0,
        };
        let mut tick = 0u64;
        group.bench_function(if secure { "srtp" } else { "clear" }, |b| {
            b.iter(|| {
                let now = t0 + Duration::from_millis(tick * 20);
                tick += 1;
                let mut n = far_end.write(&payload, 160, &mut datagram).unwrap();
                if let Some(s) = far_srtp.as_mut() {
                    n = s.protect_rtp(&mut datagram, n).unwrap();
                }
                media.receive(now, peer, &datagram[..n], false);
                let _ = outbound.try_send(agent);
                media.tick(now, &mut |t| {
                    black_box(t.data.len());
                });
                black_box(inbound.try_recv());
            })
        });
        let stats = media.stats();
        assert_eq!((stats.srtp_unauthenticated, stats.srtp_replayed), (0, 0));
    }
    group.finish();
}

criterion_group!(benches, codecs, rtp, srtp, call_step, call_step_srtp);
criterion_main!(benches);

//! Media hot paths, per 20 ms frame: G.711, G.722 and Opus encode/decode, each resampler, RTP
//! write and parse, the jitter buffer push+pop, and one call's whole media step (a packet in,
//! one tick: jitter buffer, decode, resample, speech ring, agent ring, resample, encode, packet
//! out) for G.711, G.722 and Opus.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use dialtone_codec::{
    G711, G711Law, G722Decoder, G722Encoder, OpusDecoder, OpusEncoder, Resampler,
};
use dialtone_media::{AudioFrame, CallMedia, MediaCodec, MediaConfig};
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

criterion_group!(benches, codecs, rtp, call_step);
criterion_main!(benches);

//! Media hot paths: G.711 encode/decode of one 20 ms frame, RTP write+parse, jitter buffer
//! push+pop, and the whole per-packet inbound step (parse → receiver → jitter → decode).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dialtone_codec::{G711, G711Law};
use dialtone_rtp::{JitterBuffer, Playout, RtpPacket, RtpReceiver, RtpSender, parse};

fn tone() -> [i16; 160] {
    std::array::from_fn(|i| (8000.0 * (i as f64 * 0.345).sin()) as i16)
}

fn media(c: &mut Criterion) {
    let pcm = tone();
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

    // The per-packet inbound step of one call, as the media task runs it.
    let mut sender = RtpSender::new(2, 0, 0, 0);
    let mut receiver = RtpReceiver::new(8000);
    let mut jitter = JitterBuffer::new(Duration::from_millis(20), 8000, Duration::from_millis(300));
    let mut seq = 0u64;
    c.bench_function("media/inbound_packet_to_frame", |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(seq * 20);
            seq += 1;
            let n = sender.write(&encoded, 160, &mut packet).unwrap();
            let rtp = parse(&packet[..n]).unwrap();
            let ext = match receiver.on_packet(now, &rtp) {
                dialtone_rtp::Arrival::InOrder { extended_sequence } => extended_sequence,
                _ => seq,
            };
            jitter.push(now, ext, &rtp);
            if let Playout::Frame { payload, .. } = jitter.pop(now) {
                ulaw.decode(payload, &mut decoded);
            }
            black_box(&decoded);
        })
    });
}

criterion_group!(benches, media);
criterion_main!(benches);

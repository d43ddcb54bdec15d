//! RTP datagrams as a call's media receives them: parse, receiver statistics, jitter buffer,
//! and RFC 4733 events, each fed the same packet.
#![no_main]

use std::time::{Duration, Instant};

use dialtone_rtp::{Arrival, DtmfReceiver, JitterBuffer, RtpReceiver, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut receiver = RtpReceiver::new(8000);
    let mut jitter = JitterBuffer::new(Duration::from_millis(20), 8000, Duration::from_millis(300));
    let mut dtmf = DtmfReceiver::new(8000);
    // The input is a sequence of datagrams, each prefixed by a one-byte length.
    let mut rest = data;
    let mut tick = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        tick += 1;
        let now = t0 + Duration::from_millis(tick * 20);
        if let Ok(packet) = parse(datagram) {
            let sequence = match receiver.on_packet(now, &packet) {
                Arrival::InOrder { extended_sequence } | Arrival::Late { extended_sequence } => {
                    extended_sequence
                }
                Arrival::Resync => u64::from(packet.sequence),
            };
            jitter.push(now, sequence, &packet);
            dtmf.handle_packet(now, &packet);
        }
        let _ = jitter.pop(now);
        dtmf.handle_timeout(now);
        while dtmf.poll_event().is_some() {}
        let _ = receiver.report_block();
    }
});

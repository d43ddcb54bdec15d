//! Datagrams as a call's media step takes them from the RTP and RTCP sockets: RTP of every
//! payload type (audio decoded by G.711, G.722 or Opus, comfort noise, telephone-events), RTCP, and
//! garbage, with a 20 ms tick after each.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use dialtone_media::{CallMedia, MediaCodec, MediaConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let codec = match selector % 4 {
        0 => MediaCodec::Pcmu,
        1 => MediaCodec::Pcma,
        2 => MediaCodec::G722,
        _ => MediaCodec::Opus,
    };
    let peer: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 40000));
    let t0 = Instant::now();
    let config = MediaConfig {
        rtcp_mux: selector & 0x80 != 0,
        rtp_timeout: Duration::from_secs(1),
        ..MediaConfig::new(
            codec,
            match codec {
                MediaCodec::Pcmu => 0,
                MediaCodec::Pcma => 8,
                MediaCodec::G722 => 9,
                MediaCodec::Opus => 111,
            },
            Some(peer),
            1,
        )
    };
    let Ok((mut media, mut inbound, _outbound)) = CallMedia::new(config, t0, SystemTime::now())
    else {
        return;
    };
    let mut tick = 0u64;
    // Datagrams, each prefixed by a one-byte length; the length's top bit says RTCP socket.
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len & 0x7f).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        tick += 1;
        let now = t0 + Duration::from_millis(tick * 20);
        media.receive(now, peer, datagram, len & 0x80 != 0);
        media.tick(now, &mut |_| {});
        while media.poll_event().is_some() {}
        while inbound.try_recv().is_some() {}
    }
    let _ = media.stats();
});

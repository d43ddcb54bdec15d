#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! The media step allocates nothing once a call runs: a packet in, one tick (jitter buffer,
//! decode, resample, speech ring, agent ring, encode, packet out, RTCP), in clear and under
//! SRTP, for every codec. Counted on this thread by `allocation-counter`'s global allocator.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use dialtone_media::{AudioFrame, CallMedia, MediaCodec, MediaConfig};
use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile, SrtpSession};
use dialtone_rtp::{RtpSender, is_rtcp};

fn keys() -> SrtpKeys {
    SrtpKeys::new(
        SrtpProfile::Aes128CmHmacSha1_80,
        MasterKey::new([1; 16], [2; 14]),
        MasterKey::new([3; 16], [4; 14]),
    )
}

/// The far end's keys: ours swapped.
fn far_keys() -> SrtpKeys {
    let k = keys();
    SrtpKeys::new(k.profile, k.remote, k.local)
}

#[test]
fn the_media_step_allocates_nothing_in_clear_or_under_srtp() {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    for (codec, pt) in [
        (MediaCodec::Pcmu, 0u8),
        (MediaCodec::G722, 9),
        (MediaCodec::Opus, 111),
    ] {
        for srtp in [false, true] {
            let t0 = Instant::now();
            let config = MediaConfig {
                rtp_timeout: Duration::from_secs(3600),
                srtp: srtp.then(keys),
                ..MediaConfig::new(codec, pt, Some(peer), 7)
            };
            let (mut media, mut inbound, mut outbound) =
                CallMedia::new(config, t0, SystemTime::now()).unwrap();
            let mut far_end = RtpSender::new(9, 0, 0, pt);
            let mut far_srtp = srtp.then(|| SrtpSession::new(&far_keys()));
            // Silence is a valid payload for each codec; its decoding costs the same paths.
            let payload = [0xd5u8; 160];
            let payload = match codec {
                MediaCodec::Opus => &payload[..3],
                _ => &payload[..],
            };
            let mut datagram = [0u8; 1500];
            let mut sent = 0usize;
            let info = {
                let mut step = |tick: u64| {
                    let now = t0 + Duration::from_millis(tick * 20);
                    let n = far_end
                        .write(payload, codec.clock_rate() / 50, &mut datagram)
                        .unwrap();
                    let n = match far_srtp.as_mut() {
                        Some(s) => s.protect_rtp(&mut datagram, n).unwrap(),
                        None => n,
                    };
                    media.receive(now, peer, &datagram[..n], false);
                    let _ = outbound.try_send(AudioFrame::silence(now));
                    media.tick(now, &mut |t| {
                        sent += usize::from(!is_rtcp(t.data));
                    });
                    while inbound.try_recv().is_some() {}
                };
                // Warm up: buffers settle, the first RTCP report goes out.
                for tick in 0..300 {
                    step(tick);
                }
                allocation_counter::measure(|| {
                    for tick in 300..600 {
                        step(tick);
                    }
                })
            };
            assert_eq!(
                info.count_total, 0,
                "{codec:?}, srtp {srtp}: {} allocations in 300 steps",
                info.count_total
            );
            assert!(sent >= 595, "{codec:?}, srtp {srtp}: {sent} packets out");
            let stats = media.stats();
            assert!(
                stats.packets_in >= 595 && stats.rtcp_reports_out >= 2,
                "{stats:?}"
            );
            assert_eq!((stats.srtp_unauthenticated, stats.malformed), (0, 0));
        }
    }
}

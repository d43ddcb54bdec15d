#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! SRTP calls' media steps back to back on a virtual clock: tones cross both ways in both
//! suites, across the sequence number's wrap; the wire carries no clear RTP or RTCP (each
//! packet compared with the same call's packet in clear); replayed, forged and clear packets
//! are counted and dropped and latch nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use dialtone_media::{
    AudioFrame, CallMedia, FRAME_SAMPLES, FrameReceiver, FrameSender, MediaCodec, MediaConfig,
    MediaStats,
};
use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile};
use dialtone_rtp::{is_rtcp, parse};
use dialtone_test_support::audio::{sine, tone_amplitude};

const AMPLITUDE: f64 = 8000.0;

fn a_addr() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}
fn b_addr() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn keys(profile: SrtpProfile) -> (SrtpKeys, SrtpKeys) {
    let a = MasterKey::new([0x0a; 16], [0xa0; 14]);
    let b = MasterKey::new([0x0b; 16], [0xb0; 14]);
    (
        SrtpKeys::new(profile, a.clone(), b.clone()),
        SrtpKeys::new(profile, b, a),
    )
}

fn config(remote: SocketAddr, ssrc: u32, srtp: Option<SrtpKeys>) -> MediaConfig {
    MediaConfig {
        rtp_timeout: Duration::from_secs(5),
        srtp,
        ..MediaConfig::new(MediaCodec::Pcmu, 0, Some(remote), ssrc)
    }
}

struct Side {
    media: CallMedia,
    inbound: FrameReceiver,
    outbound: FrameSender,
    heard: Vec<AudioFrame>,
    hz: f64,
}

fn side(config: MediaConfig, t0: Instant, hz: f64) -> Side {
    let (media, inbound, outbound) = CallMedia::new(config, t0, SystemTime::now()).unwrap();
    Side {
        media,
        inbound,
        outbound,
        heard: Vec::new(),
        hz,
    }
}

fn tone_frame(hz: f64, index: u64) -> AudioFrame {
    let mut f = AudioFrame::silence(Instant::now());
    sine(
        16000,
        hz,
        AMPLITUDE,
        index as usize * FRAME_SAMPLES,
        &mut f.samples,
    );
    f
}

/// A datagram on the wire: from A (else from B), from the RTCP socket, its bytes.
type Sent = (bool, bool, Vec<u8>);

/// Runs the 20 ms ticks `ticks` (counted from `t0`), each side playing its tone; each tick's
/// datagrams are delivered to the other side at once, and all are returned.
fn run(a: &mut Side, b: &mut Side, t0: Instant, ticks: std::ops::Range<u64>) -> Vec<Sent> {
    let mut wire = Vec::new();
    for tick in ticks {
        let now = t0 + Duration::from_millis(20 * tick);
        let mut this_tick = Vec::new();
        for (s, from_a) in [(&mut *a, true), (&mut *b, false)] {
            s.outbound.try_send(tone_frame(s.hz, tick)).unwrap();
            s.media.tick(now, &mut |t| {
                this_tick.push((from_a, t.rtcp, t.data.to_vec()))
            });
        }
        for (from_a, rtcp, data) in &this_tick {
            deliver(a, b, now, *from_a, *rtcp, data);
        }
        for s in [&mut *a, &mut *b] {
            while let Some(f) = s.inbound.try_recv() {
                s.heard.push(f);
            }
        }
        wire.extend(this_tick);
    }
    wire
}

/// Hands `data` sent by A (`from_a`) or B to the other side.
fn deliver(a: &mut Side, b: &mut Side, now: Instant, from_a: bool, rtcp: bool, data: &[u8]) {
    if from_a {
        b.media.receive(now, a_addr(), data, rtcp);
    } else {
        a.media.receive(now, b_addr(), data, rtcp);
    }
}

fn heard_tone(side: &Side, hz: f64) -> f64 {
    let tail: Vec<i16> = side.heard[side.heard.len() - 10..]
        .iter()
        .flat_map(|f| f.samples)
        .collect();
    tone_amplitude(&tail, 16000, hz)
}

fn pair(profile: SrtpProfile, t0: Instant, a_ssrc: u32) -> (Side, Side) {
    let (for_a, for_b) = keys(profile);
    (
        side(config(b_addr(), a_ssrc, Some(for_a)), t0, 1000.0),
        side(config(a_addr(), 0xb2, Some(for_b)), t0, 700.0),
    )
}

fn assert_clean(stats: &MediaStats, what: &str) {
    assert_eq!(
        (
            stats.srtp_unauthenticated,
            stats.srtp_replayed,
            stats.srtp_unsent,
            stats.malformed,
            stats.rtcp_malformed
        ),
        (0, 0, 0, 0, 0),
        "{what}: {stats:?}"
    );
}

#[test]
fn tones_cross_both_ways_over_srtp_and_srtcp_in_both_suites() {
    for profile in [
        SrtpProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmHmacSha1_32,
    ] {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(profile, t0, 0xa1);
        // Past the first RTCP interval, so reports cross too.
        run(&mut a, &mut b, t0, 0..400);
        for (side, hz, what) in [(&b, 1000.0, "A→B"), (&a, 700.0, "B→A")] {
            let at = heard_tone(side, hz);
            assert!(
                (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
                "{profile:?} {what}: {at:.0}"
            );
        }
        for (side, what) in [(&a, "A"), (&b, "B")] {
            let stats = side.media.stats();
            assert_clean(&stats, &format!("{profile:?} {what}"));
            assert!(stats.packets_in >= 395, "{stats:?}");
            assert!(stats.rtcp_reports_in >= 1, "SRTCP read: {stats:?}");
        }
    }
}

/// The stream starts 60 packets before its sequence number wraps: the rollover counter
/// carries both sides across, and the tone goes on.
#[test]
fn the_stream_crosses_the_sequence_wrap() {
    let t0 = Instant::now();
    let (for_a, for_b) = keys(SrtpProfile::Aes128CmHmacSha1_80);
    let mut a = side(
        MediaConfig {
            initial_sequence: 65_476,
            ..config(b_addr(), 0xa1, Some(for_a))
        },
        t0,
        1000.0,
    );
    let mut b = side(config(a_addr(), 0xb2, Some(for_b)), t0, 700.0);
    let wire = run(&mut a, &mut b, t0, 0..150);
    let wrapped = wire
        .iter()
        .filter(|(from_a, rtcp, d)| *from_a && !rtcp && !is_rtcp(d))
        .any(|(_, _, d)| u16::from_be_bytes([d[2], d[3]]) < 100);
    assert!(wrapped, "A's sequence wrapped");
    let at = heard_tone(&b, 1000.0);
    assert!(
        (at - AMPLITUDE).abs() < AMPLITUDE * 0.15,
        "after the wrap: {at:.0}"
    );
    assert_clean(&b.media.stats(), "B");
    assert!(b.media.stats().packets_in >= 145);
}

/// Each packet A sends is compared with the packet the same call sends in clear (same SSRC,
/// sequence, timestamp, audio): the header is the same, the payload is not, the tag follows.
#[test]
fn nothing_on_the_wire_is_clear() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(SrtpProfile::Aes128CmHmacSha1_80, t0, 0xa1);
    let mut plain_a = side(config(b_addr(), 0xa1, None), t0, 1000.0);
    let mut plain_b = side(config(a_addr(), 0xb2, None), t0, 700.0);
    let secure = run(&mut a, &mut b, t0, 0..300);
    let clear = run(&mut plain_a, &mut plain_b, t0, 0..300);
    let from_a = |wire: &[Sent]| -> Vec<Vec<u8>> {
        wire.iter()
            .filter(|(a, ..)| *a)
            .map(|(.., d)| d.clone())
            .collect()
    };
    let (secure, clear) = (from_a(&secure), from_a(&clear));
    assert_eq!(secure.len(), clear.len());
    let (mut rtp, mut rtcp) = (0, 0);
    for (s, c) in secure.iter().zip(&clear) {
        if is_rtcp(c) {
            rtcp += 1;
            assert_eq!(s.len(), c.len() + 14, "E flag, index and 80-bit tag");
            assert_eq!(s[..8], c[..8]);
            assert_ne!(s[8..c.len()], c[8..], "SRTCP encrypts the report");
            assert!(
                !s.windows(9).any(|w| w == b"dialtone-"),
                "no CNAME in clear"
            );
        } else {
            rtp += 1;
            assert_eq!(s.len(), c.len() + 10);
            assert_eq!(s[..12], c[..12]);
            let payload = parse(c).unwrap().payload;
            assert_ne!(&s[12..c.len()], payload, "the payload is encrypted");
            // Not a byte in eight matches the clear payload at its place.
            let same = s[12..c.len()].iter().zip(payload).filter(|(x, y)| x == y);
            assert!(same.count() < payload.len() / 8);
        }
    }
    assert!(rtp >= 299 && rtcp >= 1, "{rtp} RTP, {rtcp} RTCP");
}

#[test]
fn replayed_forged_and_clear_packets_are_counted_dropped_and_latch_nothing() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(SrtpProfile::Aes128CmHmacSha1_32, t0, 0xa1);
    let wire = run(&mut a, &mut b, t0, 0..50);
    let (_, _, last) = wire
        .iter()
        .rev()
        .find(|(from_a, rtcp, d)| *from_a && !rtcp && !is_rtcp(d))
        .unwrap();
    let now = t0 + Duration::from_millis(1000);
    let before = b.media.stats();
    // Replayed, from the far end itself and from a stranger.
    b.media.receive(now, a_addr(), last, false);
    b.media
        .receive(now, "127.0.0.1:6666".parse().unwrap(), last, false);
    // Forged: a later sequence number under the last packet's tag.
    let mut forged = last.clone();
    let sequence = u16::from_be_bytes([last[2], last[3]]);
    forged[2..4].copy_from_slice(&sequence.wrapping_add(100).to_be_bytes());
    b.media.receive(now, a_addr(), &forged, false);
    // Clear RTP from the signalled address: not authentic either.
    let mut clear = [0u8; 200];
    let n = dialtone_rtp::RtpSender::new(0xa1, sequence.wrapping_add(200), 0, 0)
        .write(&[0xff; 160], 160, &mut clear)
        .unwrap();
    b.media.receive(now, a_addr(), &clear[..n], false);
    let after = b.media.stats();
    assert_eq!(after.srtp_replayed - before.srtp_replayed, 1);
    assert_eq!(
        after.foreign - before.foreign,
        1,
        "the stranger's copy never got in"
    );
    assert_eq!(after.srtp_unauthenticated - before.srtp_unauthenticated, 2);
    assert_eq!(after.packets_in, before.packets_in);
    // The stream goes on, still latched to A.
    run(&mut a, &mut b, t0, 51..120);
    let at = heard_tone(&b, 1000.0);
    assert!((at - AMPLITUDE).abs() < AMPLITUDE * 0.15, "{at:.0}");
    assert_eq!(b.media.stats().foreign, after.foreign);
}

/// A stranger's packet under another key is dropped before the latch: it does not move
/// where the call sends.
#[test]
fn an_unauthenticated_stranger_does_not_take_the_latch() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(SrtpProfile::Aes128CmHmacSha1_80, t0, 0xa1);
    // B hears from nobody yet; a stranger sends SRTP under its own key first.
    let stranger: SocketAddr = "127.0.0.1:7777".parse().unwrap();
    let (stranger_keys, _) = (
        SrtpKeys::new(
            SrtpProfile::Aes128CmHmacSha1_80,
            MasterKey::new([9; 16], [9; 14]),
            MasterKey::new([8; 16], [8; 14]),
        ),
        (),
    );
    let mut impostor = side(config(b_addr(), 0x51, Some(stranger_keys)), t0, 300.0);
    let mut sent = Vec::new();
    impostor.outbound.try_send(tone_frame(300.0, 0)).unwrap();
    impostor.media.tick(t0, &mut |t| sent.push(t.data.to_vec()));
    for d in &sent {
        b.media.receive(t0, stranger, d, false);
    }
    assert_eq!(b.media.stats().srtp_unauthenticated, sent.len() as u64);
    // B still sends to the signalled address, and A hears it.
    run(&mut a, &mut b, t0, 1..60);
    let at = heard_tone(&a, 700.0);
    assert!((at - AMPLITUDE).abs() < AMPLITUDE * 0.15, "{at:.0}");
}

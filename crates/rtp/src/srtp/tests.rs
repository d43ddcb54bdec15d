#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;

use super::kdf::{SessionKeys, derive};
use super::*;
use crate::{RtpError, RtpSender};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn master(key: &str, salt: &str) -> MasterKey {
    MasterKey::new(hex(key).try_into().unwrap(), hex(salt).try_into().unwrap())
}

/// RFC 3711 Appendix B.3: the session keys of one master key.
#[test]
fn key_derivation_matches_rfc_3711_appendix_b3() {
    let m = master(
        "E1F97A0D3E018BE0D64FA32C06DE4139",
        "0EC675AD498AFEEBB6960B3AABE6",
    );
    let mut cipher = [0u8; 16];
    derive(&m, 0, &mut cipher);
    assert_eq!(cipher.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut salt = [0u8; 14];
    derive(&m, 2, &mut salt);
    assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut auth = [0u8; 20];
    derive(&m, 1, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
    assert_eq!(
        SessionKeys::new(&m, kdf::SRTP).salt().to_vec(),
        salt.to_vec()
    );
}

/// RFC 3711 Appendix B.2: the AES-CM keystream of session key 2B7E…, salt F0F1…FD, SSRC 0,
/// index 0, at blocks 0, 1, 2 and 0xFEFF, 0xFF00, 0xFF01.
#[test]
fn keystream_matches_rfc_3711_appendix_b2() {
    // A master key whose derived SRTP cipher key and salt are B.2's cannot be found, so the
    // keystream is checked through the same AES-CM the session keys use, keyed directly.
    use aes::cipher::{KeyIvInit, StreamCipher};
    let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
    let mut stream = vec![0u8; 16 * 0xff02];
    ctr::Ctr128BE::<aes::Aes128>::new(&key.into(), &iv.into()).apply_keystream(&mut stream);
    let block = |n: usize| stream[n * 16..n * 16 + 16].to_vec();
    assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
    assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
    assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
    assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
    assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
    assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
}

/// The IV of a packet: salt, SSRC and index where §4.1.1 puts them. With the master key of
/// B.3, SSRC 0 and index 0 the packet keystream starts at the derived salt shifted 16 bits.
#[test]
fn the_packet_iv_places_salt_ssrc_and_index() {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let m = master(
        "E1F97A0D3E018BE0D64FA32C06DE4139",
        "0EC675AD498AFEEBB6960B3AABE6",
    );
    let keys = SessionKeys::new(&m, kdf::SRTP);
    let cipher: [u8; 16] = hex("C61E7A93744F39EE10734AFE3FF7A087").try_into().unwrap();
    let (ssrc, index) = (0xdead_beef_u32, 0x1234_5678_9abc_u64);
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&hex("30CBBC08863D8C85D49DB34A9AE1"));
    let ssrc_bytes = ssrc.to_be_bytes();
    let index_bytes = index.to_be_bytes();
    for i in 0..4 {
        iv[4 + i] ^= ssrc_bytes[i];
    }
    for i in 0..6 {
        iv[8 + i] ^= index_bytes[2 + i];
    }
    let mut expected = [0u8; 40];
    ctr::Ctr128BE::<aes::Aes128>::new(&cipher.into(), &iv.into()).apply_keystream(&mut expected);
    let mut ours = [0u8; 40];
    keys.apply_keystream(ssrc, index, &mut ours);
    assert_eq!(ours, expected);
}

fn keys(profile: SrtpProfile) -> (SrtpSession, SrtpSession) {
    let a = MasterKey::new([0x11; 16], [0x22; 14]);
    let b = MasterKey::new([0x33; 16], [0x44; 14]);
    (
        SrtpSession::new(&SrtpKeys::new(profile, a.clone(), b.clone())),
        SrtpSession::new(&SrtpKeys::new(profile, b, a)),
    )
}

fn rtp(sender: &mut RtpSender, payload: &[u8]) -> ([u8; 1500], usize) {
    let mut buf = [0u8; 1500];
    let n = sender.write(payload, 160, &mut buf).unwrap();
    (buf, n)
}

#[test]
fn both_suites_round_trip_with_their_tag_lengths_and_hide_the_payload() {
    for (profile, tag) in [
        (SrtpProfile::Aes128CmHmacSha1_80, 10),
        (SrtpProfile::Aes128CmHmacSha1_32, 4),
    ] {
        let (mut us, mut them) = keys(profile);
        let mut sender = RtpSender::new(0x0102_0304, 500, 0, 0);
        for _ in 0..3 {
            let (mut buf, n) = rtp(&mut sender, &[0x55; 160]);
            let clear = buf[..n].to_vec();
            let sent = us.protect_rtp(&mut buf, n).unwrap();
            assert_eq!(sent, n + tag);
            assert_eq!(buf[..12], clear[..12], "the header stays in clear");
            assert!(!buf[12..n].windows(8).any(|w| w == [0x55; 8]));
            let got = them.unprotect_rtp(&mut buf[..sent]).unwrap();
            assert_eq!(buf[..got], clear[..]);
        }
    }
}

#[test]
fn a_replayed_packet_is_refused_and_a_reordered_one_taken() {
    let (mut us, mut them) = keys(SrtpProfile::Aes128CmHmacSha1_80);
    let mut sender = RtpSender::new(9, 100, 0, 0);
    let packets: Vec<Vec<u8>> = (0..5)
        .map(|_| {
            let (mut buf, n) = rtp(&mut sender, &[1; 160]);
            let sent = us.protect_rtp(&mut buf, n).unwrap();
            buf[..sent].to_vec()
        })
        .collect();
    let open = |them: &mut SrtpSession, p: &Vec<u8>| them.unprotect_rtp(&mut p.clone());
    assert!(open(&mut them, &packets[0]).is_ok());
    assert!(open(&mut them, &packets[2]).is_ok());
    // Late but unseen: taken.
    assert!(open(&mut them, &packets[1]).is_ok());
    // Seen: refused, however often.
    for p in &packets[..3] {
        assert_eq!(open(&mut them, p), Err(RtpError::Replayed));
    }
    assert!(open(&mut them, &packets[4]).is_ok());
    assert!(open(&mut them, &packets[3]).is_ok());
}

#[test]
fn a_packet_older_than_the_window_is_refused() {
    let (mut us, mut them) = keys(SrtpProfile::Aes128CmHmacSha1_80);
    let mut sender = RtpSender::new(9, 1000, 0, 0);
    let (mut old, n) = rtp(&mut sender, &[1; 160]);
    let old_len = us.protect_rtp(&mut old, n).unwrap();
    for _ in 0..70 {
        let (mut buf, n) = rtp(&mut sender, &[1; 160]);
        let sent = us.protect_rtp(&mut buf, n).unwrap();
        them.unprotect_rtp(&mut buf[..sent]).unwrap();
    }
    assert_eq!(
        them.unprotect_rtp(&mut old[..old_len]),
        Err(RtpError::Replayed)
    );
}

#[test]
fn a_tampered_or_foreign_packet_fails_authentication_and_leaves_the_stream_as_it_was() {
    let (mut us, mut them) = keys(SrtpProfile::Aes128CmHmacSha1_32);
    let mut sender = RtpSender::new(9, 7, 0, 0);
    let (mut buf, n) = rtp(&mut sender, &[1; 160]);
    let sent = us.protect_rtp(&mut buf, n).unwrap();
    for at in [1, 5, 20, sent - 1] {
        let mut bad = buf[..sent].to_vec();
        bad[at] ^= 0x40;
        assert_eq!(them.unprotect_rtp(&mut bad), Err(RtpError::Unauthenticated));
    }
    // The genuine packet still authenticates: the failures moved nothing.
    assert!(them.unprotect_rtp(&mut buf[..sent]).is_ok());
    // Under another key nothing authenticates.
    let (mut stranger, _) = keys(SrtpProfile::Aes128CmHmacSha1_32);
    let (mut buf, n) = rtp(&mut sender, &[1; 160]);
    let sent = stranger.protect_rtp(&mut buf, n).unwrap();
    let mut other = SrtpSession::new(&SrtpKeys::new(
        SrtpProfile::Aes128CmHmacSha1_32,
        MasterKey::new([9; 16], [9; 14]),
        MasterKey::new([8; 16], [8; 14]),
    ));
    assert_eq!(
        other.unprotect_rtp(&mut buf[..sent]),
        Err(RtpError::Unauthenticated)
    );
}

/// Across 65535 → 0 the rollover counter moves on for both sides, and a packet from before
/// the wrap arriving after it is still read with the old counter.
#[test]
fn the_rollover_counter_carries_the_stream_across_the_sequence_wrap() {
    let (mut us, mut them) = keys(SrtpProfile::Aes128CmHmacSha1_80);
    let mut sender = RtpSender::new(0xabc, 65530, 0, 0);
    let mut held_back = None;
    for i in 0..12 {
        let (mut buf, n) = rtp(&mut sender, &[i as u8; 160]);
        let sent = us.protect_rtp(&mut buf, n).unwrap();
        if i == 4 {
            // Sequence 65534, delivered after the wrap.
            held_back = Some((buf, sent));
            continue;
        }
        let got = them.unprotect_rtp(&mut buf[..sent]).unwrap();
        assert_eq!(buf[12..got], [i as u8; 160]);
    }
    let (mut late, sent) = held_back.unwrap();
    let got = them.unprotect_rtp(&mut late[..sent]).unwrap();
    assert_eq!(late[12..got], [4u8; 160]);
    // The rollover counter is in the tag: after the wrap the sender's index is 1·2^16 + seq.
    let (mut buf, n) = rtp(&mut sender, &[0; 160]);
    let seq = u16::from_be_bytes([buf[2], buf[3]]);
    assert!(seq < 100);
    let sent = us.protect_rtp(&mut buf, n).unwrap();
    let mut fresh_receiver = SrtpContext::new(
        SrtpProfile::Aes128CmHmacSha1_80,
        &MasterKey::new([0x11; 16], [0x22; 14]),
        0,
    );
    // A receiver that never saw the wrap assumes counter 0 and fails.
    assert_eq!(
        fresh_receiver.unprotect_rtp(&mut buf[..sent]),
        Err(RtpError::Unauthenticated)
    );
}

#[test]
fn a_sender_never_protects_the_same_index_twice() {
    let (mut us, _) = keys(SrtpProfile::Aes128CmHmacSha1_80);
    let mut sender = RtpSender::new(1, 10, 0, 0);
    let (mut buf, n) = rtp(&mut sender, &[0; 160]);
    let mut again = buf;
    us.protect_rtp(&mut buf, n).unwrap();
    assert_eq!(us.protect_rtp(&mut again, n), Err(RtpError::Replayed));
}

fn rtcp_report(ssrc: u32) -> ([u8; 200], usize) {
    let mut buf = [0u8; 200];
    // A receiver report with no blocks, then an SDES-like filler of 8 bytes.
    buf[..8].copy_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 0]);
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    buf[8..16].copy_from_slice(&[0x81, 202, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd]);
    (buf, 16)
}

#[test]
fn srtcp_carries_the_e_flag_and_an_index_counting_from_zero_with_an_80_bit_tag() {
    for profile in [
        SrtpProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmHmacSha1_32,
    ] {
        let (mut us, mut them) = keys(profile);
        for i in 0..3u32 {
            let (mut buf, n) = rtcp_report(0x5555);
            let clear = buf[..n].to_vec();
            let sent = us.protect_rtcp(&mut buf, n).unwrap();
            assert_eq!(sent, n + 4 + 10);
            assert_eq!(buf[..8], clear[..8], "header and sender SSRC in clear");
            assert_ne!(buf[8..n], clear[8..n], "the rest encrypted");
            let word = u32::from_be_bytes(buf[n..n + 4].try_into().unwrap());
            assert_eq!(word, 0x8000_0000 | i, "E flag set, index {i}");
            let mut replay = buf[..sent].to_vec();
            let got = them.unprotect_rtcp(&mut buf[..sent]).unwrap();
            assert_eq!(buf[..got], clear[..]);
            assert_eq!(them.unprotect_rtcp(&mut replay), Err(RtpError::Replayed));
        }
        let (mut buf, n) = rtcp_report(0x5555);
        let sent = us.protect_rtcp(&mut buf, n).unwrap();
        buf[sent - 1] ^= 1;
        assert_eq!(
            them.unprotect_rtcp(&mut buf[..sent]),
            Err(RtpError::Unauthenticated)
        );
    }
}

#[test]
fn srtcp_keeps_a_replay_window_per_ssrc() {
    let (mut us, mut them) = keys(SrtpProfile::Aes128CmHmacSha1_80);
    let mut sent = Vec::new();
    for ssrc in [0x1111, 0x2222, 0x1111, 0x2222] {
        let (mut buf, n) = rtcp_report(ssrc);
        let len = us.protect_rtcp(&mut buf, n).unwrap();
        sent.push(buf[..len].to_vec());
    }
    for packet in &sent {
        assert!(them.unprotect_rtcp(&mut packet.clone()).is_ok());
    }
    // Another SSRC's report in between does not reopen the first one's window.
    for packet in &sent {
        assert_eq!(
            them.unprotect_rtcp(&mut packet.clone()),
            Err(RtpError::Replayed)
        );
    }
}

#[test]
fn a_packet_with_an_mki_is_read_past_it() {
    let a = MasterKey::new([5; 16], [6; 14]);
    let mut sender_ctx = SrtpContext::new(SrtpProfile::Aes128CmHmacSha1_80, &a, 0);
    let mut receiver = SrtpContext::new(SrtpProfile::Aes128CmHmacSha1_80, &a, 2);
    let mut sender = RtpSender::new(3, 3, 0, 0);
    let (mut buf, n) = rtp(&mut sender, &[7; 160]);
    let sent = sender_ctx.protect_rtp(&mut buf, n).unwrap();
    // Insert a 2-byte MKI between the payload and the tag, as a sender with an MKI would.
    let mut with_mki = buf[..n].to_vec();
    with_mki.extend_from_slice(&[0, 1]);
    with_mki.extend_from_slice(&buf[n..sent]);
    let got = receiver.unprotect_rtp(&mut with_mki).unwrap();
    assert_eq!(with_mki[12..got], [7; 160]);
}

#[test]
fn keys_are_never_shown() {
    let keys = SrtpKeys::new(
        SrtpProfile::Aes128CmHmacSha1_80,
        MasterKey::new([0xab; 16], [0xcd; 14]),
        MasterKey::new([0xef; 16], [0x12; 14]),
    );
    let shown = format!("{keys:?} {:?}", SrtpSession::new(&keys));
    for secret in ["171", "ab", "AB", "205", "239"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

proptest! {
    /// Whatever arrives, unprotecting neither panics nor accepts it (nothing forged passes).
    #[test]
    fn garbage_never_authenticates(mut data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (_, mut them) = keys(SrtpProfile::Aes128CmHmacSha1_80);
        let mut copy = data.clone();
        prop_assert!(them.unprotect_rtp(&mut data).is_err());
        prop_assert!(them.unprotect_rtcp(&mut copy).is_err());
    }

    /// Any RTP packet (CSRCs, extension, padding) survives protect and unprotect.
    #[test]
    fn any_rtp_packet_round_trips(
        csrcs in 0usize..4,
        extension in proptest::option::of(0usize..3),
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        sequence in any::<u16>(),
        ssrc in any::<u32>(),
    ) {
        let mut packet = vec![0x80 | csrcs as u8, 0, 0, 0, 0, 0, 0, 0];
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend(std::iter::repeat_n(0xcc, csrcs * 4));
        if let Some(words) = extension {
            packet[0] |= 0x10;
            packet.extend_from_slice(&[0xbe, 0xde, 0, words as u8]);
            packet.extend(std::iter::repeat_n(0xee, words * 4));
        }
        packet.extend_from_slice(&payload);
        let n = packet.len();
        let mut buf = packet.clone();
        buf.resize(n + 10, 0);
        let (mut us, mut them) = keys(SrtpProfile::Aes128CmHmacSha1_80);
        let sent = us.protect_rtp(&mut buf, n).unwrap();
        let got = them.unprotect_rtp(&mut buf[..sent]).unwrap();
        prop_assert_eq!(&buf[..got], &packet[..]);
    }
}

/// Packets libsrtp 2 protected (through pylibsrtp) under master key 11…11 and salt 22…22:
/// an RTP packet with sequence 0x1234, SSRC 0xcafebabe and payload 00…0f, and a receiver
/// report with an SDES chunk, under both suites. Ours must be byte for byte the same, and
/// libsrtp's SRTCP (its first index is 1) must open.
#[test]
fn packets_match_libsrtp_byte_for_byte() {
    let key = MasterKey::new([0x11; 16], [0x22; 14]);
    let mut clear_rtp = hex("80001234decafbadcafebabe");
    clear_rtp.extend(0u8..16);
    let clear_rtcp = hex("81c90001cafebabe81ca0001aabbccdd");
    let srtcp = hex("81c90001cafebabe932c2ab5e6bc866a80000001690fca0c3c3791d94719");
    for (profile, srtp) in [
        (
            SrtpProfile::Aes128CmHmacSha1_80,
            "80001234decafbadcafebabea663bddfbfdb9b10160903efbfdfa130412f1e632bf6cb64f71c",
        ),
        (
            SrtpProfile::Aes128CmHmacSha1_32,
            "80001234decafbadcafebabea663bddfbfdb9b10160903efbfdfa130412f1e63",
        ),
    ] {
        let mut ours = SrtpContext::new(profile, &key, 0);
        let mut buf = [0u8; 100];
        buf[..clear_rtp.len()].copy_from_slice(&clear_rtp);
        let n = ours.protect_rtp(&mut buf, clear_rtp.len()).unwrap();
        assert_eq!(buf[..n].to_vec(), hex(srtp), "{profile:?}");

        let mut theirs = SrtpContext::new(profile, &key, 0);
        let mut packet = hex(srtp);
        let n = theirs.unprotect_rtp(&mut packet).unwrap();
        assert_eq!(packet[..n], clear_rtp[..]);
        let mut packet = srtcp.clone();
        let n = theirs.unprotect_rtcp(&mut packet).unwrap();
        assert_eq!(packet[..n], clear_rtcp[..]);
    }
}

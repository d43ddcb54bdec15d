//! SRTP and SRTCP as a call receives them, with an oracle: a sequence of records, each a
//! datagram that is either fed raw to the far end's unprotect (which must refuse it without
//! panicking, since nothing here knows the key), or protected by one side and unprotected
//! by the other — which must give back exactly what was protected, or, with one byte
//! flipped on the way, must refuse it. A tampered packet moved the sender on and not the
//! receiver (as a lost one does, and may cost the receiver its rollover counter), so from the
//! first one on only the refusals are checked.
#![no_main]

use dialtone_rtp::srtp::{MasterKey, SrtpKeys, SrtpProfile, SrtpSession};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let profile = if data.first().is_some_and(|b| b & 1 == 1) {
        SrtpProfile::Aes128CmHmacSha1_32
    } else {
        SrtpProfile::Aes128CmHmacSha1_80
    };
    let (a, b) = (
        MasterKey::new([0x11; 16], [0x22; 14]),
        MasterKey::new([0x33; 16], [0x44; 14]),
    );
    let mut us = SrtpSession::new(&SrtpKeys::new(profile, a.clone(), b.clone()));
    let mut them = SrtpSession::new(&SrtpKeys::new(profile, b, a));
    let mut in_step = true;
    // Records: an op byte, a length byte, that many bytes.
    let mut rest = data.get(1..).unwrap_or_default();
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        let rtcp = op & 1 == 1;
        if op & 2 == 2 {
            let mut raw = datagram.to_vec();
            let opened = if rtcp {
                them.unprotect_rtcp(&mut raw)
            } else {
                them.unprotect_rtp(&mut raw)
            };
            assert!(opened.is_err(), "a datagram nobody protected opened");
            continue;
        }
        let mut buf = [0u8; 1024];
        buf[..datagram.len()].copy_from_slice(datagram);
        let sealed = if rtcp {
            us.protect_rtcp(&mut buf, datagram.len())
        } else {
            us.protect_rtp(&mut buf, datagram.len())
        };
        let Ok(sealed) = sealed else { continue };
        let flip = usize::from(op >> 2);
        let tamper = flip > 0;
        if tamper {
            buf[(flip - 1) % sealed] ^= 0x01;
            in_step = false;
        }
        let packet = &mut buf[..sealed];
        let opened = if rtcp {
            them.unprotect_rtcp(packet)
        } else {
            them.unprotect_rtp(packet)
        };
        match opened {
            Ok(n) => {
                assert!(!tamper, "a tampered packet opened");
                assert_eq!(&packet[..n], datagram);
            }
            Err(e) => assert!(tamper || !in_step, "a genuine packet was refused: {e}"),
        }
    }
});

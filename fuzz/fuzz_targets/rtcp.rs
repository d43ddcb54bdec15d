//! Compound RTCP packets as a call's RTCP session reads them.
#![no_main]

use std::time::{Instant, SystemTime};

use dialtone_rtp::RtcpSession;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let ssrc = u32::from_be_bytes([
        data.get(8).copied().unwrap_or(0),
        data.get(9).copied().unwrap_or(0),
        data.get(10).copied().unwrap_or(0),
        data.get(11).copied().unwrap_or(0),
    ]);
    let mut session = RtcpSession::new(ssrc, "fuzz", now, SystemTime::now());
    let _ = session.handle_packet(now, data);
    let _ = session.remote();
});

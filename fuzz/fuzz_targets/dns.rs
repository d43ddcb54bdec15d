//! DNS SRV answers as the user agent parses them (RFC 3263 trunk resolution).
#![no_main]

use dialtone_sip_ua::dns::parse_srv_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = u16::from_be_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    let _ = parse_srv_answer(id, data);
});

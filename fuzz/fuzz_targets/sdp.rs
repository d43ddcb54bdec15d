//! SDP parsing, printing, and both directions of offer/answer on whatever parses.
#![no_main]

use dialtone_sdp::{LocalMedia, SessionDescription, answer_offer, build_offer, negotiate_answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sd) = SessionDescription::parse(text) else {
        return;
    };
    let printed = sd.to_string();
    assert_eq!(SessionDescription::parse(&printed).as_ref(), Ok(&sd), "print/parse round trip");
    let local = LocalMedia::new(std::net::Ipv4Addr::LOCALHOST.into(), 20000);
    let offer = build_offer(&local, 1, 1);
    let _ = negotiate_answer(&offer, &sd);
    let _ = answer_offer(&sd, &local, None, 1, 2);
});

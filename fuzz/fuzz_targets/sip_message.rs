//! SIP message parsing and validation, the endpoint's whole receive path, and stream framing.
#![no_main]

use std::time::Instant;

use dialtone_sip_core::framing::StreamFramer;
use dialtone_sip_core::{Endpoint, EndpointConfig, Transport, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = validate::validate(data, "fuzz");
    let mut endpoint = Endpoint::new(EndpointConfig::new("127.0.0.1", 5060), 7);
    let now = Instant::now();
    let source = std::net::SocketAddr::from(([127, 0, 0, 1], 5070));
    endpoint.handle_message(now, source, Transport::Udp, data);
    while endpoint.poll_transmit().is_some() {}
    let mut framer = StreamFramer::new();
    for chunk in data.chunks(97) {
        framer.push(chunk);
        while let Ok(Some(_)) = framer.next_frame() {}
    }
});

//! The Server-Sent Events parser: any bytes, fed whole and fed split at a point the input
//! chooses, give the same events, each within the size bound.
#![no_main]

use dialtone_sse::{MAX_EVENT_BYTES, SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

fn parse(pieces: &[&[u8]]) -> (Vec<SseEvent>, u64) {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    for piece in pieces {
        parser.feed(piece);
        while let Some(event) = parser.next_event() {
            assert!(event.data.len() <= MAX_EVENT_BYTES, "an event over the bound");
            events.push(event);
        }
    }
    (events, parser.dropped())
}

fuzz_target!(|data: &[u8]| {
    let Some((cut, stream)) = data.split_first() else {
        return;
    };
    let at = usize::from(*cut).min(stream.len());
    let (head, tail) = stream.split_at(at);
    assert_eq!(parse(&[head, tail]), parse(&[stream]), "split at {at}");
});

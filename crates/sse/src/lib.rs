//! A sans-IO parser of Server-Sent Events (the `text/event-stream` format of the WHATWG HTML
//! standard, §9.2.6), which is how OpenAI-compatible servers stream chat completions.
//!
//! Bytes go in with [`SseParser::feed`] in whatever pieces the network delivered them — a line
//! ending may be split anywhere, even between the CR and the LF of a CRLF — and whole events come
//! out of [`SseParser::next_event`]. Lines end in LF, CR or CRLF; a UTF-8 byte order mark at the
//! very start is skipped; `:` starts a comment; `data:` lines are joined with `\n`; one space
//! after a field's colon is dropped; a blank line dispatches the event (an event with no data is
//! not dispatched); the `id` persists from event to event, as the standard's last-event-ID does.
//!
//! Memory is bounded: an event (or a single line) longer than [`MAX_EVENT_BYTES`] is dropped
//! whole and counted ([`SseParser::dropped`]), never grown without end.
//!
//! It is our own rather than a crate's because it is small, knows nothing of IO (so the
//! chunk-splitting properties are tested directly) and is fuzzed (`fuzz/fuzz_targets/sse.rs`).
//! It is a crate of its own, depending on nothing, so that the fuzz target builds it alone
//! rather than the whole agent with its HTTP and websocket clients; `dialtone-agent`'s
//! OpenAI-compatible chat client is its user.

use std::collections::VecDeque;

/// The largest event (its data and type together) or line kept; larger ones are dropped.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// Its `event:` type; `None` for the default type (`message`).
    pub event: Option<String>,
    /// Its `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen so far in the stream, when one was set and not cleared.
    pub id: Option<String>,
}

/// The parser; see the [crate documentation](crate).
#[derive(Debug, Default)]
pub struct SseParser {
    /// The line read so far (without its ending), at most [`MAX_EVENT_BYTES`].
    line: Vec<u8>,
    /// The current line was longer than the limit; the rest of it is being skipped.
    line_too_long: bool,
    /// The last byte fed was a CR: an LF at the start of the next piece ends nothing.
    after_cr: bool,
    /// A line has been completed (so a BOM can no longer come).
    started: bool,
    /// The event being read.
    data: String,
    event: String,
    last_id: String,
    /// The event being read has outgrown the limit and will be dropped.
    oversized: bool,
    dropped: u64,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    /// Takes in the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some((b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (head, tail) = rest.split_at(end);
            self.push_line_bytes(head);
            let Some((terminator, mut tail)) = tail.split_first() else {
                break;
            };
            if *terminator == b'\r' {
                match tail.split_first() {
                    Some((b'\n', after)) => tail = after,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_line();
            rest = tail;
        }
        self.push_line_bytes(rest);
    }

    /// The next complete event, in stream order.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// How many events were dropped for being larger than [`MAX_EVENT_BYTES`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        let room = MAX_EVENT_BYTES.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.line_too_long = true;
        }
        self.line
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        let too_long = std::mem::take(&mut self.line_too_long);
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix(b"\xEF\xBB\xBF") {
                line = rest.to_vec();
            }
        }
        if line.first() == Some(&b':') {
            return;
        }
        if too_long {
            self.oversize();
            return;
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.data.len() + self.event.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    self.oversize();
                } else if !self.oversized {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
            }
            "event" => {
                if self.data.len() + value.len() > MAX_EVENT_BYTES {
                    self.oversize();
                } else {
                    value.clone_into(&mut self.event);
                }
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.last_id),
            _ => {}
        }
    }

    fn oversize(&mut self) {
        self.oversized = true;
        self.data = String::new();
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if std::mem::take(&mut self.oversized) {
            self.dropped += 1;
            return;
        }
        if data.is_empty() {
            return;
        }
        data.pop();
        self.ready.push_back(SseEvent {
            event: (!event.is_empty()).then_some(event),
            data,
            id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    fn parse_pieces(pieces: &[&[u8]]) -> (Vec<SseEvent>, u64) {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for piece in pieces {
            parser.feed(piece);
            while let Some(event) = parser.next_event() {
                events.push(event);
            }
        }
        (events, parser.dropped())
    }

    fn parse(bytes: &[u8]) -> Vec<SseEvent> {
        parse_pieces(&[bytes]).0
    }

    fn data(text: &str) -> SseEvent {
        SseEvent {
            data: text.into(),
            ..SseEvent::default()
        }
    }

    #[test]
    fn the_openai_stream_shape() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse(stream),
            vec![data("{\"a\":1}"), data("{\"b\":2}"), data("[DONE]")]
        );
    }

    #[test]
    fn fields_comments_and_line_endings() {
        let stream = b"\xEF\xBB\xBF: a comment\r\nevent: delta\rid: 7\r\ndata:one\ndata:  two\n\
                       retry: 10\nunknown: x\ndata\n\n";
        assert_eq!(
            parse(stream),
            vec![SseEvent {
                event: Some("delta".into()),
                data: "one\n two\n".into(),
                id: Some("7".into()),
            }]
        );
    }

    #[test]
    fn the_id_persists_and_is_cleared_by_an_empty_one() {
        let events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n");
        let ids: Vec<_> = events.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, vec![Some("1"), Some("1"), None]);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_its_type_is_forgotten() {
        assert_eq!(
            parse(b"event: ping\n\ndata: x\n\n"),
            vec![data("x")],
            "the type set before the empty event does not leak into the next"
        );
    }

    #[test]
    fn an_unfinished_event_waits_for_its_blank_line() {
        let mut parser = SseParser::default();
        parser.feed(b"data: x\n");
        assert_eq!(parser.next_event(), None);
        parser.feed(b"\r");
        assert_eq!(parser.next_event(), Some(data("x")));
    }

    #[test]
    fn a_crlf_split_between_pieces_is_one_line_ending() {
        let (events, _) = parse_pieces(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(events, vec![data("a"), data("b")]);
    }

    #[test]
    fn a_bom_split_between_pieces_is_skipped() {
        let (events, _) = parse_pieces(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(events, vec![data("a")]);
    }

    #[test]
    fn an_oversized_event_is_dropped_and_counted_and_the_stream_goes_on() {
        let big = "x".repeat(MAX_EVENT_BYTES / 2);
        let mut stream = String::new();
        for _ in 0..3 {
            stream.push_str(&format!("data: {big}\n"));
        }
        stream.push_str("\ndata: after\n\n");
        let (events, dropped) = parse_pieces(&[stream.as_bytes()]);
        assert_eq!(events, vec![data("after")]);
        assert_eq!(dropped, 1);
    }

    #[test]
    fn an_oversized_line_is_dropped_without_being_kept() {
        let mut parser = SseParser::default();
        parser.feed(b"data: ");
        let block = vec![b'y'; 64 * 1024];
        for _ in 0..40 {
            parser.feed(&block);
        }
        assert!(parser.line.len() <= MAX_EVENT_BYTES);
        parser.feed(b"\n\ndata: ok\n\n");
        assert_eq!(parser.next_event(), Some(data("ok")));
        assert_eq!(parser.dropped(), 1);
    }

    fn arb_event() -> impl Strategy<Value = SseEvent> {
        (
            proptest::option::of("[a-z]{1,8}"),
            proptest::collection::vec("[^\r\n]{0,12}", 1..4),
            proptest::option::of("[a-z0-9]{1,6}"),
        )
            .prop_map(|(event, lines, id)| SseEvent {
                event,
                data: lines.join("\n"),
                id,
            })
    }

    fn write(events: &[SseEvent], endings: &[usize]) -> Vec<u8> {
        const ENDINGS: [&str; 3] = ["\n", "\r", "\r\n"];
        let mut n = 0;
        let mut last = "";
        let mut end = || {
            n += 1;
            let mut ending = ENDINGS[endings[n % endings.len()] % 3];
            // A CR then an LF would be one CRLF.
            if last == "\r" && ending == "\n" {
                ending = "\r\n";
            }
            last = ending;
            ending
        };
        let mut out = String::new();
        for event in events {
            out.push_str(&format!(": keep-alive{}", end()));
            if let Some(kind) = &event.event {
                out.push_str(&format!("event: {kind}{}", end()));
            }
            if let Some(id) = &event.id {
                out.push_str(&format!("id:{id}{}", end()));
            }
            for line in event.data.split('\n') {
                out.push_str(&format!("data: {line}{}", end()));
            }
            out.push_str(end());
        }
        out.into_bytes()
    }

    proptest! {
        #[test]
        fn written_events_read_back_whatever_the_line_endings(
            events in proptest::collection::vec(arb_event(), 0..6),
            endings in proptest::collection::vec(0usize..3, 1..8),
        ) {
            // Each generated event sets its id or inherits the previous one.
            let mut expected = events.clone();
            let mut last = None;
            for e in &mut expected {
                if e.id.is_none() {
                    e.id.clone_from(&last);
                }
                last.clone_from(&e.id);
            }
            prop_assert_eq!(parse(&write(&events, &endings)), expected);
        }

        #[test]
        fn splitting_the_stream_anywhere_gives_the_same_events(
            events in proptest::collection::vec(arb_event(), 0..6),
            endings in proptest::collection::vec(0usize..3, 1..8),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let bytes = write(&events, &endings);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in at {
                pieces.push(&bytes[from..cut]);
                from = cut;
            }
            pieces.push(&bytes[from..]);
            prop_assert_eq!(parse_pieces(&pieces).0, parse(&bytes));
        }

        #[test]
        fn arbitrary_bytes_split_anywhere_never_panic_and_agree(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<proptest::sample::Index>(),
        ) {
            let cut = cut.index(bytes.len() + 1);
            let whole = parse(&bytes);
            prop_assert_eq!(parse_pieces(&[&bytes[..cut], &bytes[cut..]]).0, whole);
        }
    }
}

//! Stream framing (RFC 3261 §18.3): cutting messages out of a TCP byte stream by `Content-Length`.
//!
//! Datagrams need no framer: one datagram is one message and [`crate::scan::scan`] applies the
//! datagram rules to it. On a stream every message must carry `Content-Length`; CRLF keep-alives
//! (RFC 5626 §4.4.1: a double-CRLF ping, a single-CRLF pong) may stand between messages.

use crate::scan::{MAX_HEADER_BYTES, find_header_end};

/// The largest body accepted on a stream before the connection is declared broken.
pub const MAX_STREAM_BODY_BYTES: usize = 1024 * 1024;

/// What the framer found next in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete message, ready for [`crate::Endpoint::handle_message`].
    Message(Vec<u8>),
    /// A double-CRLF keep-alive ping; the driver answers with a single CRLF (pong).
    KeepAlivePing,
}

/// The stream cannot be re-synchronised; the driver must close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A message on a stream without `Content-Length`.
    #[error("message on a stream transport has no Content-Length")]
    MissingContentLength,
    /// `Content-Length` is not a number.
    #[error("Content-Length is not a number")]
    InvalidContentLength,
    /// Two `Content-Length` values that disagree: the body's extent is unknown (RFC 4475
    /// §3.3.9).
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// The header section grew past the limit without ending.
    #[error("header section exceeds {MAX_HEADER_BYTES} bytes")]
    HeadersTooLarge,
    /// The body is larger than [`MAX_STREAM_BODY_BYTES`].
    #[error("body of {length} bytes exceeds the stream limit")]
    BodyTooLarge {
        /// The announced length.
        length: usize,
    },
}

/// Accumulates bytes from one stream connection and yields whole messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: Vec<u8>,
}

impl StreamFramer {
    /// A framer with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, StreamError> {
        let leading = self
            .buffer
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(self.buffer.len());
        if leading > 0 {
            let run = self.buffer.get(..leading).unwrap_or_default();
            if let Some(p) = run.windows(4).position(|x| x == b"\r\n\r\n") {
                self.buffer.drain(..p + 4);
                return Ok(Some(Frame::KeepAlivePing));
            }
            if leading == self.buffer.len() {
                // A pong, or a ping whose second half has not arrived yet.
                return Ok(None);
            }
            self.buffer.drain(..leading);
        }
        let Some((head_len, body_start)) = find_header_end(&self.buffer) else {
            if self.buffer.len() > MAX_HEADER_BYTES {
                return Err(StreamError::HeadersTooLarge);
            }
            return Ok(None);
        };
        if head_len > MAX_HEADER_BYTES {
            return Err(StreamError::HeadersTooLarge);
        }
        let head = self.buffer.get(..head_len).unwrap_or_default();
        let length = content_length(head)?;
        if length > MAX_STREAM_BODY_BYTES {
            return Err(StreamError::BodyTooLarge { length });
        }
        let total = body_start + length;
        if self.buffer.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buffer.drain(..total).collect();
        Ok(Some(Frame::Message(message)))
    }
}

fn content_length(head: &[u8]) -> Result<usize, StreamError> {
    let mut found = None;
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = value.get(1..).unwrap_or_default().trim_ascii();
            let length: usize = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or(StreamError::InvalidContentLength)?;
            if found.is_some_and(|f| f != length) {
                return Err(StreamError::ConflictingContentLength);
            }
            found = Some(length);
        }
    }
    found.ok_or(StreamError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn splits_messages_delivered_in_pieces_and_together() {
        let mut f = StreamFramer::new();
        let mut both = OPTIONS.to_vec();
        both.extend_from_slice(OPTIONS);
        for chunk in both.chunks(7) {
            f.push(chunk);
        }
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(OPTIONS.to_vec()))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(OPTIONS.to_vec()))));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn partial_body_waits() {
        let mut f = StreamFramer::new();
        f.push(&OPTIONS[..OPTIONS.len() - 1]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&OPTIONS[OPTIONS.len() - 1..]);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn keepalives_are_reported_and_skipped() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::KeepAlivePing)));
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(OPTIONS);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn missing_or_bad_content_length_breaks_the_stream() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(StreamError::MissingContentLength));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nl: x1\r\n\r\n");
        assert_eq!(f.next_frame(), Err(StreamError::InvalidContentLength));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\nabcde");
        assert_eq!(f.next_frame(), Err(StreamError::ConflictingContentLength));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: +5\r\n\r\nabcde");
        assert_eq!(f.next_frame(), Err(StreamError::InvalidContentLength));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999\r\n\r\n");
        assert!(matches!(
            f.next_frame(),
            Err(StreamError::BodyTooLarge { .. })
        ));
    }
}

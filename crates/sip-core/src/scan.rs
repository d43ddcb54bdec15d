//! The thin layer in front of `rsip`: framing-independent scanning of one SIP message.
//!
//! `rsip` refuses some valid messages (folded header lines, compact header names it does not
//! expand, extension methods) and accepts some invalid ones (typed headers are parsed lazily).
//! [`scan`] reads the start line and the header section itself, unfolds continuation lines,
//! expands compact names, checks `Content-Length` against the body, and keeps every header as a
//! `(canonical name, value)` pair. Validation ([`crate::validate`]) works on that result, so it can
//! answer a request `rsip` could never represent.

use std::borrow::Cow;

/// The most header bytes one message may carry before it is refused.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The start line of a scanned message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`.
    Request {
        /// The method token, exactly as sent.
        method: String,
        /// The Request-URI, as sent.
        uri: String,
        /// The SIP-Version, as sent.
        version: String,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    Response {
        /// The SIP-Version, as sent.
        version: String,
        /// The three-digit status code.
        code: u16,
        /// The reason phrase (may be empty).
        reason: String,
    },
}

/// One header line after unfolding, with its name in canonical long form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    /// Canonical name (`Via`, `Call-ID`, ...) for the headers SIP defines, else as sent.
    pub name: Cow<'static, str>,
    /// The value with leading/trailing whitespace trimmed and folding replaced by one space.
    pub value: String,
}

/// A message whose framing and start line could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedMessage {
    /// Request or status line.
    pub start: StartLine,
    /// Header lines in order.
    pub headers: Vec<RawHeader>,
    /// The body, exactly `Content-Length` bytes when that header is present.
    pub body: Vec<u8>,
    /// The problem found in the message that still allows an answer (for requests).
    pub defect: Option<Defect>,
}

/// A problem that makes a message invalid but leaves its headers readable, so a request can
/// still be answered with `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Defect {
    /// `Content-Length` is not a number.
    ContentLengthInvalid,
    /// `Content-Length` says more bytes than the message carries.
    ContentLengthTooLarge,
    /// Two `Content-Length` headers that disagree.
    ContentLengthConflict,
    /// A header line without a colon or with an invalid name.
    MalformedHeaderLine,
    /// A request line with other than single spaces between its three elements, or a
    /// Request-URI holding whitespace (RFC 4475 §3.1.2.8-10).
    MalformedRequestLine,
}

impl Defect {
    /// The reason phrase a `400` carries for this defect.
    pub fn reason(self) -> &'static str {
        match self {
            Defect::ContentLengthInvalid => "Bad Request - Invalid Content-Length",
            Defect::ContentLengthTooLarge => "Bad Request - Content-Length exceeds body",
            Defect::ContentLengthConflict => "Bad Request - Conflicting Content-Length",
            Defect::MalformedHeaderLine => "Bad Request - Malformed header line",
            Defect::MalformedRequestLine => "Bad Request - Malformed Request-Line",
        }
    }
}

/// Why a message could not be scanned at all (it is dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScanFailure {
    /// Nothing but whitespace.
    Empty,
    /// No blank line ends the header section.
    NoHeaderEnd,
    /// The header section is larger than [`MAX_HEADER_BYTES`].
    HeadersTooLarge,
    /// The start line is neither a request line nor a status line.
    MalformedStartLine,
    /// The header section is not UTF-8.
    NotUtf8,
}

/// Compact forms (RFC 3261 §7.3.3 and extensions) and canonical spellings.
fn canonical_name(name: &str) -> Cow<'static, str> {
    const KNOWN: &[(&str, &str)] = &[
        ("v", "Via"),
        ("f", "From"),
        ("t", "To"),
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("e", "Content-Encoding"),
        ("k", "Supported"),
        ("s", "Subject"),
        ("o", "Event"),
        ("r", "Refer-To"),
        ("x", "Session-Expires"),
        ("via", "Via"),
        ("from", "From"),
        ("to", "To"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
        ("contact", "Contact"),
        ("content-length", "Content-Length"),
        ("content-type", "Content-Type"),
        ("max-forwards", "Max-Forwards"),
        ("require", "Require"),
        ("proxy-require", "Proxy-Require"),
        ("supported", "Supported"),
        ("record-route", "Record-Route"),
        ("route", "Route"),
        ("www-authenticate", "WWW-Authenticate"),
        ("proxy-authenticate", "Proxy-Authenticate"),
        ("authorization", "Authorization"),
        ("proxy-authorization", "Proxy-Authorization"),
        ("session-expires", "Session-Expires"),
        ("min-se", "Min-SE"),
        ("allow", "Allow"),
        ("user-agent", "User-Agent"),
        ("server", "Server"),
        ("expires", "Expires"),
        ("retry-after", "Retry-After"),
    ];
    let lower = name.to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|(k, _)| *k == lower)
        .map(|(_, v)| Cow::Borrowed(*v))
        .unwrap_or_else(|| Cow::Owned(name.to_owned()))
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Finds the end of the header section: returns (header bytes, body start).
/// Accepts CRLF and bare LF line endings.
pub(crate) fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = bytes.get(i..)?.iter().position(|b| *b == b'\n') {
        let nl = i + pos;
        // Blank line: "\n\n" or "\n\r\n".
        match bytes.get(nl + 1..) {
            Some([b'\n', ..]) => return Some((nl + 1, nl + 2)),
            Some([b'\r', b'\n', ..]) => return Some((nl + 1, nl + 3)),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

/// Leading CRLFs before the start line are ignored (RFC 3261 §7.5).
pub(crate) fn skip_leading_crlf(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// Scans one message (a datagram, or one message cut from a stream by the framer).
pub fn scan(bytes: &[u8]) -> Result<ScannedMessage, ScanFailure> {
    let bytes = skip_leading_crlf(bytes);
    if bytes.is_empty() {
        return Err(ScanFailure::Empty);
    }
    let (head_len, body_start) = match find_header_end(bytes) {
        Some(v) => v,
        None if bytes.len() > MAX_HEADER_BYTES => return Err(ScanFailure::HeadersTooLarge),
        // A datagram is a whole message: one whose last header line is complete but lacks the
        // blank line after it has its headers end with the datagram (RFC 4475 §3.1.2.15 is one).
        None if bytes.ends_with(b"\n") => (bytes.len(), bytes.len()),
        None => return Err(ScanFailure::NoHeaderEnd),
    };
    if head_len > MAX_HEADER_BYTES {
        return Err(ScanFailure::HeadersTooLarge);
    }
    let head = bytes.get(..head_len).ok_or(ScanFailure::NoHeaderEnd)?;
    let head = std::str::from_utf8(head).map_err(|_| ScanFailure::NotUtf8)?;
    let rest = bytes.get(body_start..).unwrap_or_default();

    let mut lines = head
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty());
    let start_line = lines.next().ok_or(ScanFailure::MalformedStartLine)?;
    let (start, mut defect) = parse_start_line(start_line)?;

    let mut headers: Vec<RawHeader> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let push = |cur: Option<(String, String)>, headers: &mut Vec<RawHeader>| {
        if let Some((name, value)) = cur {
            headers.push(RawHeader {
                name: canonical_name(&name),
                value: value.trim().to_owned(),
            });
        }
    };
    for line in lines {
        if line.starts_with([' ', '\t']) {
            match current.as_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => defect = defect.or(Some(Defect::MalformedHeaderLine)),
            }
            continue;
        }
        push(current.take(), &mut headers);
        match line.split_once(':') {
            Some((name, value)) if is_token(name.trim_end_matches([' ', '\t'])) => {
                current = Some((
                    name.trim_end_matches([' ', '\t']).to_owned(),
                    value.to_owned(),
                ));
            }
            _ => defect = defect.or(Some(Defect::MalformedHeaderLine)),
        }
    }
    push(current.take(), &mut headers);

    let mut content_length: Option<usize> = None;
    for h in headers.iter().filter(|h| h.name == "Content-Length") {
        // `1*DIGIT`: Rust's parser would also take a leading `+`.
        let digits = !h.value.is_empty() && h.value.bytes().all(|b| b.is_ascii_digit());
        match h.value.parse::<usize>().ok().filter(|_| digits).ok_or(()) {
            Ok(n) if content_length.is_some_and(|c| c != n) => {
                defect = defect.or(Some(Defect::ContentLengthConflict));
            }
            Ok(n) => content_length = Some(n),
            Err(_) => defect = defect.or(Some(Defect::ContentLengthInvalid)),
        }
    }
    let body = match content_length {
        Some(n) if n <= rest.len() => rest.get(..n).unwrap_or_default().to_vec(),
        Some(_) => {
            defect = defect.or(Some(Defect::ContentLengthTooLarge));
            rest.to_vec()
        }
        None => rest.to_vec(),
    };
    Ok(ScannedMessage {
        start,
        headers,
        body,
        defect,
    })
}

/// Reads the start line. A request line that is not exactly `Method SP Request-URI SP
/// SIP-Version` but starts with a method and a space is still read (its parts split on
/// whitespace), with a defect, so the request can be answered `400`.
fn parse_start_line(line: &str) -> Result<(StartLine, Option<Defect>), ScanFailure> {
    let mut parts = line.splitn(3, ' ');
    let first = parts.next().unwrap_or_default();
    let second = parts.next().ok_or(ScanFailure::MalformedStartLine)?;
    let third = parts.next();
    if first.len() >= 4
        && first
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        let code: u16 = second
            .parse()
            .map_err(|_| ScanFailure::MalformedStartLine)?;
        if second.len() != 3 || !(100..=699).contains(&code) {
            return Err(ScanFailure::MalformedStartLine);
        }
        let reason = third.ok_or(ScanFailure::MalformedStartLine)?;
        let start = StartLine::Response {
            version: first.to_owned(),
            code,
            reason: reason.to_owned(),
        };
        return Ok((start, None));
    }
    if first.is_empty() {
        return Err(ScanFailure::MalformedStartLine);
    }
    let exact = match third {
        Some(version) => !second.is_empty() && !version.is_empty() && !version.contains(' '),
        None => false,
    };
    if exact {
        let start = StartLine::Request {
            method: first.to_owned(),
            uri: second.to_owned(),
            version: third.unwrap_or_default().to_owned(),
        };
        return Ok((start, None));
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let mut rest: Vec<&str> = words.collect();
    let version = rest.pop().unwrap_or_default().to_owned();
    let start = StartLine::Request {
        method,
        uri: rest.join(" "),
        version,
    };
    Ok((start, Some(Defect::MalformedRequestLine)))
}

impl ScannedMessage {
    /// All values of the header `name` (canonical form), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// The first value of header `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Prints the message in the normal form `rsip` parses: the start line, `headers` one per
    /// line, and a single `Content-Length` that matches the body.
    pub fn to_normalized_bytes(&self, headers: &[(String, String)]) -> Vec<u8> {
        let mut out = String::with_capacity(512);
        match &self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                out.push_str(method);
                out.push(' ');
                out.push_str(uri);
                out.push(' ');
                out.push_str(version);
            }
            StartLine::Response {
                version,
                code,
                reason,
            } => {
                out.push_str(version);
                out.push(' ');
                out.push_str(&code.to_string());
                out.push(' ');
                out.push_str(reason);
            }
        }
        out.push_str("\r\n");
        for (name, value) in headers.iter().filter(|h| h.0 != "Content-Length") {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("Content-Length: ");
        out.push_str(&self.body.len().to_string());
        out.push_str("\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_continuation_lines_and_expands_compact_names() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nSubject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\nl: 0\r\n\r\n";
        let s = scan(msg).unwrap();
        assert_eq!(s.first("Via"), Some("SIP/2.0/UDP h;branch=z9hG4bK1"));
        assert_eq!(
            s.first("Subject"),
            Some("I know you're there, pick up the phone and talk to me!")
        );
        assert_eq!(s.defect, None);
    }

    #[test]
    fn content_length_cuts_extra_datagram_bytes_and_flags_short_bodies() {
        let s = scan(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!(s.body, b"abc");
        let s = scan(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 30\r\n\r\nabc").unwrap();
        assert_eq!(s.defect, Some(Defect::ContentLengthTooLarge));
        let s = scan(b"MESSAGE sip:a@b SIP/2.0\r\nl: 3\r\nContent-Length: 4\r\n\r\nabcd").unwrap();
        assert_eq!(s.defect, Some(Defect::ContentLengthConflict));
        let s = scan(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n").unwrap();
        assert_eq!(s.defect, Some(Defect::ContentLengthInvalid));
        let s = scan(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: +1\r\n\r\na").unwrap();
        assert_eq!(s.defect, Some(Defect::ContentLengthInvalid));
    }

    #[test]
    fn start_lines_are_checked() {
        assert_eq!(scan(b"\r\n\r\n"), Err(ScanFailure::Empty));
        assert_eq!(
            scan(b"INVITE\r\n\r\n"),
            Err(ScanFailure::MalformedStartLine)
        );
        assert_eq!(
            scan(b"SIP/2.0 2000 OK\r\n\r\n"),
            Err(ScanFailure::MalformedStartLine)
        );
        assert_eq!(
            scan(b"INVITE sip:a@b SIP/2.0\r\nVia: x"),
            Err(ScanFailure::NoHeaderEnd)
        );
        let s = scan(b"\r\n\r\nSIP/2.0 180 Ringing\r\n\r\n").unwrap();
        assert!(matches!(s.start, StartLine::Response { code: 180, .. }));
    }

    #[test]
    fn loose_request_lines_are_read_with_a_defect() {
        for line in [
            "INVITE sip:user@example.com; lr SIP/2.0",
            "INVITE  sip:user@example.com  SIP/2.0",
            "OPTIONS sip:remote-target@example.com SIP/2.0  ",
            "INVITE sip:user@example.com",
        ] {
            let s = scan(format!("{line}\r\nVia: SIP/2.0/UDP h\r\n\r\n").as_bytes()).unwrap();
            assert_eq!(s.defect, Some(Defect::MalformedRequestLine), "{line}");
            assert!(matches!(s.start, StartLine::Request { ref method, .. } if method.len() >= 6));
        }
    }

    #[test]
    fn header_without_colon_is_a_defect_not_a_failure() {
        let s = scan(b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP x\r\n\r\n").unwrap();
        assert_eq!(s.defect, Some(Defect::MalformedHeaderLine));
    }

    #[test]
    fn oversized_headers_fail() {
        let mut m = b"INVITE sip:a@b SIP/2.0\r\nX-Big: ".to_vec();
        m.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + 1));
        m.extend_from_slice(b"\r\n\r\n");
        assert_eq!(scan(&m), Err(ScanFailure::HeadersTooLarge));
    }
}

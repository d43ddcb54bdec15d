//! Validation of incoming messages before they reach a transaction (RFC 3261 §8.2, §16.3, §18).
//!
//! [`validate`] turns raw bytes into one of: a request or response `rsip` has parsed and whose
//! mandatory headers were checked eagerly; a request to be refused with a ready response
//! (`400` with a reason that says what is wrong, `416`, `420`, `483`, `501`, `505`); or a drop
//! with its reason, for what cannot be answered.

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Headers, Method, StatusCode, Version};

use crate::scan::{self, ScanFailure, ScannedMessage, StartLine, is_token};

/// Option tags this core supports in `Require` (anything else gets `420`).
pub const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

/// Methods the user agent implements; the `Allow` header of its responses.
pub const ALLOWED_METHODS: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// The result of validating one incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A well-formed request.
    Request(rsip::Request),
    /// A well-formed response.
    Response(rsip::Response),
    /// A request that gets this response and nothing else.
    Reject {
        /// The response to send back along the request's Via.
        response: rsip::Response,
        /// Why, for the counters.
        reason: RejectReason,
    },
    /// Dropped and counted: nothing can be sent back.
    Drop(DropReason),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// `400`: a header missing, malformed or inconsistent.
    BadRequest,
    /// `416`: a Request-URI scheme other than sip, sips or tel.
    UnsupportedUriScheme,
    /// `420`: `Require` names an extension this core lacks.
    BadExtension,
    /// `483`: Max-Forwards reached zero.
    TooManyHops,
    /// `501`: a method this core does not know.
    NotImplemented,
    /// `505`: not SIP/2.0.
    VersionNotSupported,
}

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The framing or the start line could not be read.
    Unreadable(ScanFailure),
    /// A request whose Via is missing or unreadable cannot be answered.
    UnanswerableRequest,
    /// A response missing a mandatory header, malformed, or not SIP/2.0.
    MalformedResponse,
}

const MANDATORY_REQUEST: &[&str] = &["Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards"];
const MANDATORY_RESPONSE: &[&str] = &["Via", "From", "To", "Call-ID", "CSeq"];
const SINGLE_VALUED: &[&str] = &["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

/// Parses and checks one message. `local_tag` is the To tag used if a refusal needs one.
pub fn validate(bytes: &[u8], local_tag: &str) -> Inbound {
    let scanned = match scan::scan(bytes) {
        Ok(s) => s,
        Err(failure) => return Inbound::Drop(DropReason::Unreadable(failure)),
    };
    match &scanned.start {
        StartLine::Request { .. } => validate_request(&scanned, local_tag),
        StartLine::Response { .. } => validate_response(&scanned),
    }
}

fn validate_response(s: &ScannedMessage) -> Inbound {
    let StartLine::Response { version, .. } = &s.start else {
        return Inbound::Drop(DropReason::MalformedResponse);
    };
    if version != "SIP/2.0"
        || s.defect.is_some()
        || MANDATORY_RESPONSE.iter().any(|h| s.first(h).is_none())
        || cseq_parts(s).is_none()
    {
        return Inbound::Drop(DropReason::MalformedResponse);
    }
    match rsip::Response::try_from(s.to_normalized_bytes()) {
        Ok(r) if typed_headers_ok(&r.headers) => Inbound::Response(r),
        _ => Inbound::Drop(DropReason::MalformedResponse),
    }
}

fn cseq_parts(s: &ScannedMessage) -> Option<(u32, &str)> {
    let (num, method) = s.first("CSeq")?.split_once([' ', '\t'])?;
    let num: u32 = num.parse().ok()?;
    let method = method.trim();
    (num < 1 << 31 && is_token(method)).then_some((num, method))
}

fn validate_request(s: &ScannedMessage, local_tag: &str) -> Inbound {
    let StartLine::Request {
        method,
        uri,
        version,
    } = &s.start
    else {
        return Inbound::Drop(DropReason::UnanswerableRequest);
    };
    // Without a readable top Via there is nowhere to send an answer.
    let via_ok = s
        .first("Via")
        .map(|v| rsip::headers::Via::new(v).typed().is_ok())
        .unwrap_or(false);
    if !via_ok {
        return Inbound::Drop(DropReason::UnanswerableRequest);
    }
    let is_ack = method == "ACK";
    let reject = |code: u16, reason: String, why: RejectReason| {
        if is_ack {
            // ACK never gets a response (RFC 3261 §17.2.3).
            return Inbound::Drop(DropReason::UnanswerableRequest);
        }
        let mut response = response_from_scanned(s, code, &reason, local_tag);
        if why == RejectReason::NotImplemented {
            response
                .headers
                .push(Header::Allow(rsip::headers::Allow::new(ALLOWED_METHODS)));
        }
        Inbound::Reject {
            response,
            reason: why,
        }
    };

    if version != "SIP/2.0" {
        return reject(
            505,
            "Version Not Supported".into(),
            RejectReason::VersionNotSupported,
        );
    }
    if let Some(defect) = s.defect {
        return reject(400, defect.reason().into(), RejectReason::BadRequest);
    }
    if !is_token(method) {
        return reject(
            400,
            "Bad Request - Malformed method".into(),
            RejectReason::BadRequest,
        );
    }
    for name in MANDATORY_REQUEST {
        if s.first(name).is_none() {
            return reject(
                400,
                format!("Bad Request - Missing {name} header"),
                RejectReason::BadRequest,
            );
        }
    }
    for name in SINGLE_VALUED {
        if s.values(name).nth(1).is_some() {
            return reject(
                400,
                format!("Bad Request - Multiple {name} headers"),
                RejectReason::BadRequest,
            );
        }
    }
    let Some((_, cseq_method)) = cseq_parts(s) else {
        return reject(
            400,
            "Bad Request - Malformed CSeq header".into(),
            RejectReason::BadRequest,
        );
    };
    if cseq_method != method {
        return reject(
            400,
            "Bad Request - CSeq method does not match request method".into(),
            RejectReason::BadRequest,
        );
    }
    let max_forwards = s
        .first("Max-Forwards")
        .and_then(|v| v.parse::<u8>().ok().filter(|_| v.len() <= 3));
    match max_forwards {
        None => {
            return reject(
                400,
                "Bad Request - Malformed Max-Forwards header".into(),
                RejectReason::BadRequest,
            );
        }
        Some(0) if method != "OPTIONS" => {
            return reject(483, "Too Many Hops".into(), RejectReason::TooManyHops);
        }
        Some(_) => {}
    }
    let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sip" | "sips" | "tel") => {}
        Some(s) if is_token(s) => {
            return reject(
                416,
                "Unsupported URI Scheme".into(),
                RejectReason::UnsupportedUriScheme,
            );
        }
        _ => {
            return reject(
                400,
                "Bad Request - Malformed Request-URI".into(),
                RejectReason::BadRequest,
            );
        }
    }
    let known = Method::all().iter().any(|m| m.to_string() == *method);
    if !known {
        return reject(501, "Not Implemented".into(), RejectReason::NotImplemented);
    }
    if method != "CANCEL" && !is_ack {
        let unsupported: Vec<&str> = s
            .values("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !SUPPORTED_EXTENSIONS.contains(t))
            .collect();
        if !unsupported.is_empty() {
            let mut response = response_from_scanned(s, 420, "Bad Extension", local_tag);
            response
                .headers
                .push(Header::Unsupported(rsip::headers::Unsupported::new(
                    unsupported.join(", "),
                )));
            return Inbound::Reject {
                response,
                reason: RejectReason::BadExtension,
            };
        }
    }
    let request = match rsip::Request::try_from(s.to_normalized_bytes()) {
        Ok(r) => r,
        Err(_) => {
            return reject(
                400,
                "Bad Request - Malformed message".into(),
                RejectReason::BadRequest,
            );
        }
    };
    if let Some(bad) = first_bad_typed_header(&request.headers) {
        return reject(
            400,
            format!("Bad Request - Malformed {bad} header"),
            RejectReason::BadRequest,
        );
    }
    Inbound::Request(request)
}

fn typed_headers_ok(headers: &Headers) -> bool {
    first_bad_typed_header(headers).is_none()
}

/// `rsip` parses typed headers lazily; check the ones every layer above relies on now.
fn first_bad_typed_header(headers: &Headers) -> Option<&'static str> {
    for h in headers.iter() {
        let bad = match h {
            Header::Via(v) => v.typed().is_err().then_some("Via"),
            Header::From(v) => v.typed().is_err().then_some("From"),
            Header::To(v) => v.typed().is_err().then_some("To"),
            Header::CSeq(v) => v.typed().is_err().then_some("CSeq"),
            Header::Contact(v) => v.typed().is_err().then_some("Contact"),
            Header::RecordRoute(v) => v.typed().is_err().then_some("Record-Route"),
            Header::Route(v) => v.typed().is_err().then_some("Route"),
            _ => None,
        };
        if bad.is_some() {
            return bad;
        }
    }
    None
}

/// A status code carrying our own reason phrase (rsip prints identifiers like `BusyHere`).
pub fn status(code: u16, reason: &str) -> StatusCode {
    StatusCode::Other(code, reason.to_owned())
}

/// The standard reason phrase for the codes this core sends.
pub fn standard_reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

/// Builds a response to a request known only from its scanned headers (RFC 3261 §8.2.6.2):
/// Via, From, Call-ID and CSeq copied, a To tag added when the request had none.
fn response_from_scanned(
    s: &ScannedMessage,
    code: u16,
    reason: &str,
    local_tag: &str,
) -> rsip::Response {
    let mut headers = Headers::default();
    for h in &s.headers {
        let header = match h.name.as_ref() {
            "Via" => Header::Via(rsip::headers::Via::new(&h.value)),
            "From" => Header::From(rsip::headers::From::new(&h.value)),
            "To" => Header::To(rsip::headers::To::new(to_with_tag(&h.value, local_tag))),
            "Call-ID" => Header::CallId(rsip::headers::CallId::new(&h.value)),
            "CSeq" => Header::CSeq(rsip::headers::CSeq::new(&h.value)),
            _ => continue,
        };
        headers.push(header);
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    rsip::Response {
        status_code: status(code, reason),
        version: Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// Adds `;tag=` to a To value that lacks one (a crude check is enough for a refusal).
pub(crate) fn to_with_tag(value: &str, tag: &str) -> String {
    let lower = value.to_ascii_lowercase();
    let params = match lower.rfind('>') {
        Some(gt) => lower.get(gt..).unwrap_or_default(),
        None => lower.as_str(),
    };
    if params.contains(";tag=") {
        value.to_owned()
    } else {
        format!("{value};tag={tag}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    const GOOD: &str = "Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n";

    fn rejected(bytes: &[u8]) -> (u16, String) {
        match validate(bytes, "t1") {
            Inbound::Reject { response, .. } => match &response.status_code {
                StatusCode::Other(code, reason) => (*code, reason.clone()),
                other => (other.code(), String::new()),
            },
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn good_request_passes() {
        assert!(matches!(validate(&request(GOOD), "t"), Inbound::Request(_)));
    }

    #[test]
    fn missing_headers_get_400_naming_the_header() {
        for name in ["Max-Forwards", "From", "To", "Call-ID", "CSeq"] {
            let extra: String = GOOD
                .lines()
                .filter(|l| !l.starts_with(&format!("{name}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            let (code, reason) = rejected(&request(&extra));
            assert_eq!(code, 400);
            assert_eq!(reason, format!("Bad Request - Missing {name} header"));
        }
    }

    #[test]
    fn request_without_via_is_dropped() {
        let bytes = format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{GOOD}\r\n");
        assert_eq!(
            validate(bytes.as_bytes(), "t"),
            Inbound::Drop(DropReason::UnanswerableRequest)
        );
    }

    #[test]
    fn refusal_copies_headers_and_adds_to_tag() {
        let extra = GOOD.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        let Inbound::Reject { response, reason } = validate(&request(&extra), "t9") else {
            panic!("expected reject");
        };
        assert_eq!(reason, RejectReason::BadRequest);
        let text = response.to_string();
        assert!(text.starts_with(
            "SIP/2.0 400 Bad Request - CSeq method does not match request method\r\n"
        ));
        assert!(text.contains("To: <sip:bob@example.com>;tag=t9\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"));
        assert!(text.contains("Call-ID: c1\r\n"));
    }

    #[test]
    fn version_scheme_method_and_hops() {
        let bytes = String::from_utf8(request(GOOD))
            .unwrap()
            .replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia");
        assert_eq!(rejected(bytes.as_bytes()).0, 505);
        let bytes = String::from_utf8(request(GOOD))
            .unwrap()
            .replace("sip:bob@example.com SIP", "http://example.com SIP");
        assert_eq!(rejected(bytes.as_bytes()).0, 416);
        let bytes = String::from_utf8(request(GOOD))
            .unwrap()
            .replace("OPTIONS", "NEWMETHOD");
        let Inbound::Reject { response, reason } = validate(bytes.as_bytes(), "t") else {
            panic!()
        };
        assert_eq!(reason, RejectReason::NotImplemented);
        assert!(response.to_string().contains("Allow: INVITE"));
        let bytes = String::from_utf8(request(GOOD))
            .unwrap()
            .replacen("OPTIONS", "INFO", 2);
        let bytes = bytes.replace("Max-Forwards: 70", "Max-Forwards: 0");
        assert_eq!(rejected(bytes.as_bytes()).0, 483);
    }

    #[test]
    fn require_with_unknown_extension_gets_420_with_unsupported() {
        let extra = format!("{GOOD}Require: timer, foo\r\n");
        let Inbound::Reject { response, reason } = validate(&request(&extra), "t") else {
            panic!()
        };
        assert_eq!(reason, RejectReason::BadExtension);
        assert!(response.to_string().contains("Unsupported: foo\r\n"));
    }

    #[test]
    fn responses_missing_headers_are_dropped() {
        let r = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(
            validate(r, "t"),
            Inbound::Drop(DropReason::MalformedResponse)
        );
    }

    #[test]
    fn to_tag_is_not_doubled() {
        assert_eq!(to_with_tag("<sip:a@b>;tag=x", "y"), "<sip:a@b>;tag=x");
        assert_eq!(to_with_tag("<sip:a@b>", "y"), "<sip:a@b>;tag=y");
    }
}

//! Validation of incoming messages before they reach a transaction (RFC 3261 §8.2, §18).
//!
//! [`validate`] turns raw bytes into one of: a request or response whose every structured
//! header was checked eagerly against the grammar ([`crate::uri`], [`crate::fields`]); a request
//! to be refused with a ready response (`400` with a reason that names the fault, `416`, `420`,
//! `501`, `505`); or a drop with its reason, for what cannot be answered.
//!
//! Requests are assembled into `rsip` types from the scanned headers directly (`rsip`'s own
//! parser refuses valid URIs such as a user part holding `;`); responses still go through
//! `rsip`'s parser after the same checks. Via values are split one per line and printed
//! without their optional whitespace, CSeq and Max-Forwards without leading zeros.
//!
//! The order of the checks follows RFC 3261 §8.2: syntax (`400`, `505`) first, then the
//! method (`501`), then the header inspection (`416`, `420`). A user agent does not answer
//! `483`: Max-Forwards only limits forwarding (RFC 4475 §3.3.11).

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method, StatusCode, Version};

use crate::fields::{NameAddr, Via};
use crate::ids::MAGIC_COOKIE;
use crate::scan::{self, Defect, ScanFailure, ScannedMessage, StartLine, is_token};
use crate::uri::Uri;

/// Option tags this core supports in `Require` (anything else gets `420`).
pub const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

/// Methods the user agent implements; the `Allow` header of its responses.
pub const ALLOWED_METHODS: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY";

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

/// What makes a message malformed; its `400` reason phrase names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    Defect(Defect),
    Method,
    Missing(Vec<&'static str>),
    Multiple(&'static str),
    Malformed(&'static str),
    EmptyBranch,
    CSeqMismatch,
}

impl Fault {
    fn reason(&self) -> String {
        match self {
            Fault::Defect(d) => d.reason().to_owned(),
            Fault::Method => "Bad Request - Malformed method".to_owned(),
            Fault::Missing(names) if names.len() == 1 => {
                format!("Bad Request - Missing {} header", names.join(""))
            }
            Fault::Missing(names) => format!("Bad Request - Missing {} headers", names.join(", ")),
            Fault::Multiple(name) => format!("Bad Request - Multiple {name} headers"),
            Fault::Malformed("Request-URI") => "Bad Request - Malformed Request-URI".to_owned(),
            Fault::Malformed(name) => format!("Bad Request - Malformed {name} header"),
            Fault::EmptyBranch => "Bad Request - Via branch lacks a transaction id".to_owned(),
            Fault::CSeqMismatch => {
                "Bad Request - CSeq method does not match request method".to_owned()
            }
        }
    }
}

const SINGLE_VALUED: &[&str] = &["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

/// The headers whose values are checked against their grammar, in the order faults are named.
const ADDRESSES: &[(&str, AddressKind)] = &[
    ("From", AddressKind::One),
    ("To", AddressKind::One),
    ("Contact", AddressKind::Contact),
    ("Route", AddressKind::Route),
    ("Record-Route", AddressKind::Route),
];

#[derive(Debug, Clone, Copy)]
enum AddressKind {
    One,
    Contact,
    Route,
}

/// The parts of a message validation reads and normalises.
struct Checked {
    vias: Vec<Via>,
    cseq: (u32, String),
    max_forwards: Option<u32>,
}

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

/// The top Via enough to route an answer: the whole value, or failing that its sent-protocol
/// and sent-by alone (a refusal must still reach a peer whose Via parameters are garbled).
pub(crate) fn routable_top_via(value: &str) -> Option<Via> {
    if let Some(mut vias) = Via::parse_list(value) {
        return (!vias.is_empty()).then(|| vias.swap_remove(0));
    }
    let end = value.find([';', ',']).unwrap_or(value.len());
    let mut vias = Via::parse_list(value.get(..end)?)?;
    (!vias.is_empty()).then(|| vias.swap_remove(0))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~()<>:\\\"/[]?{}".contains(c)
}

/// `callid = word [ "@" word ]`.
fn is_call_id(v: &str) -> bool {
    let word = |w: &str| !w.is_empty() && w.chars().all(is_word_char);
    match v.split_once('@') {
        Some((a, b)) => word(a) && word(b),
        None => word(v),
    }
}

fn parse_cseq(value: &str) -> Option<(u32, String)> {
    let (num, method) = value.split_once([' ', '\t'])?;
    let method = method.trim_start();
    let num: u32 = num
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| num.parse().ok())??;
    (num < 1 << 31 && is_token(method)).then(|| (num, method.to_owned()))
}

fn parse_max_forwards(value: &str) -> Option<u32> {
    let n: u32 = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().ok())??;
    (n <= 255).then_some(n)
}

/// The syntax checks shared by requests and responses, in the order faults are named.
fn check_syntax(s: &ScannedMessage, mandatory: &[&'static str]) -> Result<Checked, Fault> {
    let missing: Vec<&'static str> = mandatory
        .iter()
        .copied()
        .filter(|h| s.first(h).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Fault::Missing(missing));
    }
    if let Some(name) = SINGLE_VALUED
        .iter()
        .find(|name| s.values(name).nth(1).is_some())
    {
        return Err(Fault::Multiple(name));
    }
    let mut vias = Vec::new();
    for value in s.values("Via") {
        vias.extend(Via::parse_list(value).ok_or(Fault::Malformed("Via"))?);
    }
    if vias
        .first()
        .and_then(Via::branch)
        .is_some_and(|b| b.eq_ignore_ascii_case(MAGIC_COOKIE))
    {
        return Err(Fault::EmptyBranch);
    }
    let cseq = parse_cseq(s.first("CSeq").unwrap_or_default()).ok_or(Fault::Malformed("CSeq"))?;
    let max_forwards = match s.first("Max-Forwards") {
        Some(v) => Some(parse_max_forwards(v).ok_or(Fault::Malformed("Max-Forwards"))?),
        None => None,
    };
    for (name, kind) in ADDRESSES {
        for value in s.values(name) {
            let ok = match kind {
                AddressKind::One => NameAddr::parse(value).is_some(),
                AddressKind::Contact => value == "*" || NameAddr::parse_list(value).is_some(),
                AddressKind::Route => {
                    NameAddr::parse_list(value).is_some_and(|l| l.iter().all(|a| a.bracketed))
                }
            };
            if !ok {
                return Err(Fault::Malformed(name));
            }
        }
    }
    if s.first("Call-ID").is_some_and(|v| !is_call_id(v)) {
        return Err(Fault::Malformed("Call-ID"));
    }
    Ok(Checked {
        vias,
        cseq,
        max_forwards,
    })
}

fn validate_response(s: &ScannedMessage) -> Inbound {
    let StartLine::Response { version, .. } = &s.start else {
        return Inbound::Drop(DropReason::MalformedResponse);
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") || s.defect.is_some() {
        return Inbound::Drop(DropReason::MalformedResponse);
    }
    let Ok(checked) = check_syntax(s, &["Via", "From", "To", "Call-ID", "CSeq"]) else {
        return Inbound::Drop(DropReason::MalformedResponse);
    };
    match rsip::Response::try_from(s.to_normalized_bytes(&normalized_headers(s, &checked))) {
        Ok(r) => Inbound::Response(r),
        Err(_) => Inbound::Drop(DropReason::MalformedResponse),
    }
}

/// The header list handed on: each Via value on its own line in canonical form, CSeq and
/// Max-Forwards without leading zeros, everything else as scanned (unfolded).
fn normalized_headers(s: &ScannedMessage, checked: &Checked) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(s.headers.len() + checked.vias.len());
    let mut vias_done = false;
    for h in &s.headers {
        match h.name.as_ref() {
            "Via" if !vias_done => {
                vias_done = true;
                out.extend(
                    checked
                        .vias
                        .iter()
                        .map(|v| ("Via".to_owned(), v.to_string())),
                );
            }
            "Via" | "Content-Length" => {}
            "CSeq" => out.push((
                "CSeq".to_owned(),
                format!("{} {}", checked.cseq.0, checked.cseq.1),
            )),
            "Max-Forwards" => out.push((
                "Max-Forwards".to_owned(),
                checked.max_forwards.unwrap_or_default().to_string(),
            )),
            name => out.push((name.to_owned(), h.value.clone())),
        }
    }
    out
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
    let Some(top_via) = s.first("Via").and_then(routable_top_via) else {
        return Inbound::Drop(DropReason::UnanswerableRequest);
    };
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
    let bad = |fault: Fault| reject(400, fault.reason(), RejectReason::BadRequest);

    if s.defect == Some(Defect::MalformedRequestLine) {
        return bad(Fault::Defect(Defect::MalformedRequestLine));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return reject(
            505,
            "Version Not Supported".into(),
            RejectReason::VersionNotSupported,
        );
    }
    if let Some(defect) = s.defect {
        return bad(Fault::Defect(defect));
    }
    if !is_token(method) {
        return bad(Fault::Method);
    }
    // RFC 2543 peers (no magic cookie in the branch) may omit Max-Forwards (RFC 4475 §3.4.1).
    let rfc2543 = !top_via
        .branch()
        .is_some_and(|b| b.starts_with(MAGIC_COOKIE));
    let mandatory: &[&'static str] = if rfc2543 {
        &["From", "To", "Call-ID", "CSeq"]
    } else {
        &["From", "To", "Call-ID", "CSeq", "Max-Forwards"]
    };
    let checked = match check_syntax(s, mandatory) {
        Ok(c) => c,
        Err(fault) => return bad(fault),
    };
    let request_uri = match Uri::parse(uri) {
        Some(Uri::Sip(sip)) if !sip.headers.is_empty() => {
            // Headers are not allowed in a Request-URI (RFC 3261 §19.1.1, RFC 4475 §3.1.2.11).
            return bad(Fault::Malformed("Request-URI"));
        }
        Some(u) => u,
        None => return bad(Fault::Malformed("Request-URI")),
    };
    let Some(rsip_method) = Method::all().into_iter().find(|m| m.to_string() == *method) else {
        return reject(501, "Not Implemented".into(), RejectReason::NotImplemented);
    };
    if checked.cseq.1 != *method {
        return bad(Fault::CSeqMismatch);
    }
    if let Uri::Other { .. } = request_uri {
        return reject(
            416,
            "Unsupported URI Scheme".into(),
            RejectReason::UnsupportedUriScheme,
        );
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
    let mut headers: Vec<Header> = normalized_headers(s, &checked)
        .into_iter()
        .map(|(name, value)| crate::message::header(name, value))
        .collect();
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        s.body.len().to_string(),
    )));
    Inbound::Request(rsip::Request {
        method: rsip_method,
        uri: rsip::Uri::from(&request_uri),
        version: Version::V2,
        headers: headers.into(),
        body: s.body.clone(),
    })
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
        406 => "Not Acceptable",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
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

/// Adds `;tag=` to a To value that lacks one.
pub(crate) fn to_with_tag(value: &str, tag: &str) -> String {
    match NameAddr::parse(value) {
        Some(to) if to.tag().is_some() => value.to_owned(),
        _ => format!("{value};tag={tag}"),
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
    fn version_scheme_method_and_max_forwards_zero() {
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
        // A user agent is where the request ends: Max-Forwards 0 is no reason to refuse it.
        let bytes = bytes.replace("Max-Forwards: 70", "Max-Forwards: 0");
        assert!(matches!(
            validate(bytes.as_bytes(), "t"),
            Inbound::Request(_)
        ));
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

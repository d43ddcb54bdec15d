//! Small accessors and builders over `rsip` messages, shared by the endpoint and the dialogs.

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Headers, Method, Param, Version};

use crate::validate::status;

/// The name and value of a header as printed, for the variants read by name.
fn name_value(h: &Header) -> Option<(&str, &str)> {
    let pair = match h {
        Header::Via(v) => ("Via", v.value()),
        Header::From(v) => ("From", v.value()),
        Header::To(v) => ("To", v.value()),
        Header::CallId(v) => ("Call-ID", v.value()),
        Header::CSeq(v) => ("CSeq", v.value()),
        Header::Contact(v) => ("Contact", v.value()),
        Header::ContentType(v) => ("Content-Type", v.value()),
        Header::RecordRoute(v) => ("Record-Route", v.value()),
        Header::WwwAuthenticate(v) => ("WWW-Authenticate", v.value()),
        Header::ProxyAuthenticate(v) => ("Proxy-Authenticate", v.value()),
        Header::Require(v) => ("Require", v.value()),
        Header::Supported(v) => ("Supported", v.value()),
        Header::Expires(v) => ("Expires", v.value()),
        Header::Allow(v) => ("Allow", v.value()),
        Header::Other(name, value) => (name.as_str(), value.as_str()),
        _ => return None,
    };
    Some(pair)
}

/// All values of header `name` (case-insensitive), in order.
pub fn values(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter_map(name_value)
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
        .collect()
}

/// The first value of header `name`.
pub fn first(headers: &Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .filter_map(name_value)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
}

/// The top Via, typed.
pub(crate) fn top_via(headers: &Headers) -> Option<rsip::typed::Via> {
    headers.iter().find_map(|h| match h {
        Header::Via(v) => v.typed().ok(),
        _ => None,
    })
}

/// The branch parameter of a Via.
pub(crate) fn branch(via: &rsip::typed::Via) -> Option<String> {
    via.branch().map(|b| b.to_string())
}

/// Whether a Via carries the `rport` parameter (RFC 3581).
pub(crate) fn has_rport(via: &rsip::typed::Via) -> bool {
    via.params
        .iter()
        .any(|p| matches!(p, Param::Other(n, _) if n.to_string().eq_ignore_ascii_case("rport")))
}

/// `(sequence number, method)` of the CSeq header.
pub(crate) fn cseq(headers: &Headers) -> Option<(u32, Method)> {
    headers.iter().find_map(|h| match h {
        Header::CSeq(v) => v.typed().ok().map(|c| (c.seq, c.method)),
        _ => None,
    })
}

/// The Call-ID.
pub(crate) fn call_id(headers: &Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::CallId(v) => Some(v.value().to_owned()),
        _ => None,
    })
}

/// The tag of the From header.
pub(crate) fn from_tag(headers: &Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::From(v) => v.typed().ok()?.tag().map(|t| t.to_string()),
        _ => None,
    })
}

/// The tag of the To header.
pub(crate) fn to_tag(headers: &Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::To(v) => v.typed().ok()?.tag().map(|t| t.to_string()),
        _ => None,
    })
}

/// The URI of the first Contact.
pub(crate) fn contact_uri(headers: &Headers) -> Option<rsip::Uri> {
    headers.iter().find_map(|h| match h {
        Header::Contact(v) => v.typed().ok().map(|c| c.uri),
        _ => None,
    })
}

/// Splits a header value on commas that are outside `<...>` and quotes.
pub(crate) fn split_top_level(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut angle, mut quoted) = (false, false);
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// Every Record-Route entry, in message order.
pub(crate) fn record_route(headers: &Headers) -> Vec<String> {
    values(headers, "Record-Route")
        .iter()
        .flat_map(|v| split_top_level(v))
        .collect()
}

/// The URI inside a name-addr (`<sip:...>;params`) or a bare addr-spec.
pub(crate) fn uri_of_name_addr(value: &str) -> Option<rsip::Uri> {
    let inner = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value.get(a + 1..b)?,
        _ => value.split(';').next()?,
    };
    rsip::Uri::try_from(inner.trim()).ok()
}

/// Appends `Content-Length` (and `Content-Type` when there is a body) and assembles a request.
pub(crate) fn request(
    method: Method,
    uri: rsip::Uri,
    mut headers: Vec<Header>,
    body: Option<(&str, Vec<u8>)>,
) -> rsip::Request {
    let body = match body {
        Some((content_type, bytes)) => {
            headers.push(Header::ContentType(rsip::headers::ContentType::new(
                content_type,
            )));
            bytes
        }
        None => Vec::new(),
    };
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        body.len().to_string(),
    )));
    rsip::Request {
        method,
        uri,
        version: Version::V2,
        headers: headers.into(),
        body,
    }
}

/// A response to `request` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied, the To
/// tag added when missing, extra headers and an optional body appended.
pub(crate) fn response_to(
    request: &rsip::Request,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: Vec<Header>,
    body: Option<(&str, Vec<u8>)>,
) -> rsip::Response {
    let mut headers = Vec::with_capacity(8 + extra.len());
    for h in request.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(v) if code > 100 => headers.push(Header::To(rsip::headers::To::new(
                crate::validate::to_with_tag(v.value(), to_tag),
            ))),
            Header::To(_) => headers.push(h.clone()),
            _ => {}
        }
    }
    headers.extend(extra);
    let body = match body {
        Some((content_type, bytes)) => {
            headers.push(Header::ContentType(rsip::headers::ContentType::new(
                content_type,
            )));
            bytes
        }
        None => Vec::new(),
    };
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        body.len().to_string(),
    )));
    rsip::Response {
        status_code: status(code, reason),
        version: Version::V2,
        headers: headers.into(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_record_route_lists_on_top_level_commas() {
        assert_eq!(
            split_top_level("<sip:a;lr>, \"x,y\" <sip:b;lr>,<sip:c>"),
            vec!["<sip:a;lr>", "\"x,y\" <sip:b;lr>", "<sip:c>"]
        );
    }

    #[test]
    fn extracts_uris_from_name_addrs() {
        let uri = uri_of_name_addr("\"Bob\" <sip:bob@192.0.2.4:5070>;tag=1").unwrap();
        assert_eq!(uri.to_string(), "sip:bob@192.0.2.4:5070");
        let uri = uri_of_name_addr("sip:alice@example.com;tag=1").unwrap();
        assert_eq!(uri.to_string(), "sip:alice@example.com");
    }
}

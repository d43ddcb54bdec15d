//! Small accessors and builders over `rsip` messages, shared by the endpoint and the dialogs.

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Headers, Method, Param, Version};

use crate::fields::{NameAddr, Via};
use crate::validate::{routable_top_via, status};

/// The `rsip` header for a header read by [`crate::scan`] (canonical name, unfolded value):
/// the typed variants the core matches on, everything else by name.
pub(crate) fn header(name: String, value: String) -> Header {
    use rsip::headers as h;
    match name.as_str() {
        "Via" => Header::Via(h::Via::new(value)),
        "From" => Header::From(h::From::new(value)),
        "To" => Header::To(h::To::new(value)),
        "Call-ID" => Header::CallId(h::CallId::new(value)),
        "CSeq" => Header::CSeq(h::CSeq::new(value)),
        "Contact" => Header::Contact(h::Contact::new(value)),
        "Content-Type" => Header::ContentType(h::ContentType::new(value)),
        "Content-Length" => Header::ContentLength(h::ContentLength::new(value)),
        "Max-Forwards" => Header::MaxForwards(h::MaxForwards::new(value)),
        "Record-Route" => Header::RecordRoute(h::RecordRoute::new(value)),
        "Route" => Header::Route(h::Route::new(value)),
        "Require" => Header::Require(h::Require::new(value)),
        "Proxy-Require" => Header::ProxyRequire(h::ProxyRequire::new(value)),
        "Supported" => Header::Supported(h::Supported::new(value)),
        "Unsupported" => Header::Unsupported(h::Unsupported::new(value)),
        "Expires" => Header::Expires(h::Expires::new(value)),
        "Allow" => Header::Allow(h::Allow::new(value)),
        "WWW-Authenticate" => Header::WwwAuthenticate(h::WwwAuthenticate::new(value)),
        "Proxy-Authenticate" => Header::ProxyAuthenticate(h::ProxyAuthenticate::new(value)),
        "Authorization" => Header::Authorization(h::Authorization::new(value)),
        "Proxy-Authorization" => Header::ProxyAuthorization(h::ProxyAuthorization::new(value)),
        "User-Agent" => Header::UserAgent(h::UserAgent::new(value)),
        "Server" => Header::Server(h::Server::new(value)),
        _ => Header::Other(name, value),
    }
}

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

/// The top Via value, read with the core's grammar ([`routable_top_via`]).
fn top_via_value(headers: &Headers) -> Option<Via> {
    headers.iter().find_map(|h| match h {
        Header::Via(v) => Some(routable_top_via(v.value())),
        _ => None,
    })?
}

/// The top Via in `rsip`'s typed form. Only what routing reads is carried over: sent-by and
/// parameters; the protocol version is not (a request that is not SIP/2.0 is answered `505`
/// before it reaches a transaction), and a transport `rsip` does not know gives `None`.
pub(crate) fn top_via(headers: &Headers) -> Option<rsip::typed::Via> {
    let via = top_via_value(headers)?;
    let transport = rsip::Transport::all()
        .into_iter()
        .find(|t| t.to_string().eq_ignore_ascii_case(&via.transport))?;
    let host = match &via.host {
        crate::uri::Host::Name(n) => rsip::Host::Domain(n.clone().into()),
        crate::uri::Host::Ip(ip) => rsip::Host::IpAddr(*ip),
    };
    Some(rsip::typed::Via {
        version: Version::V2,
        transport,
        uri: rsip::Uri {
            host_with_port: rsip::HostWithPort {
                host,
                port: via.port.map(Into::into),
            },
            ..Default::default()
        },
        params: via
            .params
            .iter()
            .map(|p| {
                Param::try_from((p.name.as_str(), p.value.as_deref())).unwrap_or_else(|_| {
                    Param::Other(p.name.clone().into(), p.value.clone().map(Into::into))
                })
            })
            .collect(),
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

/// The part of a header value before its parameters, trimmed and lower-cased: a media type
/// (`application/sdp; charset=x` → `application/sdp`), an event package, a subscription state.
pub(crate) fn header_token(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
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

/// The value of the first header `name` parsed as a name-addr.
fn name_addr(headers: &Headers, name: &str) -> Option<NameAddr> {
    NameAddr::parse(&first(headers, name)?)
}

/// The tag of the From header.
pub(crate) fn from_tag(headers: &Headers) -> Option<String> {
    name_addr(headers, "From")?.tag().map(str::to_owned)
}

/// The tag of the To header.
pub(crate) fn to_tag(headers: &Headers) -> Option<String> {
    name_addr(headers, "To")?.tag().map(str::to_owned)
}

/// The URI of the first Contact.
pub(crate) fn contact_uri(headers: &Headers) -> Option<rsip::Uri> {
    let contacts = NameAddr::parse_list(&first(headers, "Contact")?)?;
    contacts.first().map(|c| rsip::Uri::from(&c.uri))
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
    NameAddr::parse(value).map(|a| rsip::Uri::from(&a.uri))
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

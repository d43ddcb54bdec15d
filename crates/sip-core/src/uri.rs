//! The URI grammar: SIP and SIPS URIs (RFC 3261 §19.1, §25.1), `tel:` URIs (RFC 3966), and
//! any other scheme as an absolute URI (RFC 3261 §25.1 `absoluteURI`).
//!
//! `rsip` 0.4 cannot represent several valid URIs (a `;` or an escaped `@` inside the user part,
//! `tel:`, schemes it does not know, headers after `?`), so the validation layer reads every URI
//! with this grammar first. Parsing keeps the text of each component as sent (escapes are not
//! decoded: `%41` and `A` differ in a parameter value, RFC 4475 §3.1.1.3), and printing a parsed
//! URI gives text that parses to the same value. Hosts are the exception: an IP address is kept
//! as an address and printed in its canonical form.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A URI of any scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966).
    Tel(TelUri),
    /// Any other scheme, checked against RFC 3261's `absoluteURI` and kept as sent.
    Other {
        /// The scheme, as sent.
        scheme: String,
        /// Everything after the colon.
        rest: String,
    },
}

/// A SIP or SIPS URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part as sent (escapes kept; may hold `;`, `?`, `/` ...).
    pub user: Option<String>,
    /// The password, as sent.
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, when one is given.
    pub port: Option<u16>,
    /// URI parameters in order.
    pub params: Vec<Param>,
    /// Headers after `?`, as `(hname, hvalue)` in order.
    pub headers: Vec<(String, String)>,
}

/// A `tel:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// The global (`+` digits) or local number, visual separators kept.
    pub number: String,
    /// Parameters in order (`phone-context`, `ext`, `isub` ...).
    pub params: Vec<Param>,
}

/// The host of a SIP URI or of a Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A domain name, as sent (a trailing dot kept).
    Name(String),
    /// An IPv4 or IPv6 address (IPv6 printed inside `[` `]`).
    Ip(IpAddr),
}

/// A `name[=value]` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name, as sent.
    pub name: String,
    /// The value, as sent, if any.
    pub value: Option<String>,
}

impl Param {
    /// A parameter with a value.
    pub fn new(name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        Self {
            name: name.into(),
            value: value.map(Into::into),
        }
    }
}

/// RFC 3261 `alphanum` and `mark`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

/// True when every `%` in `s` starts an `escaped` (`%` HEXDIG HEXDIG) and every other byte
/// satisfies `allowed`.
fn all_escaped_or(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if allowed(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_user(s: &str) -> bool {
    !s.is_empty() && all_escaped_or(s, |c| is_unreserved(c) || b"&=+$,;?/".contains(&c))
}

fn is_password(s: &str) -> bool {
    all_escaped_or(s, |c| is_unreserved(c) || b"&=+$,".contains(&c))
}

/// `paramchar` of a SIP URI parameter (and of RFC 3966's).
fn is_paramchars(s: &str) -> bool {
    !s.is_empty() && all_escaped_or(s, |c| is_unreserved(c) || b"[]/:&+$".contains(&c))
}

fn is_header_chars(s: &str) -> bool {
    all_escaped_or(s, |c| is_unreserved(c) || b"[]/?:+$".contains(&c))
}

/// `hostname` of RFC 3261: dot-separated labels of alphanumerics and inner hyphens, the last
/// starting with a letter, an optional trailing dot. Underscores are taken too, anywhere in a
/// label: container and cluster host names carry them, and refusing a trunk's Contact for one
/// would drop its answers.
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let mut labels = s.split('.').peekable();
    while let Some(label) = labels.next() {
        let b = label.as_bytes();
        let edge = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
        let ok = match (b.first(), b.last()) {
            (Some(f), Some(l)) => edge(f) && edge(l) && b.iter().all(|c| edge(c) || *c == b'-'),
            _ => false,
        };
        let top = labels.peek().is_none();
        if !ok || (top && !b.first().is_some_and(u8::is_ascii_alphabetic)) {
            return false;
        }
    }
    true
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &str) -> Option<Host> {
        if let Some(inner) = s.strip_prefix('[') {
            let v6: Ipv6Addr = inner.strip_suffix(']')?.parse().ok()?;
            return Some(Host::Ip(IpAddr::V6(v6)));
        }
        if s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            let v4: Ipv4Addr = s.parse().ok()?;
            return Some(Host::Ip(IpAddr::V4(v4)));
        }
        is_hostname(s).then(|| Host::Name(s.to_owned()))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// Splits `host[:port]`, the host possibly an IPv6 reference.
pub(crate) fn parse_hostport(s: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = match s.rfind(':') {
        Some(i) if !s.ends_with(']') && (s.starts_with('[') || s.find(':') == Some(i)) => {
            (s.get(..i)?, Some(s.get(i + 1..)?))
        }
        _ => (s, None),
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    Some((Host::parse(host)?, port))
}

/// `;name[=value]` parameters of a URI, each part checked by `valid`.
fn parse_params(s: &str, valid: impl Fn(&str) -> bool) -> Option<Vec<Param>> {
    let Some(rest) = s.strip_prefix(';') else {
        return s.is_empty().then(Vec::new);
    };
    rest.split(';')
        .map(|p| match p.split_once('=') {
            Some((n, v)) if valid(n) && valid(v) => Some(Param::new(n, Some(v))),
            None if valid(p) => Some(Param::new(p, None::<String>)),
            _ => None,
        })
        .collect()
}

impl SipUri {
    /// Parses what follows `sip:` or `sips:`.
    fn parse_after_scheme(secure: bool, s: &str) -> Option<SipUri> {
        // The user part cannot hold '@', and nothing after the host can: the first '@' ends
        // the userinfo.
        let (userinfo, rest) = match s.split_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, s),
        };
        let (user, password) = match userinfo {
            Some(u) => {
                let (user, password) = match u.split_once(':') {
                    Some((user, pw)) => (user, Some(pw)),
                    None => (u, None),
                };
                if !is_user(user) || !password.is_none_or(is_password) {
                    return None;
                }
                (Some(user.to_owned()), password.map(str::to_owned))
            }
            None => (None, None),
        };
        let (before_headers, headers) = match rest.split_once('?') {
            Some((b, h)) => (b, Some(h)),
            None => (rest, None),
        };
        let host_end = before_headers.find(';').unwrap_or(before_headers.len());
        let (hostport, params) = before_headers.split_at(host_end);
        let (host, port) = parse_hostport(hostport)?;
        let params = parse_params(params, is_paramchars)?;
        let headers = match headers {
            Some(h) => h
                .split('&')
                .map(|pair| {
                    let (n, v) = pair.split_once('=')?;
                    (!n.is_empty() && is_header_chars(n) && is_header_chars(v))
                        .then(|| (n.to_owned(), v.to_owned()))
                })
                .collect::<Option<Vec<_>>>()?,
            None => Vec::new(),
        };
        Some(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }
}

impl TelUri {
    fn parse_after_scheme(s: &str) -> Option<TelUri> {
        let end = s.find(';').unwrap_or(s.len());
        let (number, params) = s.split_at(end);
        let visual = |c: u8| b"-.()".contains(&c);
        let valid = match number.strip_prefix('+') {
            Some(global) => {
                global.bytes().any(|c| c.is_ascii_digit())
                    && global.bytes().all(|c| c.is_ascii_digit() || visual(c))
            }
            None => {
                number
                    .bytes()
                    .any(|c| c.is_ascii_hexdigit() || c == b'*' || c == b'#')
                    && number
                        .bytes()
                        .all(|c| c.is_ascii_hexdigit() || c == b'*' || c == b'#' || visual(c))
            }
        };
        if !valid {
            return None;
        }
        let params = parse_params(params, is_paramchars)?;
        let names_ok = params.iter().all(|p| {
            p.name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
        // A local number needs a phone-context (RFC 3966 §5.1.5).
        let context_ok = number.starts_with('+')
            || params
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("phone-context") && p.value.is_some());
        (names_ok && context_ok).then(|| TelUri {
            number: number.to_owned(),
            params,
        })
    }
}

/// RFC 3261 `scheme`: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
}

/// `uric` of an absolute URI (RFC 2396 as RFC 3261 uses it, plus `[` `]` for IPv6 hosts).
fn is_uric(c: u8) -> bool {
    is_unreserved(c) || b";/?:@&=+$,[]".contains(&c)
}

impl Uri {
    /// Parses one URI; `None` when it does not match the grammar of its scheme.
    pub fn parse(s: &str) -> Option<Uri> {
        let (scheme, rest) = s.split_once(':')?;
        if !is_scheme(scheme) {
            return None;
        }
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse_after_scheme(false, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_after_scheme(true, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse_after_scheme(rest).map(Uri::Tel)
        } else {
            (!rest.is_empty() && all_escaped_or(rest, is_uric)).then(|| Uri::Other {
                scheme: scheme.to_owned(),
                rest: rest.to_owned(),
            })
        }
    }

    /// The SIP or SIPS URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(s) => Some(s),
            _ => None,
        }
    }
}

/// The value of parameter `name` among `params` (case-insensitive); `Some(None)` for a flag.
pub(crate) fn find_param<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref())
}

/// Writes `params` as `;name[=value]` each.
pub(crate) fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        match &p.value {
            Some(v) => write!(f, ";{}={v}", p.name)?,
            None => write!(f, ";{}", p.name)?,
        }
    }
    Ok(())
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(pw) = &self.password {
                write!(f, ":{pw}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(s) => write!(f, "{s}"),
            Uri::Tel(t) => {
                write!(f, "tel:{}", t.number)?;
                write_params(f, &t.params)
            }
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

impl From<&Uri> for rsip::Uri {
    /// The `rsip` form the endpoint's messages carry. `rsip` has no `tel:` or foreign-scheme
    /// URI and no URI headers; such a URI rides whole in the host text so it prints as sent.
    fn from(uri: &Uri) -> rsip::Uri {
        let Uri::Sip(sip) = uri else {
            return rsip::Uri {
                host_with_port: rsip::Host::Domain(uri.to_string().into()).into(),
                ..Default::default()
            };
        };
        if !sip.headers.is_empty() {
            return rsip::Uri {
                host_with_port: rsip::Host::Domain(uri.to_string().into()).into(),
                ..Default::default()
            };
        }
        let host = match &sip.host {
            Host::Name(n) => rsip::Host::Domain(n.clone().into()),
            Host::Ip(ip @ IpAddr::V4(_)) => rsip::Host::IpAddr(*ip),
            // rsip prints an IPv6 address without its brackets.
            v6 @ Host::Ip(IpAddr::V6(_)) => rsip::Host::Domain(v6.to_string().into()),
        };
        rsip::Uri {
            scheme: Some(if sip.secure {
                rsip::Scheme::Sips
            } else {
                rsip::Scheme::Sip
            }),
            auth: sip.user.as_ref().map(|u| rsip::Auth {
                user: u.clone(),
                password: sip.password.clone(),
            }),
            host_with_port: rsip::HostWithPort {
                host,
                port: sip.port.map(Into::into),
            },
            params: sip
                .params
                .iter()
                .map(|p| {
                    rsip::Param::try_from((p.name.as_str(), p.value.as_deref())).unwrap_or_else(
                        |_| {
                            rsip::Param::Other(
                                p.name.clone().into(),
                                p.value.clone().map(Into::into),
                            )
                        },
                    )
                })
                .collect(),
            headers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &str) -> Uri {
        let u = Uri::parse(s).unwrap_or_else(|| panic!("{s} should parse"));
        assert_eq!(u.to_string(), s);
        u
    }

    #[test]
    fn rfc4475_user_parts() {
        let u = round_trip("sip:user;par=u%40example.net@example.com");
        assert_eq!(
            u.as_sip().unwrap().user.as_deref(),
            Some("user;par=u%40example.net")
        );
        round_trip("sip:sips%3Auser%40example.com@example.net");
        round_trip("sip:null-%00-null@example.com");
        let u = round_trip(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        );
        assert_eq!(
            u.as_sip().unwrap().password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        let u = round_trip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.as_sip().unwrap().params.len(), 2);
    }

    #[test]
    fn hosts_ports_and_ipv6() {
        let u = round_trip("sip:[2001:db8::10]:5070;transport=udp");
        let sip = u.as_sip().unwrap();
        assert_eq!(sip.port, Some(5070));
        assert!(matches!(sip.host, Host::Ip(IpAddr::V6(_))));
        round_trip("sips:alice@192.0.2.4");
        round_trip("sip:example.com.");
        round_trip("sip:user@example.com?Route=%3Csip:example.com%3E");
        // Container and cluster names (`sip_proxy_1`, `_sip-edge`) are taken.
        round_trip("sip:callee@sip_proxy_1.pbx-ns.svc;transport=tls");
        round_trip("sips:_sip-edge.example.net:5061");
        for bad in [
            "sip:user@",
            "sip:user@exa mple.com",
            "sip:user@[2001:db8::10",
            "sip:user@example.com:port",
            "sip:user@example.com:99999",
            "sip:a@b@c",
            "sip:us er@example.com",
            "sip:user@example.com;",
            "sip:%zz@example.com",
            "sip:user@-bad-.com",
            "sip:user@example.123",
        ] {
            assert_eq!(Uri::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn tel_and_other_schemes() {
        round_trip("tel:+1-201-555-0123");
        round_trip("tel:7042;phone-context=example.com");
        assert_eq!(Uri::parse("tel:7042"), None);
        assert_eq!(Uri::parse("tel:+"), None);
        let u = round_trip("isbn:2983792873");
        assert!(matches!(u, Uri::Other { .. }));
        round_trip("http://www.example.com");
        round_trip("nobodyKnowsThisScheme:totallyopaquecontent");
        round_trip("soap.beep://192.0.2.103:3002");
        assert_eq!(Uri::parse("1abc:x"), None);
        assert_eq!(Uri::parse("name:"), None);
        assert_eq!(Uri::parse("<sip:user@example.com>"), None);
    }

    #[test]
    fn rsip_form_prints_the_same_text() {
        for s in [
            "sip:user;par=u%40example.net@example.com",
            "sip:alice:secret@[2001:db8::1]:5062;transport=TCP;lr",
            "tel:+15551230000",
        ] {
            let u = Uri::parse(s).unwrap();
            assert_eq!(rsip::Uri::from(&u).to_string(), s);
        }
    }
}

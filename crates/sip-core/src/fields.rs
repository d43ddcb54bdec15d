//! The grammar of the structured header fields the core reads (RFC 3261 §25.1): name-addr and
//! addr-spec with their header parameters (From, To, Contact, Route, Record-Route) and Via.
//!
//! Values arrive unfolded from [`crate::scan`]; linear whitespace is allowed wherever the
//! grammar's `SWS`/`LWS` is (around `;`, `=`, `/`, `:` and `,`). Each parsed value prints in a
//! canonical form without that whitespace, which is what goes on to `rsip`.

use std::fmt;

use crate::scan::is_token;
use crate::uri::{Host, Param, Uri, find_param, parse_hostport, write_params};

/// A From, To, Contact, Route or Record-Route value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as sent: a quoted string with its quotes, or tokens joined by one space.
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Whether the URI was inside `<` `>` (name-addr rather than addr-spec).
    pub bracketed: bool,
    /// Header parameters (`tag`, `expires`, `q` ...), whitespace removed.
    pub params: Vec<Param>,
}

/// One Via value (`via-parm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, e.g. `SIP/2.0`.
    pub protocol: String,
    /// The transport token as sent (`UDP`, `TLS-SCTP`, an extension ...).
    pub transport: String,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port.
    pub port: Option<u16>,
    /// Via parameters (`branch`, `received`, `rport` ...).
    pub params: Vec<Param>,
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A small cursor over one header value.
struct Cursor<'a> {
    s: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        self.s = self.s.trim_start_matches(is_ws);
    }

    fn eat(&mut self, c: char) -> bool {
        match self.s.strip_prefix(c) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }

    /// Separator with optional whitespace either side (`SEMI`, `EQUAL`, `SLASH`, `COMMA` ...).
    fn eat_sep(&mut self, c: char) -> bool {
        let save = self.s;
        self.skip_ws();
        if self.eat(c) {
            self.skip_ws();
            true
        } else {
            self.s = save;
            false
        }
    }

    /// Takes the longest prefix whose characters satisfy `f`.
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let end = self.s.find(|c| !f(c)).unwrap_or(self.s.len());
        let (head, tail) = self.s.split_at(end);
        self.s = tail;
        head
    }

    fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(crate::scan::is_token_char);
        (!t.is_empty()).then_some(t)
    }

    /// A quoted string with its quotes; quoted-pairs may escape anything but CR and LF.
    fn quoted_string(&mut self) -> Option<&'a str> {
        let bytes = self.s.as_bytes();
        if bytes.first() != Some(&b'"') {
            return None;
        }
        let mut i = 1;
        loop {
            match bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    if matches!(bytes.get(i + 1)?, b'\r' | b'\n') {
                        return None;
                    }
                    i += 2;
                }
                b'\r' | b'\n' => return None,
                _ => i += 1,
            }
        }
        let (q, rest) = self.s.split_at(i + 1);
        self.s = rest;
        Some(q)
    }

    /// `generic-param` list: `*( SEMI token [ EQUAL gen-value ] )`, where gen-value is a
    /// token, a host or a quoted string.
    fn params(&mut self) -> Option<Vec<Param>> {
        let mut params = Vec::new();
        while self.eat_sep(';') {
            let name = self.token()?;
            let value = if self.eat_sep('=') {
                let v = match self.quoted_string() {
                    Some(q) => q,
                    None => self.take_while(|c| crate::scan::is_token_char(c) || "[]:".contains(c)),
                };
                let ok = v.starts_with('"') || is_token(v) || Host::parse(v).is_some();
                if !ok {
                    return None;
                }
                Some(v)
            } else {
                None
            };
            params.push(Param::new(name, value));
        }
        Some(params)
    }
}

impl NameAddr {
    /// Parses one value; the whole string must be consumed.
    pub fn parse(value: &str) -> Option<NameAddr> {
        let mut c = Cursor { s: value.trim() };
        let parsed = Self::parse_one(&mut c)?;
        c.s.is_empty().then_some(parsed)
    }

    /// Parses a comma-separated list (Contact, Route, Record-Route).
    pub fn parse_list(value: &str) -> Option<Vec<NameAddr>> {
        let mut c = Cursor { s: value.trim() };
        let mut out = vec![Self::parse_one(&mut c)?];
        while c.eat_sep(',') {
            out.push(Self::parse_one(&mut c)?);
        }
        c.s.is_empty().then_some(out)
    }

    fn parse_one(c: &mut Cursor<'_>) -> Option<NameAddr> {
        c.skip_ws();
        let display = if let Some(q) = c.quoted_string() {
            c.skip_ws();
            Some(q.to_owned())
        } else {
            // `*(token LWS)` before `<`; RFC 4475 §3.1.1.6 accepts a token directly before `<`.
            let save = c.s;
            let mut words = Vec::new();
            while let Some(t) = c.token() {
                words.push(t);
                c.skip_ws();
            }
            if c.s.starts_with('<') {
                (!words.is_empty()).then(|| words.join(" "))
            } else {
                c.s = save;
                None
            }
        };
        if c.eat('<') {
            let inner = c.take_while(|ch| ch != '>');
            if !c.eat('>') {
                return None;
            }
            let uri = Uri::parse(inner)?;
            let params = c.params()?;
            return Some(NameAddr {
                display,
                uri,
                bracketed: true,
                params,
            });
        }
        if display.is_some() {
            return None;
        }
        // addr-spec: a URI with a `,`, `?` or `;` must be bracketed (§20.10), so it ends at the
        // first of those or at whitespace.
        let spec = c.take_while(|ch| !matches!(ch, ';' | ',' | '?' | ' ' | '\t'));
        if c.s.starts_with('?') {
            return None;
        }
        let uri = Uri::parse(spec)?;
        let params = c.params()?;
        Some(NameAddr {
            display: None,
            uri,
            bracketed: false,
            params,
        })
    }

    /// The value of header parameter `name` (case-insensitive); `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        if self.bracketed || self.display.is_some() {
            write!(f, "<{}>", self.uri)?;
        } else {
            write!(f, "{}", self.uri)?;
        }
        write_params(f, &self.params)
    }
}

impl Via {
    /// Parses a Via header value: one or more comma-separated `via-parm`s.
    pub fn parse_list(value: &str) -> Option<Vec<Via>> {
        let mut c = Cursor { s: value.trim() };
        let mut out = vec![Self::parse_one(&mut c)?];
        while c.eat_sep(',') {
            out.push(Self::parse_one(&mut c)?);
        }
        c.s.is_empty().then_some(out)
    }

    fn parse_one(c: &mut Cursor<'_>) -> Option<Via> {
        c.skip_ws();
        let name = c.token()?;
        if !c.eat_sep('/') {
            return None;
        }
        let version = c.token()?;
        if !c.eat_sep('/') {
            return None;
        }
        let transport = c.token()?;
        let before = c.s.len();
        c.skip_ws();
        if c.s.len() == before {
            return None;
        }
        let host = c.take_while(|ch| {
            ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '[' | ']' | ':')
        });
        // `COLON` before the port may carry whitespace.
        let hostport = if c.eat_sep(':') {
            format!("{host}:{}", c.take_while(|ch| ch.is_ascii_digit()))
        } else {
            host.to_owned()
        };
        let (host, port) = parse_hostport(&hostport)?;
        let params = c.params()?;
        Some(Via {
            protocol: format!("{name}/{version}"),
            transport: transport.to_owned(),
            host,
            port,
            params,
        })
    }

    /// The value of parameter `name` (case-insensitive); `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4475_name_addrs() {
        let to =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(to.tag(), Some("1918181833n"));
        assert_eq!(
            to.to_string(),
            "sip:vivekg@chair-dnrc.example.com;tag=1918181833n"
        );
        let from = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(from.display.as_deref(), Some(r#""J Rosenberg \\\"""#));
        let m = NameAddr::parse(
            r#""Quoted string \"\"" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33"#,
        )
        .unwrap();
        assert_eq!(m.param("secondparam"), Some(None));
        assert_eq!(m.param("q"), Some(Some("0.33")));
        let lws = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(lws.display.as_deref(), Some("caller"));
        let tokens = NameAddr::parse(
            "token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\";tag=_token~1'+`*%!-.",
        )
        .unwrap();
        assert_eq!(tokens.tag(), Some("_token~1'+`*%!-."));
        assert!(NameAddr::parse("isbn:2983792873").is_some());
        assert!(NameAddr::parse("<name:John_Smith>").is_some());
        let list =
            NameAddr::parse_list("<sip:a@example.com>, \"x,y\" <sip:b@example.com>;q=0.5").unwrap();
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn rfc4475_invalid_name_addrs() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Watson, Thomas <sip:t.watson@example.org>",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:user@example.com",
            "",
        ] {
            assert_eq!(NameAddr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn vias_with_lws_lists_and_ipv6() {
        let v = Via::parse_list(
            "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].to_string(),
            "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"
        );
        assert_eq!(v[1].branch(), Some("z9hG4bK30239"));
        let v6 =
            Via::parse_list("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas;rport").unwrap();
        assert_eq!(v6[0].port, Some(5070));
        assert_eq!(v6[0].param("rport"), Some(None));
        let v = Via::parse_list("SIP/2.0/UDP host : 5062").unwrap();
        assert_eq!(v[0].port, Some(5062));
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "not a via",
            "SIP/2.0/UDP host;branch=a b",
        ] {
            assert_eq!(Via::parse_list(bad), None, "{bad}");
        }
    }
}

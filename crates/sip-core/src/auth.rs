//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760): answering `401`
//! `WWW-Authenticate` and `407` `Proxy-Authenticate` challenges with MD5 or SHA-256, with or
//! without `qop=auth`.

use std::fmt;

use md5::{Digest, Md5};
use sha2::Sha256;

use crate::Error;

/// Username and password for one trunk. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The digest username.
    pub username: String,
    /// The password; write-only everywhere above this crate.
    pub password: String,
    /// When set, only challenges from this realm are answered.
    pub realm: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// Digest algorithms this crate answers, strongest first in preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// `MD5` (the default when the challenge names none).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256` (RFC 8760).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl DigestAlgorithm {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "MD5-SESS" => Some(Self::Md5Sess),
            "SHA-256" => Some(Self::Sha256),
            "SHA-256-SESS" => Some(Self::Sha256Sess),
            _ => None,
        }
    }

    /// The token as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    fn hash(self, input: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(input.as_bytes())),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(input.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One parsed `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// Returned unchanged when present.
    pub opaque: Option<String>,
    /// The hash to use.
    pub algorithm: DigestAlgorithm,
    /// `qop` offered includes `auth`.
    pub qop_auth: bool,
    /// The previous credentials were right but the nonce expired (RFC 7616 §3.3).
    pub stale: bool,
}

/// Splits `k=v, k="quoted, value"` auth-params; quoted-pair escapes are honoured.
fn auth_params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(c) = chars.peek().copied() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c == ',' || c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((name.to_ascii_lowercase(), value));
    }
    out
}

impl Challenge {
    /// Parses one `WWW-Authenticate` / `Proxy-Authenticate` value.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let value = value.trim();
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(Error::UnsupportedAuthScheme {
                scheme: scheme.to_owned(),
            });
        }
        let params = auth_params(rest);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or(Error::MalformedChallenge { missing: "realm" })?;
        let nonce = get("nonce").ok_or(Error::MalformedChallenge { missing: "nonce" })?;
        let algorithm = match get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) => DigestAlgorithm::parse(&a)
                .ok_or(Error::UnsupportedDigestAlgorithm { algorithm: a })?,
        };
        let qop_auth =
            get("qop").is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
        let stale = get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Self {
            realm,
            nonce,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// Picks the strongest supported challenge among several header values (RFC 8760 §2.4).
    pub fn pick<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let mut best: Option<Challenge> = None;
        let mut last_error = Error::MalformedChallenge { missing: "Digest" };
        for v in values {
            match Self::parse(v) {
                Ok(c) if best.as_ref().is_none_or(|b| c.algorithm > b.algorithm) => best = Some(c),
                Ok(_) => {}
                Err(e) => last_error = e,
            }
        }
        best.ok_or(last_error)
    }

    /// The `Authorization` / `Proxy-Authorization` value answering this challenge.
    /// `nc` counts uses of this nonce; `cnonce` is a fresh client nonce.
    pub fn respond(
        &self,
        credentials: &Credentials,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let alg = self.algorithm;
        let mut ha1 = alg.hash(&format!(
            "{}:{}:{}",
            credentials.username, self.realm, credentials.password
        ));
        if alg.is_sess() {
            ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            quote(&credentials.username),
            quote(&self.realm),
            quote(&self.nonce),
            alg.as_str()
        );
        if self.qop_auth {
            out.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{}\"",
                quote(cnonce)
            ));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        out
    }
}

/// Which header a challenge came in, and so which header answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChallengeKind {
    /// 401 `WWW-Authenticate`, answered by `Authorization`.
    Www,
    /// 407 `Proxy-Authenticate`, answered by `Proxy-Authorization`.
    Proxy,
}

/// The digest state of one series of requests (a call's INVITEs and in-dialog requests, or one
/// registration's REGISTERs): the credentials, the last challenge, and the attempt bound.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthSession {
    credentials: Option<Credentials>,
    challenge: Option<(ChallengeKind, Challenge)>,
    attempts: u32,
    nonce_count: u32,
}

impl AuthSession {
    pub(crate) fn new(credentials: Option<Credentials>) -> Self {
        Self {
            credentials,
            ..Self::default()
        }
    }

    /// Takes the challenge of a 401/407 if it earns another attempt. The first challenge is
    /// always answered; after that only a `stale=true` one, within `max_attempts`, so a wrong
    /// password ends in a failure instead of a loop. `authenticated` says whether the
    /// challenged request already carried credentials.
    pub(crate) fn accept(
        &mut self,
        response: &rsip::Response,
        authenticated: bool,
        max_attempts: u32,
    ) -> bool {
        let (kind, header) = match response.status_code.code() {
            401 => (ChallengeKind::Www, "WWW-Authenticate"),
            407 => (ChallengeKind::Proxy, "Proxy-Authenticate"),
            _ => return false,
        };
        let Some(credentials) = self.credentials.as_ref() else {
            return false;
        };
        let values = crate::message::values(&response.headers, header);
        let Ok(challenge) = Challenge::pick(values.iter().map(String::as_str)) else {
            return false;
        };
        if credentials
            .realm
            .as_ref()
            .is_some_and(|r| *r != challenge.realm)
        {
            return false;
        }
        if authenticated && !(challenge.stale && self.attempts < max_attempts) {
            return false;
        }
        self.attempts += 1;
        self.nonce_count = 0;
        self.challenge = Some((kind, challenge));
        true
    }

    /// The header answering the held challenge for `method` to `uri`, if there is one.
    pub(crate) fn header(
        &mut self,
        method: &rsip::Method,
        uri: &str,
        cnonce: &str,
    ) -> Option<rsip::Header> {
        use rsip::headers::UntypedHeader;
        let (kind, challenge) = self.challenge.as_ref()?;
        let credentials = self.credentials.as_ref()?;
        self.nonce_count += 1;
        let value = challenge.respond(
            credentials,
            &method.to_string(),
            uri,
            cnonce,
            self.nonce_count,
        );
        Some(match kind {
            ChallengeKind::Www => {
                rsip::Header::Authorization(rsip::headers::Authorization::new(value))
            }
            ChallengeKind::Proxy => {
                rsip::Header::ProxyAuthorization(rsip::headers::ProxyAuthorization::new(value))
            }
        })
    }
}

/// `s` as the inside of a quoted string (RFC 3261 §25.1): `\` and `"` escaped, and control
/// characters — which no quoted-pair may carry (CR and LF above all: they would end the header
/// and start another) — left out, whatever a trunk's configuration or a challenge holds.
fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mufasa(realm: &str, password: &str) -> Credentials {
        Credentials {
            username: "Mufasa".into(),
            password: password.into(),
            realm: Some(realm.into()),
        }
    }

    fn response_of(header: &str) -> &str {
        let start = header.find("response=\"").unwrap() + 10;
        &header[start..start + header[start..].find('"').unwrap()]
    }

    #[test]
    fn rfc_2617_md5_qop_auth_vector() {
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let h = c.respond(
            &mufasa("testrealm@host.com", "Circle Of Life"),
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert_eq!(response_of(&h), "6629fae49393a05397450978507c4ef1");
        assert!(h.contains("nc=00000001"));
        assert!(h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    #[test]
    fn rfc_7616_sha256_and_md5_vectors() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let creds = mufasa("http-auth@example.org", "Circle of Life");
        let sha = Challenge::pick([
            format!("Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, nonce=\"{nonce}\"").as_str(),
            format!("Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"{nonce}\"").as_str(),
        ])
        .unwrap();
        assert_eq!(sha.algorithm, DigestAlgorithm::Sha256);
        let h = sha.respond(&creds, "GET", "/dir/index.html", cnonce, 1);
        assert_eq!(
            response_of(&h),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = Challenge {
            algorithm: DigestAlgorithm::Md5,
            ..sha
        };
        let h = md5.respond(&creds, "GET", "/dir/index.html", cnonce, 1);
        assert_eq!(response_of(&h), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn stale_and_defaults_and_errors() {
        let c = Challenge::parse("Digest realm=\"r\",nonce=\"n\",stale=TRUE").unwrap();
        assert!(c.stale);
        assert!(!c.qop_auth);
        assert_eq!(c.algorithm, DigestAlgorithm::Md5);
        assert!(matches!(
            Challenge::parse("Basic realm=\"r\""),
            Err(Error::UnsupportedAuthScheme { .. })
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\""),
            Err(Error::MalformedChallenge { missing: "nonce" })
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"),
            Err(Error::UnsupportedDigestAlgorithm { .. })
        ));
    }

    #[test]
    fn quoted_values_with_commas_and_escapes() {
        let c = Challenge::parse("Digest realm=\"a, \\\"b\\\"\", nonce=\"x\"").unwrap();
        assert_eq!(c.realm, "a, \"b\"");
    }

    #[test]
    fn no_configured_or_received_value_can_break_the_header_line() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"x\"").unwrap();
        let credentials = Credentials {
            username: "u\r\nX-Injected: 1".into(),
            password: "p".into(),
            realm: None,
        };
        let value = c.respond(&credentials, "INVITE", "sip:a@b", "c", 1);
        assert!(!value.contains(['\r', '\n']), "{value}");
        assert!(value.contains("username=\"uX-Injected: 1\""), "{value}");
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let s = format!("{:?}", mufasa("r", "secret-pass"));
        assert!(!s.contains("secret-pass"));
    }
}

//! The grammars tenant strings are printed in. A trunk's host goes into Request-URIs and
//! headers, its user name into digest `Authorization` headers and From URIs, its realm into a
//! quoted string: each is checked at the API against the grammar it will be printed in
//! (RFC 3261 §25.1), so no tenant can inject a header or break a message.

use std::net::IpAddr;

use crate::parse::FieldError;

/// Most characters of a resource's `name`.
pub const MAX_NAME_CHARS: usize = 200;

/// `host` per RFC 3261 `host`: a host name (labels of letters, digits and inner `-`, at most
/// 63 each and 253 in all), an IPv4 address, or an IPv6 address (bare or in brackets).
pub fn is_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    (1..=253).contains(&name.len()) && name.split('.').all(label_ok)
}

/// `user` per RFC 3261: unreserved characters, `user-unreserved` ones and `%HH` escapes.
pub fn is_sip_user(user: &str) -> bool {
    let bytes = user.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let ok = b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b);
        if ok {
            i += 1;
        } else if b == b'%'
            && bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        {
            i += 3;
        } else {
            return false;
        }
    }
    !user.is_empty() && user.len() <= 128
}

/// Text that may stand inside a quoted string (RFC 3261 `qdtext`): printable, no `"` or `\`,
/// no control characters.
pub fn is_quoted_text(text: &str) -> bool {
    text.len() <= 256
        && text
            .chars()
            .all(|c| !c.is_control() && c != '"' && c != '\\')
}

/// A resource's name: 1 to [`MAX_NAME_CHARS`] characters, none of them control characters.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(FieldError::invalid(
            field,
            format!("`{field}` must be 1-{MAX_NAME_CHARS} characters, without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in [
            "127.0.0.1",
            "sip.example.com",
            "trunk-1.carrier.net.",
            "localhost",
            "::1",
            "[2001:db8::1]",
        ] {
            assert!(is_host(ok), "{ok}");
        }
        let long = "a".repeat(5000);
        for bad in [
            "",
            "a b",
            "host\r\nX-Injected: 1",
            long.as_str(),
            "-lead.example.com",
            "trail-.example.com",
            "a..b",
            "host>",
            "host;transport=tcp",
            "user@host",
            "[not-v6]",
        ] {
            assert!(!is_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn users_follow_the_user_rule() {
        for ok in ["trunkuser", "acme_trunk-1", "+15551230000", "a%40b", "x.y"] {
            assert!(is_sip_user(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "user\r\nX-Injected: 1",
            "u\"x",
            "a%4",
            "u<x>",
            "a@b",
        ] {
            assert!(!is_sip_user(bad), "{bad:?}");
        }
    }

    #[test]
    fn quoted_text_and_names_refuse_control_characters() {
        assert!(is_quoted_text("sip.example.com realm"));
        assert!(!is_quoted_text("a\"b"));
        assert!(!is_quoted_text("a\r\nb"));
        assert!(check_name("name", "Main trunk").is_ok());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", "a\nb").is_err());
        assert!(check_name("name", &"n".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}

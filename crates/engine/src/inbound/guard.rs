//! The toll-fraud guard of calls placed to us, without I/O: which number was called, and
//! whether the INVITE may be answered, given where it came from and what the number's route
//! says. [`judge`] is the one place that decides; the refused get a status and no record.
//!
//! * A called number is read from the Request-URI's user part, else the To URI's: `+` and
//!   2–15 digits (the first not 0), or the same digits without the `+` (trunks often drop
//!   it); URI parameters after `;` (`;npdi`, `;rn=`) are ignored. Anything else is no number.
//! * No live number of ours has it: `404 Not Found`.
//! * It came from an address that is none of the number's trunk's — the addresses its host
//!   resolves to, and its `inbound_cidrs` — : `403 Forbidden`.
//! * The number is ours and the source its trunk's, but no agent on it answers calls (every
//!   one is `outbound`): `404 Not Found`, as for a number that is not ours: the trunk is told
//!   nothing answers here, not that it is distrusted.
//!
//! Nothing inbound is ever routed onward: the only outcomes are answering with the number's
//! agent or refusing.

use std::net::IpAddr;

use dialtone_model::Network;

/// What becomes of an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The number's agent answers.
    Answer,
    /// `404`: not a number of ours (or no number at all).
    NotOurs,
    /// `403`: not from the number's trunk.
    Forbidden,
    /// `404`: nothing on the number answers calls.
    NotAnswered,
}

impl Verdict {
    /// The `outcome` label of `dialtone_inbound_calls_total`.
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            Verdict::Answer => "answered",
            Verdict::NotOurs => "not_found",
            Verdict::Forbidden => "forbidden",
            Verdict::NotAnswered => "not_answered",
        }
    }

    /// The SIP status a refusal is answered with.
    pub(crate) fn status(self) -> Option<u16> {
        match self {
            Verdict::Answer => None,
            Verdict::NotOurs | Verdict::NotAnswered => Some(404),
            Verdict::Forbidden => Some(403),
        }
    }
}

/// What the number's route says about who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The addresses the number's trunk's host resolves to.
    pub(crate) trunk_addresses: Vec<IpAddr>,
    /// The trunk's `inbound_cidrs`.
    pub(crate) trunk_networks: Vec<Network>,
    /// Whether an agent on the number answers calls.
    pub(crate) answered: bool,
}

/// The E.164 number a URI user part names (`+15551230000` or `15551230000`, parameters
/// dropped), with its `+`.
pub(crate) fn e164_of(user: &str) -> Option<String> {
    let number = user.split(';').next().unwrap_or_default();
    let e164 = format!("+{}", number.strip_prefix('+').unwrap_or(number));
    dialtone_model::number::is_e164(&e164).then_some(e164)
}

/// The number called: the Request-URI's, else the To URI's.
pub(crate) fn called_number(request_user: Option<&str>, to_user: Option<&str>) -> Option<String> {
    request_user
        .and_then(e164_of)
        .or_else(|| to_user.and_then(e164_of))
}

/// Whether an INVITE from `source` to a number whose route is `route` (`None`: no such
/// number) is answered; see the module's documentation.
pub(crate) fn judge(source: IpAddr, route: Option<&Route>) -> Verdict {
    let Some(route) = route else {
        return Verdict::NotOurs;
    };
    let source = canonical(source);
    let trusted = route
        .trunk_addresses
        .iter()
        .any(|a| canonical(*a) == source)
        || route.trunk_networks.iter().any(|n| n.contains(source));
    match (trusted, route.answered) {
        (false, _) => Verdict::Forbidden,
        (true, false) => Verdict::NotAnswered,
        (true, true) => Verdict::Answer,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack socket's view).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn route(addresses: &[&str], networks: &[&str], answered: bool) -> Route {
        Route {
            trunk_addresses: addresses.iter().map(|a| ip(a)).collect(),
            trunk_networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            answered,
        }
    }

    #[test]
    fn numbers_are_read_with_or_without_plus_and_without_parameters() {
        assert_eq!(e164_of("+15551230000").as_deref(), Some("+15551230000"));
        assert_eq!(e164_of("15551230000").as_deref(), Some("+15551230000"));
        assert_eq!(
            e164_of("+15551230000;npdi").as_deref(),
            Some("+15551230000")
        );
        for bad in [
            "",
            "+",
            "+0555",
            "alice",
            "+1555-123",
            "1",
            "+1234567890123456",
            "%2B1555",
        ] {
            assert_eq!(e164_of(bad), None, "{bad}");
        }
        assert_eq!(
            called_number(Some("dialtone"), Some("+15551230000")).as_deref(),
            Some("+15551230000"),
            "the To user when the Request-URI names no number"
        );
        assert_eq!(
            called_number(Some("+15559870000"), Some("+15551230000")).as_deref(),
            Some("+15559870000")
        );
        assert_eq!(called_number(None, Some("bob")), None);
    }

    #[test]
    fn only_the_numbers_trunk_may_call_it_and_only_an_answering_agent_answers() {
        let trunk = route(&["198.51.100.7"], &["203.0.113.0/24"], true);
        assert_eq!(judge(ip("198.51.100.7"), Some(&trunk)), Verdict::Answer);
        assert_eq!(judge(ip("203.0.113.200"), Some(&trunk)), Verdict::Answer);
        assert_eq!(
            judge(ip("::ffff:198.51.100.7"), Some(&trunk)),
            Verdict::Answer,
            "an IPv4-mapped source is its IPv4 address"
        );
        assert_eq!(judge(ip("198.51.100.8"), Some(&trunk)), Verdict::Forbidden);
        assert_eq!(judge(ip("2001:db8::7"), Some(&trunk)), Verdict::Forbidden);
        assert_eq!(judge(ip("198.51.100.7"), None), Verdict::NotOurs);
        let outbound_only = route(&["198.51.100.7"], &[], false);
        assert_eq!(
            judge(ip("198.51.100.7"), Some(&outbound_only)),
            Verdict::NotAnswered
        );
        // A stranger learns nothing about what answers: refused for its address first.
        assert_eq!(
            judge(ip("192.0.2.1"), Some(&outbound_only)),
            Verdict::Forbidden
        );
        assert_eq!(Verdict::Forbidden.status(), Some(403));
        assert_eq!(Verdict::NotOurs.status(), Some(404));
        assert_eq!(Verdict::NotAnswered.status(), Some(404));
        assert_eq!(Verdict::Answer.status(), None);
        assert_eq!(Verdict::NotAnswered.outcome(), "not_answered");
        let unresolved = route(&[], &[], true);
        assert_eq!(
            judge(ip("198.51.100.7"), Some(&unresolved)),
            Verdict::Forbidden
        );
    }
}

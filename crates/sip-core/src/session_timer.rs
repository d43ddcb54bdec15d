//! Session timers (RFC 4028): who refreshes the session, and when.
//!
//! The trunk states the interval and the refresher in its 2xx (`Session-Expires: 1800;
//! refresher=uac`). When we are the refresher we send an UPDATE (or a re-INVITE when the peer
//! does not allow UPDATE) at half the interval; when the peer is, we expect its refresh and end
//! the call with a BYE shortly before the interval runs out (§10).

use std::time::{Duration, Instant};

/// Which side of the transaction that set the interval refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresher {
    /// The client of that transaction.
    Uac,
    /// The server of that transaction.
    Uas,
}

/// Parses `delta-seconds *(;param)`, e.g. `1800;refresher=uac`.
pub(crate) fn parse_session_expires(value: &str) -> Option<(u32, Option<Refresher>)> {
    let mut parts = value.split(';');
    let seconds: u32 = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (name, v) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match v.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        }
    });
    (seconds > 0).then_some((seconds, refresher))
}

/// A running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTimer {
    /// The negotiated interval.
    pub(crate) interval: Duration,
    /// Whether we send the refreshes.
    pub(crate) we_refresh: bool,
    /// When to refresh (we refresh) or give up (the peer refreshes).
    pub(crate) deadline: Instant,
}

impl SessionTimer {
    /// A timer started (or restarted by a refresh) at `now`.
    pub(crate) fn start(now: Instant, seconds: u32, we_refresh: bool) -> Self {
        let interval = Duration::from_secs(u64::from(seconds));
        let deadline = if we_refresh {
            now + interval / 2
        } else {
            // §10: the peer's refresh is late once interval - min(32 s, interval/3) passed.
            now + interval - (interval / 3).min(Duration::from_secs(32))
        };
        Self {
            interval,
            we_refresh,
            deadline,
        }
    }

    /// The `Session-Expires` value we write, from the point of view of a transaction in which
    /// we are the client (`we_are_uac`).
    pub(crate) fn header_value(&self, we_are_uac: bool) -> String {
        let refresher = if self.we_refresh == we_are_uac {
            "uac"
        } else {
            "uas"
        };
        format!("{};refresher={refresher}", self.interval.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_interval_and_refresher() {
        assert_eq!(
            parse_session_expires("1800;refresher=uac"),
            Some((1800, Some(Refresher::Uac)))
        );
        assert_eq!(
            parse_session_expires(" 90 ; REFRESHER = UAS"),
            Some((90, Some(Refresher::Uas)))
        );
        assert_eq!(parse_session_expires("600"), Some((600, None)));
        assert_eq!(parse_session_expires("x;refresher=uac"), None);
        assert_eq!(parse_session_expires("0"), None);
    }

    #[test]
    fn deadlines_follow_rfc_4028() {
        let t0 = Instant::now();
        assert_eq!(
            SessionTimer::start(t0, 90, true).deadline,
            t0 + Duration::from_secs(45)
        );
        assert_eq!(
            SessionTimer::start(t0, 90, false).deadline,
            t0 + Duration::from_secs(60)
        );
        assert_eq!(
            SessionTimer::start(t0, 1800, false).deadline,
            t0 + Duration::from_secs(1768)
        );
        let t = SessionTimer::start(t0, 90, true);
        assert_eq!(t.header_value(true), "90;refresher=uac");
        assert_eq!(t.header_value(false), "90;refresher=uas");
    }
}

//! The typed mapping from a call's final SIP outcome to the end reason the engine and the API
//! report.

use std::fmt;

/// Why a call ended, in terms an API user acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// The call was answered and ended normally by either side.
    Completed,
    /// 486 Busy Here, 600 Busy Everywhere.
    Busy,
    /// 408, or ringing without answer until the ring timeout.
    NoAnswer,
    /// 603 Decline, 607 Unwanted, and other refusals by the callee.
    Rejected,
    /// 403 Forbidden: the trunk refused to place the call.
    Forbidden,
    /// 404, 410, 604: the number does not exist.
    NotFound,
    /// 484 Address Incomplete, 485 Ambiguous, 416: the number is malformed.
    InvalidNumber,
    /// 480 Temporarily Unavailable: the callee cannot be reached now.
    Unavailable,
    /// 401/407 again after our credentials were sent.
    AuthFailed,
    /// The trunk sent no final response at all (Timer B / Timer F).
    TrunkTimeout,
    /// We cancelled the call before it was answered (487 after our CANCEL).
    Canceled,
    /// 488, 606, or no codec in common.
    IncompatibleMedia,
    /// 3xx: the trunk redirected the call and redirects are not followed.
    Redirected,
    /// 5xx other than those above: the trunk or the network failed.
    TrunkError,
    /// 402 Payment Required: the trunk account cannot place calls.
    PaymentRequired,
    /// 429 or 503 with the meaning "too many calls": a rate or capacity limit.
    Congestion,
    /// The request could not be sent (connection refused, unreachable).
    TransportError,
    /// Every target of the trunk refused the connection or was unreachable (ICMP).
    TrunkUnreachable,
    /// The TLS connection to the trunk failed: untrusted certificate, wrong host name, or
    /// handshake.
    TlsFailed,
    /// The session timer ran out: the peer stopped refreshing, or our refresh was refused
    /// with 408/481 (RFC 4028 §10).
    SessionExpired,
    /// Any other 4xx.
    RequestFailed,
}

impl EndReason {
    /// Maps a final non-2xx status to an end reason. A 401/407 reaches here only when no
    /// (further) authenticated retry is possible, so it means the credentials failed.
    pub fn from_status(code: u16) -> Self {
        match code {
            401 | 407 => EndReason::AuthFailed,
            300..=399 => EndReason::Redirected,
            402 => EndReason::PaymentRequired,
            403 => EndReason::Forbidden,
            404 | 410 | 604 => EndReason::NotFound,
            408 => EndReason::NoAnswer,
            416 | 484 | 485 => EndReason::InvalidNumber,
            429 => EndReason::Congestion,
            480 => EndReason::Unavailable,
            486 | 600 => EndReason::Busy,
            487 => EndReason::Canceled,
            488 | 606 => EndReason::IncompatibleMedia,
            603 | 607 | 608 => EndReason::Rejected,
            503 => EndReason::Congestion,
            500..=599 => EndReason::TrunkError,
            _ => EndReason::RequestFailed,
        }
    }

    /// The snake_case name used on the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Busy => "busy",
            EndReason::NoAnswer => "no_answer",
            EndReason::Rejected => "rejected",
            EndReason::Forbidden => "forbidden",
            EndReason::NotFound => "not_found",
            EndReason::InvalidNumber => "invalid_number",
            EndReason::Unavailable => "unavailable",
            EndReason::AuthFailed => "auth_failed",
            EndReason::TrunkTimeout => "trunk_timeout",
            EndReason::Canceled => "canceled",
            EndReason::IncompatibleMedia => "incompatible_media",
            EndReason::Redirected => "redirected",
            EndReason::TrunkError => "trunk_error",
            EndReason::PaymentRequired => "payment_required",
            EndReason::Congestion => "congestion",
            EndReason::TransportError => "transport_error",
            EndReason::TrunkUnreachable => "trunk_unreachable",
            EndReason::TlsFailed => "tls_failed",
            EndReason::SessionExpired => "session_expired",
            EndReason::RequestFailed => "request_failed",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a final status from one trunk target means "try the next target or trunk"
/// (RFC 3263 §4.3 for 503; server errors in general). 6xx are definitive and never retried.
pub fn should_fail_over(code: u16) -> bool {
    matches!(code, 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_common_statuses() {
        let cases = [
            (486, EndReason::Busy),
            (600, EndReason::Busy),
            (408, EndReason::NoAnswer),
            (603, EndReason::Rejected),
            (404, EndReason::NotFound),
            (484, EndReason::InvalidNumber),
            (480, EndReason::Unavailable),
            (487, EndReason::Canceled),
            (488, EndReason::IncompatibleMedia),
            (302, EndReason::Redirected),
            (503, EndReason::Congestion),
            (500, EndReason::TrunkError),
            (403, EndReason::Forbidden),
            (422, EndReason::RequestFailed),
        ];
        for (code, reason) in cases {
            assert_eq!(EndReason::from_status(code), reason, "{code}");
        }
        assert_eq!(EndReason::from_status(407), EndReason::AuthFailed);
        assert_eq!(EndReason::Busy.to_string(), "busy");
    }

    #[test]
    fn only_server_errors_fail_over() {
        assert!(should_fail_over(503));
        assert!(should_fail_over(500));
        assert!(!should_fail_over(600));
        assert!(!should_fail_over(486));
        assert!(!should_fail_over(404));
    }
}

//! Why a call ended, who ended it, and who answered it.
//!
//! [`EndReason`] is a superset of the SIP stack's end reasons (`dialtone_sip_core::EndReason`,
//! which maps final responses) with the engine's own: timeouts, the brain's and AMD's
//! decisions, the daemon's life. Each has its code on the wire and a sentence for people.

use crate::names::wire_enum;

wire_enum! {
    /// Why a call ended.
    pub enum EndReason ("end reason") {
        /// Answered and ended normally by either side.
        Completed = "completed",
        /// 486 Busy Here, 600 Busy Everywhere.
        Busy = "busy",
        /// Nobody answered before the ring timeout (or 408).
        NoAnswer = "no_answer",
        /// 603 Decline and other refusals by the callee.
        Rejected = "rejected",
        /// 403: the trunk refused to place the call.
        Forbidden = "forbidden",
        /// 404, 410, 604: the number does not exist.
        NotFound = "not_found",
        /// 484, 485, 416: the number is malformed.
        InvalidNumber = "invalid_number",
        /// 480: the callee cannot be reached now.
        Unavailable = "unavailable",
        /// 401/407 again after our credentials were sent.
        AuthFailed = "auth_failed",
        /// The trunk sent no final response (Timer B / Timer F).
        TrunkTimeout = "trunk_timeout",
        /// Cancelled before it was answered (by the API, or by an inbound call's caller).
        Canceled = "canceled",
        /// 488, 606, or no codec in common.
        IncompatibleMedia = "incompatible_media",
        /// 3xx: redirects are not followed.
        Redirected = "redirected",
        /// Another 5xx.
        TrunkError = "trunk_error",
        /// 402: the trunk account cannot place calls.
        PaymentRequired = "payment_required",
        /// 429 or 503: a rate or capacity limit.
        Congestion = "congestion",
        /// The request could not be sent.
        TransportError = "transport_error",
        /// Every trunk target refused the connection or was unreachable (ICMP).
        TrunkUnreachable = "trunk_unreachable",
        /// The TLS connection to the trunk failed (certificate, host name or handshake).
        TlsFailed = "tls_failed",
        /// The trunk requires SRTP and the answer carried no usable key.
        SrtpUnavailable = "srtp_unavailable",
        /// The RFC 4028 session timer ran out.
        SessionExpired = "session_expired",
        /// Any other 4xx.
        RequestFailed = "request_failed",
        /// The far end stopped sending RTP.
        RtpTimeout = "rtp_timeout",
        /// A machine answered and the agent hangs up on those.
        Voicemail = "voicemail",
        /// A machine answered; the agent left its message after the beep.
        VoicemailMessage = "voicemail_message",
        /// The caller stayed silent, even after the prompt.
        SilenceTimeout = "silence_timeout",
        /// The brain failed or could not be reached.
        BrainError = "brain_error",
        /// The brain ended the call.
        AgentHangup = "agent_hangup",
        /// The agent's maximum duration was reached.
        MaxDuration = "max_duration",
        /// No slot under the caps within the queue timeout.
        QueueTimeout = "queue_timeout",
        /// The engine restarted while the call was live.
        EngineRestart = "engine_restart",
        /// The engine shut down while the call was live.
        EngineShutdown = "engine_shutdown",
        /// The node carrying the call stopped renewing its lease.
        NodeLost = "node_lost",
        /// No media port was free, or the media pipeline did not start.
        MediaUnavailable = "media_unavailable",
        /// The user agent refused to place the call.
        DialRefused = "dial_refused",
        /// The caller was handed to another destination.
        Transferred = "transferred",
    }
}

impl EndReason {
    /// What the code means, for people reading a call record.
    pub fn message(self) -> &'static str {
        match self {
            Self::Completed => "the call was answered and ended normally",
            Self::Busy => "the callee was busy (486/600)",
            Self::NoAnswer => "nobody answered before the ring timeout",
            Self::Rejected => "the callee declined the call (603)",
            Self::Forbidden => "the trunk refused the call (403)",
            Self::NotFound => "the number does not exist (404)",
            Self::InvalidNumber => "the trunk found the number malformed (484)",
            Self::Unavailable => "the callee is unavailable (480)",
            Self::AuthFailed => "the trunk's digest challenge could not be met",
            Self::TrunkTimeout => "the trunk did not answer the INVITE (Timer B)",
            Self::Canceled => {
                "hung up before it was answered (by the API, or by the caller of an inbound call)"
            }
            Self::IncompatibleMedia => "no codec in common with the callee",
            Self::Redirected => "the callee redirected the call (3xx)",
            Self::TrunkError => "the trunk failed (5xx)",
            Self::PaymentRequired => "the trunk account needs payment (402)",
            Self::Congestion => "the network is congested (503)",
            Self::TransportError => "the trunk could not be reached",
            Self::TrunkUnreachable => {
                "no trunk target could be reached (connection refused or ICMP unreachable)"
            }
            Self::TlsFailed => {
                "the TLS connection to the trunk failed (untrusted certificate, wrong host name or \
                 handshake)"
            }
            Self::SrtpUnavailable => {
                "the trunk requires SRTP and the answer carried no usable key; nothing was sent \
                 in clear"
            }
            Self::SessionExpired => "the session timer expired (RFC 4028)",
            Self::RequestFailed => "the trunk refused the call",
            Self::RtpTimeout => "the far end stopped sending audio",
            Self::Voicemail => "an answering machine answered and the agent hangs up on those",
            Self::VoicemailMessage => {
                "an answering machine answered; the agent left its message after the beep"
            }
            Self::SilenceTimeout => {
                "the caller stayed silent, even after being asked if they were still there"
            }
            Self::BrainError => {
                "the agent's brain failed or could not be reached; the caller heard an apology"
            }
            Self::AgentHangup => "the agent's brain ended the call",
            Self::MaxDuration => "the call reached the agent's maximum duration",
            Self::QueueTimeout => "no slot under the organisation's concurrency cap in time",
            Self::EngineRestart => "the engine restarted while the call was live",
            Self::EngineShutdown => "the engine shut down while the call was live",
            Self::NodeLost => "the node carrying the call stopped; another node closed it",
            Self::MediaUnavailable => "no media port was free",
            Self::DialRefused => "the call could not be placed (trunk caps or configuration)",
            Self::Transferred => "the caller was transferred to another destination",
        }
    }
}

wire_enum! {
    /// Who ended a call.
    pub enum EndedBy ("ended by") {
        /// The person (or machine) called.
        Callee = "callee",
        /// The person who called us (an inbound call).
        Caller = "caller",
        /// The agent's brain.
        Agent = "agent",
        /// The engine itself (timeouts, shutdown, media failures).
        Engine = "engine",
        /// A hang-up through the API.
        Api = "api",
        /// The SIP trunk (errors, timeouts).
        Trunk = "trunk",
    }
}

wire_enum! {
    /// Answering-machine detection's verdict.
    pub enum AnsweredBy ("answered by") {
        /// A person.
        Human = "human",
        /// An answering machine or voicemail.
        Machine = "machine",
        /// The analysis could not tell in time.
        Unknown = "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_has_a_message() {
        for reason in EndReason::ALL {
            assert_eq!(reason.as_str().parse::<EndReason>().ok(), Some(*reason));
            assert!(!reason.message().is_empty());
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        for by in EndedBy::ALL {
            assert_eq!(by.as_str().parse::<EndedBy>().ok(), Some(*by));
        }
        for who in AnsweredBy::ALL {
            assert_eq!(who.as_str().parse::<AnsweredBy>().ok(), Some(*who));
        }
    }

    #[test]
    fn an_unknown_code_is_refused_naming_the_known_ones() {
        let error = serde_json::from_value::<EndReason>("hung_up".into())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("hung_up") && error.contains("rtp_timeout"),
            "{error}"
        );
    }
}

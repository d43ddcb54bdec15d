//! Where a call is in its life, and which way it goes.

use crate::names::wire_enum;

wire_enum! {
    /// Where a call is in its life. Only moves forward: [`CallStatus::rank`] orders the steps,
    /// and every final status shares the last rank (a call ends once).
    pub enum CallStatus ("call status") {
        /// Accepted, not yet dialled.
        Queued = "queued",
        /// INVITE sent.
        Dialing = "dialing",
        /// The callee is ringing (or early media).
        Ringing = "ringing",
        /// Answered; the conversation runs.
        InProgress = "in_progress",
        /// Answered and ended.
        Completed = "completed",
        /// The callee was busy.
        Busy = "busy",
        /// Nobody answered in time.
        NoAnswer = "no_answer",
        /// Ended without an answer for another reason (rejected, error).
        Failed = "failed",
        /// Cancelled before it was answered.
        Canceled = "canceled",
    }
}

impl CallStatus {
    /// Whether the call has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Failed | Self::Canceled
        )
    }

    /// The step's place in a call's life: a status may only be replaced by one of a higher
    /// rank. The final statuses share the highest.
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Dialing => 1,
            Self::Ringing => 2,
            Self::InProgress => 3,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Failed | Self::Canceled => 4,
        }
    }

    /// Whether a call in this status may move to `next`.
    pub fn may_become(self, next: Self) -> bool {
        next.rank() > self.rank()
    }
}

wire_enum! {
    /// Which way a call goes.
    pub enum Direction ("direction") {
        /// Dialled by Dialtone on a dispatch.
        Outbound = "outbound",
        /// Answered by Dialtone for one of an agent's numbers.
        Inbound = "inbound",
    }
}

wire_enum! {
    /// Which calls an agent takes.
    pub enum AgentDirection ("direction") {
        /// It places calls on dispatches (the default); calls to its numbers are not answered.
        Outbound = "outbound",
        /// It answers calls to its numbers.
        Inbound = "inbound",
        /// Both.
        Both = "both",
    }
}

impl AgentDirection {
    /// Whether calls to the agent's numbers are answered by it.
    pub fn answers(self) -> bool {
        matches!(self, Self::Inbound | Self::Both)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for status in CallStatus::ALL {
            let json = serde_json::to_value(status).unwrap_or_default();
            assert_eq!(json, status.as_str());
            assert_eq!(status.as_str().parse::<CallStatus>().ok(), Some(*status));
            assert_eq!(
                serde_json::from_value::<CallStatus>(json).ok(),
                Some(*status)
            );
        }
        let unknown = "ringin".parse::<CallStatus>();
        assert_eq!(
            unknown.err().map(|e| e.to_string()),
            Some("unknown call status \"ringin\"".to_owned())
        );
    }

    #[test]
    fn only_final_statuses_share_the_last_rank_and_none_goes_back() {
        for a in CallStatus::ALL {
            assert_eq!(a.rank() == 4, a.is_final(), "{a}");
            assert!(!a.may_become(*a), "{a} may not repeat");
            for b in CallStatus::ALL {
                if a.is_final() {
                    assert!(!a.may_become(*b), "{a} is final, not {b}");
                }
                if a.may_become(*b) {
                    assert!(!b.may_become(*a), "{a} ↔ {b}");
                }
            }
        }
        assert!(CallStatus::Queued.may_become(CallStatus::Canceled));
        assert!(CallStatus::Ringing.may_become(CallStatus::InProgress));
        assert!(!CallStatus::InProgress.may_become(CallStatus::Ringing));
    }
}

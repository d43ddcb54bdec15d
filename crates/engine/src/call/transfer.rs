//! Transfers of an answered call, without I/O: where one may go ([`TransferPolicy`]) and the
//! state of one attempt ([`Attempt`]), which the call machine holds and feeds.
//!
//! A blind transfer (`refer`, RFC 3515 + RFC 5589) runs:
//!
//! ```text
//!  REFER ─▶ 2xx ─▶ accepted (the transfer timeout starts) ─▶ NOTIFY 1xx … ─▶ NOTIFY 2xx: completed
//!      └─▶ ≥300 or 408: failed (refused)           └─▶ NOTIFY ≥300: failed (destination_failed)
//!                                                  └─▶ the timeout: failed (timeout), then
//!                                                      a late NOTIFY 2xx: completed after all
//!                                                  └─▶ terminated without a final: failed
//!                                                  └─▶ the far end's BYE: completed
//! ```
//!
//! A NOTIFY may come before the REFER's 2xx (RFC 3515 §2.4.5): it counts as the acceptance.
//! A failed attempt leaves the call with its brain; a completed one ends our leg (the machine
//! sends BYE unless the far end already did), end reason `transferred`. A bridged transfer's
//! attempt is `bridge.rs`'s; the policy and the order here serve both.

use std::time::{Duration, Instant};

use dialtone_model::{
    EndedBy, FieldError, Transfer, TransferDestination, TransferFailure, TransferMode,
    TransferStatus, TransferTarget, sip_host_allowed,
};

/// How long an accepted REFER may go without a final NOTIFY before the brain is told the
/// transfer failed: the destination's ringing counts, so a minute. A 2xx NOTIFY that comes
/// later still completes the transfer (the machine keeps the lapsed attempt).
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a transfer was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransferRefusal {
    /// The call is not `in_progress` (not answered yet, or ending).
    NotInProgress,
    /// Another transfer of the call is under way.
    UnderWay,
    /// The destination or the mode breaks a rule; the error names the field.
    Invalid(FieldError),
}

impl TransferRefusal {
    /// For people and for the agent's model.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::NotInProgress => "only a call in progress can be transferred".into(),
            Self::UnderWay => "a transfer of this call is already under way".into(),
            Self::Invalid(error) => error.message.clone(),
        }
    }
}

/// A transfer to start: where, how, and who asked (who ends the call if it completes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    /// The destination, `+E164` or a SIP URI.
    pub(crate) to: String,
    /// How.
    pub(crate) mode: TransferMode,
    /// `api` or `agent`.
    pub(crate) by: EndedBy,
}

/// Where a call's transfers may go: the trunk's own host and its `transfer_sip_domains` for
/// SIP URIs, and the agent's destinations for the default mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TransferPolicy {
    /// The call's trunk host.
    pub(crate) trunk_host: String,
    /// The trunk's `transfer_sip_domains`.
    pub(crate) sip_domains: Vec<String>,
    /// The agent's `transfer_destinations`.
    pub(crate) destinations: Vec<TransferDestination>,
}

impl TransferPolicy {
    /// The order for a transfer to `to` asked by `by`: `to` must be a number or an allowed
    /// SIP URI; `mode` defaults to the agent's destination's, else `refer`. A `bridge` dials
    /// through the trunk, so its `to` must be a number.
    pub(crate) fn order(
        &self,
        to: &str,
        mode: Option<TransferMode>,
        by: EndedBy,
    ) -> Result<Order, TransferRefusal> {
        let target = TransferTarget::parse(to).map_err(TransferRefusal::Invalid)?;
        if let TransferTarget::Sip { host, .. } = &target
            && !sip_host_allowed(host, &self.trunk_host, &self.sip_domains)
        {
            return Err(TransferRefusal::Invalid(FieldError::invalid(
                "to",
                format!(
                    "`to` names SIP host {host:?}, which is neither the trunk's host nor in the \
                     trunk's `transfer_sip_domains`"
                ),
            )));
        }
        let mode = mode
            .or_else(|| {
                self.destinations
                    .iter()
                    .find(|d| d.to == target.as_str())
                    .and_then(|d| d.mode)
            })
            .unwrap_or(TransferMode::Refer);
        if mode == TransferMode::Bridge && !matches!(target, TransferTarget::Number(_)) {
            return Err(TransferRefusal::Invalid(FieldError::invalid(
                "to",
                "a `bridge` transfer dials the destination through the call's trunk: `to` must \
                 be an E.164 number (use `refer` for a SIP URI)",
            )));
        }
        Ok(Order {
            to: target.as_str().to_owned(),
            mode,
            by,
        })
    }
}

/// Where an attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The REFER is out; no answer yet.
    Referring,
    /// Accepted; a final NOTIFY is due by then.
    Accepted { until: Instant },
    /// The destination answered.
    Completed,
}

/// What an input did to the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Nothing to record.
    Nothing,
    /// The attempt moved on (accepted): record it.
    Moved(Transfer),
    /// It completed: record it, the caller is the destination's.
    Completed(Transfer),
    /// It failed: record it, the call stays with the brain.
    Failed(Transfer),
}

/// One transfer attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attempt {
    order: Order,
    phase: Phase,
}

impl Attempt {
    /// An attempt whose REFER is about to leave, and its record.
    pub(crate) fn start(order: Order) -> (Self, Transfer) {
        let attempt = Self {
            order,
            phase: Phase::Referring,
        };
        let record = attempt.record(TransferStatus::Pending, None, None);
        (attempt, record)
    }

    /// The order it carries out.
    pub(crate) fn order(&self) -> &Order {
        &self.order
    }

    /// Whether it completed (the caller is the destination's).
    pub(crate) fn completed(&self) -> bool {
        self.phase == Phase::Completed
    }

    /// When the transfer timeout is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Accepted { until } => Some(until),
            Phase::Referring | Phase::Completed => None,
        }
    }

    fn record(
        &self,
        status: TransferStatus,
        sip_status: Option<u16>,
        reason: Option<TransferFailure>,
    ) -> Transfer {
        Transfer {
            to: self.order.to.clone(),
            mode: self.order.mode,
            status,
            sip_status,
            reason,
            bridge: None,
        }
    }

    fn fail(&self, sip_status: Option<u16>, reason: TransferFailure) -> Progress {
        Progress::Failed(self.record(TransferStatus::Failed, sip_status, Some(reason)))
    }

    fn accept(&mut self, now: Instant) {
        self.phase = Phase::Accepted {
            until: now + TRANSFER_TIMEOUT,
        };
    }

    /// The REFER's final response.
    pub(crate) fn on_refer_answer(&mut self, now: Instant, status: u16) -> Progress {
        match self.phase {
            Phase::Referring if status < 300 => {
                self.accept(now);
                Progress::Moved(self.record(TransferStatus::Accepted, Some(status), None))
            }
            Phase::Referring => self.fail(Some(status), TransferFailure::Refused),
            // A NOTIFY came first and stood for the acceptance.
            Phase::Accepted { .. } | Phase::Completed => Progress::Nothing,
        }
    }

    /// The REFER could not be sent (the user agent no longer has the call).
    pub(crate) fn on_not_sent(&self) -> Progress {
        self.fail(None, TransferFailure::Refused)
    }

    /// A NOTIFY of the subscription: the sipfrag `status`, and whether it was the last.
    pub(crate) fn on_notify(&mut self, now: Instant, status: u16, terminated: bool) -> Progress {
        if self.phase == Phase::Completed {
            return Progress::Nothing;
        }
        if self.phase == Phase::Referring {
            self.accept(now);
        }
        match status {
            200..=299 => {
                self.phase = Phase::Completed;
                Progress::Completed(self.record(TransferStatus::Completed, Some(status), None))
            }
            300.. => self.fail(Some(status), TransferFailure::DestinationFailed),
            _ if terminated => self.fail(Some(status), TransferFailure::SubscriptionEnded),
            _ => Progress::Nothing,
        }
    }

    /// The clock at `now`: past the deadline the attempt fails.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Progress {
        match self.deadline() {
            Some(until) if now >= until => self.fail(None, TransferFailure::Timeout),
            _ => Progress::Nothing,
        }
    }

    /// The far end hung up. After its `202` that is the transfer going ahead: a transferee
    /// that took the REFER ends its dialog with us once it has the call to the destination,
    /// often before (or instead of) the final NOTIFY, so the attempt completes. Before the
    /// `202` it is nothing of the kind.
    pub(crate) fn on_far_end_hung_up(&mut self) -> Progress {
        match self.phase {
            Phase::Accepted { .. } => {
                self.phase = Phase::Completed;
                Progress::Completed(self.record(TransferStatus::Completed, None, None))
            }
            Phase::Referring | Phase::Completed => Progress::Nothing,
        }
    }

    /// The call ended while the attempt had no outcome yet.
    pub(crate) fn on_call_ended(&self) -> Progress {
        match self.phase {
            Phase::Completed => Progress::Nothing,
            Phase::Referring | Phase::Accepted { .. } => {
                self.fail(None, TransferFailure::CallEnded)
            }
        }
    }
}

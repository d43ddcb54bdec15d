//! The timer queue: when to wake, timeouts of transactions and CANCEL, and forgetting
//! finished transactions and ended calls.

use std::cmp::Reverse;
use std::time::Instant;

use rsip::Method;

use super::call::{CancelState, Phase};
use super::transactions::{ClientKey, Owner, Purpose, ServerKey};
use super::{CallEvent, CallHandle, Endpoint, RequestOutcome};
use crate::end_reason::EndReason;
use crate::transaction::TimerAction;

/// Something with a deadline, or whose end may free other state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    Client(ClientKey),
    Server(ServerKey),
    /// A call: its CANCEL deadline, and whether it can be forgotten.
    Call(CallHandle),
}

impl Endpoint {
    /// When [`Endpoint::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Client(key) => self.client_timer(now, key),
                TimerKey::Server(key) => self.server_timer(now, key),
                TimerKey::Call(handle) => {
                    self.cancel_timer(now, handle);
                    self.session_timer(now, handle);
                }
            }
        }
        self.settle();
    }

    fn client_timer(&mut self, now: Instant, key: ClientKey) {
        let Some(tx) = self.client_txs.get_mut(&key) else {
            return;
        };
        let action = tx.machine.on_timeout(now);
        let (d, t, b) = (tx.destination, tx.transport, tx.bytes.clone());
        self.touched.push(TimerKey::Client(key.clone()));
        match action {
            Some(TimerAction::Retransmit) => {
                self.stats.retransmissions += 1;
                self.send(d, t, b);
            }
            Some(TimerAction::Timeout) => self.on_client_timeout(&key, EndReason::TrunkTimeout),
            Some(TimerAction::Terminated) | None => {}
        }
    }

    fn server_timer(&mut self, now: Instant, key: ServerKey) {
        let Some(tx) = self.server_txs.get_mut(&key) else {
            return;
        };
        let action = tx.machine.on_timeout(now);
        let resend = match (action, &tx.last_response) {
            (Some(TimerAction::Retransmit), Some(bytes)) => {
                Some((tx.destination, tx.transport, bytes.clone()))
            }
            _ => None,
        };
        let call = tx.call;
        self.touched.push(TimerKey::Server(key));
        if let Some((d, t, b)) = resend {
            self.stats.retransmissions += 1;
            self.send(d, t, b);
        }
        if let (Some(TimerAction::Timeout), Some(handle)) = (action, call) {
            self.on_inbound_timeout(now, handle);
        }
    }

    /// A client transaction ended without a final response (Timer B/F, a transport failure).
    pub(super) fn on_client_timeout(&mut self, key: &ClientKey, reason: EndReason) {
        let Some(tx) = self.client_txs.get_mut(key) else {
            return;
        };
        tx.machine.terminate();
        let (owner, purpose, method) = (tx.owner, tx.purpose, tx.request.method);
        let request = tx.request.clone();
        self.touched.push(TimerKey::Client(key.clone()));
        let handle = match owner {
            Owner::Call(h) => h,
            Owner::Request(request) => {
                // No answer at all is 408; a transport failure is 503 (RFC 3261 §8.1.3.1).
                let status = match reason {
                    EndReason::TransportError
                    | EndReason::TrunkUnreachable
                    | EndReason::TlsFailed => 503,
                    _ => 408,
                };
                self.outcomes.push_back(RequestOutcome {
                    request,
                    status,
                    expires: None,
                });
                return;
            }
        };
        match purpose {
            Purpose::Invite => {
                let Some(call) = self.calls.get_mut(&handle) else {
                    return;
                };
                if matches!(call.phase, Phase::Calling | Phase::Early) {
                    let reason = if call.cancel != CancelState::NotRequested {
                        call.cancel_reason
                    } else {
                        reason
                    };
                    call.phase = Phase::Terminated;
                    self.emit(
                        handle,
                        CallEvent::Failed {
                            status: None,
                            reason,
                        },
                    );
                }
            }
            Purpose::Bye => self.finish_local_hangup(handle),
            Purpose::InDialog => {
                if method == Method::Invite
                    && let Some(call) = self.calls.get_mut(&handle)
                {
                    call.outgoing_reinvite = false;
                }
                if method == Method::Refer && !self.on_refer_final(handle, &request, 408) {
                    return;
                }
                self.emit(
                    handle,
                    CallEvent::RequestCompleted {
                        method,
                        status: 408,
                        body: Vec::new(),
                    },
                );
            }
            Purpose::Refresh => self.end_session_expired(handle),
            Purpose::Cancel | Purpose::ReleaseBye | Purpose::Standalone => {}
        }
    }

    /// No final response within 64*T1 of our CANCEL: the call is given up (§9.1).
    fn cancel_timer(&mut self, now: Instant, handle: CallHandle) {
        self.touched.push(TimerKey::Call(handle));
        let expired = self.calls.get(&handle).is_some_and(|c| {
            matches!(c.phase, Phase::Calling | Phase::Early)
                && matches!(c.cancel, CancelState::Sent { deadline } if deadline <= now)
        });
        if !expired {
            return;
        }
        let invite_keys: Vec<ClientKey> = self
            .client_txs
            .iter()
            .filter(|(_, t)| t.owner == Owner::Call(handle) && t.purpose == Purpose::Invite)
            .map(|(k, _)| k.clone())
            .collect();
        for key in invite_keys {
            self.on_client_timeout(&key, EndReason::TrunkTimeout);
        }
        if let Some(c) = self.calls.get_mut(&handle)
            && c.phase != Phase::Terminated
        {
            c.phase = Phase::Terminated;
            let reason = c.cancel_reason;
            self.emit(
                handle,
                CallEvent::Failed {
                    status: None,
                    reason,
                },
            );
        }
    }

    /// Brings the timer queue up to date with every key touched since the last call, and
    /// forgets finished transactions and calls that ended with none left.
    pub(super) fn settle(&mut self) {
        while let Some(key) = self.touched.pop() {
            match key {
                TimerKey::Client(k) => {
                    let Some(tx) = self.client_txs.get_mut(&k) else {
                        continue;
                    };
                    if tx.machine.is_terminated() {
                        if let Some(tx) = self.client_txs.remove(&k) {
                            self.release_tx(tx.owner.call());
                        }
                        continue;
                    }
                    let deadline = tx.machine.poll_timeout();
                    if deadline != tx.scheduled {
                        tx.scheduled = deadline;
                        if let Some(at) = deadline {
                            self.timers.push(Reverse((at, TimerKey::Client(k))));
                        }
                    }
                }
                TimerKey::Server(k) => {
                    let Some(tx) = self.server_txs.get_mut(&k) else {
                        continue;
                    };
                    if tx.machine.is_terminated() {
                        if let Some(tx) = self.server_txs.remove(&k) {
                            self.release_tx(tx.call);
                        }
                        continue;
                    }
                    let deadline = tx.machine.poll_timeout();
                    if deadline != tx.scheduled {
                        tx.scheduled = deadline;
                        if let Some(at) = deadline {
                            self.timers.push(Reverse((at, TimerKey::Server(k))));
                        }
                    }
                }
                TimerKey::Call(h) => {
                    let Some(call) = self.calls.get(&h) else {
                        continue;
                    };
                    match (call.phase, call.cancel, call.session_timer) {
                        (Phase::Terminated, ..) => self.forget_if_idle(h),
                        (Phase::Calling | Phase::Early, CancelState::Sent { deadline }, _) => {
                            self.timers.push(Reverse((deadline, TimerKey::Call(h))));
                        }
                        (Phase::Confirmed, _, Some(timer)) => {
                            self.timers
                                .push(Reverse((timer.deadline, TimerKey::Call(h))));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn release_tx(&mut self, call: Option<CallHandle>) {
        let Some(h) = call else {
            return;
        };
        if let Some(n) = self.call_txs.get_mut(&h) {
            *n = n.saturating_sub(1);
        }
        self.forget_if_idle(h);
    }

    fn forget_if_idle(&mut self, h: CallHandle) {
        let idle = self.call_txs.get(&h).is_none_or(|n| *n == 0);
        let ended = self
            .calls
            .get(&h)
            .is_some_and(|c| c.phase == Phase::Terminated);
        if idle && ended {
            if let Some(c) = self.calls.remove(&h) {
                self.calls_by_id.remove(&c.call_id);
            }
            self.call_txs.remove(&h);
            self.server_ack_wait.remove(&h);
            self.inbound.remove(&h);
        }
    }
}

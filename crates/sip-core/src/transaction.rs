//! The four transaction state machines of RFC 3261 §17, with the RFC 6026 `Accepted` state.
//!
//! Each machine holds only its state and its timers; it neither builds nor sends messages. The
//! [`crate::Endpoint`] feeds it responses, requests and `now`, and acts on the verdict: send the
//! stored request or response again, pass a message up, report a timeout. Timer letters follow
//! the RFC: A/B/D (INVITE client), E/F/K (non-INVITE client), G/H/I (INVITE server),
//! J (non-INVITE server), L/M (RFC 6026).

use std::time::{Duration, Instant};

/// SIP timer base values (RFC 3261 §17.1.1.1 and Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip time estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s by default.
    pub t2: Duration,
    /// Maximum duration a message remains in the network, 5 s by default.
    pub t4: Duration,
    /// Timer D: wait time for response retransmits on unreliable transports (≥ 32 s).
    pub timer_d: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
        }
    }
}

impl TimerConfig {
    /// `64 * T1`: timers B, F, H, J, L and M.
    pub fn sixty_four_t1(&self) -> Duration {
        self.t1 * 64
    }
}

/// A retransmission timer: its next deadline and the interval that led to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retransmit {
    at: Instant,
    interval: Duration,
}

impl Retransmit {
    fn start(now: Instant, interval: Duration) -> Self {
        Self {
            at: now + interval,
            interval,
        }
    }

    /// Doubles the interval, capped at `cap` when given, and re-arms.
    fn backoff(&mut self, now: Instant, cap: Option<Duration>) {
        let doubled = self.interval * 2;
        self.interval = cap.map_or(doubled, |c| doubled.min(c));
        self.at = now + self.interval;
    }
}

fn earliest(deadlines: &[Option<Instant>]) -> Option<Instant> {
    deadlines.iter().flatten().min().copied()
}

fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| d <= now)
}

/// What a timer expiry asks the endpoint to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Send the stored request (client) or last response (server) again.
    Retransmit,
    /// The transaction timed out (B, F, H); tell the transaction user.
    Timeout,
    /// The transaction ended quietly (D, I, J, K, L, M).
    Terminated,
}

/// States of the INVITE client transaction (RFC 3261 Figure 5, RFC 6026 Figure 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    /// INVITE sent, nothing heard.
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final non-2xx arrived and was ACKed; absorbing retransmissions (Timer D).
    Completed,
    /// A 2xx arrived; further 2xx (forks, retransmissions) go to the dialog layer (Timer M).
    Accepted,
    /// Finished.
    Terminated,
}

/// What the INVITE client transaction does with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientVerdict {
    /// Pass a provisional response up.
    Provisional,
    /// First final non-2xx: pass up, build the ACK and give it to [`InviteClientTx::set_ack`].
    FinalNon2xx,
    /// Retransmitted final non-2xx: send the stored ACK again, do not pass up.
    ResendAck,
    /// A 2xx: pass up to the dialog layer, which ACKs it.
    Success,
    /// Nothing to do.
    Ignore,
}

/// The INVITE client transaction (RFC 3261 §17.1.1).
#[derive(Debug, Clone)]
pub struct InviteClientTx {
    state: InviteClientState,
    reliable: bool,
    timers: TimerConfig,
    timer_a: Option<Retransmit>,
    timer_b: Option<Instant>,
    timer_d: Option<Instant>,
    timer_m: Option<Instant>,
    ack: Option<Vec<u8>>,
}

impl InviteClientTx {
    /// Starts in `Calling`; the caller has just sent the INVITE.
    pub fn new(now: Instant, timers: TimerConfig, reliable: bool) -> Self {
        Self {
            state: InviteClientState::Calling,
            reliable,
            timers,
            timer_a: (!reliable).then(|| Retransmit::start(now, timers.t1)),
            timer_b: Some(now + timers.sixty_four_t1()),
            timer_d: None,
            timer_m: None,
            ack: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> InviteClientState {
        self.state
    }

    /// The ACK to resend when the final response is retransmitted.
    pub fn ack(&self) -> Option<&[u8]> {
        self.ack.as_deref()
    }

    /// Stores the ACK built for the final non-2xx response.
    pub fn set_ack(&mut self, ack: Vec<u8>) {
        self.ack = Some(ack);
    }

    /// Feeds a response with status `code`.
    pub fn on_response(&mut self, now: Instant, code: u16) -> InviteClientVerdict {
        use InviteClientState::*;
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.timer_a = None;
                self.timer_b = None;
                InviteClientVerdict::Provisional
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_m = Some(now + self.timers.sixty_four_t1());
                InviteClientVerdict::Success
            }
            (Calling | Proceeding, _) => {
                self.state = Completed;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_d = Some(if self.reliable {
                    now
                } else {
                    now + self.timers.timer_d
                });
                InviteClientVerdict::FinalNon2xx
            }
            (Completed, 300..=699) => InviteClientVerdict::ResendAck,
            (Accepted, 200..=299) => InviteClientVerdict::Success,
            _ => InviteClientVerdict::Ignore,
        }
    }

    /// The next deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[
            self.timer_a.map(|t| t.at),
            self.timer_b,
            self.timer_d,
            self.timer_m,
        ])
    }

    /// Runs expired timers.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if due(self.timer_b, now) {
            self.terminate();
            return Some(TimerAction::Timeout);
        }
        if due(self.timer_d, now) || due(self.timer_m, now) {
            self.terminate();
            return Some(TimerAction::Terminated);
        }
        if let Some(a) = self.timer_a.as_mut().filter(|a| a.at <= now) {
            // INVITE retransmissions double without the T2 cap (§17.1.1.2).
            a.backoff(now, None);
            return Some(TimerAction::Retransmit);
        }
        None
    }

    /// A transport error ends the transaction (§17.1.4).
    pub fn terminate(&mut self) {
        self.state = InviteClientState::Terminated;
        self.timer_a = None;
        self.timer_b = None;
        self.timer_d = None;
        self.timer_m = None;
    }
}

/// States of the non-INVITE client transaction (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    /// Request sent.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions (Timer K).
    Completed,
    /// Finished.
    Terminated,
}

/// The non-INVITE client transaction (RFC 3261 §17.1.2).
#[derive(Debug, Clone)]
pub struct NonInviteClientTx {
    state: NonInviteClientState,
    reliable: bool,
    timers: TimerConfig,
    timer_e: Option<Retransmit>,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
}

impl NonInviteClientTx {
    /// Starts in `Trying`; the caller has just sent the request.
    pub fn new(now: Instant, timers: TimerConfig, reliable: bool) -> Self {
        Self {
            state: NonInviteClientState::Trying,
            reliable,
            timers,
            timer_e: (!reliable).then(|| Retransmit::start(now, timers.t1)),
            timer_f: Some(now + timers.sixty_four_t1()),
            timer_k: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    /// Feeds a response; `true` when it is passed up (first provisional/final of its kind).
    pub fn on_response(&mut self, now: Instant, code: u16) -> bool {
        use NonInviteClientState::*;
        match (self.state, code) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                true
            }
            (Trying | Proceeding, _) => {
                self.state = Completed;
                self.timer_e = None;
                self.timer_f = None;
                self.timer_k = Some(if self.reliable {
                    now
                } else {
                    now + self.timers.t4
                });
                true
            }
            _ => false,
        }
    }

    /// The next deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.timer_e.map(|t| t.at), self.timer_f, self.timer_k])
    }

    /// Runs expired timers.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if due(self.timer_f, now) {
            self.terminate();
            return Some(TimerAction::Timeout);
        }
        if due(self.timer_k, now) {
            self.terminate();
            return Some(TimerAction::Terminated);
        }
        let proceeding = self.state == NonInviteClientState::Proceeding;
        let t2 = self.timers.t2;
        if let Some(e) = self.timer_e.as_mut().filter(|e| e.at <= now) {
            if proceeding {
                // In Proceeding, Timer E fires every T2 (§17.1.2.2).
                *e = Retransmit::start(now, t2);
            } else {
                e.backoff(now, Some(t2));
            }
            return Some(TimerAction::Retransmit);
        }
        None
    }

    /// Ends the transaction.
    pub fn terminate(&mut self) {
        self.state = NonInviteClientState::Terminated;
        self.timer_e = None;
        self.timer_f = None;
        self.timer_k = None;
    }
}

/// States of the INVITE server transaction (RFC 3261 Figure 7, RFC 6026 Figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    /// INVITE received, provisional responses may be sent.
    Proceeding,
    /// A final non-2xx was sent; waiting for the ACK (Timers G, H).
    Completed,
    /// The ACK arrived; absorbing ACK retransmissions (Timer I).
    Confirmed,
    /// A 2xx was sent; the 2xx is retransmitted until the ACK (Timer L bounds it).
    Accepted,
    /// Finished.
    Terminated,
}

/// What the INVITE server transaction does with a request that matched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerVerdict {
    /// A retransmitted INVITE: send the last response again (if any).
    ResendLastResponse,
    /// The ACK for our non-2xx: absorbed.
    AckAbsorbed,
    /// The ACK for our 2xx (matched by the dialog layer): stops 2xx retransmission.
    AckForSuccess,
    /// Nothing to do.
    Ignore,
}

/// The INVITE server transaction (RFC 3261 §17.2.1) for re-INVITEs received in a dialog.
///
/// In `Accepted` it also retransmits the 2xx on the Timer G schedule until the ACK arrives,
/// which RFC 3261 §13.3.1.4 assigns to the UAS core; keeping both here gives one timer owner.
#[derive(Debug, Clone)]
pub struct InviteServerTx {
    state: InviteServerState,
    reliable: bool,
    timers: TimerConfig,
    timer_g: Option<Retransmit>,
    timer_h: Option<Instant>,
    timer_i: Option<Instant>,
    timer_l: Option<Instant>,
}

impl InviteServerTx {
    /// Starts in `Proceeding` on receipt of an INVITE.
    pub fn new(timers: TimerConfig, reliable: bool) -> Self {
        Self {
            state: InviteServerState::Proceeding,
            reliable,
            timers,
            timer_g: None,
            timer_h: None,
            timer_i: None,
            timer_l: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// The transaction user sends a response with status `code`.
    pub fn on_send_response(&mut self, now: Instant, code: u16) {
        match code {
            100..=199 => {}
            200..=299 => {
                // The 2xx is retransmitted until the ACK on every transport (RFC 3261
                // §13.3.1.4: the TU's duty, hop-by-hop reliability is not enough), so a lost
                // ACK over TCP or TLS times out like one over UDP.
                self.state = InviteServerState::Accepted;
                self.timer_g = Some(Retransmit::start(now, self.timers.t1));
                self.timer_l = Some(now + self.timers.sixty_four_t1());
            }
            _ => {
                self.state = InviteServerState::Completed;
                self.timer_g = (!self.reliable).then(|| Retransmit::start(now, self.timers.t1));
                self.timer_h = Some(now + self.timers.sixty_four_t1());
            }
        }
    }

    /// A request matched this transaction: the INVITE again, or an ACK.
    pub fn on_request(&mut self, now: Instant, is_ack: bool) -> InviteServerVerdict {
        use InviteServerState::*;
        match (self.state, is_ack) {
            (Proceeding | Completed | Accepted, false) => InviteServerVerdict::ResendLastResponse,
            (Completed, true) => {
                self.state = Confirmed;
                self.timer_g = None;
                self.timer_h = None;
                self.timer_i = Some(if self.reliable {
                    now
                } else {
                    now + self.timers.t4
                });
                InviteServerVerdict::AckAbsorbed
            }
            (Accepted, true) => {
                self.timer_g = None;
                InviteServerVerdict::AckForSuccess
            }
            _ => InviteServerVerdict::Ignore,
        }
    }

    /// The next deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[
            self.timer_g.map(|t| t.at),
            self.timer_h,
            self.timer_i,
            self.timer_l,
        ])
    }

    /// Runs expired timers.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if due(self.timer_h, now) {
            self.terminate();
            return Some(TimerAction::Timeout);
        }
        if due(self.timer_i, now) || due(self.timer_l, now) {
            let acked = self.state != InviteServerState::Accepted || self.timer_g.is_none();
            self.terminate();
            return Some(if acked {
                TimerAction::Terminated
            } else {
                TimerAction::Timeout
            });
        }
        let t2 = self.timers.t2;
        if let Some(g) = self.timer_g.as_mut().filter(|g| g.at <= now) {
            g.backoff(now, Some(t2));
            return Some(TimerAction::Retransmit);
        }
        None
    }

    /// Ends the transaction.
    pub fn terminate(&mut self) {
        self.state = InviteServerState::Terminated;
        self.timer_g = None;
        self.timer_h = None;
        self.timer_i = None;
        self.timer_l = None;
    }
}

/// States of the non-INVITE server transaction (RFC 3261 Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    /// Request received, nothing sent.
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// A final response was sent; answering retransmissions (Timer J).
    Completed,
    /// Finished.
    Terminated,
}

/// The non-INVITE server transaction (RFC 3261 §17.2.2).
#[derive(Debug, Clone)]
pub struct NonInviteServerTx {
    state: NonInviteServerState,
    reliable: bool,
    timers: TimerConfig,
    timer_j: Option<Instant>,
}

impl NonInviteServerTx {
    /// Starts in `Trying` on receipt of a request.
    pub fn new(timers: TimerConfig, reliable: bool) -> Self {
        Self {
            state: NonInviteServerState::Trying,
            reliable,
            timers,
            timer_j: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    /// The transaction user sends a response with status `code`.
    pub fn on_send_response(&mut self, now: Instant, code: u16) {
        if code < 200 {
            self.state = NonInviteServerState::Proceeding;
        } else {
            self.state = NonInviteServerState::Completed;
            self.timer_j = Some(if self.reliable {
                now
            } else {
                now + self.timers.sixty_four_t1()
            });
        }
    }

    /// A retransmission of the request: `true` when the last response is to be sent again.
    pub fn on_retransmission(&self) -> bool {
        matches!(
            self.state,
            NonInviteServerState::Proceeding | NonInviteServerState::Completed
        )
    }

    /// The next deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    /// Runs expired timers.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if due(self.timer_j, now) {
            self.state = NonInviteServerState::Terminated;
            self.timer_j = None;
            return Some(TimerAction::Terminated);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a machine from `start` through every deadline up to `until`, recording when each
    /// action happened (as an offset from `start`).
    fn run<F, P>(start: Instant, until: Duration, mut fire: F, poll: P) -> Vec<(u64, TimerAction)>
    where
        F: FnMut(Instant) -> Option<TimerAction>,
        P: Fn() -> Option<Instant>,
    {
        let mut log = Vec::new();
        for _ in 0..1000 {
            let Some(at) = poll() else { break };
            if at > start + until {
                break;
            }
            if let Some(action) = fire(at) {
                log.push(((at - start).as_millis() as u64, action));
            }
        }
        log
    }

    #[test]
    fn invite_client_retransmits_with_doubling_then_timer_b() {
        let t0 = Instant::now();
        let tx = std::cell::RefCell::new(InviteClientTx::new(t0, TimerConfig::default(), false));
        let log = run(
            t0,
            Duration::from_secs(40),
            |now| tx.borrow_mut().on_timeout(now),
            || tx.borrow().poll_timeout(),
        );
        let retransmits: Vec<u64> = log
            .iter()
            .filter(|(_, a)| *a == TimerAction::Retransmit)
            .map(|(t, _)| *t)
            .collect();
        // A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s (no T2 cap for INVITE); B at 32 s.
        assert_eq!(retransmits, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(log.last(), Some(&(32000, TimerAction::Timeout)));
        assert_eq!(tx.borrow().state(), InviteClientState::Terminated);
    }

    #[test]
    fn invite_client_on_reliable_transport_has_no_timer_a() {
        let t0 = Instant::now();
        let mut tx = InviteClientTx::new(t0, TimerConfig::default(), true);
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32000)));
        assert_eq!(tx.on_timeout(t0 + ms(32000)), Some(TimerAction::Timeout));
    }

    #[test]
    fn invite_client_provisional_stops_retransmission_and_timer_b() {
        let t0 = Instant::now();
        let mut tx = InviteClientTx::new(t0, TimerConfig::default(), false);
        assert_eq!(
            tx.on_response(t0 + ms(100), 180),
            InviteClientVerdict::Provisional
        );
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.state(), InviteClientState::Proceeding);
    }

    #[test]
    fn invite_client_completed_absorbs_retransmitted_finals_until_timer_d() {
        let t0 = Instant::now();
        let mut tx = InviteClientTx::new(t0, TimerConfig::default(), false);
        assert_eq!(tx.on_response(t0, 486), InviteClientVerdict::FinalNon2xx);
        assert_eq!(
            tx.on_response(t0 + ms(10), 486),
            InviteClientVerdict::ResendAck
        );
        assert_eq!(
            tx.on_response(t0 + ms(10), 180),
            InviteClientVerdict::Ignore
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32000)));
        assert_eq!(tx.on_timeout(t0 + ms(32000)), Some(TimerAction::Terminated));
        assert_eq!(tx.state(), InviteClientState::Terminated);
    }

    #[test]
    fn invite_client_accepted_passes_every_2xx_until_timer_m() {
        let t0 = Instant::now();
        let mut tx = InviteClientTx::new(t0, TimerConfig::default(), false);
        assert_eq!(tx.on_response(t0, 200), InviteClientVerdict::Success);
        assert_eq!(tx.on_response(t0, 200), InviteClientVerdict::Success);
        assert_eq!(tx.on_response(t0, 486), InviteClientVerdict::Ignore);
        assert_eq!(tx.on_timeout(t0 + ms(32000)), Some(TimerAction::Terminated));
    }

    #[test]
    fn non_invite_client_caps_at_t2_then_timer_f() {
        let t0 = Instant::now();
        let tx = std::cell::RefCell::new(NonInviteClientTx::new(t0, TimerConfig::default(), false));
        let log = run(
            t0,
            Duration::from_secs(40),
            |now| tx.borrow_mut().on_timeout(now),
            || tx.borrow().poll_timeout(),
        );
        let times: Vec<u64> = log.iter().map(|(t, _)| *t).collect();
        // E: 0.5, 1.5, 3.5, 7.5 (cap 4 s), 11.5, ..., 31.5; F at 32 s.
        assert_eq!(
            times,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500, 32000
            ]
        );
        assert_eq!(log.last().map(|l| l.1), Some(TimerAction::Timeout));
    }

    #[test]
    fn non_invite_client_proceeding_retransmits_every_t2_and_k_absorbs() {
        let t0 = Instant::now();
        let mut tx = NonInviteClientTx::new(t0, TimerConfig::default(), false);
        assert!(tx.on_response(t0 + ms(100), 100));
        assert_eq!(tx.on_timeout(t0 + ms(500)), Some(TimerAction::Retransmit));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(4500)));
        assert!(tx.on_response(t0 + ms(600), 200));
        assert!(!tx.on_response(t0 + ms(700), 200));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(5600)));
        assert_eq!(tx.on_timeout(t0 + ms(5600)), Some(TimerAction::Terminated));
    }

    #[test]
    fn invite_server_retransmits_final_until_ack_then_timer_i() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), false);
        assert_eq!(
            tx.on_request(t0, false),
            InviteServerVerdict::ResendLastResponse
        );
        tx.on_send_response(t0, 488);
        assert_eq!(tx.on_timeout(t0 + ms(500)), Some(TimerAction::Retransmit));
        assert_eq!(tx.on_timeout(t0 + ms(1500)), Some(TimerAction::Retransmit));
        assert_eq!(
            tx.on_request(t0 + ms(1600), true),
            InviteServerVerdict::AckAbsorbed
        );
        assert_eq!(tx.state(), InviteServerState::Confirmed);
        assert_eq!(
            tx.on_request(t0 + ms(1700), true),
            InviteServerVerdict::Ignore
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(6600)));
        assert_eq!(tx.on_timeout(t0 + ms(6600)), Some(TimerAction::Terminated));
    }

    #[test]
    fn invite_server_timer_h_without_ack() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), false);
        tx.on_send_response(t0, 486);
        let mut last = None;
        while let Some(at) = tx.poll_timeout() {
            last = tx.on_timeout(at);
        }
        assert_eq!(last, Some(TimerAction::Timeout));
    }

    #[test]
    fn invite_server_2xx_retransmits_until_ack() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), false);
        tx.on_send_response(t0, 200);
        assert_eq!(tx.on_timeout(t0 + ms(500)), Some(TimerAction::Retransmit));
        assert_eq!(
            tx.on_request(t0 + ms(600), true),
            InviteServerVerdict::AckForSuccess
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32000)));
        assert_eq!(tx.on_timeout(t0 + ms(32000)), Some(TimerAction::Terminated));
    }

    #[test]
    fn invite_server_2xx_never_acked_times_out() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), false);
        tx.on_send_response(t0, 200);
        let mut last = None;
        while let Some(at) = tx.poll_timeout() {
            last = tx.on_timeout(at);
        }
        assert_eq!(last, Some(TimerAction::Timeout));
    }

    #[test]
    fn non_invite_server_answers_retransmissions_until_timer_j() {
        let t0 = Instant::now();
        let mut tx = NonInviteServerTx::new(TimerConfig::default(), false);
        assert!(!tx.on_retransmission());
        tx.on_send_response(t0, 200);
        assert!(tx.on_retransmission());
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32000)));
        assert_eq!(tx.on_timeout(t0 + ms(32000)), Some(TimerAction::Terminated));
        assert_eq!(tx.state(), NonInviteServerState::Terminated);
        let mut reliable = NonInviteServerTx::new(TimerConfig::default(), true);
        reliable.on_send_response(t0, 200);
        assert_eq!(reliable.poll_timeout(), Some(t0));
    }
}

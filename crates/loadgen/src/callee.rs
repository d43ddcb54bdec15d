//! The trunk simulator's SIP side, sans-IO: many callees behind one UDP address.
//!
//! Each INVITE gets an outcome from the configured mix: answer (180, then 200 with an SDP
//! answer after the answer delay, retransmitted until the ACK), busy (486), failure (503), or
//! ring without answer (180 until the CANCEL: 200 to it, 487 to the INVITE). An answered call is
//! held for the hold time and then hung up with a BYE (retransmitted on Timer E until the 200 or
//! Timer F), unless the caller's BYE comes first. Retransmitted INVITEs get the last response
//! again (the INVITE server transaction of `dialtone-sip-core`). Input: [`Callee::handle_datagram`]
//! and [`Callee::handle_timeout`] with `now`; output: [`Callee::poll_transmit`],
//! [`Callee::poll_timeout`] and [`Callee::poll_event`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dialtone_sdp::{AudioCodec, LocalMedia, NegotiatedSession, SessionDescription, answer_offer};
use dialtone_sip_core::TimerConfig;
use dialtone_sip_core::headers::{first, values};
use dialtone_sip_core::transaction::{InviteServerTx, InviteServerVerdict, TimerAction};
use dialtone_sip_core::validate::{Inbound, validate};
use rsip::Method;

/// What the callee does with one INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rings, answers after the answer delay, holds the call.
    Answer,
    /// `486 Busy Here` at once.
    Busy,
    /// `503 Service Unavailable` at once.
    Fail,
    /// Rings until the caller cancels.
    NoAnswer,
}

/// The mix of outcomes, in parts (answer, busy, fail, no answer); calls take them in a fixed
/// repeating order so a run is reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeMix {
    /// Parts answered.
    pub answer: u32,
    /// Parts busy.
    pub busy: u32,
    /// Parts failed.
    pub fail: u32,
    /// Parts never answered.
    pub no_answer: u32,
}

impl OutcomeMix {
    /// Every call answered.
    pub const ALL_ANSWERED: OutcomeMix = OutcomeMix {
        answer: 1,
        busy: 0,
        fail: 0,
        no_answer: 0,
    };

    /// The outcome of the `n`th call.
    pub fn outcome(&self, n: u64) -> Outcome {
        let total = u64::from(self.answer + self.busy + self.fail + self.no_answer).max(1);
        let slot = n % total;
        let (a, b, f) = (
            u64::from(self.answer),
            u64::from(self.busy),
            u64::from(self.fail),
        );
        if slot < a {
            Outcome::Answer
        } else if slot < a + b {
            Outcome::Busy
        } else if slot < a + b + f {
            Outcome::Fail
        } else {
            Outcome::NoAnswer
        }
    }
}

/// The callee's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CalleeConfig {
    /// Our SIP address (written in Via, Contact).
    pub sip_addr: SocketAddr,
    /// The address written in SDP.
    pub media_ip: IpAddr,
    /// Codecs we answer with, in preference order.
    pub codecs: Vec<AudioCodec>,
    /// Outcomes of the calls.
    pub mix: OutcomeMix,
    /// From INVITE to 200 for answered calls.
    pub answer_delay: Duration,
    /// From answer to our BYE; `None` waits for the caller's.
    pub hold: Option<Duration>,
    /// SIP timers.
    pub timers: TimerConfig,
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CalleeEvent {
    /// A call arrived; `dispatch_id` is Dialtone's call id from `X-Dialtone-Call-Id`.
    Offered {
        /// The SIP Call-ID.
        call_id: String,
        /// Dialtone's id of the call.
        dispatch_id: Option<String>,
        /// What the callee will do.
        outcome: Outcome,
    },
    /// A 200 is about to leave: bind `rtp_port` now, media flows to and from `session`.
    Answering {
        /// The SIP Call-ID.
        call_id: String,
        /// Our RTP port, as written in the answer.
        rtp_port: u16,
        /// The negotiated session.
        session: Box<NegotiatedSession>,
    },
    /// The ACK came: the call is up.
    Confirmed {
        /// The SIP Call-ID.
        call_id: String,
    },
    /// The call is over.
    Ended {
        /// The SIP Call-ID.
        call_id: String,
        /// Who ended it.
        by: EndedBy,
    },
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The caller (Dialtone) with BYE or CANCEL.
    Caller,
    /// We did: after the hold time, or by refusing it.
    Callee,
    /// Our BYE got no answer (Timer F), or the 200 no ACK.
    Timeout,
}

#[derive(Debug)]
enum Phase {
    /// Ringing; the final response is due at the instant (never for no-answer).
    Ringing { answer_at: Option<Instant> },
    /// 200 sent; retransmitted until the ACK.
    Accepted {
        retransmit_at: Instant,
        interval: Duration,
        give_up_at: Instant,
    },
    /// Up; our BYE is due at the instant, if we hang up.
    Confirmed { bye_at: Option<Instant> },
    /// Our BYE is out.
    Leaving {
        retransmit_at: Instant,
        interval: Duration,
        give_up_at: Instant,
    },
}

#[derive(Debug)]
struct SimCall {
    source: SocketAddr,
    invite: rsip::Request,
    tx: InviteServerTx,
    last_response: Vec<u8>,
    local_tag: String,
    phase: Phase,
    rtp_port: u16,
    answer_sdp: String,
    bye: Vec<u8>,
}

/// The simulator's SIP core.
#[derive(Debug)]
pub struct Callee {
    config: CalleeConfig,
    calls: HashMap<String, SimCall>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<CalleeEvent>,
    offered: u64,
    next_rtp_port: u16,
    rtp_ports: (u16, u16),
    counter: u64,
    /// Datagrams that were not SIP we could use.
    pub malformed: u64,
}

/// Appends `;tag=` to a To value without one.
fn with_tag(to: &str, tag: &str) -> String {
    if to.contains(";tag=") {
        to.to_owned()
    } else {
        format!("{to};tag={tag}")
    }
}

/// The `<uri>` inside a name-addr, or the value itself.
fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value.get(a + 1..b).unwrap_or(value),
        _ => value.split(';').next().unwrap_or(value),
    }
}

impl Callee {
    /// A callee with its RTP ports taken from `rtp_ports` (even ports, in turn).
    pub fn new(config: CalleeConfig, rtp_ports: (u16, u16)) -> Self {
        Self {
            config,
            calls: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            offered: 0,
            next_rtp_port: rtp_ports.0 & !1,
            rtp_ports,
            counter: 0,
            malformed: 0,
        }
    }

    /// Calls not yet over.
    pub fn live(&self) -> usize {
        self.calls.len()
    }

    fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{:x}{}", self.config.sip_addr.port(), self.counter)
    }

    fn rtp_port(&mut self) -> u16 {
        let port = self.next_rtp_port;
        self.next_rtp_port = if port.saturating_add(2) > self.rtp_ports.1 {
            self.rtp_ports.0 & !1
        } else {
            port + 2
        };
        port
    }

    /// A response to `req` (its Via, From, To with our tag, Call-ID and CSeq).
    fn response(&self, req: &rsip::Request, code: u16, tag: &str, sdp: Option<&str>) -> Vec<u8> {
        let reason = dialtone_sip_core::validate::standard_reason(code);
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for via in values(&req.headers, "Via") {
            out.push_str(&format!("Via: {via}\r\n"));
        }
        for name in ["From", "Call-ID", "CSeq"] {
            if let Some(v) = first(&req.headers, name) {
                out.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        if let Some(to) = first(&req.headers, "To") {
            let to = if code > 100 { with_tag(&to, tag) } else { to };
            out.push_str(&format!("To: {to}\r\n"));
        }
        if (101..300).contains(&code) && req.method == Method::Invite {
            out.push_str(&format!(
                "Contact: <sip:callee@{}>\r\n",
                self.config.sip_addr
            ));
        }
        match sdp {
            Some(body) => out.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => out.push_str("Content-Length: 0\r\n\r\n"),
        }
        out.into_bytes()
    }

    /// One datagram from `source` at `now`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        match validate(datagram, "") {
            Inbound::Request(req) => self.on_request(now, source, req),
            Inbound::Response(resp) => self.on_response(&resp),
            Inbound::Reject { response, .. } => {
                self.transmits
                    .push_back((source, response.to_string().into_bytes()));
            }
            Inbound::Drop(_) => self.malformed += 1,
        }
    }

    fn on_request(&mut self, now: Instant, source: SocketAddr, req: rsip::Request) {
        let Some(call_id) = first(&req.headers, "Call-ID") else {
            self.malformed += 1;
            return;
        };
        match req.method {
            Method::Invite => self.on_invite(now, source, call_id, req),
            Method::Ack => self.on_ack(now, &call_id),
            Method::Cancel => {
                let tag = self
                    .calls
                    .get(&call_id)
                    .map(|c| c.local_tag.clone())
                    .unwrap_or_default();
                let ok = self.response(&req, 200, &tag, None);
                self.transmits.push_back((source, ok));
                let ringing = self
                    .calls
                    .get(&call_id)
                    .is_some_and(|c| matches!(c.phase, Phase::Ringing { .. }));
                if ringing && let Some(mut call) = self.calls.remove(&call_id) {
                    let terminated = self.response(&call.invite, 487, &call.local_tag, None);
                    call.tx.on_send_response(now, 487);
                    self.transmits.push_back((call.source, terminated));
                    self.events.push_back(CalleeEvent::Ended {
                        call_id,
                        by: EndedBy::Caller,
                    });
                }
            }
            Method::Bye => {
                let tag = self
                    .calls
                    .get(&call_id)
                    .map(|c| c.local_tag.clone())
                    .unwrap_or_default();
                let code = if self.calls.contains_key(&call_id) {
                    200
                } else {
                    481
                };
                let resp = self.response(&req, code, &tag, None);
                self.transmits.push_back((source, resp));
                if self.calls.remove(&call_id).is_some() {
                    self.events.push_back(CalleeEvent::Ended {
                        call_id,
                        by: EndedBy::Caller,
                    });
                }
            }
            _ => {
                // OPTIONS keep-alives and in-dialog INFO/UPDATE: accepted, nothing to do.
                let resp = self.response(&req, 200, "sim", None);
                self.transmits.push_back((source, resp));
            }
        }
    }

    fn on_invite(&mut self, now: Instant, source: SocketAddr, call_id: String, req: rsip::Request) {
        if let Some(call) = self.calls.get(&call_id) {
            // A re-INVITE is answered with our current SDP; a retransmission gets the last
            // response again.
            if first(&req.headers, "To").is_some_and(|t| t.contains(";tag=")) {
                let (tag, sdp) = (call.local_tag.clone(), call.answer_sdp.clone());
                let ok = self.response(&req, 200, &tag, Some(&sdp));
                self.transmits.push_back((source, ok));
            } else if let Some(call) = self.calls.get_mut(&call_id)
                && call.tx.on_request(now, false) == InviteServerVerdict::ResendLastResponse
            {
                self.transmits
                    .push_back((source, call.last_response.clone()));
            }
            return;
        }
        let outcome = self.config.mix.outcome(self.offered);
        self.offered += 1;
        let local_tag = self.unique("t");
        let mut tx = InviteServerTx::new(self.config.timers, false);
        self.events.push_back(CalleeEvent::Offered {
            call_id: call_id.clone(),
            dispatch_id: first(&req.headers, "X-Dialtone-Call-Id"),
            outcome,
        });
        let code = match outcome {
            Outcome::Busy => 486,
            Outcome::Fail => 503,
            Outcome::Answer | Outcome::NoAnswer => 180,
        };
        let resp = self.response(&req, code, &local_tag, None);
        tx.on_send_response(now, code);
        self.transmits.push_back((source, resp.clone()));
        if code >= 300 {
            // The transaction absorbs the ACK; nothing more to track.
            self.events.push_back(CalleeEvent::Ended {
                call_id,
                by: EndedBy::Callee,
            });
            return;
        }
        let answer_at = (outcome == Outcome::Answer).then(|| now + self.config.answer_delay);
        self.calls.insert(
            call_id,
            SimCall {
                source,
                invite: req,
                tx,
                last_response: resp,
                local_tag,
                phase: Phase::Ringing { answer_at },
                rtp_port: 0,
                answer_sdp: String::new(),
                bye: Vec::new(),
            },
        );
    }

    fn on_ack(&mut self, now: Instant, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if let Phase::Accepted { .. } = call.phase {
            call.phase = Phase::Confirmed {
                bye_at: self.config.hold.map(|h| now + h),
            };
            self.events.push_back(CalleeEvent::Confirmed {
                call_id: call_id.to_owned(),
            });
        }
    }

    fn on_response(&mut self, resp: &rsip::Response) {
        let Some(call_id) = first(&resp.headers, "Call-ID") else {
            return;
        };
        let is_bye = first(&resp.headers, "CSeq").is_some_and(|c| c.ends_with("BYE"));
        let code = u16::from(resp.status_code.clone());
        let leaving = self
            .calls
            .get(&call_id)
            .is_some_and(|c| matches!(c.phase, Phase::Leaving { .. }));
        if is_bye && code >= 200 && leaving {
            self.calls.remove(&call_id);
            self.events.push_back(CalleeEvent::Ended {
                call_id,
                by: EndedBy::Callee,
            });
        }
    }

    /// Answers the call now: an SDP answer to the offer, or 488 when there is none to make.
    fn answer(&mut self, now: Instant, call_id: &str) {
        let rtp_port = self.rtp_port();
        let local = {
            let mut l = LocalMedia::new(self.config.media_ip, rtp_port);
            l.codecs = self.config.codecs.clone();
            l
        };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let answered = std::str::from_utf8(&call.invite.body)
            .ok()
            .and_then(|s| SessionDescription::parse(s).ok())
            .and_then(|offer| answer_offer(&offer, &local, None, u64::from(rtp_port), 1).ok());
        let Some((sdp, session)) = answered else {
            let refused = self.response_for(call_id, 488);
            if let Some(mut call) = self.calls.remove(call_id) {
                call.tx.on_send_response(now, 488);
                self.transmits.push_back((call.source, refused));
            }
            self.events.push_back(CalleeEvent::Ended {
                call_id: call_id.to_owned(),
                by: EndedBy::Callee,
            });
            return;
        };
        let answer_sdp = sdp.to_string();
        let ok = {
            let (invite, tag) = (call.invite.clone(), call.local_tag.clone());
            self.response(&invite, 200, &tag, Some(&answer_sdp))
        };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.tx.on_send_response(now, 200);
        call.rtp_port = rtp_port;
        call.answer_sdp = answer_sdp;
        call.last_response = ok.clone();
        let t1 = self.config.timers.t1;
        call.phase = Phase::Accepted {
            retransmit_at: now + t1,
            interval: t1,
            give_up_at: now + self.config.timers.sixty_four_t1(),
        };
        let source = call.source;
        self.events.push_back(CalleeEvent::Answering {
            call_id: call_id.to_owned(),
            rtp_port,
            session: Box::new(session),
        });
        self.transmits.push_back((source, ok));
    }

    fn response_for(&self, call_id: &str, code: u16) -> Vec<u8> {
        self.calls
            .get(call_id)
            .map(|c| self.response(&c.invite, code, &c.local_tag, None))
            .unwrap_or_default()
    }

    /// Our BYE for an answered call.
    fn bye(&mut self, now: Instant, call_id: &str) {
        let branch = self.unique("z9hG4bKsim");
        let addr = self.config.sip_addr;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let h = &call.invite.headers;
        let target = first(h, "Contact")
            .map(|c| uri_of(&c).to_owned())
            .unwrap_or_else(|| format!("sip:{}", call.source));
        let to = first(h, "From").unwrap_or_default();
        let from = with_tag(&first(h, "To").unwrap_or_default(), &call.local_tag);
        call.bye = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes();
        let t1 = self.config.timers.t1;
        call.phase = Phase::Leaving {
            retransmit_at: now + t1,
            interval: t1,
            give_up_at: now + self.config.timers.sixty_four_t1(),
        };
        self.transmits.push_back((call.source, call.bye.clone()));
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t2 = self.config.timers.t2;
        let mut answer = Vec::new();
        let mut hang_up = Vec::new();
        let mut gone = Vec::new();
        for (id, call) in &mut self.calls {
            while call.tx.poll_timeout().is_some_and(|t| t <= now) {
                if let Some(TimerAction::Retransmit) = call.tx.on_timeout(now) {
                    self.transmits
                        .push_back((call.source, call.last_response.clone()));
                }
            }
            match &mut call.phase {
                Phase::Ringing {
                    answer_at: Some(at),
                } if *at <= now => answer.push(id.clone()),
                Phase::Accepted {
                    retransmit_at,
                    interval,
                    give_up_at,
                }
                | Phase::Leaving {
                    retransmit_at,
                    interval,
                    give_up_at,
                } => {
                    if *give_up_at <= now {
                        gone.push(id.clone());
                    } else if *retransmit_at <= now {
                        *interval = (*interval * 2).min(t2);
                        *retransmit_at = now + *interval;
                        let again = if call.bye.is_empty() {
                            call.last_response.clone()
                        } else {
                            call.bye.clone()
                        };
                        self.transmits.push_back((call.source, again));
                    }
                }
                Phase::Confirmed { bye_at: Some(at) } if *at <= now => hang_up.push(id.clone()),
                _ => {}
            }
        }
        for id in answer {
            self.answer(now, &id);
        }
        for id in hang_up {
            self.bye(now, &id);
        }
        for id in gone {
            self.calls.remove(&id);
            self.events.push_back(CalleeEvent::Ended {
                call_id: id,
                by: EndedBy::Timeout,
            });
        }
    }

    /// When [`Callee::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .flat_map(|c| {
                let phase = match &c.phase {
                    Phase::Ringing { answer_at } => *answer_at,
                    Phase::Accepted {
                        retransmit_at,
                        give_up_at,
                        ..
                    }
                    | Phase::Leaving {
                        retransmit_at,
                        give_up_at,
                        ..
                    } => Some((*retransmit_at).min(*give_up_at)),
                    Phase::Confirmed { bye_at } => *bye_at,
                };
                [phase, c.tx.poll_timeout()]
            })
            .flatten()
            .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<CalleeEvent> {
        self.events.pop_front()
    }
}

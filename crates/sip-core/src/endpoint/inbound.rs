//! Calls the far end places to us (RFC 3261 §13.3): a new INVITE outside any dialog, when the
//! endpoint takes inbound calls ([`EndpointConfig::accept_inbound`]), is answered `100 Trying`
//! at once and reported as [`CallEvent::Incoming`]; its owner then rings
//! ([`Endpoint::ring`]: `180`), answers ([`Endpoint::accept`]: `200` with our SDP and Contact)
//! or refuses it ([`Endpoint::refuse`]). The INVITE server transaction (§17.2.1) resends the
//! last response to a retransmitted INVITE and retransmits the `2xx` on the Timer G schedule
//! until the ACK arrives (§13.3.1.4); the ACK confirms the call ([`CallEvent::Answered`]); no
//! ACK within 64·T1 ends it with a BYE and `trunk_timeout` (the caller's side timed out). A
//! CANCEL before the answer gets `200`, the INVITE `487`, and the call fails as `canceled`; so
//! does a BYE on the early dialog (§15, §15.1.2).
//! After the answer the call is an ordinary dialog: BYE, re-INVITE, UPDATE and INFO either way
//! go through the same code as an outbound call's.
//!
//! Refusals are budgeted per source address ([`RefusalLimiter`]): each new INVITE takes a
//! token from its source, given back when the call is rung, answered, or refused for another
//! cause than `403`/`404`; a source whose budget is spent is no longer answered — its new
//! INVITEs, and whatever else it sends outside a dialog but OPTIONS (a BYE or INFO with a
//! made-up Call-ID would get `481`, an unknown method `405`: answers a spoofed source could
//! have reflected), are dropped, counted in [`EndpointStats::inbound_dropped`], and summarised
//! in the log at most once per period. Its dialogs, and OPTIONS probes, are answered as
//! before.
//!
//! [`EndpointConfig::accept_inbound`]: super::EndpointConfig::accept_inbound
//! [`EndpointStats::inbound_dropped`]: super::EndpointStats::inbound_dropped
//! [`RefusalLimiter`]: crate::refusals::RefusalLimiter

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::call::{Call, Dialog, Phase};
use super::transactions::{Purpose, ServerKey};
use super::{CallEvent, CallHandle, Endpoint, Transport};
use crate::Error;
use crate::end_reason::EndReason;
use crate::fields::NameAddr;
use crate::message;
use crate::uri::Uri;
use crate::validate::ALLOWED_METHODS;

/// A call the far end places to us, as its INVITE tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// On which transport.
    pub transport: Transport,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// The user part of the Request-URI (the number called), or a `tel:` URI's number.
    pub request_user: Option<String>,
    /// The user part of the To URI.
    pub to_user: Option<String>,
    /// The user part of the From URI (the caller, as the caller says).
    pub from_user: Option<String>,
    /// The user part of `P-Asserted-Identity` (the caller, as the trunk asserts, RFC 3325).
    pub asserted_user: Option<String>,
    /// The SDP offer, when the INVITE carries one.
    pub sdp: Option<Vec<u8>>,
}

/// The state of an incoming call until its answer is acknowledged.
#[derive(Debug, Clone)]
pub(super) struct Inbound {
    /// The INVITE's server transaction.
    invite: ServerKey,
    /// Where it came from: refusals are charged there.
    source: IpAddr,
    /// Our 2xx went out; the ACK is awaited.
    answered: bool,
    /// We hung up before the ACK came: the BYE waits for it, or for the INVITE's transaction to
    /// time out (RFC 3261 §15: the callee's UA must not send BYE on a confirmed dialog before
    /// either).
    bye_deferred: bool,
    /// The INVITE's token of the source's budget is still taken.
    charged: bool,
}

/// The user part of a SIP URI, or the number of a `tel:` URI.
fn user_of(uri: &Uri) -> Option<String> {
    match uri {
        Uri::Sip(sip) => sip.user.clone(),
        Uri::Tel(tel) => Some(tel.number.clone()),
        Uri::Other { .. } => None,
    }
}

/// The user part of the URI in header `name` (a name-addr).
fn header_user(headers: &rsip::Headers, name: &str) -> Option<String> {
    let value = message::first(headers, name)?;
    let first = message::split_top_level(&value).into_iter().next()?;
    user_of(&NameAddr::parse(&first)?.uri)
}

/// A From or To value without its `tag` parameter.
fn without_tag(value: &str) -> Option<String> {
    let mut name_addr = NameAddr::parse(value)?;
    name_addr
        .params
        .retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    Some(name_addr.to_string())
}

impl Endpoint {
    /// Whether a request from `source` is dropped unanswered: the endpoint takes inbound calls,
    /// the source has spent its budget of refusals, and the request is a new INVITE or anything
    /// but OPTIONS outside a dialog (ACK and CANCEL are not asked here).
    pub(super) fn drops_from_spent_source(
        &mut self,
        now: Instant,
        source: SocketAddr,
        req: &rsip::Request,
    ) -> bool {
        if !self.config.accept_inbound
            || req.method == Method::Options
            || self.refusals.allows(now, source.ip())
        {
            return false;
        }
        let new_invite = req.method == Method::Invite && message::to_tag(&req.headers).is_none();
        if !new_invite && self.find_dialog(req).is_some() {
            return false;
        }
        self.stats.inbound_dropped += 1;
        if let Some(summary) = self.refusals.drop_from(now, source.ip()) {
            tracing::warn!(
                dropped = summary.dropped,
                sources = summary.sources,
                example = %summary.example,
                "inbound INVITEs dropped: their sources were refused too often"
            );
        }
        true
    }

    /// A new INVITE outside any dialog, its server transaction `key` just made: a new
    /// incoming call, answered `100 Trying` and reported; `false` when the endpoint takes no
    /// inbound calls (the caller answers `480`).
    pub(super) fn on_incoming_invite(
        &mut self,
        now: Instant,
        key: &ServerKey,
        destination: SocketAddr,
        transport: Transport,
    ) -> bool {
        if !self.config.accept_inbound {
            return false;
        }
        // The INVITE takes a token of its source's budget; a malformed one keeps it.
        self.refusals.charge(now, destination.ip());
        let Some(req) = self.server_txs.get(key).map(|t| t.request.clone()) else {
            return true;
        };
        let headers = &req.headers;
        let (Some(call_id), Some(from), Some(to)) = (
            message::call_id(headers),
            message::first(headers, "From").and_then(|f| without_tag(&f)),
            message::first(headers, "To").and_then(|t| without_tag(&t)),
        ) else {
            self.respond(now, key, 400, Vec::new(), None);
            return true;
        };
        let Some(contact) = message::contact_uri(headers) else {
            // An INVITE must carry a Contact (RFC 3261 §8.1.1.8).
            self.respond(now, key, 400, Vec::new(), None);
            return true;
        };
        if self.calls_by_id.contains_key(&call_id) {
            // The same Call-ID on another branch: a merged or looped request (§8.2.2.2).
            self.respond(now, key, 482, Vec::new(), None);
            return true;
        }
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        let local_tag = self.ids.tag();
        let mut call = Call::calling(
            call_id.clone(),
            local_tag.clone(),
            format!("{to};tag={local_tag}"),
            from,
            req.uri.clone(),
            destination,
            transport,
        );
        call.phase = Phase::Early;
        call.got_provisional = true;
        call.dialog = Some(Dialog {
            remote_tag: message::from_tag(headers).unwrap_or_default(),
            remote_target: contact,
            // The UAS keeps the Record-Route order (§12.1.1).
            route_set: message::record_route(headers),
            remote_cseq: message::cseq(headers).map(|c| c.0),
        });
        self.calls.insert(handle, call);
        self.calls_by_id.insert(call_id.clone(), handle);
        if let Some(tx) = self.server_txs.get_mut(key) {
            tx.call = Some(handle);
            *self.call_txs.entry(handle).or_default() += 1;
        }
        self.inbound.insert(
            handle,
            Inbound {
                invite: key.clone(),
                source: destination.ip(),
                answered: false,
                bye_deferred: false,
                charged: true,
            },
        );
        self.respond(now, key, 100, Vec::new(), None);
        let request_user = Uri::parse(&req.uri.to_string()).and_then(|u| user_of(&u));
        let incoming = IncomingCall {
            source: destination,
            transport,
            sip_call_id: call_id,
            request_user,
            to_user: header_user(headers, "To"),
            from_user: header_user(headers, "From"),
            asserted_user: header_user(headers, "P-Asserted-Identity"),
            sdp: (!req.body.is_empty()).then(|| req.body.clone()),
        };
        self.emit(handle, CallEvent::Incoming(Box::new(incoming)));
        true
    }

    /// The INVITE transaction of an incoming call not yet answered.
    fn unanswered(&self, handle: CallHandle) -> Result<ServerKey, Error> {
        match self.inbound.get(&handle) {
            Some(i) if !i.answered => Ok(i.invite.clone()),
            _ => Err(Error::InvalidCallState {
                call: handle,
                action: "answer an incoming call",
            }),
        }
    }

    /// Gives the source back the token the call's INVITE took: it is no refusal for cause.
    fn refund(&mut self, now: Instant, handle: CallHandle) {
        if let Some(i) = self.inbound.get_mut(&handle)
            && i.charged
        {
            i.charged = false;
            let source = i.source;
            self.refusals.refund(now, source);
        }
    }

    /// The INVITE's Record-Route headers, in order: a response that sets up the dialog carries
    /// them back (RFC 3261 §12.1.1), so the caller's ACK and BYE go through the same proxies.
    fn record_route_of(&self, key: &ServerKey) -> Vec<Header> {
        self.server_txs
            .get(key)
            .map(|t| {
                t.request
                    .headers
                    .iter()
                    .filter(|h| matches!(h, Header::RecordRoute(_)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `180 Ringing` for an incoming call.
    pub fn ring(&mut self, now: Instant, handle: CallHandle) -> Result<(), Error> {
        let key = self.unanswered(handle)?;
        self.refund(now, handle);
        let mut extra = vec![self.contact(key_transport(self, &key))];
        extra.extend(self.record_route_of(&key));
        self.respond(now, &key, 180, extra, None);
        self.settle();
        Ok(())
    }

    /// Answers an incoming call: `200 OK` with `sdp`, retransmitted until the ACK, which
    /// reports [`CallEvent::Answered`].
    pub fn accept(&mut self, now: Instant, handle: CallHandle, sdp: Vec<u8>) -> Result<(), Error> {
        let key = self.unanswered(handle)?;
        self.refund(now, handle);
        let mut extra = vec![
            self.contact(key_transport(self, &key)),
            Header::Allow(rsip::headers::Allow::new(ALLOWED_METHODS)),
        ];
        extra.extend(self.record_route_of(&key));
        extra.extend(self.session_headers(handle));
        self.respond(now, &key, 200, extra, Some(("application/sdp", sdp)));
        if let Some(i) = self.inbound.get_mut(&handle) {
            i.answered = true;
        }
        if let Some(c) = self.calls.get_mut(&handle) {
            // The UAS's dialog is confirmed once its 2xx is sent (§12.1.1).
            c.phase = Phase::Confirmed;
        }
        self.server_ack_wait.insert(handle, key);
        self.settle();
        Ok(())
    }

    /// Refuses an incoming call with `status` (a final non-2xx, clamped to 300–699); the call
    /// fails with that status. When `charged` (the source is not trusted for the call: the
    /// caller decides) the token its INVITE took from the source's budget is kept; otherwise it
    /// is given back.
    pub fn refuse(
        &mut self,
        now: Instant,
        handle: CallHandle,
        status: u16,
        charged: bool,
    ) -> Result<(), Error> {
        let key = self.unanswered(handle)?;
        let status = status.clamp(300, 699);
        self.respond(now, &key, status, Vec::new(), None);
        if !charged {
            self.refund(now, handle);
        }
        if self.inbound.remove(&handle).is_some() {
            self.stats.inbound_refused += 1;
        }
        self.fail_incoming(handle, Some(status), EndReason::from_status(status));
        self.settle();
        Ok(())
    }

    /// Whether `handle` is an incoming call not yet answered (a hang-up refuses it).
    pub(super) fn is_unanswered_incoming(&self, handle: CallHandle) -> bool {
        self.inbound.get(&handle).is_some_and(|i| !i.answered)
    }

    fn fail_incoming(&mut self, handle: CallHandle, status: Option<u16>, reason: EndReason) {
        if let Some(c) = self.calls.get_mut(&handle)
            && c.phase != Phase::Terminated
        {
            c.phase = Phase::Terminated;
            self.emit(handle, CallEvent::Failed { status, reason });
        }
    }

    /// The ACK for our 2xx arrived: the incoming call is answered (unless it is already being
    /// hung up).
    pub(super) fn on_inbound_ack(&mut self, now: Instant, handle: CallHandle) {
        if let Some(inbound) = self.take_answered(handle) {
            if inbound.bye_deferred {
                if self.phase_is(handle, Phase::Ending) {
                    self.send_in_dialog(now, handle, None, Method::Bye, Purpose::Bye, None);
                }
            } else if self.phase_is(handle, Phase::Confirmed) {
                self.emit(handle, CallEvent::Answered { sdp: None });
            }
        }
    }

    /// The incoming call's state while its 2xx awaits the ACK, taken: the wait is over.
    fn take_answered(&mut self, handle: CallHandle) -> Option<Inbound> {
        if self.inbound.get(&handle).is_some_and(|i| i.answered) {
            self.inbound.remove(&handle)
        } else {
            None
        }
    }

    /// We hang up an answered incoming call: `true` when its ACK has not come yet, and the BYE
    /// now waits for it ([`Inbound::bye_deferred`]).
    pub(super) fn defer_bye_until_ack(&mut self, handle: CallHandle) -> bool {
        match self.inbound.get_mut(&handle) {
            Some(inbound) if inbound.answered => {
                inbound.bye_deferred = true;
                true
            }
            _ => false,
        }
    }

    fn phase_is(&self, handle: CallHandle, phase: Phase) -> bool {
        self.calls.get(&handle).is_some_and(|c| c.phase == phase)
    }

    /// A CANCEL ended the INVITE with 487 before the answer.
    pub(super) fn on_inbound_canceled(&mut self, handle: CallHandle) {
        if self.is_unanswered_incoming(handle) {
            // A token the INVITE still holds (not rung yet) stays spent: INVITE-then-CANCEL
            // makes the engine look the call up, and must not be free.
            self.inbound.remove(&handle);
            self.fail_incoming(handle, Some(487), EndReason::Canceled);
        }
    }

    /// The caller sent BYE on the early dialog of a call we have not answered (RFC 3261 §15:
    /// a caller may; §15.1.2: pending requests get `487`): it acts as a CANCEL — the INVITE is
    /// answered `487` and the call fails as `canceled`. `false` when the call is not an
    /// unanswered incoming one (the BYE is then an ordinary hang-up).
    pub(super) fn on_inbound_early_bye(&mut self, now: Instant, handle: CallHandle) -> bool {
        let Some(invite) = self
            .inbound
            .get(&handle)
            .filter(|i| !i.answered)
            .map(|i| i.invite.clone())
        else {
            return false;
        };
        self.respond(now, &invite, 487, Vec::new(), None);
        self.on_inbound_canceled(handle);
        true
    }

    /// The INVITE's server transaction timed out: for an answered call, no ACK came within
    /// 64·T1 (§13.3.1.4): the dialog is released with a BYE and the call fails.
    pub(super) fn on_inbound_timeout(&mut self, now: Instant, handle: CallHandle) {
        let Some(inbound) = self.take_answered(handle) else {
            return;
        };
        if inbound.bye_deferred {
            // We hung up meanwhile (and the caller did not): the BYE goes now, and its answer
            // ends the call.
            if self.phase_is(handle, Phase::Ending) {
                self.send_in_dialog(now, handle, None, Method::Bye, Purpose::Bye, None);
            }
            return;
        }
        if !self.phase_is(handle, Phase::Confirmed) {
            // Hung up already, by either side.
            return;
        }
        tracing::info!(call = %handle, "no ACK for our 2xx; releasing the call");
        self.send_in_dialog(now, handle, None, Method::Bye, Purpose::ReleaseBye, None);
        self.fail_incoming(handle, None, EndReason::TrunkTimeout);
    }
}

/// The transport an INVITE came on.
fn key_transport(endpoint: &Endpoint, key: &ServerKey) -> Transport {
    endpoint
        .server_txs
        .get(key)
        .map_or(Transport::Udp, |t| t.transport)
}

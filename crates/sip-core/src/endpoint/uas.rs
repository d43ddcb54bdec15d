//! Requests the peer sends (§12.2.2): in-dialog BYE, INFO and OPTIONS, re-INVITE and UPDATE
//! offers, CANCEL, out-of-dialog requests we refuse, and our responses.

use std::net::SocketAddr;
use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::call::{Phase, body_of};
use super::timers::TimerKey;
use super::transactions::{ServerKey, ServerMachine};
use super::{CallEvent, CallHandle, Endpoint, Party, Transport};
use crate::Error;
use crate::end_reason::EndReason;
use crate::message::{self, response_to};
use crate::session_timer::{self, SessionTimer};
use crate::transaction::InviteServerState;
use crate::validate::{ALLOWED_METHODS, standard_reason};

/// The one body type the core reads and writes.
const SDP: &str = "application/sdp";

/// RFC 3261 §8.2.3 for the requests that carry an offer or an answer (INVITE, UPDATE): a body
/// that is not SDP gets `415`, and an Accept that rules SDP out gets `406`, since every answer
/// we could give would carry SDP (RFC 4475 §3.3.6, §3.3.15). Both list SDP in Accept.
fn media_refusal(
    method: Method,
    content_type: Option<&str>,
    accept: Option<&str>,
    body: &[u8],
) -> Option<u16> {
    if !matches!(method, Method::Invite | Method::Update) {
        return None;
    }
    if !body.is_empty() && content_type.is_none_or(|t| message::header_token(t) != SDP) {
        return Some(415);
    }
    let accepts_sdp = |list: &str| {
        list.split(',')
            .map(message::header_token)
            .any(|m| m == SDP || m == "application/*" || m == "*/*")
    };
    match accept {
        Some(list) if !list.trim().is_empty() && !accepts_sdp(list) => Some(406),
        _ => None,
    }
}

impl Endpoint {
    /// Answers the pending re-INVITE or UPDATE offer with `200 OK` carrying `sdp`.
    pub fn answer_offer(
        &mut self,
        now: Instant,
        handle: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), Error> {
        let key = self
            .calls
            .get_mut(&handle)
            .ok_or(Error::UnknownCall { call: handle })?
            .pending_offer
            .take()
            .ok_or(Error::NoPendingOffer { call: handle })?;
        let transport = self
            .server_txs
            .get(&key)
            .map_or(Transport::Udp, |t| t.transport);
        let mut extra = vec![self.contact(transport)];
        extra.extend(self.session_headers(handle));
        let is_invite = key.method == "INVITE";
        self.respond(now, &key, 200, extra, Some(("application/sdp", sdp)));
        if is_invite {
            // Kept so the dialog-level ACK can stop the 2xx retransmissions.
            self.server_ack_wait.insert(handle, key);
        }
        self.settle();
        Ok(())
    }

    /// Refuses the pending re-INVITE or UPDATE offer (e.g. 488 Not Acceptable Here).
    pub fn reject_offer(
        &mut self,
        now: Instant,
        handle: CallHandle,
        status: u16,
    ) -> Result<(), Error> {
        let key = self
            .calls
            .get_mut(&handle)
            .ok_or(Error::UnknownCall { call: handle })?
            .pending_offer
            .take()
            .ok_or(Error::NoPendingOffer { call: handle })?;
        self.respond(now, &key, status.clamp(300, 699), Vec::new(), None);
        self.settle();
        Ok(())
    }

    pub(super) fn on_new_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        destination: SocketAddr,
        transport: Transport,
        req: rsip::Request,
    ) {
        let call = self.find_dialog(&req);
        let has_to_tag = message::to_tag(&req.headers).is_some();
        let method = req.method;
        let cseq = message::cseq(&req.headers).map_or(0, |c| c.0);
        let content_type = message::first(&req.headers, "Content-Type");
        let accept = message::first(&req.headers, "Accept");
        let body = req.body.clone();
        let contact = message::contact_uri(&req.headers);
        let session_expires = message::first(&req.headers, "Session-Expires")
            .and_then(|v| session_timer::parse_session_expires(&v));
        self.new_server_tx(&key, destination, transport, req, call);
        if let Some(code) = media_refusal(method, content_type.as_deref(), accept.as_deref(), &body)
        {
            let accept = Header::Other("Accept".into(), SDP.into());
            self.respond(now, &key, code, vec![accept], None);
            return;
        }
        let Some(handle) = call else {
            if method == Method::Invite
                && !has_to_tag
                && self.on_incoming_invite(now, &key, destination, transport)
            {
                return;
            }
            let code = match method {
                _ if has_to_tag => 481,
                Method::Options if self.available => 200,
                Method::Options => 503,
                Method::Invite => 480,
                Method::Bye | Method::Info | Method::Update | Method::PRack | Method::Notify => 481,
                _ => 405,
            };
            let extra = if matches!(code, 200 | 405) {
                vec![Header::Allow(rsip::headers::Allow::new(ALLOWED_METHODS))]
            } else {
                Vec::new()
            };
            self.respond(now, &key, code, extra, None);
            return;
        };
        // Remote CSeq must increase within a dialog (§12.2.2).
        let in_order = self
            .calls
            .get_mut(&handle)
            .and_then(|c| c.dialog.as_mut())
            .map(|d| {
                let ok = d.remote_cseq.is_none_or(|r| cseq > r);
                if ok {
                    d.remote_cseq = Some(cseq);
                }
                ok
            })
            .unwrap_or(true);
        if !in_order {
            self.respond(now, &key, 500, Vec::new(), None);
            return;
        }
        match method {
            Method::Bye => {
                self.respond(now, &key, 200, Vec::new(), None);
                if !self.on_inbound_early_bye(now, handle) {
                    self.end_by_remote(handle);
                }
            }
            Method::Options => {
                let allow = Header::Allow(rsip::headers::Allow::new(ALLOWED_METHODS));
                self.respond(now, &key, 200, vec![allow], None);
            }
            Method::Info => {
                self.respond(now, &key, 200, Vec::new(), None);
                self.emit(handle, CallEvent::Info { content_type, body });
            }
            Method::Invite | Method::Update => {
                let busy = self
                    .calls
                    .get(&handle)
                    .is_some_and(|c| c.pending_offer.is_some() || c.outgoing_reinvite);
                if busy {
                    self.respond(now, &key, 491, Vec::new(), None);
                    return;
                }
                if let Some((seconds, refresher)) = session_expires
                    && let Some(c) = self.calls.get_mut(&handle)
                {
                    // The peer sent this request: refresher=uas means we refresh.
                    let we_refresh = refresher == Some(session_timer::Refresher::Uas);
                    c.session_timer = Some(SessionTimer::start(now, seconds, we_refresh));
                    self.touched.push(TimerKey::Call(handle));
                }
                if method == Method::Update && body.is_empty() {
                    let mut extra = vec![self.contact(transport)];
                    extra.extend(self.session_headers(handle));
                    self.respond(now, &key, 200, extra, None);
                    return;
                }
                if let Some(c) = self.calls.get_mut(&handle) {
                    if let (Some(d), Some(target)) = (c.dialog.as_mut(), contact) {
                        d.remote_target = target;
                    }
                    c.pending_offer = Some(key);
                }
                self.emit(
                    handle,
                    CallEvent::RemoteOffer {
                        method,
                        sdp: body_of(&body),
                    },
                );
            }
            Method::Notify => self.on_notify(now, &key, handle),
            _ => {
                let allow = Header::Allow(rsip::headers::Allow::new(ALLOWED_METHODS));
                self.respond(now, &key, 405, vec![allow], None);
            }
        }
    }

    /// The confirmed or early dialog a request belongs to (§12.2.2).
    pub(super) fn find_dialog(&self, req: &rsip::Request) -> Option<CallHandle> {
        let call_id = message::call_id(&req.headers)?;
        let handle = *self.calls_by_id.get(&call_id)?;
        let call = self.calls.get(&handle)?;
        let to_tag = message::to_tag(&req.headers)?;
        let from_tag = message::from_tag(&req.headers).unwrap_or_default();
        let matches = to_tag == call.local_tag
            && (call.dialog.iter().any(|d| d.remote_tag == from_tag)
                || call.early.iter().any(|d| d.remote_tag == from_tag));
        (matches && call.phase != Phase::Terminated).then_some(handle)
    }

    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        key: ServerKey,
        destination: SocketAddr,
        transport: Transport,
        req: rsip::Request,
    ) {
        let invite_key = ServerKey {
            method: "INVITE".into(),
            ..key.clone()
        };
        let invite = self.server_txs.get(&invite_key).map(|t| {
            let proceeding = matches!(&t.machine, ServerMachine::Invite(m) if m.state() == InviteServerState::Proceeding);
            (proceeding, t.call)
        });
        self.new_server_tx(&key, destination, transport, req, invite.and_then(|i| i.1));
        match invite {
            None => self.respond(now, &key, 481, Vec::new(), None),
            Some((proceeding, call)) => {
                self.respond(now, &key, 200, Vec::new(), None);
                if proceeding {
                    self.respond(now, &invite_key, 487, Vec::new(), None);
                    if let Some(c) = call.and_then(|h| self.calls.get_mut(&h))
                        && c.pending_offer.as_ref() == Some(&invite_key)
                    {
                        c.pending_offer = None;
                    }
                    if let Some(handle) = call {
                        self.on_inbound_canceled(handle);
                    }
                }
            }
        }
    }

    pub(super) fn on_ack_for_success(&mut self, now: Instant, req: &rsip::Request) {
        let Some(handle) = self.find_dialog(req) else {
            return;
        };
        if let Some(key) = self.server_ack_wait.remove(&handle)
            && let Some(ServerMachine::Invite(m)) =
                self.server_txs.get_mut(&key).map(|t| &mut t.machine)
        {
            m.on_request(now, true);
            self.touched.push(TimerKey::Server(key));
        }
        self.on_inbound_ack(now, handle);
    }

    fn end_by_remote(&mut self, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let was = call.phase;
        call.phase = Phase::Terminated;
        match was {
            Phase::Confirmed | Phase::Ending => self.emit(
                handle,
                CallEvent::Ended {
                    by: Party::Remote,
                    reason: EndReason::Completed,
                },
            ),
            Phase::Calling | Phase::Early => self.emit(
                handle,
                CallEvent::Failed {
                    status: None,
                    reason: EndReason::Rejected,
                },
            ),
            Phase::Terminated => {}
        }
    }

    /// Sends a response on server transaction `key` and records it for retransmission.
    pub(super) fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        code: u16,
        extra: Vec<Header>,
        body: Option<(&str, Vec<u8>)>,
    ) {
        let local_tag = self
            .server_txs
            .get(key)
            .and_then(|t| t.call)
            .and_then(|h| self.calls.get(&h))
            .map_or_else(|| self.reject_tag.clone(), |c| c.local_tag.clone());
        let user_agent = self.config.user_agent.clone();
        let Some(tx) = self.server_txs.get_mut(key) else {
            return;
        };
        let mut extra = extra;
        extra.push(Header::Server(rsip::headers::Server::new(user_agent)));
        let response = response_to(
            &tx.request,
            code,
            standard_reason(code),
            &local_tag,
            extra,
            body,
        );
        let bytes = response.to_string().into_bytes();
        tx.machine.on_send_response(now, code);
        tx.last_response = Some(bytes.clone());
        let (destination, transport) = (tx.destination, tx.transport);
        self.touched.push(TimerKey::Server(key.clone()));
        self.send(destination, transport, bytes);
    }
}

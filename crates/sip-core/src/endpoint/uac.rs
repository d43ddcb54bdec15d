//! Placing a call (RFC 3261 §13.2): the INVITE, its provisional and final responses, digest
//! retries, the 2xx ACK, extra forks, CANCEL (§9.1) and hanging up.

use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::call::{Call, CancelState, Dialog, Phase, body_of, dialog_from_response, next_hop};
use super::timers::TimerKey;
use super::transactions::{ClientKey, ClientMachine, ClientTx, Owner, Purpose};
use super::{CallEvent, CallHandle, Endpoint, OutboundCall};
use crate::auth::AuthSession;
use crate::end_reason::EndReason;
use crate::message::{self, request};
use crate::session_timer::{self, SessionTimer};
use crate::transaction::InviteClientTx;
use crate::validate::ALLOWED_METHODS;
use crate::{Error, scan};

impl Endpoint {
    /// Places a call: builds and sends the INVITE, starts its transaction.
    pub fn dial(&mut self, now: Instant, call: OutboundCall) -> Result<CallHandle, Error> {
        let invalid_uri = || Error::InvalidUri {
            field: "request_uri",
            value: call.request_uri.clone(),
        };
        let scheme_ok = ["sip:", "sips:", "tel:"].iter().any(|s| {
            call.request_uri
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        if !scheme_ok || call.request_uri.contains(char::is_whitespace) {
            return Err(invalid_uri());
        }
        let request_uri =
            rsip::Uri::try_from(call.request_uri.as_str()).map_err(|_| invalid_uri())?;
        for (field, value) in [("from", &call.from), ("to", &call.to)] {
            if message::uri_of_name_addr(value).is_none() || value.contains(['\r', '\n']) {
                return Err(Error::InvalidUri {
                    field,
                    value: value.clone(),
                });
            }
        }
        for route in &call.route {
            if message::uri_of_name_addr(route).is_none() || route.contains(['\r', '\n']) {
                return Err(Error::InvalidUri {
                    field: "route",
                    value: route.clone(),
                });
            }
        }
        for (name, value) in &call.extra_headers {
            if !scan::is_token(name) || value.contains(['\r', '\n']) {
                return Err(Error::InvalidHeader { name: name.clone() });
            }
        }
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        let local_tag = self.ids.tag();
        let call_id = self.ids.call_id();
        let from = format!("{};tag={local_tag}", call.from);
        let state = Call {
            route: call.route,
            extra_headers: call.extra_headers,
            sdp_offer: call.sdp_offer,
            auth: AuthSession::new(call.credentials),
            ..Call::calling(
                call_id.clone(),
                local_tag,
                from,
                call.to,
                request_uri,
                call.destination,
                call.transport,
            )
        };
        self.calls.insert(handle, state);
        self.calls_by_id.insert(call_id, handle);
        self.send_initial_invite(now, handle);
        self.settle();
        Ok(handle)
    }

    /// The authorization header for `method` to `uri` if the call holds a challenge.
    pub(super) fn authorization(
        &mut self,
        handle: CallHandle,
        method: Method,
        uri: &str,
    ) -> Option<Header> {
        let cnonce = self.ids.cnonce();
        self.calls
            .get_mut(&handle)?
            .auth
            .header(&method, uri, &cnonce)
    }

    fn send_initial_invite(&mut self, now: Instant, handle: CallHandle) {
        let branch = self.ids.branch();
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let uri = call.request_uri.clone();
        let transport = call.transport;
        let cseq = call.next_cseq;
        let mut headers = vec![
            self.via(transport, &branch),
            Header::MaxForwards(rsip::headers::MaxForwards::new("70")),
            Header::From(rsip::headers::From::new(call.from.clone())),
            Header::To(rsip::headers::To::new(call.to.clone())),
            Header::CallId(rsip::headers::CallId::new(call.call_id.clone())),
            Header::CSeq(rsip::headers::CSeq::new(format!("{cseq} INVITE"))),
            self.contact(transport),
        ];
        headers.extend(
            call.route
                .iter()
                .map(|r| Header::Route(rsip::headers::Route::new(r.clone()))),
        );
        headers.push(Header::Allow(rsip::headers::Allow::new(ALLOWED_METHODS)));
        headers.push(Header::Supported(rsip::headers::Supported::new("timer")));
        if let Some(seconds) = call.session_expires_request {
            headers.push(Header::Other("Session-Expires".into(), seconds.to_string()));
            headers.push(Header::Other("Min-SE".into(), seconds.to_string()));
        }
        headers.push(Header::UserAgent(rsip::headers::UserAgent::new(
            self.config.user_agent.clone(),
        )));
        headers.extend(
            call.extra_headers
                .iter()
                .map(|(n, v)| Header::Other(n.clone(), v.clone())),
        );
        let body = call.sdp_offer.clone().map(|sdp| ("application/sdp", sdp));
        let (destination, call_id) = (call.destination, call.call_id.clone());
        let auth = self.authorization(handle, Method::Invite, &uri.to_string());
        let authenticated = auth.is_some();
        headers.extend(auth);
        let invite = request(Method::Invite, uri, headers, body);
        let bytes = invite.to_string().into_bytes();
        tracing::debug!(call = %handle, call_id = %call_id, cseq, "sending INVITE");
        if let Some(call) = self.calls.get_mut(&handle) {
            call.next_cseq += 1;
            call.invite = Some(invite.clone());
        }
        self.insert_client_tx(
            ClientKey {
                branch,
                method: "INVITE".into(),
            },
            ClientTx {
                machine: ClientMachine::Invite(InviteClientTx::new(
                    now,
                    self.config.timers,
                    transport.is_reliable(),
                )),
                owner: Owner::Call(handle),
                purpose: Purpose::Invite,
                request: invite,
                bytes: bytes.clone(),
                destination,
                transport,
                authenticated,
                scheduled: None,
            },
        );
        self.send(destination, transport, bytes);
    }

    /// Hangs up: CANCEL before the answer (deferred until a provisional response, §9.1),
    /// BYE after it. A call cancelled this way fails with [`EndReason::Canceled`].
    pub fn hang_up(&mut self, now: Instant, handle: CallHandle) -> Result<(), Error> {
        self.hang_up_because(now, handle, EndReason::Canceled)
    }

    /// Like [`Endpoint::hang_up`], but a call still being set up fails with `reason`
    /// (e.g. [`EndReason::NoAnswer`] when the ring timeout cancels it).
    pub fn hang_up_because(
        &mut self,
        now: Instant,
        handle: CallHandle,
        reason: EndReason,
    ) -> Result<(), Error> {
        if self.is_unanswered_incoming(handle) {
            // Hanging up a call we have not answered refuses it.
            return self.refuse(now, handle, 480, false);
        }
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(Error::UnknownCall { call: handle })?;
        match (call.phase, call.cancel) {
            (Phase::Calling | Phase::Early, CancelState::NotRequested) => {
                call.cancel_reason = reason;
                if call.got_provisional {
                    self.send_cancel(now, handle);
                    self.settle();
                } else {
                    call.cancel = CancelState::Pending;
                }
                Ok(())
            }
            (Phase::Calling | Phase::Early, _) => Ok(()),
            (Phase::Confirmed, _) => {
                call.phase = Phase::Ending;
                // An incoming call's BYE waits for the ACK of our 2xx (RFC 3261 §15).
                if !self.defer_bye_until_ack(handle) {
                    self.send_in_dialog(now, handle, None, Method::Bye, Purpose::Bye, None);
                }
                self.settle();
                Ok(())
            }
            (Phase::Ending | Phase::Terminated, _) => Err(Error::InvalidCallState {
                call: handle,
                action: "hang up",
            }),
        }
    }

    fn send_cancel(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(invite) = call.invite.clone() else {
            return;
        };
        call.cancel = CancelState::Sent {
            deadline: now + self.config.timers.sixty_four_t1(),
        };
        self.touched.push(TimerKey::Call(handle));
        let (destination, transport) = (call.destination, call.transport);
        let cseq = message::cseq(&invite.headers).map_or(1, |c| c.0);
        let mut headers = Vec::new();
        let mut branch = String::new();
        for h in invite.headers.iter() {
            match h {
                Header::Via(v) if branch.is_empty() => {
                    branch = message::top_via(&invite.headers)
                        .and_then(|v| message::branch(&v))
                        .unwrap_or_default();
                    headers.push(Header::Via(v.clone()));
                }
                Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::MaxForwards(_)
                | Header::Route(_) => headers.push(h.clone()),
                _ => {}
            }
        }
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{cseq} CANCEL"
        ))));
        let cancel = request(Method::Cancel, invite.uri.clone(), headers, None);
        self.start_client_tx(
            now,
            Owner::Call(handle),
            Purpose::Cancel,
            branch,
            cancel,
            (destination, transport),
        );
    }

    pub(super) fn on_invite_provisional(
        &mut self,
        now: Instant,
        handle: CallHandle,
        resp: &rsip::Response,
    ) {
        let code = resp.status_code.code();
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        call.got_provisional = true;
        if code > 100
            && let Some(tag) = message::to_tag(&resp.headers)
        {
            let dialog = dialog_from_response(resp, &call.request_uri);
            match call.early.iter_mut().find(|d| d.remote_tag == tag) {
                Some(existing) => existing.remote_target = dialog.remote_target,
                None => call.early.push(dialog),
            }
            if call.phase == Phase::Calling {
                call.phase = Phase::Early;
            }
        }
        let cancel_pending = call.cancel == CancelState::Pending;
        let event = match (code, body_of(&resp.body)) {
            (100, _) => CallEvent::Trying,
            (status, Some(sdp)) => CallEvent::EarlyMedia { status, sdp },
            (status, None) => CallEvent::Ringing { status },
        };
        self.emit(handle, event);
        if cancel_pending {
            self.send_cancel(now, handle);
        }
    }

    pub(super) fn on_invite_failure(
        &mut self,
        now: Instant,
        handle: CallHandle,
        resp: &rsip::Response,
        authenticated: bool,
    ) {
        let code = resp.status_code.code();
        if self.retry_with_auth(handle, resp, authenticated) {
            self.stats.auth_retries += 1;
            self.send_initial_invite(now, handle);
            return;
        }
        // 422 Session Interval Too Small: retry once with the interval the peer asks for.
        let min_se = message::first(&resp.headers, "Min-SE")
            .and_then(|v| session_timer::parse_session_expires(&v))
            .map(|(s, _)| s);
        if code == 422
            && let Some(min) = min_se
            && let Some(call) = self.calls.get_mut(&handle)
            && call.session_expires_request.is_none_or(|asked| asked < min)
        {
            call.session_expires_request = Some(min);
            self.send_initial_invite(now, handle);
            return;
        }
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let canceled = call.cancel != CancelState::NotRequested;
        call.phase = Phase::Terminated;
        let reason = if canceled && code == 487 {
            call.cancel_reason
        } else {
            EndReason::from_status(code)
        };
        self.emit(
            handle,
            CallEvent::Failed {
                status: Some(code),
                reason,
            },
        );
    }

    /// Decides whether a 401/407 earns another attempt and stores the challenge if so.
    pub(super) fn retry_with_auth(
        &mut self,
        handle: CallHandle,
        resp: &rsip::Response,
        authenticated: bool,
    ) -> bool {
        let max = self.config.max_auth_attempts;
        self.calls.get_mut(&handle).is_some_and(|call| {
            call.cancel == CancelState::NotRequested && call.auth.accept(resp, authenticated, max)
        })
    }

    pub(super) fn on_invite_success(
        &mut self,
        now: Instant,
        handle: CallHandle,
        resp: &rsip::Response,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let dialog = dialog_from_response(resp, &call.request_uri);
        let tag = dialog.remote_tag.clone();
        if let Some((_, ack)) = call.acks.iter().find(|(t, _)| *t == tag) {
            // A retransmitted 2xx: the ACK is sent again by the dialog layer (§13.2.2.4).
            let (d, t, ack) = (call.destination, call.transport, ack.clone());
            self.stats.retransmissions += 1;
            self.send(next_hop(&dialog, d, t), t, ack);
            return;
        }
        let invite_cseq = call
            .invite
            .as_ref()
            .and_then(|i| message::cseq(&i.headers))
            .map_or(1, |c| c.0);
        let first = call.dialog.is_none();
        let canceled = (call.cancel != CancelState::NotRequested).then_some(call.cancel_reason);
        if first {
            call.dialog = Some(dialog.clone());
            call.early.clear();
        }
        self.send_ack_for_success(handle, &dialog, invite_cseq, &tag);
        if !first {
            // Another fork answered too: ACK it and release it (§13.2.2.4).
            self.stats.forks_released += 1;
            self.send_in_dialog(
                now,
                handle,
                Some(&dialog),
                Method::Bye,
                Purpose::ReleaseBye,
                None,
            );
            return;
        }
        if let Some(reason) = canceled {
            // The 2xx crossed our CANCEL: the call was asked to end, so end it now.
            if let Some(c) = self.calls.get_mut(&handle) {
                c.phase = Phase::Terminated;
            }
            self.send_in_dialog(now, handle, None, Method::Bye, Purpose::ReleaseBye, None);
            self.emit(
                handle,
                CallEvent::Failed {
                    status: None,
                    reason,
                },
            );
            return;
        }
        let session = message::first(&resp.headers, "Session-Expires")
            .and_then(|v| session_timer::parse_session_expires(&v));
        let allows_update = message::values(&resp.headers, "Allow").iter().any(|a| {
            a.split(',')
                .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
        });
        if let Some(c) = self.calls.get_mut(&handle) {
            c.phase = Phase::Confirmed;
            c.remote_allows_update = allows_update;
            // We sent the INVITE: refresher=uac (or none given) means we refresh.
            c.session_timer = session.map(|(seconds, refresher)| {
                SessionTimer::start(
                    now,
                    seconds,
                    refresher != Some(session_timer::Refresher::Uas),
                )
            });
            self.touched.push(TimerKey::Call(handle));
        }
        self.emit(
            handle,
            CallEvent::Answered {
                sdp: body_of(&resp.body),
            },
        );
    }

    fn send_ack_for_success(&mut self, handle: CallHandle, dialog: &Dialog, cseq: u32, tag: &str) {
        let branch = self.ids.branch();
        let Some((ack, destination, transport)) =
            self.in_dialog_request(handle, Some(dialog), Method::Ack, cseq, &branch, None)
        else {
            return;
        };
        let bytes = ack.to_string().into_bytes();
        if let Some(call) = self.calls.get_mut(&handle) {
            call.acks.push((tag.to_owned(), bytes.clone()));
        }
        self.send(destination, transport, bytes);
    }
}

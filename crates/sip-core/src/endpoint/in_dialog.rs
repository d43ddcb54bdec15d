//! Requests we send inside an answered call's dialog (§12.2.1): BYE, INFO, OPTIONS, UPDATE,
//! re-INVITE and REFER (its own headers in `refer`), and their final responses.

use std::net::SocketAddr;
use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::call::{Dialog, Phase, next_hop};
use super::transactions::{Owner, Purpose};
use super::{CallEvent, CallHandle, Endpoint, Party, Transport};
use crate::Error;
use crate::message::{self, request};

impl Endpoint {
    /// Sends an in-dialog request (INFO, OPTIONS, UPDATE, or a re-INVITE) on an answered call.
    /// Its final response arrives as [`CallEvent::RequestCompleted`].
    pub fn send_request(
        &mut self,
        now: Instant,
        handle: CallHandle,
        method: Method,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(), Error> {
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(Error::UnknownCall { call: handle })?;
        let allowed = matches!(
            method,
            Method::Info | Method::Options | Method::Update | Method::Invite
        );
        if call.phase != Phase::Confirmed
            || !allowed
            || (method == Method::Invite && call.outgoing_reinvite)
        {
            return Err(Error::InvalidCallState {
                call: handle,
                action: "send an in-dialog request",
            });
        }
        if method == Method::Invite {
            call.outgoing_reinvite = true;
        }
        self.send_in_dialog(now, handle, None, method, Purpose::InDialog, body);
        self.settle();
        Ok(())
    }

    pub(super) fn send_in_dialog(
        &mut self,
        now: Instant,
        handle: CallHandle,
        dialog: Option<&Dialog>,
        method: Method,
        purpose: Purpose,
        body: Option<(&str, Vec<u8>)>,
    ) -> bool {
        let Some(cseq) = self.calls.get_mut(&handle).map(|c| {
            let n = c.next_cseq;
            c.next_cseq += 1;
            n
        }) else {
            return false;
        };
        let branch = self.ids.branch();
        let Some((req, destination, transport)) =
            self.in_dialog_request(handle, dialog, method, cseq, &branch, body)
        else {
            return false;
        };
        self.start_client_tx(
            now,
            Owner::Call(handle),
            purpose,
            branch,
            req,
            (destination, transport),
        );
        true
    }

    /// Builds an in-dialog request (RFC 3261 §12.2.1.1) for the call's confirmed dialog, or
    /// for `dialog` when given (a fork being released).
    pub(super) fn in_dialog_request(
        &mut self,
        handle: CallHandle,
        dialog: Option<&Dialog>,
        method: Method,
        cseq: u32,
        branch: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Option<(rsip::Request, SocketAddr, Transport)> {
        let call = self.calls.get(&handle)?;
        let dialog = dialog.or(call.dialog.as_ref())?.clone();
        let transport = call.transport;
        let destination = next_hop(&dialog, call.destination, transport);
        let mut headers = vec![
            self.via(transport, branch),
            Header::MaxForwards(rsip::headers::MaxForwards::new("70")),
            Header::From(rsip::headers::From::new(call.from.clone())),
            Header::To(rsip::headers::To::new(format!(
                "{};tag={}",
                call.to, dialog.remote_tag
            ))),
            Header::CallId(rsip::headers::CallId::new(call.call_id.clone())),
            Header::CSeq(rsip::headers::CSeq::new(format!("{cseq} {method}"))),
        ];
        headers.extend(
            dialog
                .route_set
                .iter()
                .map(|r| Header::Route(rsip::headers::Route::new(r.clone()))),
        );
        if matches!(method, Method::Invite | Method::Update | Method::Refer) {
            headers.push(self.contact(transport));
        }
        if method == Method::Refer {
            headers.extend(self.refer_headers(handle, cseq));
        }
        if method != Method::Ack {
            headers.push(Header::UserAgent(rsip::headers::UserAgent::new(
                self.config.user_agent.clone(),
            )));
        }
        let uri = dialog.remote_target.clone();
        headers.extend(self.authorization(handle, method, &uri.to_string()));
        Some((request(method, uri, headers, body), destination, transport))
    }

    pub(super) fn on_reinvite_success(
        &mut self,
        handle: CallHandle,
        request: &rsip::Request,
        resp: &rsip::Response,
    ) {
        let cseq = message::cseq(&request.headers).map_or(1, |c| c.0);
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(dialog) = call.dialog.clone() else {
            return;
        };
        let first = call.outgoing_reinvite;
        call.outgoing_reinvite = false;
        let branch = self.ids.branch();
        if let Some((ack, destination, transport)) =
            self.in_dialog_request(handle, Some(&dialog), Method::Ack, cseq, &branch, None)
        {
            self.send(destination, transport, ack.to_string().into_bytes());
        }
        if first {
            self.emit(
                handle,
                CallEvent::RequestCompleted {
                    method: Method::Invite,
                    status: resp.status_code.code(),
                    body: resp.body.clone(),
                },
            );
        }
    }

    pub(super) fn on_in_dialog_final(
        &mut self,
        now: Instant,
        handle: CallHandle,
        request: &rsip::Request,
        resp: &rsip::Response,
        authenticated: bool,
    ) {
        let code = resp.status_code.code();
        let method = request.method;
        if self.retry_with_auth(handle, resp, authenticated) {
            self.stats.auth_retries += 1;
            let purpose = if method == Method::Bye {
                Purpose::Bye
            } else {
                Purpose::InDialog
            };
            let body = message::first(&request.headers, "Content-Type")
                .map(|ct| (ct, request.body.clone()));
            self.send_in_dialog(
                now,
                handle,
                None,
                method,
                purpose,
                body.as_ref().map(|(ct, b)| (ct.as_str(), b.clone())),
            );
            return;
        }
        if method == Method::Bye {
            self.finish_local_hangup(handle);
            return;
        }
        if method == Method::Invite
            && let Some(call) = self.calls.get_mut(&handle)
        {
            call.outgoing_reinvite = false;
        }
        if method == Method::Refer && !self.on_refer_final(handle, request, code) {
            return;
        }
        self.emit(
            handle,
            CallEvent::RequestCompleted {
                method,
                status: code,
                body: resp.body.clone(),
            },
        );
    }

    pub(super) fn finish_local_hangup(&mut self, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.phase == Phase::Ending {
            call.phase = Phase::Terminated;
            let reason = call.bye_reason;
            self.emit(
                handle,
                CallEvent::Ended {
                    by: Party::Local,
                    reason,
                },
            );
        }
    }
}

//! Incoming messages: validated, absorbed by the server transaction they retransmit, or routed
//! to the handler of a new request or of a client transaction's response.

use std::net::SocketAddr;
use std::time::Instant;

use rsip::{Header, Method};

use super::timers::TimerKey;
use super::transactions::{
    ClientKey, ClientMachine, Owner, Purpose, ServerMachine, response_destination, server_key,
};
use super::{Endpoint, Transport, TransportFailure};
use crate::message;
use crate::transaction::{InviteClientVerdict, InviteServerVerdict};
use crate::validate::{self, Inbound};

impl Endpoint {
    /// Feeds one framed message received from `source`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        self.stats.messages_received += 1;
        self.dispatch_message(now, source, transport, bytes);
        self.settle();
    }

    fn dispatch_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        match validate::validate(bytes, &self.reject_tag) {
            Inbound::Request(req) => self.on_request(now, source, transport, req),
            Inbound::Response(resp) => self.on_response(now, resp),
            Inbound::Reject { response, reason } => {
                self.stats.requests_rejected += 1;
                tracing::debug!(?reason, %source, "refusing malformed request");
                if let Some(via) = message::top_via(&response.headers) {
                    let destination = response_destination(&via, source, transport);
                    self.send(destination, transport, response.to_string().into_bytes());
                }
            }
            Inbound::Drop(reason) => {
                self.stats.messages_dropped += 1;
                tracing::debug!(?reason, %source, "dropping unreadable message");
            }
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        req: rsip::Request,
    ) {
        let Some(via) = message::top_via(&req.headers) else {
            self.stats.messages_dropped += 1;
            return;
        };
        let key = server_key(&via, &req);
        let is_ack = req.method == Method::Ack;
        if let Some(tx) = self.server_txs.get_mut(&key) {
            let resend = match &mut tx.machine {
                ServerMachine::Invite(m) => {
                    m.on_request(now, is_ack) == InviteServerVerdict::ResendLastResponse
                }
                ServerMachine::NonInvite(m) => !is_ack && m.on_retransmission(),
            };
            if let (true, Some(bytes)) = (resend, tx.last_response.clone()) {
                let (d, t) = (tx.destination, tx.transport);
                self.stats.retransmissions += 1;
                self.send(d, t, bytes);
            }
            self.touched.push(TimerKey::Server(key));
            return;
        }
        match req.method {
            Method::Ack => self.on_ack_for_success(now, &req),
            Method::Cancel => {
                let destination = response_destination(&via, source, transport);
                self.on_cancel(now, key, destination, transport, req);
            }
            _ if self.drops_from_spent_source(now, source, &req) => {}
            _ => {
                let destination = response_destination(&via, source, transport);
                self.on_new_request(now, key, destination, transport, req);
            }
        }
    }

    fn on_response(&mut self, now: Instant, resp: rsip::Response) {
        let via_count = resp
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .count();
        let key = message::top_via(&resp.headers)
            .and_then(|v| message::branch(&v))
            .zip(message::cseq(&resp.headers))
            .map(|(branch, (_, method))| ClientKey {
                branch,
                method: method.to_string(),
            });
        let Some(key) = key.filter(|_| via_count == 1) else {
            self.stats.stray_responses += 1;
            return;
        };
        let code = resp.status_code.code();
        let Some(tx) = self.client_txs.get_mut(&key) else {
            self.stats.stray_responses += 1;
            return;
        };
        let purpose = tx.purpose;
        let handle = match tx.owner {
            Owner::Call(h) => h,
            Owner::Request(r) => {
                let passed_up = match &mut tx.machine {
                    ClientMachine::NonInvite(m) => m.on_response(now, code),
                    ClientMachine::Invite(_) => false,
                };
                let authenticated = tx.authenticated;
                self.touched.push(TimerKey::Client(key));
                if passed_up && code >= 200 {
                    self.on_standalone_final(now, r, &resp, authenticated);
                }
                return;
            }
        };
        self.touched.push(TimerKey::Client(key.clone()));
        match &mut tx.machine {
            ClientMachine::Invite(m) => match m.on_response(now, code) {
                InviteClientVerdict::Provisional => {
                    if purpose == Purpose::Invite {
                        self.on_invite_provisional(now, handle, &resp);
                    }
                }
                InviteClientVerdict::FinalNon2xx => {
                    let ack = Self::ack_for_non_2xx(&tx.request, &resp);
                    let (d, t) = (tx.destination, tx.transport);
                    m.set_ack(ack.clone());
                    let authenticated = tx.authenticated;
                    let request = tx.request.clone();
                    self.send(d, t, ack);
                    match purpose {
                        Purpose::Invite => {
                            self.on_invite_failure(now, handle, &resp, authenticated)
                        }
                        Purpose::Refresh => self.on_refresh_result(now, handle, &resp),
                        _ => self.on_in_dialog_final(now, handle, &request, &resp, authenticated),
                    }
                }
                InviteClientVerdict::ResendAck => {
                    if let Some(ack) = m.ack().map(<[u8]>::to_vec) {
                        let (d, t) = (tx.destination, tx.transport);
                        self.stats.retransmissions += 1;
                        self.send(d, t, ack);
                    }
                }
                InviteClientVerdict::Success => {
                    let request = tx.request.clone();
                    match purpose {
                        Purpose::Invite => self.on_invite_success(now, handle, &resp),
                        Purpose::Refresh => {
                            self.on_reinvite_success(handle, &request, &resp);
                            self.on_refresh_result(now, handle, &resp);
                        }
                        _ => self.on_reinvite_success(handle, &request, &resp),
                    }
                }
                InviteClientVerdict::Ignore => {}
            },
            ClientMachine::NonInvite(m) => {
                if m.on_response(now, code) && code >= 200 {
                    let authenticated = tx.authenticated;
                    let request = tx.request.clone();
                    match purpose {
                        Purpose::Bye | Purpose::InDialog => {
                            self.on_in_dialog_final(now, handle, &request, &resp, authenticated)
                        }
                        Purpose::Refresh => self.on_refresh_result(now, handle, &resp),
                        Purpose::Cancel
                        | Purpose::ReleaseBye
                        | Purpose::Invite
                        | Purpose::Standalone => {}
                    }
                }
            }
        }
    }

    /// Reports that sending to `destination` failed, and how: every client transaction to it
    /// ends (§17.1.4), failing a call still being set up with the failure's end reason
    /// ([`TransportFailure::end_reason`]) and an out-of-dialog request with 503 (§8.1.3.1).
    pub fn handle_transport_error(&mut self, destination: SocketAddr, failure: TransportFailure) {
        let failed: Vec<ClientKey> = self
            .client_txs
            .iter()
            .filter(|(_, t)| t.destination == destination)
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            self.on_client_timeout(&key, failure.end_reason());
        }
        self.settle();
    }
}

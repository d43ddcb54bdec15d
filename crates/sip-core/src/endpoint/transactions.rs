//! Client and server transactions (RFC 3261 §17): the state machines per kind, their keys
//! (§17.1.3, §17.2.3), what they work for, and starting one.

use std::net::SocketAddr;
use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::timers::TimerKey;
use super::{CallHandle, Endpoint, RequestHandle, Transport};
use crate::ids::MAGIC_COOKIE;
use crate::message::{self, request};
use crate::transaction::{
    InviteClientState, InviteClientTx, InviteServerState, InviteServerTx, NonInviteClientState,
    NonInviteClientTx, NonInviteServerState, NonInviteServerTx, TimerAction,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Invite,
    Cancel,
    Bye,
    /// A BYE that releases a forked or crossed 2xx; its result is not reported.
    ReleaseBye,
    InDialog,
    /// An out-of-dialog request (OPTIONS, REGISTER).
    Standalone,
    /// A session refresh (RFC 4028) we send; its result restarts or ends the session timer.
    Refresh,
}

#[derive(Debug)]
pub(super) enum ClientMachine {
    Invite(InviteClientTx),
    NonInvite(NonInviteClientTx),
}

impl ClientMachine {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ClientMachine::Invite(m) => m.poll_timeout(),
            ClientMachine::NonInvite(m) => m.poll_timeout(),
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        match self {
            ClientMachine::Invite(m) => m.on_timeout(now),
            ClientMachine::NonInvite(m) => m.on_timeout(now),
        }
    }

    pub(super) fn terminate(&mut self) {
        match self {
            ClientMachine::Invite(m) => m.terminate(),
            ClientMachine::NonInvite(m) => m.terminate(),
        }
    }

    pub(super) fn is_terminated(&self) -> bool {
        match self {
            ClientMachine::Invite(m) => m.state() == InviteClientState::Terminated,
            ClientMachine::NonInvite(m) => m.state() == NonInviteClientState::Terminated,
        }
    }
}

/// Who a client transaction works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Call(CallHandle),
    Request(RequestHandle),
}

impl Owner {
    pub(super) fn call(self) -> Option<CallHandle> {
        match self {
            Owner::Call(h) => Some(h),
            Owner::Request(_) => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct ClientTx {
    pub(super) machine: ClientMachine,
    pub(super) owner: Owner,
    pub(super) purpose: Purpose,
    pub(super) request: rsip::Request,
    pub(super) bytes: Vec<u8>,
    pub(super) destination: SocketAddr,
    pub(super) transport: Transport,
    pub(super) authenticated: bool,
    /// The deadline already in the timer queue.
    pub(super) scheduled: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ClientKey {
    pub(super) branch: String,
    pub(super) method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ServerKey {
    pub(super) branch: String,
    pub(super) sent_by: String,
    pub(super) method: String,
}

#[derive(Debug)]
pub(super) enum ServerMachine {
    Invite(InviteServerTx),
    NonInvite(NonInviteServerTx),
}

impl ServerMachine {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ServerMachine::Invite(m) => m.poll_timeout(),
            ServerMachine::NonInvite(m) => m.poll_timeout(),
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        match self {
            ServerMachine::Invite(m) => m.on_timeout(now),
            ServerMachine::NonInvite(m) => m.on_timeout(now),
        }
    }

    pub(super) fn on_send_response(&mut self, now: Instant, code: u16) {
        match self {
            ServerMachine::Invite(m) => m.on_send_response(now, code),
            ServerMachine::NonInvite(m) => m.on_send_response(now, code),
        }
    }

    pub(super) fn is_terminated(&self) -> bool {
        match self {
            ServerMachine::Invite(m) => m.state() == InviteServerState::Terminated,
            ServerMachine::NonInvite(m) => m.state() == NonInviteServerState::Terminated,
        }
    }
}

#[derive(Debug)]
pub(super) struct ServerTx {
    pub(super) machine: ServerMachine,
    pub(super) request: rsip::Request,
    pub(super) last_response: Option<Vec<u8>>,
    pub(super) destination: SocketAddr,
    pub(super) transport: Transport,
    pub(super) call: Option<CallHandle>,
    /// The deadline already in the timer queue.
    pub(super) scheduled: Option<Instant>,
}

pub(super) fn server_key(via: &rsip::typed::Via, req: &rsip::Request) -> ServerKey {
    let method = match req.method {
        Method::Ack => Method::Invite,
        m => m,
    };
    let branch = match message::branch(via) {
        Some(b) if b.starts_with(MAGIC_COOKIE) => b,
        // RFC 2543 peers: match on the fields §17.2.3 lists instead of the branch.
        other => format!(
            "{}|{}|{}|{}",
            other.unwrap_or_default(),
            message::call_id(&req.headers).unwrap_or_default(),
            message::from_tag(&req.headers).unwrap_or_default(),
            message::cseq(&req.headers).map_or(0, |c| c.0),
        ),
    };
    ServerKey {
        branch,
        sent_by: via.uri.host_with_port.to_string(),
        method: method.to_string(),
    }
}

/// Where responses to a request go (RFC 3261 §18.2.2, RFC 3581 §4).
pub(super) fn response_destination(
    via: &rsip::typed::Via,
    source: SocketAddr,
    transport: Transport,
) -> SocketAddr {
    if transport.is_reliable() || message::has_rport(via) {
        return source;
    }
    let port = via.uri.host_with_port.port.map_or(5060, |p| *p.value());
    SocketAddr::new(source.ip(), port)
}

impl Endpoint {
    /// Takes over an INVITE client transaction another endpoint started and got a provisional
    /// response on (a leftover being cancelled): nothing is sent, but the INVITE's final
    /// response is matched, and a non-2xx one acknowledged (§17.1.1.3).
    pub(super) fn adopt_invite_tx(
        &mut self,
        now: Instant,
        owner: Owner,
        branch: String,
        req: rsip::Request,
        (destination, transport): (SocketAddr, Transport),
    ) {
        let mut machine = InviteClientTx::new(now, self.config.timers, transport.is_reliable());
        machine.on_response(now, 180);
        let bytes = req.to_string().into_bytes();
        let key = ClientKey {
            branch,
            method: req.method.to_string(),
        };
        self.insert_client_tx(
            key,
            ClientTx {
                machine: ClientMachine::Invite(machine),
                owner,
                purpose: Purpose::Invite,
                request: req,
                bytes,
                destination,
                transport,
                authenticated: false,
                scheduled: None,
            },
        );
    }

    pub(super) fn start_client_tx(
        &mut self,
        now: Instant,
        owner: Owner,
        purpose: Purpose,
        branch: String,
        req: rsip::Request,
        (destination, transport): (SocketAddr, Transport),
    ) {
        let reliable = transport.is_reliable();
        let machine = if req.method == Method::Invite {
            ClientMachine::Invite(InviteClientTx::new(now, self.config.timers, reliable))
        } else {
            ClientMachine::NonInvite(NonInviteClientTx::new(now, self.config.timers, reliable))
        };
        let bytes = req.to_string().into_bytes();
        let authenticated = req
            .headers
            .iter()
            .any(|h| matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_)));
        let key = ClientKey {
            branch,
            method: req.method.to_string(),
        };
        self.insert_client_tx(
            key,
            ClientTx {
                machine,
                owner,
                purpose,
                request: req,
                bytes: bytes.clone(),
                destination,
                transport,
                authenticated,
                scheduled: None,
            },
        );
        self.send(destination, transport, bytes);
    }

    pub(super) fn insert_client_tx(&mut self, key: ClientKey, tx: ClientTx) {
        if let Some(h) = tx.owner.call() {
            *self.call_txs.entry(h).or_default() += 1;
        }
        self.touched.push(TimerKey::Client(key.clone()));
        self.client_txs.insert(key, tx);
    }

    pub(super) fn new_server_tx(
        &mut self,
        key: &ServerKey,
        destination: SocketAddr,
        transport: Transport,
        req: rsip::Request,
        call: Option<CallHandle>,
    ) {
        let machine = if req.method == Method::Invite {
            ServerMachine::Invite(InviteServerTx::new(
                self.config.timers,
                transport.is_reliable(),
            ))
        } else {
            ServerMachine::NonInvite(NonInviteServerTx::new(
                self.config.timers,
                transport.is_reliable(),
            ))
        };
        if let Some(h) = call {
            *self.call_txs.entry(h).or_default() += 1;
        }
        self.touched.push(TimerKey::Server(key.clone()));
        self.server_txs.insert(
            key.clone(),
            ServerTx {
                machine,
                request: req,
                last_response: None,
                destination,
                transport,
                call,
                scheduled: None,
            },
        );
    }

    /// The ACK for a non-2xx final response (§17.1.1.3), built by the transaction.
    pub(super) fn ack_for_non_2xx(invite: &rsip::Request, resp: &rsip::Response) -> Vec<u8> {
        let mut headers = Vec::new();
        let mut via_done = false;
        for h in invite.headers.iter() {
            match h {
                Header::Via(_) if !via_done => {
                    via_done = true;
                    headers.push(h.clone());
                }
                Header::From(_) | Header::CallId(_) | Header::MaxForwards(_) | Header::Route(_) => {
                    headers.push(h.clone())
                }
                _ => {}
            }
        }
        if let Some(to) = resp.headers.iter().find(|h| matches!(h, Header::To(_))) {
            headers.push(to.clone());
        }
        let cseq = message::cseq(&invite.headers).map_or(1, |c| c.0);
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{cseq} ACK"
        ))));
        request(Method::Ack, invite.uri.clone(), headers, None)
            .to_string()
            .into_bytes()
    }
}

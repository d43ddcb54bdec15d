//! A call's state: its handle, the command that placed it, its early and confirmed dialogs
//! (RFC 3261 §12, §13) and the phase it is in.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::Transport;
use super::transactions::ServerKey;
use crate::auth::{AuthSession, Credentials};
use crate::end_reason::EndReason;
use crate::message;
use crate::session_timer::SessionTimer;

/// Identifies one call (placed by us or to us) inside an [`Endpoint`](super::Endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub(super) u64);

impl fmt::Display for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One outbound call to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    /// The Request-URI, e.g. `sip:+15551230000@trunk.example.com`.
    pub request_uri: String,
    /// The From value (caller ID) as a name-addr; the core adds the tag.
    pub from: String,
    /// The To value as a name-addr.
    pub to: String,
    /// The resolved address of the next hop.
    pub destination: SocketAddr,
    /// The transport to the next hop.
    pub transport: Transport,
    /// Pre-loaded Route values (an outbound proxy), in order.
    pub route: Vec<String>,
    /// The SDP offer carried by the INVITE.
    pub sdp_offer: Option<Vec<u8>>,
    /// Extra headers (e.g. `P-Asserted-Identity`, `X-Call-Id`).
    pub extra_headers: Vec<(String, String)>,
    /// Digest credentials for 401/407 challenges.
    pub credentials: Option<Credentials>,
}

impl OutboundCall {
    /// A call with no offer, route, extra headers or credentials.
    pub fn new(
        request_uri: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
        destination: SocketAddr,
        transport: Transport,
    ) -> Self {
        Self {
            request_uri: request_uri.into(),
            from: from.into(),
            to: to.into(),
            destination,
            transport,
            route: Vec::new(),
            sdp_offer: None,
            extra_headers: Vec::new(),
            credentials: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dialog {
    pub(super) remote_tag: String,
    pub(super) remote_target: rsip::Uri,
    pub(super) route_set: Vec<String>,
    pub(super) remote_cseq: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Calling,
    Early,
    Confirmed,
    Ending,
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelState {
    NotRequested,
    /// Requested before any provisional response: a CANCEL may not be sent yet (§9.1).
    Pending,
    /// Sent; if no final response arrives by the deadline the call is given up (§9.1).
    Sent {
        deadline: Instant,
    },
}

#[derive(Debug)]
pub(super) struct Call {
    pub(super) call_id: String,
    pub(super) local_tag: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) request_uri: rsip::Uri,
    pub(super) destination: SocketAddr,
    pub(super) transport: Transport,
    pub(super) route: Vec<String>,
    pub(super) extra_headers: Vec<(String, String)>,
    pub(super) sdp_offer: Option<Vec<u8>>,
    pub(super) invite: Option<rsip::Request>,
    pub(super) next_cseq: u32,
    pub(super) auth: AuthSession,
    pub(super) phase: Phase,
    pub(super) cancel: CancelState,
    pub(super) cancel_reason: EndReason,
    /// Why our BYE ends the call (Completed, or SessionExpired).
    pub(super) bye_reason: EndReason,
    pub(super) session_timer: Option<SessionTimer>,
    /// The peer's Allow lists UPDATE, so session refreshes need no SDP.
    pub(super) remote_allows_update: bool,
    /// Session-Expires to request after a 422 (RFC 4028 §7.4).
    pub(super) session_expires_request: Option<u32>,
    pub(super) got_provisional: bool,
    pub(super) early: Vec<Dialog>,
    pub(super) dialog: Option<Dialog>,
    pub(super) acks: Vec<(String, Vec<u8>)>,
    pub(super) pending_offer: Option<ServerKey>,
    pub(super) outgoing_reinvite: bool,
    /// The `refer` subscription of our REFER, while it is open.
    pub(super) refer: Option<super::refer::Subscription>,
    /// REFERs sent in the dialog so far: only the first one's NOTIFYs may leave out their `id`.
    pub(super) refers_sent: u32,
}

impl Call {
    /// A call about to send its INVITE (or rebuilt to be ended) from `from` (with its tag) to
    /// `to` at `request_uri` through `destination`: no route, extra headers, offer or
    /// credentials yet, nothing sent, nothing heard.
    pub(super) fn calling(
        call_id: String,
        local_tag: String,
        from: String,
        to: String,
        request_uri: rsip::Uri,
        destination: SocketAddr,
        transport: Transport,
    ) -> Self {
        Self {
            call_id,
            local_tag,
            from,
            to,
            request_uri,
            destination,
            transport,
            route: Vec::new(),
            extra_headers: Vec::new(),
            sdp_offer: None,
            invite: None,
            next_cseq: 1,
            auth: AuthSession::new(None),
            phase: Phase::Calling,
            cancel: CancelState::NotRequested,
            cancel_reason: EndReason::Canceled,
            bye_reason: EndReason::Completed,
            session_timer: None,
            remote_allows_update: false,
            session_expires_request: None,
            got_provisional: false,
            early: Vec::new(),
            dialog: None,
            acks: Vec::new(),
            pending_offer: None,
            outgoing_reinvite: false,
            refer: None,
            refers_sent: 0,
        }
    }
}

/// The address to send an in-dialog request to: the first route, else the remote target,
/// when it names an IP literal; otherwise the address the call was placed through.
/// Where in-dialog requests go: the first route, else the remote target; a URI without a port
/// means the transport's default one.
pub(super) fn next_hop(dialog: &Dialog, fallback: SocketAddr, transport: Transport) -> SocketAddr {
    let uri = dialog
        .route_set
        .first()
        .and_then(|r| message::uri_of_name_addr(r))
        .unwrap_or_else(|| dialog.remote_target.clone());
    match uri.host_with_port.host {
        rsip::Host::IpAddr(ip) => {
            let port = uri
                .host_with_port
                .port
                .map_or(transport.default_port(), |p| *p.value());
            SocketAddr::new(ip, port)
        }
        rsip::Host::Domain(_) => fallback,
    }
}

pub(super) fn dialog_from_response(resp: &rsip::Response, fallback_target: &rsip::Uri) -> Dialog {
    let mut route_set = message::record_route(&resp.headers);
    route_set.reverse();
    Dialog {
        remote_tag: message::to_tag(&resp.headers).unwrap_or_default(),
        remote_target: message::contact_uri(&resp.headers)
            .unwrap_or_else(|| fallback_target.clone()),
        route_set,
        remote_cseq: None,
    }
}

pub(super) fn body_of(body: &[u8]) -> Option<Vec<u8>> {
    (!body.is_empty()).then(|| body.to_vec())
}

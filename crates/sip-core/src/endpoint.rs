//! The sans-IO user agent core: transactions keyed and matched per RFC 3261 §17.1.3/§17.2.3,
//! outbound calls with their early and confirmed dialogs, CANCEL, forking, digest retries and
//! in-dialog requests in both directions.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use crate::auth::{AuthSession, Credentials};
use crate::end_reason::EndReason;
use crate::ids::{IdGenerator, MAGIC_COOKIE};
use crate::message::{self, request, response_to};
use crate::session_timer::{self, SessionTimer};
use crate::transaction::{
    InviteClientState, InviteClientTx, InviteClientVerdict, InviteServerState, InviteServerTx,
    InviteServerVerdict, NonInviteClientState, NonInviteClientTx, NonInviteServerState,
    NonInviteServerTx, TimerAction, TimerConfig,
};
use crate::validate::{self, ALLOWED_METHODS, Inbound, standard_reason};
use crate::{Error, scan};

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Unreliable datagrams: the core retransmits.
    Udp,
    /// A reliable stream: no retransmissions, messages framed by Content-Length.
    Tcp,
}

impl Transport {
    /// Whether the transport is reliable (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// Bytes to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send.
    pub destination: SocketAddr,
    /// On which transport.
    pub transport: Transport,
    /// One complete SIP message.
    pub payload: Vec<u8>,
}

/// Identifies one outbound call inside an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(u64);

impl fmt::Display for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Identifies one series of out-of-dialog requests (an OPTIONS probe, a registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHandle(u64);

impl fmt::Display for RequestHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request#{}", self.0)
    }
}

/// An out-of-dialog request: `OPTIONS` (a trunk keep-alive probe) or `REGISTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfDialogRequest {
    /// `OPTIONS` or `REGISTER`.
    pub method: Method,
    /// The Request-URI (the trunk, or the registrar's domain).
    pub request_uri: String,
    /// The From value as a name-addr (the address of record for REGISTER); the core adds a tag.
    pub from: String,
    /// The To value as a name-addr.
    pub to: String,
    /// The resolved next hop.
    pub destination: SocketAddr,
    /// The transport to it.
    pub transport: Transport,
    /// Digest credentials for 401/407.
    pub credentials: Option<Credentials>,
    /// REGISTER: the binding's lifetime in seconds (0 removes it).
    pub expires: Option<u32>,
}

/// The final answer to an out-of-dialog request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOutcome {
    /// Which series.
    pub request: RequestHandle,
    /// The final status; 408 when nothing answered, 503 when the transport failed.
    pub status: u16,
    /// REGISTER: the lifetime the registrar granted (Expires header or Contact `expires`).
    pub expires: Option<u32>,
}

#[derive(Debug)]
struct Standalone {
    spec: OutOfDialogRequest,
    uri: rsip::Uri,
    call_id: String,
    from: String,
    next_cseq: u32,
    auth: AuthSession,
}

/// Which side ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// We hung up (BYE or CANCEL sent by us).
    Local,
    /// The far end hung up.
    Remote,
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEvent {
    /// `100 Trying`: the trunk took the INVITE.
    Trying,
    /// A provisional response other than 100, or a 183 without SDP.
    Ringing {
        /// The status (180, 181, 182, 183).
        status: u16,
    },
    /// `183 Session Progress` (or 180) with SDP: early media.
    EarlyMedia {
        /// The status carrying the SDP.
        status: u16,
        /// The answer SDP for early media.
        sdp: Vec<u8>,
    },
    /// The call was answered (first 2xx), and ACKed.
    Answered {
        /// The SDP answer, if the 2xx carried one.
        sdp: Option<Vec<u8>>,
    },
    /// The call ended before it was answered.
    Failed {
        /// The final status, if one arrived.
        status: Option<u16>,
        /// Why, typed.
        reason: EndReason,
    },
    /// An answered call ended.
    Ended {
        /// Who hung up.
        by: Party,
        /// Why.
        reason: EndReason,
    },
    /// The far end sent a re-INVITE or UPDATE; answer with [`Endpoint::answer_offer`] or
    /// [`Endpoint::reject_offer`].
    RemoteOffer {
        /// The method carrying the offer.
        method: Method,
        /// The offer (a re-INVITE may come without one).
        sdp: Option<Vec<u8>>,
    },
    /// The far end sent an INFO (answered 200 already).
    Info {
        /// Its Content-Type.
        content_type: Option<String>,
        /// Its body.
        body: Vec<u8>,
    },
    /// The final response to an in-dialog request we sent with [`Endpoint::send_request`].
    RequestCompleted {
        /// The method we sent.
        method: Method,
        /// Its final status (408 when it timed out).
        status: u16,
        /// The body of the response (the SDP answer to a re-INVITE).
        body: Vec<u8>,
    },
}

/// A call event with the call it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The call.
    pub call: CallHandle,
    /// What happened.
    pub kind: CallEvent,
}

/// Counters of what the core saw and did; every dropped message is counted somewhere here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages handed to [`Endpoint::handle_message`].
    pub messages_received: u64,
    /// Messages dropped because they could not be read or answered.
    pub messages_dropped: u64,
    /// Requests refused by validation (400, 416, 420, 483, 501, 505).
    pub requests_rejected: u64,
    /// Responses matching no client transaction.
    pub stray_responses: u64,
    /// Requests or responses sent again by a timer or for a retransmission.
    pub retransmissions: u64,
    /// Extra 2xx from forks that were ACKed and released with BYE.
    pub forks_released: u64,
    /// Requests resent with credentials after a 401/407.
    pub auth_retries: u64,
}

/// Static configuration of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Host written in Via sent-by and Contact (the advertised, public address behind NAT).
    pub advertised_host: String,
    /// Port written in Via sent-by and Contact.
    pub advertised_port: u16,
    /// User part of our Contact URI.
    pub contact_user: String,
    /// The User-Agent header value.
    pub user_agent: String,
    /// T1, T2, T4 and Timer D.
    pub timers: TimerConfig,
    /// How many authenticated attempts a request may make; after the first, only a
    /// `stale=true` challenge earns another.
    pub max_auth_attempts: u32,
}

impl EndpointConfig {
    /// Defaults for an endpoint advertised at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            advertised_host: host.into(),
            advertised_port: port,
            contact_user: "dialtone".into(),
            user_agent: concat!("Dialtone/", env!("CARGO_PKG_VERSION")).into(),
            timers: TimerConfig::default(),
            max_auth_attempts: 2,
        }
    }

    fn sent_by(&self) -> String {
        if self.advertised_host.contains(':') && !self.advertised_host.starts_with('[') {
            format!("[{}]:{}", self.advertised_host, self.advertised_port)
        } else {
            format!("{}:{}", self.advertised_host, self.advertised_port)
        }
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
struct Dialog {
    remote_tag: String,
    remote_target: rsip::Uri,
    route_set: Vec<String>,
    remote_cseq: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Calling,
    Early,
    Confirmed,
    Ending,
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelState {
    NotRequested,
    /// Requested before any provisional response: a CANCEL may not be sent yet (§9.1).
    Pending,
    /// Sent; if no final response arrives by the deadline the call is given up (§9.1).
    Sent {
        deadline: Instant,
    },
}

#[derive(Debug)]
struct Call {
    call_id: String,
    local_tag: String,
    from: String,
    to: String,
    request_uri: rsip::Uri,
    destination: SocketAddr,
    transport: Transport,
    route: Vec<String>,
    extra_headers: Vec<(String, String)>,
    sdp_offer: Option<Vec<u8>>,
    invite: Option<rsip::Request>,
    next_cseq: u32,
    auth: AuthSession,
    phase: Phase,
    cancel: CancelState,
    cancel_reason: EndReason,
    /// Why our BYE ends the call (Completed, or SessionExpired).
    bye_reason: EndReason,
    session_timer: Option<SessionTimer>,
    /// The peer's Allow lists UPDATE, so session refreshes need no SDP.
    remote_allows_update: bool,
    /// Session-Expires to request after a 422 (RFC 4028 §7.4).
    session_expires_request: Option<u32>,
    got_provisional: bool,
    early: Vec<Dialog>,
    dialog: Option<Dialog>,
    acks: Vec<(String, Vec<u8>)>,
    pending_offer: Option<ServerKey>,
    outgoing_reinvite: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
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
enum ClientMachine {
    Invite(InviteClientTx),
    NonInvite(NonInviteClientTx),
}

impl ClientMachine {
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ClientMachine::Invite(m) => m.poll_timeout(),
            ClientMachine::NonInvite(m) => m.poll_timeout(),
        }
    }

    fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        match self {
            ClientMachine::Invite(m) => m.on_timeout(now),
            ClientMachine::NonInvite(m) => m.on_timeout(now),
        }
    }

    fn terminate(&mut self) {
        match self {
            ClientMachine::Invite(m) => m.terminate(),
            ClientMachine::NonInvite(m) => m.terminate(),
        }
    }

    fn is_terminated(&self) -> bool {
        match self {
            ClientMachine::Invite(m) => m.state() == InviteClientState::Terminated,
            ClientMachine::NonInvite(m) => m.state() == NonInviteClientState::Terminated,
        }
    }
}

/// Who a client transaction works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Call(CallHandle),
    Request(RequestHandle),
}

impl Owner {
    fn call(self) -> Option<CallHandle> {
        match self {
            Owner::Call(h) => Some(h),
            Owner::Request(_) => None,
        }
    }
}

#[derive(Debug)]
struct ClientTx {
    machine: ClientMachine,
    owner: Owner,
    purpose: Purpose,
    request: rsip::Request,
    bytes: Vec<u8>,
    destination: SocketAddr,
    transport: Transport,
    authenticated: bool,
    /// The deadline already in the timer queue.
    scheduled: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ClientKey {
    branch: String,
    method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: String,
}

#[derive(Debug)]
enum ServerMachine {
    Invite(InviteServerTx),
    NonInvite(NonInviteServerTx),
}

impl ServerMachine {
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ServerMachine::Invite(m) => m.poll_timeout(),
            ServerMachine::NonInvite(m) => m.poll_timeout(),
        }
    }

    fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        match self {
            ServerMachine::Invite(m) => m.on_timeout(now),
            ServerMachine::NonInvite(m) => m.on_timeout(now),
        }
    }

    fn on_send_response(&mut self, now: Instant, code: u16) {
        match self {
            ServerMachine::Invite(m) => m.on_send_response(now, code),
            ServerMachine::NonInvite(m) => m.on_send_response(now, code),
        }
    }

    fn is_terminated(&self) -> bool {
        match self {
            ServerMachine::Invite(m) => m.state() == InviteServerState::Terminated,
            ServerMachine::NonInvite(m) => m.state() == NonInviteServerState::Terminated,
        }
    }
}

#[derive(Debug)]
struct ServerTx {
    machine: ServerMachine,
    request: rsip::Request,
    last_response: Option<Vec<u8>>,
    destination: SocketAddr,
    transport: Transport,
    call: Option<CallHandle>,
    /// The deadline already in the timer queue.
    scheduled: Option<Instant>,
}

/// Something with a deadline, or whose end may free other state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Client(ClientKey),
    Server(ServerKey),
    /// A call: its CANCEL deadline, and whether it can be forgotten.
    Call(CallHandle),
}

/// The sans-IO SIP user agent core. See the crate documentation for the I/O contract.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    ids: IdGenerator,
    reject_tag: String,
    next_handle: u64,
    calls: HashMap<CallHandle, Call>,
    calls_by_id: HashMap<String, CallHandle>,
    client_txs: HashMap<ClientKey, ClientTx>,
    server_txs: HashMap<ServerKey, ServerTx>,
    /// Re-INVITEs we answered with 2xx, waiting for the dialog-level ACK.
    server_ack_wait: HashMap<CallHandle, ServerKey>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: EndpointStats,
    /// Deadlines, earliest first; an entry may be stale (its owner moved on), which costs one
    /// early wake-up, never a missed timer.
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    /// Keys whose state changed since the last [`Endpoint::settle`].
    touched: Vec<TimerKey>,
    /// Live transactions per call; a terminated call with none left is forgotten.
    call_txs: HashMap<CallHandle, usize>,
    standalone: HashMap<RequestHandle, Standalone>,
    outcomes: VecDeque<RequestOutcome>,
}

fn server_key(via: &rsip::typed::Via, req: &rsip::Request) -> ServerKey {
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
fn response_destination(
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

/// The address to send an in-dialog request to: the first route, else the remote target,
/// when it names an IP literal; otherwise the address the call was placed through.
fn next_hop(dialog: &Dialog, fallback: SocketAddr) -> SocketAddr {
    let uri = dialog
        .route_set
        .first()
        .and_then(|r| message::uri_of_name_addr(r))
        .unwrap_or_else(|| dialog.remote_target.clone());
    match uri.host_with_port.host {
        rsip::Host::IpAddr(ip) => {
            SocketAddr::new(ip, uri.host_with_port.port.map_or(5060, |p| *p.value()))
        }
        rsip::Host::Domain(_) => fallback,
    }
}

fn dialog_from_response(resp: &rsip::Response, fallback_target: &rsip::Uri) -> Dialog {
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

fn body_of(body: &[u8]) -> Option<Vec<u8>> {
    (!body.is_empty()).then(|| body.to_vec())
}

impl Endpoint {
    /// A core with the given configuration; `seed` drives branch, tag and Call-ID generation
    /// (the driver passes OS randomness, tests a constant).
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        let mut ids = IdGenerator::new(seed);
        let reject_tag = ids.tag();
        Self {
            config,
            ids,
            reject_tag,
            next_handle: 1,
            calls: HashMap::new(),
            calls_by_id: HashMap::new(),
            client_txs: HashMap::new(),
            server_txs: HashMap::new(),
            server_ack_wait: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            call_txs: HashMap::new(),
            standalone: HashMap::new(),
            outcomes: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The SIP Call-ID of a call, for logs.
    pub fn call_id(&self, call: CallHandle) -> Option<&str> {
        self.calls.get(&call).map(|c| c.call_id.as_str())
    }

    /// Number of calls still tracked (live, or absorbing retransmissions).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next call event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next final answer to an out-of-dialog request.
    pub fn poll_request_outcome(&mut self) -> Option<RequestOutcome> {
        self.outcomes.pop_front()
    }

    /// Starts a series of out-of-dialog requests and sends the first. Later requests of the
    /// series ([`Endpoint::repeat_request`]) reuse its Call-ID and From tag with a higher CSeq,
    /// as a registration refresh must (RFC 3261 §10.2).
    pub fn send_out_of_dialog(
        &mut self,
        now: Instant,
        request: OutOfDialogRequest,
    ) -> Result<RequestHandle, Error> {
        if !matches!(request.method, Method::Options | Method::Register) {
            return Err(Error::UnsupportedMethod {
                method: request.method.to_string(),
            });
        }
        let uri = rsip::Uri::try_from(request.request_uri.as_str())
            .ok()
            .filter(|_| !request.request_uri.contains(char::is_whitespace))
            .ok_or_else(|| Error::InvalidUri {
                field: "request_uri",
                value: request.request_uri.clone(),
            })?;
        for (field, value) in [("from", &request.from), ("to", &request.to)] {
            if message::uri_of_name_addr(value).is_none() || value.contains(['\r', '\n']) {
                return Err(Error::InvalidUri {
                    field,
                    value: value.clone(),
                });
            }
        }
        let handle = RequestHandle(self.next_handle);
        self.next_handle += 1;
        let tag = self.ids.tag();
        self.standalone.insert(
            handle,
            Standalone {
                from: format!("{};tag={tag}", request.from),
                call_id: self.ids.call_id(),
                uri,
                next_cseq: 1,
                auth: AuthSession::new(request.credentials.clone()),
                spec: request,
            },
        );
        self.send_standalone(now, handle);
        self.settle();
        Ok(handle)
    }

    /// Sends the next request of a series (a keep-alive probe, a registration refresh).
    pub fn repeat_request(&mut self, now: Instant, handle: RequestHandle) -> Result<(), Error> {
        if !self.standalone.contains_key(&handle) {
            return Err(Error::UnknownRequest { request: handle });
        }
        self.send_standalone(now, handle);
        self.settle();
        Ok(())
    }

    /// Changes a registration's lifetime for the next REGISTER (0 to unregister).
    pub fn set_expires(&mut self, handle: RequestHandle, expires: u32) -> Result<(), Error> {
        let s = self
            .standalone
            .get_mut(&handle)
            .ok_or(Error::UnknownRequest { request: handle })?;
        s.spec.expires = Some(expires);
        Ok(())
    }

    /// Forgets a series; answers still in flight are dropped.
    pub fn forget_request(&mut self, handle: RequestHandle) {
        self.standalone.remove(&handle);
    }

    fn send_standalone(&mut self, now: Instant, handle: RequestHandle) {
        let branch = self.ids.branch();
        let cnonce = self.ids.cnonce();
        let contact = self
            .standalone
            .get(&handle)
            .map(|s| self.contact(s.spec.transport));
        let via = self
            .standalone
            .get(&handle)
            .map(|s| self.via(s.spec.transport, &branch));
        let user_agent = self.config.user_agent.clone();
        let (Some(s), Some(contact), Some(via)) = (self.standalone.get_mut(&handle), contact, via)
        else {
            return;
        };
        let cseq = s.next_cseq;
        s.next_cseq += 1;
        let method = s.spec.method;
        let mut headers = vec![
            via,
            Header::MaxForwards(rsip::headers::MaxForwards::new("70")),
            Header::From(rsip::headers::From::new(s.from.clone())),
            Header::To(rsip::headers::To::new(s.spec.to.clone())),
            Header::CallId(rsip::headers::CallId::new(s.call_id.clone())),
            Header::CSeq(rsip::headers::CSeq::new(format!("{cseq} {method}"))),
            contact,
            Header::UserAgent(rsip::headers::UserAgent::new(user_agent)),
        ];
        if method == Method::Register {
            let expires = s.spec.expires.unwrap_or(3600);
            headers.push(Header::Expires(rsip::headers::Expires::new(
                expires.to_string(),
            )));
        } else {
            headers.push(Header::Other("Accept".into(), "application/sdp".into()));
        }
        headers.extend(s.auth.header(&method, &s.uri.to_string(), &cnonce));
        let (destination, transport) = (s.spec.destination, s.spec.transport);
        let req = request(method, s.uri.clone(), headers, None);
        self.start_client_tx(
            now,
            Owner::Request(handle),
            Purpose::Standalone,
            branch,
            req,
            (destination, transport),
        );
    }

    fn on_standalone_final(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        resp: &rsip::Response,
        authenticated: bool,
    ) {
        let max = self.config.max_auth_attempts;
        let Some(s) = self.standalone.get_mut(&handle) else {
            return;
        };
        if s.auth.accept(resp, authenticated, max) {
            self.stats.auth_retries += 1;
            self.send_standalone(now, handle);
            return;
        }
        let expires = message::first(&resp.headers, "Expires")
            .and_then(|e| e.trim().parse().ok())
            .or_else(|| {
                message::values(&resp.headers, "Contact")
                    .iter()
                    .find_map(|c| {
                        c.to_ascii_lowercase()
                            .split(";expires=")
                            .nth(1)
                            .and_then(|rest| rest.split([';', ',', '>']).next())
                            .and_then(|v| v.trim().parse().ok())
                    })
            });
        self.outcomes.push_back(RequestOutcome {
            request: handle,
            status: resp.status_code.code(),
            expires,
        });
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn emit(&mut self, call: CallHandle, kind: CallEvent) {
        tracing::debug!(call = %call, event = ?kind, "sip call event");
        if matches!(kind, CallEvent::Failed { .. } | CallEvent::Ended { .. }) {
            self.touched.push(TimerKey::Call(call));
        }
        self.events.push_back(Event { call, kind });
    }

    fn send(&mut self, destination: SocketAddr, transport: Transport, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            destination,
            transport,
            payload,
        });
    }

    fn via(&self, transport: Transport, branch: &str) -> Header {
        Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.as_str(),
            self.config.sent_by()
        )))
    }

    fn contact(&self, transport: Transport) -> Header {
        let transport_param = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        Header::Contact(rsip::headers::Contact::new(format!(
            "<sip:{}@{}{transport_param}>",
            self.config.contact_user,
            self.config.sent_by()
        )))
    }

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
        let state = Call {
            call_id: call_id.clone(),
            from: format!("{};tag={local_tag}", call.from),
            local_tag,
            to: call.to,
            request_uri,
            destination: call.destination,
            transport: call.transport,
            route: call.route,
            extra_headers: call.extra_headers,
            sdp_offer: call.sdp_offer,
            invite: None,
            next_cseq: 1,
            auth: AuthSession::new(call.credentials),
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
        };
        self.calls.insert(handle, state);
        self.calls_by_id.insert(call_id, handle);
        self.send_initial_invite(now, handle);
        self.settle();
        Ok(handle)
    }

    /// The authorization header for `method` to `uri` if the call holds a challenge.
    fn authorization(&mut self, handle: CallHandle, method: Method, uri: &str) -> Option<Header> {
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

    /// Builds an in-dialog request (RFC 3261 §12.2.1.1) for the call's confirmed dialog, or
    /// for `dialog` when given (a fork being released).
    fn in_dialog_request(
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
        let destination = next_hop(&dialog, call.destination);
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
        if matches!(method, Method::Invite | Method::Update) {
            headers.push(self.contact(transport));
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

    fn start_client_tx(
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

    fn send_in_dialog(
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
                self.send_in_dialog(now, handle, None, Method::Bye, Purpose::Bye, None);
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

    /// Sends a response on server transaction `key` and records it for retransmission.
    fn respond(
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

    /// Reports that sending to `destination` failed (ICMP unreachable, connection refused):
    /// every client transaction to it ends (§17.1.4), failing calls still being set up.
    pub fn handle_transport_error(&mut self, destination: SocketAddr) {
        let failed: Vec<ClientKey> = self
            .client_txs
            .iter()
            .filter(|(_, t)| t.destination == destination)
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            self.on_client_timeout(&key, EndReason::TransportError);
        }
        self.settle();
    }

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
            _ => {
                let destination = response_destination(&via, source, transport);
                self.on_new_request(now, key, destination, transport, req);
            }
        }
    }

    fn new_server_tx(
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

    fn insert_client_tx(&mut self, key: ClientKey, tx: ClientTx) {
        if let Some(h) = tx.owner.call() {
            *self.call_txs.entry(h).or_default() += 1;
        }
        self.touched.push(TimerKey::Client(key.clone()));
        self.client_txs.insert(key, tx);
    }

    fn on_cancel(
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
                }
            }
        }
    }

    /// The confirmed or early dialog a request belongs to (§12.2.2).
    fn find_dialog(&self, req: &rsip::Request) -> Option<CallHandle> {
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

    fn on_new_request(
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
        let body = req.body.clone();
        let contact = message::contact_uri(&req.headers);
        let session_expires = message::first(&req.headers, "Session-Expires")
            .and_then(|v| session_timer::parse_session_expires(&v));
        self.new_server_tx(&key, destination, transport, req, call);
        let Some(handle) = call else {
            let code = match method {
                _ if has_to_tag => 481,
                Method::Options => 200,
                Method::Invite => 480,
                Method::Bye | Method::Info | Method::Update | Method::PRack => 481,
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
                self.end_by_remote(handle);
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
            _ => {
                let allow = Header::Allow(rsip::headers::Allow::new(ALLOWED_METHODS));
                self.respond(now, &key, 405, vec![allow], None);
            }
        }
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

    fn on_ack_for_success(&mut self, now: Instant, req: &rsip::Request) {
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

    /// The ACK for a non-2xx final response (§17.1.1.3), built by the transaction.
    fn ack_for_non_2xx(invite: &rsip::Request, resp: &rsip::Response) -> Vec<u8> {
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

    fn on_invite_provisional(&mut self, now: Instant, handle: CallHandle, resp: &rsip::Response) {
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

    fn on_invite_failure(
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
    fn retry_with_auth(
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

    fn on_invite_success(&mut self, now: Instant, handle: CallHandle, resp: &rsip::Response) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let dialog = dialog_from_response(resp, &call.request_uri);
        let tag = dialog.remote_tag.clone();
        if let Some((_, ack)) = call.acks.iter().find(|(t, _)| *t == tag) {
            // A retransmitted 2xx: the ACK is sent again by the dialog layer (§13.2.2.4).
            let (d, t, ack) = (call.destination, call.transport, ack.clone());
            self.stats.retransmissions += 1;
            self.send(next_hop(&dialog, d), t, ack);
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

    fn on_reinvite_success(
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

    fn on_in_dialog_final(
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
        self.emit(
            handle,
            CallEvent::RequestCompleted {
                method,
                status: code,
                body: resp.body.clone(),
            },
        );
    }

    fn finish_local_hangup(&mut self, handle: CallHandle) {
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

    /// A client transaction ended without a final response (Timer B/F, transport error).
    fn on_client_timeout(&mut self, key: &ClientKey, reason: EndReason) {
        let Some(tx) = self.client_txs.get_mut(key) else {
            return;
        };
        tx.machine.terminate();
        let (owner, purpose, method) = (tx.owner, tx.purpose, tx.request.method);
        self.touched.push(TimerKey::Client(key.clone()));
        let handle = match owner {
            Owner::Call(h) => h,
            Owner::Request(request) => {
                // No answer at all is 408; a transport failure is 503 (RFC 3261 §8.1.3.1).
                let status = if reason == EndReason::TransportError {
                    503
                } else {
                    408
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
        self.touched.push(TimerKey::Server(key));
        if let Some((d, t, b)) = resend {
            self.stats.retransmissions += 1;
            self.send(d, t, b);
        }
    }

    /// The session timer is due: refresh it, or end the call the peer stopped refreshing.
    fn session_timer(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(timer) = call.session_timer.filter(|t| t.deadline <= now) else {
            return;
        };
        if call.phase != Phase::Confirmed {
            return;
        }
        self.touched.push(TimerKey::Call(handle));
        if !timer.we_refresh {
            tracing::info!(call = %handle, "session timer expired without a refresh");
            call.session_timer = None;
            call.bye_reason = EndReason::SessionExpired;
            call.phase = Phase::Ending;
            self.send_in_dialog(now, handle, None, Method::Bye, Purpose::Bye, None);
            return;
        }
        // Until the refresh is answered, do not refresh again before another half interval.
        call.session_timer = Some(SessionTimer::start(
            now,
            timer.interval.as_secs() as u32,
            true,
        ));
        let (method, body) = if call.remote_allows_update {
            (Method::Update, None)
        } else {
            (Method::Invite, call.sdp_offer.clone())
        };
        let cseq = call.next_cseq;
        call.next_cseq += 1;
        let expires = timer.header_value(true);
        let branch = self.ids.branch();
        let body = body.map(|b| ("application/sdp", b));
        let Some((mut req, destination, transport)) =
            self.in_dialog_request(handle, None, method, cseq, &branch, body)
        else {
            return;
        };
        req.headers
            .push(Header::Other("Session-Expires".into(), expires));
        req.headers
            .push(Header::Supported(rsip::headers::Supported::new("timer")));
        self.start_client_tx(
            now,
            Owner::Call(handle),
            Purpose::Refresh,
            branch,
            req,
            (destination, transport),
        );
    }

    /// The answer to our session refresh restarts the timer, or ends a dialog the peer lost.
    fn on_refresh_result(&mut self, now: Instant, handle: CallHandle, resp: &rsip::Response) {
        let code = resp.status_code.code();
        if matches!(code, 408 | 481) {
            return self.end_session_expired(handle);
        }
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(timer) = call.session_timer else {
            return;
        };
        let (seconds, we_refresh) = match message::first(&resp.headers, "Session-Expires")
            .and_then(|v| session_timer::parse_session_expires(&v))
        {
            Some((s, refresher)) if (200..300).contains(&code) => {
                (s, refresher != Some(session_timer::Refresher::Uas))
            }
            _ => (timer.interval.as_secs() as u32, true),
        };
        call.session_timer = Some(SessionTimer::start(now, seconds, we_refresh));
        self.touched.push(TimerKey::Call(handle));
    }

    /// Our refresh found the dialog gone (408/481/timeout): the call is over (§10).
    fn end_session_expired(&mut self, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if matches!(call.phase, Phase::Confirmed | Phase::Ending) {
            call.phase = Phase::Terminated;
            self.emit(
                handle,
                CallEvent::Ended {
                    by: Party::Local,
                    reason: EndReason::SessionExpired,
                },
            );
        }
    }

    /// `Session-Expires`/`Require: timer` for our 2xx to the peer's refresh, when a timer runs.
    fn session_headers(&self, handle: CallHandle) -> Vec<Header> {
        self.calls
            .get(&handle)
            .and_then(|c| c.session_timer)
            .map(|t| {
                vec![
                    Header::Other("Session-Expires".into(), t.header_value(false)),
                    Header::Require(rsip::headers::Require::new("timer")),
                ]
            })
            .unwrap_or_default()
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
    fn settle(&mut self) {
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
        }
    }
}

//! The driver task: sockets, the clock and the timer around one sans-IO endpoint.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_sip_core::{
    CallEvent, CallHandle, EndReason, Endpoint, EndpointConfig, IncomingCall, Leftover,
    OutOfDialogRequest, OutboundCall, RequestHandle, RequestOutcome, Transmit, Transport,
    TransportFailure, should_fail_over,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::tcp::{self, ConnectionId, Link, TcpEvent};
use crate::tls::{self, Learned, TlsTargets};
use crate::trunk::{Gates, Trunk};
use crate::udp::SipSocket;
use crate::{Call, DialRequest, Incoming, UaConfig, UaError, UaEvent, UaStats};

/// Commands from the API to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        request: DialRequest,
        targets: Vec<(Arc<Trunk>, SocketAddr)>,
        events: mpsc::UnboundedSender<UaEvent>,
        permit: Option<OwnedSemaphorePermit>,
        reply: oneshot::Sender<Result<u64, UaError>>,
    },
    HangUp {
        call: u64,
    },
    Ring {
        call: u64,
        trunk: Arc<Trunk>,
    },
    Accept {
        call: u64,
        sdp: Vec<u8>,
    },
    Refuse {
        call: u64,
        status: u16,
        charged: bool,
    },
    AnswerOffer {
        call: u64,
        sdp: Vec<u8>,
    },
    RejectOffer {
        call: u64,
        status: u16,
    },
    Request {
        call: u64,
        method: rsip::Method,
        body: Option<(String, Vec<u8>)>,
    },
    /// A blind transfer of an answered call to `to` (E.164 or a SIP URI).
    Refer {
        call: u64,
        to: String,
        reply: oneshot::Sender<Result<(), UaError>>,
    },
    Stats {
        reply: oneshot::Sender<UaStats>,
    },
    /// Whether this node takes new calls (out-of-dialog OPTIONS answered 200, else 503).
    SetAvailable(bool),
    /// Starts a series (`series` is `None`) or sends its next request, with an optional new
    /// lifetime; the outcome comes on the returned receiver.
    OutOfDialog {
        series: Option<RequestHandle>,
        request: Option<OutOfDialogRequest>,
        expires: Option<u32>,
        /// The TLS trunk the request goes to, whose settings reach its destination.
        tls: Option<Box<Trunk>>,
        reply: oneshot::Sender<Result<(RequestHandle, oneshot::Receiver<RequestOutcome>), UaError>>,
    },
    ForgetRequest {
        series: RequestHandle,
    },
    /// Ends a call another process left ([`Leftover`]); its final event comes on `reply`.
    EndLeftover {
        leftover: Box<Leftover>,
        /// The trunk it was placed through, if it still exists.
        trunk: Option<Arc<Trunk>>,
        reply: oneshot::Sender<Result<CallEvent, UaError>>,
    },
}

/// A stream connection's task, as the driver reaches it.
#[derive(Debug)]
struct OpenConnection {
    /// Which connection (a late `Closed` of an older one to the same peer is told apart).
    id: ConnectionId,
    /// What it writes.
    writer: mpsc::UnboundedSender<Vec<u8>>,
}

/// A call placed to us, as its owner sees it.
#[derive(Debug)]
struct Answering {
    handle: CallHandle,
    events: mpsc::UnboundedSender<UaEvent>,
    /// The trunk it was routed to, once rung: requests of its dialog to a number (a
    /// transfer's `Refer-To`) go through it.
    trunk: Option<Arc<Trunk>>,
}

/// One call as its owner sees it, across failover attempts.
#[derive(Debug)]
struct Slot {
    events: mpsc::UnboundedSender<UaEvent>,
    handle: CallHandle,
    request: DialRequest,
    trunk: Arc<Trunk>,
    remaining: VecDeque<(Arc<Trunk>, SocketAddr)>,
    ring: Ring,
    setup_deadline: Instant,
    answered: bool,
    hangup_requested: bool,
    /// Room taken on the trunk in use; released when the call ends or moves on.
    permit: Option<OwnedSemaphorePermit>,
}

/// The ring timeout of a call's current attempt. It counts from the attempt's first
/// provisional response: before one, nothing says the callee's phone rings (the INVITE's
/// Timer B ends a trunk that never answers, as `trunk_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ring {
    /// No provisional response yet.
    NotYet,
    /// Cancelled with `no_answer` if not answered by then.
    Until(Instant),
    /// Answered, hung up, or timed out: the ring timeout has nothing more to do.
    Over,
}

impl Ring {
    fn deadline(self) -> Option<Instant> {
        match self {
            Ring::Until(at) => Some(at),
            Ring::NotYet | Ring::Over => None,
        }
    }
}

impl Slot {
    /// The attempt got a provisional response at `now`: the ring timeout starts, once.
    fn start_ringing(&mut self, now: Instant) {
        if self.ring == Ring::NotYet {
            self.ring = Ring::Until(now + self.request.ring_timeout);
        }
    }
}

/// The core's view of one attempt of `request` through `trunk` at `target`.
fn attempt(request: &DialRequest, trunk: &Trunk, target: SocketAddr) -> OutboundCall {
    let host_port = trunk.host_port();
    let scheme = trunk.transport.scheme();
    let transport_param = trunk.transport.uri_param();
    let from_domain = trunk
        .from_domain
        .clone()
        .unwrap_or_else(|| host_port.clone());
    let mut call = OutboundCall::new(
        trunk.number_uri(&request.to),
        format!("<{scheme}:{}@{from_domain}>", request.from),
        format!("<{scheme}:{}@{host_port}>", request.to),
        target,
        trunk.transport,
    );
    if let Some(proxy) = &trunk.outbound_proxy {
        call.route
            .push(format!("<{scheme}:{proxy}{transport_param};lr>"));
    }
    call.sdp_offer = request.sdp_offer.clone();
    call.credentials = trunk.credentials.clone();
    call.extra_headers = request.extra_headers.clone();
    if request.assert_identity {
        call.extra_headers.push((
            "P-Asserted-Identity".into(),
            format!("<sip:{}@{from_domain}>", request.from),
        ));
    }
    call
}

struct Driver {
    endpoint: Endpoint,
    udp: SipSocket,
    tcp_events: mpsc::UnboundedSender<TcpEvent>,
    /// Open stream connections by peer and transport: a TLS message never takes a TCP one.
    connections: HashMap<(SocketAddr, Transport), OpenConnection>,
    /// How to open a TLS connection to each TLS target seen.
    tls_targets: TlsTargets,
    keepalive: Duration,
    slots: HashMap<u64, Slot>,
    by_handle: HashMap<CallHandle, u64>,
    next_id: u64,
    gates: Arc<Gates>,
    outcomes: HashMap<RequestHandle, oneshot::Sender<RequestOutcome>>,
    /// Leftover calls being ended, and who waits for their final event.
    endings: HashMap<CallHandle, oneshot::Sender<Result<CallEvent, UaError>>>,
    /// Whether we listen for TLS (requests a TLS trunk sends on a new connection).
    tls_listener: bool,
    /// Calls placed to us: their core handle and their owner's events.
    answering: HashMap<u64, Answering>,
    /// Where calls placed to us go.
    incoming: mpsc::UnboundedSender<Incoming>,
    /// The driver's own command channel, handed to the calls placed to us (weak: the driver
    /// stops when the last API handle is dropped).
    commands: mpsc::WeakUnboundedSender<Command>,
    /// Inbound INVITEs the core dropped, as last counted in the metrics.
    inbound_dropped: u64,
}

/// Binds UDP on `bind` and TCP on the same address. With port 0 the kernel picks a free UDP
/// port, which a TCP connection elsewhere may hold: then another UDP port is tried (a few
/// times), rather than failing a start that a moment later would succeed.
async fn bind_transports(
    bind: SocketAddr,
) -> Result<(UdpSocket, TcpListener, SocketAddr), UaError> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|source| UaError::Bind {
                transport: "UDP",
                addr: bind,
                source,
            })?;
        let local = udp.local_addr().map_err(|source| UaError::Bind {
            transport: "UDP",
            addr: bind,
            source,
        })?;
        match TcpListener::bind(local).await {
            Ok(listener) => return Ok((udp, listener, local)),
            Err(source)
                if bind.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS => {}
            Err(source) => {
                return Err(UaError::Bind {
                    transport: "TCP",
                    addr: local,
                    source,
                });
            }
        }
    }
}

/// Binds the sockets and spawns the driver; returns its command channel and the bound address.
pub(crate) async fn spawn(config: UaConfig, gates: Arc<Gates>) -> Result<Bound, UaError> {
    let (udp, listener, local) = bind_transports(config.bind).await?;
    let udp = SipSocket::new(udp).map_err(|source| UaError::Bind {
        transport: "UDP",
        addr: local,
        source,
    })?;
    let tls_listener = match &config.tls {
        Some(listen) => {
            let acceptor = tls::acceptor(listen)?;
            let bound = TcpListener::bind(listen.bind)
                .await
                .map_err(|source| UaError::Bind {
                    transport: "TLS",
                    addr: listen.bind,
                    source,
                })?;
            let addr = bound.local_addr().map_err(|source| UaError::Bind {
                transport: "TLS",
                addr: listen.bind,
                source,
            })?;
            Some((bound, acceptor, addr))
        }
        None => None,
    };
    let tls_local = tls_listener.as_ref().map(|(_, _, addr)| *addr);
    let mut endpoint_config = EndpointConfig::new(
        config
            .advertised_host
            .clone()
            .unwrap_or_else(|| local.ip().to_string()),
        config.advertised_port.unwrap_or(local.port()),
    );
    endpoint_config.timers = config.timers;
    endpoint_config.accept_inbound = config.inbound;
    endpoint_config.refusals = config.refusals;
    endpoint_config.advertised_tls_port =
        config.advertised_tls_port.or(tls_local.map(|a| a.port()));
    let endpoint = match config.seed {
        Some(seed) => Endpoint::new(endpoint_config, seed),
        None => Endpoint::with_os_rng(endpoint_config),
    };
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (tcp_events, tcp_rx) = mpsc::unbounded_channel();
    let accept_events = tcp_events.clone();
    let keepalive = config.tcp_keepalive;
    tokio::spawn(accept(listener, None, accept_events.clone(), keepalive));
    if let Some((listener, acceptor, _)) = tls_listener {
        tokio::spawn(accept(listener, Some(acceptor), accept_events, keepalive));
    }
    let (incoming, incoming_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        answering: HashMap::new(),
        inbound_dropped: 0,
        incoming,
        commands: commands_tx.downgrade(),
        endpoint,
        udp,
        tcp_events,
        connections: HashMap::new(),
        tls_targets: TlsTargets::default(),
        tls_listener: tls_local.is_some(),
        keepalive,
        slots: HashMap::new(),
        by_handle: HashMap::new(),
        next_id: 1,
        gates,
        outcomes: HashMap::new(),
        endings: HashMap::new(),
    };
    tokio::spawn(driver.run(commands, tcp_rx));
    Ok(Bound {
        commands: commands_tx,
        local,
        tls_local,
        incoming: incoming_rx,
    })
}

/// What [`spawn`] started: the driver's command channel and the bound addresses.
pub(crate) struct Bound {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) local: SocketAddr,
    pub(crate) tls_local: Option<SocketAddr>,
    pub(crate) incoming: mpsc::UnboundedReceiver<Incoming>,
}

/// Accepts connections on a TCP listener, or a TLS one with `acceptor`, each run by its task.
async fn accept(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    events: mpsc::UnboundedSender<TcpEvent>,
    keepalive: Duration,
) {
    while let Ok((stream, peer)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let (writer, outgoing) = mpsc::unbounded_channel();
        let link = match &acceptor {
            Some(acceptor) => Link::AcceptedTls(stream, acceptor.clone()),
            None => Link::Accepted(stream),
        };
        let connection = ConnectionId::next();
        let accepted = TcpEvent::Accepted {
            peer,
            transport: link.transport(),
            connection,
            writer,
        };
        if events.send(accepted).is_err() {
            break;
        }
        tokio::spawn(tcp::run(
            peer,
            connection,
            link,
            outgoing,
            events.clone(),
            keepalive,
        ));
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut tcp_rx: mpsc::UnboundedReceiver<TcpEvent>,
    ) {
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush().await;
            let deadline = self
                .next_deadline()
                .map_or_else(far_future, tokio::time::Instant::from_std);
            tokio::select! {
                ready = self.udp.ready() => {
                    if let Ok(ready) = ready {
                        self.on_udp_ready(ready, &mut buf);
                    }
                }
                Some(event) = tcp_rx.recv() => self.on_tcp(event),
                command = commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => self.on_timeout(),
            }
        }
    }

    /// Feeds the core a datagram, and the destinations ICMP says nothing listens at.
    fn on_udp_ready(&mut self, ready: tokio::io::Ready, buf: &mut [u8]) {
        if ready.is_readable()
            && let Some((n, source)) = self.udp.try_recv(buf)
        {
            let bytes = buf.get(..n).unwrap_or_default();
            self.received(source, Transport::Udp, bytes);
        }
        if ready.is_error() {
            while let Some(destination) = self.udp.next_unreachable() {
                tracing::info!(%destination, "ICMP: unreachable");
                self.endpoint
                    .handle_transport_error(destination, TransportFailure::Unreachable);
            }
        }
    }

    /// Feeds the core one message; the requests it drops (their source spent its budget of
    /// refusals) are counted in `dialtone_sip_inbound_dropped_total`.
    fn received(&mut self, source: SocketAddr, transport: Transport, bytes: &[u8]) {
        self.endpoint
            .handle_message(Instant::now(), source, transport, bytes);
        let dropped = self.endpoint.stats().inbound_dropped;
        if dropped > self.inbound_dropped {
            metrics::counter!("dialtone_sip_inbound_dropped_total")
                .increment(dropped - self.inbound_dropped);
            self.inbound_dropped = dropped;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let rings = self.slots.values().filter_map(|s| s.ring.deadline());
        self.endpoint.poll_timeout().into_iter().chain(rings).min()
    }

    fn on_timeout(&mut self) {
        let now = Instant::now();
        self.endpoint.handle_timeout(now);
        let expired: Vec<CallHandle> = self
            .slots
            .values_mut()
            .filter(|s| s.ring.deadline().is_some_and(|d| d <= now))
            .map(|s| {
                s.ring = Ring::Over;
                s.handle
            })
            .collect();
        for handle in expired {
            tracing::debug!(call = %handle, "ring timeout, cancelling");
            let _ = self
                .endpoint
                .hang_up_because(now, handle, EndReason::NoAnswer);
        }
    }

    fn on_tcp(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Accepted {
                peer,
                transport,
                connection,
                writer,
            } => {
                self.connections.insert(
                    (peer, transport),
                    OpenConnection {
                        id: connection,
                        writer,
                    },
                );
            }
            TcpEvent::Message {
                peer,
                transport,
                bytes,
            } => self.received(peer, transport, &bytes),
            TcpEvent::Closed {
                peer,
                transport,
                connection,
                failure,
            } => {
                let key = (peer, transport);
                // A newer connection to the peer has taken the entry: what is sent to the
                // peer now goes over it, and this one's end concerns none of it.
                if self
                    .connections
                    .get(&key)
                    .is_some_and(|open| open.id != connection)
                {
                    return;
                }
                self.connections.remove(&key);
                if let Some(failure) = failure {
                    self.endpoint.handle_transport_error(peer, failure);
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Dial {
                request,
                targets,
                events,
                permit,
                reply,
            } => {
                let result = self.dial(now, request, targets, events, permit);
                let _ = reply.send(result);
            }
            Command::HangUp { call } => {
                if let Some(slot) = self.slots.get_mut(&call) {
                    slot.hangup_requested = true;
                    slot.ring = Ring::Over;
                }
                if let Some(handle) = self.handle_of(call) {
                    let _ = self.endpoint.hang_up(now, handle);
                }
            }
            Command::Ring { call, trunk } => {
                if let Some(answering) = self.answering.get_mut(&call) {
                    answering.trunk = Some(trunk);
                    let _ = self.endpoint.ring(now, answering.handle);
                }
            }
            Command::Accept { call, sdp } => {
                if let Some(handle) = self.handle_of(call) {
                    let _ = self.endpoint.accept(now, handle, sdp);
                }
            }
            Command::Refuse {
                call,
                status,
                charged,
            } => {
                if let Some(handle) = self.handle_of(call) {
                    let _ = self.endpoint.refuse(now, handle, status, charged);
                }
            }
            Command::AnswerOffer { call, sdp } => {
                if let Some(handle) = self.handle_of(call) {
                    let _ = self.endpoint.answer_offer(now, handle, sdp);
                }
            }
            Command::RejectOffer { call, status } => {
                if let Some(handle) = self.handle_of(call) {
                    let _ = self.endpoint.reject_offer(now, handle, status);
                }
            }
            Command::Request { call, method, body } => {
                if let Some(handle) = self.handle_of(call) {
                    let body = body.as_ref().map(|(ct, b)| (ct.as_str(), b.clone()));
                    let _ = self.endpoint.send_request(now, handle, method, body);
                }
            }
            Command::Refer { call, to, reply } => {
                let placed = self.slots.get(&call).map(|s| (s.handle, Some(&s.trunk)));
                let answered = self
                    .answering
                    .get(&call)
                    .map(|a| (a.handle, a.trunk.as_ref()));
                let result = match placed.or(answered) {
                    Some((handle, trunk)) => {
                        // A number goes through the call's trunk, like its INVITE did.
                        let uri = match (to.starts_with('+'), trunk) {
                            (true, Some(trunk)) => trunk.number_uri(&to),
                            _ => to,
                        };
                        self.endpoint
                            .refer(now, handle, &uri)
                            .map_err(UaError::from)
                    }
                    None => Err(UaError::CallEnded),
                };
                let _ = reply.send(result);
            }
            Command::OutOfDialog {
                series,
                request,
                expires,
                tls,
                reply,
            } => {
                if let (Some(trunk), Some(r)) = (tls, &request)
                    && let Err(error) = self.learn_route(&trunk, r.destination)
                {
                    let _ = reply.send(Err(error));
                    return;
                }
                let sent = match (series, request) {
                    (Some(h), _) => expires
                        .map_or(Ok(()), |e| self.endpoint.set_expires(h, e))
                        .and_then(|()| self.endpoint.repeat_request(now, h))
                        .map(|()| h),
                    (None, Some(r)) => self.endpoint.send_out_of_dialog(now, r),
                    (None, None) => Err(dialtone_sip_core::Error::UnsupportedMethod {
                        method: "(none)".into(),
                    }),
                };
                let _ = reply.send(sent.map_err(UaError::from).map(|h| {
                    let (tx, rx) = oneshot::channel();
                    self.outcomes.insert(h, tx);
                    (h, rx)
                }));
            }
            Command::ForgetRequest { series } => {
                self.endpoint.forget_request(series);
                self.outcomes.remove(&series);
            }
            Command::EndLeftover {
                leftover,
                trunk,
                reply,
            } => {
                let (destination, transport) = leftover.destination();
                let tls =
                    trunk.filter(|t| t.transport == Transport::Tls && transport == Transport::Tls);
                if let Some(trunk) = &tls
                    && let Err(e) = self.learn_route(trunk, destination)
                {
                    let _ = reply.send(Err(e));
                    return;
                }
                match self.endpoint.end_leftover(now, &leftover) {
                    Ok(handle) => {
                        if tls.is_some()
                            && let Some(next_hop) = self.endpoint.in_dialog_destination(handle)
                        {
                            // The BYE's next hop (a Contact, a route) is the same trunk.
                            self.tls_targets.extend(destination, next_hop);
                        }
                        self.endings.insert(handle, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::SetAvailable(available) => self.endpoint.set_available(available),
            Command::Stats { reply } => {
                let _ = reply.send(UaStats {
                    endpoint: self.endpoint.stats(),
                    core_calls: self.endpoint.call_count(),
                    live_calls: self.slots.len() + self.answering.len(),
                    tcp_connections: self.connections.len(),
                });
            }
        }
    }

    /// The core's handle of call `id`, placed by us or to us.
    fn handle_of(&self, id: u64) -> Option<CallHandle> {
        self.slots
            .get(&id)
            .map(|s| s.handle)
            .or_else(|| self.answering.get(&id).map(|a| a.handle))
    }

    /// A call placed to us: handed to the owner of incoming calls, or refused `480` when
    /// there is none.
    fn on_incoming(&mut self, handle: CallHandle, offer: IncomingCall) {
        let Some(commands) = self.commands.upgrade() else {
            let _ = self.endpoint.refuse(Instant::now(), handle, 480, false);
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let (events_tx, events) = mpsc::unbounded_channel();
        let call = Call {
            id,
            events,
            commands,
            finished: false,
        };
        self.answering.insert(
            id,
            Answering {
                handle,
                events: events_tx,
                trunk: None,
            },
        );
        self.by_handle.insert(handle, id);
        if let Err(unheard) = self.incoming.send(Incoming { call, offer }) {
            let mut unheard = unheard.0;
            // Nobody takes calls: the handle's drop must not send a hang-up as well.
            unheard.call.finished = true;
            let _ = self.endpoint.refuse(Instant::now(), handle, 480, false);
        }
    }

    fn dial(
        &mut self,
        now: Instant,
        request: DialRequest,
        targets: Vec<(Arc<Trunk>, SocketAddr)>,
        events: mpsc::UnboundedSender<UaEvent>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<u64, UaError> {
        let mut remaining: VecDeque<(Arc<Trunk>, SocketAddr)> = targets.into();
        let (trunk, first) = remaining.pop_front().ok_or_else(|| UaError::NoAddress {
            trunk: request.trunk.name.clone(),
            host: request.trunk.host.clone(),
        })?;
        self.learn_route(&trunk, first)?;
        let handle = self.endpoint.dial(now, attempt(&request, &trunk, first))?;
        let id = self.next_id;
        self.next_id += 1;
        self.announce_attempt(&events, handle, first);
        self.by_handle.insert(handle, id);
        self.slots.insert(
            id,
            Slot {
                events,
                handle,
                ring: Ring::NotYet,
                setup_deadline: now + request.setup_deadline,
                request,
                trunk,
                remaining,
                answered: false,
                hangup_requested: false,
                permit,
            },
        );
        Ok(id)
    }

    /// Keeps how to open a TLS connection to `target` of a TLS trunk; a connection opened
    /// with the trunk's former settings is dropped.
    fn learn_route(&mut self, trunk: &Trunk, target: SocketAddr) -> Result<(), UaError> {
        if trunk.transport != Transport::Tls {
            return Ok(());
        }
        match self.tls_targets.learn(trunk, target)? {
            Learned::Replaced => {
                self.connections.remove(&(target, Transport::Tls));
            }
            Learned::New if !self.tls_listener => tracing::warn!(
                trunk = %trunk.name,
                %target,
                "TLS trunk but no TLS listener (DIALTONE_SIP_TLS_ADDR): what the trunk sends in \
                 a call's dialog over a new connection (a callee's BYE) cannot reach us"
            ),
            Learned::New | Learned::Known => {}
        }
        Ok(())
    }

    /// Starts the next failover attempt of `id`; `false` when none is left or allowed.
    fn fail_over(&mut self, now: Instant, id: u64) -> bool {
        let Some(slot) = self.slots.get_mut(&id) else {
            return false;
        };
        while now < slot.setup_deadline {
            let Some((trunk, target)) = slot.remaining.pop_front() else {
                return false;
            };
            if slot.request.trunk.transport == Transport::Tls && trunk.transport != Transport::Tls {
                // The offer may carry SRTP keys, and the caller asked for TLS: never in clear.
                tracing::warn!(trunk = %trunk.name, "fallback trunk without TLS skipped for a TLS call");
                continue;
            }
            if !Arc::ptr_eq(&trunk, &slot.trunk) {
                // Moving to another trunk: its caps apply, checked without waiting.
                let Some(admission) = self.gates.try_admit(&trunk) else {
                    tracing::info!(trunk = %trunk.name, "fallback trunk at its cap, skipped");
                    continue;
                };
                slot.permit = admission.permit;
                slot.trunk = trunk.clone();
            }
            if trunk.transport == Transport::Tls {
                match self.tls_targets.learn(&trunk, target) {
                    Ok(Learned::Replaced) => {
                        self.connections.remove(&(target, Transport::Tls));
                    }
                    Ok(Learned::Known | Learned::New) => {}
                    Err(error) => {
                        tracing::warn!(%error, "fallback target skipped");
                        continue;
                    }
                }
            }
            let Ok(handle) = self
                .endpoint
                .dial(now, attempt(&slot.request, &trunk, target))
            else {
                continue;
            };
            tracing::info!(call = %handle, trunk = %trunk.name, %target, "failing over");
            slot.handle = handle;
            slot.ring = Ring::NotYet;
            self.by_handle.insert(handle, id);
            let events = slot.events.clone();
            self.announce_attempt(&events, handle, target);
            return true;
        }
        false
    }

    fn announce_attempt(
        &self,
        events: &mpsc::UnboundedSender<UaEvent>,
        handle: CallHandle,
        target: SocketAddr,
    ) {
        if let Some(sip_call_id) = self.endpoint.call_id(handle) {
            tracing::info!(call = %handle, sip_call_id, %target, "INVITE sent");
            let _ = events.send(UaEvent::Attempt {
                sip_call_id: sip_call_id.to_owned(),
                target,
            });
        }
    }

    /// Routes the endpoint's events to the calls' owners and sends what it queued, until
    /// neither is left: events first, so a dialog's TLS next hop is known before its ACK goes
    /// out, and routing may start a failover attempt whose INVITE is then queued, and a failed
    /// send may fail a call.
    async fn flush(&mut self) {
        loop {
            let mut busy = false;
            while let Some(event) = self.endpoint.poll_event() {
                self.route(event.call, event.kind);
                busy = true;
            }
            while let Some(outcome) = self.endpoint.poll_request_outcome() {
                if let Some(tx) = self.outcomes.remove(&outcome.request) {
                    let _ = tx.send(outcome);
                }
            }
            while let Some(transmit) = self.endpoint.poll_transmit() {
                self.transmit(transmit).await;
                busy = true;
            }
            if !busy {
                break;
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        match t.transport {
            Transport::Udp => {
                if let Err(failure) = self.udp.send_to(&t.payload, t.destination).await {
                    self.endpoint.handle_transport_error(t.destination, failure);
                }
            }
            Transport::Tcp | Transport::Tls => {
                let key = (t.destination, t.transport);
                if !self.connections.contains_key(&key) {
                    let link = if t.transport == Transport::Tls {
                        match self.tls_targets.route(t.destination) {
                            Some(route) => Link::ConnectTls(route.clone()),
                            None => {
                                tracing::warn!(destination = %t.destination, "no TLS settings for this destination");
                                self.endpoint
                                    .handle_transport_error(t.destination, TransportFailure::Tls);
                                return;
                            }
                        }
                    } else {
                        Link::Connect
                    };
                    let (writer, outgoing) = mpsc::unbounded_channel();
                    let id = ConnectionId::next();
                    tokio::spawn(tcp::run(
                        t.destination,
                        id,
                        link,
                        outgoing,
                        self.tcp_events.clone(),
                        self.keepalive,
                    ));
                    self.connections.insert(key, OpenConnection { id, writer });
                }
                let Some(open) = self.connections.get(&key) else {
                    return;
                };
                if open.writer.send(t.payload).is_err() {
                    self.connections.remove(&key);
                    self.endpoint
                        .handle_transport_error(t.destination, TransportFailure::Other);
                }
            }
        }
    }

    fn route(&mut self, handle: CallHandle, event: CallEvent) {
        if let CallEvent::Incoming(offer) = event {
            self.on_incoming(handle, *offer);
            return;
        }
        if let Some(&id) = self.by_handle.get(&handle)
            && let Some(Answering { events, .. }) = self.answering.get(&id)
        {
            let last = matches!(event, CallEvent::Failed { .. } | CallEvent::Ended { .. });
            if matches!(event, CallEvent::Answered { .. })
                && let Some(leftover) = self.endpoint.leftover(handle)
            {
                // What another process needs to end the call, before the answer is announced.
                let _ = events.send(UaEvent::Leftover(Box::new(leftover)));
            }
            let _ = events.send(UaEvent::Call(event));
            if last {
                self.answering.remove(&id);
                self.by_handle.remove(&handle);
            }
            return;
        }
        let Some(&id) = self.by_handle.get(&handle) else {
            if matches!(event, CallEvent::Failed { .. } | CallEvent::Ended { .. })
                && let Some(reply) = self.endings.remove(&handle)
            {
                let _ = reply.send(Ok(event));
            }
            return;
        };
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        if slot.trunk.transport == Transport::Tls
            && matches!(
                event,
                CallEvent::Answered { .. }
                    | CallEvent::Ringing { .. }
                    | CallEvent::EarlyMedia { .. }
            )
            && let (Some(target), Some(next_hop)) = (
                self.endpoint.destination(handle),
                self.endpoint.in_dialog_destination(handle),
            )
        {
            // The far end's Contact is the same trunk: reached with its TLS settings.
            self.tls_targets.extend(target, next_hop);
        }
        match &event {
            CallEvent::Answered { .. } => {
                slot.answered = true;
                slot.ring = Ring::Over;
                // What another process needs to end the call, before the answer is announced.
                if let Some(leftover) = self.endpoint.leftover(handle) {
                    let _ = slot.events.send(UaEvent::Leftover(Box::new(leftover)));
                }
            }
            CallEvent::Trying => slot.start_ringing(now),
            CallEvent::Ringing { .. } | CallEvent::EarlyMedia { .. } => {
                slot.start_ringing(now);
                if let Some(leftover) = self.endpoint.leftover(handle) {
                    let _ = slot.events.send(UaEvent::Leftover(Box::new(leftover)));
                }
            }
            CallEvent::Failed { status, reason } => {
                let retry = !slot.hangup_requested
                    && (matches!(
                        reason,
                        EndReason::TrunkTimeout
                            | EndReason::TrunkUnreachable
                            | EndReason::TransportError
                            | EndReason::TlsFailed
                    ) || status.is_some_and(should_fail_over));
                self.by_handle.remove(&handle);
                if retry && self.fail_over(now, id) {
                    return;
                }
                if let Some(slot) = self.slots.remove(&id) {
                    let _ = slot.events.send(UaEvent::Call(event));
                }
                return;
            }
            CallEvent::Ended { .. } => {
                self.by_handle.remove(&handle);
                if let Some(slot) = self.slots.remove(&id) {
                    let _ = slot.events.send(UaEvent::Call(event));
                }
                return;
            }
            _ => {}
        }
        let _ = slot.events.send(UaEvent::Call(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_carries_caller_id_identity_proxy_and_transport() {
        let mut trunk = Trunk::new("t", "sip.example.net", Transport::Tcp);
        trunk.port = Some(5080);
        trunk.from_domain = Some("calls.example.com".into());
        trunk.outbound_proxy = Some("edge.example.net:5061".into());
        let mut request = DialRequest::new(Arc::new(trunk.clone()), "+15559870000", "+15551230000");
        request.assert_identity = true;
        request
            .extra_headers
            .push(("X-Campaign".into(), "spring".into()));
        let call = attempt(&request, &trunk, "192.0.2.9:5061".parse().unwrap());
        assert_eq!(
            call.request_uri,
            "sip:+15551230000@sip.example.net:5080;transport=tcp"
        );
        assert_eq!(call.from, "<sip:+15559870000@calls.example.com>");
        assert_eq!(call.to, "<sip:+15551230000@sip.example.net:5080>");
        assert_eq!(
            call.route,
            vec!["<sip:edge.example.net:5061;transport=tcp;lr>"]
        );
        assert_eq!(call.transport, Transport::Tcp);
        assert!(
            call.extra_headers
                .contains(&("X-Campaign".into(), "spring".into()))
        );
        assert!(call.extra_headers.contains(&(
            "P-Asserted-Identity".into(),
            "<sip:+15559870000@calls.example.com>".into()
        )));
    }
}

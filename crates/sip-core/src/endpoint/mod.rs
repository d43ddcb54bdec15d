//! The sans-IO user agent core: transactions keyed and matched per RFC 3261 §17.1.3/§17.2.3,
//! outbound calls with their early and confirmed dialogs, CANCEL, forking, digest retries,
//! calls placed to us, and in-dialog requests in both directions.
//!
//! [`Endpoint`] is one struct whose `impl` is spread over this module's files, one concern each:
//!
//! * `mod.rs`: the struct, its constructor, accessors and output queues, and the transport
//!   types ([`Transport`], [`Transmit`], [`TransportFailure`]);
//! * `config`: [`EndpointConfig`];
//! * `events`: what the core reports ([`CallEvent`], [`Event`], [`Party`], [`EndpointStats`]);
//! * `call`: a call's state ([`CallHandle`], [`OutboundCall`], its dialogs and phase);
//! * `transactions`: client and server transactions, their keys and creation (§17);
//! * `dispatch`: incoming messages, validated, and routed to a transaction or a handler;
//! * `uac`: placing a call (INVITE, CANCEL, its responses, the 2xx ACK, forks);
//! * `in_dialog`: requests we send in an answered call (BYE, INFO, UPDATE, re-INVITE);
//! * `refer`: blind transfer: the REFER we send and the NOTIFYs of its subscription;
//! * `leftover`: a call's dialog as data ([`Leftover`]), for another process to end it;
//! * `uas`: requests the peer sends, and our responses to them;
//! * `inbound`: calls the peer places to us (INVITE server transaction, ring, answer, refuse);
//! * `out_of_dialog`: OPTIONS probes and REGISTER series;
//! * `session_refresh`: RFC 4028 session timers, refreshed or expired;
//! * `timers`: the timer queue, timeouts, and forgetting finished transactions and calls.

mod call;
mod config;
mod dispatch;
mod events;
mod in_dialog;
mod inbound;
mod leftover;
mod out_of_dialog;
mod refer;
mod session_refresh;
mod timers;
mod transactions;
mod uac;
mod uas;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rsip::Header;
use rsip::headers::UntypedHeader;

use crate::end_reason::EndReason;
use crate::ids::IdGenerator;
use crate::refusals::RefusalLimiter;

use self::call::Call;
pub use self::call::{CallHandle, OutboundCall};
pub use self::config::EndpointConfig;
pub use self::events::{CallEvent, EndpointStats, Event, Party};
pub use self::inbound::IncomingCall;
pub use self::leftover::Leftover;
use self::out_of_dialog::Standalone;
pub use self::out_of_dialog::{OutOfDialogRequest, RequestHandle, RequestOutcome};
use self::timers::TimerKey;
use self::transactions::{ClientKey, ClientTx, ServerKey, ServerTx};

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Unreliable datagrams: the core retransmits.
    Udp,
    /// A reliable stream: no retransmissions, messages framed by Content-Length.
    Tcp,
    /// TCP under TLS (RFC 3261 §26.2): reliable like TCP, `sips:` URIs.
    Tls,
}

impl Transport {
    /// Whether the transport is reliable (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// The Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The URI scheme a request over this transport uses: `sips` over TLS (RFC 3261 §19.1).
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Udp | Transport::Tcp => "sip",
            Transport::Tls => "sips",
        }
    }

    /// The `;transport=` URI parameter that selects this transport, empty for UDP (the
    /// default) and for TLS (implied by `sips:`).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp | Transport::Tls => "",
            Transport::Tcp => ";transport=tcp",
        }
    }

    /// The port a URI without one means (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
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

/// Why a message could not reach its destination: what the driver learnt from the network
/// (RFC 3261 §17.1.4), told to the core with [`Endpoint::handle_transport_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// Nothing takes SIP there: an ICMP port, host or network unreachable, a refused connection.
    Unreachable,
    /// The message could not be sent for another reason: a local send error, a connection
    /// that timed out or broke.
    Other,
    /// The TLS connection failed: an untrusted certificate, a name not in it, a refused
    /// handshake.
    Tls,
}

impl TransportFailure {
    /// What an I/O error from sending or connecting (or an ICMP error's errno) says.
    pub fn of_error_kind(kind: std::io::ErrorKind) -> Self {
        use std::io::ErrorKind;
        match kind {
            ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable => TransportFailure::Unreachable,
            _ => TransportFailure::Other,
        }
    }

    /// The end reason of a call still being set up that the failure ends.
    pub fn end_reason(self) -> EndReason {
        match self {
            TransportFailure::Unreachable => EndReason::TrunkUnreachable,
            TransportFailure::Other => EndReason::TransportError,
            TransportFailure::Tls => EndReason::TlsFailed,
        }
    }
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
    /// Incoming calls until their answer is acknowledged.
    inbound: HashMap<CallHandle, inbound::Inbound>,
    /// The budget of refused inbound INVITEs per source.
    refusals: RefusalLimiter,
    /// Whether this node takes new calls: an OPTIONS probe outside a dialog is answered 200
    /// while it does and 503 while it does not (draining, or without its lease), so an edge
    /// proxy that probes its nodes stops sending it calls.
    available: bool,
}

impl Endpoint {
    /// A core for production: branches, tags, Call-IDs and cnonces come from a CSPRNG keyed
    /// from the operating system's randomness, so no peer can guess them (RFC 3261 §19.3).
    pub fn with_os_rng(config: EndpointConfig) -> Self {
        Self::with_ids(config, IdGenerator::from_os_rng())
    }

    /// A core whose identifiers come from the same CSPRNG keyed with `seed`, so that a test
    /// sees the same messages on every run. They are only as unguessable as the 64-bit seed:
    /// production uses [`Endpoint::with_os_rng`].
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        Self::with_ids(config, IdGenerator::new(seed))
    }

    fn with_ids(config: EndpointConfig, mut ids: IdGenerator) -> Self {
        let reject_tag = ids.tag();
        Self {
            refusals: RefusalLimiter::new(config.refusals),
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
            inbound: HashMap::new(),
            available: true,
        }
    }

    /// Says whether this node takes new calls (see [`Endpoint::is_available`]).
    pub fn set_available(&mut self, available: bool) {
        self.available = available;
    }

    /// Whether this node takes new calls: out-of-dialog OPTIONS are answered 200 while it does
    /// and 503 Service Unavailable while it does not.
    pub fn is_available(&self) -> bool {
        self.available
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

    /// Where a call's INVITE went.
    pub fn destination(&self, call: CallHandle) -> Option<SocketAddr> {
        self.calls.get(&call).map(|c| c.destination)
    }

    /// Where a call's in-dialog requests go, once it has a dialog: its first route, else the
    /// far end's Contact (a URI without a port means the transport's default).
    pub fn in_dialog_destination(&self, call: CallHandle) -> Option<SocketAddr> {
        let c = self.calls.get(&call)?;
        Some(call::next_hop(
            c.dialog.as_ref()?,
            c.destination,
            c.transport,
        ))
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
            self.config.sent_by(transport)
        )))
    }

    fn contact(&self, transport: Transport) -> Header {
        Header::Contact(rsip::headers::Contact::new(format!(
            "<{}:{}@{}{}>",
            transport.scheme(),
            self.config.contact_user,
            self.config.sent_by(transport),
            transport.uri_param()
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn first_invite(mut ep: Endpoint) -> Vec<u8> {
        let call = OutboundCall::new(
            "sip:+15551230000@192.0.2.20",
            "<sip:+15559870000@192.0.2.10>",
            "<sip:+15551230000@192.0.2.20>",
            "192.0.2.20:5060".parse().unwrap(),
            Transport::Udp,
        );
        ep.dial(Instant::now(), call).unwrap();
        ep.poll_transmit().unwrap().payload
    }

    #[test]
    fn a_seed_repeats_the_ids_and_the_os_does_not() {
        let config = || EndpointConfig::new("192.0.2.10", 5060);
        let seeded = first_invite(Endpoint::new(config(), 7));
        assert_eq!(seeded, first_invite(Endpoint::new(config(), 7)));
        assert_ne!(seeded, first_invite(Endpoint::new(config(), 8)));
        assert_ne!(
            first_invite(Endpoint::with_os_rng(config())),
            first_invite(Endpoint::with_os_rng(config()))
        );
    }
}

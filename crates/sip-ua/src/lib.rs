//! # dialtone-sip-ua — the SIP user agent that places Dialtone's calls
//!
//! A thin tokio driver around the sans-IO [`dialtone_sip_core::Endpoint`]: it owns the UDP
//! socket, the TCP and TLS listeners and connections (Content-Length framing, CRLF
//! keep-alives; rustls, [`TrunkTls`]), the timer, and the clock; every protocol decision stays in the core. On top it adds what a trunk
//! needs: host resolution (SRV and A/AAAA through a caching resolver, [`dns`]) with failover
//! across targets, per-trunk concurrency and rate caps, a ring timeout that cancels with end
//! reason `no_answer`, and caller-ID headers. An answered call can be transferred blind
//! ([`Call::refer`]: a number becomes the trunk's URI for it, like the INVITE's Request-URI).
//!
//! Calls placed to us ([`UaConfig::inbound`]) come out of [`SipUa::incoming_calls`] as
//! [`Incoming`]: the same [`Call`] handle as an outbound call's, which the owner rings
//! ([`Call::ring`]), answers ([`Call::accept`]) or refuses ([`Call::refuse`]); after the answer
//! the call is driven exactly like an outbound one.
//!
//! Failures say what happened. A target nothing listens on — an ICMP port or host unreachable
//! for a datagram (read from the UDP socket's error queue), a refused TCP connection — fails
//! the attempt at once with `trunk_unreachable` and the next target is tried; a trunk that
//! never answers fails by Timer B with `trunk_timeout`. The ring timeout counts from the first
//! provisional response (`100 Trying` included), so only a call that reached the trunk ends as
//! `no_answer`. `transport_error` is left for a message that could not be sent otherwise (a
//! local send error, a TCP connect that timed out, a connection that broke).
//!
//! ```no_run
//! # async fn demo() -> Result<(), dialtone_sip_ua::UaError> {
//! use std::sync::Arc;
//! use dialtone_sip_ua::{DialRequest, SipUa, Transport, Trunk, UaConfig, UaEvent};
//!
//! let ua = SipUa::start(UaConfig::new("127.0.0.1:5060".parse().unwrap())).await?;
//! let trunk = Arc::new(Trunk::new("local", "127.0.0.1", Transport::Udp));
//! let mut call = ua.dial(DialRequest::new(trunk, "+15559870000", "+15551230000")).await?;
//! while let Some(event) = call.next_event().await {
//!     println!("{event:?}");
//!     if matches!(event, UaEvent::Call(dialtone_sip_ua::CallEvent::Answered { .. })) {
//!         call.hang_up()?;
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod dns;
mod driver;
mod health;
mod tcp;
mod tls;
mod trunk;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use dialtone_sip_core::refusals::RefusalBudget;
pub use dialtone_sip_core::{
    CallEvent, Credentials, EndReason, EndpointStats, IncomingCall, Leftover, Party, TimerConfig,
    Transport,
};
pub use health::{Registration, RegistrationState, TrunkHealth, TrunkMonitor};
/// The SIP method of an in-dialog request's outcome ([`CallEvent::RequestCompleted`]).
pub use rsip::Method;
pub use tls::{TlsListen, TlsSettingError, TrunkTls, check_settings as check_tls_settings};
pub use trunk::{Admission, TokenBucket, Trunk};

use driver::Command;

/// Errors from the user agent's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UaError {
    /// The SIP socket could not be bound.
    #[error("cannot bind SIP {transport} on {addr}: {source}")]
    Bind {
        /// `UDP` or `TCP`.
        transport: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The trunk's host name did not resolve.
    #[error("trunk {trunk}: cannot resolve {host}: {source}")]
    Resolve {
        /// Trunk name.
        trunk: String,
        /// The host looked up.
        host: String,
        /// The resolver's error.
        source: dns::DnsError,
    },
    /// The DNS resolver could not be set up.
    #[error("cannot set up DNS: {source}")]
    Dns {
        /// Why.
        source: dns::DnsError,
    },
    /// The trunk's host resolved to nothing.
    #[error("trunk {trunk}: {host} resolved to no address")]
    NoAddress {
        /// Trunk name.
        trunk: String,
        /// The host looked up.
        host: String,
    },
    /// The trunk stayed at its concurrency cap for the whole wait.
    #[error("trunk {trunk} is at its cap of {max} concurrent calls")]
    ConcurrencyCap {
        /// Trunk name.
        trunk: String,
        /// The cap.
        max: u32,
    },
    /// The trunk's calls-per-second cap left no slot within the wait.
    #[error("trunk {trunk} is at its cap of {max} new calls per second")]
    RateCap {
        /// Trunk name.
        trunk: String,
        /// The cap.
        max: u32,
    },
    /// A number that is not E.164 (`+`, then 2–15 digits, the first not 0).
    #[error("{field} {value:?} is not an E.164 number")]
    InvalidNumber {
        /// `from` or `to`.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A trunk's TLS settings cannot be used (a broken PEM, a host that is no TLS name).
    #[error("trunk {trunk}: TLS: {reason}")]
    Tls {
        /// Trunk name.
        trunk: String,
        /// What is wrong.
        reason: String,
    },
    /// Our TLS listener's certificate or key cannot be used.
    #[error("SIP TLS listener: {reason}")]
    TlsListener {
        /// What is wrong.
        reason: String,
    },
    /// The core refused the request (malformed header, call state).
    #[error(transparent)]
    Core(#[from] dialtone_sip_core::Error),
    /// The call has ended: nothing more can be asked of it.
    #[error("the call has ended")]
    CallEnded,
    /// The user agent has shut down.
    #[error("the SIP user agent has stopped")]
    Stopped,
}

/// Configuration of the user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaConfig {
    /// Address for the UDP socket and the TCP listener (port 0 picks one for both).
    pub bind: SocketAddr,
    /// Host written in Via/Contact (the public address behind NAT); the bound IP when `None`.
    pub advertised_host: Option<String>,
    /// Port written in Via/Contact; the bound port when `None`.
    pub advertised_port: Option<u16>,
    /// A TLS listener for requests trunks send us over TLS (a BYE in a TLS call's dialog);
    /// without one, TLS trunks reach us only over the connections we open.
    pub tls: Option<TlsListen>,
    /// Port written in Via/Contact over TLS; the TLS listener's bound port when `None`.
    pub advertised_tls_port: Option<u16>,
    /// SIP timers.
    pub timers: TimerConfig,
    /// Interval of CRLF keep-alive pings on idle TCP connections.
    pub tcp_keepalive: Duration,
    /// Reproducible branches, tags and Call-IDs from this seed, for tests; `None` (the
    /// default, and what production uses) draws them from a CSPRNG keyed by the OS.
    pub seed: Option<u64>,
    /// The one name server to ask for trunks' SRV (RFC 3263) and A/AAAA records, over UDP and
    /// TCP on its port; the system's (`/etc/resolv.conf`) when `None`.
    pub dns_server: Option<SocketAddr>,
    /// Take calls placed to us: they come out of [`SipUa::incoming_calls`]; without, a new
    /// INVITE is answered `480`.
    pub inbound: bool,
    /// How many inbound INVITEs a source may have refused (`403`/`404`) before it is no
    /// longer answered.
    pub refusals: RefusalBudget,
}

impl UaConfig {
    /// Defaults bound to `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            advertised_host: None,
            advertised_port: None,
            tls: None,
            advertised_tls_port: None,
            timers: TimerConfig::default(),
            tcp_keepalive: Duration::from_secs(30),
            seed: None,
            dns_server: None,
            inbound: false,
            refusals: RefusalBudget::default(),
        }
    }
}

/// One call to place through a trunk. `Debug` shows the offer's length, not the offer, whose
/// SDES keys (RFC 4568) must stay out of the logs.
#[derive(Clone)]
pub struct DialRequest {
    /// The trunk to place it through.
    pub trunk: Arc<Trunk>,
    /// Trunks to fail over to, in order, when every target of the previous one failed with a
    /// timeout, a transport error or a 5xx that means "try elsewhere".
    pub fallback_trunks: Vec<Arc<Trunk>>,
    /// Caller ID (E.164).
    pub from: String,
    /// Destination (E.164).
    pub to: String,
    /// Our SDP offer.
    pub sdp_offer: Option<Vec<u8>>,
    /// Extra headers (`X-...`).
    pub extra_headers: Vec<(String, String)>,
    /// Add `P-Asserted-Identity` with the caller ID.
    pub assert_identity: bool,
    /// Cancel with end reason `no_answer` when not answered within this time of the first
    /// provisional response (any 1xx); without one, the INVITE's Timer B ends the attempt.
    pub ring_timeout: Duration,
    /// Failover to the next target is tried only within this time from the dial.
    pub setup_deadline: Duration,
}

impl std::fmt::Debug for DialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialRequest")
            .field("trunk", &self.trunk)
            .field("fallback_trunks", &self.fallback_trunks)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("sdp_offer_bytes", &self.sdp_offer.as_ref().map(Vec::len))
            .field("extra_headers", &self.extra_headers)
            .field("assert_identity", &self.assert_identity)
            .field("ring_timeout", &self.ring_timeout)
            .field("setup_deadline", &self.setup_deadline)
            .finish()
    }
}

impl DialRequest {
    /// A request with a 30 s ring timeout and a 60 s setup deadline.
    pub fn new(trunk: Arc<Trunk>, from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            trunk,
            fallback_trunks: Vec::new(),
            from: from.into(),
            to: to.into(),
            sdp_offer: None,
            extra_headers: Vec::new(),
            assert_identity: false,
            ring_timeout: Duration::from_secs(30),
            setup_deadline: Duration::from_secs(60),
        }
    }
}

/// What a call reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UaEvent {
    /// An INVITE left for `target` with this SIP Call-ID (once per failover attempt).
    Attempt {
        /// The SIP Call-ID of this attempt.
        sip_call_id: String,
        /// The address the INVITE went to.
        target: SocketAddr,
    },
    /// What ending the call from another process needs: sent before a provisional response
    /// or the answer is announced, for the owner to keep (a crash then leaves a call that the
    /// next start can still hang up, [`SipUa::end_leftover`]).
    Leftover(Box<Leftover>),
    /// A call event from the SIP core.
    Call(CallEvent),
}

impl UaEvent {
    /// Whether this is the call's last event.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            UaEvent::Call(CallEvent::Failed { .. } | CallEvent::Ended { .. })
        )
    }
}

/// Counts for monitoring and leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UaStats {
    /// The core's counters.
    pub endpoint: EndpointStats,
    /// Calls the core still tracks (including ones absorbing retransmissions).
    pub core_calls: usize,
    /// Calls whose owner has not yet seen the final event.
    pub live_calls: usize,
    /// Open TCP and TLS connections.
    pub tcp_connections: usize,
}

/// A running user agent; clones share it. Dropping the last clone stops the driver.
#[derive(Debug, Clone)]
pub struct SipUa {
    commands: mpsc::UnboundedSender<Command>,
    local_addr: SocketAddr,
    tls_local_addr: Option<SocketAddr>,
    gates: Arc<trunk::Gates>,
    dns: dns::Resolver,
    /// Calls placed to us, until [`SipUa::incoming_calls`] takes them.
    incoming: Arc<std::sync::Mutex<Option<mpsc::UnboundedReceiver<Incoming>>>>,
}

/// A call placed to us: its handle and what its INVITE said. Ring, answer or refuse it with
/// the handle; dropping the handle before the answer refuses it (`480`).
#[derive(Debug)]
pub struct Incoming {
    /// The call.
    pub call: Call,
    /// What the INVITE said (source, numbers, Call-ID, SDP offer).
    pub offer: IncomingCall,
}

impl SipUa {
    /// Binds UDP and TCP on `config.bind` and starts the driver.
    pub async fn start(config: UaConfig) -> Result<Self, UaError> {
        let gates = Arc::new(trunk::Gates::default());
        let dns =
            dns::Resolver::new(config.dns_server).map_err(|source| UaError::Dns { source })?;
        let bound = driver::spawn(config, gates.clone()).await?;
        Ok(Self {
            commands: bound.commands,
            local_addr: bound.local,
            tls_local_addr: bound.tls_local,
            gates,
            dns,
            incoming: Arc::new(std::sync::Mutex::new(Some(bound.incoming))),
        })
    }

    /// The calls placed to us (with [`UaConfig::inbound`]), for the one owner that takes them;
    /// `None` once taken.
    pub fn incoming_calls(&self) -> Option<mpsc::UnboundedReceiver<Incoming>> {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The addresses a trunk's host resolves to (its SRV targets', or its A/AAAA records).
    pub async fn resolve(&self, trunk: &Trunk) -> Result<Vec<SocketAddr>, UaError> {
        trunk.resolve(&self.dns).await
    }

    fn send(&self, command: Command) -> Result<(), UaError> {
        self.commands.send(command).map_err(|_| UaError::Stopped)
    }

    /// The bound address (UDP and TCP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's bound address, when there is one.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    /// Places a call. Waits (bounded by the trunk's `cap_wait`) for the trunk's caps, resolves
    /// the trunk's targets, sends the INVITE and returns the call handle.
    pub async fn dial(&self, request: DialRequest) -> Result<Call, UaError> {
        check_e164("from", &request.from)?;
        check_e164("to", &request.to)?;
        let admission = self.admit(&request.trunk).await?;
        self.dial_admitted(request, admission).await
    }

    /// Waits (bounded by the trunk's `cap_wait`, first come first served) for room under the
    /// trunk's caps. Dropping the future while it waits leaves the queue; pass the admission to
    /// [`SipUa::dial_admitted`].
    pub async fn admit(&self, trunk: &Trunk) -> Result<Admission, UaError> {
        self.gates.admit(trunk).await
    }

    /// Places a call with room already taken under its trunk's caps ([`SipUa::admit`]).
    pub async fn dial_admitted(
        &self,
        request: DialRequest,
        admission: Admission,
    ) -> Result<Call, UaError> {
        check_e164("from", &request.from)?;
        check_e164("to", &request.to)?;
        let permit = admission.permit;
        let mut targets = Vec::new();
        for trunk in std::iter::once(&request.trunk).chain(&request.fallback_trunks) {
            match trunk.resolve(&self.dns).await {
                Ok(addrs) => targets.extend(addrs.into_iter().map(|a| (trunk.clone(), a))),
                // A fallback that does not resolve is skipped; the primary must resolve.
                Err(e) if Arc::ptr_eq(trunk, &request.trunk) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "skipping fallback trunk"),
            }
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply, id) = oneshot::channel();
        self.commands
            .send(Command::Dial {
                request,
                targets,
                events: events_tx,
                permit,
                reply,
            })
            .map_err(|_| UaError::Stopped)?;
        let id = id.await.map_err(|_| UaError::Stopped)??;
        Ok(Call {
            id,
            events,
            commands: self.commands.clone(),
            finished: false,
        })
    }

    /// Ends a call another process left, from what it kept ([`UaEvent::Leftover`]): a BYE in
    /// its dialog, or a CANCEL of its INVITE, through `trunk` (the call's, when it still
    /// exists: a TLS trunk's connection needs its settings). Returns the call's final event
    /// (the BYE's answer, or a timeout after 64·T1); the caller bounds how long it waits.
    pub async fn end_leftover(
        &self,
        leftover: Leftover,
        trunk: Option<Arc<Trunk>>,
    ) -> Result<CallEvent, UaError> {
        let (reply, ended) = oneshot::channel();
        self.send(Command::EndLeftover {
            leftover: Box::new(leftover),
            trunk,
            reply,
        })?;
        ended.await.map_err(|_| UaError::Stopped)?
    }

    /// Says whether this node takes new calls: while it does not, an OPTIONS probe outside a
    /// dialog is answered 503, so an edge proxy probing its nodes sends the calls elsewhere.
    pub fn set_available(&self, available: bool) -> Result<(), UaError> {
        self.commands
            .send(Command::SetAvailable(available))
            .map_err(|_| UaError::Stopped)
    }

    /// Counters and live object counts.
    pub async fn stats(&self) -> Result<UaStats, UaError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats { reply })
            .map_err(|_| UaError::Stopped)?;
        rx.await.map_err(|_| UaError::Stopped)
    }
}

/// `+` then 2–15 digits, the first not 0.
fn check_e164(field: &'static str, value: &str) -> Result<(), UaError> {
    let digits = value.strip_prefix('+').unwrap_or("");
    let ok = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(UaError::InvalidNumber {
            field,
            value: value.to_owned(),
        })
    }
}

/// One call, placed by us or to us. Dropping it before the call ended hangs up.
#[derive(Debug)]
pub struct Call {
    pub(crate) id: u64,
    pub(crate) events: mpsc::UnboundedReceiver<UaEvent>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) finished: bool,
}

impl Call {
    /// The next event; `None` after the final one.
    pub async fn next_event(&mut self) -> Option<UaEvent> {
        if self.finished {
            return None;
        }
        let event = self.events.recv().await;
        if event.as_ref().is_none_or(UaEvent::is_final) {
            self.finished = true;
        }
        event
    }

    fn command(&self, command: Command) -> Result<(), UaError> {
        self.commands.send(command).map_err(|_| UaError::Stopped)
    }

    /// Hangs up: CANCEL before the answer, BYE after.
    pub fn hang_up(&self) -> Result<(), UaError> {
        self.command(Command::HangUp { call: self.id })
    }

    /// Rings a call placed to us (`180 Ringing`), routed to `trunk`: what the call later
    /// sends in its dialog to a number (a transfer's `Refer-To`) goes through that trunk.
    pub fn ring(&self, trunk: Arc<Trunk>) -> Result<(), UaError> {
        self.command(Command::Ring {
            call: self.id,
            trunk,
        })
    }

    /// Answers a call placed to us with our SDP (`200 OK`); [`CallEvent::Answered`] follows
    /// once the caller acknowledges it.
    pub fn accept(&self, sdp: Vec<u8>) -> Result<(), UaError> {
        self.command(Command::Accept { call: self.id, sdp })
    }

    /// Refuses a call placed to us with `status` (`403`, `404`, `486`, `488` ...); `charged`:
    /// the refusal spends its source's budget (a stranger's, not a trusted trunk's).
    pub fn refuse(&self, status: u16, charged: bool) -> Result<(), UaError> {
        self.command(Command::Refuse {
            call: self.id,
            status,
            charged,
        })
    }

    /// Answers the far end's re-INVITE/UPDATE offer with our SDP.
    pub fn answer_offer(&self, sdp: Vec<u8>) -> Result<(), UaError> {
        self.command(Command::AnswerOffer { call: self.id, sdp })
    }

    /// Refuses the far end's offer with `status` (e.g. 488).
    pub fn reject_offer(&self, status: u16) -> Result<(), UaError> {
        self.command(Command::RejectOffer {
            call: self.id,
            status,
        })
    }

    /// Transfers the answered call blind (RFC 3515): a REFER asking the far end to call `to`,
    /// an E.164 number (sent as the trunk's URI for it, like the INVITE's Request-URI) or a SIP
    /// URI (sent as given). The REFER's answer comes as [`CallEvent::RequestCompleted`], the
    /// far end's progress as [`CallEvent::ReferNotify`]. Refused when the call is not answered,
    /// a REFER of it is still under way, or `to` is neither.
    pub async fn refer(&self, to: &str) -> Result<(), UaError> {
        if to.starts_with('+') {
            check_e164("refer_to", to)?;
        }
        let (reply, done) = oneshot::channel();
        self.command(Command::Refer {
            call: self.id,
            to: to.to_owned(),
            reply,
        })?;
        done.await.map_err(|_| UaError::Stopped)?
    }

    /// Sends a DTMF digit as SIP INFO (`application/dtmf-relay`), the fallback when the trunk
    /// does not take RFC 4733 events.
    pub fn send_dtmf_info(&self, digit: char, duration: Duration) -> Result<(), UaError> {
        let body = format!("Signal={digit}\r\nDuration={}\r\n", duration.as_millis());
        self.command(Command::Request {
            call: self.id,
            method: rsip::Method::Info,
            body: Some(("application/dtmf-relay".into(), body.into_bytes())),
        })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.commands.send(Command::HangUp { call: self.id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_requests_debug_keeps_the_offers_keys_out() {
        let mut request = DialRequest::new(
            Arc::new(Trunk::new("t", "127.0.0.1", Transport::Tls)),
            "+15550001111",
            "+15550002222",
        );
        request.sdp_offer = Some(
            b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
                .to_vec(),
        );
        let shown = format!("{request:?}");
        assert!(!shown.contains("inline"), "{shown}");
        assert!(shown.contains("sdp_offer_bytes: Some(84)"), "{shown}");
    }
}

//! # dialtone-peers — real peers, started on this machine
//!
//! What `dialtone demo` needs to place its call against a peer that is not Dialtone, and what the
//! tests (through `dialtone-test-support`, which re-exports all of it) share with it:
//!
//! * [`Sipp`] — SIPp (Debian package `sip-tester`) on a free loopback port with one of the
//!   [`scenario`] files shipped in this crate, ready once it has bound its port (readiness, not a
//!   fixed sleep), judged by its exit status, killed when dropped;
//! * [`capture`] — RTP captures SIPp replays with `play_pcap_audio`: one stream of 20 ms PCMU
//!   packets with RFC 4733 digits taken from the captures SIPp ships ([`dtmf`]), on one SSRC with
//!   continuous sequence numbers and media clock, as a telephone sends them;
//! * [`WorkDir`] — a private, uniquely named directory under the system's temporary directory,
//!   removed with everything in it when dropped.
//!
//! Everything listens on 127.0.0.1 only. Nothing here is test-only: it is built into the
//! `dialtone` CLI for its demo.

mod bound;
pub mod capture;
pub mod dtmf;
mod pcap;
mod sipp;
mod work_dir;

use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

pub use sipp::{Sipp, SippOptions, scenario, sipp_play_pcap};
pub use work_dir::WorkDir;

/// Errors starting or judging a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Reading the scenario or writing the work directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer did not bind its port in time.
    #[error("{peer} did not bind port {port} within {seconds} s")]
    NotReady {
        /// Which program.
        peer: &'static str,
        /// The port.
        port: u16,
        /// How long we waited.
        seconds: u64,
    },
    /// The peer did not finish in time (it was killed).
    #[error("{peer} did not finish within {seconds} s")]
    Timeout {
        /// Which program.
        peer: &'static str,
        /// How long we waited.
        seconds: u64,
    },
    /// The peer finished and reported failed calls.
    #[error("{peer} failed ({status}):\n{log}")]
    Failed {
        /// Which program.
        peer: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr and error traces.
        log: String,
    },
    /// A file did not hold what it should (a capture that is no RTP capture).
    #[error("{what}")]
    Invalid {
        /// What was wrong, and in which file.
        what: String,
    },
}

impl PeerError {
    /// An OS error while doing `what`, for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PeerError {
        let what = what.into();
        move |source| PeerError::Io { what, source }
    }
}

/// SIP transport for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    /// UDP, one socket.
    Udp,
    /// TCP, one connection per peer.
    Tcp,
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> Result<u16, PeerError> {
    loop {
        let udp =
            UdpSocket::bind("127.0.0.1:0").map_err(PeerError::io("binding a probe socket"))?;
        let port = udp
            .local_addr()
            .map_err(PeerError::io("reading a probe port"))?
            .port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// Readiness of a peer: waits (at most [`READINESS_LIMIT`]) until its `port` on 127.0.0.1 is
/// bound, which it is once the peer listens.
pub fn wait_port_bound(
    peer: &'static str,
    port: u16,
    transport: SipTransport,
) -> Result<(), PeerError> {
    wait_port_bound_on(peer, "127.0.0.1", port, transport)
}

/// How long a peer may take to bind its port: generous, because peers start slowly on a machine
/// busy building and testing, and a ready peer ends the wait at once.
pub const READINESS_LIMIT: Duration = Duration::from_secs(30);

/// [`wait_port_bound`] on another loopback address `ip`. A UDP port is looked up in the kernel's
/// socket tables, never bound by the probe (which could take it from the peer starting); a TCP
/// port is connected to.
pub fn wait_port_bound_on(
    peer: &'static str,
    ip: &str,
    port: u16,
    transport: SipTransport,
) -> Result<(), PeerError> {
    let address: IpAddr = ip.parse().map_err(|_| PeerError::Invalid {
        what: format!("{ip} is not an IP address"),
    })?;
    let deadline = Instant::now() + READINESS_LIMIT;
    while Instant::now() < deadline {
        let bound = match transport {
            SipTransport::Udp => bound::udp_port_bound(address, port)?,
            SipTransport::Tcp => TcpStream::connect((address, port)).is_ok(),
        };
        if bound {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(PeerError::NotReady {
        peer,
        port,
        seconds: READINESS_LIMIT.as_secs(),
    })
}

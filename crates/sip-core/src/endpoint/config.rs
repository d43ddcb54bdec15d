//! The static configuration of an [`Endpoint`](super::Endpoint): [`EndpointConfig`].

use super::Transport;
use crate::refusals::RefusalBudget;
use crate::transaction::TimerConfig;

/// Static configuration of an [`Endpoint`](super::Endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Host written in Via sent-by and Contact (the advertised, public address behind NAT).
    pub advertised_host: String,
    /// Port written in Via sent-by and Contact (UDP and TCP).
    pub advertised_port: u16,
    /// Port of the TLS listener written in Via sent-by and Contact for TLS; the UDP/TCP port
    /// when `None` (no TLS listener: peers answer over the connection we opened).
    pub advertised_tls_port: Option<u16>,
    /// User part of our Contact URI.
    pub contact_user: String,
    /// The User-Agent header value.
    pub user_agent: String,
    /// T1, T2, T4 and Timer D.
    pub timers: TimerConfig,
    /// How many authenticated attempts a request may make; after the first, only a
    /// `stale=true` challenge earns another.
    pub max_auth_attempts: u32,
    /// Take calls placed to us (new INVITEs are reported as incoming calls); without, they
    /// are answered `480`.
    pub accept_inbound: bool,
    /// How many inbound INVITEs a source may have refused before it is no longer answered.
    pub refusals: RefusalBudget,
}

impl EndpointConfig {
    /// Defaults for an endpoint advertised at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            advertised_host: host.into(),
            advertised_port: port,
            advertised_tls_port: None,
            contact_user: "dialtone".into(),
            user_agent: concat!("Dialtone/", env!("CARGO_PKG_VERSION")).into(),
            timers: TimerConfig::default(),
            max_auth_attempts: 2,
            accept_inbound: false,
            refusals: RefusalBudget::default(),
        }
    }

    /// `host:port` of Via sent-by and Contact for `transport`.
    pub(super) fn sent_by(&self, transport: Transport) -> String {
        let port = match transport {
            Transport::Tls => self.advertised_tls_port.unwrap_or(self.advertised_port),
            Transport::Udp | Transport::Tcp => self.advertised_port,
        };
        if self.advertised_host.contains(':') && !self.advertised_host.starts_with('[') {
            format!("[{}]:{port}", self.advertised_host)
        } else {
            format!("{}:{port}", self.advertised_host)
        }
    }
}

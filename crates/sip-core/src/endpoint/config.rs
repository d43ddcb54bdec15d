//! The static configuration of an [`Endpoint`](super::Endpoint): [`EndpointConfig`].

use crate::transaction::TimerConfig;

/// Static configuration of an [`Endpoint`](super::Endpoint).
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

    pub(super) fn sent_by(&self) -> String {
        if self.advertised_host.contains(':') && !self.advertised_host.starts_with('[') {
            format!("[{}]:{}", self.advertised_host, self.advertised_port)
        } else {
            format!("{}:{}", self.advertised_host, self.advertised_port)
        }
    }
}

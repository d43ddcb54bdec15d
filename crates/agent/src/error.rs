//! [`AgentError`]: how a provider failed. Every variant names the provider (its name as the
//! organisation gave it, or `builtin:espeak`), so the call record's `brain_error` message says
//! which service broke and how; none carries an API key.

use std::time::Duration;

/// A provider's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// It answered with an HTTP error status.
    #[error("{provider} answered HTTP {status}: {detail}")]
    Status {
        /// The provider.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The start of its error body.
        detail: String,
    },
    /// It did not answer (or send the first token, or the next chunk) in time.
    #[error("{provider} did not answer within {} ms", after.as_millis())]
    Timeout {
        /// The provider.
        provider: String,
        /// How long was waited.
        after: Duration,
    },
    /// It could not be reached (connection refused, reset, DNS, TLS).
    #[error("{provider} could not be reached: {detail}")]
    Unreachable {
        /// The provider.
        provider: String,
        /// What went wrong.
        detail: String,
    },
    /// Its address is one the outbound-address policy refuses (checked as the connection is
    /// made, so a name that re-resolves to a private address is caught).
    #[error("{provider} is on an address that is refused: {detail}")]
    Refused {
        /// The provider.
        provider: String,
        /// Why.
        detail: String,
    },
    /// It answered with something that does not follow its protocol.
    #[error("{provider} sent an answer that could not be read: {detail}")]
    Protocol {
        /// The provider.
        provider: String,
        /// What was wrong with it.
        detail: String,
    },
}

impl AgentError {
    /// Whether asking again may help: a timeout, no connection, 408, 429 or a 5xx. A 4xx says
    /// the request itself is wrong (a bad key, an unknown model) and is not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::Timeout { .. } | Self::Unreachable { .. } => true,
            Self::Protocol { .. } | Self::Refused { .. } => false,
        }
    }

    /// The provider that failed.
    pub fn provider(&self) -> &str {
        match self {
            Self::Status { provider, .. }
            | Self::Timeout { provider, .. }
            | Self::Unreachable { provider, .. }
            | Self::Refused { provider, .. }
            | Self::Protocol { provider, .. } => provider,
        }
    }

    /// What went wrong, as a metric label: `status`, `timeout`, `unreachable`, `refused` or
    /// `protocol` (never the provider's name, which is a tenant's).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::Timeout { .. } => "timeout",
            Self::Unreachable { .. } => "unreachable",
            Self::Refused { .. } => "refused",
            Self::Protocol { .. } => "protocol",
        }
    }
}

//! # dialtone-sip-core — sans-IO SIP for Dialtone
//!
//! This crate is the protocol half of Dialtone's SIP user agent: RFC 3261 message validation,
//! the four transaction state machines (§17), UAC dialogs (§12, §13), CANCEL (§9), forking,
//! digest authentication (RFC 7616/8760), and calls placed to us (UAS dialogs, with a budget of
//! refusals per source address, [`refusals`]). It never owns a socket and never reads a clock, in
//! the manner of quinn-proto:
//!
//! * input: [`Endpoint::handle_message`] (one framed message from a peer),
//!   [`Endpoint::handle_timeout`], and commands such as [`Endpoint::dial`],
//!   [`Endpoint::accept`] and [`Endpoint::hang_up`], each taking `now`;
//! * output: [`Endpoint::poll_transmit`] (bytes for an address), [`Endpoint::poll_timeout`]
//!   (when to call `handle_timeout` next) and [`Endpoint::poll_event`] (what happened to a call).
//!
//! Messages are carried as `rsip` types; [`scan`] and [`validate`] form the layer in front of
//! it that unfolds lines, frames by `Content-Length`, reads every URI ([`uri`]) and structured
//! header ([`fields`]) with the RFC 3261 grammar, and answers what is wrong (`400` with a
//! reason naming the fault, `416`, `420`, `501`, `505`). Stream transports cut messages out of
//! the byte stream with [`framing::StreamFramer`].
//!
//! Branches, tags and Call-IDs come from a CSPRNG keyed once, when the core is built: from the
//! operating system by [`Endpoint::with_os_rng`] in production, from a seed by [`Endpoint::new`]
//! where a test wants the same messages on every run.
//!
//! ```
//! use std::time::Instant;
//! use dialtone_sip_core::{Endpoint, EndpointConfig, OutboundCall, Transport};
//!
//! let mut ep = Endpoint::with_os_rng(EndpointConfig::new("192.0.2.10", 5060));
//! let now = Instant::now();
//! let call = ep
//!     .dial(now, OutboundCall::new(
//!         "sip:+15551230000@192.0.2.20",
//!         "<sip:+15559870000@192.0.2.10>",
//!         "<sip:+15551230000@192.0.2.20>",
//!         "192.0.2.20:5060".parse().unwrap(),
//!         Transport::Udp,
//!     ))
//!     .unwrap();
//! let invite = ep.poll_transmit().unwrap();
//! assert!(invite.payload.starts_with(b"INVITE sip:+15551230000@192.0.2.20 SIP/2.0\r\n"));
//! assert!(ep.poll_timeout().is_some()); // Timer A
//! # let _ = call;
//! ```

pub mod auth;
pub mod end_reason;
mod endpoint;
pub mod fields;
pub mod framing;
mod ids;
mod message;
pub mod refusals;
/// Header values by name (case-insensitive) from a parsed message's headers.
pub mod headers {
    pub use crate::message::{first, values};
}
pub mod scan;
mod session_timer;
pub mod transaction;
pub mod uri;
pub mod validate;

pub use auth::{Challenge, Credentials, DigestAlgorithm};
pub use end_reason::{EndReason, should_fail_over};
pub use endpoint::{
    CallEvent, CallHandle, Endpoint, EndpointConfig, EndpointStats, Event, IncomingCall, Leftover,
    OutOfDialogRequest, OutboundCall, Party, RequestHandle, RequestOutcome, Transmit, Transport,
    TransportFailure,
};
pub use ids::{IdGenerator, MAGIC_COOKIE};
pub use transaction::TimerConfig;

/// Errors from commands given to the core. Malformed network input is never an error here: it
/// is answered or dropped and counted in [`EndpointStats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A URI or name-addr given to [`Endpoint::dial`] does not parse.
    #[error("{field} is not a valid SIP URI or name-addr: {value:?}")]
    InvalidUri {
        /// Which field of the request.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// An extra header whose name is not a token or whose value spans lines.
    #[error("extra header {name:?} is not a valid SIP header")]
    InvalidHeader {
        /// The header name as given.
        name: String,
    },
    /// No call with this handle exists (any more).
    #[error("no call {call}")]
    UnknownCall {
        /// The handle given.
        call: CallHandle,
    },
    /// A method the out-of-dialog API does not send (only OPTIONS and REGISTER).
    #[error("{method} cannot be sent outside a dialog here (OPTIONS and REGISTER can)")]
    UnsupportedMethod {
        /// The method given.
        method: String,
    },
    /// No out-of-dialog request series with this handle exists.
    #[error("no request series {request}")]
    UnknownRequest {
        /// The handle given.
        request: RequestHandle,
    },
    /// The call's state does not allow the command.
    #[error("call {call} cannot {action} in its current state")]
    InvalidCallState {
        /// The handle given.
        call: CallHandle,
        /// The command refused.
        action: &'static str,
    },
    /// [`Endpoint::answer_offer`] without a re-INVITE or UPDATE waiting for an answer.
    #[error("call {call} has no offer waiting for an answer")]
    NoPendingOffer {
        /// The handle given.
        call: CallHandle,
    },
    /// A challenge in a scheme other than Digest.
    #[error("authentication scheme {scheme:?} is not supported")]
    UnsupportedAuthScheme {
        /// The scheme named by the challenge.
        scheme: String,
    },
    /// A Digest challenge without a required parameter.
    #[error("digest challenge lacks {missing}")]
    MalformedChallenge {
        /// The missing parameter.
        missing: &'static str,
    },
    /// A Digest algorithm other than MD5, MD5-sess, SHA-256, SHA-256-sess.
    #[error("digest algorithm {algorithm:?} is not supported")]
    UnsupportedDigestAlgorithm {
        /// The algorithm named by the challenge.
        algorithm: String,
    },
}

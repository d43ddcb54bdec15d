//! Transfers: the request (`POST /v1/calls/{id}/transfer`, gRPC `TransferCall`, the agent's
//! `transfer_call` tool), where it may go, and the record of the attempt on the call.
//!
//! A destination is an E.164 number (called through the call's trunk) or a `sip:` URI. A SIP
//! URI's host must be the trunk's own host or one of the trunk's `transfer_sip_domains`
//! ([`sip_host_allowed`]): no tenant can make the engine an open relay.
//!
//! The call object shows the last attempt as `transfer`
//! (`{"to", "mode", "status", "sip_status", "reason", "bridge"}`) and, once it succeeded,
//! `transferred_to`. A `bridge` transfer's second leg (the engine's own call to the
//! destination) is `transfer.bridge`: `{"sip_call_id", "answered_at", "duration_ms"}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::agent::TransferMode;
use crate::grammar::{is_host, is_sip_user};
use crate::number::is_e164;
use crate::parse::{FieldError, from_value};

/// A transfer request. `mode` defaults to the agent's destination's mode when `to` is one of
/// its `transfer_destinations`, else `refer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferCall {
    /// `+E164`, or a `sip:` URI whose host is the trunk's or in its `transfer_sip_domains`.
    pub to: String,
    /// `refer` (blind, RFC 3515) or `bridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TransferMode>,
}

impl TransferCall {
    /// Reads and checks a transfer body.
    pub fn from_json(body: Map<String, Value>) -> Result<Self, FieldError> {
        let request: Self = from_value(Value::Object(body))?;
        TransferTarget::parse(&request.to)?;
        Ok(request)
    }
}

/// Where a transfer goes, read from its `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// An E.164 number, reached through the call's trunk.
    Number(String),
    /// A SIP URI, sent as given.
    Sip {
        /// The URI.
        uri: String,
        /// Its host (without port), lower-cased, for the allow-list.
        host: String,
    },
}

impl TransferTarget {
    /// Reads `to`: an E.164 number or `sip:[user@]host[:port][;transport=…][;user=…]`; anything
    /// else (other parameters, URI headers) is a 400 naming `to`.
    pub fn parse(to: &str) -> Result<Self, FieldError> {
        if is_e164(to) {
            return Ok(Self::Number(to.to_owned()));
        }
        let invalid = || {
            FieldError::invalid(
                "to",
                "`to` must be an E.164 number (\"+14155550100\") or a SIP URI \
                 (\"sip:agent@pbx.example.com\", parameters `transport` and `user` only)",
            )
        };
        let rest = to.strip_prefix("sip:").ok_or_else(invalid)?;
        let (address, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (user, host_port) = match address.rsplit_once('@') {
            Some((user, host_port)) => (Some(user), host_port),
            None => (None, address),
        };
        // No URI headers (`?…`): a parser that splits on `?` first would read another host.
        if user.is_some_and(|u| !is_sip_user(u) || u.contains('?')) {
            return Err(invalid());
        }
        let host = match host_port.rsplit_once(':') {
            // An IPv6 reference keeps its colons inside the brackets.
            Some((host, port)) if !port.contains(']') => {
                if port.parse::<u16>().is_err() {
                    return Err(invalid());
                }
                host
            }
            _ => host_port,
        };
        // Only `transport` and `user`: `maddr` (RFC 3261 §19.1.1) would route the call to a
        // host the allow-list never saw.
        let params_ok = params.split(';').filter(|p| !p.is_empty()).all(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            matches!(name.to_ascii_lowercase().as_str(), "transport" | "user")
                && !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !is_host(host) || !params_ok {
            return Err(invalid());
        }
        Ok(Self::Sip {
            uri: to.to_owned(),
            host: host.trim_end_matches('.').to_ascii_lowercase(),
        })
    }

    /// What goes on the record and to the user agent: the number or the URI.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Number(n) => n,
            Self::Sip { uri, .. } => uri,
        }
    }
}

/// Whether a SIP destination on `host` may be reached from a call through a trunk on
/// `trunk_host` that allows `allowed` (its `transfer_sip_domains`): the trunk's own host or
/// one listed, compared without case. The one place this rule lives.
pub fn sip_host_allowed(host: &str, trunk_host: &str, allowed: &[String]) -> bool {
    let same = |a: &str, b: &str| {
        a.trim_end_matches('.')
            .eq_ignore_ascii_case(b.trim_end_matches('.'))
    };
    same(host, trunk_host) || allowed.iter().any(|d| same(host, d))
}

crate::names::wire_enum! {
    /// Where a transfer attempt stands.
    pub enum TransferStatus ("transfer status") {
        /// Asked for; the REFER is on its way.
        Pending = "pending",
        /// The far end accepted the REFER (202) and is calling the destination.
        Accepted = "accepted",
        /// The destination answered: the caller is theirs (`refer`: our leg ended; `bridge`:
        /// the engine relays the two legs until either hangs up).
        Completed = "completed",
        /// It did not happen; the call stayed with the agent (`reason` says why).
        Failed = "failed",
    }
}

crate::names::wire_enum! {
    /// Why a transfer attempt failed.
    pub enum TransferFailure ("transfer failure") {
        /// The far end refused the REFER (405, 501, 603...; `sip_status` has it), or never
        /// answered it (408).
        Refused = "refused",
        /// The far end's call to the destination failed (a NOTIFY with a failure sipfrag:
        /// `sip_status` is its status, 486 for a busy destination).
        DestinationFailed = "destination_failed",
        /// No final NOTIFY within the transfer timeout of the REFER's acceptance.
        Timeout = "timeout",
        /// The far end ended the subscription without a final status.
        SubscriptionEnded = "subscription_ended",
        /// The call ended before the transfer's outcome was known.
        CallEnded = "call_ended",
        /// `bridge`: the engine could not place the call to the destination (no media port,
        /// no room under the trunk's caps, the user agent refused it).
        Unavailable = "unavailable",
    }
}

impl TransferFailure {
    /// A sentence for the agent and for people.
    pub fn message(self) -> &'static str {
        match self {
            Self::Refused => "the carrier refused to transfer the call",
            Self::DestinationFailed => "the transfer destination could not be reached",
            Self::Timeout => "the transfer got no final answer in time",
            Self::SubscriptionEnded => "the carrier stopped reporting the transfer's progress",
            Self::CallEnded => "the call ended before the transfer completed",
            Self::Unavailable => "the call to the transfer destination could not be placed",
        }
    }
}

/// The last transfer attempt of a call, on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    /// The destination as asked (`+E164` or the SIP URI).
    pub to: String,
    /// How it was attempted.
    pub mode: TransferMode,
    /// Where it stands.
    pub status: TransferStatus,
    /// The SIP status that decided it: the REFER's answer or the NOTIFY's sipfrag status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<TransferFailure>,
    /// `bridge`: the second leg, once it was dialled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeLeg>,
}

/// A bridged transfer's second leg: the engine's call to the destination through the same
/// trunk, relayed to the caller once it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BridgeLeg {
    /// The second leg's SIP Call-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_call_id: Option<String>,
    /// When the destination answered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
    /// How long the legs were bridged, once either hung up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sip_uris_are_destinations_and_nothing_else() {
        assert_eq!(
            TransferTarget::parse("+14155550100").unwrap(),
            TransferTarget::Number("+14155550100".into())
        );
        assert_eq!(
            TransferTarget::parse("sip:agent@PBX.example.com:5070;transport=tcp").unwrap(),
            TransferTarget::Sip {
                uri: "sip:agent@PBX.example.com:5070;transport=tcp".into(),
                host: "pbx.example.com".into()
            }
        );
        assert!(matches!(
            TransferTarget::parse("sip:[2001:db8::1]:5060").unwrap(),
            TransferTarget::Sip { host, .. } if host == "[2001:db8::1]"
        ));
        for bad in [
            "14155550100",
            "+0123",
            "tel:+14155550100",
            "sip:",
            "sip:a@",
            "sip:a b@host",
            "sip:a@host:port",
            "sip:a@host\r\nX: y",
            "sip:a@host>;x",
            "http://example.com",
            "sip:desk@trunk.example;maddr=203.0.113.9",
            "sip:desk@trunk.example;lr;x=1",
            "sip:evil.example?x@trunk.example",
        ] {
            let error = TransferTarget::parse(bad).unwrap_err();
            assert_eq!(error.field, "to", "{bad}");
        }
    }

    #[test]
    fn sip_hosts_are_the_trunks_or_allowed_ones() {
        let allowed = vec!["pbx.example.com".to_owned()];
        assert!(sip_host_allowed(
            "sip.trunk.example",
            "SIP.trunk.example",
            &[]
        ));
        assert!(sip_host_allowed(
            "PBX.example.com.",
            "sip.trunk.example",
            &allowed
        ));
        assert!(!sip_host_allowed(
            "evil.example",
            "sip.trunk.example",
            &allowed
        ));
        assert!(!sip_host_allowed(
            "example.com",
            "sip.trunk.example",
            &allowed
        ));
    }

    #[test]
    fn a_request_names_its_bad_field() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let ok = TransferCall::from_json(body(serde_json::json!({"to": "+14155550100"}))).unwrap();
        assert_eq!(ok.mode, None);
        let error = TransferCall::from_json(body(serde_json::json!({"to": "sales"}))).unwrap_err();
        assert_eq!(error.field, "to");
        let error = TransferCall::from_json(body(
            serde_json::json!({"to": "+14155550100", "mode": "warm"}),
        ))
        .unwrap_err();
        assert_eq!(error.field, "mode");
        let error =
            TransferCall::from_json(body(serde_json::json!({"to": "+14155550100", "x": 1})))
                .unwrap_err();
        assert_eq!(error.field, "x");
    }
}

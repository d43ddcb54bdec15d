//! What the user agent's tests share: picking a call's events apart.

use std::net::SocketAddr;

use dialtone_sip_ua::{CallEvent, UaEvent};

/// The call events among `events`.
pub(crate) fn calls(events: &[UaEvent]) -> Vec<CallEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Call(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// The targets the attempts among `events` went to, in order.
pub(crate) fn attempts(events: &[UaEvent]) -> Vec<SocketAddr> {
    events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Attempt { target, .. } => Some(*target),
            _ => None,
        })
        .collect()
}

//! Blind transfer (RFC 3515, RFC 5589): the REFER we send in an answered call's dialog, the
//! implicit `refer` subscription it creates, and the NOTIFYs that report, as `message/sipfrag`
//! bodies (RFC 3420), how the far end's call to the transfer target goes.
//!
//! The REFER is an ordinary in-dialog request (CSeq, Route set, a digest retry after 401/407);
//! its final response comes as [`CallEvent::RequestCompleted`] with [`Method::Refer`]. Each
//! NOTIFY of the subscription is answered `200` and reported as [`CallEvent::ReferNotify`];
//! a NOTIFY for no subscription of ours gets `481` (RFC 6665 §4.1.3), one whose body is no
//! sipfrag status line `400`. A refused REFER, a NOTIFY whose `Subscription-State` is
//! `terminated`, or a new REFER ends the subscription.

use std::time::Instant;

use rsip::Method;

use super::call::Phase;
use super::transactions::{Purpose, ServerKey};
use super::{CallEvent, CallHandle, Endpoint};
use crate::Error;
use crate::message;

/// The `refer` subscription a REFER of ours created (or is about to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Subscription {
    /// The Refer-To URI.
    pub(super) refer_to: String,
    /// The REFER's CSeq: the subscription's `id` in the NOTIFYs' `Event` (RFC 3515 §2.4.6).
    pub(super) cseq: Option<u32>,
    /// Whether it is the dialog's first REFER, whose NOTIFYs may leave the `id` out (§2.4.6);
    /// those of any later one must carry it.
    pub(super) first_in_dialog: bool,
}

/// The status code of a `message/sipfrag` body's status line (`SIP/2.0 180 Ringing`).
pub(super) fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..700).contains(c))
}

/// The value of parameter `name` in a header value (`refer;id=7` → `7`).
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

impl Endpoint {
    /// Sends a REFER asking the far end of an answered call to call `refer_to` (a SIP URI),
    /// with our From as `Referred-By`. Its final response comes as
    /// [`CallEvent::RequestCompleted`], the transfer's progress as [`CallEvent::ReferNotify`].
    /// A subscription of an earlier REFER still open is forgotten (its owner gave up on it):
    /// its NOTIFYs get `481`, which ends it at the far end (RFC 6665 §4.1.3) — told apart by
    /// their `id`, which only the dialog's first REFER's NOTIFYs may leave out.
    pub fn refer(&mut self, now: Instant, handle: CallHandle, refer_to: &str) -> Result<(), Error> {
        let invalid = || Error::InvalidUri {
            field: "refer_to",
            value: refer_to.to_owned(),
        };
        if refer_to.contains(['\r', '\n', '<', '>', ' ']) {
            return Err(invalid());
        }
        rsip::Uri::try_from(refer_to).map_err(|_| invalid())?;
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(Error::UnknownCall { call: handle })?;
        if call.phase != Phase::Confirmed {
            return Err(Error::InvalidCallState {
                call: handle,
                action: "send a REFER",
            });
        }
        call.refer = Some(Subscription {
            refer_to: refer_to.to_owned(),
            cseq: None,
            first_in_dialog: call.refers_sent == 0,
        });
        call.refers_sent += 1;
        let sent = self.send_in_dialog(now, handle, None, Method::Refer, Purpose::InDialog, None);
        self.settle();
        if !sent {
            if let Some(call) = self.calls.get_mut(&handle) {
                call.refer = None;
            }
            return Err(Error::InvalidCallState {
                call: handle,
                action: "send a REFER (no route for it in the dialog)",
            });
        }
        Ok(())
    }

    /// The REFER-specific headers of the REFER sent with `cseq` (the subscription's id from
    /// then on, a digest retry's included): `Refer-To` and `Referred-By`.
    pub(super) fn refer_headers(&mut self, handle: CallHandle, cseq: u32) -> Vec<rsip::Header> {
        let Some(call) = self.calls.get_mut(&handle) else {
            return Vec::new();
        };
        let Some(subscription) = call.refer.as_mut() else {
            return Vec::new();
        };
        subscription.cseq = Some(cseq);
        let mut headers = vec![rsip::Header::Other(
            "Refer-To".into(),
            format!("<{}>", subscription.refer_to),
        )];
        if let Some(from) = message::uri_of_name_addr(&call.from) {
            headers.push(rsip::Header::Other(
                "Referred-By".into(),
                format!("<{from}>"),
            ));
        }
        headers
    }

    /// The final response (or no answer, 408) of REFER `request`: `false` when it is not the
    /// current subscription's REFER (an older one's late answer, to be dropped); a refusal of the
    /// current one means no subscription.
    pub(super) fn on_refer_final(
        &mut self,
        handle: CallHandle,
        request: &rsip::Request,
        status: u16,
    ) -> bool {
        let sent = message::cseq(&request.headers).map(|(seq, _)| seq);
        let Some(call) = self.calls.get_mut(&handle) else {
            return false;
        };
        let current = sent.is_some() && call.refer.as_ref().is_some_and(|s| s.cseq == sent);
        if current && status >= 300 {
            call.refer = None;
        }
        current
    }

    /// A NOTIFY in the call's dialog: `200` and reported when it belongs to our `refer`
    /// subscription and carries a sipfrag status line; `481` or `400` otherwise.
    pub(super) fn on_notify(&mut self, now: Instant, key: &ServerKey, handle: CallHandle) {
        let Some(request) = self.server_txs.get(key).map(|t| t.request.clone()) else {
            return;
        };
        let event = message::first(&request.headers, "Event").unwrap_or_default();
        let subscribed = self
            .calls
            .get(&handle)
            .and_then(|c| c.refer.as_ref())
            .is_some_and(|s| {
                let id = param(&event, "id");
                message::header_token(&event) == "refer"
                    && match id {
                        Some(id) => s.cseq.is_some_and(|c| c.to_string() == id),
                        None => s.first_in_dialog,
                    }
            });
        if !subscribed {
            self.stats.notifies_refused += 1;
            self.respond(now, key, 481, Vec::new(), None);
            return;
        }
        let is_sipfrag = message::first(&request.headers, "Content-Type")
            .is_some_and(|t| message::header_token(&t) == "message/sipfrag");
        let Some(status) = sipfrag_status(&request.body).filter(|_| is_sipfrag) else {
            self.stats.notifies_refused += 1;
            self.respond(now, key, 400, Vec::new(), None);
            return;
        };
        let terminated = message::first(&request.headers, "Subscription-State")
            .is_some_and(|s| message::header_token(&s) == "terminated");
        self.respond(now, key, 200, Vec::new(), None);
        if terminated && let Some(call) = self.calls.get_mut(&handle) {
            call.refer = None;
        }
        self.emit(handle, CallEvent::ReferNotify { status, terminated });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_status_lines_are_read_and_others_refused() {
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nFoo: x\r\n"),
            Some(486)
        );
        assert_eq!(sipfrag_status(b"SIP/2.0 2000 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 099 Low"), None);
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }

    #[test]
    fn event_tokens_and_ids_are_read() {
        assert_eq!(message::header_token(" Refer ;id=93"), "refer");
        assert_eq!(param("refer;id=93", "id").as_deref(), Some("93"));
        assert_eq!(param("refer", "id"), None);
        assert_eq!(
            message::header_token("terminated;reason=noresource"),
            "terminated"
        );
    }
}

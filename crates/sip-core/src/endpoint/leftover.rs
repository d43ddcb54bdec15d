//! A call's dialog as data ([`Leftover`]), taken when the call is answered or its INVITE
//! leaves, so that another process — the next start after a crash — can end it on the wire:
//! a BYE in the answered dialog (RFC 3261 §15.1.1), a CANCEL of the INVITE still pending
//! (§9.1), whose final response (487) the adopted INVITE transaction acknowledges. The new
//! call exists only to end: it reports [`CallEvent::Ended`] or
//! [`CallEvent::Failed`](super::CallEvent::Failed) like any other.

use std::net::SocketAddr;
use std::time::Instant;

use rsip::Method;
use serde::{Deserialize, Serialize};

use super::call::{Call, Dialog, Phase};
use super::transactions::{Owner, Purpose};
use super::{CallHandle, Endpoint, Transport};
use crate::Error;
use crate::message;

/// What ending a call needs once the process that placed it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Leftover {
    /// An answered call: a BYE in its dialog.
    Dialog {
        /// The Call-ID.
        call_id: String,
        /// Our From, with our tag.
        from: String,
        /// The To of the INVITE (the peer's tag is `remote_tag`).
        to: String,
        /// The peer's tag.
        remote_tag: String,
        /// The peer's Contact: the BYE's Request-URI.
        remote_target: String,
        /// The route set, in the order requests carry it.
        route_set: Vec<String>,
        /// The CSeq number our next request takes.
        next_cseq: u32,
        /// Where the call was placed through (the next hop when the route names no address).
        destination: SocketAddr,
        /// The transport to it.
        transport: Transport,
    },
    /// A call still being set up: a CANCEL of its INVITE.
    Inviting {
        /// The INVITE as last sent (its branch, Call-ID, CSeq and Route are the CANCEL's).
        invite: String,
        /// Where it went.
        destination: SocketAddr,
        /// The transport to it.
        transport: Transport,
    },
}

impl Leftover {
    /// Where the call was placed through, and the transport to it.
    pub fn destination(&self) -> (SocketAddr, Transport) {
        match self {
            Self::Dialog {
                destination,
                transport,
                ..
            }
            | Self::Inviting {
                destination,
                transport,
                ..
            } => (*destination, *transport),
        }
    }
}

impl Endpoint {
    /// What ending `handle` would need from another process: its dialog once answered, its
    /// INVITE while it is set up; `None` once it is ending or unknown.
    pub fn leftover(&self, handle: CallHandle) -> Option<Leftover> {
        let call = self.calls.get(&handle)?;
        match call.phase {
            Phase::Confirmed => {
                let dialog = call.dialog.as_ref()?;
                Some(Leftover::Dialog {
                    call_id: call.call_id.clone(),
                    from: call.from.clone(),
                    to: call.to.clone(),
                    remote_tag: dialog.remote_tag.clone(),
                    remote_target: dialog.remote_target.to_string(),
                    route_set: dialog.route_set.clone(),
                    next_cseq: call.next_cseq,
                    destination: call.destination,
                    transport: call.transport,
                })
            }
            Phase::Calling | Phase::Early => Some(Leftover::Inviting {
                invite: without_body(call.invite.as_ref()?).to_string(),
                destination: call.destination,
                transport: call.transport,
            }),
            Phase::Ending | Phase::Terminated => None,
        }
    }

    /// Ends a call another process left: sends the BYE of an answered one, the CANCEL of one
    /// still inviting. The call's end comes as its events.
    pub fn end_leftover(&mut self, now: Instant, leftover: &Leftover) -> Result<CallHandle, Error> {
        let invalid = |field: &'static str, value: &str| Error::InvalidUri {
            field,
            value: value.to_owned(),
        };
        let handle = CallHandle(self.next_handle);
        match leftover {
            Leftover::Dialog {
                call_id,
                from,
                to,
                remote_tag,
                remote_target,
                route_set,
                next_cseq,
                destination,
                transport,
            } => {
                let target = rsip::Uri::try_from(remote_target.as_str())
                    .map_err(|_| invalid("remote_target", remote_target))?;
                for route in route_set {
                    if message::uri_of_name_addr(route).is_none() {
                        return Err(invalid("route", route));
                    }
                }
                let mut call = ending_call(call_id, from, to, target.clone(), *destination);
                call.transport = *transport;
                call.next_cseq = *next_cseq;
                call.phase = Phase::Ending;
                call.dialog = Some(Dialog {
                    remote_tag: remote_tag.clone(),
                    remote_target: target,
                    route_set: route_set.clone(),
                    remote_cseq: None,
                });
                self.adopt(handle, call);
                self.send_in_dialog(now, handle, None, Method::Bye, Purpose::Bye, None);
            }
            Leftover::Inviting {
                invite,
                destination,
                transport,
            } => {
                let request = rsip::Request::try_from(invite.as_bytes())
                    .map_err(|_| invalid("invite", invite))?;
                let call_id =
                    message::call_id(&request.headers).ok_or_else(|| invalid("invite", invite))?;
                let mut call = ending_call(&call_id, "", "", request.uri.clone(), *destination);
                call.transport = *transport;
                call.phase = Phase::Early;
                call.got_provisional = true;
                call.invite = Some(request.clone());
                self.adopt(handle, call);
                let branch = message::top_via(&request.headers)
                    .and_then(|via| message::branch(&via))
                    .ok_or_else(|| invalid("invite", invite))?;
                self.adopt_invite_tx(
                    now,
                    Owner::Call(handle),
                    branch,
                    request,
                    (*destination, *transport),
                );
                self.hang_up(now, handle)?;
            }
        }
        self.settle();
        Ok(handle)
    }

    fn adopt(&mut self, handle: CallHandle, call: Call) {
        self.next_handle += 1;
        self.calls_by_id.insert(call.call_id.clone(), handle);
        self.calls.insert(handle, call);
    }
}

/// A call rebuilt only to be ended.
fn ending_call(
    call_id: &str,
    from: &str,
    to: &str,
    request_uri: rsip::Uri,
    destination: SocketAddr,
) -> Call {
    Call::calling(
        call_id.to_owned(),
        from.split_once(";tag=")
            .map(|(_, tag)| tag.split(';').next().unwrap_or(tag).to_owned())
            .unwrap_or_default(),
        from.to_owned(),
        to.to_owned(),
        request_uri,
        destination,
        Transport::Udp,
    )
}

/// `invite` without its body: a CANCEL needs only its headers, and the SDP may hold SRTP keys
/// that must not rest in storage.
fn without_body(invite: &rsip::Request) -> rsip::Request {
    let mut bare = invite.clone();
    bare.body = Vec::new();
    bare.headers.retain(|h| {
        !matches!(
            h,
            rsip::Header::ContentLength(_) | rsip::Header::ContentType(_)
        )
    });
    bare.headers.push(rsip::Header::ContentLength(
        rsip::headers::ContentLength::from(0u32),
    ));
    bare
}

//! Out-of-dialog request series: OPTIONS probes and REGISTER (RFC 3261 §10), with digest
//! retries and the granted lifetime.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::transactions::{Owner, Purpose};
use super::{Endpoint, Transport};
use crate::Error;
use crate::auth::{AuthSession, Credentials};
use crate::message::{self, request};

/// Identifies one series of out-of-dialog requests (an OPTIONS probe, a registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHandle(pub(super) u64);

impl fmt::Display for RequestHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request#{}", self.0)
    }
}

/// An out-of-dialog request: `OPTIONS` (a trunk keep-alive probe) or `REGISTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfDialogRequest {
    /// `OPTIONS` or `REGISTER`.
    pub method: Method,
    /// The Request-URI (the trunk, or the registrar's domain).
    pub request_uri: String,
    /// The From value as a name-addr (the address of record for REGISTER); the core adds a tag.
    pub from: String,
    /// The To value as a name-addr.
    pub to: String,
    /// The resolved next hop.
    pub destination: SocketAddr,
    /// The transport to it.
    pub transport: Transport,
    /// Digest credentials for 401/407.
    pub credentials: Option<Credentials>,
    /// REGISTER: the binding's lifetime in seconds (0 removes it).
    pub expires: Option<u32>,
}

/// The final answer to an out-of-dialog request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOutcome {
    /// Which series.
    pub request: RequestHandle,
    /// The final status; 408 when nothing answered, 503 when the transport failed.
    pub status: u16,
    /// REGISTER: the lifetime the registrar granted (Expires header or Contact `expires`).
    pub expires: Option<u32>,
}

#[derive(Debug)]
pub(super) struct Standalone {
    pub(super) spec: OutOfDialogRequest,
    pub(super) uri: rsip::Uri,
    pub(super) call_id: String,
    pub(super) from: String,
    pub(super) next_cseq: u32,
    pub(super) auth: AuthSession,
}

impl Endpoint {
    /// Starts a series of out-of-dialog requests and sends the first. Later requests of the
    /// series ([`Endpoint::repeat_request`]) reuse its Call-ID and From tag with a higher CSeq,
    /// as a registration refresh must (RFC 3261 §10.2).
    pub fn send_out_of_dialog(
        &mut self,
        now: Instant,
        request: OutOfDialogRequest,
    ) -> Result<RequestHandle, Error> {
        if !matches!(request.method, Method::Options | Method::Register) {
            return Err(Error::UnsupportedMethod {
                method: request.method.to_string(),
            });
        }
        let uri = rsip::Uri::try_from(request.request_uri.as_str())
            .ok()
            .filter(|_| !request.request_uri.contains(char::is_whitespace))
            .ok_or_else(|| Error::InvalidUri {
                field: "request_uri",
                value: request.request_uri.clone(),
            })?;
        for (field, value) in [("from", &request.from), ("to", &request.to)] {
            if message::uri_of_name_addr(value).is_none() || value.contains(['\r', '\n']) {
                return Err(Error::InvalidUri {
                    field,
                    value: value.clone(),
                });
            }
        }
        let handle = RequestHandle(self.next_handle);
        self.next_handle += 1;
        let tag = self.ids.tag();
        self.standalone.insert(
            handle,
            Standalone {
                from: format!("{};tag={tag}", request.from),
                call_id: self.ids.call_id(),
                uri,
                next_cseq: 1,
                auth: AuthSession::new(request.credentials.clone()),
                spec: request,
            },
        );
        self.send_standalone(now, handle);
        self.settle();
        Ok(handle)
    }

    /// Sends the next request of a series (a keep-alive probe, a registration refresh).
    pub fn repeat_request(&mut self, now: Instant, handle: RequestHandle) -> Result<(), Error> {
        if !self.standalone.contains_key(&handle) {
            return Err(Error::UnknownRequest { request: handle });
        }
        self.send_standalone(now, handle);
        self.settle();
        Ok(())
    }

    /// Changes a registration's lifetime for the next REGISTER (0 to unregister).
    pub fn set_expires(&mut self, handle: RequestHandle, expires: u32) -> Result<(), Error> {
        let s = self
            .standalone
            .get_mut(&handle)
            .ok_or(Error::UnknownRequest { request: handle })?;
        s.spec.expires = Some(expires);
        Ok(())
    }

    /// Forgets a series; answers still in flight are dropped.
    pub fn forget_request(&mut self, handle: RequestHandle) {
        self.standalone.remove(&handle);
    }

    fn send_standalone(&mut self, now: Instant, handle: RequestHandle) {
        let branch = self.ids.branch();
        let cnonce = self.ids.cnonce();
        let contact = self
            .standalone
            .get(&handle)
            .map(|s| self.contact(s.spec.transport));
        let via = self
            .standalone
            .get(&handle)
            .map(|s| self.via(s.spec.transport, &branch));
        let user_agent = self.config.user_agent.clone();
        let (Some(s), Some(contact), Some(via)) = (self.standalone.get_mut(&handle), contact, via)
        else {
            return;
        };
        let cseq = s.next_cseq;
        s.next_cseq += 1;
        let method = s.spec.method;
        let mut headers = vec![
            via,
            Header::MaxForwards(rsip::headers::MaxForwards::new("70")),
            Header::From(rsip::headers::From::new(s.from.clone())),
            Header::To(rsip::headers::To::new(s.spec.to.clone())),
            Header::CallId(rsip::headers::CallId::new(s.call_id.clone())),
            Header::CSeq(rsip::headers::CSeq::new(format!("{cseq} {method}"))),
            contact,
            Header::UserAgent(rsip::headers::UserAgent::new(user_agent)),
        ];
        if method == Method::Register {
            let expires = s.spec.expires.unwrap_or(3600);
            headers.push(Header::Expires(rsip::headers::Expires::new(
                expires.to_string(),
            )));
        } else {
            headers.push(Header::Other("Accept".into(), "application/sdp".into()));
        }
        headers.extend(s.auth.header(&method, &s.uri.to_string(), &cnonce));
        let (destination, transport) = (s.spec.destination, s.spec.transport);
        let req = request(method, s.uri.clone(), headers, None);
        self.start_client_tx(
            now,
            Owner::Request(handle),
            Purpose::Standalone,
            branch,
            req,
            (destination, transport),
        );
    }

    pub(super) fn on_standalone_final(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        resp: &rsip::Response,
        authenticated: bool,
    ) {
        let max = self.config.max_auth_attempts;
        let Some(s) = self.standalone.get_mut(&handle) else {
            return;
        };
        if s.auth.accept(resp, authenticated, max) {
            self.stats.auth_retries += 1;
            self.send_standalone(now, handle);
            return;
        }
        let expires = message::first(&resp.headers, "Expires")
            .and_then(|e| e.trim().parse().ok())
            .or_else(|| {
                message::values(&resp.headers, "Contact")
                    .iter()
                    .find_map(|c| {
                        c.to_ascii_lowercase()
                            .split(";expires=")
                            .nth(1)
                            .and_then(|rest| rest.split([';', ',', '>']).next())
                            .and_then(|v| v.trim().parse().ok())
                    })
            });
        self.outcomes.push_back(RequestOutcome {
            request: handle,
            status: resp.status_code.code(),
            expires,
        });
    }
}

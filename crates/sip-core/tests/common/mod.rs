//! A virtual-clock harness: our endpoint on one side, a scripted trunk on the other, no sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialtone_sip_core::{
    CallEvent, CallHandle, Endpoint, EndpointConfig, Event, OutboundCall, Transmit, Transport,
};

pub(crate) const TRUNK: &str = "192.0.2.20:5060";
pub(crate) const LOCAL_HOST: &str = "192.0.2.10";

pub(crate) fn trunk() -> SocketAddr {
    TRUNK.parse().unwrap()
}

/// One message the endpoint sent, parsed, with the virtual time it left.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) at: Duration,
    pub(crate) destination: SocketAddr,
    pub(crate) text: String,
}

impl Sent {
    pub(crate) fn request(&self) -> rsip::Request {
        rsip::Request::try_from(self.text.as_str()).expect("we send parseable requests")
    }
    pub(crate) fn is_request(&self, method: &str) -> bool {
        self.text.starts_with(&format!("{method} "))
    }
    pub(crate) fn is_response(&self, code: u16) -> bool {
        self.text.starts_with(&format!("SIP/2.0 {code} "))
    }
    /// The value of the first header `name` (case-sensitive name as we print it).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        header(&self.text, name)
    }
    pub(crate) fn headers(&self, name: &str) -> Vec<String> {
        self.text
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
            .collect()
    }
    pub(crate) fn branch(&self) -> String {
        let via = self.header("Via").unwrap();
        via.split(";branch=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }
    pub(crate) fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }
}

pub(crate) fn header(text: &str, name: &str) -> Option<String> {
    text.split("\r\n\r\n")
        .next()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
}

pub(crate) struct Harness {
    pub(crate) ep: Endpoint,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) sent: Vec<Sent>,
    pub(crate) events: Vec<Event>,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with_config(EndpointConfig::new(LOCAL_HOST, 5060))
    }

    pub(crate) fn with_config(config: EndpointConfig) -> Self {
        let start = Instant::now();
        Self {
            ep: Endpoint::new(config, 0x5eed),
            start,
            now: start,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    pub(crate) fn call(transport: Transport) -> OutboundCall {
        let mut call = OutboundCall::new(
            "sip:+15551230000@192.0.2.20",
            "\"Dialtone\" <sip:+15559870000@192.0.2.10>",
            "<sip:+15551230000@192.0.2.20>",
            trunk(),
            transport,
        );
        call.sdp_offer = Some(b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n".to_vec());
        call
    }

    pub(crate) fn dial(&mut self, call: OutboundCall) -> CallHandle {
        let h = self.ep.dial(self.now, call).unwrap();
        self.collect();
        h
    }

    pub(crate) fn collect(&mut self) {
        while let Some(Transmit {
            destination,
            payload,
            ..
        }) = self.ep.poll_transmit()
        {
            self.sent.push(Sent {
                at: self.now - self.start,
                destination,
                text: String::from_utf8(payload).unwrap(),
            });
        }
        while let Some(e) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    /// Advances the virtual clock by `d`, firing every timer on the way at its deadline.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..10_000 {
            match self.ep.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.ep.handle_timeout(self.now);
                    self.collect();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    pub(crate) fn feed_from(&mut self, source: SocketAddr, transport: Transport, text: &str) {
        self.ep
            .handle_message(self.now, source, transport, text.as_bytes());
        self.collect();
    }

    pub(crate) fn feed(&mut self, text: &str) {
        self.feed_from(trunk(), Transport::Udp, text);
    }

    /// Answers a request we sent, the way a trunk would.
    pub(crate) fn reply(
        &mut self,
        to: &Sent,
        code: u16,
        to_tag: Option<&str>,
        extra: &str,
        body: &str,
    ) {
        let text = response_text(to, code, to_tag, extra, body);
        self.feed(&text);
    }

    pub(crate) fn sent_requests(&self, method: &str) -> Vec<Sent> {
        self.sent
            .iter()
            .filter(|s| s.is_request(method))
            .cloned()
            .collect()
    }

    pub(crate) fn last_sent(&self) -> Sent {
        self.sent.last().cloned().unwrap()
    }

    pub(crate) fn take_events(&mut self) -> Vec<CallEvent> {
        std::mem::take(&mut self.events)
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

pub(crate) fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        401 => "Unauthorized",
        407 => "Proxy Authentication Required",
        486 => "Busy Here",
        487 => "Request Terminated",
        _ => "Whatever",
    }
}

/// Builds a response to `req` copying Via, From, To, Call-ID and CSeq.
pub(crate) fn response_text(
    req: &Sent,
    code: u16,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> String {
    let mut out = format!("SIP/2.0 {code} {}\r\n", reason_phrase(code));
    for v in req.headers("Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    out.push_str(&format!("From: {}\r\n", req.header("From").unwrap()));
    let to = req.header("To").unwrap();
    match to_tag {
        Some(tag) if !to.contains(";tag=") => out.push_str(&format!("To: {to};tag={tag}\r\n")),
        _ => out.push_str(&format!("To: {to}\r\n")),
    }
    out.push_str(&format!("Call-ID: {}\r\n", req.header("Call-ID").unwrap()));
    out.push_str(&format!("CSeq: {}\r\n", req.header("CSeq").unwrap()));
    out.push_str(extra);
    if !body.is_empty() {
        out.push_str("Content-Type: application/sdp\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

pub(crate) const ANSWER_SDP: &str = "v=0\r\no=- 2 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";

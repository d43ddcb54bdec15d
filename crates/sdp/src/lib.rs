//! # dialtone-sdp — SDP for Dialtone's calls
//!
//! Pure functions and types, no I/O:
//!
//! * [`SessionDescription`]: parse (RFC 4566 / RFC 8866 line grammar) and print, preserving
//!   attributes it does not interpret, so a parsed description prints back as it came.
//! * [`build_offer`]: our INVITE offer — one audio m-line with the local codecs (PCMU, PCMA,
//!   G.722 as static PT 9 on its 8000 Hz clock, Opus 48000/2 with
//!   fmtp) and telephone-event (0-16), `ptime:20`, a direction, and the advertised address.
//! * [`negotiate_answer`]: read the answer to our offer (RFC 3264 §6/§7): the codec chosen,
//!   payload-type mapping, telephone-event, the remote RTP address, direction and hold, and port
//!   0 as a rejected stream. No common codec is a typed error.
//! * [`answer_offer`]: answer a re-INVITE or UPDATE offer (hold, unhold, refresh) from the
//!   current session.
//! * SDES (RFC 4568, [`crypto`]): an offer may carry `a=crypto` keys ([`SdesOffer`]), on
//!   `RTP/SAVP` or, best effort, on `RTP/AVP`; the answer's key for one of our tags becomes the
//!   session's [`NegotiatedSrtp`]. Keys never show in `Debug`.
//!
//! ```
//! use dialtone_sdp::{build_offer, negotiate_answer, LocalMedia, SessionDescription};
//!
//! let local = LocalMedia::new("203.0.113.5".parse().unwrap(), 20000);
//! let offer = build_offer(&local, 42, 1);
//! let answer = SessionDescription::parse(
//!     "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
//!      m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
//! )
//! .unwrap();
//! let session = negotiate_answer(&offer, &answer).unwrap();
//! assert_eq!(session.codec.name, "PCMA");
//! assert_eq!(session.telephone_event, Some(101));
//! assert_eq!(session.remote_rtp.unwrap().to_string(), "198.51.100.7:30000");
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub mod crypto;

pub use crypto::{CryptoAttribute, CryptoSuite, Mki, SdesKey};

/// The RTP profile of plain audio.
pub const RTP_AVP: &str = "RTP/AVP";
/// The secure RTP profile (RFC 3711).
pub const RTP_SAVP: &str = "RTP/SAVP";

/// Errors from parsing or negotiating SDP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// A line is not `x=value`.
    #[error("line {line}: expected `<type>=<value>`")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// A line's value does not follow its grammar.
    #[error("line {line}: malformed {field}")]
    MalformedField {
        /// 1-based line number.
        line: usize,
        /// What was being read (`m=`, `c=`, `rtpmap`, ...).
        field: &'static str,
    },
    /// A mandatory line (`v=`, `o=`, `s=`) is missing.
    #[error("missing mandatory {field} line")]
    Missing {
        /// Which line.
        field: &'static str,
    },
    /// The answer has no audio stream.
    #[error("the answer has no audio stream")]
    NoAudio,
    /// The answerer rejected the audio stream (port 0).
    #[error("the audio stream was rejected (port 0)")]
    StreamRejected,
    /// No codec both sides support.
    #[error("no codec in common (offered: {offered}; answered: {answered})")]
    NoCommonCodec {
        /// The codecs we offered.
        offered: String,
        /// The codecs the other side named.
        answered: String,
    },
    /// The audio stream has no usable connection address.
    #[error("the audio stream has no connection address")]
    NoConnectionAddress,
    /// SRTP keys were offered and the answer's are missing or unusable (an unknown tag or
    /// suite, a malformed key, an `RTP/SAVP` answer without one), or a re-offer changes keys
    /// or drops SRTP.
    #[error("no usable SRTP key")]
    NoUsableKey,
}

/// Media direction (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Send and receive.
    #[default]
    SendRecv,
    /// Send only.
    SendOnly,
    /// Receive only.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction an answer takes for an offer in this direction, given what we want.
    pub fn answer_to(self, ours: Direction) -> Direction {
        let (we_send, we_recv) = match ours {
            Self::SendRecv => (true, true),
            Self::SendOnly => (true, false),
            Self::RecvOnly => (false, true),
            Self::Inactive => (false, false),
        };
        let (they_send, they_recv) = match self {
            Self::SendRecv => (true, true),
            Self::SendOnly => (true, false),
            Self::RecvOnly => (false, true),
            Self::Inactive => (false, false),
        };
        match (we_send && they_recv, we_recv && they_send) {
            (true, true) => Self::SendRecv,
            (true, false) => Self::SendOnly,
            (false, true) => Self::RecvOnly,
            (false, false) => Self::Inactive,
        }
    }

    /// Whether this side may send media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

/// `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Username (`-` when none).
    pub username: String,
    /// Session id.
    pub session_id: u64,
    /// Session version; increments with every new description in a session.
    pub version: u64,
    /// Network type, address type and address, as written (`IN IP4 192.0.2.1`).
    pub address: String,
}

/// An `a=rtpmap` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `opus`, `telephone-event`).
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channels (1 when absent).
    pub channels: u8,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, ...
    pub media: String,
    /// Transport port; 0 rejects the stream.
    pub port: u16,
    /// `RTP/AVP`, ...
    pub protocol: String,
    /// Format list (payload types for RTP), in preference order.
    pub formats: Vec<String>,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` entries.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` entries: payload type and parameters.
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime`.
    pub ptime: Option<u32>,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// `a=rtcp:<port>`.
    pub rtcp_port: Option<u16>,
    /// `a=crypto` attributes (RFC 4568), in order.
    pub crypto: Vec<CryptoAttribute>,
    /// Every other attribute, in order: name and optional value.
    pub other_attributes: Vec<(String, Option<String>)>,
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`.
    pub origin: Origin,
    /// `s=`.
    pub session_name: String,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// `t=` values.
    pub timing: (u64, u64),
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// Other session-level attributes.
    pub other_attributes: Vec<(String, Option<String>)>,
    /// The m-sections.
    pub media: Vec<MediaDescription>,
}

fn parse_connection(value: &str, line: usize) -> Result<IpAddr, SdpError> {
    let err = SdpError::MalformedField { line, field: "c=" };
    let mut parts = value.split_whitespace();
    let (net, kind, addr) = (parts.next(), parts.next(), parts.next());
    if net != Some("IN") || !matches!(kind, Some("IP4" | "IP6")) {
        return Err(err);
    }
    // Multicast TTL/count suffixes (`/127`) are cut.
    let addr = addr
        .ok_or(err.clone())?
        .split('/')
        .next()
        .unwrap_or_default();
    addr.parse().map_err(|_| err)
}

fn parse_attribute(value: &str) -> (String, Option<String>) {
    match value.split_once(':') {
        Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
        None => (value.to_owned(), None),
    }
}

impl SessionDescription {
    /// Parses a session description. Accepts CRLF or LF line ends; unknown lines and
    /// attributes are kept or skipped, never an error; malformed known lines are errors.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        let mut origin = None;
        let mut session_name = None;
        let mut version_seen = false;
        let mut connection = None;
        let mut timing = (0, 0);
        let mut direction = None;
        let mut other_attributes = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let raw = raw.trim_end_matches('\r');
            if raw.is_empty() {
                continue;
            }
            let (kind, value) = raw
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or(SdpError::MalformedLine { line })?;
            match (kind, media.last_mut()) {
                ("v", _) => {
                    if value != "0" {
                        return Err(SdpError::MalformedField { line, field: "v=" });
                    }
                    version_seen = true;
                }
                ("o", _) => {
                    let err = SdpError::MalformedField { line, field: "o=" };
                    let parts: Vec<&str> = value.split_whitespace().collect();
                    let [username, id, version, net, kind, addr] = parts.as_slice() else {
                        return Err(err);
                    };
                    origin = Some(Origin {
                        username: (*username).to_owned(),
                        session_id: id.parse().map_err(|_| err.clone())?,
                        version: version.parse().map_err(|_| err.clone())?,
                        address: format!("{net} {kind} {addr}"),
                    });
                }
                ("s", _) => session_name = Some(value.to_owned()),
                ("t", _) => {
                    let err = SdpError::MalformedField { line, field: "t=" };
                    let (a, b) = value.split_once(' ').ok_or(err.clone())?;
                    timing = (
                        a.parse().map_err(|_| err.clone())?,
                        b.trim().parse().map_err(|_| err)?,
                    );
                }
                ("c", None) => connection = Some(parse_connection(value, line)?),
                ("c", Some(m)) => m.connection = Some(parse_connection(value, line)?),
                ("m", _) => media.push(parse_media_line(value, line)?),
                ("a", None) => {
                    let (name, val) = parse_attribute(value);
                    match Direction::parse(&name) {
                        Some(d) if val.is_none() => direction = Some(d),
                        _ => other_attributes.push((name, val)),
                    }
                }
                ("a", Some(m)) => apply_media_attribute(m, value, line)?,
                _ => {}
            }
        }
        if !version_seen {
            return Err(SdpError::Missing { field: "v=" });
        }
        Ok(Self {
            origin: origin.ok_or(SdpError::Missing { field: "o=" })?,
            session_name: session_name.ok_or(SdpError::Missing { field: "s=" })?,
            connection,
            timing,
            direction,
            other_attributes,
            media,
        })
    }

    /// The first audio m-section.
    pub fn audio(&self) -> Option<&MediaDescription> {
        self.media.iter().find(|m| m.media == "audio")
    }
}

fn parse_media_line(value: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let err = SdpError::MalformedField { line, field: "m=" };
    let mut parts = value.split_whitespace();
    let media = parts.next().ok_or(err.clone())?.to_owned();
    // `<port>/<count>` is allowed; the count is ignored.
    let port = parts
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .ok_or(err.clone())?;
    let protocol = parts.next().ok_or(err)?.to_owned();
    Ok(MediaDescription {
        media,
        port,
        protocol,
        formats: parts.map(str::to_owned).collect(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: None,
        rtcp_mux: false,
        rtcp_port: None,
        crypto: Vec::new(),
        other_attributes: Vec::new(),
    })
}

fn apply_media_attribute(
    m: &mut MediaDescription,
    value: &str,
    line: usize,
) -> Result<(), SdpError> {
    let (name, val) = parse_attribute(value);
    match (name.as_str(), val) {
        ("rtpmap", Some(v)) => {
            let err = SdpError::MalformedField {
                line,
                field: "rtpmap",
            };
            let (pt, rest) = v.split_once(' ').ok_or(err.clone())?;
            let mut enc = rest.trim().split('/');
            let encoding = enc.next().filter(|e| !e.is_empty()).ok_or(err.clone())?;
            let clock_rate = enc.next().and_then(|c| c.parse().ok()).ok_or(err.clone())?;
            let channels = match enc.next() {
                Some(c) => c.parse().map_err(|_| err.clone())?,
                None => 1,
            };
            m.rtpmaps.push(RtpMap {
                payload_type: pt.parse().map_err(|_| err)?,
                encoding: encoding.to_owned(),
                clock_rate,
                channels,
            });
        }
        ("fmtp", Some(v)) => {
            let err = SdpError::MalformedField {
                line,
                field: "fmtp",
            };
            let (pt, params) = v.split_once(' ').ok_or(err.clone())?;
            m.fmtps
                .push((pt.parse().map_err(|_| err)?, params.trim().to_owned()));
        }
        ("ptime", Some(v)) => {
            m.ptime = Some(v.trim().parse().map_err(|_| SdpError::MalformedField {
                line,
                field: "ptime",
            })?);
        }
        ("rtcp-mux", None) => m.rtcp_mux = true,
        ("crypto", Some(v)) => {
            m.crypto
                .push(CryptoAttribute::parse(&v).ok_or(SdpError::MalformedField {
                    line,
                    field: "crypto",
                })?)
        }
        ("rtcp", Some(v)) => {
            m.rtcp_port = v.split_whitespace().next().and_then(|p| p.parse().ok());
            if m.rtcp_port.is_none() {
                return Err(SdpError::MalformedField {
                    line,
                    field: "rtcp",
                });
            }
        }
        (n, None) if Direction::parse(n).is_some() => m.direction = Direction::parse(n),
        (_, val) => m.other_attributes.push((name, val)),
    }
    Ok(())
}

fn write_connection(f: &mut fmt::Formatter<'_>, addr: IpAddr) -> fmt::Result {
    let kind = if addr.is_ipv4() { "IP4" } else { "IP6" };
    write!(f, "c=IN {kind} {addr}\r\n")
}

fn write_attribute(f: &mut fmt::Formatter<'_>, name: &str, value: &Option<String>) -> fmt::Result {
    match value {
        Some(v) => write!(f, "a={name}:{v}\r\n"),
        None => write!(f, "a={name}\r\n"),
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v=0\r\no={} {} {} {}\r\ns={}\r\n",
            self.origin.username,
            self.origin.session_id,
            self.origin.version,
            self.origin.address,
            self.session_name
        )?;
        if let Some(c) = self.connection {
            write_connection(f, c)?;
        }
        write!(f, "t={} {}\r\n", self.timing.0, self.timing.1)?;
        if let Some(d) = self.direction {
            write!(f, "a={}\r\n", d.as_str())?;
        }
        for (n, v) in &self.other_attributes {
            write_attribute(f, n, v)?;
        }
        for m in &self.media {
            write!(f, "m={} {} {}", m.media, m.port, m.protocol)?;
            for fmt in &m.formats {
                write!(f, " {fmt}")?;
            }
            f.write_str("\r\n")?;
            if let Some(c) = m.connection {
                write_connection(f, c)?;
            }
            for r in &m.rtpmaps {
                write!(
                    f,
                    "a=rtpmap:{} {}/{}",
                    r.payload_type, r.encoding, r.clock_rate
                )?;
                if r.channels != 1 {
                    write!(f, "/{}", r.channels)?;
                }
                f.write_str("\r\n")?;
            }
            for (pt, params) in &m.fmtps {
                write!(f, "a=fmtp:{pt} {params}\r\n")?;
            }
            if let Some(p) = m.ptime {
                write!(f, "a=ptime:{p}\r\n")?;
            }
            if let Some(p) = m.rtcp_port {
                write!(f, "a=rtcp:{p}\r\n")?;
            }
            if m.rtcp_mux {
                f.write_str("a=rtcp-mux\r\n")?;
            }
            if let Some(d) = m.direction {
                write!(f, "a={}\r\n", d.as_str())?;
            }
            for c in &m.crypto {
                write!(f, "a=crypto:{c}\r\n")?;
            }
            for (n, v) in &m.other_attributes {
                write_attribute(f, n, v)?;
            }
        }
        Ok(())
    }
}

/// A codec we can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// G.711 µ-law, static PT 0.
    Pcmu,
    /// G.711 A-law, static PT 8.
    Pcma,
    /// Opus, dynamic PT, 48000/2.
    Opus,
    /// G.722, static PT 9, `G722/8000` (its RTP clock is 8000 Hz though it samples at 16 kHz,
    /// RFC 3551 §4.5.2).
    G722,
}

impl AudioCodec {
    fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::Opus => "opus",
            Self::G722 => "G722",
        }
    }
}

/// What we offer and how we answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address written in `c=` (the advertised address behind NAT).
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// Codecs in preference order.
    pub codecs: Vec<AudioCodec>,
    /// Dynamic PT for Opus.
    pub opus_payload_type: u8,
    /// Dynamic PT for telephone-event.
    pub telephone_event_payload_type: u8,
    /// Packetisation time in ms.
    pub ptime: u32,
    /// The direction we want.
    pub direction: Direction,
    /// Offer `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// SRTP keys to offer (none: plain RTP/AVP).
    pub sdes: Option<SdesOffer>,
}

/// The SRTP keys an offer carries, and on which profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesOffer {
    /// `RTP/SAVP` (SRTP or nothing), or `RTP/AVP` carrying the keys (best effort: a far end
    /// that does not know `a=crypto` ignores it and answers plain RTP).
    pub savp: bool,
    /// The keys, in preference order, each under its tag.
    pub keys: Vec<OfferedKey>,
}

/// One key of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedKey {
    /// The `a=crypto` tag.
    pub tag: u32,
    /// The suite.
    pub suite: CryptoSuite,
    /// Our key: what we would protect with.
    pub key: SdesKey,
}

impl LocalMedia {
    /// PCMU, PCMA, Opus (PT 111), telephone-event (PT 101), 20 ms, sendrecv.
    pub fn new(address: IpAddr, port: u16) -> Self {
        Self {
            address,
            port,
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus],
            opus_payload_type: 111,
            telephone_event_payload_type: 101,
            ptime: 20,
            direction: Direction::SendRecv,
            rtcp_mux: false,
            sdes: None,
        }
    }

    fn codec_map(&self, codec: AudioCodec) -> RtpMap {
        match codec {
            AudioCodec::Pcmu => RtpMap {
                payload_type: 0,
                encoding: "PCMU".into(),
                clock_rate: 8000,
                channels: 1,
            },
            AudioCodec::Pcma => RtpMap {
                payload_type: 8,
                encoding: "PCMA".into(),
                clock_rate: 8000,
                channels: 1,
            },
            AudioCodec::Opus => RtpMap {
                payload_type: self.opus_payload_type,
                encoding: "opus".into(),
                clock_rate: 48000,
                channels: 2,
            },
            AudioCodec::G722 => RtpMap {
                payload_type: 9,
                encoding: "G722".into(),
                clock_rate: 8000,
                channels: 1,
            },
        }
    }
}

/// The fmtp we send with Opus: mono preferred, in-band FEC on, DTX off.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0";
/// The telephone-event events we accept: the 16 DTMF digits and flash.
pub const TELEPHONE_EVENT_FMTP: &str = "0-16";

fn address_string(addr: IpAddr) -> String {
    let kind = if addr.is_ipv4() { "IP4" } else { "IP6" };
    format!("IN {kind} {addr}")
}

fn audio_section(
    local: &LocalMedia,
    codecs: &[RtpMap],
    te_pt: Option<u8>,
    (protocol, crypto): (&str, Vec<CryptoAttribute>),
) -> MediaDescription {
    let mut rtpmaps: Vec<RtpMap> = codecs.to_vec();
    let mut fmtps = Vec::new();
    for r in codecs {
        if r.encoding.eq_ignore_ascii_case("opus") {
            fmtps.push((r.payload_type, OPUS_FMTP.to_owned()));
        }
    }
    if let Some(pt) = te_pt {
        rtpmaps.push(RtpMap {
            payload_type: pt,
            encoding: "telephone-event".into(),
            clock_rate: 8000,
            channels: 1,
        });
        fmtps.push((pt, TELEPHONE_EVENT_FMTP.to_owned()));
    }
    MediaDescription {
        media: "audio".into(),
        port: local.port,
        protocol: protocol.into(),
        formats: rtpmaps.iter().map(|r| r.payload_type.to_string()).collect(),
        connection: None,
        rtpmaps,
        fmtps,
        ptime: Some(local.ptime),
        direction: Some(local.direction),
        rtcp_mux: local.rtcp_mux,
        rtcp_port: None,
        crypto,
        other_attributes: Vec::new(),
    }
}

/// The profile and `a=crypto` attributes of our offer.
fn offered_crypto(local: &LocalMedia) -> (&'static str, Vec<CryptoAttribute>) {
    match &local.sdes {
        None => (RTP_AVP, Vec::new()),
        Some(sdes) => (
            if sdes.savp { RTP_SAVP } else { RTP_AVP },
            sdes.keys
                .iter()
                .map(|k| CryptoAttribute::new(k.tag, k.suite, &k.key))
                .collect(),
        ),
    }
}

/// Builds our offer.
pub fn build_offer(local: &LocalMedia, session_id: u64, version: u64) -> SessionDescription {
    let codecs: Vec<RtpMap> = local.codecs.iter().map(|c| local.codec_map(*c)).collect();
    SessionDescription {
        origin: Origin {
            username: "dialtone".into(),
            session_id,
            version,
            address: address_string(local.address),
        },
        session_name: "Dialtone".into(),
        connection: Some(local.address),
        timing: (0, 0),
        direction: None,
        other_attributes: Vec::new(),
        media: vec![audio_section(
            local,
            &codecs,
            Some(local.telephone_event_payload_type),
            offered_crypto(local),
        )],
    }
}

/// The codec a negotiation settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    /// Which codec.
    pub codec: AudioCodec,
    /// Encoding name as the peer wrote it.
    pub name: String,
    /// The PT to put on packets we send (the answerer's mapping).
    pub send_payload_type: u8,
    /// The PT we expect on packets we receive (our mapping).
    pub receive_payload_type: u8,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels.
    pub channels: u8,
    /// The peer's fmtp for this codec.
    pub fmtp: Option<String>,
}

/// The result of an offer/answer exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedSession {
    /// The audio codec.
    pub codec: NegotiatedCodec,
    /// The peer's telephone-event PT, if it supports RFC 4733.
    pub telephone_event: Option<u8>,
    /// Where to send RTP; `None` on hold with `c=0.0.0.0`.
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP (the next port, `a=rtcp`, or the RTP address with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// The direction from our side: may we send, do we receive.
    pub direction: Direction,
    /// The peer put us on hold: it will not receive (sendonly/inactive, or `c=0.0.0.0`).
    pub on_hold: bool,
    /// The peer's packetisation time.
    pub ptime: Option<u32>,
    /// RTP and RTCP share one port.
    pub rtcp_mux: bool,
    /// The SRTP keys agreed, if the media is SRTP.
    pub srtp: Option<NegotiatedSrtp>,
}

/// SRTP as an offer/answer agreed it: one suite, a key each way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedSrtp {
    /// The tag of the agreed `a=crypto` (the offer's).
    pub tag: u32,
    /// The suite.
    pub suite: CryptoSuite,
    /// Ours: what we protect with.
    pub local: SdesKey,
    /// The far end's: what it protects with.
    pub remote: SdesKey,
}

/// The SRTP an answer `theirs` agrees to for our offer `ours` (RFC 4568 §7.1.3): its first
/// usable key under one of our tags with that tag's suite. A plain `RTP/AVP` answer without
/// `a=crypto` declines SRTP (`None`); anything else without a usable key is an error.
fn answered_srtp(
    ours: &MediaDescription,
    theirs: &MediaDescription,
) -> Result<Option<NegotiatedSrtp>, SdpError> {
    if ours.crypto.is_empty() {
        return Ok(None);
    }
    let agreed = theirs.crypto.iter().find_map(|answered| {
        let (suite, remote) = answered.usable_key()?;
        let (offered_suite, local) = ours
            .crypto
            .iter()
            .find(|o| o.tag == answered.tag)?
            .usable_key()?;
        (offered_suite == suite).then_some(NegotiatedSrtp {
            tag: answered.tag,
            suite,
            local,
            remote,
        })
    });
    match agreed {
        Some(srtp) => Ok(Some(srtp)),
        None if theirs.crypto.is_empty() && theirs.protocol == RTP_AVP => Ok(None),
        None => Err(SdpError::NoUsableKey),
    }
}

/// For a re-offer `theirs` during a call whose SRTP is `current`: our answer's profile and
/// `a=crypto`, and the SRTP that stays. The keys cannot change mid-call (the media keeps its
/// contexts), so an SRTP call needs its far end's key again under our suite; a plain call
/// cannot turn to `RTP/SAVP`; `a=crypto` on a plain call's `RTP/AVP` re-offer is declined by
/// answering without it.
fn reoffered_srtp(
    theirs: &MediaDescription,
    current: Option<&NegotiatedSrtp>,
) -> Result<(String, Vec<CryptoAttribute>, Option<NegotiatedSrtp>), SdpError> {
    let Some(current) = current else {
        if theirs.protocol == RTP_SAVP {
            return Err(SdpError::NoUsableKey);
        }
        return Ok((RTP_AVP.to_owned(), Vec::new(), None));
    };
    let tag = theirs
        .crypto
        .iter()
        .find(|c| {
            c.usable_key()
                .is_some_and(|(suite, key)| suite == current.suite && key == current.remote)
        })
        .map(|c| c.tag)
        .ok_or(SdpError::NoUsableKey)?;
    let answer = CryptoAttribute::new(tag, current.suite, &current.local);
    Ok((
        theirs.protocol.clone(),
        vec![answer],
        Some(NegotiatedSrtp {
            tag,
            ..current.clone()
        }),
    ))
}

fn codec_of(r: &RtpMap) -> Option<AudioCodec> {
    match (r.encoding.to_ascii_lowercase().as_str(), r.clock_rate) {
        ("pcmu", 8000) => Some(AudioCodec::Pcmu),
        ("pcma", 8000) => Some(AudioCodec::Pcma),
        ("opus", 48000) => Some(AudioCodec::Opus),
        ("g722", 8000) => Some(AudioCodec::G722),
        _ => None,
    }
}

/// The rtpmap for a format, with the static PTs 0, 8 and 9 implied (RFC 3551).
fn rtpmap_for(m: &MediaDescription, format: &str) -> Option<RtpMap> {
    let pt: u8 = format.parse().ok()?;
    if let Some(r) = m.rtpmaps.iter().find(|r| r.payload_type == pt) {
        return Some(r.clone());
    }
    let (encoding, clock_rate) = match pt {
        0 => ("PCMU", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        _ => return None,
    };
    Some(RtpMap {
        payload_type: pt,
        encoding: encoding.into(),
        clock_rate,
        channels: 1,
    })
}

fn telephone_event_pt(m: &MediaDescription) -> Option<u8> {
    m.rtpmaps
        .iter()
        .find(|r| r.encoding.eq_ignore_ascii_case("telephone-event") && r.clock_rate == 8000)
        .map(|r| r.payload_type)
        .filter(|pt| m.formats.iter().any(|f| f.parse() == Ok(*pt)))
}

fn format_names(m: &MediaDescription) -> String {
    m.formats
        .iter()
        .map(|f| rtpmap_for(m, f).map_or_else(|| f.clone(), |r| r.encoding))
        .collect::<Vec<_>>()
        .join(", ")
}

fn remote_addresses(
    session: &SessionDescription,
    m: &MediaDescription,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), SdpError> {
    let ip = m
        .connection
        .or(session.connection)
        .ok_or(SdpError::NoConnectionAddress)?;
    if ip.is_unspecified() {
        return Ok((None, None));
    }
    let rtp = SocketAddr::new(ip, m.port);
    let rtcp = if m.rtcp_mux {
        rtp
    } else {
        SocketAddr::new(ip, m.rtcp_port.unwrap_or(m.port.saturating_add(1)))
    };
    Ok((Some(rtp), Some(rtcp)))
}

/// Reads the answer to our offer (RFC 3264 §6): the codec is the first answered format we
/// offered (matched by encoding name and clock rate, so dynamic PTs may differ).
pub fn negotiate_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedSession, SdpError> {
    let ours = offer.audio().ok_or(SdpError::NoAudio)?;
    let theirs = answer.audio().ok_or(SdpError::NoAudio)?;
    if theirs.port == 0 {
        return Err(SdpError::StreamRejected);
    }
    let mut chosen = None;
    for f in &theirs.formats {
        let Some(map) = rtpmap_for(theirs, f) else {
            continue;
        };
        let Some(codec) = codec_of(&map) else {
            continue;
        };
        let offered = ours
            .formats
            .iter()
            .filter_map(|o| rtpmap_for(ours, o))
            .find(|o| codec_of(o) == Some(codec));
        if let Some(offered) = offered {
            chosen = Some(NegotiatedCodec {
                codec,
                name: map.encoding.clone(),
                send_payload_type: map.payload_type,
                receive_payload_type: offered.payload_type,
                clock_rate: map.clock_rate,
                channels: map.channels,
                fmtp: theirs
                    .fmtps
                    .iter()
                    .find(|(pt, _)| *pt == map.payload_type)
                    .map(|(_, p)| p.clone()),
            });
            break;
        }
    }
    let codec = chosen.ok_or_else(|| SdpError::NoCommonCodec {
        offered: format_names(ours),
        answered: format_names(theirs),
    })?;
    let srtp = answered_srtp(ours, theirs)?;
    let (remote_rtp, remote_rtcp) = remote_addresses(answer, theirs)?;
    let their_direction = theirs
        .direction
        .or(answer.direction)
        .unwrap_or(Direction::SendRecv);
    let our_direction = ours
        .direction
        .or(offer.direction)
        .unwrap_or(Direction::SendRecv);
    let direction = their_direction.answer_to(our_direction);
    Ok(NegotiatedSession {
        codec,
        telephone_event: telephone_event_pt(theirs),
        on_hold: remote_rtp.is_none() || !their_direction.receives(),
        remote_rtp,
        remote_rtcp,
        direction,
        ptime: theirs.ptime,
        rtcp_mux: theirs.rtcp_mux && ours.rtcp_mux,
        srtp,
    })
}

/// Answers an offer from the far end (a re-INVITE or UPDATE: hold, unhold, refresh) from the
/// current session: the current codec is kept when still offered, else the first offered codec
/// we run. Non-audio streams are refused with port 0. `version` is our next `o=` version.
pub fn answer_offer(
    offer: &SessionDescription,
    local: &LocalMedia,
    current: Option<&NegotiatedSession>,
    session_id: u64,
    version: u64,
) -> Result<(SessionDescription, NegotiatedSession), SdpError> {
    let audio_index = offer
        .media
        .iter()
        .position(|m| m.media == "audio" && m.port != 0)
        .ok_or(SdpError::NoAudio)?;
    let theirs = offer.media.get(audio_index).ok_or(SdpError::NoAudio)?;
    let supported: Vec<(RtpMap, AudioCodec)> = theirs
        .formats
        .iter()
        .filter_map(|f| rtpmap_for(theirs, f))
        .filter_map(|r| codec_of(&r).map(|c| (r, c)))
        .filter(|(_, c)| local.codecs.contains(c))
        .collect();
    let keep = current.and_then(|cur| supported.iter().find(|(_, c)| *c == cur.codec.codec));
    let (map, codec) =
        keep.or_else(|| supported.first())
            .cloned()
            .ok_or_else(|| SdpError::NoCommonCodec {
                offered: format_names(theirs),
                answered: local
                    .codecs
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    let (protocol, crypto, srtp) = reoffered_srtp(theirs, current.and_then(|c| c.srtp.as_ref()))?;
    let (remote_rtp, remote_rtcp) = remote_addresses(offer, theirs)?;
    let their_direction = theirs
        .direction
        .or(offer.direction)
        .unwrap_or(Direction::SendRecv);
    let held = remote_rtp.is_none();
    let offered_direction = if held {
        // RFC 2543 hold: c=0.0.0.0 means "send me nothing".
        Direction::SendOnly
    } else {
        their_direction
    };
    let direction = offered_direction.answer_to(local.direction);
    let te = telephone_event_pt(theirs);
    let mut answer_local = local.clone();
    answer_local.sdes = None;
    answer_local.direction = direction;
    answer_local.rtcp_mux = local.rtcp_mux && theirs.rtcp_mux;
    let mut media = Vec::with_capacity(offer.media.len());
    for (i, m) in offer.media.iter().enumerate() {
        if i == audio_index {
            media.push(audio_section(
                &answer_local,
                std::slice::from_ref(&map),
                te,
                (protocol.as_str(), crypto.clone()),
            ));
        } else {
            media.push(MediaDescription {
                port: 0,
                connection: None,
                rtpmaps: Vec::new(),
                fmtps: Vec::new(),
                ptime: None,
                direction: None,
                rtcp_mux: false,
                rtcp_port: None,
                crypto: Vec::new(),
                other_attributes: Vec::new(),
                ..m.clone()
            });
        }
    }
    let answer = SessionDescription {
        origin: Origin {
            username: "dialtone".into(),
            session_id,
            version,
            address: address_string(local.address),
        },
        session_name: "Dialtone".into(),
        connection: Some(local.address),
        timing: (0, 0),
        direction: None,
        other_attributes: Vec::new(),
        media,
    };
    let negotiated = NegotiatedSession {
        codec: NegotiatedCodec {
            codec,
            name: map.encoding.clone(),
            send_payload_type: map.payload_type,
            receive_payload_type: map.payload_type,
            clock_rate: map.clock_rate,
            channels: map.channels,
            fmtp: theirs
                .fmtps
                .iter()
                .find(|(pt, _)| *pt == map.payload_type)
                .map(|(_, p)| p.clone()),
        },
        telephone_event: te,
        on_hold: held || !their_direction.receives(),
        remote_rtp,
        remote_rtcp,
        direction,
        ptime: theirs.ptime,
        rtcp_mux: answer_local.rtcp_mux,
        srtp,
    };
    Ok((answer, negotiated))
}

#[cfg(test)]
mod tests;

//! DNS SRV lookups for RFC 3263 trunk resolution: the wire format (sans-IO, never panics on any
//! answer) and one UDP exchange with a name server.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why a lookup produced nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The answer is not a well-formed DNS message for our question.
    #[error("malformed DNS answer: {reason}")]
    Malformed {
        /// What was wrong.
        reason: &'static str,
    },
    /// The server answered with an error code (3 = no such name).
    #[error("DNS error code {rcode}")]
    Rcode {
        /// The RCODE.
        rcode: u8,
    },
    /// No answer within the timeout, or the socket failed.
    #[error("no DNS answer")]
    NoAnswer,
}

/// One SRV record, with the addresses the answer carried for its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Among equal priorities, higher is preferred.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The target host.
    pub target: String,
}

/// What an SRV answer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvAnswer {
    /// SRV records in the answer section.
    pub records: Vec<SrvRecord>,
    /// A/AAAA records from any section: name and address.
    pub addresses: Vec<(String, IpAddr)>,
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// A recursive query for the SRV records of `name`.
pub fn srv_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    write_name(&mut q, name);
    q.extend_from_slice(&TYPE_SRV.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// Appends `name` in wire form (labels longer than 63 bytes are cut).
pub fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let bytes = label.as_bytes();
        let len = bytes.len().min(63);
        out.push(len as u8);
        out.extend_from_slice(bytes.get(..len).unwrap_or_default());
    }
    out.push(0);
}

struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

fn malformed(reason: &'static str) -> DnsError {
    DnsError::Malformed { reason }
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, DnsError> {
        let b = *self.msg.get(self.at).ok_or(malformed("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn skip(&mut self, n: usize) -> Result<(), DnsError> {
        if self.at + n > self.msg.len() {
            return Err(malformed("truncated"));
        }
        self.at += n;
        Ok(())
    }

    /// Reads a possibly compressed name; pointers are followed at most 32 times.
    fn name(&mut self) -> Result<String, DnsError> {
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut jumped = false;
        for _ in 0..128 {
            let len = *self.msg.get(at).ok_or(malformed("truncated name"))?;
            match len {
                0 => {
                    if !jumped {
                        self.at = at + 1;
                    }
                    return Ok(labels.join("."));
                }
                l if l & 0xc0 == 0xc0 => {
                    let low = *self.msg.get(at + 1).ok_or(malformed("truncated pointer"))?;
                    let target = (usize::from(l & 0x3f) << 8) | usize::from(low);
                    if target >= at {
                        return Err(malformed("forward name pointer"));
                    }
                    if !jumped {
                        self.at = at + 2;
                    }
                    jumped = true;
                    at = target;
                }
                l if l & 0xc0 != 0 => return Err(malformed("reserved label type")),
                l => {
                    let end = at + 1 + usize::from(l);
                    let label = self
                        .msg
                        .get(at + 1..end)
                        .ok_or(malformed("truncated label"))?;
                    labels.push(String::from_utf8_lossy(label).into_owned());
                    at = end;
                }
            }
        }
        Err(malformed("name too long"))
    }
}

/// Parses the answer to [`srv_query`] with the same `id`.
pub fn parse_srv_answer(id: u16, msg: &[u8]) -> Result<SrvAnswer, DnsError> {
    let mut r = Reader { msg, at: 0 };
    if r.u16()? != id {
        return Err(malformed("answer to another query"));
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(malformed("not a response"));
    }
    let rcode = (flags & 0x000f) as u8;
    if rcode != 0 {
        return Err(DnsError::Rcode { rcode });
    }
    let questions = r.u16()?;
    let answers = r.u16()?;
    let authority = r.u16()?;
    let additional = r.u16()?;
    for _ in 0..questions {
        r.name()?;
        r.skip(4)?;
    }
    let mut out = SrvAnswer::default();
    let total = u32::from(answers) + u32::from(authority) + u32::from(additional);
    for i in 0..total {
        let name = r.name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        r.skip(4)?; // TTL
        let len = usize::from(r.u16()?);
        let start = r.at;
        if start + len > msg.len() {
            return Err(malformed("record overruns the message"));
        }
        match (rtype, class) {
            (TYPE_SRV, CLASS_IN) if i < u32::from(answers) => {
                let priority = r.u16()?;
                let weight = r.u16()?;
                let port = r.u16()?;
                let target = r.name()?;
                out.records.push(SrvRecord {
                    priority,
                    weight,
                    port,
                    target,
                });
            }
            (TYPE_A, CLASS_IN) if len == 4 => {
                let b = msg.get(start..start + 4).ok_or(malformed("truncated A"))?;
                let ip = Ipv4Addr::new(
                    *b.first().unwrap_or(&0),
                    *b.get(1).unwrap_or(&0),
                    *b.get(2).unwrap_or(&0),
                    *b.get(3).unwrap_or(&0),
                );
                out.addresses.push((name, IpAddr::V4(ip)));
            }
            (TYPE_AAAA, CLASS_IN) if len == 16 => {
                let b: [u8; 16] = msg
                    .get(start..start + 16)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(malformed("truncated AAAA"))?;
                out.addresses.push((name, IpAddr::V6(Ipv6Addr::from(b))));
            }
            _ => {}
        }
        r.at = start + len;
    }
    Ok(out)
}

/// The SRV records in the order RFC 2782 tries them: priority ascending, then weight
/// descending (a deterministic stand-in for the weighted random order).
pub fn ordered(mut records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    records
}

/// Asks `server` for the SRV records of `name` over UDP.
pub async fn lookup_srv(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<SrvAnswer, DnsError> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|_| DnsError::NoAnswer)?;
    let id = std::collections::hash_map::RandomState::new().hash_one(name) as u16;
    socket
        .send_to(&srv_query(id, name), server)
        .await
        .map_err(|_| DnsError::NoAnswer)?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .map_err(|_| DnsError::NoAnswer)?
            .map_err(|_| DnsError::NoAnswer)?;
        if from != server {
            continue;
        }
        match parse_srv_answer(id, buf.get(..n).unwrap_or_default()) {
            Err(DnsError::Malformed {
                reason: "answer to another query",
            }) => continue,
            other => return other,
        }
    }
}

/// The first `nameserver` of a resolv.conf text.
pub fn nameserver_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_test_support::dns::srv_response;

    #[test]
    fn parses_records_and_glue() {
        let name = "_sip._udp.trunk.example";
        let msg = srv_response(
            7,
            name,
            &[(20, 5, 5070, "b.example"), (10, 1, 5060, "a.example")],
            &[("a.example", [192, 0, 2, 1])],
        );
        let answer = parse_srv_answer(7, &msg).unwrap();
        assert_eq!(answer.records.len(), 2);
        let ordered = ordered(answer.records);
        assert_eq!(ordered[0].target, "a.example");
        assert_eq!(ordered[1].port, 5070);
        assert_eq!(
            answer.addresses,
            vec![("a.example".to_owned(), IpAddr::from([192, 0, 2, 1]))]
        );
        assert_eq!(
            srv_query(7, name).get(12..),
            Some(&msg[12..12 + name.len() + 6])
        );
    }

    #[test]
    fn errors_never_panic() {
        assert!(parse_srv_answer(1, &[]).is_err());
        let msg = srv_response(7, "x.example", &[(1, 1, 1, "t")], &[]);
        assert!(matches!(
            parse_srv_answer(8, &msg),
            Err(DnsError::Malformed { .. })
        ));
        for cut in 0..msg.len() {
            let _ = parse_srv_answer(7, &msg[..cut]);
        }
        let mut nx = msg.clone();
        nx[3] = 0x83;
        assert_eq!(parse_srv_answer(7, &nx), Err(DnsError::Rcode { rcode: 3 }));
        // A pointer to itself must not loop.
        let mut looped = msg.clone();
        let at = 12 + "x.example".len() + 2 + 4;
        looped[at] = 0xc0;
        looped[at + 1] = at as u8;
        assert!(parse_srv_answer(7, &looped).is_err());
        for i in 0..msg.len() {
            let mut m = msg.clone();
            m[i] ^= 0xff;
            let _ = parse_srv_answer(7, &m);
        }
    }

    #[test]
    fn reads_the_nameserver() {
        assert_eq!(
            nameserver_from_resolv_conf(
                "# x\nsearch a\nnameserver 127.0.0.53\nnameserver 1.1.1.1\n"
            ),
            Some("127.0.0.53:53".parse().unwrap())
        );
        assert_eq!(nameserver_from_resolv_conf("search a\n"), None);
    }
}

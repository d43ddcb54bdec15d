//! A DNS server on loopback for RFC 3263 tests: it answers SRV, A and AAAA queries from a fixed
//! [`Zone`] over UDP and TCP (two-byte length framing, RFC 1035 §4.2.2) on one OS-assigned port,
//! logs every query it gets, and can truncate its UDP answers to send the client to TCP.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;
/// How often the server's threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// SRV records: priority, weight, port, target.
pub type Srv = (u16, u16, u16, String);

/// What the server knows. Names compare case-insensitively, without a final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The one name that has SRV records (`_sip._udp.trunk.test`).
    pub srv_name: String,
    /// Its SRV records.
    pub srv: Vec<Srv>,
    /// Addresses, answered to A (IPv4) and AAAA (IPv6) queries.
    pub hosts: Vec<(String, IpAddr)>,
    /// Whether the SRV answer carries its targets' addresses as additional records.
    pub glue: bool,
    /// TTL of every record, in seconds.
    pub ttl: u32,
    /// Answer UDP queries with an empty, truncated (TC) message, so answers come only by TCP.
    pub truncate_udp: bool,
}

impl Zone {
    /// SRV records for `srv_name`, no hosts, glue on, a 60 s TTL, no truncation.
    pub fn new(srv_name: &str, srv: Vec<Srv>) -> Self {
        Self {
            srv_name: srv_name.to_owned(),
            srv,
            hosts: Vec::new(),
            glue: true,
            ttl: 60,
            truncate_udp: false,
        }
    }

    /// The addresses of `name`.
    fn addresses<'a>(&'a self, name: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
        self.hosts
            .iter()
            .filter(move |(host, _)| same_name(host, name))
            .map(|(_, ip)| *ip)
    }

    /// Whether the zone has any record for `name`.
    fn knows(&self, name: &str) -> bool {
        same_name(&self.srv_name, name) || self.addresses(name).next().is_some()
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// One query the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The question name, as asked (no final dot).
    pub name: String,
    /// The question type (1 = A, 28 = AAAA, 33 = SRV).
    pub qtype: u16,
    /// Whether it came over TCP.
    pub tcp: bool,
}

/// A question read from a query: the name, its type, and the question section's bytes.
struct Question<'a> {
    name: String,
    qtype: u16,
    raw: &'a [u8],
}

/// The first question of a query (names in queries are not compressed).
fn question(query: &[u8]) -> Option<Question<'_>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    Some(Question {
        name: labels.join("."),
        qtype,
        raw: query.get(12..at + 4)?,
    })
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len().min(63) as u8);
        out.extend(label.bytes().take(63));
    }
    out.push(0);
}

fn write_record(out: &mut Vec<u8>, name: &str, rtype: u16, ttl: u32, rdata: &[u8]) {
    write_name(out, name);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

fn write_address(out: &mut Vec<u8>, name: &str, ip: IpAddr, ttl: u32) {
    match ip {
        IpAddr::V4(v4) => write_record(out, name, TYPE_A, ttl, &v4.octets()),
        IpAddr::V6(v6) => write_record(out, name, TYPE_AAAA, ttl, &v6.octets()),
    }
}

/// The zone's answer to `query`, or `None` when it is not a query we can read.
fn answer(zone: &Zone, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = question(query)?;
    let mut answers = Vec::new();
    let mut additional = Vec::new();
    let (mut an, mut ar) = (0u16, 0u16);
    let truncated = udp && zone.truncate_udp;
    if !truncated {
        match q.qtype {
            TYPE_SRV if same_name(&q.name, &zone.srv_name) => {
                for (priority, weight, port, target) in &zone.srv {
                    let mut rdata = Vec::new();
                    rdata.extend_from_slice(&priority.to_be_bytes());
                    rdata.extend_from_slice(&weight.to_be_bytes());
                    rdata.extend_from_slice(&port.to_be_bytes());
                    write_name(&mut rdata, target);
                    write_record(&mut answers, &q.name, TYPE_SRV, zone.ttl, &rdata);
                    an += 1;
                    if zone.glue {
                        for ip in zone.addresses(target) {
                            write_address(&mut additional, target, ip, zone.ttl);
                            ar += 1;
                        }
                    }
                }
            }
            TYPE_A | TYPE_AAAA => {
                for ip in zone.addresses(&q.name) {
                    if ip.is_ipv4() == (q.qtype == TYPE_A) {
                        write_address(&mut answers, &q.name, ip, zone.ttl);
                        an += 1;
                    }
                }
            }
            _ => {}
        }
    }
    let rcode = if truncated || zone.knows(&q.name) {
        0
    } else {
        RCODE_NXDOMAIN
    };
    let mut m = Vec::with_capacity(12 + q.raw.len() + answers.len() + additional.len());
    m.extend_from_slice(query.get(..2)?);
    // QR, AA, the query's RD, RA; TC when truncated.
    let rd = query.get(2).copied().unwrap_or(0) & 0x01;
    m.push(0x84 | rd | if truncated { 0x02 } else { 0 });
    m.push(0x80 | rcode);
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&an.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&ar.to_be_bytes());
    m.extend_from_slice(q.raw);
    m.extend_from_slice(&answers);
    m.extend_from_slice(&additional);
    Some(m)
}

/// What the server's threads share.
#[derive(Debug)]
struct Shared {
    zone: Zone,
    stop: AtomicBool,
    log: Mutex<Vec<Asked>>,
}

impl Shared {
    fn reply(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        if let Some(q) = question(query) {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Asked {
                    name: q.name,
                    qtype: q.qtype,
                    tcp,
                });
        }
        answer(&self.zone, query, !tcp)
    }

    fn serve_udp(&self, socket: &UdpSocket) {
        let mut buf = [0u8; 4096];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some(reply) = self.reply(buf.get(..n).unwrap_or_default(), false) {
                let _ = socket.send_to(&reply, from);
            }
        }
    }

    /// Answers the queries of one TCP connection until the peer closes it or the server stops.
    fn serve_tcp(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(POLL));
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        while !self.stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut) => continue,
                Err(_) => return,
            }
            while let [hi, lo, rest @ ..] = pending.as_slice() {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some(query) = rest.get(..len) else { break };
                if let Some(reply) = self.reply(query, true) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    if stream.write_all(&framed).is_err() {
                        return;
                    }
                }
                pending.drain(..2 + len);
            }
        }
    }

    fn accept_tcp(self: &Arc<Self>, listener: &TcpListener) {
        let mut connections: Vec<JoinHandle<()>> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let shared = self.clone();
                    connections.push(std::thread::spawn(move || shared.serve_tcp(stream)));
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
        for c in connections {
            let _ = c.join();
        }
    }
}

/// Binds UDP and TCP on one free loopback port.
fn bind_pair() -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// A running loopback DNS server; stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    /// Where it listens, over UDP and TCP.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Answers SRV queries for `name` with `records` and their `glue` addresses as additional
    /// records, and A queries for the glue's names; every other name gets NXDOMAIN.
    pub fn start(
        name: &str,
        records: Vec<Srv>,
        glue: Vec<(String, [u8; 4])>,
    ) -> std::io::Result<DnsServer> {
        let mut zone = Zone::new(name, records);
        zone.hosts = glue
            .into_iter()
            .map(|(host, ip)| (host, IpAddr::from(ip)))
            .collect();
        Self::serve(zone)
    }

    /// Answers from `zone`.
    pub fn serve(zone: Zone) -> std::io::Result<DnsServer> {
        let (udp, tcp) = bind_pair()?;
        udp.set_read_timeout(Some(POLL))?;
        tcp.set_nonblocking(true)?;
        let addr = udp.local_addr()?;
        let shared = Arc::new(Shared {
            zone,
            stop: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        });
        let on_udp = shared.clone();
        let on_tcp = shared.clone();
        let threads = vec![
            std::thread::spawn(move || on_udp.serve_udp(&udp)),
            std::thread::spawn(move || on_tcp.accept_tcp(&tcp)),
        ];
        Ok(DnsServer {
            addr,
            shared,
            threads,
        })
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<Asked> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        write_name(&mut q, name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn zone() -> Zone {
        let mut zone = Zone::new("_sip._udp.t.test", vec![(10, 5, 5070, "a.t.test".into())]);
        zone.hosts = vec![
            ("a.t.test".into(), IpAddr::from([127, 0, 0, 9])),
            ("a.t.test".into(), "::1".parse().unwrap()),
        ];
        zone
    }

    #[test]
    fn answers_srv_with_glue_and_addresses_by_family() {
        let zone = zone();
        let srv = answer(&zone, &query(7, "_sip._udp.t.test", TYPE_SRV), true).unwrap();
        assert_eq!(&srv[..4], &[0, 7, 0x85, 0x80]);
        // One question, one answer, two additional records.
        assert_eq!(&srv[4..12], &[0, 1, 0, 1, 0, 0, 0, 2]);
        let a = answer(&zone, &query(8, "A.T.TEST", TYPE_A), true).unwrap();
        assert_eq!(&a[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&a[a.len() - 4..], &[127, 0, 0, 9]);
        let nx = answer(&zone, &query(9, "b.t.test", TYPE_A), true).unwrap();
        assert_eq!(nx[3] & 0x0f, RCODE_NXDOMAIN);
        assert_eq!(answer(&zone, &[0, 1, 2], true), None);
    }

    #[test]
    fn truncates_only_udp() {
        let mut zone = zone();
        zone.truncate_udp = true;
        let q = query(7, "_sip._udp.t.test", TYPE_SRV);
        let udp = answer(&zone, &q, true).unwrap();
        assert_eq!(udp[2] & 0x02, 0x02);
        assert_eq!(&udp[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        let tcp = answer(&zone, &q, false).unwrap();
        assert_eq!(tcp[2] & 0x02, 0);
        assert_eq!(&tcp[6..8], &[0, 1]);
    }

    #[test]
    fn serves_and_logs_udp_and_tcp() {
        let server = DnsServer::serve(zone()).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        udp.send_to(&query(1, "a.t.test", TYPE_A), server.addr)
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 1]);
        assert!(n > 12);

        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let q = query(2, "_sip._udp.t.test", TYPE_SRV);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        tcp.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..2], &[0, 2]);

        let asked = server.queries();
        assert_eq!(
            asked,
            vec![
                Asked {
                    name: "a.t.test".into(),
                    qtype: TYPE_A,
                    tcp: false
                },
                Asked {
                    name: "_sip._udp.t.test".into(),
                    qtype: TYPE_SRV,
                    tcp: true
                },
            ]
        );
    }
}

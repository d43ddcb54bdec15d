//! A DNS server on loopback that answers SRV queries from a fixed table, for RFC 3263 tests.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// SRV records: priority, weight, port, target.
pub type Srv<'a> = (u16, u16, u16, &'a str);

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

/// A response to an SRV query for `name` with `records` in the answer section (their owner
/// names compressed to the question) and `a` records as additional glue.
pub fn srv_response(id: u16, name: &str, records: &[Srv<'_>], a: &[(&str, [u8; 4])]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80]);
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&(records.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&(a.len() as u16).to_be_bytes());
    write_name(&mut m, name);
    m.extend_from_slice(&[0, 33, 0, 1]);
    for (priority, weight, port, target) in records {
        m.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
        let mut rdata = Vec::new();
        rdata.extend_from_slice(&priority.to_be_bytes());
        rdata.extend_from_slice(&weight.to_be_bytes());
        rdata.extend_from_slice(&port.to_be_bytes());
        write_name(&mut rdata, target);
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
    }
    for (host, ip) in a {
        write_name(&mut m, host);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(ip);
    }
    m
}

/// The question name of a query, if it parses (uncompressed, as queries are).
fn question_name(query: &[u8]) -> Option<String> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            return Some(labels.join("."));
        }
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
}

/// A running loopback DNS server; stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Answers SRV queries for `name` with `records` and `glue`; every other name gets
    /// NXDOMAIN.
    pub fn start(
        name: &str,
        records: Vec<(u16, u16, u16, String)>,
        glue: Vec<(String, [u8; 4])>,
    ) -> std::io::Result<DnsServer> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let name = name.to_owned();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let query = buf.get(..n).unwrap_or_default();
                let id =
                    u16::from_be_bytes([*query.first().unwrap_or(&0), *query.get(1).unwrap_or(&0)]);
                let asked = question_name(query).unwrap_or_default();
                let reply = if asked.eq_ignore_ascii_case(&name) {
                    let r: Vec<Srv<'_>> = records
                        .iter()
                        .map(|(p, w, port, t)| (*p, *w, *port, t.as_str()))
                        .collect();
                    let g: Vec<(&str, [u8; 4])> =
                        glue.iter().map(|(h, ip)| (h.as_str(), *ip)).collect();
                    srv_response(id, &asked, &r, &g)
                } else {
                    let mut nx = srv_response(id, &asked, &[], &[]);
                    if let Some(flags) = nx.get_mut(3) {
                        *flags = 0x83;
                    }
                    nx
                };
                let _ = socket.send_to(&reply, from);
            }
        });
        Ok(DnsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! Trunks: where calls go, with what credentials, and how many at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Credentials, Transport, TrunkTls, UaError, dns};

/// A SIP trunk (Twilio, Telnyx, Bandwidth style elastic SIP trunking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// Name, for logs and errors.
    pub name: String,
    /// Host name or IP literal.
    pub host: String,
    /// Port; the transport's default (5060, 5061 for TLS) when `None`.
    pub port: Option<u16>,
    /// Transport to the trunk.
    pub transport: Transport,
    /// Certificates and checks for `transport` TLS.
    pub tls: TrunkTls,
    /// Digest credentials for 401/407.
    pub credentials: Option<Credentials>,
    /// Domain for the From URI; the host when `None`.
    pub from_domain: Option<String>,
    /// An outbound proxy (`host[:port]`) every INVITE goes through first.
    pub outbound_proxy: Option<String>,
    /// Most simultaneous calls.
    pub max_concurrent_calls: Option<u32>,
    /// Most new calls per second.
    pub max_calls_per_second: Option<u32>,
    /// How long a new call waits for a cap before it is refused.
    pub cap_wait: Duration,
}

impl Trunk {
    /// A trunk with no credentials, caps or proxy.
    pub fn new(name: impl Into<String>, host: impl Into<String>, transport: Transport) -> Self {
        Self {
            name: name.into(),
            host: host.into(),
            port: None,
            transport,
            tls: TrunkTls::default(),
            credentials: None,
            from_domain: None,
            outbound_proxy: None,
            max_concurrent_calls: None,
            max_calls_per_second: None,
            cap_wait: Duration::from_secs(5),
        }
    }

    /// `host[:port]` as written in URIs.
    pub(crate) fn host_port(&self) -> String {
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.host.clone(),
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// The URI that reaches `number` (E.164) through this trunk: the Request-URI of a call
    /// to it, and the `Refer-To` of a blind transfer to it.
    pub fn number_uri(&self, number: &str) -> String {
        format!(
            "{}:{number}@{}{}",
            self.transport.scheme(),
            self.host_port(),
            self.transport.uri_param()
        )
    }

    /// The host we connect to: the outbound proxy's when set, else the trunk's (the name a TLS
    /// certificate must carry).
    pub(crate) fn connection_host(&self) -> String {
        match &self.outbound_proxy {
            Some(proxy) => split_host_port(proxy).0,
            None => self.host.clone(),
        }
    }

    /// The addresses to try, in order (RFC 3263 §4): the outbound proxy's if set, else the
    /// trunk's. An IP literal is used as it is; a name with a port is looked up as A/AAAA; a
    /// name without one is looked up as SRV (`_sip._udp.`, `_sip._tcp.` or `_sips._tcp.`), its
    /// targets tried by priority and weight (RFC 2782), falling back to A/AAAA on the
    /// transport's default port (5060, 5061 for TLS) when it has none.
    pub(crate) async fn resolve(&self, dns: &dns::Resolver) -> Result<Vec<SocketAddr>, UaError> {
        let (host, port) = match &self.outbound_proxy {
            Some(proxy) => split_host_port(proxy),
            None => (self.host.clone(), self.port),
        };
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(
                ip,
                port.unwrap_or(self.transport.default_port()),
            )]);
        }
        let mut targets: Vec<SocketAddr> = Vec::new();
        if port.is_none() {
            let service = match self.transport {
                Transport::Udp => "_sip._udp",
                Transport::Tcp => "_sip._tcp",
                Transport::Tls => "_sips._tcp",
            };
            let name = format!("{service}.{host}");
            match dns.lookup_srv(&name).await {
                Ok(mut answer) => {
                    for record in dns::ordered(std::mem::take(&mut answer.records)) {
                        let mut found: Vec<IpAddr> = answer.glue(&record.target).collect();
                        if found.is_empty() {
                            found = dns.lookup_ip(&record.target).await.unwrap_or_else(|error| {
                                tracing::debug!(srv_target = %record.target, %error, "does not resolve");
                                Vec::new()
                            });
                        }
                        push_new(
                            &mut targets,
                            found.into_iter().map(|ip| SocketAddr::new(ip, record.port)),
                        );
                    }
                }
                Err(error) => tracing::debug!(%name, %error, "no SRV records; using A/AAAA"),
            }
        }
        if targets.is_empty() {
            let found = dns
                .lookup_ip(&host)
                .await
                .map_err(|source| UaError::Resolve {
                    trunk: self.name.clone(),
                    host: host.clone(),
                    source,
                })?;
            let port = port.unwrap_or(self.transport.default_port());
            push_new(
                &mut targets,
                found.into_iter().map(|ip| SocketAddr::new(ip, port)),
            );
        }
        Ok(targets)
    }
}

fn push_new(targets: &mut Vec<SocketAddr>, found: impl IntoIterator<Item = SocketAddr>) {
    for addr in found {
        if !targets.contains(&addr) {
            targets.push(addr);
        }
    }
}

/// `host[:port]` or `[v6][:port]`; the port is `None` when absent.
fn split_host_port(value: &str) -> (String, Option<u16>) {
    if let Some(rest) = value.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (
            host.to_owned(),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match value.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse().ok()),
        _ => (value.to_owned(), None),
    }
}

/// One trunk's caps and what is taken of them. A gate is made anew when the trunk's caps
/// change; calls holding the old gate's slots keep them until they end.
#[derive(Debug)]
struct Gate {
    caps: (Option<u32>, Option<u32>),
    concurrency: Option<(Arc<Semaphore>, u32)>,
    /// Waiters queue on the async lock in arrival order, so the rate cap is first come, first
    /// served like the concurrency cap.
    rate: Option<tokio::sync::Mutex<TokenBucket>>,
}

/// A cap of calls per second: `per_second` tokens a second, as many at most (a burst of a
/// second's worth after a quiet spell).
#[derive(Debug)]
pub struct TokenBucket {
    per_second: u32,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_second` tokens at `now`.
    pub fn full(per_second: u32, now: Instant) -> Self {
        Self {
            per_second,
            tokens: f64::from(per_second.max(1)),
            updated: now,
        }
    }

    /// The cap it counts.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let cap = f64::from(self.per_second.max(1));
        self.tokens = (self.tokens + elapsed * cap).min(cap);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / cap))
        }
    }
}

/// Room for one call on a trunk, taken by [`crate::SipUa::admit`]. The call holds it until it
/// ends; dropping it unused gives the room back.
#[derive(Debug)]
pub struct Admission {
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// The caps of every trunk seen, keyed by trunk name.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Gates {
    fn gate(&self, trunk: &Trunk) -> Arc<Gate> {
        let caps = (trunk.max_concurrent_calls, trunk.max_calls_per_second);
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        match gates.get(&trunk.name) {
            Some(gate) if gate.caps == caps => gate.clone(),
            _ => {
                let gate = Arc::new(Gate {
                    caps,
                    concurrency: trunk
                        .max_concurrent_calls
                        .map(|n| (Arc::new(Semaphore::new(n as usize)), n)),
                    rate: trunk
                        .max_calls_per_second
                        .map(|n| tokio::sync::Mutex::new(TokenBucket::full(n, Instant::now()))),
                });
                gates.insert(trunk.name.clone(), gate.clone());
                gate
            }
        }
    }

    /// Takes room for one more call on `trunk` now, or `None` when a cap is reached.
    pub(crate) fn try_admit(&self, trunk: &Trunk) -> Option<Admission> {
        let gate = self.gate(trunk);
        let permit = match &gate.concurrency {
            Some((semaphore, _)) => Some(semaphore.clone().try_acquire_owned().ok()?),
            None => None,
        };
        if let Some(bucket) = &gate.rate {
            bucket.try_lock().ok()?.take(Instant::now()).ok()?;
        }
        Some(Admission { permit })
    }

    /// Waits (at most `cap_wait`, first come first served) until the trunk has room for one
    /// more call.
    pub(crate) async fn admit(&self, trunk: &Trunk) -> Result<Admission, UaError> {
        let gate = self.gate(trunk);
        let deadline = Instant::now() + trunk.cap_wait;
        let permit = match &gate.concurrency {
            Some((semaphore, max)) => {
                let acquired =
                    tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned()).await;
                match acquired {
                    Ok(Ok(p)) => Some(p),
                    _ => {
                        return Err(UaError::ConcurrencyCap {
                            trunk: trunk.name.clone(),
                            max: *max,
                        });
                    }
                }
            }
            None => None,
        };
        if let Some(bucket) = &gate.rate {
            let rate_cap = || UaError::RateCap {
                trunk: trunk.name.clone(),
                max: trunk.max_calls_per_second.unwrap_or_default(),
            };
            let mut b = tokio::time::timeout_at(deadline, bucket.lock())
                .await
                .map_err(|_| rate_cap())?;
            while let Err(wait) = b.take(Instant::now()) {
                if Instant::now() + wait > deadline {
                    return Err(rate_cap());
                }
                tokio::time::sleep(wait).await;
            }
        }
        Ok(Admission { permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_test_support::dns::{DnsServer, Zone};

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("proxy.example.com:5080"),
            ("proxy.example.com".into(), Some(5080))
        );
        assert_eq!(
            split_host_port("proxy.example.com"),
            ("proxy.example.com".into(), None)
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:5062"),
            ("2001:db8::1".into(), Some(5062))
        );
        let mut t = Trunk::new("t", "2001:db8::1", Transport::Udp);
        t.port = Some(5070);
        assert_eq!(t.host_port(), "[2001:db8::1]:5070");
    }

    #[test]
    fn token_bucket_refills_at_the_rate() {
        let start = Instant::now();
        let mut b = TokenBucket {
            per_second: 2,
            tokens: 2.0,
            updated: start,
        };
        assert!(b.take(start).is_ok());
        assert!(b.take(start).is_ok());
        let wait = b.take(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(start + Duration::from_millis(500)).is_ok());
    }

    #[tokio::test]
    async fn concurrency_cap_refuses_after_the_wait() {
        let gates = Gates::default();
        let mut trunk = Trunk::new("capped", "127.0.0.1", Transport::Udp);
        trunk.max_concurrent_calls = Some(1);
        trunk.cap_wait = Duration::from_millis(20);
        let first = gates.admit(&trunk).await.unwrap();
        assert!(matches!(
            gates.admit(&trunk).await,
            Err(UaError::ConcurrencyCap { max: 1, .. })
        ));
        drop(first);
        assert!(gates.admit(&trunk).await.is_ok());
    }

    /// Three calls queue behind a full trunk; they are admitted in the order they came.
    async fn admitted_order(trunk: Trunk, first: Option<Admission>, gates: Arc<Gates>) -> Vec<u32> {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (gates, trunk, order) = (gates.clone(), trunk.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let admission = gates.admit(&trunk).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(admission);
            }));
            // Let the waiter join the queue before the next one comes.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        order.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_for_a_concurrency_cap_are_admitted_in_arrival_order() {
        let gates = Arc::new(Gates::default());
        let mut trunk = Trunk::new("fifo", "127.0.0.1", Transport::Udp);
        trunk.max_concurrent_calls = Some(1);
        trunk.cap_wait = Duration::from_secs(60);
        let first = gates.admit(&trunk).await.unwrap();
        assert_eq!(admitted_order(trunk, Some(first), gates).await, [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_for_a_rate_cap_are_admitted_in_arrival_order_a_second_apart() {
        let gates = Arc::new(Gates::default());
        let mut trunk = Trunk::new("paced", "127.0.0.1", Transport::Udp);
        trunk.max_calls_per_second = Some(1);
        trunk.cap_wait = Duration::from_secs(60);
        gates.admit(&trunk).await.unwrap();
        let started = Instant::now();
        assert_eq!(admitted_order(trunk, None, gates).await, [0, 1, 2]);
        assert!(started.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_changed_cap_applies_to_new_calls_at_once() {
        let gates = Gates::default();
        let mut trunk = Trunk::new("grown", "127.0.0.1", Transport::Udp);
        trunk.max_concurrent_calls = Some(1);
        trunk.cap_wait = Duration::ZERO;
        let _held = gates.admit(&trunk).await.unwrap();
        assert!(gates.try_admit(&trunk).is_none());
        trunk.max_concurrent_calls = Some(2);
        let _second = gates.admit(&trunk).await.unwrap();
        assert!(gates.try_admit(&trunk).is_some());
    }

    fn srv_zone() -> Zone {
        let mut zone = Zone::new(
            "_sip._udp.trunk.test",
            vec![
                (20, 0, 5072, "backup.trunk.test".into()),
                (10, 0, 5071, "primary.trunk.test".into()),
            ],
        );
        zone.hosts = vec![
            ("primary.trunk.test".into(), IpAddr::from([127, 0, 0, 11])),
            ("backup.trunk.test".into(), IpAddr::from([127, 0, 0, 12])),
            ("plain.test".into(), IpAddr::from([127, 0, 0, 13])),
        ];
        zone
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn literals_and_localhost_need_no_query() {
        let server = DnsServer::serve(srv_zone()).unwrap();
        let dns = dns::Resolver::new(Some(server.addr)).unwrap();
        let t = Trunk::new("t", "127.0.0.1", Transport::Udp);
        assert_eq!(t.resolve(&dns).await.unwrap(), addrs(&["127.0.0.1:5060"]));
        let mut t = Trunk::new("t", "::1", Transport::Udp);
        t.port = Some(5070);
        assert_eq!(t.resolve(&dns).await.unwrap(), addrs(&["[::1]:5070"]));
        let t = Trunk::new("t", "localhost", Transport::Udp);
        let found = t.resolve(&dns).await.unwrap();
        assert!(!found.is_empty());
        assert!(
            found
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 5060)
        );
        assert_eq!(server.queries(), []);
    }

    #[tokio::test]
    async fn srv_targets_come_in_priority_order_with_their_ports() {
        let server = DnsServer::serve(srv_zone()).unwrap();
        let dns = dns::Resolver::new(Some(server.addr)).unwrap();
        let t = Trunk::new("t", "trunk.test", Transport::Udp);
        let expected = addrs(&["127.0.0.11:5071", "127.0.0.12:5072"]);
        assert_eq!(t.resolve(&dns).await.unwrap(), expected);
        // The glue answered for the targets: one query in all, and none the second time.
        assert_eq!(server.queries().len(), 1, "{:?}", server.queries());
        assert_eq!(t.resolve(&dns).await.unwrap(), expected);
        assert_eq!(server.queries().len(), 1);
    }

    #[tokio::test]
    async fn srv_targets_without_glue_are_looked_up() {
        let mut zone = srv_zone();
        zone.glue = false;
        let server = DnsServer::serve(zone).unwrap();
        let dns = dns::Resolver::new(Some(server.addr)).unwrap();
        let mut t = Trunk::new("t", "trunk.test", Transport::Udp);
        t.outbound_proxy = Some("trunk.test".into());
        t.host = "elsewhere.test".into();
        assert_eq!(
            t.resolve(&dns).await.unwrap(),
            addrs(&["127.0.0.11:5071", "127.0.0.12:5072"])
        );
        let asked: Vec<(String, u16)> = server
            .queries()
            .into_iter()
            .map(|q| (q.name, q.qtype))
            .collect();
        assert_eq!(asked.len(), 5, "{asked:?}");
        assert!(asked.contains(&("primary.trunk.test".into(), 1)));
        assert!(asked.contains(&("backup.trunk.test".into(), 28)));
    }

    #[tokio::test]
    async fn a_name_without_srv_records_or_with_a_port_is_looked_up_as_a_and_aaaa() {
        let server = DnsServer::serve(srv_zone()).unwrap();
        let dns = dns::Resolver::new(Some(server.addr)).unwrap();
        let t = Trunk::new("t", "plain.test", Transport::Tcp);
        assert_eq!(t.resolve(&dns).await.unwrap(), addrs(&["127.0.0.13:5060"]));
        let srv_asked =
            |server: &DnsServer| server.queries().iter().filter(|q| q.qtype == 33).count();
        assert_eq!(srv_asked(&server), 1);
        // With a port, no SRV lookup (RFC 3263 §4.2).
        let mut t = Trunk::new("t", "trunk.test", Transport::Udp);
        t.port = Some(5999);
        t.host = "primary.trunk.test".into();
        assert_eq!(t.resolve(&dns).await.unwrap(), addrs(&["127.0.0.11:5999"]));
        assert_eq!(srv_asked(&server), 1);
        let t = Trunk::new("t", "nowhere.test", Transport::Udp);
        assert!(matches!(
            t.resolve(&dns).await,
            Err(UaError::Resolve {
                source: dns::DnsError::NotFound,
                ..
            })
        ));
    }
}

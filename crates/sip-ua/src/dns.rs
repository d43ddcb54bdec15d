//! DNS for RFC 3263 trunk resolution, through hickory-resolver.
//!
//! A [`Resolver`] asks the system's name servers (`/etc/resolv.conf`, with its options and search
//! list), or one given server, for SRV and A/AAAA records. Hickory caches answers for their TTL
//! (negative answers too), retries a truncated UDP answer over TCP, answers `localhost` itself
//! (RFC 6761) and reads the hosts file first. [`ordered`] puts SRV records in the order RFC 2782
//! tries them: by priority, then weighted random within a priority.
//!
//! NAPTR (RFC 3263 §4.1) is not looked up: a trunk always names its transport, and with a
//! transport given RFC 3263 goes straight to the SRV records of that transport.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

/// Why a lookup produced nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN), or has no records of the type asked for.
    #[error("no such records")]
    NotFound,
    /// No usable answer: the name servers timed out, refused or failed, an answer was
    /// malformed, or the name is not a valid domain name.
    #[error("DNS lookup failed: {reason}")]
    Failed {
        /// What went wrong, as the resolver tells it.
        reason: String,
    },
}

impl From<NetError> for DnsError {
    fn from(error: NetError) -> Self {
        if error.is_no_records_found() {
            DnsError::NotFound
        } else {
            DnsError::Failed {
                reason: error.to_string(),
            }
        }
    }
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Among equal priorities, the relative chance of being tried first.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The target host, absolute (with its final dot).
    pub target: String,
}

/// What an SRV answer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvAnswer {
    /// SRV records in the answer section.
    pub records: Vec<SrvRecord>,
    /// A/AAAA records of the additional section (the targets' glue): name and address.
    pub addresses: Vec<(String, IpAddr)>,
}

impl SrvAnswer {
    /// The glue addresses of `target`.
    pub fn glue<'a>(&'a self, target: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
        self.addresses
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(target))
            .map(|(_, ip)| *ip)
    }
}

/// A caching DNS stub resolver; clones share the cache.
#[derive(Debug, Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// Asks only `server` (UDP, and TCP on the same port for truncated answers) when given;
    /// otherwise the system's name servers and options. Without a usable `/etc/resolv.conf`
    /// only the hosts file and `localhost` resolve. A/AAAA lookups ask for both families and
    /// list IPv4 addresses first.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, DnsError> {
        let mut builder = match server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                    server.ip(),
                    true,
                    vec![udp, tcp],
                )]);
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            }
            None => TokioResolver::builder_tokio().unwrap_or_else(|error| {
                tracing::warn!(%error, "no system DNS configuration; only the hosts file resolves");
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(Vec::new()),
                    TokioRuntimeProvider::default(),
                )
            }),
        };
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Self {
            inner: builder.build()?,
        })
    }

    /// The SRV records of `name` (`_sip._udp.example.com`), with the glue the answer carried.
    pub async fn lookup_srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        let lookup = self.inner.srv_lookup(name).await?;
        let records = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        let addresses = lookup
            .additionals()
            .iter()
            .filter_map(|r| Some((r.name.to_ascii(), r.data.ip_addr()?)))
            .collect();
        Ok(SrvAnswer { records, addresses })
    }

    /// The addresses of `host` (A and AAAA, IPv4 first); an IP literal is its own address.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let found: Vec<IpAddr> = self.inner.lookup_ip(host).await?.iter().collect();
        if found.is_empty() {
            return Err(DnsError::NotFound);
        }
        Ok(found)
    }
}

/// The SRV records in the order RFC 2782 tries them: priority ascending; within a priority,
/// each next record drawn at random with a chance proportional to its weight, where the records
/// of weight 0 together have a chance of one in the weights' sum plus one.
pub fn ordered(records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    let hasher = std::collections::hash_map::RandomState::new();
    let mut draws = 0u64;
    ordered_by(records, |sum| {
        draws += 1;
        // RandomState is keyed from the OS's randomness.
        hasher.hash_one(draws) % (sum + 1)
    })
}

/// [`ordered`] with `draw(sum)` giving a uniform number in `0..=sum`.
fn ordered_by(mut records: Vec<SrvRecord>, mut draw: impl FnMut(u64) -> u64) -> Vec<SrvRecord> {
    // Stable: within a priority, weight 0 first (RFC 2782), the rest in answer order.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    while let Some(priority) = records.first().map(|r| r.priority) {
        let same = records
            .iter()
            .take_while(|r| r.priority == priority)
            .count();
        let mut group: Vec<SrvRecord> = records.drain(..same).collect();
        while !group.is_empty() {
            let sum = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = draw(sum);
            let mut running = 0;
            let chosen = group
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(chosen));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_test_support::dns::{Asked, DnsServer, Zone};

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    fn targets(records: &[SrvRecord]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn priorities_come_in_order_and_the_draw_picks_by_running_weight_sum() {
        let records = vec![
            srv(20, 0, "backup"),
            srv(10, 3, "heavy"),
            srv(10, 0, "zero"),
            srv(10, 1, "light"),
        ];
        // Running sums in the selection order zero, heavy, light: 0, 3, 4.
        let mut draws = vec![];
        let lowest = ordered_by(records.clone(), |sum| {
            draws.push(sum);
            0
        });
        assert_eq!(targets(&lowest), ["zero", "heavy", "light", "backup"]);
        assert_eq!(draws, [4, 4, 1, 0]);
        let highest = ordered_by(records.clone(), |sum| sum);
        assert_eq!(targets(&highest), ["light", "heavy", "zero", "backup"]);
        let middle = ordered_by(records, |sum| if sum == 4 { 2 } else { 0 });
        assert_eq!(targets(&middle), ["heavy", "zero", "light", "backup"]);
        assert!(ordered(Vec::new()).is_empty());
    }

    #[test]
    fn weights_set_the_share_of_first_places() {
        let records = vec![srv(1, 1, "a"), srv(1, 3, "b"), srv(1, 0, "c")];
        let mut first = std::collections::HashMap::<String, u32>::new();
        for _ in 0..4000 {
            let order = ordered(records.clone());
            assert_eq!(order.len(), 3);
            *first.entry(order[0].target.clone()).or_default() += 1;
        }
        // Draws of 0..=4: c takes 0, a takes 1, b takes 2..=4.
        let share = |t: &str| f64::from(first.get(t).copied().unwrap_or(0)) / 4000.0;
        assert!((share("b") - 0.6).abs() < 0.06, "{first:?}");
        assert!((share("a") - 0.2).abs() < 0.06, "{first:?}");
        assert!((share("c") - 0.2).abs() < 0.06, "{first:?}");
    }

    fn zone() -> Zone {
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
            ("backup.trunk.test".into(), "::1".parse().unwrap()),
        ];
        zone
    }

    #[tokio::test]
    async fn srv_answers_carry_records_and_glue() {
        let server = DnsServer::serve(zone()).unwrap();
        let dns = Resolver::new(Some(server.addr)).unwrap();
        let answer = dns.lookup_srv("_sip._udp.trunk.test").await.unwrap();
        assert_eq!(
            targets(&ordered(answer.records.clone())),
            ["primary.trunk.test.", "backup.trunk.test."]
        );
        assert_eq!(
            answer.glue("BACKUP.trunk.test.").collect::<Vec<_>>(),
            [IpAddr::from([127, 0, 0, 12]), "::1".parse().unwrap()]
        );
        assert_eq!(
            dns.lookup_srv("_sip._tcp.trunk.test").await,
            Err(DnsError::NotFound)
        );
    }

    #[tokio::test]
    async fn addresses_come_ipv4_first_and_literals_need_no_query() {
        let server = DnsServer::serve(zone()).unwrap();
        let dns = Resolver::new(Some(server.addr)).unwrap();
        assert_eq!(
            dns.lookup_ip("backup.trunk.test").await.unwrap(),
            [IpAddr::from([127, 0, 0, 12]), "::1".parse().unwrap()]
        );
        let asked = server.queries().len();
        assert_eq!(asked, 2, "{:?}", server.queries());
        assert_eq!(
            dns.lookup_ip("127.0.0.7").await.unwrap(),
            [IpAddr::from([127, 0, 0, 7])]
        );
        assert_eq!(
            dns.lookup_ip("localhost").await.unwrap()[0],
            IpAddr::from([127, 0, 0, 1])
        );
        assert_eq!(server.queries().len(), asked);
        assert_eq!(
            dns.lookup_ip("nowhere.trunk.test").await,
            Err(DnsError::NotFound)
        );
    }

    #[tokio::test]
    async fn answers_are_cached_for_their_ttl() {
        let mut zone = zone();
        zone.ttl = 1;
        let server = DnsServer::serve(zone).unwrap();
        let dns = Resolver::new(Some(server.addr)).unwrap();
        let first = dns.lookup_srv("_sip._udp.trunk.test").await.unwrap();
        assert_eq!(server.queries().len(), 1);
        assert_eq!(dns.lookup_srv("_sip._udp.trunk.test").await.unwrap(), first);
        assert_eq!(
            dns.clone()
                .lookup_srv("_sip._udp.trunk.test")
                .await
                .unwrap(),
            first
        );
        assert_eq!(server.queries().len(), 1, "served from the cache");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(dns.lookup_srv("_sip._udp.trunk.test").await.unwrap(), first);
        assert_eq!(
            server.queries().len(),
            2,
            "asked again once the TTL ran out"
        );
    }

    #[tokio::test]
    async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let mut zone = zone();
        zone.truncate_udp = true;
        let server = DnsServer::serve(zone).unwrap();
        let dns = Resolver::new(Some(server.addr)).unwrap();
        let answer = dns.lookup_srv("_sip._udp.trunk.test").await.unwrap();
        assert_eq!(answer.records.len(), 2);
        let asked = |tcp| Asked {
            name: "_sip._udp.trunk.test".into(),
            qtype: 33,
            tcp,
        };
        assert_eq!(server.queries(), [asked(false), asked(true)]);
    }
}

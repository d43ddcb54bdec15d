//! Where Dialtone's outbound HTTP may go: webhooks today, tool calls and provider base URLs
//! next. A URL someone else supplied must not reach the node's own network (loopback, private
//! and link-local ranges, the cloud metadata endpoint at 169.254.169.254, …) unless the
//! operator allows it.
//!
//! - [`is_private`] is the policy: the one place that says which addresses are refused.
//! - [`vet_url`] applies it to a URL ahead of time (the API checks URLs when they are created):
//!   the scheme must be http(s), an IP-literal host is checked, a name is resolved and every
//!   address it resolves to is checked.
//! - [`Client`] applies it at every request, with no gap between the check and the connection
//!   for DNS rebinding to use: [`Client::request`] checks the URL's IP-literal host (reqwest
//!   connects to literals without resolving), and the client's resolver resolves each name
//!   once, refuses it if any of its addresses is refused, and hands reqwest exactly the
//!   addresses it checked, so reqwest connects to those and no others. Redirects are never
//!   followed (a public receiver could otherwise send the request on to a private one) and no
//!   proxy is used (a proxy would resolve and connect to the target itself, unchecked).
//! - [`PolicyResolver`] does the same for the websocket providers (Deepgram, Cartesia,
//!   ElevenLabs): their client resolves the host through it once, as it connects, and connects
//!   the TCP stream to an address it returned (the name kept for TLS and `Host`).
//! - [`cause_of`] finds this module's error (a refusal, a name that did not resolve) inside a
//!   failed request's error, to tell it from a network failure.
//!
//! [`PrivateDestinations`] is the operator's allow-list: none (the default), every private
//! address (tests, closed networks), or some networks (an in-house LLM server, say); the rest is
//! the same.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why an outbound URL or request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// Not an absolute http(s) URL with a host.
    #[error("{url:?} is not an http(s) URL with a host")]
    InvalidUrl {
        /// The URL given.
        url: String,
    },
    /// The host is, or resolves to, an address the policy refuses ([`is_private`]).
    #[error("{host} is or resolves to {address}, a private, loopback or reserved address")]
    Private {
        /// The URL's host.
        host: String,
        /// The refused address.
        address: IpAddr,
    },
    /// The host's name did not resolve to any address.
    #[error("cannot resolve {host}: {source}")]
    Unresolved {
        /// The URL's host.
        host: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The private destinations the operator lets tenants point the daemon at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PrivateDestinations {
    /// None: every address [`is_private`] names is refused.
    #[default]
    None,
    /// All of them (tests, closed networks).
    All,
    /// These networks, and no other private address.
    Only(Vec<Network>),
}

pub use dialtone_model::Network;

impl PrivateDestinations {
    /// Whether a connection to `ip` is refused: a private address the operator did not allow.
    pub fn refuses(&self, ip: IpAddr) -> bool {
        is_private(ip)
            && match self {
                Self::None => true,
                Self::All => false,
                Self::Only(networks) => !networks.iter().any(|n| n.contains(ip)),
            }
    }
}

/// IPv4 ranges refused as destinations: (network, prefix length).
const REFUSED_V4: [(Ipv4Addr, u8); 13] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8), // "this network", with the unspecified address
    (Ipv4Addr::new(10, 0, 0, 0), 8), // private
    (Ipv4Addr::new(100, 64, 0, 0), 10), // carrier-grade NAT
    (Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12), // private
    (Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24), // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 168, 0, 0), 16), // private
    (Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24), // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 3), // multicast 224/4, reserved 240/4, broadcast
];

/// IPv6 ranges refused as destinations: (network, prefix length). Forms that carry an IPv4
/// address are judged by that address (see [`embedded_v4`]).
const REFUSED_V6: [(Ipv6Addr, u8); 10] = [
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // NAT64 for local use
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),    // documentation
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),     // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),    // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),    // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),     // multicast
];

/// Whether outbound requests to `ip` are refused: loopback, private, link-local, carrier-grade
/// NAT, unspecified, broadcast, documentation, benchmarking, multicast and reserved addresses,
/// in IPv4 and IPv6, and the IPv6 forms of such IPv4 addresses (IPv4-mapped, IPv4-compatible,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => REFUSED_V4
            .iter()
            .any(|(net, len)| within(IpAddr::V4(*net), *len, IpAddr::V4(v4))),
        IpAddr::V6(v6) => {
            embedded_v4(v6).is_some_and(|v4| is_private(IpAddr::V4(v4)))
                || REFUSED_V6
                    .iter()
                    .any(|(net, len)| within(IpAddr::V6(*net), *len, IpAddr::V6(v6)))
        }
    }
}

/// Whether `ip` is in the network `net/len`.
fn within(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    Network::new(net, len).is_some_and(|n| n.contains(ip))
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let mapped = 0xffff_u128 << 32;
    let nat64 = 0x0064_ff9b_u128 << 96;
    if bits >> 32 == mapped >> 32 || bits >> 32 == 0 || bits >> 32 == nat64 >> 32 {
        Some(low)
    } else if bits >> 112 == 0x2002 {
        Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32))
    } else {
        None
    }
}

/// Parses `url` and checks what can be checked without resolving: an http(s) scheme, a host,
/// and an IP-literal host against the policy.
fn check(url: &str, policy: &PrivateDestinations) -> Result<reqwest::Url, OutboundError> {
    let invalid = || OutboundError::InvalidUrl {
        url: url.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid());
    }
    if let Some(address) = literal(&parsed).filter(|ip| policy.refuses(*ip)) {
        return Err(OutboundError::Private {
            host: address.to_string(),
            address,
        });
    }
    Ok(parsed)
}

/// The URL's host if it is an IP literal. The URL parser writes IPv4 literals in dotted form
/// whatever form they were given in (`2130706433`, `0x7f.1`, `127.1`), IPv6 ones in brackets.
fn literal(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Resolves `host` (a name) and refuses it if any of its addresses is refused.
async fn resolve(
    host: &str,
    policy: &PrivateDestinations,
) -> Result<Vec<SocketAddr>, OutboundError> {
    let unresolved = |source| OutboundError::Unresolved {
        host: host.to_owned(),
        source,
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(unresolved)?
        .collect();
    if found.is_empty() {
        return Err(unresolved(std::io::ErrorKind::NotFound.into()));
    }
    if let Some(refused) = found.iter().find(|a| policy.refuses(a.ip())) {
        return Err(OutboundError::Private {
            host: host.to_owned(),
            address: refused.ip(),
        });
    }
    Ok(found)
}

/// Checks `url` as a destination: an http(s) URL whose host is not, and (a name) does not
/// resolve to, an address the policy refuses. With every private destination allowed only the
/// URL's shape is checked and nothing is resolved.
pub async fn vet_url(url: &str, policy: &PrivateDestinations) -> Result<(), OutboundError> {
    let parsed = check(url, policy)?;
    match parsed.host_str() {
        Some(name) if *policy != PrivateDestinations::All && literal(&parsed).is_none() => {
            resolve(name, policy).await.map(drop)
        }
        _ => Ok(()),
    }
}

/// `url` (http, as a gRPC client takes it) with its host replaced by an address the policy
/// accepts, resolved once here: connect to what this returns and nothing can re-resolve the
/// name to another address between the check and the connection.
pub async fn vetted_endpoint(
    url: &str,
    policy: &PrivateDestinations,
) -> Result<String, OutboundError> {
    let parsed = check(url, policy)?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let address = match (literal(&parsed), parsed.host_str()) {
        (Some(ip), _) => ip,
        (None, Some(name)) => resolve(name, policy)
            .await?
            .first()
            .map(SocketAddr::ip)
            .ok_or_else(|| OutboundError::InvalidUrl {
                url: url.to_owned(),
            })?,
        (None, None) => {
            return Err(OutboundError::InvalidUrl {
                url: url.to_owned(),
            });
        }
    };
    Ok(format!(
        "{}://{}",
        parsed.scheme(),
        SocketAddr::new(address, port)
    ))
}

/// The addresses a websocket provider's client may connect to: an IP literal the policy
/// accepts, or every address of a name none of whose addresses the policy refuses.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: std::sync::Arc<PrivateDestinations>,
}

impl PolicyResolver {
    /// A resolver applying `policy`.
    pub fn new(policy: PrivateDestinations) -> Self {
        Self {
            policy: std::sync::Arc::new(policy),
        }
    }
}

impl dialtone_agent::ResolveAddresses for PolicyResolver {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> dialtone_agent::BoxFuture<'static, Result<Vec<SocketAddr>, String>> {
        let policy = self.policy.clone();
        let host = host.to_owned();
        Box::pin(async move {
            let found = match host.parse::<IpAddr>() {
                Ok(address) if policy.refuses(address) => {
                    return Err(OutboundError::Private { host, address }.to_string());
                }
                Ok(address) => vec![SocketAddr::new(address, port)],
                Err(_) => resolve(&host, &policy).await.map_err(|e| e.to_string())?,
            };
            Ok(found
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect())
        })
    }
}

/// The resolver of [`Client`]: resolves a name and gives reqwest only checked addresses.
#[derive(Debug, Clone)]
struct VettingResolver {
    policy: std::sync::Arc<PrivateDestinations>,
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = resolve(&host, &policy).await?;
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

/// An HTTP client for URLs someone else supplied: every request goes only to addresses the
/// policy accepts, redirects are not followed, no proxy is used.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: std::sync::Arc<PrivateDestinations>,
}

impl Client {
    /// A client whose requests time out after `timeout` (resolution, connection, response)
    /// and reach private addresses only as `policy` allows.
    pub fn new(policy: PrivateDestinations, timeout: Duration) -> Result<Client, OutboundError> {
        let policy = std::sync::Arc::new(policy);
        let http = builder(policy.clone())
            .timeout(timeout)
            .build()
            .map_err(OutboundError::Client)?;
        Ok(Client { http, policy })
    }

    /// A `method` request to `url`, refused at once if `url` is not http(s) or its host is a
    /// refused IP literal; a name is resolved and checked when the request is sent.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, OutboundError> {
        let url = check(url, &self.policy)?;
        Ok(self.http.request(method, url))
    }
}

/// A plain HTTP client that reaches only addresses `policy` allows (names are resolved and
/// checked as requests are sent; an IP literal in a URL must be checked with [`vet_url`]
/// first), follows no redirect and uses no proxy; connections are kept for reuse. For
/// streamed requests to services, which set their own timeouts.
pub fn http_client(policy: PrivateDestinations) -> Result<reqwest::Client, OutboundError> {
    builder(std::sync::Arc::new(policy))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(OutboundError::Client)
}

fn builder(policy: std::sync::Arc<PrivateDestinations>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(VettingResolver { policy })
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// Why a request from [`Client`] failed, if its resolver failed it: the host's name resolved to
/// a refused address ([`OutboundError::Private`]) or did not resolve.
pub fn cause_of(error: &reqwest::Error) -> Option<&OutboundError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<OutboundError>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn refused(addresses: &[&str]) {
        for a in addresses {
            assert!(is_private(a.parse().unwrap()), "{a} should be refused");
        }
    }

    fn accepted(addresses: &[&str]) {
        for a in addresses {
            assert!(!is_private(a.parse().unwrap()), "{a} should be accepted");
        }
    }

    #[test]
    fn public_addresses_are_accepted() {
        accepted(&[
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            // NAT64 (RFC 6052) of a public address reaches that public address; the NAT64
            // forms of private ones are refused (below), as is the local-use prefix.
            "64:ff9b::808:808",
            "2002:808:808::1",
        ]);
    }

    #[test]
    fn ipv4_private_ranges_are_refused() {
        refused(&["10.0.0.0", "10.255.255.255", "172.16.0.1", "172.31.255.255"]);
        refused(&["192.168.0.1", "192.168.255.255"]);
        accepted(&[
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
        ]);
    }

    #[test]
    fn ipv4_loopback_link_local_and_unspecified_are_refused() {
        refused(&[
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "169.254.0.1",
        ]);
        refused(&["0.0.0.0", "0.1.2.3"]);
        accepted(&["169.253.255.255", "169.255.0.0"]);
    }

    #[test]
    fn ipv4_carrier_grade_nat_is_refused() {
        refused(&["100.64.0.0", "100.100.100.200", "100.127.255.255"]);
        accepted(&["100.63.255.255", "100.128.0.0"]);
    }

    #[test]
    fn ipv4_documentation_and_benchmarking_ranges_are_refused() {
        refused(&["192.0.2.1", "198.51.100.7", "203.0.113.9"]);
        refused(&["198.18.0.1", "198.19.255.255"]);
        accepted(&["198.17.255.255", "198.20.0.0", "203.0.114.1"]);
    }

    #[test]
    fn ipv4_multicast_reserved_and_broadcast_are_refused() {
        refused(&[
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ]);
        refused(&["192.0.0.8", "192.0.0.170"]);
    }

    #[test]
    fn ipv6_loopback_unspecified_and_local_ranges_are_refused() {
        refused(&[
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
        ]);
        accepted(&["fbff:ffff::1", "fe7f::1"]);
    }

    #[test]
    fn ipv6_multicast_documentation_and_special_ranges_are_refused() {
        refused(&[
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "64:ff9b:1::1",
        ]);
        accepted(&["2001:db9::1", "3fff:1000::1"]);
    }

    #[test]
    fn ipv6_forms_of_refused_ipv4_addresses_are_refused() {
        refused(&[
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::192.168.1.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a00:1::",
        ]);
    }

    #[tokio::test]
    async fn vet_url_checks_scheme_literals_and_names() {
        for url in ["ftp://8.8.8.8/", "not a url", "http://", "mailto:a@b.c"] {
            assert!(
                matches!(
                    vet_url(url, &PrivateDestinations::All).await,
                    Err(OutboundError::InvalidUrl { .. })
                ),
                "{url}"
            );
        }
        for url in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest",
            "https://[::1]/x",
            "https://[::ffff:7f00:1]/x",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://user:pw@10.0.0.5:8080/",
            "http://localhost:9/hook",
            "http://LocalHost:9/hook",
        ] {
            assert!(
                matches!(
                    vet_url(url, &PrivateDestinations::None).await,
                    Err(OutboundError::Private { .. })
                ),
                "{url}"
            );
            vet_url(url, &PrivateDestinations::All).await.unwrap();
        }
        // IPv6 zone forms (a link-local address on a named interface) never pass.
        for url in [
            "http://[fe80::1%25eth0]/",
            "https://[fe80::1%25lo]:8443/x",
            "http://[::1%251]/",
        ] {
            assert!(
                vet_url(url, &PrivateDestinations::None).await.is_err(),
                "{url}"
            );
        }
        vet_url("https://8.8.8.8/hook", &PrivateDestinations::None)
            .await
            .unwrap();
        vet_url(
            "http://[2606:4700:4700::1111]:8080/",
            &PrivateDestinations::None,
        )
        .await
        .unwrap();
    }

    /// No connection reaches `listener` within a moment (a connection the client made would
    /// already be queued: the kernel completes it without an accept).
    async fn untouched(listener: &TcpListener) -> bool {
        tokio::time::timeout(Duration::from_millis(200), listener.accept())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn refused_hosts_are_never_connected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::new(PrivateDestinations::None, Duration::from_secs(5)).unwrap();
        let literal = client.request(reqwest::Method::GET, &format!("http://127.0.0.1:{port}/"));
        assert!(matches!(literal, Err(OutboundError::Private { .. })));
        let named = client
            .request(reqwest::Method::GET, &format!("http://localhost:{port}/"))
            .unwrap()
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(cause_of(&named), Some(OutboundError::Private { host, .. }) if host == "localhost"),
            "{named:?}"
        );
        assert!(untouched(&listener).await);
    }

    /// A websocket provider is resolved as its client connects: a name that resolves to a
    /// private address then (whatever it resolved to when the agent was dispatched) is refused
    /// and never connected; allowed, it is connected at the address resolved.
    #[tokio::test]
    async fn websocket_providers_connect_only_to_vetted_addresses() {
        use dialtone_agent::{AgentError, DeepgramTranscriber, SpeechToText, StreamingProvider};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for base_url in [
            format!("http://localhost:{port}/v1"),
            format!("http://127.0.0.1:{port}/v1"),
        ] {
            let provider = StreamingProvider::new("ears", base_url, None).with_resolver(
                std::sync::Arc::new(PolicyResolver::new(PrivateDestinations::None)),
            );
            let error = DeepgramTranscriber::new(provider, "nova-3")
                .transcribe(vec![0; 320], None)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, AgentError::Refused { detail, .. } if detail.contains("127.0.0.1")),
                "{error:?}"
            );
            assert!(!error.is_retryable());
        }
        assert!(untouched(&listener).await);

        let allowed = PolicyResolver::new(PrivateDestinations::All);
        let found = dialtone_agent::ResolveAddresses::resolve(&allowed, "localhost", port)
            .await
            .unwrap();
        assert!(
            found
                .iter()
                .all(|a| a.port() == port && a.ip().is_loopback()),
            "{found:?}"
        );
    }

    /// An operator may allow some private networks and no others.
    #[tokio::test]
    async fn an_allow_list_opens_only_its_networks() {
        let only = PrivateDestinations::Only(vec![
            "10.1.0.0/16".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ]);
        assert!(!only.refuses("10.1.2.3".parse().unwrap()));
        assert!(only.refuses("10.2.0.1".parse().unwrap()));
        assert!(!only.refuses("127.0.0.1".parse().unwrap()));
        assert!(only.refuses("127.0.0.2".parse().unwrap()));
        assert!(only.refuses("169.254.169.254".parse().unwrap()));
        assert!(!only.refuses("8.8.8.8".parse().unwrap()));
        vet_url("http://10.1.9.9:8000/v1", &only).await.unwrap();
        assert!(matches!(
            vet_url("http://10.3.0.1:8000/v1", &only).await,
            Err(OutboundError::Private { .. })
        ));
        for bad in ["10.0.0.0/33", "ten", "fd00::/129"] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    /// A gRPC brain's address is resolved once and handed on as the vetted address itself.
    #[tokio::test]
    async fn an_endpoint_is_vetted_and_pinned_to_its_address() {
        assert!(matches!(
            vetted_endpoint("http://localhost:7000", &PrivateDestinations::None).await,
            Err(OutboundError::Private { .. })
        ));
        assert!(matches!(
            vetted_endpoint("http://[::ffff:10.1.2.3]:7000", &PrivateDestinations::None).await,
            Err(OutboundError::Private { .. })
        ));
        let pinned = vetted_endpoint("http://localhost:7000", &PrivateDestinations::All)
            .await
            .unwrap();
        assert!(
            pinned == "http://127.0.0.1:7000" || pinned == "http://[::1]:7000",
            "{pinned}"
        );
        assert_eq!(
            vetted_endpoint("http://8.8.8.8:7000", &PrivateDestinations::None)
                .await
                .unwrap(),
            "http://8.8.8.8:7000"
        );
    }

    #[tokio::test]
    async fn allowed_private_hosts_are_connected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::new(PrivateDestinations::All, Duration::from_secs(5)).unwrap();
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let sent = tokio::spawn(client.request(reqwest::Method::GET, &url).unwrap().send());
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            assert_eq!(sent.await.unwrap().unwrap().status(), 204, "{url}");
        }
    }

    #[tokio::test]
    async fn failures_that_are_not_refusals_are_told_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = Client::new(PrivateDestinations::All, Duration::from_secs(5)).unwrap();
        let error = client
            .request(reqwest::Method::GET, &format!("http://127.0.0.1:{port}/"))
            .unwrap()
            .send()
            .await
            .unwrap_err();
        assert!(cause_of(&error).is_none(), "{error:?}");
    }
}

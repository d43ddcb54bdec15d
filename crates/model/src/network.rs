//! An IP network (`10.0.0.0/8`, `fd00::/8`, or one address): a trunk's `inbound_cidrs`, and
//! the operator's allow-list of private destinations.

use std::fmt;
use std::net::IpAddr;

/// An IP network: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or one address (`10.1.2.3`, the whole of it).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a network like 10.0.0.0/8 or an address");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix = prefix.unwrap_or(width(address) as u8);
        Self::new(address, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// How many bits an address of `ip`'s family has.
fn width(ip: IpAddr) -> u32 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The address's bits, right-aligned.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Network {
    /// `address/prefix`; `None` when the prefix is longer than the address.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        (u32::from(prefix) <= width(address)).then_some(Self { address, prefix })
    }

    /// Whether the network is one carrier's at most: an IPv4 prefix of 8 bits or more, an IPv6
    /// one of 32 or more. Wider ones (`0.0.0.0/0`) would trust much of the internet.
    pub fn is_narrow(self) -> bool {
        let shortest = if self.address.is_ipv4() { 8 } else { 32 };
        self.prefix >= shortest
    }

    /// Whether `ip` is in this network (an IPv4 address is never in an IPv6 network).
    pub fn contains(self, ip: IpAddr) -> bool {
        if self.address.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let shift = width(ip) - u32::from(self.prefix);
        (bits(ip) ^ bits(self.address))
            .checked_shr(shift)
            .unwrap_or(0)
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Network {
        text.parse().unwrap_or_else(|e: String| panic!("{e}"))
    }

    #[test]
    fn networks_parse_print_and_contain_their_addresses_only() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("192.0.2.7").to_string(), "192.0.2.7/32");
        assert!(net("10.0.0.0/8").contains("10.255.1.2".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(!net("10.0.0.0/8").contains(IpAddr::from([11, 0, 0, 1])));
        assert!(net("0.0.0.0/0").contains(IpAddr::from([203, 0, 113, 9])));
        assert!(!net("0.0.0.0/0").contains("::1".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(net("fd00::/8").contains("fd12::1".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(net("127.0.0.1").contains(IpAddr::from([127, 0, 0, 1])));
        assert!(!net("127.0.0.1").contains(IpAddr::from([127, 0, 0, 2])));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }
}

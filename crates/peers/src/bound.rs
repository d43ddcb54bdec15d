//! Whether a UDP port is bound, read from the kernel's socket tables (`/proc/net/udp` and
//! `/proc/net/udp6`) rather than by trying to bind it: a probe that binds the port for an instant
//! can take it from the very peer that is starting, which then fails to listen.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::PeerError;

/// The kernel's tables of UDP sockets, IPv4 then IPv6.
const UDP_TABLES: [&str; 2] = ["/proc/net/udp", "/proc/net/udp6"];

/// Whether a UDP socket is bound to `port` on `ip`, or on every address (which serves `ip` too).
pub(crate) fn udp_port_bound(ip: IpAddr, port: u16) -> Result<bool, PeerError> {
    Ok(udp_sockets()?
        .into_iter()
        .any(|(bound_ip, bound_port)| serves(bound_ip, ip) && bound_port == port))
}

/// The local address of every UDP socket of this network namespace.
fn udp_sockets() -> Result<Vec<(IpAddr, u16)>, PeerError> {
    let mut sockets = Vec::new();
    for table in UDP_TABLES {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(PeerError::io(format!("reading {table}"))(e)),
        };
        sockets.extend(text.lines().skip(1).filter_map(local_address));
    }
    Ok(sockets)
}

/// Whether a socket bound to `bound` receives what is sent to `ip`.
fn serves(bound: IpAddr, ip: IpAddr) -> bool {
    let bound = match bound {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(bound, IpAddr::V4),
        IpAddr::V4(_) => bound,
    };
    bound == ip || bound.is_unspecified()
}

/// The local address of one row of a table: `  sl  local_address rem_address …`, the address in
/// hexadecimal words in the machine's byte order, the port in hexadecimal.
fn local_address(row: &str) -> Option<(IpAddr, u16)> {
    let local = row.split_whitespace().nth(1)?;
    let (address, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(address)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(address.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A socket bound to one loopback address is seen there and not on another (while it is
    /// bound no wildcard socket can hold its port). Whether a closed one is gone is the kernel's
    /// affair, and racy to test here: a child another test forks holds every descriptor until it
    /// execs.
    #[test]
    fn a_bound_port_is_seen_on_its_address_only() {
        let own = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let socket = UdpSocket::bind((own, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        assert!(seen(own, port));
        assert!(!udp_port_bound(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)), port).unwrap());
    }

    /// Whether `ip`:`port` is seen bound within a few reads: a read of the kernel's table while
    /// other sockets come and go can miss a row (it is walked a page at a time), which readiness
    /// polling simply reads again.
    fn seen(ip: IpAddr, port: u16) -> bool {
        (0..100).any(|_| udp_port_bound(ip, port).unwrap())
    }

    #[test]
    fn a_wildcard_bind_serves_loopback() {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        assert!(seen(LOOPBACK, port));
    }

    #[test]
    fn rows_are_read_in_the_machines_byte_order() {
        let v4 = format!(
            "   0: {:08X}:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0",
            u32::from_ne_bytes([127, 0, 0, 1])
        );
        assert_eq!(local_address(&v4), Some((LOOPBACK, 0x13C4)));
        let mapped: String = Ipv4Addr::LOCALHOST
            .to_ipv6_mapped()
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        let v6 = format!("  1: {mapped}:0050 00000000000000000000000000000000:0000 07");
        let (ip, port) = local_address(&v6).unwrap();
        assert!(serves(ip, LOOPBACK));
        assert_eq!(port, 80);
        assert_eq!(local_address("garbage"), None);
        assert_eq!(local_address("  2: 0100007F:XYZ 0 07"), None);
    }
}

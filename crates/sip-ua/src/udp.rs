//! The SIP UDP socket, with Linux's extended error reporting on (`IP_RECVERR`,
//! `IPV6_RECVERR`, ip(7)): an ICMP port, host or network unreachable for a datagram we sent
//! waits on the socket's error queue with that datagram's destination, so the driver learns at
//! once which target nothing listens on, instead of retransmitting to it until Timer B.
//!
//! With the option on, the kernel also reports such an error once as the error of the next
//! read or send on the socket, whatever that one's peer: [`SipSocket::try_recv`] passes over
//! it (the error queue says whose it was), and [`SipSocket::send_to`] sends once more before
//! it takes a failure as its destination's.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use dialtone_sip_core::TransportFailure;
use nix::libc;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tokio::io::{Interest, Ready};
use tokio::net::UdpSocket;

/// The SIP UDP socket and the room to read its error queue.
#[derive(Debug)]
pub(crate) struct SipSocket {
    socket: UdpSocket,
    /// One error-queue control message; reused, so reading the queue allocates nothing.
    control: Vec<u8>,
}

impl SipSocket {
    /// Turns the error queue of `socket` on.
    pub(crate) fn new(socket: UdpSocket) -> io::Result<Self> {
        match socket.local_addr()? {
            SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4RecvErr, &true)?,
            SocketAddr::V6(_) => {
                setsockopt(&socket, sockopt::Ipv6RecvErr, &true)?;
                // A dual-stack socket reaches IPv4 peers too; their ICMP errors need this one.
                if let Err(error) = setsockopt(&socket, sockopt::Ipv4RecvErr, &true) {
                    tracing::debug!(%error, "no IPv4 error queue on the IPv6 SIP socket");
                }
            }
        }
        Ok(Self {
            socket,
            control: nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6),
        })
    }

    /// Waits until a datagram or an error is queued.
    pub(crate) async fn ready(&self) -> io::Result<Ready> {
        self.socket
            .ready(Interest::READABLE | Interest::ERROR)
            .await
    }

    /// Reads the next datagram into `buf`: its length and source, `None` when none is there
    /// (or the read reported an earlier send's error instead; the datagram stays queued).
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self.socket.try_recv_from(buf) {
            Ok(received) => Some(received),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
            Err(error) => {
                tracing::trace!(%error, "a read reported an earlier send's error");
                None
            }
        }
    }

    /// The destination of the next queued error that says nothing takes datagrams there;
    /// `None` once the queue is empty. Other errors (a path MTU report, a local one that the
    /// send itself returned) are passed over: the transaction's retransmissions go on.
    pub(crate) fn next_unreachable(&mut self) -> Option<SocketAddr> {
        let Self { socket, control } = self;
        loop {
            // Any failure to read ends the drain as an empty queue does, so that the error
            // readiness is cleared: the next report raises it again.
            let queued = socket.try_io(Interest::ERROR, || {
                read_error(socket.as_raw_fd(), control.as_mut_slice()).map_err(|error| {
                    if error.kind() != io::ErrorKind::WouldBlock {
                        tracing::debug!(%error, "cannot read the UDP error queue");
                    }
                    io::Error::from(io::ErrorKind::WouldBlock)
                })
            });
            match queued {
                Ok((Some(destination), Some(error))) if is_unreachable(&error) => {
                    return Some(destination);
                }
                Ok((destination, error)) => {
                    tracing::debug!(?destination, ?error, "UDP error passed over");
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends `payload` to `destination`. A failure may be an ICMP error another datagram left
    /// (the failed send consumed it), so the datagram is sent once more before the failure is
    /// taken as this destination's.
    pub(crate) async fn send_to(
        &self,
        payload: &[u8],
        destination: SocketAddr,
    ) -> Result<(), TransportFailure> {
        if let Err(error) = self.socket.send_to(payload, destination).await {
            tracing::debug!(%destination, %error, "UDP send failed, sending again");
            if let Err(error) = self.socket.send_to(payload, destination).await {
                tracing::debug!(%destination, %error, "UDP send failed");
                return Err(TransportFailure::of_error_kind(error.kind()));
            }
        }
        Ok(())
    }
}

/// Reads one entry of the error queue: the destination of the datagram it is about (the
/// kernel puts it where a read puts a datagram's source) and the error.
fn read_error(
    fd: i32,
    control: &mut [u8],
) -> io::Result<(Option<SocketAddr>, Option<libc::sock_extended_err>)> {
    let mut no_data: [IoSliceMut<'_>; 0] = [];
    let message =
        recvmsg::<SockaddrStorage>(fd, &mut no_data, Some(control), MsgFlags::MSG_ERRQUEUE)
            .map_err(io::Error::from)?;
    let destination = message
        .address
        .as_ref()
        .filter(|a| a.family().is_some())
        .and_then(socket_addr);
    let error = message.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::Ipv4RecvErr(error, _)
            | ControlMessageOwned::Ipv6RecvErr(error, _) => Some(error),
            _ => None,
        })
    });
    Ok((destination, error))
}

/// The address as the driver writes it: an IPv4 peer of a dual-stack socket as IPv4.
fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    storage.as_sockaddr_in6().map(|v6| {
        let v6 = SocketAddrV6::from(*v6);
        SocketAddr::new(v6.ip().to_canonical(), v6.port())
    })
}

/// Whether a queued error is an ICMP (or ICMPv6) report that nothing takes datagrams at the
/// destination: port unreachable (the kernel's `ECONNREFUSED`), host or network unreachable.
fn is_unreachable(error: &libc::sock_extended_err) -> bool {
    let from_the_network = matches!(
        error.ee_origin,
        libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6
    );
    let kind = i32::try_from(error.ee_errno).map_or(io::ErrorKind::Other, |errno| {
        io::Error::from_raw_os_error(errno).kind()
    });
    from_the_network && TransportFailure::of_error_kind(kind) == TransportFailure::Unreachable
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn queued(origin: u8, errno: i32) -> libc::sock_extended_err {
        libc::sock_extended_err {
            ee_errno: u32::try_from(errno).unwrap(),
            ee_origin: origin,
            ee_type: 3,
            ee_code: 3,
            ee_pad: 0,
            ee_info: 0,
            ee_data: 0,
        }
    }

    #[test]
    fn only_icmp_reports_of_no_listener_or_no_route_count() {
        for errno in [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ENETUNREACH] {
            assert!(is_unreachable(&queued(libc::SO_EE_ORIGIN_ICMP, errno)));
            assert!(is_unreachable(&queued(libc::SO_EE_ORIGIN_ICMP6, errno)));
        }
        // Fragmentation needed: the path MTU changed, the next retransmission fits.
        assert!(!is_unreachable(&queued(
            libc::SO_EE_ORIGIN_ICMP,
            libc::EMSGSIZE
        )));
        // A local error was the send's own failure already.
        assert!(!is_unreachable(&queued(
            libc::SO_EE_ORIGIN_LOCAL,
            libc::ECONNREFUSED
        )));
    }

    async fn closed_port() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.local_addr().unwrap()
    }

    async fn next_unreachable(socket: &mut SipSocket) -> SocketAddr {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let ready = socket.ready().await.unwrap();
                if ready.is_error()
                    && let Some(destination) = socket.next_unreachable()
                {
                    return destination;
                }
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_closed_port_is_named_by_the_error_queue_and_datagrams_still_arrive() {
        let mut sip = SipSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed = closed_port().await;
        sip.send_to(b"INVITE", closed).await.unwrap();
        assert_eq!(next_unreachable(&mut sip).await, closed);
        assert_eq!(sip.next_unreachable(), None, "one report per datagram");
        // A second report is pending as the socket's error when this send starts: it is sent
        // again and arrives.
        sip.send_to(b"INVITE", closed).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        sip.send_to(b"OPTIONS", peer.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(buf.get(..n), Some(&b"OPTIONS"[..]));
        // And a datagram sent to us after another report is read.
        sip.send_to(b"INVITE", closed).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        peer.send_to(b"SIP/2.0 200 OK", sip.socket.local_addr().unwrap())
            .await
            .unwrap();
        let received = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let ready = sip.ready().await.unwrap();
                if let Some((n, source)) = sip.try_recv(&mut buf) {
                    return (buf.get(..n).map(<[u8]>::to_vec), source);
                }
                if ready.is_error() {
                    while sip.next_unreachable().is_some() {}
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            received,
            (Some(b"SIP/2.0 200 OK".to_vec()), peer.local_addr().unwrap())
        );
    }
}

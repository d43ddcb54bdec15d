//! When a datagram reached the host, not when it was read: UDP reads with the kernel's
//! receive timestamp (`SO_TIMESTAMPNS`).
//!
//! A media worker reads its sockets in batches (once every few milliseconds, not once per
//! packet), so the time of the read says little about the network. The kernel stamps every
//! datagram as it queues it on the socket; [`recv_stamped`] returns that stamp as an
//! [`Instant`], which is what the jitter buffer's interarrival jitter and the loadgen's gap
//! meter need. The stamp is wall-clock time: [`ArrivalClock`] maps it onto the monotonic clock
//! from one pair of readings per batch. A datagram without a stamp (the option could not be
//! set) is timed at the read.
//!
//! [`for_each_ready`] and [`drain_stamped`] are the batch itself: which sockets of an epoll
//! have datagrams (asked without waiting), and every datagram of one of them with its stamp.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Poll, Token};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;

/// Asks the kernel to stamp every datagram `socket` receives.
pub fn enable_receive_timestamps(socket: &impl AsFd) -> io::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// Maps the kernel's wall-clock stamps onto [`Instant`]s: one reading of both clocks, taken
/// when a batch of reads starts.
#[derive(Debug, Clone, Copy)]
pub struct ArrivalClock {
    now: Instant,
    wall: SystemTime,
}

impl ArrivalClock {
    /// Reads both clocks.
    pub fn read() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The monotonic instant of a wall-clock stamp: never after the reading (a stamp from the
    /// future is a clock step, timed at the reading), never more than a second before it.
    pub fn instant_of(&self, stamp: SystemTime) -> Instant {
        let ago = self
            .wall
            .duration_since(stamp)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(1));
        self.now.checked_sub(ago).unwrap_or(self.now)
    }
}

/// Room for the control message a stamped read carries.
#[derive(Debug)]
pub struct StampBuffer(Vec<u8>);

impl Default for StampBuffer {
    fn default() -> Self {
        Self(nix::cmsg_space!(TimeSpec))
    }
}

/// One datagram read by [`recv_stamped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Its length in the buffer.
    pub len: usize,
    /// Who sent it.
    pub source: SocketAddr,
    /// When the kernel queued it on the socket.
    pub arrived: Instant,
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddrV6::from(*v6).into())
}

/// Reads one datagram from non-blocking `socket` into `buf` with its arrival stamp.
/// `WouldBlock` when none is queued.
pub fn recv_stamped(
    socket: &impl AsFd,
    buf: &mut [u8],
    stamps: &mut StampBuffer,
    clock: &ArrivalClock,
) -> io::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<SockaddrStorage>(
        socket.as_fd().as_raw_fd(),
        &mut iov,
        Some(stamps.0.as_mut_slice()),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let stamp = message.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(ts) => {
                let since_epoch = Duration::new(
                    u64::try_from(ts.tv_sec()).ok()?,
                    u32::try_from(ts.tv_nsec()).ok()?,
                );
                SystemTime::UNIX_EPOCH.checked_add(since_epoch)
            }
            _ => None,
        })
    });
    let source = message
        .address
        .as_ref()
        .filter(|a| a.family().is_some())
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without a source"))?;
    Ok(Datagram {
        len: message.bytes,
        source,
        arrived: stamp.map_or_else(Instant::now, |s| clock.instant_of(s)),
    })
}

/// Calls `each` with the token of every socket registered in `poll` that has become readable
/// (edge-triggered, as mio registers), asking without waiting; asks again while a batch fills
/// `events`, since sockets may be left behind that are still ready.
pub fn for_each_ready(
    poll: &mut Poll,
    events: &mut Events,
    mut each: impl FnMut(Token),
) -> io::Result<()> {
    loop {
        match poll.poll(events, Some(Duration::ZERO)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut count = 0;
        for event in events.iter() {
            count += 1;
            each(event.token());
        }
        if count < events.capacity() {
            return Ok(());
        }
    }
}

/// Errors in a row after which [`drain_stamped`] leaves a socket (an ICMP error from an
/// earlier send is reported once; one that repeats would keep the reader here for ever).
const ERRORS_IN_A_ROW: usize = 8;

/// Reads every datagram queued on non-blocking `socket` into `buf`, handing each to `each`
/// with its arrival stamp, until the socket would block.
pub fn drain_stamped(
    socket: &impl AsFd,
    buf: &mut [u8],
    stamps: &mut StampBuffer,
    mut each: impl FnMut(Datagram, &[u8]),
) {
    let clock = ArrivalClock::read();
    let mut errors = 0;
    while errors < ERRORS_IN_A_ROW {
        match recv_stamped(socket, buf, stamps, &clock) {
            Ok(datagram) => {
                errors = 0;
                each(datagram, buf.get(..datagram.len).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ICMP port unreachable from an earlier send, and the like: keep reading.
            Err(_) => errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn a_stamp_maps_onto_the_monotonic_clock_and_is_clamped() {
        let clock = ArrivalClock::read();
        let earlier = clock.wall - Duration::from_millis(7);
        assert_eq!(
            clock.now.duration_since(clock.instant_of(earlier)),
            Duration::from_millis(7)
        );
        // From the future (the wall clock stepped back): the reading itself.
        assert_eq!(
            clock.instant_of(clock.wall + Duration::from_secs(3)),
            clock.now
        );
        // Far in the past (the wall clock stepped forward): at most a second.
        assert_eq!(
            clock
                .now
                .duration_since(clock.instant_of(clock.wall - Duration::from_secs(3600))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_datagram_read_later_keeps_the_time_it_arrived() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        enable_receive_timestamps(&receiver).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mut buf, mut stamps) = ([0u8; 64], StampBuffer::default());
        let clock = ArrivalClock::read();
        assert_eq!(
            recv_stamped(&receiver, &mut buf, &mut stamps, &clock)
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
        // The first socket of a host to ask for stamps turns stamping on through deferred
        // kernel work; a datagram that arrives before that work has run is stamped when it is
        // read. So a few rounds: in each, send, read 30 ms later, and look for one whose stamp
        // is its arrival, not its read.
        let mut ages = Vec::new();
        for round in 0u8..5 {
            let sent_at = Instant::now();
            sender
                .send_to(&[round], receiver.local_addr().unwrap())
                .unwrap();
            std::thread::sleep(Duration::from_millis(30));
            // Loopback queues it during `send_to`; a loaded host may take a little longer.
            let (clock, datagram) = (0..200)
                .find_map(|_| {
                    let clock = ArrivalClock::read();
                    match recv_stamped(&receiver, &mut buf, &mut stamps, &clock) {
                        Ok(datagram) => Some((clock, datagram)),
                        Err(e) => {
                            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                            std::thread::sleep(Duration::from_millis(5));
                            None
                        }
                    }
                })
                .expect("the datagram arrives within a second");
            assert_eq!(&buf[..datagram.len], &[round]);
            assert_eq!(datagram.source, sender.local_addr().unwrap());
            assert!(datagram.arrived + Duration::from_millis(5) >= sent_at);
            ages.push(clock.now.duration_since(datagram.arrived));
        }
        assert!(
            ages.iter().any(|age| *age >= Duration::from_millis(25)),
            "every datagram was timed at its read: {ages:?}"
        );
    }

    #[test]
    fn every_ready_socket_is_drained_even_when_a_batch_is_full() {
        let mut poll = Poll::new().unwrap();
        // Room for one event a batch: the second socket comes in a second batch.
        let mut events = Events::with_capacity(1);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut receivers = Vec::new();
        for token in 0..2 {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            enable_receive_timestamps(&socket).unwrap();
            let mut socket = mio::net::UdpSocket::from_std(socket);
            poll.registry()
                .register(&mut socket, Token(token), mio::Interest::READABLE)
                .unwrap();
            receivers.push(socket);
        }
        for (socket, count) in receivers.iter().zip([3u8, 2]) {
            for n in 0..count {
                sender.send_to(&[n], socket.local_addr().unwrap()).unwrap();
            }
        }
        let (mut buf, mut stamps) = ([0u8; 16], StampBuffer::default());
        let mut read = Vec::new();
        // Loopback delivers during `send_to`: everything is queued already, and one call
        // reads it all.
        for_each_ready(&mut poll, &mut events, |token| {
            let socket = &receivers[token.0];
            drain_stamped(socket, &mut buf, &mut stamps, |datagram, bytes| {
                assert_eq!(datagram.source, sender.local_addr().unwrap());
                read.push((token.0, bytes.to_vec()));
            });
        })
        .unwrap();
        read.sort();
        assert_eq!(
            read,
            vec![
                (0, vec![0]),
                (0, vec![1]),
                (0, vec![2]),
                (1, vec![0]),
                (1, vec![1])
            ]
        );
        // Drained: nothing is ready any more.
        let mut more = 0;
        for_each_ready(&mut poll, &mut events, |_| more += 1).unwrap();
        assert_eq!(more, 0);
    }
}

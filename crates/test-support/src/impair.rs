//! A UDP reflector that impairs what it sends back: seeded loss (with bursts), delay and jitter
//! (which reorders), for networks where the kernel's netem queueing discipline is missing. The
//! same seed gives the same impairment.

use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::PeerError;

/// The impairment model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `0..jitter`.
    pub jitter: Duration,
    /// Chance a packet is lost.
    pub loss: f64,
    /// Chance each packet after a loss is lost too (bursts).
    pub burst: f64,
    /// Seed of the model.
    pub seed: u64,
}

impl Impairment {
    /// No impairment at all.
    pub fn none() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: 0.0,
            seed: 1,
        }
    }
}

struct Due {
    at: Instant,
    order: u64,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// What the reflector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reflected {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent back.
    pub sent: u64,
    /// Datagrams the model dropped.
    pub dropped: u64,
}

/// Sends every datagram arriving on `bind` back to its sender through `model`, for `length`.
pub fn reflect(
    bind: SocketAddr,
    model: Impairment,
    length: Duration,
) -> Result<Reflected, PeerError> {
    let socket =
        UdpSocket::bind(bind).map_err(PeerError::io(format!("binding the reflector on {bind}")))?;
    let mut rng = model.seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let end = Instant::now() + length;
    let mut queue = BinaryHeap::new();
    let mut stats = Reflected::default();
    let mut in_burst = false;
    let mut order = 0u64;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let now = Instant::now();
        while queue.peek().is_some_and(|d: &Due| d.at <= now) {
            if let Some(d) = queue.pop()
                && socket.send_to(&d.data, d.to).is_ok()
            {
                stats.sent += 1;
            }
        }
        let wait = queue
            .peek()
            .map_or(Duration::from_millis(5), |d| {
                d.at.saturating_duration_since(now)
            })
            .clamp(Duration::from_micros(200), Duration::from_millis(5));
        socket
            .set_read_timeout(Some(wait))
            .map_err(PeerError::io("setting the reflector's timeout"))?;
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        stats.received += 1;
        let lost = if in_burst {
            next() < model.burst
        } else {
            next() < model.loss
        };
        in_burst = lost;
        if lost {
            stats.dropped += 1;
            continue;
        }
        order += 1;
        let jitter = model.jitter.mul_f64(next());
        queue.push(Due {
            at: Instant::now() + model.delay + jitter,
            order,
            to: from,
            data: buf.get(..n).unwrap_or_default().to_vec(),
        });
    }
    Ok(stats)
}

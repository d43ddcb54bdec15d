//! A lock-free latency histogram: one writer (a media worker), any number of readers.
//!
//! Buckets are logarithmic with four per octave of microseconds (about 19 % wide) from 1 µs to
//! about 1 s; the maximum and the sum are kept exactly. Recording is three relaxed atomic
//! operations and never allocates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 81;

/// A histogram of durations.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us <= 1 {
        return 0;
    }
    // 4·log2(us), by the position of the top bit and the two bits below it.
    let top = 63 - u64::from(us.leading_zeros());
    let below = if top >= 2 {
        (us >> (top - 2)) & 0b11
    } else {
        (us << (2 - top)) & 0b11
    };
    ((top * 4 + below) as usize).min(BUCKETS - 1)
}

/// The largest value a bucket holds, in µs.
fn bucket_ceiling(bucket: usize) -> u64 {
    let (top, below) = ((bucket / 4) as u32, (bucket % 4) as u64);
    if top >= 2 {
        ((4 + below + 1) << (top - 2)) - 1
    } else {
        ((4 + below + 1) >> (2 - top)).max(1)
    }
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_of(us)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// A copy of the current counts.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| {
                self.buckets.get(i).map_or(0, |b| b.load(Ordering::Relaxed))
            }),
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// Counts read from one or more histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySnapshot {
    buckets: [u64; BUCKETS],
    /// Durations recorded.
    pub count: u64,
    /// Their sum in µs.
    pub sum_us: u64,
    /// The largest in µs.
    pub max_us: u64,
}

impl Default for LatencySnapshot {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl LatencySnapshot {
    /// Adds another histogram's counts (workers merged into one figure).
    pub fn merge(&mut self, other: &LatencySnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The duration below which a share `q` (0.0–1.0) of the records fall, to the bucket's
    /// upper bound (never above the exact maximum).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(bucket_ceiling(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    /// The mean.
    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.sum_us.checked_div(self.count).unwrap_or(0))
    }

    /// The count in each bucket with the bucket's upper bound in seconds (for a Prometheus
    /// exposition of a merged histogram).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, n)| (bucket_ceiling(i) as f64 / 1e6, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut previous = 0;
        for us in 1..2_000_000u64 {
            let b = bucket_of(us);
            assert!(b >= previous, "{us}");
            assert!(us <= bucket_ceiling(b) || b == BUCKETS - 1, "{us} in {b}");
            previous = b;
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let h = LatencyHistogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max_us, 1000);
        for (q, exact) in [(0.5, 500.0), (0.99, 990.0)] {
            let got = s.quantile(q).as_micros() as f64;
            assert!(got >= exact && got <= exact * 1.2, "q{q}: {got}");
        }
        assert_eq!(s.quantile(1.0), Duration::from_micros(1000));
        let mut merged = LatencySnapshot::default();
        merged.merge(&s);
        merged.merge(&s);
        assert_eq!(merged.count, 2000);
        assert_eq!(merged.mean(), Duration::from_micros(500));
    }
}

//! The budget of refused inbound INVITEs per source address: a token bucket per IP, refilled
//! with time. Each new INVITE takes a token when it arrives (so a burst sent faster than the
//! refusals are decided is bounded too); the token comes back when the call turns out not to be
//! a refusal for cause — it is rung or answered, or refused for another reason (busy, no codec).
//! A `403`/`404` keeps it. A source that spent its budget is no longer answered at all — its
//! INVITEs are dropped and counted — so a scanner walking numbers cannot make the daemon look
//! numbers up, write logs or send answers faster than the refill. Drops are logged as a
//! periodic summary, never one line per packet. An IPv6 source is counted by its /64 (a host
//! there picks addresses at will), and sources the full table has no room for share one budget
//! rather than none. Sans-IO: every method takes `now`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// How many refusals a source may earn, and how fast its budget comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalBudget {
    /// Refusals a source may get in a burst (the bucket's size).
    pub burst: u32,
    /// One refusal comes back every this long.
    pub refill_every: Duration,
    /// At most one summary of drops is logged this often.
    pub summary_every: Duration,
    /// Sources tracked at most; beyond, those whose budget is full again are forgotten, and
    /// new ones the table still has no room for share one budget.
    pub max_sources: usize,
}

impl Default for RefusalBudget {
    /// 20 refusals in a burst, one more each second, a summary a minute, 10 000 sources.
    fn default() -> Self {
        Self {
            burst: 20,
            refill_every: Duration::from_secs(1),
            summary_every: Duration::from_secs(60),
            max_sources: 10_000,
        }
    }
}

/// What `source` is counted under: its IPv4 address (an IPv4-mapped IPv6 one too), or its
/// IPv6 /64.
fn counted_as(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What was dropped since the last summary: logged by the caller when [`RefusalLimiter::drop_from`]
/// returns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropSummary {
    /// INVITEs dropped since the last summary.
    pub dropped: u64,
    /// How many sources they came from.
    pub sources: usize,
    /// One of them, for the log.
    pub example: IpAddr,
}

/// The per-source budgets; see the module's documentation.
#[derive(Debug)]
pub struct RefusalLimiter {
    budget: RefusalBudget,
    buckets: HashMap<IpAddr, Bucket>,
    /// The budget the sources the full table has no room for share.
    overflow: Option<Bucket>,
    dropped_since_summary: u64,
    sources_since_summary: HashSet<IpAddr>,
    last_summary: Option<Instant>,
}

impl RefusalLimiter {
    /// Budgets of `budget`'s size, every source's full.
    pub fn new(budget: RefusalBudget) -> Self {
        Self {
            budget,
            buckets: HashMap::new(),
            overflow: None,
            dropped_since_summary: 0,
            sources_since_summary: HashSet::new(),
            last_summary: None,
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let burst = f64::from(self.budget.burst);
        let every = self.budget.refill_every.as_secs_f64();
        let earned = if every > 0.0 {
            now.saturating_duration_since(bucket.at).as_secs_f64() / every
        } else {
            burst
        };
        (bucket.tokens + earned).min(burst)
    }

    /// The bucket `source` is counted in: its own (`Some` key) when the table has it or has
    /// room for it, else (`None`) the one the overflow shares.
    fn bucket_of(&self, source: IpAddr) -> Option<IpAddr> {
        let key = counted_as(source);
        (self.buckets.contains_key(&key) || self.buckets.len() < self.budget.max_sources)
            .then_some(key)
    }

    fn bucket(&self, key: Option<IpAddr>) -> Option<Bucket> {
        match key {
            Some(key) => self.buckets.get(&key).copied(),
            None => self.overflow,
        }
    }

    fn set_bucket(&mut self, key: Option<IpAddr>, bucket: Bucket) {
        match key {
            Some(key) => {
                self.buckets.insert(key, bucket);
            }
            None => self.overflow = Some(bucket),
        }
    }

    /// Whether `source` may still be answered a refusal at `now` (its budget is not spent).
    pub fn allows(&self, now: Instant, source: IpAddr) -> bool {
        self.bucket(self.bucket_of(source))
            .is_none_or(|b| self.refilled(b, now) >= 1.0)
    }

    /// Charges `source` one refusal at `now`.
    pub fn charge(&mut self, now: Instant, source: IpAddr) {
        if !self.buckets.contains_key(&counted_as(source))
            && self.buckets.len() >= self.budget.max_sources
        {
            self.forget_full(now);
        }
        let key = self.bucket_of(source);
        let fresh = Bucket {
            tokens: f64::from(self.budget.burst),
            at: now,
        };
        let bucket = self.bucket(key).unwrap_or(fresh);
        let tokens = (self.refilled(bucket, now) - 1.0).max(0.0);
        self.set_bucket(key, Bucket { tokens, at: now });
    }

    /// Gives `source` back the token an INVITE took at `now` (its call was not refused for
    /// cause).
    pub fn refund(&mut self, now: Instant, source: IpAddr) {
        let burst = f64::from(self.budget.burst);
        let key = self.bucket_of(source);
        if let Some(bucket) = self.bucket(key) {
            let tokens = (self.refilled(bucket, now) + 1.0).min(burst);
            self.set_bucket(key, Bucket { tokens, at: now });
        }
    }

    /// Counts an INVITE from `source` dropped at `now`; returns the summary to log when one is
    /// due (the first drop, then at most once per `summary_every`).
    pub fn drop_from(&mut self, now: Instant, source: IpAddr) -> Option<DropSummary> {
        self.dropped_since_summary += 1;
        if self.sources_since_summary.len() < self.budget.max_sources {
            self.sources_since_summary.insert(source);
        }
        let due = self
            .last_summary
            .is_none_or(|at| now.saturating_duration_since(at) >= self.budget.summary_every);
        if !due {
            return None;
        }
        let summary = DropSummary {
            dropped: self.dropped_since_summary,
            sources: self.sources_since_summary.len().max(1),
            example: source,
        };
        self.last_summary = Some(now);
        self.dropped_since_summary = 0;
        self.sources_since_summary.clear();
        Some(summary)
    }

    /// Sources tracked (the overflow's shared budget not counted).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn forget_full(&mut self, now: Instant) {
        let burst = f64::from(self.budget.burst);
        let full: Vec<IpAddr> = self
            .buckets
            .iter()
            .filter(|(_, b)| self.refilled(**b, now) >= burst)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in full {
            self.buckets.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn budget(burst: u32) -> RefusalBudget {
        RefusalBudget {
            burst,
            refill_every: Duration::from_secs(1),
            summary_every: Duration::from_secs(60),
            max_sources: 4,
        }
    }

    #[test]
    fn a_source_is_refused_its_burst_then_dropped_until_the_budget_refills() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::new(budget(3));
        for _ in 0..3 {
            assert!(limiter.allows(t0, ip(1)));
            limiter.charge(t0, ip(1));
        }
        assert!(!limiter.allows(t0, ip(1)));
        assert!(!limiter.allows(t0 + Duration::from_millis(999), ip(1)));
        // Another source has its own budget.
        assert!(limiter.allows(t0, ip(2)));
        // One refusal comes back per second.
        assert!(limiter.allows(t0 + Duration::from_secs(1), ip(1)));
        limiter.charge(t0 + Duration::from_secs(1), ip(1));
        assert!(!limiter.allows(t0 + Duration::from_secs(1), ip(1)));
        // A refund gives the token back, never more than the burst.
        limiter.refund(t0 + Duration::from_secs(1), ip(1));
        assert!(limiter.allows(t0 + Duration::from_secs(1), ip(1)));
        for _ in 0..10 {
            limiter.refund(t0 + Duration::from_secs(1), ip(1));
        }
        for _ in 0..3 {
            limiter.charge(t0 + Duration::from_secs(1), ip(1));
        }
        assert!(!limiter.allows(t0 + Duration::from_secs(1), ip(1)));
    }

    #[test]
    fn drops_are_summarised_once_per_period_with_their_count_and_sources() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::new(budget(1));
        let first = limiter.drop_from(t0, ip(1));
        assert_eq!(
            first,
            Some(DropSummary {
                dropped: 1,
                sources: 1,
                example: ip(1)
            })
        );
        for n in 0..100u8 {
            let at = t0 + Duration::from_millis(u64::from(n) * 100);
            assert_eq!(limiter.drop_from(at, ip(n % 3)), None);
        }
        let next = limiter.drop_from(t0 + Duration::from_secs(60), ip(7));
        assert_eq!(
            next,
            Some(DropSummary {
                dropped: 101,
                sources: 4,
                example: ip(7)
            })
        );
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_sources_whose_budget_is_full() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::new(budget(2));
        for n in 0..4 {
            limiter.charge(t0, ip(n));
        }
        assert_eq!(limiter.tracked(), 4);
        // Nobody's budget is full yet: a fifth source is charged to the overflow's budget.
        limiter.charge(t0, ip(9));
        assert_eq!(limiter.tracked(), 4);
        // Later every budget is full again; they are forgotten to make room.
        limiter.charge(t0 + Duration::from_secs(5), ip(9));
        assert_eq!(limiter.tracked(), 1);
    }

    /// Sources the full table has no room for are not unlimited: they share one budget, which a
    /// flood from many addresses spends like one source's.
    #[test]
    fn sources_beyond_the_table_share_one_budget() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::new(budget(2));
        for n in 0..4 {
            limiter.charge(t0, ip(n));
        }
        for n in 10..12 {
            assert!(limiter.allows(t0, ip(n)));
            limiter.charge(t0, ip(n));
        }
        for n in 12..200 {
            assert!(!limiter.allows(t0, ip(n)), "source {n}");
        }
        // The tracked ones keep their own budgets.
        assert!(limiter.allows(t0, ip(0)));
        assert!(limiter.allows(t0 + Duration::from_secs(1), ip(50)));
    }

    /// The overflow's budget is nobody's own: a source in `::/64` (a local proxy on `::1`)
    /// has a budget of its own like any other.
    #[test]
    fn the_overflow_is_no_sources_key() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::new(budget(2));
        let local = IpAddr::V6(Ipv6Addr::LOCALHOST);
        limiter.charge(t0, local);
        limiter.charge(t0, local);
        assert!(!limiter.allows(t0, local));
        assert_eq!(limiter.tracked(), 1);
        for n in 0..3 {
            limiter.charge(t0, ip(n));
        }
        // The table is full: a newcomer gets the overflow's budget, untouched by `::1`'s.
        assert!(limiter.allows(t0, ip(100)));
    }

    /// An IPv6 source is counted by its /64, an IPv4-mapped one as its IPv4 address.
    #[test]
    fn ipv6_sources_are_counted_by_their_64() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::new(budget(2));
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, last));
        limiter.charge(t0, host(1));
        limiter.charge(t0, host(2));
        assert!(!limiter.allows(t0, host(3)));
        assert!(limiter.allows(
            t0,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 8, 0, 0, 0, 1))
        ));
        limiter.charge(t0, ip(1));
        limiter.charge(t0, IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()));
        assert!(!limiter.allows(t0, ip(1)));
    }
}

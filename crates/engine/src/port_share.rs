//! Fair use of the media ports between organisations. While ports are plentiful any call takes
//! one; once fewer than a tenth of them are left, a call of an organisation already holding its
//! fair share (the ports over the organisations holding some) is refused first, so one greedy
//! tenant cannot leave the others with `media_unavailable`. Running out is counted in
//! `dialtone_media_ports_refused_total` and logged with the organisation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// The ports' use by organisation.
#[derive(Debug)]
pub(crate) struct PortShares {
    /// How many calls the port range can carry at once.
    capacity: usize,
    in_use: Mutex<HashMap<Uuid, usize>>,
}

/// One call's hold on a port; given back when dropped.
#[derive(Debug)]
pub(crate) struct PortShare {
    shares: Arc<PortShares>,
    org: Uuid,
}

impl PortShares {
    /// Shares of `capacity` ports (calls at once).
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            in_use: Mutex::new(HashMap::new()),
        })
    }

    /// A port for a call of `org`, when the policy lets it have one.
    pub(crate) fn take(self: &Arc<Self>, org: Uuid) -> Option<PortShare> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = in_use.values().sum();
        let mine = in_use.get(&org).copied().unwrap_or(0);
        let holders = in_use.len() + usize::from(mine == 0);
        if !may_take(mine, total, self.capacity, holders) {
            metrics::counter!("dialtone_media_ports_refused_total").increment(1);
            tracing::warn!(
                organization = %org,
                in_use = mine,
                total,
                capacity = self.capacity,
                "media ports are scarce and this organisation holds its fair share; call refused"
            );
            return None;
        }
        *in_use.entry(org).or_insert(0) += 1;
        Some(PortShare {
            shares: self.clone(),
            org,
        })
    }
}

impl Drop for PortShare {
    fn drop(&mut self) {
        let mut in_use = self.shares.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = in_use.get_mut(&self.org) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_use.remove(&self.org);
            }
        }
    }
}

/// Whether an organisation holding `mine` of the `total` ports in use may take one more, out
/// of `capacity`, with `holders` organisations (itself included) holding some.
fn may_take(mine: usize, total: usize, capacity: usize, holders: usize) -> bool {
    let headroom = (capacity / 10).max(1);
    if total + headroom < capacity {
        return true;
    }
    total < capacity && mine < capacity / holders.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plenty_for_anyone_then_fair_shares_when_scarce() {
        // 20 ports: the first 18 go to anyone.
        assert!(may_take(17, 17, 20, 1));
        // Scarce: a tenant alone may still use the rest; with another holding some, only
        // its half.
        assert!(may_take(18, 18, 20, 1));
        assert!(!may_take(10, 19, 20, 2));
        assert!(may_take(9, 19, 20, 2));
        // Nothing is left for anyone at capacity.
        assert!(!may_take(0, 20, 20, 2));
    }

    #[test]
    fn a_greedy_tenant_leaves_room_for_a_newcomer() {
        let shares = PortShares::new(20);
        let (greedy, newcomer) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let held: Vec<PortShare> = std::iter::from_fn(|| shares.take(greedy))
            .take(25)
            .collect();
        assert_eq!(held.len(), 20, "alone, a tenant may fill the range");
        drop(held);
        let greedy_held: Vec<PortShare> = (0..18).filter_map(|_| shares.take(greedy)).collect();
        assert_eq!(greedy_held.len(), 18);
        let newcomer_held = shares.take(newcomer);
        assert!(newcomer_held.is_some(), "the newcomer gets a port");
        assert!(
            shares.take(greedy).is_none(),
            "the greedy tenant is over its share"
        );
        drop(greedy_held);
        drop(newcomer_held);
        assert!(
            shares.in_use.lock().unwrap().is_empty(),
            "every port given back"
        );
    }
}

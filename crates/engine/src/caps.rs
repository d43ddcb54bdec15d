//! The caps on calls: an organisation's calls per second (a dispatch over it is refused with
//! the time to wait) and concurrent calls (a call waits for a slot, first come first served on
//! its node, up to the queue timeout), and a trunk's concurrent calls and calls per second (the
//! user agent's gates, waited for likewise).
//!
//! On one node the caps are counted in this process. Where nodes share a PostgreSQL database
//! they are counted there as well, so they hold across every node: a call takes a hold per
//! capped scope ([`dialtone_storage::Storage::take_hold`]; a waiting call asks again every
//! [`HOLD_RETRY`]) and a token from the scope's bucket in the database; its holds go back when
//! the call's task ends ([`SharedHolds`] on drop), or with its node when that node is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_sip_ua::TokenBucket;
use dialtone_storage::{Backend, CapScope, Storage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::{Engine, EngineError};

/// How often a call waiting for a slot held on other nodes asks the database again.
pub(crate) const HOLD_RETRY: Duration = Duration::from_millis(25);

/// The room a call holds under its caps until it ends (kept only to be dropped with the
/// call): its organisation's slot on this node and, where nodes share the database, its holds
/// there.
#[derive(Debug, Default)]
pub(crate) struct Held {
    _org_slot: Option<OwnedSemaphorePermit>,
    _shared: Option<SharedHolds>,
}

impl Held {
    /// The organisation's slot on this node and the call's holds in the shared database.
    pub(crate) fn new(org_slot: Option<OwnedSemaphorePermit>, shared: Option<SharedHolds>) -> Self {
        Self {
            _org_slot: org_slot,
            _shared: shared,
        }
    }
}

/// A call's holds in the shared database, given back when dropped.
#[derive(Debug)]
pub(crate) struct SharedHolds {
    storage: Storage,
    holder: Uuid,
}

impl Drop for SharedHolds {
    fn drop(&mut self) {
        let storage = self.storage.clone();
        let holder = self.holder;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = storage.release_holds(holder).await {
                    // The node's next start, or the survivor of its loss, drops them.
                    tracing::warn!(%error, %holder, "the call's cap holds are not given back");
                }
            });
        }
    }
}

/// What a call counts against: its organisation's and its trunk's concurrency caps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// The organisation and its cap, when it has one.
    pub(crate) org: Option<(Uuid, u32)>,
    /// The trunk and its cap, when it has one.
    pub(crate) trunk: Option<(Uuid, u32)>,
}

impl Caps {
    /// The scopes with a cap, and the cap.
    fn scopes(self) -> impl Iterator<Item = (CapScope, u32)> {
        let org = self.org.map(|(id, cap)| (CapScope::Organization(id), cap));
        let trunk = self.trunk.map(|(id, cap)| (CapScope::Trunk(id), cap));
        org.into_iter().chain(trunk)
    }
}

impl Engine {
    /// The database when nodes share it (PostgreSQL): caps are counted there too.
    pub(crate) fn shared_caps(&self) -> Option<&Storage> {
        (self.storage.backend() == Backend::Postgres).then_some(&self.storage)
    }

    /// Takes one dispatch under the organisation's `per_second` cap, or says when one will be
    /// there.
    pub(crate) async fn take_org_rate(
        &self,
        org: Uuid,
        per_second: u32,
    ) -> Result<(), EngineError> {
        let refused = |retry_after| EngineError::RateLimited {
            per_second,
            retry_after,
        };
        match self.shared_caps() {
            Some(storage) => storage
                .take_rate_token(CapScope::Organization(org), per_second)
                .await?
                .map_err(refused),
            None => {
                let now = tokio::time::Instant::now();
                let mut rates = self.org_rates.lock().unwrap_or_else(|e| e.into_inner());
                let bucket = rates
                    .entry(org)
                    .or_insert_with(|| TokenBucket::full(per_second, now));
                if bucket.per_second() != per_second {
                    // The cap changed: the new one starts full.
                    *bucket = TokenBucket::full(per_second, now);
                }
                bucket.take(now).map_err(refused)
            }
        }
    }

    /// The organisation's slots on this node under concurrency cap `cap` (made anew when the
    /// cap changed; calls holding the old slots keep them until they end).
    pub(crate) fn org_slots(&self, org: Uuid, cap: u32) -> Arc<Semaphore> {
        let mut slots = self.org_slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(&org) {
            Some((c, s)) if *c == cap => s.clone(),
            _ => {
                let s = Arc::new(Semaphore::new(cap as usize));
                slots.insert(org, (cap, s.clone()));
                s
            }
        }
    }
}

/// Takes `holder`'s holds under `caps` in `shared`, the database nodes share, asking again
/// until `until` while a scope is full; `Ok(None)` without a shared database, `Err` naming the
/// scope that stayed full (the scopes taken before it are given back).
pub(crate) async fn hold_shared(
    shared: Option<Storage>,
    holder: Uuid,
    caps: Caps,
    until: Instant,
) -> Result<Option<SharedHolds>, CapFull> {
    let Some(storage) = shared else {
        return Ok(None);
    };
    let holds = SharedHolds { storage, holder };
    for (scope, cap) in caps.scopes() {
        loop {
            match holds.storage.take_hold(scope, holder, cap).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot count the call's cap"),
            }
            if Instant::now() + HOLD_RETRY > until {
                return Err(CapFull(scope));
            }
            tokio::time::sleep(HOLD_RETRY).await;
        }
    }
    Ok(Some(holds))
}

/// Waits, until `until` at most, for a token from the trunk's `per_second` bucket in
/// `shared`, the database nodes share (the user agent's own bucket counts this node's calls).
pub(crate) async fn take_shared_trunk_rate(
    shared: Option<Storage>,
    trunk: Uuid,
    per_second: u32,
    until: Instant,
) -> Result<(), CapFull> {
    let Some(storage) = shared else {
        return Ok(());
    };
    let scope = CapScope::Trunk(trunk);
    loop {
        let wait = match storage.take_rate_token(scope, per_second).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(wait)) => wait,
            Err(error) => {
                tracing::warn!(%error, "cannot count the trunk's rate");
                HOLD_RETRY
            }
        };
        if Instant::now() + wait > until {
            return Err(CapFull(scope));
        }
        tokio::time::sleep(wait).await;
    }
}

/// A scope whose cap stayed reached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CapFull(pub(crate) CapScope);

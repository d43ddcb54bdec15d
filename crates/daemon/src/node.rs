//! This node among others on one database: it renews its lease every third of
//! `DIALTONE_NODE_LEASE_SECONDS` (each renewal bounded by that third), and a node that cannot
//! renew in time takes no new calls (readiness false, dispatches 503) rather than run calls
//! another node may be closing; one whose renewal finds the lease run out or taken is fenced:
//! it ends its calls and takes the lease again. Each round it also looks for lost nodes —
//! leases run out — and claims each (one survivor gets it, and only while its lease is still
//! run out), closes the calls it left as `node_lost` and hangs them up on the wire (from their
//! kept dialogs) without holding up the next renewal. A second process started under the id of
//! a running node waits one lease length, then refuses to start ([`take_lease_at_start`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_engine::Engine;
use dialtone_engine::leftovers::{LEFTOVER_WAIT, hang_up};
use dialtone_sip_ua::SipUa;
use dialtone_storage::{Storage, StorageError};

use crate::DaemonError;

/// Takes the node's lease at start. Another process holding it may be this node's previous run,
/// killed before it could give the lease up: that lease runs out within one lease length, so
/// the start waits that long before it refuses to run as a second process under one node id.
pub(crate) async fn take_lease_at_start(
    storage: &Storage,
    lease: Duration,
) -> Result<(), DaemonError> {
    let deadline = Instant::now() + lease + Duration::from_secs(1);
    let mut told = false;
    loop {
        match storage.take_lease(lease).await {
            Err(StorageError::NodeIdInUse { .. }) if Instant::now() < deadline => {
                if !told {
                    tracing::warn!(
                        node = storage.node(),
                        "another process holds this node's lease: waiting for it to run out \
                         (a previous run that was killed?)"
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e @ StorageError::NodeIdInUse { .. }) => {
                return Err(DaemonError::Config {
                    key: "DIALTONE_NODE_ID",
                    problem: e.to_string(),
                });
            }
            other => return other.map_err(DaemonError::from),
        }
    }
}

/// Renews the lease and sweeps lost nodes until the task is aborted.
pub(crate) async fn keep_lease(engine: Arc<Engine>, ua: Arc<SipUa>, lease: Duration) {
    let storage = engine.storage().clone();
    // Held until then: the last renewal's start plus the lease, less a third for the margin
    // between this node's clock and the others'.
    let mut held_until = Instant::now() + lease - lease / 3;
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let asked = Instant::now();
        match tokio::time::timeout(lease / 3, storage.renew_lease(lease)).await {
            Ok(Ok(true)) => {
                held_until = asked + lease - lease / 3;
                if !engine.holds_lease() {
                    tracing::info!(node = storage.node(), "lease renewed: taking calls again");
                    engine.set_lease_held(true);
                }
            }
            Ok(Ok(false)) => {
                // Fenced: the lease ran out, and a survivor may have closed this node's
                // calls. They end here too, then the node takes its lease again.
                engine.set_lease_held(false);
                let ended = engine.end_all();
                tracing::error!(
                    node = storage.node(),
                    ended,
                    "the lease ran out and another node may have taken this node's calls: \
                     ended them here, taking the lease again"
                );
                if storage.take_lease(lease).await.is_ok() {
                    held_until = asked + lease - lease / 3;
                    engine.set_lease_held(true);
                }
                continue;
            }
            Ok(Err(error)) => {
                tracing::warn!(node = storage.node(), %error, "cannot renew the node's lease");
            }
            Err(_) => {
                tracing::warn!(
                    node = storage.node(),
                    "renewing the node's lease took too long"
                );
            }
        }
        if Instant::now() >= held_until && engine.holds_lease() {
            tracing::error!(
                node = storage.node(),
                "lease lost: taking no new calls until it is renewed"
            );
            engine.set_lease_held(false);
        }
        if !engine.holds_lease() {
            continue;
        }
        let lost = match storage.lost_nodes().await {
            Ok(lost) => lost,
            Err(error) => {
                tracing::warn!(%error, "cannot look for lost nodes");
                continue;
            }
        };
        for node in lost {
            // One survivor claims each lost node, and only while its lease is run out.
            match storage.claim_lost_node(&node).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(lost = %node, %error, "cannot claim a lost node");
                    continue;
                }
            }
            // Its calls are closed at once (their records and `call.ended` do not wait on the
            // far ends), then hung up on the wire from the dialogs read first, in a task of
            // their own: this loop must go on renewing the lease meanwhile.
            let dialogs = storage.lost_dialogs(&node).await.unwrap_or_else(|error| {
                tracing::warn!(lost = %node, %error, "cannot read a lost node's dialogs");
                Vec::new()
            });
            match storage.close_lost_calls(&node).await {
                Ok(closed) => {
                    metrics::counter!("dialtone_lost_node_calls_total").increment(closed);
                    tracing::warn!(lost = %node, closed, "closed the calls of a lost node");
                }
                Err(error) => {
                    tracing::warn!(lost = %node, %error, "cannot close a lost node's calls")
                }
            }
            let (storage, ua) = (storage.clone(), ua.clone());
            tokio::spawn(async move {
                let hung_up = hang_up(&storage, &ua, dialogs, LEFTOVER_WAIT)
                    .await
                    .unwrap_or_default();
                tracing::info!(lost = %node, hung_up, "hung up the calls of a lost node");
            });
        }
    }
}

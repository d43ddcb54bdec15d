//! This node among others on one database: it renews its lease every third of
//! `DIALTONE_NODE_LEASE_SECONDS`, and a node that cannot renew in time takes no new calls
//! (readiness false, dispatches 503) rather than run calls another node may be closing. Each
//! round it also looks for lost nodes — leases run out — and, for each, hangs up the calls it
//! left on the wire (from their kept dialogs) and closes them as `node_lost`: each call once,
//! whichever survivor gets there first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_engine::Engine;
use dialtone_engine::leftovers::{LEFTOVER_WAIT, hang_up_lost};
use dialtone_sip_ua::SipUa;

/// Renews the lease and sweeps lost nodes until the task is aborted.
pub(crate) async fn keep_lease(engine: Arc<Engine>, ua: Arc<SipUa>, lease: Duration) {
    let storage = engine.storage().clone();
    let mut renewed = Instant::now();
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match storage.renew_lease(lease).await {
            Ok(()) => {
                renewed = Instant::now();
                if !engine.holds_lease() {
                    tracing::info!(node = storage.node(), "lease renewed: taking calls again");
                    engine.set_lease_held(true);
                }
            }
            Err(error) => {
                tracing::warn!(node = storage.node(), %error, "cannot renew the node's lease");
                if renewed.elapsed() >= lease && engine.holds_lease() {
                    tracing::error!(
                        node = storage.node(),
                        "lease lost: taking no new calls until it is renewed"
                    );
                    engine.set_lease_held(false);
                }
                continue;
            }
        }
        let lost = match storage.lost_nodes().await {
            Ok(lost) => lost,
            Err(error) => {
                tracing::warn!(%error, "cannot look for lost nodes");
                continue;
            }
        };
        for node in lost {
            let hung_up = hang_up_lost(&storage, &ua, &node, LEFTOVER_WAIT)
                .await
                .unwrap_or_default();
            match storage.close_lost_node(&node).await {
                Ok(closed) => {
                    metrics::counter!("dialtone_lost_node_calls_total").increment(closed);
                    tracing::warn!(lost = %node, closed, hung_up, "closed the calls of a lost node");
                }
                Err(error) => {
                    tracing::warn!(lost = %node, %error, "cannot close a lost node's calls")
                }
            }
        }
    }
}

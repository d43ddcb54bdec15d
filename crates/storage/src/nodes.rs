//! Several nodes on one database. Each node holds a lease it renews while it runs; a node whose
//! lease ran out is lost: one survivor claims it (the claim removes its lease, so only one
//! gets it, and only while the lease is still run out), hangs its calls up and closes them
//! (`failed`, `node_lost`, by `engine`). A node whose renewal finds its lease gone or run out is
//! fenced: it ends its calls and takes its lease again. A node's own start-up closes only its own leftovers
//! ([`Storage::close_interrupted_calls`]).

use std::time::Duration;

use sqlx::Row;

use crate::call_writes::Owners;
use crate::{EndReason, InterruptedDialog, Result, Storage, StorageError, now_ms};

/// `lease` after `now`, in milliseconds.
fn until(now: i64, lease: Duration) -> i64 {
    now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Storage {
    /// Takes this node's lease until `lease` from now (at its start, or again after it was
    /// fenced): refused with [`StorageError::NodeIdInUse`] while another process holds it and
    /// it has not run out (a process restarted after a crash gets it once the old lease has).
    pub async fn take_lease(&self, lease: Duration) -> Result<()> {
        self.sync_clock().await?;
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO nodes (id, started_at, lease_until, instance) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until, \
             instance = excluded.instance \
             WHERE nodes.instance = excluded.instance OR nodes.instance IS NULL \
             OR nodes.lease_until < $2",
        )
        .bind(&*self.node)
        .bind(now)
        .bind(until(now, lease))
        .bind(self.instance.to_string())
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StorageError::NodeIdInUse {
                node: self.node.to_string(),
            })
        }
    }

    /// Renews this node's lease until `lease` from now, if this process still holds it:
    /// `false` when the lease ran out, or a survivor or another process under this node's id
    /// took it (the node is fenced: its calls are another's to close, and it must take its
    /// lease again before it takes new calls).
    pub async fn renew_lease(&self, lease: Duration) -> Result<bool> {
        self.sync_clock().await?;
        let now = now_ms();
        let renewed = sqlx::query(
            "UPDATE nodes SET lease_until = $1 WHERE id = $2 AND instance = $3 \
             AND lease_until >= $4",
        )
        .bind(until(now, lease))
        .bind(&*self.node)
        .bind(self.instance.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives this node's lease up (a clean stop: nothing of it is left live), if this process
    /// holds it.
    pub async fn release_lease(&self) -> Result<()> {
        sqlx::query("DELETE FROM nodes WHERE id = $1 AND instance = $2")
            .bind(&*self.node)
            .bind(self.instance.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The other nodes whose lease ran out.
    pub async fn lost_nodes(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM nodes WHERE lease_until < $1 AND id <> $2")
            .bind(now_ms())
            .bind(&*self.node)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("id")?))
            .collect()
    }

    /// The live calls of lost node `node` that kept a SIP dialog, to be hung up on the wire.
    pub async fn lost_dialogs(&self, node: &str) -> Result<Vec<InterruptedDialog>> {
        self.live_dialogs(Owners::Lost(node)).await
    }

    /// Takes lost node `node` for this node to sweep: `true` for the one survivor that gets
    /// it, and only while its lease is still run out (a node that renewed meanwhile is not
    /// lost). The claimer drops the lost node's cap holds: its calls no longer count.
    pub async fn claim_lost_node(&self, node: &str) -> Result<bool> {
        let claimed = sqlx::query("DELETE FROM nodes WHERE id = $1 AND lease_until < $2")
            .bind(node)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        let claimed = claimed.rows_affected() == 1;
        if claimed {
            self.drop_node_holds(node).await?;
        }
        Ok(claimed)
    }

    /// Closes the live calls of lost node `node`, which this node claimed, as `node_lost`.
    /// Returns how many.
    pub async fn close_lost_calls(&self, node: &str) -> Result<u64> {
        self.fail_live_calls(Owners::Lost(node), EndReason::NodeLost)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{another, call, postgres_schema};
    use crate::{CallProgress, CallStatus, EndedBy};

    /// A call of `s`'s node, in progress: the first of the fixtures', or another like `first`.
    async fn live(s: &Storage, first: Option<&crate::Call>) -> crate::Call {
        let c = match first {
            None => call(s).await,
            Some(first) => s
                .insert_call(another(first, "+15550000777", None))
                .await
                .unwrap(),
        };
        s.advance_call(c.id, CallStatus::InProgress, CallProgress::default())
            .await
            .unwrap();
        c
    }

    /// Two nodes on one PostgreSQL database: B's start-up leaves A's live call alone; once A's
    /// lease runs out B closes it as `node_lost` (once: a second survivor closes nothing) and
    /// forgets A; A back under its id closes none of B's calls.
    #[tokio::test]
    async fn a_lost_nodes_calls_are_closed_once_by_a_survivor_and_only_then() {
        let Some((url, schema)) = postgres_schema().await else {
            return;
        };
        let a = Storage::open(&url).await.unwrap().with_node("node-a");
        let b = Storage::open(&url).await.unwrap().with_node("node-b");
        let c = b.clone().with_node("node-c");
        a.take_lease(Duration::from_secs(60)).await.unwrap();
        assert!(a.renew_lease(Duration::from_secs(60)).await.unwrap());
        let on_a = live(&a, None).await;
        assert_eq!(on_a.node.as_deref(), Some("node-a"));
        b.take_lease(Duration::from_secs(60)).await.unwrap();
        assert!(b.interrupted_dialogs().await.unwrap().is_empty());
        assert_eq!(b.close_interrupted_calls().await.unwrap(), 0);
        assert!(b.lost_nodes().await.unwrap().is_empty());
        assert_eq!(
            a.get_call(on_a.id).await.unwrap().status,
            CallStatus::InProgress
        );
        // A stops renewing: its lease runs out.
        assert!(a.renew_lease(Duration::ZERO).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(b.lost_nodes().await.unwrap(), vec!["node-a".to_owned()]);
        // One survivor gets it; A, fenced, cannot renew what ran out.
        assert!(c.claim_lost_node("node-a").await.unwrap());
        assert!(!b.claim_lost_node("node-a").await.unwrap());
        assert!(!a.renew_lease(Duration::from_secs(60)).await.unwrap());
        assert_eq!(c.close_lost_calls("node-a").await.unwrap(), 1);
        // A takes its lease again: a node holding one is nobody's to claim.
        a.take_lease(Duration::from_secs(60)).await.unwrap();
        assert!(!c.claim_lost_node("node-a").await.unwrap());
        let closed = b.get_call(on_a.id).await.unwrap();
        assert_eq!(closed.status, CallStatus::Failed);
        assert_eq!(closed.end_reason, Some(EndReason::NodeLost));
        assert_eq!(closed.ended_by, Some(EndedBy::Engine));
        assert!(b.lost_nodes().await.unwrap().is_empty());
        // A, back under its id: B's live call is not its to close.
        let on_b = live(&b, Some(&on_a)).await;
        assert_eq!(on_b.node.as_deref(), Some("node-b"));
        assert_eq!(a.close_interrupted_calls().await.unwrap(), 0);
        assert_eq!(
            b.get_call(on_b.id).await.unwrap().status,
            CallStatus::InProgress
        );
        b.release_lease().await.unwrap();
        crate::tests::drop_schema(&a, &schema).await;
    }

    /// A second process under a node id whose lease another holds is refused until that lease
    /// runs out (a killed run's), then takes it, and the first, fenced, can neither renew nor
    /// give up what is now the second's.
    #[tokio::test]
    async fn a_second_process_under_one_node_id_is_refused_while_the_first_holds_the_lease() {
        let Some((url, schema)) = postgres_schema().await else {
            return;
        };
        let first = Storage::open(&url).await.unwrap().with_node("node-a");
        let second = Storage::open(&url).await.unwrap().with_node("node-a");
        first.take_lease(Duration::from_secs(60)).await.unwrap();
        assert!(matches!(
            second.take_lease(Duration::from_secs(60)).await,
            Err(StorageError::NodeIdInUse { node }) if node == "node-a"
        ));
        // The first process takes its own lease again at will.
        first.take_lease(Duration::from_secs(60)).await.unwrap();
        assert!(first.renew_lease(Duration::ZERO).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        second.take_lease(Duration::from_secs(60)).await.unwrap();
        assert!(!first.renew_lease(Duration::from_secs(60)).await.unwrap());
        first.release_lease().await.unwrap();
        assert!(second.renew_lease(Duration::from_secs(60)).await.unwrap());
        second.release_lease().await.unwrap();
        crate::tests::drop_schema(&first, &schema).await;
    }

    /// On SQLite (one node) a start-up closes every live call, whichever node wrote it.
    #[tokio::test]
    async fn sqlite_has_one_node_and_its_start_closes_every_leftover() {
        let s = Storage::open("sqlite::memory:").await.unwrap();
        let first = live(&s, None).await;
        let next = s.with_node("another-run");
        assert_eq!(next.close_interrupted_calls().await.unwrap(), 1);
        assert_eq!(
            next.get_call(first.id).await.unwrap().end_reason,
            Some(EndReason::EngineRestart)
        );
    }
}

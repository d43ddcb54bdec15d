//! Caps that hold across every node on one database: an organisation's or a trunk's concurrent
//! calls (one hold row per admitted call, taken only while fewer than the cap are held) and
//! calls per second (a token bucket row per organisation or trunk, refilled on the database's
//! clock on PostgreSQL so that nodes' clocks need not agree).
//!
//! On PostgreSQL a hold is taken under a transaction-scoped advisory lock on its scope, so two
//! nodes counting at once cannot both take the last slot; on SQLite one writer runs at a time,
//! which gives the same. A call's holds go when its task ends ([`Storage::release_holds`]); a
//! node's start-up drops the holds of its previous run, and the survivor that claims a lost node
//! drops the lost node's.

use std::time::Duration;

use uuid::Uuid;

use crate::{Backend, Result, Storage, now_ms};

/// What a cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapScope {
    /// An organisation's calls.
    Organization(Uuid),
    /// A trunk's calls.
    Trunk(Uuid),
}

impl CapScope {
    /// The scope's key in the cap tables.
    fn key(self) -> String {
        match self {
            Self::Organization(id) => format!("org:{id}"),
            Self::Trunk(id) => format!("trunk:{id}"),
        }
    }
}

impl Storage {
    /// Takes one of `cap` slots of `scope` for `holder` (a call): `false` when all are held
    /// (by calls of any node).
    pub async fn take_hold(&self, scope: CapScope, holder: Uuid, cap: u32) -> Result<bool> {
        let key = scope.key();
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        let taken = sqlx::query(
            "INSERT INTO cap_holds (scope, holder, node_id, taken_at) \
             SELECT $1, $2, $3, $4 WHERE (SELECT COUNT(*) FROM cap_holds WHERE scope = $5) < $6",
        )
        .bind(&key)
        .bind(holder.to_string())
        .bind(&*self.node)
        .bind(now_ms())
        .bind(&key)
        .bind(i64::from(cap))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Gives back every slot `holder` holds (its call ended).
    pub async fn release_holds(&self, holder: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM cap_holds WHERE holder = $1")
            .bind(holder.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops the holds node `node` took up to now: its calls are gone (its previous run at this
    /// node's start, or a lost node its claimer sweeps).
    pub(crate) async fn drop_node_holds(&self, node: &str) -> Result<()> {
        sqlx::query("DELETE FROM cap_holds WHERE node_id = $1 AND taken_at <= $2")
            .bind(node)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes one call from `scope`'s bucket of `per_second` tokens a second (as many at most),
    /// or says how long until the next one is there at most.
    pub async fn take_rate_token(
        &self,
        scope: CapScope,
        per_second: u32,
    ) -> Result<std::result::Result<(), Duration>> {
        let rate = f64::from(per_second.max(1));
        // The bucket refills on one clock: the database's on PostgreSQL, this node's on SQLite
        // (which has one node).
        let (now, least, greatest) = match self.backend {
            Backend::Postgres => (
                "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
                "LEAST",
                "GREATEST",
            ),
            Backend::Sqlite => ("$3", "MIN", "MAX"),
        };
        let refilled = format!(
            "{least}(CAST($2 AS DOUBLE PRECISION), rate_buckets.tokens + \
             {greatest}(0, {now} - rate_buckets.updated_at) * CAST($2 AS DOUBLE PRECISION) / 1000.0)"
        );
        let sql = format!(
            "INSERT INTO rate_buckets (scope, tokens, updated_at) \
             VALUES ($1, CAST($2 AS DOUBLE PRECISION) - 1, {now}) \
             ON CONFLICT (scope) DO UPDATE SET tokens = {refilled} - 1, updated_at = {now} \
             WHERE {refilled} >= 1"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.key())
            .bind(rate);
        if self.backend == Backend::Sqlite {
            query = query.bind(now_ms());
        }
        let taken = query.execute(&self.pool).await?;
        Ok(match taken.rows_affected() {
            1 => Ok(()),
            _ => Err(Duration::from_secs_f64(1.0 / rate)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{call, on_both};

    /// A cap of 2 admits two calls and not a third until one is released; holds of another
    /// scope do not count; a node's start-up sweep drops its own holds.
    async fn holds_count_per_scope_up_to_the_cap(s: Storage) {
        let c = call(&s).await;
        let org = CapScope::Organization(c.org_id);
        let calls: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        assert!(s.take_hold(org, calls[0], 2).await.unwrap());
        assert!(
            s.take_hold(CapScope::Trunk(c.trunk_id), calls[0], 1)
                .await
                .unwrap()
        );
        assert!(s.take_hold(org, calls[1], 2).await.unwrap());
        assert!(!s.take_hold(org, calls[2], 2).await.unwrap());
        s.release_holds(calls[0]).await.unwrap();
        assert!(
            s.take_hold(CapScope::Trunk(c.trunk_id), calls[2], 1)
                .await
                .unwrap()
        );
        assert!(s.take_hold(org, calls[2], 2).await.unwrap());
        assert!(!s.take_hold(org, Uuid::now_v7(), 2).await.unwrap());
        s.drop_node_holds(s.node()).await.unwrap();
        assert!(s.take_hold(org, Uuid::now_v7(), 2).await.unwrap());
    }
    on_both!(holds_count_per_scope_up_to_the_cap);

    /// A bucket of 3 a second gives three calls at once, then none until it refills; another
    /// scope has its own bucket.
    async fn a_rate_bucket_gives_its_tokens_then_refills(s: Storage) {
        let org = CapScope::Organization(Uuid::now_v7());
        for _ in 0..3 {
            assert_eq!(s.take_rate_token(org, 3).await.unwrap(), Ok(()));
        }
        let wait = s.take_rate_token(org, 3).await.unwrap().unwrap_err();
        assert!(wait <= Duration::from_millis(334), "{wait:?}");
        let trunk = CapScope::Trunk(Uuid::now_v7());
        assert_eq!(s.take_rate_token(trunk, 3).await.unwrap(), Ok(()));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(s.take_rate_token(org, 3).await.unwrap(), Ok(()));
    }
    on_both!(a_rate_bucket_gives_its_tokens_then_refills);

    /// Two nodes taking the last slots of one organisation at once on PostgreSQL: exactly the
    /// cap's worth of 40 racing takes succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_nodes_never_take_more_than_the_cap() {
        let Some((a, schema)) = crate::tests::postgres().await else {
            return;
        };
        let b = a.clone().with_node("node-b");
        let org = CapScope::Organization(Uuid::now_v7());
        let mut takes = tokio::task::JoinSet::new();
        for i in 0..40 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            takes.spawn(async move { s.take_hold(org, Uuid::now_v7(), 4).await.unwrap() });
        }
        let taken = takes.join_all().await;
        assert_eq!(taken.iter().filter(|t| **t).count(), 4);
        crate::tests::drop_schema(&a, &schema).await;
    }
}

//! The cluster's clock. Every time Dialtone writes to the database and every time it compares
//! one with now ([`now_ms`]) is read on one clock, the database's: nodes compare times they
//! wrote (a lease running out, a webhook claim expiring or its next attempt due, a command
//! still fresh, a cap hold taken before a sweep), and a node whose own clock is off must not
//! take a live node for lost or a claim for expired. On PostgreSQL the process keeps the
//! offset of the database's clock from the machine's, measured when it takes or renews its
//! lease ([`Storage::sync_clock`], the middle of the round trip); on SQLite, which has one
//! node, the offset stays zero. The offset is a property of the machine, so it is one for the
//! process.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Row;

use crate::{Backend, Result, Storage};

/// The database clock's offset from this machine's, in milliseconds.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The database's clock in milliseconds since the Unix epoch (PostgreSQL).
const DATABASE_NOW_MS: &str =
    "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS now_ms";

/// This machine's clock, in milliseconds since the Unix epoch.
fn machine_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch, now, on the cluster's clock: this machine's, corrected
/// by the database's offset last measured.
pub fn now_ms() -> i64 {
    machine_now_ms().saturating_add(OFFSET_MS.load(Ordering::Relaxed))
}

/// The offset of a clock that read `remote` between local readings `sent` and `received`: the
/// reading is taken to be from the middle of the round trip.
fn offset(sent: i64, remote: i64, received: i64) -> i64 {
    remote - (sent + (received - sent) / 2)
}

impl Storage {
    /// Measures the database clock's offset from this machine's (PostgreSQL; nothing on
    /// SQLite), for [`now_ms`].
    pub async fn sync_clock(&self) -> Result<()> {
        if let Some(offset) = self.database_clock_offset().await? {
            OFFSET_MS.store(offset, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The database clock's offset from this machine's, in milliseconds (`None` on SQLite,
    /// whose clock is this machine's).
    async fn database_clock_offset(&self) -> Result<Option<i64>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        // The connection first: only the query's round trip is timed.
        let mut conn = self.pool.acquire().await?;
        let sent = machine_now_ms();
        let row = sqlx::query(DATABASE_NOW_MS).fetch_one(&mut *conn).await?;
        let received = machine_now_ms();
        let remote: i64 = row.try_get("now_ms")?;
        Ok(Some(offset(sent, remote, received)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_at_the_middle_of_the_round_trip() {
        assert_eq!(offset(1_000, 1_005, 1_010), 0);
        assert_eq!(offset(1_000, 61_005, 1_010), 60_000);
        assert_eq!(offset(1_000, 900, 1_000), -100);
    }

    /// The database's clock is read on PostgreSQL (here it runs on this machine, so the two
    /// agree to within the round trip); SQLite has none of its own.
    #[tokio::test]
    async fn the_offset_is_read_from_postgresql_and_none_on_sqlite() {
        let sqlite = Storage::open("sqlite::memory:").await.unwrap();
        assert_eq!(sqlite.database_clock_offset().await.unwrap(), None);
        let Some((url, schema)) = crate::tests::postgres_schema().await else {
            return;
        };
        let s = Storage::open(&url).await.unwrap();
        let measured = s.database_clock_offset().await.unwrap().unwrap();
        assert!(measured.abs() < 5_000, "the offset measured: {measured} ms");
        crate::tests::drop_schema(&s, &schema).await;
    }
}

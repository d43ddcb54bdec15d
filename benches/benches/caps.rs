//! What counting caps in the database costs a call: on PostgreSQL (several nodes share it) a
//! call under an organisation cap takes a hold (a transaction: an advisory lock on the scope, a
//! conditional insert) and gives it back when it ends (a delete); a dispatch under a rate cap
//! takes a token (one upsert). Measured one call at a time and with 8 calls at once on the same
//! scope (they queue on its lock), each `ROUNDS` times (default 500), as p50/p99/max; SQLite's
//! hold, which one node never needs, for scale.
//!
//! `cargo bench -p dialtone-benches --bench caps` (PostgreSQL from
//! `DIALTONE_TEST_POSTGRES_URL`, as the tests; scripts/postgres.sh sets it up).

use std::time::{Duration, Instant};

use dialtone_storage::{CapScope, Storage};
use uuid::Uuid;

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let base = dialtone_test_support::postgres_test_url()
            .expect("PostgreSQL answers (scripts/postgres.sh)");
        let schema = format!("dialtone_bench_{}", Uuid::now_v7().simple());
        psql(&base, &format!("CREATE SCHEMA {schema}"));
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let postgres = Storage::open(&url).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Storage::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
            .await
            .unwrap();
        report(
            "PostgreSQL: hold + release",
            &hold_release(&postgres, rounds, 1).await,
        );
        report(
            "PostgreSQL: hold + release, 8 at once on one scope",
            &hold_release(&postgres, rounds, 8).await,
        );
        report(
            "PostgreSQL: rate token",
            &rate_tokens(&postgres, rounds).await,
        );
        report(
            "SQLite: hold + release",
            &hold_release(&sqlite, rounds, 1).await,
        );
        postgres.close().await;
        psql(&base, &format!("DROP SCHEMA {schema} CASCADE"));
    });
}

/// Each of `rounds` calls takes a hold under a cap no call reaches and gives it back,
/// `parallel` calls at once; the time each took.
async fn hold_release(storage: &Storage, rounds: usize, parallel: usize) -> Vec<Duration> {
    let scope = CapScope::Organization(Uuid::now_v7());
    let mut took = Vec::with_capacity(rounds);
    while took.len() < rounds {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..parallel {
            let storage = storage.clone();
            batch.spawn(async move {
                let started = Instant::now();
                let holder = Uuid::now_v7();
                assert!(storage.take_hold(scope, holder, 100_000).await.unwrap());
                storage.release_holds(holder).await.unwrap();
                started.elapsed()
            });
        }
        took.extend(batch.join_all().await);
    }
    took
}

/// `rounds` tokens from a bucket that never runs dry.
async fn rate_tokens(storage: &Storage, rounds: usize) -> Vec<Duration> {
    let scope = CapScope::Organization(Uuid::now_v7());
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        assert_eq!(
            storage.take_rate_token(scope, 1_000_000).await.unwrap(),
            Ok(())
        );
        took.push(started.elapsed());
    }
    took
}

fn report(what: &str, took: &[Duration]) {
    let mut sorted = took.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    println!(
        "{what}: p50 {:?}, p99 {:?}, max {:?} ({} calls)",
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1],
        sorted.len()
    );
}

fn psql(url: &str, sql: &str) {
    let status = std::process::Command::new("psql")
        .arg(url)
        .args(["-qc", sql])
        .status()
        .unwrap();
    assert!(status.success(), "psql: {sql}");
}

//! # dialtone-storage — Dialtone's durable state
//!
//! Trunks, numbers, agents, providers, calls and the webhook outbox, in SQLite — the embedded default (a
//! file in the data directory in WAL mode, or memory for tests) — or in PostgreSQL when the URL
//! is `postgres://…`, so several nodes can share one database. One code path serves both
//! through sqlx's `Any` driver: portable SQL with `$N` parameters, ids and JSON as text, times
//! as 64-bit integers; each backend has its own embedded migrations (`migrations/sqlite`,
//! `migrations/postgres`). The test suite runs every case on both.
//!
//! Every call is written before its INVITE leaves, and every status change is written before
//! it is announced; status only moves forward, which [`Storage::advance_call`] enforces in the
//! `UPDATE` itself. Deleting a trunk, number or agent hides it (calls keep their references);
//! deleting one still in use is refused.
//!
//! The call path's writes — new calls, status steps, transcripts, results and the outbox events
//! they announce — go through one writer thread with a connection of its own, which commits
//! whatever queued up since its last commit as one transaction of set-based statements (see
//! `writer.rs`): one `fsync` and a few round trips for many calls, and SQLite's single write
//! lock never waits on the busy async runtime. Reads and the rarer writes (agents, trunks,
//! numbers, keys, deliveries) use the pool.
//!
//! Times are Unix epoch milliseconds on the database's clock ([`now_ms`]). Free-form JSON (agent configuration, call context,
//! metadata, transcript, result, media statistics) is stored as text.
//!
//! ## The parts
//!
//! Each file is one part, with its own `impl Storage` block and the tests of what it holds:
//!
//! - `lib.rs` — the [`Storage`] handle: opening (pool, schema, writer), closing, pinging, and
//!   the refused-while-in-use delete that trunks and numbers share;
//! - `clock.rs` — [`now_ms`]: the time, on the database's clock, that nodes compare;
//! - `error.rs` — [`StorageError`] and [`Result`];
//! - `rows.rs` — reading columns back into values, and the placeholders of multi-row statements;
//! - `resource.rs` — [`OrgOwned`] and [`Stored`], what the API's ownership checks use;
//! - `organizations.rs` — organisations and their API keys (scopes, expiry, revocation, last
//!   use);
//! - `trunks.rs`, `numbers.rs`, `agents.rs` — what calls are placed with;
//! - `providers.rs` — the language and speech services agents name (refused deletion or
//!   rename while agents name them);
//! - `calls.rs` — reading calls: one, a page of them, the one an idempotency key names;
//! - `call_writes.rs` — the call path's writes (new calls, status steps, details) and how the
//!   writer applies each kind to a whole group;
//! - `recordings.rs` — where recording files go ([`RecordingStore`]: the local data
//!   directory by default) and the record's side: taking one off, finding those past retention;
//! - `recordings_s3.rs` — the S3-compatible object store behind [`RecordingStore`];
//! - `outbox.rs` — the webhook events those writes announce, and their delivery;
//! - `writer.rs` — the writer thread that commits them;
//! - `tests.rs` — what the tests share: `on_both!`, which runs a case on SQLite and PostgreSQL.

use sqlx::pool::PoolOptions;
use sqlx::{Any, AnyConnection, AnyPool};
use uuid::Uuid;

mod agents;
mod call_writes;
mod calls;
mod caps;
mod clock;
mod commands;
mod error;
mod inbound;
mod nodes;
mod numbers;
mod organizations;
mod outbox;
mod providers;
mod recordings;
mod recordings_s3;
mod resource;
mod rows;
#[cfg(test)]
mod tests;
mod trunks;
mod writer;

use writer::Writer;

pub use agents::{Agent, NewAgent};
pub use call_writes::{CallProgress, Inserted, InterruptedDialog, NewCall};
pub use calls::CallFilter;
pub use caps::CapScope;
pub use commands::TakenCommand;
pub use dialtone_model::{
    AmdExplanation, AnsweredBy, Call, CallStatus, Direction, EndReason, EndedBy, Provider,
    ProviderKind, Transfer,
};
pub use error::{Result, StorageError};
pub use inbound::InboundRoute;
pub use numbers::Number;
pub use organizations::{
    ApiKey, IssuedKey, KeyOwner, LAST_USED_RESOLUTION_MS, Organization, hash_key,
};
pub use outbox::{Delivery, WebhookEvent};
pub use providers::NewProvider;
pub use recordings::{
    ExpiredRecording, LocalRecordings, Purged, RecordingStore, StoreFuture, StoredRange,
};
pub use recordings_s3::{S3Recordings, S3Settings};
pub use resource::{OrgOwned, Stored};
pub use trunks::{Codec, NewTrunk, SrtpMode, Trunk, TrunkSecurity, TrunkTransport};

pub use clock::now_ms;

/// The storage handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    pool: AnyPool,
    backend: Backend,
    /// The call path's writes (calls, their steps and details, their events) go through it.
    writer: Writer,
    /// The node this process is: its new calls are its own ([`Storage::with_node`]).
    node: std::sync::Arc<str>,
    /// This process among the ones that were or will be that node: its lease is its own.
    instance: Uuid,
}

/// The node of a storage no node was given ([`Storage::with_node`]).
pub const LOCAL_NODE: &str = "local";

/// Which database a [`Storage`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite, the embedded default (WAL mode, one file).
    Sqlite,
    /// PostgreSQL, for several nodes sharing one database.
    Postgres,
}

impl Backend {
    /// The database an open connection speaks to.
    pub(crate) fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// What every connection does first. On SQLite: write-ahead logging (readers never wait for
/// the writer), foreign keys, and up to 5 s of waiting for the write lock.
async fn prepare_connection(
    conn: &mut AnyConnection,
    backend: Backend,
) -> std::result::Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA foreign_keys = ON",
            "PRAGMA busy_timeout = 5000",
        ] {
            sqlx::query(pragma).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

impl Storage {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or
    /// `sqlite::memory:`) and applies the schema.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StorageError::UnsupportedUrl {
                scheme: url.split(':').next().unwrap_or_default().to_owned(),
            });
        };
        let memory = url.contains(":memory:");
        let url = if backend == Backend::Sqlite && !memory && !url.contains('?') {
            // Create the file on first start.
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        };
        // An in-memory SQLite database lives per connection: keep exactly one.
        let max = if memory { 1 } else { 8 };
        let pool = PoolOptions::<Any>::new()
            .max_connections(max)
            .after_connect(move |conn, _| Box::pin(prepare_connection(conn, backend)))
            .connect(&url)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        let writer = Writer::start(url, backend, memory.then(|| pool.clone())).await?;
        Ok(Self {
            pool,
            backend,
            writer,
            node: LOCAL_NODE.into(),
            instance: Uuid::new_v4(),
        })
    }

    /// This storage as node `node` sees it: the calls it inserts are that node's, and its
    /// start-up closes only that node's leftovers (on PostgreSQL; SQLite has one node).
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = node.into();
        self
    }

    /// The node this storage acts for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The database this storage runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the connections once their work is done (SQLite checkpoints its journal): the
    /// writes already queued are committed first.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Runs `delete` (binding now, id) unless `in_use` (binding id) finds a row.
    async fn delete_unless_used(
        &self,
        id: Uuid,
        (entity, used_by): (&'static str, &'static str),
        in_use: &'static str,
        delete: &'static str,
    ) -> Result<()> {
        let used = sqlx::query(in_use)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        if used.is_some() {
            return Err(StorageError::InUse {
                entity,
                id: id.to_string(),
                used_by,
            });
        }
        sqlx::query(delete)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

//! # dialtone-storage — Dialtone's durable state
//!
//! Trunks, numbers, agents, calls and the webhook outbox, in SQLite — the embedded default (a
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
//! Times are Unix epoch milliseconds. Free-form JSON (agent configuration, call context,
//! metadata, transcript, result, media statistics) is stored as text.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use sqlx::pool::PoolOptions;
use sqlx::{Any, AnyConnection, AnyPool};
use uuid::Uuid;

mod writer;

use writer::{Pending, Write, Writer};

pub use dialtone_model::{AnsweredBy, Call, CallStatus, EndReason, EndedBy};

/// Errors from storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema failed.
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No row with this id.
    #[error("{entity} {id} not found")]
    NotFound {
        /// `trunk`, `number`, `agent`, `call`.
        entity: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A unique value already taken.
    #[error("{entity} with this {field} already exists")]
    Conflict {
        /// The entity.
        entity: &'static str,
        /// The unique field.
        field: &'static str,
    },
    /// The row is still used by others and cannot be deleted.
    #[error("{entity} {id} is still used by {used_by}")]
    InUse {
        /// The entity.
        entity: &'static str,
        /// Its id.
        id: String,
        /// What uses it.
        used_by: &'static str,
    },
    /// The database URL names no database this storage supports.
    #[error("unsupported database URL scheme {scheme:?}: use sqlite:// or postgres://")]
    UnsupportedUrl {
        /// The scheme given.
        scheme: String,
    },
    /// A pagination cursor this storage did not make.
    #[error("cursor {cursor:?} is not valid")]
    InvalidCursor {
        /// The cursor given.
        cursor: String,
    },
    /// The storage was closed (or its writer stopped) before the write was committed.
    #[error("storage is closed")]
    Closed,
    /// The writer's thread could not be started.
    #[error("cannot start the storage writer thread: {source}")]
    WriterThread {
        /// Why.
        source: std::io::Error,
    },
    /// A stored value could not be read back.
    #[error("stored {column} is unreadable: {detail}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// SIP transport of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl TrunkTransport {
    fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// A SIP trunk. The password is never serialised nor shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Trunk {
    /// Id.
    pub id: Uuid,
    /// The organisation it belongs to.
    pub org_id: Uuid,
    /// Unique name.
    pub name: String,
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub transport: TrunkTransport,
    /// Digest username.
    pub username: Option<String>,
    /// Digest password (write-only on the API).
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// Digest realm.
    pub realm: Option<String>,
    /// Domain for the From URI.
    pub from_domain: Option<String>,
    /// Concurrency cap.
    pub max_concurrent_calls: Option<u32>,
    /// Calls-per-second cap.
    pub max_calls_per_second: Option<u32>,
    /// Whether Dialtone keeps a registration with the trunk (REGISTER, refreshed).
    pub register: bool,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// Fields of a new trunk. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NewTrunk {
    /// Unique name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub transport: TrunkTransport,
    /// Digest username.
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// Digest realm.
    pub realm: Option<String>,
    /// From domain.
    pub from_domain: Option<String>,
    /// Concurrency cap.
    pub max_concurrent_calls: Option<u32>,
    /// Rate cap.
    pub max_calls_per_second: Option<u32>,
    /// Keep a registration with the trunk.
    pub register: bool,
}

/// What `Debug` shows for a password.
fn redacted(password: &Option<String>) -> &'static str {
    if password.is_some() {
        "<redacted>"
    } else {
        "None"
    }
}

impl std::fmt::Debug for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trunk")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("realm", &self.realm)
            .field("from_domain", &self.from_domain)
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .field("max_calls_per_second", &self.max_calls_per_second)
            .finish()
    }
}

impl std::fmt::Debug for NewTrunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTrunk")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .finish_non_exhaustive()
    }
}

/// A phone number on a trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Number {
    /// Id.
    pub id: Uuid,
    /// The organisation it belongs to.
    pub org_id: Uuid,
    /// E.164.
    pub e164: String,
    /// The trunk that carries it.
    pub trunk_id: Uuid,
    /// Creation time.
    pub created_at: i64,
}

/// An agent: its configuration object plus attached numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    /// Id.
    pub id: Uuid,
    /// The organisation it belongs to.
    pub org_id: Uuid,
    /// Name.
    pub name: String,
    /// Everything else the API accepted (persona, voice, instructions, returns, tools, ...).
    pub config: Value,
    /// Attached numbers.
    pub number_ids: Vec<Uuid>,
    /// The caller ID used by default.
    pub primary_number_id: Option<Uuid>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// A resource that belongs to one organisation.
pub trait OrgOwned {
    /// The organisation.
    fn org_id(&self) -> Uuid;
}

macro_rules! org_owned {
    ($($t:ty),*) => {
        $(impl OrgOwned for $t {
            fn org_id(&self) -> Uuid {
                self.org_id
            }
        })*
    };
}

org_owned!(Trunk, Number, Agent, Call);

/// A resource read by id (what the API's ownership checks fetch).
pub trait Stored: OrgOwned + Sized {
    /// Its name in messages (`trunk`, `number`, `agent`, `call`).
    const ENTITY: &'static str;
    /// Reads it.
    fn fetch(storage: &Storage, id: Uuid)
    -> impl std::future::Future<Output = Result<Self>> + Send;
}

macro_rules! stored {
    ($($t:ty => $entity:literal, $get:ident);*) => {
        $(impl Stored for $t {
            const ENTITY: &'static str = $entity;
            fn fetch(storage: &Storage, id: Uuid) -> impl std::future::Future<Output = Result<Self>> + Send {
                storage.$get(id)
            }
        })*
    };
}

stored!(
    Trunk => "trunk", get_trunk;
    Number => "number", get_number;
    Agent => "agent", get_agent;
    Call => "call", get_call
);

/// An organisation: the tenant every resource and key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Organization {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Most of its calls in progress at once (beyond: they wait in `queued`).
    pub max_concurrent_calls: Option<u32>,
    /// Most dispatches per second (beyond: refused with a retry time).
    pub max_calls_per_second: Option<u32>,
    /// Creation time.
    pub created_at: i64,
}

/// Who an API key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    /// The key's organisation.
    pub org_id: Uuid,
    /// Whether it may manage organisations and keys.
    pub admin: bool,
}

/// A key just issued: the only time its secret is seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedKey {
    /// Id.
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// The secret (only its SHA-256 is stored).
    pub key: String,
    /// Its first characters, to recognise it by.
    pub prefix: String,
    /// Whether it may manage organisations and keys.
    pub admin: bool,
}

/// The stored form of an API key: SHA-256, hex. Keys are long random tokens, so a fast hash is
/// the right one (there is nothing to brute-force).
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fields of a new agent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    /// Name.
    pub name: String,
    /// Configuration object.
    pub config: Value,
    /// Attached numbers.
    pub number_ids: Vec<Uuid>,
    /// Default caller ID.
    pub primary_number_id: Option<Uuid>,
}

/// Fields of a new call.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCall {
    /// The organisation.
    pub org_id: Uuid,
    /// The agent.
    pub agent_id: Uuid,
    /// Destination.
    pub to: String,
    /// Caller ID.
    pub from_number: String,
    /// Trunk.
    pub trunk_id: Uuid,
    /// Effective instructions.
    pub instructions: Option<String>,
    /// Context.
    pub context: Value,
    /// Metadata.
    pub metadata: Value,
    /// Effective webhook URL.
    pub webhook_url: Option<String>,
}

/// What changes with a status step; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallProgress {
    /// When the step happened, in ms since the Unix epoch (`None`: when it is written).
    pub at: Option<i64>,
    /// SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// Final SIP status.
    pub sip_status: Option<u16>,
    /// End reason.
    pub end_reason: Option<EndReason>,
    /// Who ended it.
    pub ended_by: Option<EndedBy>,
    /// Media statistics.
    pub media: Option<Value>,
    /// Transcript.
    pub transcript: Option<Value>,
}

/// The storage handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    pool: AnyPool,
    backend: Backend,
    /// The call path's writes (calls, their steps and details, their events) go through it.
    writer: Writer,
}

/// Which database a [`Storage`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite, the embedded default (WAL mode, one file).
    Sqlite,
    /// PostgreSQL, for several nodes sharing one database.
    Postgres,
}

/// Reads a nullable text column and parses it; a value that does not parse is `Corrupt`.
fn parse_opt<T, E: std::fmt::Display>(
    row: &AnyRow,
    column: &'static str,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        parse(&t).map_err(|e| StorageError::Corrupt {
            column,
            detail: e.to_string(),
        })
    })
    .transpose()
}

/// Like [`parse_opt`] for a column that must not be NULL.
fn parse_req<T, E: std::fmt::Display>(
    row: &AnyRow,
    column: &'static str,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> Result<T> {
    parse_opt(row, column, parse)?.ok_or_else(|| StorageError::Corrupt {
        column,
        detail: "NULL".into(),
    })
}

fn uuid_of(row: &AnyRow, column: &'static str) -> Result<Uuid> {
    parse_req(row, column, Uuid::parse_str)
}

fn opt_uuid_of(row: &AnyRow, column: &'static str) -> Result<Option<Uuid>> {
    parse_opt(row, column, Uuid::parse_str)
}

/// The owning organisation; rows from before organisations existed read as the nil id until
/// [`Storage::bootstrap_admin_key`] gives them one.
fn org_of(row: &AnyRow) -> Result<Uuid> {
    Ok(opt_uuid_of(row, "org_id")?.unwrap_or(Uuid::nil()))
}

fn json_of(row: &AnyRow, column: &'static str) -> Result<Value> {
    parse_req(row, column, |t| serde_json::from_str::<Value>(t))
}

fn opt_json_of(row: &AnyRow, column: &'static str) -> Result<Option<Value>> {
    parse_opt(row, column, |t| serde_json::from_str::<Value>(t))
}

fn opt_u32(row: &AnyRow, column: &'static str) -> Result<Option<u32>> {
    let v: Option<i64> = row.try_get(column)?;
    Ok(v.and_then(|v| u32::try_from(v).ok()))
}

/// A trunk write that hit the unique name: `Conflict`.
fn trunk_name_taken(e: sqlx::Error) -> StorageError {
    if unique_violation(&e) {
        StorageError::Conflict {
            entity: "trunk",
            field: "name",
        }
    } else {
        e.into()
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
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
        })
    }

    /// The database this storage runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Creates an organisation.
    pub async fn create_organization(
        &self,
        name: &str,
        max_concurrent_calls: Option<u32>,
        max_calls_per_second: Option<u32>,
    ) -> Result<Organization> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO organizations (id, name, max_concurrent_calls, max_calls_per_second, \
             created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(max_concurrent_calls.map(i64::from))
        .bind(max_calls_per_second.map(i64::from))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.get_organization(id).await
    }

    fn organization_from(row: &AnyRow) -> Result<Organization> {
        Ok(Organization {
            id: uuid_of(row, "id")?,
            name: row.try_get("name")?,
            max_concurrent_calls: opt_u32(row, "max_concurrent_calls")?,
            max_calls_per_second: opt_u32(row, "max_calls_per_second")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// One organisation.
    pub async fn get_organization(&self, id: Uuid) -> Result<Organization> {
        let row = sqlx::query("SELECT * FROM organizations WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "organization",
                id: id.to_string(),
            })?;
        Self::organization_from(&row)
    }

    /// Every organisation, oldest first.
    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        let rows = sqlx::query("SELECT * FROM organizations ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::organization_from).collect()
    }

    async fn store_key(&self, org: Uuid, key: &str, admin: bool) -> Result<IssuedKey> {
        let id = Uuid::now_v7();
        let prefix: String = key.chars().take(10).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, key_hash, prefix, admin, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(org.to_string())
        .bind(hash_key(key))
        .bind(&prefix)
        .bind(i64::from(admin))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(IssuedKey {
            id,
            org_id: org,
            key: key.to_owned(),
            prefix,
            admin,
        })
    }

    /// Issues a new random key for `org` (256 random bits, `dtk_` then hex).
    pub async fn issue_key(&self, org: Uuid, admin: bool) -> Result<IssuedKey> {
        self.get_organization(org).await?;
        let key = format!("dtk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.store_key(org, &key, admin).await
    }

    /// Who `key` speaks for, if it is a key at all.
    pub async fn key_owner(&self, key: &str) -> Result<Option<KeyOwner>> {
        let row = sqlx::query("SELECT org_id, admin FROM api_keys WHERE key_hash = $1")
            .bind(hash_key(key))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let admin: i64 = r.try_get("admin")?;
            Ok(KeyOwner {
                org_id: uuid_of(&r, "org_id")?,
                admin: admin != 0,
            })
        })
        .transpose()
    }

    /// Makes `key` (the operator's `DIALTONE_API_KEY`) an admin key: of the first organisation,
    /// created as `default` on a fresh database. Resources from before organisations existed
    /// join that organisation. Returns the key's organisation.
    pub async fn bootstrap_admin_key(&self, key: &str) -> Result<Organization> {
        if let Some(owner) = self.key_owner(key).await? {
            return self.get_organization(owner.org_id).await;
        }
        let org = match self.list_organizations().await?.into_iter().next() {
            Some(org) => org,
            None => self.create_organization("default", None, None).await?,
        };
        self.store_key(org.id, key, true).await?;
        for table in [
            "UPDATE trunks SET org_id = $1 WHERE org_id IS NULL",
            "UPDATE numbers SET org_id = $1 WHERE org_id IS NULL",
            "UPDATE agents SET org_id = $1 WHERE org_id IS NULL",
            "UPDATE calls SET org_id = $1 WHERE org_id IS NULL",
        ] {
            sqlx::query(table)
                .bind(org.id.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(org)
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

    /// Creates a trunk of organisation `org`.
    pub async fn create_trunk(&self, org: Uuid, t: NewTrunk) -> Result<Trunk> {
        let now = now_ms();
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO trunks (id, name, host, port, transport, username, password, realm, \
             from_domain, max_concurrent_calls, max_calls_per_second, created_at, updated_at, \
             org_id, register) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(id.to_string())
        .bind(&t.name)
        .bind(&t.host)
        .bind(i64::from(t.port))
        .bind(t.transport.as_str())
        .bind(&t.username)
        .bind(&t.password)
        .bind(&t.realm)
        .bind(&t.from_domain)
        .bind(t.max_concurrent_calls.map(i64::from))
        .bind(t.max_calls_per_second.map(i64::from))
        .bind(now)
        .bind(now)
        .bind(org.to_string())
        .bind(i64::from(t.register))
        .execute(&self.pool)
        .await
        .map_err(trunk_name_taken)?;
        self.get_trunk(id).await
    }

    fn trunk_from(row: &AnyRow) -> Result<Trunk> {
        let transport: String = row.try_get("transport")?;
        let port: i64 = row.try_get("port")?;
        Ok(Trunk {
            id: uuid_of(row, "id")?,
            org_id: org_of(row)?,
            name: row.try_get("name")?,
            host: row.try_get("host")?,
            port: u16::try_from(port).map_err(|e| StorageError::Corrupt {
                column: "trunks.port",
                detail: e.to_string(),
            })?,
            transport: match transport.as_str() {
                "tcp" => TrunkTransport::Tcp,
                _ => TrunkTransport::Udp,
            },
            username: row.try_get("username")?,
            password: row.try_get("password")?,
            realm: row.try_get("realm")?,
            from_domain: row.try_get("from_domain")?,
            max_concurrent_calls: opt_u32(row, "max_concurrent_calls")?,
            max_calls_per_second: opt_u32(row, "max_calls_per_second")?,
            register: row.try_get::<i64, _>("register")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// Every trunk that registers, of every organisation (for the engine at start).
    pub async fn registering_trunks(&self) -> Result<Vec<Trunk>> {
        let rows = sqlx::query(
            "SELECT * FROM trunks WHERE deleted_at IS NULL AND register <> 0 \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::trunk_from).collect()
    }

    /// One trunk.
    pub async fn get_trunk(&self, id: Uuid) -> Result<Trunk> {
        let row = sqlx::query("SELECT * FROM trunks WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "trunk",
                id: id.to_string(),
            })?;
        Self::trunk_from(&row)
    }

    /// Every trunk of organisation `org`, oldest first.
    pub async fn list_trunks(&self, org: Uuid) -> Result<Vec<Trunk>> {
        let rows = sqlx::query(
            "SELECT * FROM trunks WHERE deleted_at IS NULL AND org_id = $1 ORDER BY created_at, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::trunk_from).collect()
    }

    /// Replaces a trunk's fields.
    pub async fn update_trunk(&self, id: Uuid, t: NewTrunk) -> Result<Trunk> {
        self.get_trunk(id).await?;
        sqlx::query(
            "UPDATE trunks SET name = $1, host = $2, port = $3, transport = $4, username = $5, \
             password = $6, realm = $7, from_domain = $8, max_concurrent_calls = $9, \
             max_calls_per_second = $10, register = $11, updated_at = $12 WHERE id = $13",
        )
        .bind(&t.name)
        .bind(&t.host)
        .bind(i64::from(t.port))
        .bind(t.transport.as_str())
        .bind(&t.username)
        .bind(&t.password)
        .bind(&t.realm)
        .bind(&t.from_domain)
        .bind(t.max_concurrent_calls.map(i64::from))
        .bind(t.max_calls_per_second.map(i64::from))
        .bind(i64::from(t.register))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(trunk_name_taken)?;
        self.get_trunk(id).await
    }

    /// Deletes a trunk no number uses. Calls placed through it keep their record.
    pub async fn delete_trunk(&self, id: Uuid) -> Result<()> {
        self.get_trunk(id).await?;
        self.delete_unless_used(
            id,
            ("trunk", "numbers (delete them first)"),
            "SELECT 1 FROM numbers WHERE trunk_id = $1 AND deleted_at IS NULL LIMIT 1",
            // The unique name is freed for a new trunk; the old row stays for history.
            "UPDATE trunks SET deleted_at = $1, name = name || '#deleted-' || id WHERE id = $2",
        )
        .await
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

    /// Creates a number of organisation `org` on one of its trunks.
    pub async fn create_number(&self, org: Uuid, e164: &str, trunk_id: Uuid) -> Result<Number> {
        if self.get_trunk(trunk_id).await?.org_id != org {
            return Err(StorageError::NotFound {
                entity: "trunk",
                id: trunk_id.to_string(),
            });
        }
        let n = Number {
            id: Uuid::now_v7(),
            org_id: org,
            e164: e164.to_owned(),
            trunk_id,
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO numbers (id, e164, trunk_id, created_at, org_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(n.id.to_string())
        .bind(&n.e164)
        .bind(trunk_id.to_string())
        .bind(n.created_at)
        .bind(org.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StorageError::Conflict {
                    entity: "number",
                    field: "e164",
                }
            } else {
                e.into()
            }
        })?;
        Ok(n)
    }

    /// One number.
    pub async fn get_number(&self, id: Uuid) -> Result<Number> {
        let row = sqlx::query("SELECT * FROM numbers WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "number",
                id: id.to_string(),
            })?;
        Self::number_from(&row)
    }

    fn number_from(row: &AnyRow) -> Result<Number> {
        Ok(Number {
            id: uuid_of(row, "id")?,
            org_id: org_of(row)?,
            e164: row.try_get("e164")?,
            trunk_id: uuid_of(row, "trunk_id")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// Every number of organisation `org`, oldest first.
    pub async fn list_numbers(&self, org: Uuid) -> Result<Vec<Number>> {
        let rows = sqlx::query(
            "SELECT * FROM numbers WHERE deleted_at IS NULL AND org_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::number_from).collect()
    }

    /// Deletes a number no agent uses. Calls made from it keep their record.
    pub async fn delete_number(&self, id: Uuid) -> Result<()> {
        self.get_number(id).await?;
        self.delete_unless_used(
            id,
            ("number", "an agent (detach it from the agent first)"),
            "SELECT 1 FROM agent_numbers an JOIN agents a ON a.id = an.agent_id \
             WHERE an.number_id = $1 AND a.deleted_at IS NULL LIMIT 1",
            // The unique E.164 is freed for a new number; the old row stays for history.
            "UPDATE numbers SET deleted_at = $1, e164 = e164 || '#deleted-' || id WHERE id = $2",
        )
        .await
    }

    /// Numbers that are not `org`'s are `NotFound`, like numbers that do not exist.
    async fn own_numbers(&self, org: Uuid, a: &NewAgent) -> Result<()> {
        for n in a.number_ids.iter().chain(a.primary_number_id.iter()) {
            if self.get_number(*n).await?.org_id != org {
                return Err(StorageError::NotFound {
                    entity: "number",
                    id: n.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Creates an agent of organisation `org` with its numbers.
    pub async fn create_agent(&self, org: Uuid, a: NewAgent) -> Result<Agent> {
        self.own_numbers(org, &a).await?;
        let now = now_ms();
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO agents (id, name, config, primary_number_id, created_at, updated_at, \
             org_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(&a.name)
        .bind(a.config.to_string())
        .bind(a.primary_number_id.map(|n| n.to_string()))
        .bind(now)
        .bind(now)
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?;
        for n in &a.number_ids {
            sqlx::query("INSERT INTO agent_numbers (agent_id, number_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id.to_string())
                .bind(n.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.get_agent(id).await
    }

    /// One agent.
    pub async fn get_agent(&self, id: Uuid) -> Result<Agent> {
        let row = sqlx::query("SELECT * FROM agents WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "agent",
                id: id.to_string(),
            })?;
        let numbers = sqlx::query(
            "SELECT number_id FROM agent_numbers WHERE agent_id = $1 ORDER BY number_id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(Agent {
            id: uuid_of(&row, "id")?,
            org_id: org_of(&row)?,
            name: row.try_get("name")?,
            config: json_of(&row, "config")?,
            number_ids: numbers
                .iter()
                .map(|r| uuid_of(r, "number_id"))
                .collect::<Result<_>>()?,
            primary_number_id: opt_uuid_of(&row, "primary_number_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// Every agent of organisation `org`, oldest first.
    pub async fn list_agents(&self, org: Uuid) -> Result<Vec<Agent>> {
        let rows = sqlx::query(
            "SELECT id FROM agents WHERE deleted_at IS NULL AND org_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut agents = Vec::with_capacity(rows.len());
        for row in &rows {
            agents.push(self.get_agent(uuid_of(row, "id")?).await?);
        }
        Ok(agents)
    }

    /// Replaces an agent's name, configuration and numbers.
    pub async fn update_agent(&self, id: Uuid, a: NewAgent) -> Result<Agent> {
        let org = self.get_agent(id).await?.org_id;
        self.own_numbers(org, &a).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE agents SET name = $1, config = $2, primary_number_id = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(&a.name)
        .bind(a.config.to_string())
        .bind(a.primary_number_id.map(|n| n.to_string()))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM agent_numbers WHERE agent_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for n in &a.number_ids {
            sqlx::query("INSERT INTO agent_numbers (agent_id, number_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id.to_string())
                .bind(n.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.get_agent(id).await
    }

    /// Deletes an agent; its calls keep their record, its numbers are free again.
    pub async fn delete_agent(&self, id: Uuid) -> Result<()> {
        self.get_agent(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE agents SET deleted_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM agent_numbers WHERE agent_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a new call in status `queued` (and its `call.queued` event, in one transaction).
    pub async fn insert_call(&self, c: NewCall) -> Result<Call> {
        match self.insert_call_once(c, None).await? {
            Inserted::New(call) | Inserted::Existing(call) => Ok(call),
        }
    }

    /// Like [`Storage::insert_call`], under an idempotency key: the first request with `key`
    /// writes the call; a later one with the same `body_hash` gets that call back
    /// ([`Inserted::Existing`]); one with another body is a [`StorageError::Conflict`].
    pub async fn insert_call_once(
        &self,
        c: NewCall,
        key: Option<(&str, &str)>,
    ) -> Result<Inserted> {
        // Keys are per organisation.
        let key = key.map(|(k, hash)| (format!("{}:{k}", c.org_id), hash.to_owned()));
        if let Some((key, hash)) = &key
            && let Some(existing) = self.idempotent_call(key, hash).await?
        {
            return Ok(Inserted::Existing(existing));
        }
        self.writer
            .write(InsertCall {
                id: Uuid::now_v7(),
                now: now_ms(),
                call: c,
                key,
            })
            .await
    }

    /// The call organisation `org` already dispatched under idempotency `key`, if any; a
    /// different request `hash` is a conflict.
    pub async fn idempotent_replay(
        &self,
        org: Uuid,
        key: &str,
        hash: &str,
    ) -> Result<Option<Call>> {
        self.idempotent_call(&format!("{org}:{key}"), hash).await
    }

    /// The call stored under `key`, if any; a different `hash` is a conflict.
    async fn idempotent_call(&self, key: &str, hash: &str) -> Result<Option<Call>> {
        let mut conn = self.pool.acquire().await?;
        idempotent_call_on(&mut conn, key, hash).await
    }

    /// Calls newest first, filtered, at most `limit`, after `cursor` (from the previous page).
    /// Returns the page and the cursor of the next one.
    pub async fn list_calls(
        &self,
        filter: &CallFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Call>, Option<String>)> {
        let after = cursor.map(parse_cursor).transpose()?;
        let rows = sqlx::query(
            "SELECT id FROM calls WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR to_number = $3) AND ($4 IS NULL OR created_at >= $4) \
             AND ($5 IS NULL OR created_at < $5) \
             AND ($6 IS NULL OR created_at < $6 OR (created_at = $6 AND id < $7)) \
             AND ($9 IS NULL OR org_id = $9) \
             ORDER BY created_at DESC, id DESC LIMIT $8",
        )
        .bind(filter.agent_id.map(|a| a.to_string()))
        .bind(filter.status.map(CallStatus::as_str))
        .bind(filter.to.as_deref())
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(after.as_ref().map(|(t, _)| *t))
        .bind(after.as_ref().map(|(_, id)| id.to_string()))
        .bind(i64::from(limit) + 1)
        .bind(filter.org_id.map(|o| o.to_string()))
        .fetch_all(&self.pool)
        .await?;
        let mut calls = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            calls.push(self.get_call(uuid_of(row, "id")?).await?);
        }
        let next = (rows.len() > limit as usize)
            .then(|| {
                calls
                    .last()
                    .map(|c| format!("{:x}.{}", c.created_at, c.id.simple()))
            })
            .flatten();
        Ok((calls, next))
    }

    /// One call.
    pub async fn get_call(&self, id: Uuid) -> Result<Call> {
        let mut conn = self.pool.acquire().await?;
        fetch_call(&mut conn, id).await
    }

    /// Moves a call to `status` with `progress`, only if that is a step forward. Returns
    /// whether the row changed (a late or repeated step leaves it alone).
    pub async fn advance_call(
        &self,
        id: Uuid,
        status: CallStatus,
        progress: CallProgress,
    ) -> Result<bool> {
        self.writer
            .write(AdvanceCall {
                id,
                status,
                at: progress.at.unwrap_or_else(now_ms),
                progress,
            })
            .await
    }

    /// Records the call's structured result, or why there is none (validated by the caller
    /// against the agent's `returns`). Not a status step: no event.
    pub async fn set_result(
        &self,
        id: Uuid,
        result: Option<&Value>,
        result_error: Option<&str>,
    ) -> Result<()> {
        let detail = CallDetail::Result {
            result: result.map(Value::to_string),
            error: result_error.map(str::to_owned),
        };
        self.set_detail(id, detail).await
    }

    /// Replaces the call's transcript (a list of `{role, text, at}`).
    pub async fn set_transcript(&self, id: Uuid, transcript: &Value) -> Result<()> {
        self.set_detail(id, CallDetail::Transcript(transcript.to_string()))
            .await
    }

    /// Records who answered (answering-machine detection). Not a status step: no event.
    pub async fn set_answered_by(&self, id: Uuid, answered_by: AnsweredBy) -> Result<()> {
        self.set_detail(id, CallDetail::AnsweredBy(answered_by))
            .await
    }

    async fn set_detail(&self, id: Uuid, detail: CallDetail) -> Result<()> {
        self.writer
            .write(SetDetail {
                id,
                now: now_ms(),
                detail,
            })
            .await
    }

    /// Ends every call a previous run left unfinished (the process died with them live) with
    /// status `failed` and end reason `engine_restart`, announcing each; returns how many.
    pub async fn close_interrupted_calls(&self) -> Result<u64> {
        let rows = sqlx::query(
            "SELECT id FROM calls WHERE status IN ('queued', 'dialing', 'ringing', 'in_progress')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut closed = 0;
        for row in &rows {
            let id = uuid_of(row, "id")?;
            let progress = CallProgress {
                end_reason: Some(EndReason::EngineRestart),
                ended_by: Some(EndedBy::Engine),
                ..CallProgress::default()
            };
            if self.advance_call(id, CallStatus::Failed, progress).await? {
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Events due for delivery at `now`, oldest first, at most one per call (the lowest
    /// pending sequence: a call's events go out in order).
    pub async fn due_webhooks(&self, now: i64, limit: u32) -> Result<Vec<WebhookEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_events e WHERE e.state = 'pending' AND e.next_attempt_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_events p WHERE p.call_id = e.call_id \
             AND p.state = 'pending' AND p.sequence < e.sequence) \
             ORDER BY e.created_at, e.id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let attempts: i64 = row.try_get("attempts")?;
                Ok(WebhookEvent {
                    id: uuid_of(row, "id")?,
                    call_id: uuid_of(row, "call_id")?,
                    sequence: row.try_get("sequence")?,
                    kind: row.try_get("type")?,
                    url: row.try_get("url")?,
                    body: row.try_get("body")?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Records a delivery attempt.
    pub async fn record_delivery(&self, id: Uuid, outcome: Delivery) -> Result<()> {
        let now = now_ms();
        let (state, error, next) = match outcome {
            Delivery::Delivered => ("delivered", None, now),
            Delivery::Retry { error, at } => ("pending", Some(error), at),
            Delivery::Dead { error } => ("dead", Some(error), now),
        };
        sqlx::query(
            "UPDATE webhook_events SET state = $1, attempts = attempts + 1, last_error = $2, \
             next_attempt_at = $3, delivered_at = CASE WHEN $4 = 'delivered' THEN $5 ELSE NULL END \
             WHERE id = $6",
        )
        .bind(state)
        .bind(error)
        .bind(next)
        .bind(state)
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The call an event announces.
    pub async fn event_call(&self, event_id: Uuid) -> Result<Uuid> {
        let row = sqlx::query("SELECT call_id FROM webhook_events WHERE id = $1")
            .bind(event_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                entity: "event",
                id: event_id.to_string(),
            })?;
        uuid_of(&row, "call_id")
    }

    /// Queues an event for delivery again, whatever its state. Returns its call's id.
    pub async fn redeliver(&self, event_id: Uuid) -> Result<Uuid> {
        let row = sqlx::query(
            "UPDATE webhook_events SET state = 'pending', next_attempt_at = $1, last_error = NULL \
             WHERE id = $2 RETURNING call_id",
        )
        .bind(now_ms())
        .bind(event_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StorageError::NotFound {
            entity: "event",
            id: event_id.to_string(),
        })?;
        uuid_of(&row, "call_id")
    }

    /// A call's events with their delivery state: `(type, sequence, state, attempts, last_error)`.
    pub async fn call_events(&self, call_id: Uuid) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT id, type, sequence, state, attempts, last_error FROM webhook_events \
             WHERE call_id = $1 ORDER BY sequence",
        )
        .bind(call_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let (sequence, attempts): (i64, i64) =
                    (row.try_get("sequence")?, row.try_get("attempts")?);
                Ok(serde_json::json!({
                    "id": row.try_get::<String, _>("id")?,
                    "type": row.try_get::<String, _>("type")?,
                    "sequence": sequence,
                    "state": row.try_get::<String, _>("state")?,
                    "attempts": attempts,
                    "last_error": row.try_get::<Option<String>, _>("last_error")?,
                }))
            })
            .collect()
    }
}

/// Reads one call on `conn` (a pooled connection or an open transaction).
async fn fetch_call(conn: &mut AnyConnection, id: Uuid) -> Result<Call> {
    let row = sqlx::query("SELECT * FROM calls WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StorageError::NotFound {
            entity: "call",
            id: id.to_string(),
        })?;
    call_from(&row)
}

/// A call from its row (`SELECT *` or `RETURNING *`).
fn call_from(row: &AnyRow) -> Result<Call> {
    let sip_status: Option<i64> = row.try_get("sip_status")?;
    Ok(Call {
        id: uuid_of(row, "id")?,
        org_id: org_of(row)?,
        agent_id: uuid_of(row, "agent_id")?,
        to: row.try_get("to_number")?,
        from_number: row.try_get("from_number")?,
        trunk_id: uuid_of(row, "trunk_id")?,
        instructions: row.try_get("instructions")?,
        context: json_of(row, "context")?,
        metadata: json_of(row, "metadata")?,
        webhook_url: row.try_get("webhook_url")?,
        status: parse_req(row, "status", str::parse)?,
        end_reason: parse_opt(row, "end_reason", str::parse)?,
        ended_by: parse_opt(row, "ended_by", str::parse)?,
        sip_call_id: row.try_get("sip_call_id")?,
        answered_by: parse_opt(row, "answered_by", str::parse)?,
        sip_status: sip_status.and_then(|s| u16::try_from(s).ok()),
        transcript: json_of(row, "transcript")?,
        result: opt_json_of(row, "result")?,
        result_error: row.try_get("result_error")?,
        media: opt_json_of(row, "media")?,
        created_at: row.try_get("created_at")?,
        dialed_at: row.try_get("dialed_at")?,
        ringing_at: row.try_get("ringing_at")?,
        answered_at: row.try_get("answered_at")?,
        ended_at: row.try_get("ended_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The call stored under the idempotency `key` (scoped to its organisation), if any; a
/// different request `hash` is a conflict.
async fn idempotent_call_on(
    conn: &mut AnyConnection,
    key: &str,
    hash: &str,
) -> Result<Option<Call>> {
    let row = sqlx::query("SELECT body_hash, call_id FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stored: String = row.try_get("body_hash")?;
    if stored != hash {
        return Err(StorageError::Conflict {
            entity: "dispatch",
            field: "Idempotency-Key",
        });
    }
    Ok(Some(fetch_call(conn, uuid_of(&row, "call_id")?).await?))
}

/// `($1, $2, …), ($n+1, …)`: the placeholders of `rows` rows of `columns` values each.
fn values(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * columns + column + 1));
        }
        sql.push(')');
    }
    sql
}

/// A new call (`queued`), its idempotency key if it has one, and the event announcing it.
struct InsertCall {
    id: Uuid,
    now: i64,
    call: NewCall,
    /// The key scoped to the organisation, and the request's hash.
    key: Option<(String, String)>,
}

impl Write for InsertCall {
    type Output = Inserted;

    fn call_id(&self) -> Uuid {
        self.id
    }

    fn apply_all<'c>(
        conn: &'c mut AnyConnection,
        writes: &'c [&'c Self],
    ) -> Pending<'c, Vec<Inserted>> {
        Box::pin(async move {
            let sql = format!(
                "INSERT INTO calls (id, agent_id, to_number, from_number, trunk_id, instructions, \
                 context, metadata, webhook_url, status, created_at, updated_at, org_id) \
                 VALUES {} RETURNING *",
                values(writes.len(), 13)
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for w in writes {
                let c = &w.call;
                insert = insert
                    .bind(w.id.to_string())
                    .bind(c.agent_id.to_string())
                    .bind(c.to.as_str())
                    .bind(c.from_number.as_str())
                    .bind(c.trunk_id.to_string())
                    .bind(c.instructions.as_deref())
                    .bind(c.context.to_string())
                    .bind(c.metadata.to_string())
                    .bind(c.webhook_url.as_deref())
                    .bind(CallStatus::Queued.as_str())
                    .bind(w.now)
                    .bind(w.now)
                    .bind(c.org_id.to_string());
            }
            let mut written = HashMap::new();
            for row in insert.fetch_all(&mut *conn).await? {
                let call = call_from(&row)?;
                written.insert(call.id, call);
            }
            let keyed: Vec<_> = writes
                .iter()
                .filter_map(|w| w.key.as_ref().map(|key| (w, key)))
                .collect();
            if !keyed.is_empty() {
                let sql = format!(
                    "INSERT INTO idempotency_keys (key, body_hash, call_id, created_at) VALUES {}",
                    values(keyed.len(), 4)
                );
                let mut claim = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (w, (key, hash)) in keyed {
                    claim = claim
                        .bind(key.as_str())
                        .bind(hash.as_str())
                        .bind(w.id.to_string())
                        .bind(w.now);
                }
                claim.execute(&mut *conn).await?;
            }
            let calls = writes
                .iter()
                .map(|w| {
                    written.remove(&w.id).ok_or_else(|| StorageError::NotFound {
                        entity: "call",
                        id: w.id.to_string(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            enqueue_events(conn, calls.iter()).await?;
            Ok(calls.into_iter().map(Inserted::New).collect())
        })
    }

    /// A concurrent request took the key first: ours is rolled back, theirs wins.
    fn recover<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        error: StorageError,
    ) -> Pending<'c, Inserted> {
        Box::pin(async move {
            match (&self.key, &error) {
                (Some((key, hash)), StorageError::Database(e)) if unique_violation(e) => {
                    idempotent_call_on(conn, key, hash)
                        .await?
                        .map(Inserted::Existing)
                        .ok_or(error)
                }
                _ => Err(error),
            }
        })
    }
}

/// A status step, only if it moves the call forward, with the event announcing it.
struct AdvanceCall {
    id: Uuid,
    status: CallStatus,
    /// When the step happened: the progress's time, or when it was asked for.
    at: i64,
    progress: CallProgress,
}

/// A status's place in a call's life ([`CallStatus::rank`]): a step only ever goes to a
/// higher one.
fn rank(status: CallStatus) -> i64 {
    i64::from(status.rank())
}

/// [`rank`] in SQL, of the status in `column`: the statuses before the end by name, every
/// final one past them.
fn rank_in_sql(column: &str) -> String {
    let before_the_end = [
        CallStatus::Queued,
        CallStatus::Dialing,
        CallStatus::Ringing,
        CallStatus::InProgress,
    ]
    .map(|status| format!("WHEN '{}' THEN {}", status.as_str(), rank(status)))
    .join(" ");
    format!(
        "(CASE {column} {before_the_end} ELSE {} END)",
        rank(CallStatus::Completed)
    )
}

impl Write for AdvanceCall {
    /// Whether the row changed.
    type Output = bool;

    fn call_id(&self) -> Uuid {
        self.id
    }

    fn apply_all<'c>(
        conn: &'c mut AnyConnection,
        writes: &'c [&'c Self],
    ) -> Pending<'c, Vec<bool>> {
        Box::pin(async move {
            // The steps as a table; its columns are prefixed so that PostgreSQL's `RETURNING *`
            // (every table of the statement) does not repeat the calls' column names.
            let sql = format!(
                "WITH step (step_id, step_status, step_rank, step_at, step_sip_call_id, \
                 step_sip_status, step_end_reason, step_ended_by, step_media, step_transcript) \
                 AS (VALUES {values}) \
                 UPDATE calls SET status = step.step_status, updated_at = step.step_at, \
                 dialed_at = CASE WHEN step.step_rank = {dialing} \
                   THEN COALESCE(calls.dialed_at, step.step_at) ELSE calls.dialed_at END, \
                 ringing_at = CASE WHEN step.step_rank = {ringing} \
                   THEN COALESCE(calls.ringing_at, step.step_at) ELSE calls.ringing_at END, \
                 answered_at = CASE WHEN step.step_rank = {answered} \
                   THEN COALESCE(calls.answered_at, step.step_at) ELSE calls.answered_at END, \
                 ended_at = CASE WHEN step.step_rank = {ended} \
                   THEN COALESCE(calls.ended_at, step.step_at) ELSE calls.ended_at END, \
                 sip_call_id = COALESCE(step.step_sip_call_id, calls.sip_call_id), \
                 sip_status = COALESCE(step.step_sip_status, calls.sip_status), \
                 end_reason = COALESCE(step.step_end_reason, calls.end_reason), \
                 ended_by = COALESCE(step.step_ended_by, calls.ended_by), \
                 media = COALESCE(step.step_media, calls.media), \
                 transcript = COALESCE(step.step_transcript, calls.transcript) \
                 FROM step WHERE calls.id = step.step_id \
                 AND {current} < step.step_rank RETURNING *",
                values = values(writes.len(), 10),
                dialing = rank(CallStatus::Dialing),
                ringing = rank(CallStatus::Ringing),
                answered = rank(CallStatus::InProgress),
                ended = rank(CallStatus::Completed),
                current = rank_in_sql("calls.status"),
            );
            let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
            for w in writes {
                let progress = &w.progress;
                update = update
                    .bind(w.id.to_string())
                    .bind(w.status.as_str())
                    .bind(rank(w.status))
                    .bind(w.at)
                    .bind(progress.sip_call_id.as_deref())
                    .bind(progress.sip_status.map(i64::from))
                    .bind(progress.end_reason.map(EndReason::as_str))
                    .bind(progress.ended_by.map(EndedBy::as_str))
                    .bind(progress.media.as_ref().map(Value::to_string))
                    .bind(progress.transcript.as_ref().map(Value::to_string));
            }
            let mut advanced = HashMap::new();
            for row in update.fetch_all(&mut *conn).await? {
                let call = call_from(&row)?;
                advanced.insert(call.id, call);
            }
            // The events announcing the steps commit with them, or neither does.
            enqueue_events(conn, writes.iter().filter_map(|w| advanced.get(&w.id))).await?;
            Ok(writes
                .iter()
                .map(|w| advanced.contains_key(&w.id))
                .collect())
        })
    }
}

/// A detail of a call that is not a status step (no event).
enum CallDetail {
    /// The structured result (JSON text; `None` keeps the one stored) and why there is none.
    Result {
        result: Option<String>,
        error: Option<String>,
    },
    /// The whole transcript, JSON text.
    Transcript(String),
    /// Who answered.
    AnsweredBy(AnsweredBy),
}

/// Writes a [`CallDetail`].
struct SetDetail {
    id: Uuid,
    now: i64,
    detail: CallDetail,
}

impl Write for SetDetail {
    type Output = ();

    fn call_id(&self) -> Uuid {
        self.id
    }

    /// One statement each: details are written a few times in a call's life, not per step.
    fn apply_all<'c>(conn: &'c mut AnyConnection, writes: &'c [&'c Self]) -> Pending<'c, Vec<()>> {
        Box::pin(async move {
            for w in writes {
                let query = match &w.detail {
                    CallDetail::Result { result, error } => sqlx::query(
                        "UPDATE calls SET result = COALESCE($1, result), result_error = $2, \
                         updated_at = $3 WHERE id = $4",
                    )
                    .bind(result.as_deref())
                    .bind(error.as_deref()),
                    CallDetail::Transcript(transcript) => sqlx::query(
                        "UPDATE calls SET transcript = $1, updated_at = $2 WHERE id = $3",
                    )
                    .bind(transcript.as_str()),
                    CallDetail::AnsweredBy(who) => sqlx::query(
                        "UPDATE calls SET answered_by = $1, updated_at = $2 WHERE id = $3",
                    )
                    .bind(who.as_str()),
                };
                query
                    .bind(w.now)
                    .bind(w.id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(vec![(); writes.len()])
        })
    }
}

/// The webhook event type announcing a step to `status`.
fn event_type(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Queued => "call.queued",
        CallStatus::Dialing => "call.dialing",
        CallStatus::Ringing => "call.ringing",
        CallStatus::InProgress => "call.answered",
        CallStatus::Completed
        | CallStatus::Busy
        | CallStatus::NoAnswer
        | CallStatus::Failed
        | CallStatus::Canceled => "call.ended",
    }
}

/// Writes the events announcing `calls`' current statuses (each call once) into the outbox, on
/// `conn` — the same transaction as the changes they announce. Calls without a webhook URL have
/// none.
async fn enqueue_events<'a>(
    conn: &mut AnyConnection,
    calls: impl Iterator<Item = &'a Call>,
) -> Result<()> {
    let hooked: Vec<(&Call, &str)> = calls
        .filter_map(|call| call.webhook_url.as_deref().map(|url| (call, url)))
        .collect();
    if hooked.is_empty() {
        return Ok(());
    }
    // Each call's events are numbered in order.
    let sql = format!(
        "SELECT call_id, MAX(sequence) AS last FROM webhook_events WHERE call_id IN {} \
         GROUP BY call_id",
        values(1, hooked.len())
    );
    let mut last = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (call, _) in &hooked {
        last = last.bind(call.id.to_string());
    }
    let mut sequences = HashMap::new();
    for row in last.fetch_all(&mut *conn).await? {
        sequences.insert(uuid_of(&row, "call_id")?, row.try_get::<i64, _>("last")?);
    }
    let sql = format!(
        "INSERT INTO webhook_events (id, call_id, sequence, type, url, body, created_at, \
         next_attempt_at) VALUES {}",
        values(hooked.len(), 8)
    );
    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
    let now = now_ms();
    for (call, url) in hooked {
        let id = Uuid::now_v7();
        let sequence = sequences.get(&call.id).copied().unwrap_or(0) + 1;
        let kind = event_type(call.status);
        let body = serde_json::json!({
            "id": id,
            "type": kind,
            "created_at": dialtone_model::time::rfc3339(now),
            "call_id": call.id,
            "sequence": sequence,
            "data": {"call": call.to_json()},
        });
        insert = insert
            .bind(id.to_string())
            .bind(call.id.to_string())
            .bind(sequence)
            .bind(kind)
            .bind(url)
            .bind(body.to_string())
            .bind(now)
            .bind(now);
    }
    insert.execute(&mut *conn).await?;
    Ok(())
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The receiver took it (2xx).
    Delivered,
    /// Failed; try again at `at` (Unix ms).
    Retry {
        /// What went wrong.
        error: String,
        /// When to try again.
        at: i64,
    },
    /// Failed for good (410, or the retry period is over).
    Dead {
        /// What went wrong last.
        error: String,
    },
}

/// What [`Storage::insert_call_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new call was written.
    New(Call),
    /// The idempotency key named an earlier call with the same body.
    Existing(Call),
}

/// Filters of [`Storage::list_calls`]; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only this organisation's calls.
    pub org_id: Option<Uuid>,
    /// Only this agent's calls.
    pub agent_id: Option<Uuid>,
    /// Only calls in this status.
    pub status: Option<CallStatus>,
    /// Only calls to this number.
    pub to: Option<String>,
    /// Created at or after (Unix ms).
    pub created_after: Option<i64>,
    /// Created before (Unix ms).
    pub created_before: Option<i64>,
}

/// Reads a cursor made by [`Storage::list_calls`].
fn parse_cursor(cursor: &str) -> Result<(i64, Uuid)> {
    let bad = || StorageError::InvalidCursor {
        cursor: cursor.to_owned(),
    };
    let (t, id) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((
        i64::from_str_radix(t, 16).map_err(|_| bad())?,
        Uuid::parse_str(id).map_err(|_| bad())?,
    ))
}

/// One webhook event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// Event id (also in the body, for deduplication).
    pub id: Uuid,
    /// The call it announces.
    pub call_id: Uuid,
    /// Its place among the call's events.
    pub sequence: i64,
    /// `call.queued`, `call.dialing`, ...
    pub kind: String,
    /// Where to deliver it.
    pub url: String,
    /// The JSON body, exactly as it is signed and sent.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was written.
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The organisation the tests' resources belong to.
    async fn org(s: &Storage) -> Uuid {
        s.bootstrap_admin_key("test-admin-key").await.unwrap().id
    }

    /// PostgreSQL for the tests (`dialtone_test_support::postgres_test_url`), in a schema of its
    /// own; `None`, saying why, where none answers (outside CI).
    async fn postgres() -> Option<(Storage, String)> {
        use sqlx::Connection;
        let base = dialtone_test_support::postgres_test_url()?;
        sqlx::any::install_default_drivers();
        let mut admin = AnyConnection::connect(&base).await.unwrap();
        let schema = format!("dialtone_test_{}", Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let storage = Storage::open(&url).await.unwrap();
        assert_eq!(storage.backend(), Backend::Postgres);
        Some((storage, schema))
    }

    /// Drops a test's schema (a failed test leaves its schema behind to look at).
    async fn drop_schema(storage: &Storage, schema: &str) {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&storage.pool)
            .await
            .unwrap();
    }

    /// Runs a storage test on SQLite (in memory) and on PostgreSQL.
    macro_rules! on_both {
        ($name:ident) => {
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Storage::open("sqlite::memory:").await.unwrap()).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some((storage, schema)) = super::postgres().await {
                        super::$name(storage.clone()).await;
                        super::drop_schema(&storage, &schema).await;
                    }
                }
            }
        };
    }

    fn trunk(name: &str) -> NewTrunk {
        NewTrunk {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 5060,
            transport: TrunkTransport::Udp,
            username: Some("u".into()),
            password: Some("secret".into()),
            realm: None,
            from_domain: None,
            max_concurrent_calls: Some(10),
            max_calls_per_second: None,
            register: false,
        }
    }

    /// A new call of `first`'s agent, number and trunk, to `to`, with `webhook_url`.
    fn another(first: &Call, to: &str, webhook_url: Option<&str>) -> NewCall {
        NewCall {
            org_id: first.org_id,
            agent_id: first.agent_id,
            to: to.into(),
            from_number: first.from_number.clone(),
            trunk_id: first.trunk_id,
            instructions: None,
            context: serde_json::json!({}),
            metadata: serde_json::json!({}),
            webhook_url: webhook_url.map(str::to_owned),
        }
    }

    async fn call(s: &Storage) -> Call {
        let t = s.create_trunk(org(s).await, trunk("t")).await.unwrap();
        let n = s
            .create_number(org(s).await, "+15550001111", t.id)
            .await
            .unwrap();
        let a = s
            .create_agent(
                org(s).await,
                NewAgent {
                    name: "a".into(),
                    config: serde_json::json!({"instructions": "hi"}),
                    number_ids: vec![n.id],
                    primary_number_id: Some(n.id),
                },
            )
            .await
            .unwrap();
        s.insert_call(NewCall {
            org_id: org(s).await,
            agent_id: a.id,
            to: "+15551230000".into(),
            from_number: n.e164.clone(),
            trunk_id: t.id,
            instructions: Some("hi".into()),
            context: serde_json::json!({"k": 1}),
            metadata: serde_json::json!({}),
            webhook_url: None,
        })
        .await
        .unwrap()
    }

    on_both!(trunks_numbers_agents_round_trip);
    async fn trunks_numbers_agents_round_trip(s: Storage) {
        let t = s.create_trunk(org(&s).await, trunk("main")).await.unwrap();
        assert_eq!(s.get_trunk(t.id).await.unwrap(), t);
        assert!(!serde_json::to_string(&t).unwrap().contains("secret"));
        assert!(!format!("{t:?}").contains("secret"));
        assert!(!format!("{:?}", trunk("x")).contains("secret"));
        assert!(matches!(
            s.create_trunk(org(&s).await, trunk("main")).await,
            Err(StorageError::Conflict {
                entity: "trunk",
                field: "name"
            })
        ));
        let n = s
            .create_number(org(&s).await, "+15550001111", t.id)
            .await
            .unwrap();
        assert!(matches!(
            s.create_number(org(&s).await, "+15550001111", t.id).await,
            Err(StorageError::Conflict { .. })
        ));
        assert!(matches!(
            s.create_number(org(&s).await, "+15550002222", Uuid::now_v7())
                .await,
            Err(StorageError::NotFound {
                entity: "trunk",
                ..
            })
        ));
        let a = s
            .create_agent(
                org(&s).await,
                NewAgent {
                    name: "agent".into(),
                    config: serde_json::json!({"voice": "x"}),
                    number_ids: vec![n.id],
                    primary_number_id: Some(n.id),
                },
            )
            .await
            .unwrap();
        assert_eq!(a.number_ids, vec![n.id]);
        assert_eq!(s.get_agent(a.id).await.unwrap(), a);
    }

    on_both!(changes_and_deletes_keep_history_and_refuse_what_is_in_use);
    async fn changes_and_deletes_keep_history_and_refuse_what_is_in_use(s: Storage) {
        let c = call(&s).await;
        let t = s.get_trunk(c.trunk_id).await.unwrap();
        let mut changed = trunk("t2");
        changed.port = 5080;
        changed.password = None;
        let t2 = s.update_trunk(t.id, changed).await.unwrap();
        assert_eq!(
            (t2.name.as_str(), t2.port, t2.password.as_deref()),
            ("t2", 5080, None)
        );
        assert!(t2.updated_at >= t.updated_at);
        // In use: the trunk carries a number, the number an agent.
        assert!(matches!(
            s.delete_trunk(t.id).await,
            Err(StorageError::InUse {
                entity: "trunk",
                ..
            })
        ));
        let n = s.list_numbers(org(&s).await).await.unwrap().remove(0);
        assert!(matches!(
            s.delete_number(n.id).await,
            Err(StorageError::InUse {
                entity: "number",
                ..
            })
        ));
        let a = s.list_agents(org(&s).await).await.unwrap().remove(0);
        let mut emptied = NewAgent {
            name: "renamed".into(),
            config: serde_json::json!({"persona": "p"}),
            number_ids: Vec::new(),
            primary_number_id: None,
        };
        let a2 = s.update_agent(a.id, emptied.clone()).await.unwrap();
        assert_eq!((a2.name.as_str(), a2.number_ids.len()), ("renamed", 0));
        emptied.number_ids = vec![Uuid::now_v7()];
        assert!(matches!(
            s.update_agent(a.id, emptied).await,
            Err(StorageError::NotFound {
                entity: "number",
                ..
            })
        ));
        // Deleted in order; gone from reads and lists, names and numbers free again; the
        // call keeps its record.
        s.delete_number(n.id).await.unwrap();
        s.delete_agent(a.id).await.unwrap();
        s.delete_trunk(t.id).await.unwrap();
        assert!(matches!(
            s.get_trunk(t.id).await,
            Err(StorageError::NotFound { .. })
        ));
        assert!(matches!(
            s.get_agent(a.id).await,
            Err(StorageError::NotFound { .. })
        ));
        assert!(s.list_trunks(org(&s).await).await.unwrap().is_empty());
        assert!(s.list_numbers(org(&s).await).await.unwrap().is_empty());
        assert!(s.list_agents(org(&s).await).await.unwrap().is_empty());
        let again = s.create_trunk(org(&s).await, trunk("t2")).await.unwrap();
        s.create_number(org(&s).await, &n.e164, again.id)
            .await
            .unwrap();
        assert_eq!(s.get_call(c.id).await.unwrap().trunk_id, t.id);
    }

    on_both!(keys_are_stored_hashed_and_name_their_organisation);
    async fn keys_are_stored_hashed_and_name_their_organisation(s: Storage) {
        let admin_org = s.bootstrap_admin_key("operator-key").await.unwrap();
        // Bootstrapping again with the same key changes nothing.
        assert_eq!(
            s.bootstrap_admin_key("operator-key").await.unwrap(),
            admin_org
        );
        assert_eq!(admin_org.name, "default");
        let owner = s.key_owner("operator-key").await.unwrap().unwrap();
        assert_eq!((owner.org_id, owner.admin), (admin_org.id, true));
        assert_eq!(s.key_owner("operator-kez").await.unwrap(), None);
        let other = s
            .create_organization("acme", Some(3), Some(5))
            .await
            .unwrap();
        assert_eq!(
            (other.max_concurrent_calls, other.max_calls_per_second),
            (Some(3), Some(5))
        );
        let issued = s.issue_key(other.id, false).await.unwrap();
        assert!(issued.key.starts_with("dtk_") && issued.key.len() == 68);
        let owner = s.key_owner(&issued.key).await.unwrap().unwrap();
        assert_eq!((owner.org_id, owner.admin), (other.id, false));
        // Only the hash is in the database.
        let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_all(&s.pool)
            .await
            .unwrap();
        assert!(stored.contains(&hash_key(&issued.key)));
        assert!(!stored.iter().any(|h| h.contains(&issued.key)));
        assert!(matches!(
            s.issue_key(Uuid::now_v7(), false).await,
            Err(StorageError::NotFound {
                entity: "organization",
                ..
            })
        ));
        // Resources are per organisation; names are unique within one.
        s.create_trunk(admin_org.id, trunk("shared-name"))
            .await
            .unwrap();
        s.create_trunk(other.id, trunk("shared-name"))
            .await
            .unwrap();
        assert!(matches!(
            s.create_trunk(other.id, trunk("shared-name")).await,
            Err(StorageError::Conflict {
                entity: "trunk",
                ..
            })
        ));
        let t = s.create_trunk(other.id, trunk("acme-trunk")).await.unwrap();
        assert_eq!(t.org_id, other.id);
        assert_eq!(s.list_trunks(other.id).await.unwrap().len(), 2);
        assert_eq!(s.list_trunks(admin_org.id).await.unwrap().len(), 1);
        assert!(matches!(
            s.create_number(admin_org.id, "+15550003333", t.id).await,
            Err(StorageError::NotFound {
                entity: "trunk",
                ..
            })
        ));
    }

    on_both!(call_status_only_moves_forward);

    /// The rank the database computes for a stored status is the one `rank` gives it.
    async fn the_sql_rank_of_every_status_is_its_rank(s: Storage) {
        use sqlx::Row;
        for &status in CallStatus::ALL {
            let sql = format!(
                "SELECT {} AS r",
                rank_in_sql(&format!("'{}'", status.as_str()))
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_one(&s.pool)
                .await
                .unwrap();
            let in_sql: i64 = row.try_get("r").unwrap();
            assert_eq!(in_sql, rank(status), "{status:?}");
        }
    }
    on_both!(the_sql_rank_of_every_status_is_its_rank);
    async fn call_status_only_moves_forward(s: Storage) {
        let c = call(&s).await;
        assert_eq!(c.status, CallStatus::Queued);
        assert!(
            s.advance_call(
                c.id,
                CallStatus::Dialing,
                CallProgress {
                    sip_call_id: Some("abc".into()),
                    ..CallProgress::default()
                }
            )
            .await
            .unwrap()
        );
        assert!(
            s.advance_call(c.id, CallStatus::InProgress, CallProgress::default())
                .await
                .unwrap()
        );
        assert!(
            !s.advance_call(c.id, CallStatus::Ringing, CallProgress::default())
                .await
                .unwrap()
        );
        assert!(
            s.advance_call(
                c.id,
                CallStatus::Completed,
                CallProgress {
                    end_reason: Some(EndReason::Completed),
                    ended_by: Some(EndedBy::Callee),
                    ..CallProgress::default()
                }
            )
            .await
            .unwrap()
        );
        assert!(
            !s.advance_call(c.id, CallStatus::Failed, CallProgress::default())
                .await
                .unwrap()
        );
        let c = s.get_call(c.id).await.unwrap();
        assert_eq!(c.status, CallStatus::Completed);
        assert_eq!(c.sip_call_id.as_deref(), Some("abc"));
        assert_eq!(c.end_reason, Some(EndReason::Completed));
        assert!(c.dialed_at.is_some() && c.answered_at.is_some() && c.ended_at.is_some());
        assert_eq!(c.ringing_at, None);
        assert_eq!(c.context, serde_json::json!({"k": 1}));
    }

    on_both!(a_step_keeps_the_time_it_happened_at);
    async fn a_step_keeps_the_time_it_happened_at(s: Storage) {
        let c = call(&s).await;
        // Written later than they happened, as a call's progress writer may.
        let (answered, ended) = (now_ms() - 5_000, now_ms() - 1_000);
        for (status, at) in [
            (CallStatus::InProgress, answered),
            (CallStatus::Completed, ended),
        ] {
            let step = CallProgress {
                at: Some(at),
                ..CallProgress::default()
            };
            assert!(s.advance_call(c.id, status, step).await.unwrap());
        }
        let c = s.get_call(c.id).await.unwrap();
        assert_eq!(c.answered_at, Some(answered));
        assert_eq!(c.ended_at, Some(ended));
    }

    on_both!(each_step_writes_its_event_in_order_and_delivery_goes_one_per_call);
    async fn each_step_writes_its_event_in_order_and_delivery_goes_one_per_call(s: Storage) {
        let t = s.create_trunk(org(&s).await, trunk("t")).await.unwrap();
        let n = s
            .create_number(org(&s).await, "+15550001111", t.id)
            .await
            .unwrap();
        let a = s
            .create_agent(
                org(&s).await,
                NewAgent {
                    name: "a".into(),
                    config: serde_json::json!({}),
                    number_ids: vec![n.id],
                    primary_number_id: Some(n.id),
                },
            )
            .await
            .unwrap();
        let o = org(&s).await;
        let c = s
            .insert_call(NewCall {
                org_id: o,
                agent_id: a.id,
                to: "+15551230000".into(),
                from_number: n.e164.clone(),
                trunk_id: t.id,
                instructions: None,
                context: serde_json::json!({}),
                metadata: serde_json::json!({}),
                webhook_url: Some("http://127.0.0.1:9/hook".into()),
            })
            .await
            .unwrap();
        s.advance_call(c.id, CallStatus::Dialing, CallProgress::default())
            .await
            .unwrap();
        // A step backwards writes nothing, event included.
        assert!(
            !s.advance_call(c.id, CallStatus::Queued, CallProgress::default())
                .await
                .unwrap()
        );
        let events = s.call_events(c.id).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["call.queued", "call.dialing"]);
        let due = s.due_webhooks(now_ms(), 10).await.unwrap();
        assert_eq!(due.len(), 1, "one per call, the lowest pending sequence");
        assert_eq!(due[0].kind, "call.queued");
        let body: Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["sequence"], 1);
        assert_eq!(body["data"]["call"]["status"], "queued");
        let retry = Delivery::Retry {
            error: "503".into(),
            at: now_ms() + 60_000,
        };
        s.record_delivery(due[0].id, retry).await.unwrap();
        assert!(
            s.due_webhooks(now_ms(), 10).await.unwrap().is_empty(),
            "retry not yet due"
        );
        s.record_delivery(due[0].id, Delivery::Delivered)
            .await
            .unwrap();
        let next = s.due_webhooks(now_ms(), 10).await.unwrap();
        assert_eq!(next[0].kind, "call.dialing");
        let gone = Delivery::Dead {
            error: "410 Gone".into(),
        };
        s.record_delivery(next[0].id, gone).await.unwrap();
        let events = s.call_events(c.id).await.unwrap();
        assert_eq!(events[0]["state"], "delivered");
        assert_eq!(events[0]["attempts"], 2);
        assert_eq!(events[1]["state"], "dead");
        // A dead event can be queued again by hand.
        assert_eq!(s.redeliver(next[0].id).await.unwrap(), c.id);
        assert_eq!(
            s.due_webhooks(now_ms(), 10).await.unwrap()[0].id,
            next[0].id
        );
        assert!(matches!(
            s.redeliver(Uuid::now_v7()).await,
            Err(StorageError::NotFound {
                entity: "event",
                ..
            })
        ));
    }

    on_both!(idempotent_inserts_and_pagination);

    /// What queued up together is committed together; a write that fails in the group is
    /// answered alone and the others still commit, each caller told its own outcome.
    async fn a_group_with_a_failing_write_commits_the_rest(s: Storage) {
        let first = call(&s).await;
        let insert = |to: &str, key: Option<(&str, &str)>| InsertCall {
            id: Uuid::now_v7(),
            now: now_ms(),
            call: another(&first, to, Some("https://example.com/hook")),
            key: key.map(|(k, h)| (k.to_owned(), h.to_owned())),
        };
        let mut conn = s.pool.acquire().await.unwrap();
        let told = writer::commit_together(
            &mut conn,
            vec![
                insert("+15550000001", Some(("k", "h"))),
                // The same key and request: the first one's call.
                insert("+15550000001", Some(("k", "h"))),
                // The same key, another request: refused.
                insert("+15550000002", Some(("k", "other"))),
                insert("+15550000003", None),
            ],
        )
        .await;
        drop(conn);
        let [a, b, c, d] = <[_; 4]>::try_from(told).unwrap();
        let Inserted::New(a) = a.unwrap() else {
            panic!("the key's first use writes a call");
        };
        assert_eq!(b.unwrap(), Inserted::Existing(a.clone()));
        assert!(matches!(
            c,
            Err(StorageError::Conflict {
                field: "Idempotency-Key",
                ..
            })
        ));
        let Inserted::New(d) = d.unwrap() else {
            panic!("a call without a key is new");
        };
        for written in [&a, &d] {
            assert_eq!(s.get_call(written.id).await.unwrap(), *written);
            // Its `call.queued` event committed with it.
            assert_eq!(s.call_events(written.id).await.unwrap().len(), 1);
        }
        let (all, _) = s
            .list_calls(&CallFilter::default(), 10, None)
            .await
            .unwrap();
        assert_eq!(
            all.len(),
            3,
            "the first call, a and d; nothing of the refused one"
        );
    }

    on_both!(a_group_with_a_failing_write_commits_the_rest);

    /// Steps of several calls in one group are one statement; two steps of one call in the
    /// same group still apply in their order (rounds), a step backwards changes nothing, and the
    /// events are numbered per call in the order of the steps.
    async fn a_group_of_steps_keeps_each_calls_order(s: Storage) {
        let first = call(&s).await;
        let hooked = |to: &str| another(&first, to, Some("https://example.com/hook"));
        let a = s.insert_call(hooked("+15550000001")).await.unwrap();
        let b = s.insert_call(hooked("+15550000002")).await.unwrap();
        let step = |id: Uuid, status: CallStatus, at: i64| AdvanceCall {
            id,
            status,
            at,
            progress: CallProgress {
                at: Some(at),
                sip_call_id: Some(format!("sip-{id}")),
                ..CallProgress::default()
            },
        };
        let mut conn = s.pool.acquire().await.unwrap();
        let told = writer::commit_together(
            &mut conn,
            vec![
                step(a.id, CallStatus::Dialing, 1_000),
                step(b.id, CallStatus::Ringing, 1_100),
                step(a.id, CallStatus::InProgress, 1_200),
                // Behind `ringing` already in this group: refused.
                step(b.id, CallStatus::Dialing, 1_300),
                step(a.id, CallStatus::Completed, 1_400),
            ],
        )
        .await;
        drop(conn);
        let told: Vec<bool> = told.into_iter().map(Result::unwrap).collect();
        assert_eq!(told, [true, true, true, false, true]);
        let a = s.get_call(a.id).await.unwrap();
        assert_eq!(a.status, CallStatus::Completed);
        assert_eq!(
            (a.dialed_at, a.answered_at, a.ended_at),
            (Some(1_000), Some(1_200), Some(1_400))
        );
        assert_eq!(a.sip_call_id, Some(format!("sip-{}", a.id)));
        let b = s.get_call(b.id).await.unwrap();
        assert_eq!(
            (b.status, b.ringing_at, b.dialed_at),
            (CallStatus::Ringing, Some(1_100), None)
        );
        let kinds = |events: Vec<Value>| -> Vec<(i64, String)> {
            events
                .iter()
                .map(|e| {
                    (
                        e["sequence"].as_i64().unwrap(),
                        e["type"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        assert_eq!(
            kinds(s.call_events(a.id).await.unwrap()),
            [
                (1, "call.queued".to_owned()),
                (2, "call.dialing".to_owned()),
                (3, "call.answered".to_owned()),
                (4, "call.ended".to_owned())
            ]
        );
        assert_eq!(
            kinds(s.call_events(b.id).await.unwrap()),
            [
                (1, "call.queued".to_owned()),
                (2, "call.ringing".to_owned())
            ]
        );
    }

    on_both!(a_group_of_steps_keeps_each_calls_order);

    /// Writes from many callers at once all commit and each gets its own answer; after
    /// `close`, what was queued is in and later writes are refused.
    async fn concurrent_writes_all_commit_and_close_refuses_later_ones(s: Storage) {
        let first = call(&s).await;
        let mut steps = tokio::task::JoinSet::new();
        for i in 0..50 {
            let (s, first) = (s.clone(), first.clone());
            steps.spawn(async move {
                let call = s
                    .insert_call(another(&first, &format!("+155500002{i:02}"), None))
                    .await
                    .unwrap();
                let advanced = s
                    .advance_call(call.id, CallStatus::Dialing, CallProgress::default())
                    .await
                    .unwrap();
                let repeated = s
                    .advance_call(call.id, CallStatus::Dialing, CallProgress::default())
                    .await
                    .unwrap();
                s.set_transcript(call.id, &serde_json::json!([{"role": "agent", "text": i}]))
                    .await
                    .unwrap();
                (call.id, advanced, repeated)
            });
        }
        for (id, advanced, repeated) in steps.join_all().await {
            assert!(
                advanced && !repeated,
                "one step forward, the repeat refused"
            );
            let call = s.get_call(id).await.unwrap();
            assert_eq!(call.status, CallStatus::Dialing);
            assert_eq!(call.transcript.as_array().map(Vec::len), Some(1));
        }
        let queued = s.set_answered_by(first.id, AnsweredBy::Human);
        let (queued, ()) = tokio::join!(queued, s.writer.close());
        queued.unwrap();
        assert!(matches!(
            s.set_answered_by(first.id, AnsweredBy::Machine).await,
            Err(StorageError::Closed)
        ));
    }

    on_both!(concurrent_writes_all_commit_and_close_refuses_later_ones);
    async fn idempotent_inserts_and_pagination(s: Storage) {
        let first = call(&s).await;
        let new = |to: &str| another(&first, to, None);
        let Inserted::New(a) = s
            .insert_call_once(new("+15550000001"), Some(("k1", "h1")))
            .await
            .unwrap()
        else {
            panic!("first use of a key writes a call");
        };
        let again = s
            .insert_call_once(new("+15550000001"), Some(("k1", "h1")))
            .await
            .unwrap();
        assert_eq!(again, Inserted::Existing(a.clone()));
        assert!(matches!(
            s.insert_call_once(new("+15550000002"), Some(("k1", "h2")))
                .await,
            Err(StorageError::Conflict {
                field: "Idempotency-Key",
                ..
            })
        ));
        for i in 0..5 {
            s.insert_call(new(&format!("+1555000010{i}")))
                .await
                .unwrap();
        }
        // 7 calls in all; pages of 3, newest first, no call twice or lost.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = s
                .list_calls(&CallFilter::default(), 3, cursor.as_deref())
                .await
                .unwrap();
            seen.extend(page.iter().map(|c| c.id));
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted, "uuid v7 order is creation order");
        let filtered = CallFilter {
            to: Some("+15550000001".into()),
            ..CallFilter::default()
        };
        let (page, next) = s.list_calls(&filtered, 10, None).await.unwrap();
        assert_eq!((page.len(), next), (1, None));
        assert!(matches!(
            s.list_calls(&CallFilter::default(), 3, Some("nope")).await,
            Err(StorageError::InvalidCursor { .. })
        ));
    }

    #[tokio::test]
    async fn file_database_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("dialtone-storage-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("d.db").display());
        let id = {
            let s = Storage::open(&url).await.unwrap();
            call(&s).await.id
        };
        let s = Storage::open(&url).await.unwrap();
        assert_eq!(s.get_call(id).await.unwrap().status, CallStatus::Queued);
        let _ = std::fs::remove_dir_all(dir);
    }
}

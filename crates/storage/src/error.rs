//! What goes wrong: [`StorageError`], and the crate's [`Result`].

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
        /// `trunk`, `number`, `agent`, `call`, `organization`, `key`.
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
    /// A provider that agents name (in their `llm`, `stt` or `tts` settings) cannot be deleted,
    /// nor renamed while they name it by its name.
    #[error(
        "provider {provider:?} cannot be {action}: the agents {} name it in their llm, stt or tts settings",
        quoted(agents)
    )]
    ProviderInUse {
        /// The provider's name.
        provider: String,
        /// `deleted` or `renamed`.
        action: &'static str,
        /// The names of the agents that name it.
        agents: Vec<String>,
    },
    /// The key to bootstrap as the operator's was revoked; it stays revoked.
    #[error("the operator key to bootstrap (key {id}) was revoked; configure a new one")]
    KeyRevoked {
        /// The revoked key.
        id: String,
    },
    /// Another running process holds this node's lease: two processes under one node id would
    /// take each other's calls for their own.
    #[error(
        "node id {node:?} is in use: another running process holds its lease (give each node \
         its own DIALTONE_NODE_ID)"
    )]
    NodeIdInUse {
        /// The node id.
        node: String,
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
    /// A recording could not be stored, read or removed.
    #[error("recording {id}: {source}")]
    Recording {
        /// The recording (or the store's directory).
        id: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The object store (S3) refused or failed a recording's operation, or its settings.
    #[error("recording store {id}: {source}")]
    ObjectStore {
        /// The recording (or the bucket, for the store's settings).
        id: String,
        /// What failed.
        #[source]
        source: object_store::Error,
    },
}

/// `names` quoted and joined with commas.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StorageError>;

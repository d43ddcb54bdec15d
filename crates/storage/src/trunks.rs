//! SIP trunks: what calls go out through. The digest password is stored but shown neither by
//! `Debug` nor by the API (whose view has no such field); a name is unique within its organisation; a trunk a number still uses
//! cannot be deleted. Tested with numbers and agents, in `agents.rs`.

use dialtone_model::Network;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::{opt_u32, org_of, parse_req, unique_violation, uuid_of};
use crate::{Result, Storage, StorageError, now_ms};

pub use dialtone_model::{Codec, SrtpMode, TrunkTransport};

/// A SIP trunk. The password is not shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
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
    /// Digest password (write-only on the API: its view has no such field).
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
    /// Networks calls to its numbers may also come from ([`Storage::set_inbound_cidrs`]).
    pub inbound_cidrs: Vec<Network>,
    /// TLS, SRTP and the transfer allow-list.
    pub security: TrunkSecurity,
    /// The codecs to offer, best first; `None`: [`Codec::DEFAULT_PREFERENCE`].
    pub codecs: Option<Vec<Codec>>,
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
    /// TLS, SRTP and the transfer allow-list.
    pub security: TrunkSecurity,
    /// The codecs to offer, best first; `None`: the default preference.
    pub codecs: Option<Vec<Codec>>,
}

/// A trunk's security settings: TLS, SRTP, and where transfers may go (no open relay).
/// `Debug` hides the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct TrunkSecurity {
    /// PEM certificates trusted instead of the system's roots.
    pub tls_ca_pem: Option<String>,
    /// Whether the trunk's certificate is verified (`false` only for tests).
    pub tls_verify: bool,
    /// PEM client certificate chain (mutual TLS).
    pub tls_client_cert_pem: Option<String>,
    /// PEM private key of the client certificate (write-only on the API).
    pub tls_client_key_pem: Option<String>,
    /// Media encryption.
    pub srtp: SrtpMode,
    /// Hosts besides the trunk's that `sip:` transfer destinations may name (no open relay).
    pub transfer_sip_domains: Vec<String>,
}

impl Default for TrunkSecurity {
    fn default() -> Self {
        Self {
            tls_ca_pem: None,
            tls_verify: true,
            tls_client_cert_pem: None,
            tls_client_key_pem: None,
            srtp: SrtpMode::Off,
            transfer_sip_domains: Vec::new(),
        }
    }
}

impl std::fmt::Debug for TrunkSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkSecurity")
            .field("tls_ca_pem", &self.tls_ca_pem.is_some())
            .field("tls_verify", &self.tls_verify)
            .field("tls_client_cert_pem", &self.tls_client_cert_pem.is_some())
            .field("tls_client_key_pem", &redacted(&self.tls_client_key_pem))
            .field("srtp", &self.srtp)
            .field("transfer_sip_domains", &self.transfer_sip_domains)
            .finish()
    }
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
            .field("security", &self.security)
            .field("codecs", &self.codecs)
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

impl Trunk {
    /// The codecs its calls offer, best first: its own list, else the default preference.
    pub fn offered_codecs(&self) -> &[Codec] {
        self.codecs.as_deref().unwrap_or(Codec::DEFAULT_PREFERENCE)
    }
}

/// The `codecs` column's text: wire names, comma-separated, best first.
fn codecs_text(codecs: &[Codec]) -> String {
    codecs
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The codecs the `codecs` column names.
fn codecs_of(text: &str) -> Result<Vec<Codec>> {
    text.split(',')
        .map(|name| {
            name.parse()
                .map_err(|e: dialtone_model::UnknownName| StorageError::Corrupt {
                    column: "trunks.codecs",
                    detail: e.to_string(),
                })
        })
        .collect()
}

/// The transfer allow-list as stored: a JSON array of host names.
fn domains_text(domains: &[String]) -> Result<String> {
    serde_json::to_string(domains).map_err(|e| StorageError::Corrupt {
        column: "trunks.transfer_sip_domains",
        detail: e.to_string(),
    })
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

impl Storage {
    /// Creates a trunk of organisation `org`.
    pub async fn create_trunk(&self, org: Uuid, t: NewTrunk) -> Result<Trunk> {
        let now = now_ms();
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO trunks (id, name, host, port, transport, username, password, realm, \
             from_domain, max_concurrent_calls, max_calls_per_second, created_at, updated_at, \
             org_id, register, tls_ca_pem, tls_verify, tls_client_cert_pem, tls_client_key_pem, \
             srtp, codecs, transfer_sip_domains) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22)",
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
        .bind(&t.security.tls_ca_pem)
        .bind(i64::from(t.security.tls_verify))
        .bind(&t.security.tls_client_cert_pem)
        .bind(&t.security.tls_client_key_pem)
        .bind(t.security.srtp.as_str())
        .bind(t.codecs.as_deref().map(codecs_text))
        .bind(domains_text(&t.security.transfer_sip_domains)?)
        .execute(&self.pool)
        .await
        .map_err(trunk_name_taken)?;
        self.get_trunk(id).await
    }

    fn trunk_from(row: &AnyRow) -> Result<Trunk> {
        let transport: String = row.try_get("transport")?;
        let srtp: String = row.try_get("srtp")?;
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
            transport: transport
                .parse()
                .map_err(|e: dialtone_model::UnknownName| StorageError::Corrupt {
                    column: "trunks.transport",
                    detail: e.to_string(),
                })?,
            username: row.try_get("username")?,
            password: row.try_get("password")?,
            realm: row.try_get("realm")?,
            from_domain: row.try_get("from_domain")?,
            max_concurrent_calls: opt_u32(row, "max_concurrent_calls")?,
            max_calls_per_second: opt_u32(row, "max_calls_per_second")?,
            register: row.try_get::<i64, _>("register")? != 0,
            inbound_cidrs: crate::inbound::networks_of(row)?,
            security: TrunkSecurity {
                tls_ca_pem: row.try_get("tls_ca_pem")?,
                tls_verify: row.try_get::<i64, _>("tls_verify")? != 0,
                tls_client_cert_pem: row.try_get("tls_client_cert_pem")?,
                tls_client_key_pem: row.try_get("tls_client_key_pem")?,
                srtp: srtp.parse().map_err(|e: dialtone_model::UnknownName| {
                    StorageError::Corrupt {
                        column: "trunks.srtp",
                        detail: e.to_string(),
                    }
                })?,
                transfer_sip_domains: parse_req(row, "transfer_sip_domains", |t| {
                    serde_json::from_str::<Vec<String>>(t)
                })?,
            },
            codecs: row
                .try_get::<Option<String>, _>("codecs")?
                .as_deref()
                .map(codecs_of)
                .transpose()?,
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
             max_calls_per_second = $10, register = $11, updated_at = $12, tls_ca_pem = $13, \
             tls_verify = $14, tls_client_cert_pem = $15, tls_client_key_pem = $16, srtp = $17, \
             codecs = $18, transfer_sip_domains = $19 WHERE id = $20",
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
        .bind(&t.security.tls_ca_pem)
        .bind(i64::from(t.security.tls_verify))
        .bind(&t.security.tls_client_cert_pem)
        .bind(&t.security.tls_client_key_pem)
        .bind(t.security.srtp.as_str())
        .bind(t.codecs.as_deref().map(codecs_text))
        .bind(domains_text(&t.security.transfer_sip_domains)?)
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
}

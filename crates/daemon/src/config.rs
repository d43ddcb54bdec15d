//! The daemon's configuration: a TOML file (`--config`) whose every key an environment
//! variable overrides. The file's key is the variable's name without `DIALTONE_`, in lower
//! case (`rtp_ports` ↔ `DIALTONE_RTP_PORTS`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dialtone_engine::outbound::PrivateDestinations;

use crate::DaemonError;

/// Every setting: its variable, default (`None`: required or derived) and meaning.
pub const SETTINGS: &[(&str, Option<&str>, &str)] = &[
    (
        "DIALTONE_HTTP_ADDR",
        Some("127.0.0.1:8080"),
        "HTTP API, metrics (operator key) and health",
    ),
    (
        "DIALTONE_METRICS_ADDR",
        None,
        "also serve `/metrics` here without a key, for Prometheus on a private network (empty: not)",
    ),
    (
        "DIALTONE_GRPC_ADDR",
        Some("127.0.0.1:9090"),
        "gRPC API, gRPC health and reflection",
    ),
    (
        "DIALTONE_SIP_ADDR",
        Some("0.0.0.0:5060"),
        "SIP over UDP and TCP",
    ),
    (
        "DIALTONE_SIP_ADVERTISED_ADDR",
        None,
        "`host[:port]` written in Via/Contact and SDP (default: the SIP address)",
    ),
    (
        "DIALTONE_SIP_TLS_ADDR",
        None,
        "SIP over TLS listener, for requests TLS trunks send us (empty: none; TLS trunks then answer only over the connections Dialtone opens)",
    ),
    (
        "DIALTONE_SIP_TLS_CERT",
        None,
        "PEM file of the TLS listener's certificate chain (with DIALTONE_SIP_TLS_ADDR)",
    ),
    (
        "DIALTONE_SIP_TLS_KEY",
        None,
        "PEM file of the TLS listener's private key (with DIALTONE_SIP_TLS_ADDR)",
    ),
    (
        "DIALTONE_SIP_TLS_ADVERTISED_PORT",
        None,
        "the TLS listener's public port for Via and Contact, when a NAT or forward maps it (default: its own)",
    ),
    ("DIALTONE_RTP_PORTS", Some("20000-20999"), "RTP port range"),
    (
        "DIALTONE_DATA_DIR",
        Some("dialtone-data"),
        "where the SQLite file and the call recordings (`recordings/`) live",
    ),
    (
        "DIALTONE_DATABASE_URL",
        None,
        "`sqlite://…` or `postgres://…` (default: SQLite in the data dir)",
    ),
    (
        "DIALTONE_API_KEY",
        None,
        "required: the operator key (manages every organisation; stored hashed)",
    ),
    (
        "DIALTONE_WEBHOOK_SECRET",
        None,
        "required: HMAC key of the `Dialtone-Signature` header",
    ),
    (
        "DIALTONE_WEBHOOK_ALLOW_PRIVATE",
        Some("false"),
        "let tenants point the daemon at every loopback/private address (the older, all-or-nothing form of DIALTONE_PRIVATE_DESTINATIONS)",
    ),
    (
        "DIALTONE_PRIVATE_DESTINATIONS",
        None,
        "the private networks tenants' webhooks, tools and brains may reach: `all`, or a comma list like `10.1.0.0/16,127.0.0.1` (empty: none)",
    ),
    (
        "DIALTONE_BRAIN_ADDR",
        Some("builtin:ivr"),
        "brain of agents that name none",
    ),
    (
        "DIALTONE_LOG",
        Some("info"),
        "log filter (`tracing` syntax)",
    ),
    ("DIALTONE_LOG_FORMAT", Some("text"), "`text` or `json`"),
    (
        "DIALTONE_MEDIA_WORKERS",
        Some("0"),
        "media threads; 0 is one per core",
    ),
    (
        "DIALTONE_SPEECH_THREADS",
        Some("0"),
        "threads of the speech loops and brains, apart from the API and signalling; 0 is one per core",
    ),
    (
        "DIALTONE_MEDIA_REALTIME",
        Some("true"),
        "run media threads under SCHED_FIFO (falls back, with a warning, where not permitted)",
    ),
    (
        "DIALTONE_RTP_TIMEOUT_SECONDS",
        Some("30"),
        "end an answered call whose far end sent no RTP for this long",
    ),
    (
        "DIALTONE_QUEUE_TIMEOUT_SECONDS",
        Some("60"),
        "how long a call waits in `queued` under its organisation's and trunk's caps",
    ),
    (
        "DIALTONE_ORG_MAX_CONCURRENT_CALLS",
        Some("0"),
        "concurrency cap of organisations that set none (0: none)",
    ),
    (
        "DIALTONE_SIP_T1_MS",
        Some("500"),
        "SIP timer T1; an unanswered INVITE times out after 64·T1",
    ),
    (
        "DIALTONE_DRAIN_TIMEOUT_SECONDS",
        Some("30"),
        "on SIGTERM/SIGINT, how long live calls may go on before `engine_shutdown` ends them",
    ),
    (
        "DIALTONE_NODE_ID",
        None,
        "this node's id in a shared database: its calls are its own (default: a new id each start)",
    ),
    (
        "DIALTONE_NODE_LEASE_SECONDS",
        Some("15"),
        "the node's lease, renewed every third of it; a node that misses it is lost and a survivor closes its calls (`node_lost`)",
    ),
    (
        "DIALTONE_RECORDING_RETENTION_DAYS",
        None,
        "days a call's recording is kept after the call ended, then removed by a background job (unset: kept until deleted)",
    ),
    (
        "DIALTONE_RECORDING_S3_BUCKET",
        None,
        "keep recordings in this bucket of an S3-compatible object store, shared by every node (unset: the data directory's `recordings/`)",
    ),
    (
        "DIALTONE_RECORDING_S3_PREFIX",
        None,
        "prepended to each recording's object name in the bucket, like `recordings/` (empty: none)",
    ),
    (
        "DIALTONE_RECORDING_S3_ENDPOINT",
        None,
        "URL of an S3-compatible service (MinIO, Ceph, R2…; path-style requests) (unset: AWS S3 of the region)",
    ),
    (
        "DIALTONE_RECORDING_S3_REGION",
        Some("us-east-1"),
        "the bucket's region",
    ),
    (
        "DIALTONE_RECORDING_S3_ACCESS_KEY_ID",
        None,
        "access key id, with DIALTONE_RECORDING_S3_SECRET_ACCESS_KEY (unset: the usual AWS sources — `AWS_*` variables, the instance's role)",
    ),
    (
        "DIALTONE_RECORDING_S3_SECRET_ACCESS_KEY",
        None,
        "secret access key, with DIALTONE_RECORDING_S3_ACCESS_KEY_ID",
    ),
    (
        "DIALTONE_RECORDING_S3_ALLOW_HTTP",
        Some("false"),
        "allow a plain `http://` endpoint (a loopback or private test service)",
    ),
    (
        "DIALTONE_RECORDING_S3_SSE",
        None,
        "server-side encryption asked for on every upload: `AES256`, `aws:kms` or `aws:kms:dsse` (unset: the bucket's default)",
    ),
    (
        "DIALTONE_RECORDING_S3_MAX_RETRIES",
        Some("10"),
        "retries of a failed object store request, with exponential backoff (within 60 s)",
    ),
];

/// The SIP over TLS listener: where, and the PEM files of its certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTls {
    /// Listen address.
    pub addr: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// The port Via and Contact name for it, when it is reached through another (NAT).
    pub advertised_port: Option<u16>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// Where `/metrics` is also served, without a key (a private network's scraper).
    pub metrics_addr: Option<SocketAddr>,
    /// gRPC API address.
    pub grpc_addr: SocketAddr,
    /// SIP address (UDP and TCP).
    pub sip_addr: SocketAddr,
    /// Advertised SIP host and port.
    pub sip_advertised: Option<(String, Option<u16>)>,
    /// The SIP over TLS listener, when configured.
    pub sip_tls: Option<SipTls>,
    /// RTP port range.
    pub rtp_ports: (u16, u16),
    /// Storage URL.
    pub database_url: String,
    /// Where call recordings are kept (the data directory's `recordings/`).
    pub recording_dir: PathBuf,
    /// How long a recording is kept after its call ended (`None`: until deleted).
    pub recording_retention: Option<Duration>,
    /// The S3-compatible bucket recordings are kept in (`None`: `recording_dir`, which is
    /// then only where they are written before upload).
    pub recording_s3: Option<dialtone_storage::S3Settings>,
    /// API key.
    pub api_key: String,
    /// Default brain.
    pub default_brain: String,
    /// Webhook signing key.
    pub webhook_secret: String,
    /// Deliver webhooks to loopback, private and link-local addresses.
    pub private_destinations: PrivateDestinations,
    /// Media worker threads (0: one per core).
    pub media_workers: usize,
    /// Threads of the calls' speech loops and brains (0: one per core).
    pub speech_threads: usize,
    /// Media workers ask for real-time scheduling (SCHED_FIFO at the lowest real-time
    /// priority), so a busy machine's other threads cannot delay a 20 ms tick; and the speech
    /// threads for nice −10, so they keep up with the audio ahead of signalling and storage.
    pub media_realtime: bool,
    /// A call whose far end sends no RTP for this long is ended.
    pub rtp_timeout: Duration,
    /// How long a call may wait in `queued` for room under its organisation's and its
    /// trunk's caps.
    pub queue_timeout: Duration,
    /// The concurrency cap of organisations that set none.
    pub default_org_max_concurrent_calls: Option<u32>,
    /// SIP timer T1, the round-trip estimate every SIP timer derives from (Timer B, the
    /// INVITE timeout, is 64·T1).
    pub sip_t1: Duration,
    /// How long live calls may go on after a shutdown signal.
    pub drain_timeout: Duration,
    /// This node's id (its calls and its lease).
    pub node_id: String,
    /// The node's lease.
    pub node_lease: Duration,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

/// Where values come from: the environment first, then the file.
struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<(PathBuf, BTreeMap<String, String>)>,
}

impl Sources<'_> {
    /// The value of `key` and, when it came from the file, a note saying so.
    fn get(&self, key: &'static str) -> Option<(String, String)> {
        if let Some(v) = (self.env)(key).filter(|v| !v.trim().is_empty()) {
            return Some((v, String::new()));
        }
        let (path, table) = self.file.as_ref()?;
        let name = file_key(key);
        let v = table.get(&name)?.clone();
        Some((v, format!(" (`{name}` in {})", path.display())))
    }

    fn or_default(&self, key: &'static str) -> (String, String) {
        self.get(key).unwrap_or_else(|| {
            let default = SETTINGS
                .iter()
                .find(|(k, ..)| *k == key)
                .and_then(|(_, d, _)| *d)
                .unwrap_or_default();
            (default.to_owned(), String::new())
        })
    }

    fn parse<T: std::str::FromStr>(&self, key: &'static str, rule: &str) -> Result<T, DaemonError> {
        let (value, from) = self.or_default(key);
        value.trim().parse().map_err(|_| DaemonError::Config {
            key,
            problem: format!("{value:?}{from} is not {rule}"),
        })
    }

    fn required(&self, key: &'static str, why: &str) -> Result<String, DaemonError> {
        self.get(key)
            .map(|(v, _)| v)
            .ok_or_else(|| DaemonError::Config {
                key,
                problem: format!("is required: {why}"),
            })
    }

    fn seconds(&self, key: &'static str) -> Result<Duration, DaemonError> {
        Ok(Duration::from_secs(
            self.parse(key, "a whole number of seconds")?,
        ))
    }
}

/// The `DIALTONE_RECORDING_S3_*` settings: none without a bucket; a key id and its secret
/// together; `http://` only when allowed.
fn recording_s3(
    sources: &Sources<'_>,
) -> Result<Option<dialtone_storage::S3Settings>, DaemonError> {
    let set = |key| {
        sources
            .get(key)
            .map(|(v, _)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let Some(bucket) = set("DIALTONE_RECORDING_S3_BUCKET") else {
        let stray = SETTINGS
            .iter()
            .map(|(k, ..)| *k)
            .find(|k| k.starts_with("DIALTONE_RECORDING_S3_") && set(k).is_some());
        return match stray {
            Some(key) => Err(DaemonError::Config {
                key,
                problem: "is set without DIALTONE_RECORDING_S3_BUCKET".into(),
            }),
            None => Ok(None),
        };
    };
    let access_key_id = set("DIALTONE_RECORDING_S3_ACCESS_KEY_ID");
    let secret_access_key = set("DIALTONE_RECORDING_S3_SECRET_ACCESS_KEY");
    if access_key_id.is_some() != secret_access_key.is_some() {
        let key = match access_key_id {
            Some(_) => "DIALTONE_RECORDING_S3_SECRET_ACCESS_KEY",
            None => "DIALTONE_RECORDING_S3_ACCESS_KEY_ID",
        };
        return Err(DaemonError::Config {
            key,
            problem: "is required with the other half of the S3 credentials".into(),
        });
    }
    let allow_http: bool = sources.parse("DIALTONE_RECORDING_S3_ALLOW_HTTP", "true or false")?;
    let endpoint = set("DIALTONE_RECORDING_S3_ENDPOINT");
    if let Some(endpoint) = &endpoint {
        let plain = endpoint.starts_with("http://");
        if !plain && !endpoint.starts_with("https://") {
            return Err(DaemonError::Config {
                key: "DIALTONE_RECORDING_S3_ENDPOINT",
                problem: format!("{endpoint:?} is not an http:// or https:// URL"),
            });
        }
        if plain && !allow_http {
            return Err(DaemonError::Config {
                key: "DIALTONE_RECORDING_S3_ENDPOINT",
                problem: format!(
                    "{endpoint:?} is plain HTTP: set DIALTONE_RECORDING_S3_ALLOW_HTTP=true to allow it"
                ),
            });
        }
    }
    let server_side_encryption = set("DIALTONE_RECORDING_S3_SSE");
    if let Some(sse) = &server_side_encryption
        && !["AES256", "aws:kms", "aws:kms:dsse"].contains(&sse.as_str())
    {
        return Err(DaemonError::Config {
            key: "DIALTONE_RECORDING_S3_SSE",
            problem: format!("{sse:?} is not AES256, aws:kms or aws:kms:dsse"),
        });
    }
    Ok(Some(dialtone_storage::S3Settings {
        bucket,
        prefix: set("DIALTONE_RECORDING_S3_PREFIX").unwrap_or_default(),
        endpoint,
        region: Some(sources.or_default("DIALTONE_RECORDING_S3_REGION").0),
        access_key_id,
        secret_access_key,
        allow_http,
        server_side_encryption,
        max_retries: sources.parse(
            "DIALTONE_RECORDING_S3_MAX_RETRIES",
            "a whole number of retries",
        )?,
    }))
}

/// `DIALTONE_NODE_ID`: 1-64 letters, digits, `-`, `_` or `.`; a new UUID when unset.
fn node_id(sources: &Sources<'_>) -> Result<String, DaemonError> {
    let Some((id, from)) = sources.get("DIALTONE_NODE_ID") else {
        return Ok(uuid::Uuid::now_v7().to_string());
    };
    let id = id.trim();
    let fits = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits {
        Ok(id.to_owned())
    } else {
        Err(DaemonError::Config {
            key: "DIALTONE_NODE_ID",
            problem: format!("{id:?}{from} is not 1-64 letters, digits, `-`, `_` or `.`"),
        })
    }
}

/// `DIALTONE_PRIVATE_DESTINATIONS`, or everything when `DIALTONE_WEBHOOK_ALLOW_PRIVATE` is true.
fn private_destinations(sources: &Sources<'_>) -> Result<PrivateDestinations, DaemonError> {
    if sources.parse::<bool>("DIALTONE_WEBHOOK_ALLOW_PRIVATE", "true or false")? {
        return Ok(PrivateDestinations::All);
    }
    let (list, from) = sources.or_default("DIALTONE_PRIVATE_DESTINATIONS");
    match list.trim() {
        "" => Ok(PrivateDestinations::None),
        "all" => Ok(PrivateDestinations::All),
        list => list
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<_>, String>>()
            .map(PrivateDestinations::Only)
            .map_err(|problem| DaemonError::Config {
                key: "DIALTONE_PRIVATE_DESTINATIONS",
                problem: format!("{problem}{from}"),
            }),
    }
}

/// `DIALTONE_RTP_PORTS` → `rtp_ports`.
fn file_key(key: &str) -> String {
    key.trim_start_matches("DIALTONE_").to_ascii_lowercase()
}

/// Reads the TOML file: a flat table of the known keys, values as strings, numbers or booleans.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, DaemonError> {
    let problem = |problem: String| DaemonError::ConfigFile {
        path: path.to_owned(),
        problem,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read it: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| problem(format!("not TOML: {e}")))?;
    let mut values = BTreeMap::new();
    for (name, value) in table {
        if !SETTINGS.iter().any(|(k, ..)| file_key(k) == name) {
            let known: Vec<String> = SETTINGS.iter().map(|(k, ..)| file_key(k)).collect();
            return Err(problem(format!(
                "unknown key `{name}` (known: {})",
                known.join(", ")
            )));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(problem(format!(
                    "`{name}` is a {}, not a string, number or boolean",
                    other.type_str()
                )));
            }
        };
        values.insert(name, text);
    }
    Ok(values)
}

impl Config {
    /// Reads `DIALTONE_*` variables over the TOML file at `file`, if any.
    pub fn load(file: Option<&Path>) -> Result<Self, DaemonError> {
        Self::load_from(file, &|key| std::env::var(key).ok())
    }

    /// [`Config::load`] with the variables from `env` instead of the process environment.
    pub fn load_from(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, DaemonError> {
        let sources = Sources {
            env,
            file: file
                .map(|p| read_file(p).map(|t| (p.to_owned(), t)))
                .transpose()?,
        };
        let addr =
            |key: &'static str| sources.parse::<SocketAddr>(key, "an address like 127.0.0.1:8080");
        let (rtp, from) = sources.or_default("DIALTONE_RTP_PORTS");
        let rtp_ports = rtp
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .filter(|(a, b): &(u16, u16)| a < b && a % 2 == 0)
            .ok_or_else(|| DaemonError::Config {
                key: "DIALTONE_RTP_PORTS",
                problem: format!(
                    "{rtp:?}{from} is not a range like 20000-20999 (first port even, below the last)"
                ),
            })?;
        let sip_advertised =
            sources
                .get("DIALTONE_SIP_ADVERTISED_ADDR")
                .map(|(a, _)| match a.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                        (h.to_owned(), p.parse().ok())
                    }
                    _ => (a.clone(), None),
                });
        let recording_dir =
            PathBuf::from(sources.or_default("DIALTONE_DATA_DIR").0).join("recordings");
        let recording_retention = match sources.get("DIALTONE_RECORDING_RETENTION_DAYS") {
            None => None,
            Some((days, from)) => Some(
                days.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| *d > 0)
                    .map(|d| Duration::from_secs(u64::from(d) * 86_400))
                    .ok_or_else(|| DaemonError::Config {
                        key: "DIALTONE_RECORDING_RETENTION_DAYS",
                        problem: format!(
                            "{days:?}{from} is not a whole number of days (1 or more)"
                        ),
                    })?,
            ),
        };
        let database_url = match sources.get("DIALTONE_DATABASE_URL") {
            Some((url, from)) => {
                if !url.starts_with("sqlite:") && !url.starts_with("postgres") {
                    return Err(DaemonError::Config {
                        key: "DIALTONE_DATABASE_URL",
                        problem: format!("{url:?}{from} is neither sqlite://… nor postgres://…"),
                    });
                }
                url
            }
            None => {
                let (dir, from) = sources.or_default("DIALTONE_DATA_DIR");
                let data_dir = PathBuf::from(dir);
                std::fs::create_dir_all(&data_dir).map_err(|e| DaemonError::Config {
                    key: "DIALTONE_DATA_DIR",
                    problem: format!("cannot create {}{from}: {e}", data_dir.display()),
                })?;
                format!("sqlite://{}", data_dir.join("dialtone.db").display())
            }
        };
        let (format, from) = sources.or_default("DIALTONE_LOG_FORMAT");
        let log_format = match format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(DaemonError::Config {
                    key: "DIALTONE_LOG_FORMAT",
                    problem: format!("{other:?}{from} is not text or json"),
                });
            }
        };
        let (log, _) = sources.or_default("DIALTONE_LOG");
        let sip_t1_ms: u64 =
            sources.parse("DIALTONE_SIP_T1_MS", "a whole number of milliseconds")?;
        if sip_t1_ms == 0 {
            return Err(DaemonError::Config {
                key: "DIALTONE_SIP_T1_MS",
                problem: "must be at least 1".into(),
            });
        }
        let rtp_timeout = sources.seconds("DIALTONE_RTP_TIMEOUT_SECONDS")?;
        if rtp_timeout.is_zero() {
            return Err(DaemonError::Config {
                key: "DIALTONE_RTP_TIMEOUT_SECONDS",
                problem: "must be at least 1".into(),
            });
        }
        let node_lease = sources.seconds("DIALTONE_NODE_LEASE_SECONDS")?;
        if node_lease < Duration::from_secs(3) {
            return Err(DaemonError::Config {
                key: "DIALTONE_NODE_LEASE_SECONDS",
                problem: "must be at least 3 (it is renewed every third of it)".into(),
            });
        }
        let sip_tls = match sources.or_default("DIALTONE_SIP_TLS_ADDR").0.trim() {
            "" => None,
            _ => Some(SipTls {
                addr: addr("DIALTONE_SIP_TLS_ADDR")?,
                cert: sources
                    .required("DIALTONE_SIP_TLS_CERT", "the TLS listener presents it")?
                    .into(),
                key: sources
                    .required("DIALTONE_SIP_TLS_KEY", "the TLS listener's private key")?
                    .into(),
                advertised_port: match sources.get("DIALTONE_SIP_TLS_ADVERTISED_PORT") {
                    None => None,
                    Some((port, from)) => Some(
                        port.trim()
                            .parse()
                            .ok()
                            .filter(|p: &u16| *p > 0)
                            .ok_or_else(|| DaemonError::Config {
                                key: "DIALTONE_SIP_TLS_ADVERTISED_PORT",
                                problem: format!("{port:?}{from} is not a port (1-65535)"),
                            })?,
                    ),
                },
            }),
        };
        if sip_tls.is_none() && sources.get("DIALTONE_SIP_TLS_ADVERTISED_PORT").is_some() {
            return Err(DaemonError::Config {
                key: "DIALTONE_SIP_TLS_ADVERTISED_PORT",
                problem: "needs the TLS listener it advertises (DIALTONE_SIP_TLS_ADDR)".into(),
            });
        }
        Ok(Self {
            http_addr: addr("DIALTONE_HTTP_ADDR")?,
            metrics_addr: match sources.or_default("DIALTONE_METRICS_ADDR").0.trim() {
                "" => None,
                _ => Some(addr("DIALTONE_METRICS_ADDR")?),
            },
            grpc_addr: addr("DIALTONE_GRPC_ADDR")?,
            sip_addr: addr("DIALTONE_SIP_ADDR")?,
            sip_advertised,
            sip_tls,
            rtp_ports,
            database_url,
            recording_dir,
            recording_retention,
            recording_s3: recording_s3(&sources)?,
            api_key: sources.required("DIALTONE_API_KEY", "the bearer key clients use")?,
            default_brain: sources.or_default("DIALTONE_BRAIN_ADDR").0,
            webhook_secret: sources.required(
                "DIALTONE_WEBHOOK_SECRET",
                "the key webhook receivers verify signatures with",
            )?,
            private_destinations: private_destinations(&sources)?,
            media_workers: sources.parse(
                "DIALTONE_MEDIA_WORKERS",
                "a count of threads (0: one per core)",
            )?,
            speech_threads: sources.parse(
                "DIALTONE_SPEECH_THREADS",
                "a count of threads (0: one per core)",
            )?,
            media_realtime: sources.parse("DIALTONE_MEDIA_REALTIME", "true or false")?,
            rtp_timeout,
            queue_timeout: sources.seconds("DIALTONE_QUEUE_TIMEOUT_SECONDS")?,
            default_org_max_concurrent_calls: Some(sources.parse::<u32>(
                "DIALTONE_ORG_MAX_CONCURRENT_CALLS",
                "a whole number of calls (0: no cap)",
            )?)
            .filter(|cap| *cap > 0),
            sip_t1: Duration::from_millis(sip_t1_ms),
            drain_timeout: sources.seconds("DIALTONE_DRAIN_TIMEOUT_SECONDS")?,
            node_id: node_id(&sources)?,
            node_lease,
            log,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn required() -> Vec<(&'static str, &'static str)> {
        vec![
            ("DIALTONE_API_KEY", "k"),
            ("DIALTONE_WEBHOOK_SECRET", "s"),
            ("DIALTONE_DATABASE_URL", "sqlite::memory:"),
        ]
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        let mut all = required();
        all.extend_from_slice(pairs);
        Config::load_from(None, &env(&all)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_hold_when_only_the_required_keys_are_set() {
        let c = Config::load_from(None, &env(&required())).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.rtp_ports, (20000, 20999));
        assert_eq!(c.sip_t1, Duration::from_millis(500));
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.node_lease, Duration::from_secs(15));
        assert_ne!(
            c.node_id,
            Config::load_from(None, &env(&required())).unwrap().node_id,
            "a new node id each start"
        );
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.default_brain, "builtin:ivr");
        assert!(c.media_realtime);
        assert_eq!(c.default_org_max_concurrent_calls, None);
        assert_eq!(c.recording_dir, PathBuf::from("dialtone-data/recordings"));
        assert_eq!(c.recording_retention, None);
        let mut kept = required();
        kept.push(("DIALTONE_RECORDING_RETENTION_DAYS", "30"));
        let c = Config::load_from(None, &env(&kept)).unwrap();
        assert_eq!(
            c.recording_retention,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(c.recording_s3, None);
        let mut capped = required();
        capped.push(("DIALTONE_ORG_MAX_CONCURRENT_CALLS", "25"));
        let c = Config::load_from(None, &env(&capped)).unwrap();
        assert_eq!(c.default_org_max_concurrent_calls, Some(25));
    }

    #[test]
    fn an_s3_bucket_keeps_the_recordings_with_its_settings_checked() {
        let mut s3 = required();
        s3.extend([
            ("DIALTONE_RECORDING_S3_BUCKET", "calls"),
            ("DIALTONE_RECORDING_S3_PREFIX", "rec/"),
            ("DIALTONE_RECORDING_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("DIALTONE_RECORDING_S3_ALLOW_HTTP", "true"),
            ("DIALTONE_RECORDING_S3_ACCESS_KEY_ID", "id"),
            ("DIALTONE_RECORDING_S3_SECRET_ACCESS_KEY", "secret"),
            ("DIALTONE_RECORDING_S3_SSE", "AES256"),
        ]);
        let c = Config::load_from(None, &env(&s3)).unwrap();
        assert_eq!(
            c.recording_s3,
            Some(dialtone_storage::S3Settings {
                bucket: "calls".into(),
                prefix: "rec/".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into()),
                access_key_id: Some("id".into()),
                secret_access_key: Some("secret".into()),
                allow_http: true,
                server_side_encryption: Some("AES256".into()),
                max_retries: 10,
            })
        );
        let without = |key: &str| -> Vec<(&str, &str)> {
            s3.iter().copied().filter(|(k, _)| *k != key).collect()
        };
        let refused = |pairs: &[(&str, &str)]| {
            Config::load_from(None, &env(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(
            refused(&without("DIALTONE_RECORDING_S3_BUCKET")).starts_with(
                "DIALTONE_RECORDING_S3_PREFIX: is set without DIALTONE_RECORDING_S3_BUCKET"
            )
        );
        assert!(
            refused(&without("DIALTONE_RECORDING_S3_ALLOW_HTTP"))
                .starts_with("DIALTONE_RECORDING_S3_ENDPOINT: ")
        );
        assert!(
            refused(&without("DIALTONE_RECORDING_S3_SECRET_ACCESS_KEY"))
                .starts_with("DIALTONE_RECORDING_S3_SECRET_ACCESS_KEY: is required")
        );
        let mut bad_sse = s3.clone();
        bad_sse.push(("DIALTONE_RECORDING_S3_SSE", "rot13"));
        assert!(refused(&bad_sse).starts_with("DIALTONE_RECORDING_S3_SSE: "));
        let mut bad_url = s3.clone();
        bad_url.push(("DIALTONE_RECORDING_S3_ENDPOINT", "127.0.0.1:9000"));
        assert!(refused(&bad_url).starts_with("DIALTONE_RECORDING_S3_ENDPOINT: "));
    }

    #[test]
    fn private_destinations_are_none_all_or_listed_networks() {
        let c = Config::load_from(None, &env(&required())).unwrap();
        assert_eq!(c.private_destinations, PrivateDestinations::None);
        let mut listed = required();
        listed.push(("DIALTONE_PRIVATE_DESTINATIONS", "10.1.0.0/16, 127.0.0.1"));
        let c = Config::load_from(None, &env(&listed)).unwrap();
        let PrivateDestinations::Only(networks) = &c.private_destinations else {
            panic!("a list: {:?}", c.private_destinations)
        };
        assert_eq!(networks.len(), 2);
        assert!(!c.private_destinations.refuses("10.1.2.3".parse().unwrap()));
        assert!(c.private_destinations.refuses("10.2.0.1".parse().unwrap()));
        assert!(
            error(&[("DIALTONE_PRIVATE_DESTINATIONS", "10.0.0.0/40")])
                .starts_with("DIALTONE_PRIVATE_DESTINATIONS: ")
        );
    }

    #[test]
    fn each_bad_value_is_named_with_its_rule() {
        for (pairs, expected) in [
            (
                vec![("DIALTONE_RTP_PORTS", "abc")],
                "DIALTONE_RTP_PORTS: \"abc\" is not a range",
            ),
            (
                vec![("DIALTONE_RTP_PORTS", "20001-20999")],
                "first port even",
            ),
            (
                vec![("DIALTONE_HTTP_ADDR", "localhost")],
                "DIALTONE_HTTP_ADDR: \"localhost\" is not an address",
            ),
            (
                vec![("DIALTONE_LOG_FORMAT", "xml")],
                "DIALTONE_LOG_FORMAT: \"xml\" is not text or json",
            ),
            (
                vec![("DIALTONE_SIP_T1_MS", "0")],
                "DIALTONE_SIP_T1_MS: must be at least 1",
            ),
            (
                vec![("DIALTONE_NODE_ID", "node one")],
                "DIALTONE_NODE_ID: \"node one\" is not 1-64 letters",
            ),
            (
                vec![("DIALTONE_NODE_LEASE_SECONDS", "2")],
                "DIALTONE_NODE_LEASE_SECONDS: must be at least 3",
            ),
            (
                vec![("DIALTONE_SIP_TLS_ADVERTISED_PORT", "5061")],
                "DIALTONE_SIP_TLS_ADVERTISED_PORT: needs the TLS listener",
            ),
            (
                vec![
                    ("DIALTONE_SIP_TLS_ADDR", "127.0.0.1:5061"),
                    ("DIALTONE_SIP_TLS_CERT", "c.pem"),
                    ("DIALTONE_SIP_TLS_KEY", "k.pem"),
                    ("DIALTONE_SIP_TLS_ADVERTISED_PORT", "70000"),
                ],
                "DIALTONE_SIP_TLS_ADVERTISED_PORT: \"70000\" is not a port",
            ),
            (
                vec![("DIALTONE_MEDIA_WORKERS", "-1")],
                "DIALTONE_MEDIA_WORKERS: \"-1\" is not a count",
            ),
            (
                vec![("DIALTONE_WEBHOOK_ALLOW_PRIVATE", "yes")],
                "DIALTONE_WEBHOOK_ALLOW_PRIVATE: \"yes\" is not true or false",
            ),
            (
                vec![("DIALTONE_DATABASE_URL", "mysql://x")],
                "DIALTONE_DATABASE_URL: \"mysql://x\" is neither",
            ),
            (
                vec![("DIALTONE_RECORDING_RETENTION_DAYS", "0")],
                "DIALTONE_RECORDING_RETENTION_DAYS: \"0\" is not a whole number of days",
            ),
        ] {
            let message = error(&pairs);
            assert!(message.contains(expected), "{pairs:?}: {message}");
        }
        let missing = Config::load_from(None, &env(&[])).unwrap_err().to_string();
        assert!(
            missing.starts_with("DIALTONE_API_KEY: is required"),
            "{missing}"
        );
    }

    #[test]
    fn the_file_gives_values_and_the_environment_overrides_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dialtone.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:8181\"\nrtp_ports = \"30000-30099\"\nmedia_workers = 2\n\
             webhook_allow_private = true\napi_key = \"from-file\"\nwebhook_secret = \"s\"\n\
             database_url = \"sqlite::memory:\"\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&path), &env(&[("DIALTONE_MEDIA_WORKERS", "3")])).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:8181".parse().unwrap());
        assert_eq!(c.rtp_ports, (30000, 30099));
        assert_eq!(c.media_workers, 3, "the environment wins");
        assert_eq!(c.private_destinations, PrivateDestinations::All);
        assert_eq!(c.api_key, "from-file");

        std::fs::write(
            &path,
            "rtp_ports = \"x\"\napi_key = \"k\"\nwebhook_secret = \"s\"\n",
        )
        .unwrap();
        let message = Config::load_from(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("DIALTONE_RTP_PORTS: \"x\" (`rtp_ports` in ")
                && message.contains("dialtone.toml"),
            "{message}"
        );

        std::fs::write(&path, "rtp_port = \"20000-20999\"\n").unwrap();
        let message = Config::load_from(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(message.contains("unknown key `rtp_port`"), "{message}");

        std::fs::write(&path, "http_addr = [1]\n").unwrap();
        let message = Config::load_from(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(message.contains("`http_addr` is a array"), "{message}");
    }
}

//! # dialtone-daemon — `dialtoned`
//!
//! Reads the configuration from `DIALTONE_*` environment variables ([`Config::from_env`]),
//! opens storage, binds SIP (UDP and TCP) and the HTTP API, and runs the engine until a signal.
//! [`Daemon::start`] does the same for tests, on ports the OS picks.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DIALTONE_HTTP_ADDR` | `127.0.0.1:8080` | HTTP API and health |
//! | `DIALTONE_GRPC_ADDR` | `127.0.0.1:9090` | gRPC API, gRPC health and reflection |
//! | `DIALTONE_SIP_ADDR` | `0.0.0.0:5060` | SIP over UDP and TCP |
//! | `DIALTONE_SIP_ADVERTISED_ADDR` | the SIP address | `host[:port]` written in Via/Contact and SDP |
//! | `DIALTONE_RTP_PORTS` | `20000-20999` | RTP port range |
//! | `DIALTONE_DATA_DIR` | `./dialtone-data` | where the SQLite file lives |
//! | `DIALTONE_DATABASE_URL` | `sqlite://<data dir>/dialtone.db` | storage: `sqlite://…` or `postgres://…` |
//! | `DIALTONE_API_KEY` | (required) | an admin key of the first organisation (stored hashed) |
//! | `DIALTONE_BRAIN_ADDR` | `builtin:ivr` | brain of agents that name none |
//! | `DIALTONE_WEBHOOK_SECRET` | (required) | HMAC key of the `Dialtone-Signature` header |
//! | `DIALTONE_WEBHOOK_ALLOW_PRIVATE` | `false` | deliver webhooks to loopback/private addresses |
//! | `DIALTONE_LOG` | `info` | log filter |
//! | `DIALTONE_LOG_FORMAT` | `text` | `text` or `json` |
//! | `DIALTONE_MEDIA_WORKERS` | `0` | media threads; 0 is one per core |
//! | `DIALTONE_RTP_TIMEOUT_SECONDS` | `30` | end a call whose far end sent no RTP for this long |
//! | `DIALTONE_QUEUE_TIMEOUT_SECONDS` | `60` | how long a call waits in `queued` under its organisation's and trunk's caps |
//! | `DIALTONE_SIP_T1_MS` | `500` | SIP timer T1; an unanswered INVITE times out after 64·T1 |

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dialtone_control::{ApiState, router};
use dialtone_engine::webhooks::{WebhookConfig, spawn_delivery};
use dialtone_engine::{Engine, EngineConfig};
use dialtone_sip_ua::{SipUa, UaConfig};
use dialtone_storage::Storage;

/// Errors starting the daemon; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A configuration value is missing or malformed.
    #[error("{key}: {problem}")]
    Config {
        /// The environment variable.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Storage could not be opened.
    #[error("DIALTONE_DATABASE_URL: {0}")]
    Storage(#[from] dialtone_storage::StorageError),
    /// SIP could not be bound.
    #[error("DIALTONE_SIP_ADDR: {0}")]
    Sip(#[from] dialtone_sip_ua::UaError),
    /// The media worker threads could not be started.
    #[error("DIALTONE_MEDIA_WORKERS: {0}")]
    Media(#[from] dialtone_media::MediaError),
    /// The gRPC listener could not be bound or set up.
    #[error("DIALTONE_GRPC_ADDR: cannot serve gRPC on {addr}: {detail}")]
    Grpc {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        detail: String,
    },
    /// The HTTP listener could not be bound.
    #[error("DIALTONE_HTTP_ADDR: cannot bind {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// gRPC API address.
    pub grpc_addr: SocketAddr,
    /// SIP address (UDP and TCP).
    pub sip_addr: SocketAddr,
    /// Advertised SIP host and port.
    pub sip_advertised: Option<(String, Option<u16>)>,
    /// RTP port range.
    pub rtp_ports: (u16, u16),
    /// Storage URL.
    pub database_url: String,
    /// API key.
    pub api_key: String,
    /// Default brain.
    pub default_brain: String,
    /// Webhook signing key.
    pub webhook_secret: String,
    /// Deliver webhooks to loopback, private and link-local addresses.
    pub webhook_allow_private: bool,
    /// Media worker threads (0: one per core).
    pub media_workers: usize,
    /// A call whose far end sends no RTP for this long is ended.
    pub rtp_timeout: Duration,
    /// How long a call may wait in `queued` for room under its organisation's and its
    /// trunk's caps.
    pub queue_timeout: Duration,
    /// SIP timer T1, the round-trip estimate every SIP timer derives from (Timer B, the
    /// INVITE timeout, is 64·T1).
    pub sip_t1: Duration,
}

fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn addr(key: &'static str, default: &str) -> Result<SocketAddr, DaemonError> {
    let value = var(key).unwrap_or_else(|| default.to_owned());
    value.parse().map_err(|_| DaemonError::Config {
        key,
        problem: format!("{value:?} is not an address like 127.0.0.1:8080"),
    })
}

fn number<T: std::str::FromStr>(
    key: &'static str,
    default: T,
    rule: &str,
) -> Result<T, DaemonError> {
    match var(key) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| DaemonError::Config {
            key,
            problem: format!("{value:?} is not {rule}"),
        }),
    }
}

impl Config {
    /// Reads `DIALTONE_*` variables.
    pub fn from_env() -> Result<Self, DaemonError> {
        let data_dir =
            PathBuf::from(var("DIALTONE_DATA_DIR").unwrap_or_else(|| "dialtone-data".into()));
        let rtp = var("DIALTONE_RTP_PORTS").unwrap_or_else(|| "20000-20999".into());
        let rtp_ports = rtp
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .filter(|(a, b): &(u16, u16)| a < b)
            .ok_or_else(|| DaemonError::Config {
                key: "DIALTONE_RTP_PORTS",
                problem: format!("{rtp:?} is not a range like 20000-20999"),
            })?;
        let sip_advertised =
            var("DIALTONE_SIP_ADVERTISED_ADDR").map(|a| match a.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                    (h.to_owned(), p.parse().ok())
                }
                _ => (a.clone(), None),
            });
        let database_url = match var("DIALTONE_DATABASE_URL") {
            Some(url) => url,
            None => {
                std::fs::create_dir_all(&data_dir).map_err(|e| DaemonError::Config {
                    key: "DIALTONE_DATA_DIR",
                    problem: format!("cannot create {}: {e}", data_dir.display()),
                })?;
                format!("sqlite://{}", data_dir.join("dialtone.db").display())
            }
        };
        Ok(Self {
            http_addr: addr("DIALTONE_HTTP_ADDR", "127.0.0.1:8080")?,
            grpc_addr: addr("DIALTONE_GRPC_ADDR", "127.0.0.1:9090")?,
            sip_addr: addr("DIALTONE_SIP_ADDR", "0.0.0.0:5060")?,
            sip_advertised,
            rtp_ports,
            database_url,
            api_key: var("DIALTONE_API_KEY").ok_or(DaemonError::Config {
                key: "DIALTONE_API_KEY",
                problem: "is required: the bearer key clients use".into(),
            })?,
            default_brain: var("DIALTONE_BRAIN_ADDR").unwrap_or_else(|| "builtin:ivr".into()),
            webhook_secret: var("DIALTONE_WEBHOOK_SECRET").ok_or(DaemonError::Config {
                key: "DIALTONE_WEBHOOK_SECRET",
                problem: "is required: the key webhook receivers verify signatures with".into(),
            })?,
            media_workers: number(
                "DIALTONE_MEDIA_WORKERS",
                0,
                "a count of threads (0: one per core)",
            )?,
            rtp_timeout: Duration::from_secs(
                number(
                    "DIALTONE_RTP_TIMEOUT_SECONDS",
                    30u64,
                    "a whole number of seconds",
                )?
                .max(1),
            ),
            queue_timeout: Duration::from_secs(number(
                "DIALTONE_QUEUE_TIMEOUT_SECONDS",
                60u64,
                "a whole number of seconds",
            )?),
            sip_t1: Duration::from_millis(
                number(
                    "DIALTONE_SIP_T1_MS",
                    500u64,
                    "a whole number of milliseconds",
                )?
                .max(1),
            ),
            webhook_allow_private: match var("DIALTONE_WEBHOOK_ALLOW_PRIVATE").as_deref() {
                None | Some("false" | "0") => false,
                Some("true" | "1") => true,
                Some(other) => {
                    return Err(DaemonError::Config {
                        key: "DIALTONE_WEBHOOK_ALLOW_PRIVATE",
                        problem: format!("{other:?} is not true or false"),
                    });
                }
            },
        })
    }
}

/// The process-wide Prometheus recorder, installed on first use.
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .map_err(|error| tracing::warn!(%error, "metrics recorder not installed"))
                .ok()
        })
        .clone()
}

/// The media workers' latency histograms and counters in the Prometheus text format.
fn media_metrics(media: &dialtone_media::MediaEngine) -> String {
    use std::fmt::Write;
    let latency = media.latency();
    let mut out = String::new();
    for (name, help, snapshot) in [
        (
            "dialtone_media_inbound_latency_seconds",
            "RTP packet read to its 16 kHz frame in the speech ring (includes the jitter buffer delay)",
            &latency.inbound,
        ),
        (
            "dialtone_media_outbound_latency_seconds",
            "Agent frame queued to its RTP packet sent",
            &latency.outbound,
        ),
        (
            "dialtone_media_step_seconds",
            "CPU time of one call's 20 ms media tick",
            &latency.step,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (le, count) in snapshot.buckets() {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", snapshot.count);
        let _ = writeln!(out, "{name}_sum {}", snapshot.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", snapshot.count);
    }
    let _ = writeln!(
        out,
        "# HELP dialtone_media_ticks_skipped_total Media ticks skipped because a worker fell behind\n\
         # TYPE dialtone_media_ticks_skipped_total counter\n\
         dialtone_media_ticks_skipped_total {}\n\
         # HELP dialtone_media_calls Calls whose media the workers are serving\n\
         # TYPE dialtone_media_calls gauge\n\
         dialtone_media_calls {}\n\
         # HELP dialtone_media_workers Media worker threads\n\
         # TYPE dialtone_media_workers gauge\n\
         dialtone_media_workers {}",
        latency.ticks_skipped,
        latency.calls,
        media.workers()
    );
    out
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound SIP address.
    pub sip_addr: SocketAddr,
    engine: Arc<Engine>,
    server: tokio::task::JoinHandle<()>,
    grpc: tokio::task::JoinHandle<()>,
    webhooks: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Opens storage, binds SIP, HTTP and gRPC, and serves.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        let storage = Storage::open(&config.database_url).await?;
        let org = storage.bootstrap_admin_key(&config.api_key).await?;
        tracing::info!(organization = %org.id, "DIALTONE_API_KEY is an admin key");
        let interrupted = storage.close_interrupted_calls().await?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "closed calls left live by the previous run");
        }
        let mut webhook_config = WebhookConfig::new(config.webhook_secret.clone());
        webhook_config.allow_private = config.webhook_allow_private;
        let webhooks = spawn_delivery(storage.clone(), webhook_config);
        let mut ua_config = UaConfig::new(config.sip_addr);
        ua_config.timers.t1 = config.sip_t1;
        if let Some((host, port)) = &config.sip_advertised {
            ua_config.advertised_host = Some(host.clone());
            ua_config.advertised_port = *port;
        }
        let ua = Arc::new(SipUa::start(ua_config).await?);
        let sip_addr = ua.local_addr();
        let media_ip: IpAddr = config
            .sip_advertised
            .as_ref()
            .and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok())
            .unwrap_or_else(|| {
                if sip_addr.ip().is_unspecified() {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    sip_addr.ip()
                }
            });
        let media = dialtone_media::MediaEngine::new(config.media_workers)?;
        let engine = Engine::new(
            storage,
            ua,
            media.clone(),
            EngineConfig {
                rtp_bind: sip_addr.ip(),
                rtp_advertised: media_ip,
                rtp_first_port: config.rtp_ports.0,
                rtp_last_port: config.rtp_ports.1,
                default_brain: config.default_brain.clone(),
                rtp_timeout: config.rtp_timeout,
                queue_timeout: config.queue_timeout,
            },
        );
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| DaemonError::Http {
                addr: config.http_addr,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| DaemonError::Http {
            addr: config.http_addr,
            source,
        })?;
        let registering = engine.start_registrations().await?;
        if registering > 0 {
            tracing::info!(registering, "registering with trunks");
        }
        let api = ApiState {
            engine: engine.clone(),
            allow_private_webhooks: config.webhook_allow_private,
            metrics: prometheus().map(|handle| {
                let render: Arc<dyn Fn() -> String + Send + Sync> =
                    Arc::new(move || handle.render() + &media_metrics(&media));
                render
            }),
        };
        let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|e| DaemonError::Grpc {
                addr: config.grpc_addr,
                detail: e.to_string(),
            })?;
        let grpc_addr = grpc_listener.local_addr().map_err(|e| DaemonError::Grpc {
            addr: config.grpc_addr,
            detail: e.to_string(),
        })?;
        let grpc_router = dialtone_control::grpc::services(api.clone())
            .await
            .map_err(|e| DaemonError::Grpc {
                addr: grpc_addr,
                detail: e.to_string(),
            })?;
        let grpc = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
            if let Err(error) = grpc_router.serve_with_incoming(incoming).await {
                tracing::error!(%error, "gRPC server stopped");
            }
        });
        let app = router(api);
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "HTTP server stopped");
            }
        });
        tracing::info!(%http_addr, %grpc_addr, %sip_addr, "dialtoned ready");
        Ok(Daemon {
            http_addr,
            grpc_addr,
            grpc,
            sip_addr,
            engine,
            server,
            webhooks,
        })
    }

    /// Stops taking dispatches and waits (at most `drain`) for live calls to end.
    pub async fn shutdown(self, drain: Duration) {
        self.engine.stop_accepting();
        let deadline = tokio::time::Instant::now() + drain;
        while self.engine.live_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.server.abort();
        self.grpc.abort();
        // Undelivered events stay in the outbox; the next start delivers them.
        self.webhooks.abort();
    }
}

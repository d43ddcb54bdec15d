//! # dialtone-daemon — `dialtoned` and the `dialtone` CLI
//!
//! [`Config::load`] reads the configuration: a TOML file (`dialtoned --config FILE`) whose
//! every key a `DIALTONE_*` environment variable overrides ([`SETTINGS`] lists them with their
//! defaults; the file's key is the variable's name without the prefix, in lower case). A bad
//! value stops start-up with one message naming the variable and the rule.
//!
//! [`Daemon::start`] opens storage as node `DIALTONE_NODE_ID` and takes its lease, closes the
//! calls a previous run of this node left live (`engine_restart`), binds SIP (UDP, TCP, TLS),
//! the HTTP API (with `/metrics`, `/healthz`, `/readyz`) and the gRPC API, and starts the
//! webhook delivery worker, the lease keeper (`node.rs`: renewal, and lost nodes' calls
//! closed as `node_lost`) and, with `DIALTONE_RECORDING_RETENTION_DAYS`, the purge of
//! recordings past retention (recordings live in the data directory's `recordings/`, or in an
//! S3-compatible bucket with `DIALTONE_RECORDING_S3_BUCKET`). [`Daemon::shutdown`] drains: dispatches
//! are refused at once (503 / `UNAVAILABLE`), live calls go on up to the drain timeout, the
//! rest are ended with `engine_shutdown`, and their outcomes are in storage before it returns.
//!
//! The `dialtone` binary is the command-line client over gRPC, and `dialtone demo` the
//! one-machine demonstration of a whole call.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dialtone_control::{ApiState, router};
use dialtone_engine::leftovers::{LEFTOVER_WAIT, hang_up_leftovers};
use dialtone_engine::webhooks::{WebhookConfig, spawn_delivery};
use dialtone_engine::{Engine, EngineConfig, Recordings, SpeechWorkers};
use dialtone_sip_ua::{SipUa, TlsListen, UaConfig};
use dialtone_storage::Storage;

mod config;
pub mod http;
mod node;
pub use config::{Config, LogFormat, SETTINGS, SipTls};

/// Errors starting the daemon; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration file cannot be used.
    #[error("{}: {problem}", path.display())]
    ConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
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
    /// The speech threads could not be started.
    #[error("DIALTONE_SPEECH_THREADS: cannot start {threads} threads: {source}")]
    Speech {
        /// How many were asked for (0: one per core).
        threads: usize,
        /// The OS error.
        source: std::io::Error,
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

/// The metrics of `builtin:agent`'s latencies (voice to voice, speech recognition, the
/// model's first token, the synthesis' first audio): they begin with this.
const AGENT_METRICS: &str = "dialtone_agent_";

/// The upper bounds (seconds) of the agent latency histograms' buckets.
const AGENT_LATENCY_BUCKETS: [f64; 12] =
    [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0];

/// The upper bounds (seconds) of the buckets of the media path's histograms measured in ticks
/// ([`dialtone_engine::BARGE_IN_STOP_METRIC`], the Media Streams bridge's two directions).
const MEDIA_PATH_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.5,
];

/// The process-wide Prometheus recorder, installed on first use. The agent's latencies are
/// histograms with [`AGENT_LATENCY_BUCKETS`] and the media path's with [`MEDIA_PATH_BUCKETS`]
/// (so they aggregate across nodes); the other histograms render as summaries.
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Prefix(AGENT_METRICS.to_owned()),
                    &AGENT_LATENCY_BUCKETS,
                )
                .and_then(|builder| {
                    [
                        dialtone_engine::BARGE_IN_STOP_METRIC,
                        dialtone_engine::MEDIA_STREAMS_INBOUND_METRIC,
                        dialtone_engine::MEDIA_STREAMS_OUTBOUND_METRIC,
                    ]
                    .into_iter()
                    .try_fold(builder, |builder, name| {
                        builder.set_buckets_for_metric(
                            Matcher::Full(name.to_owned()),
                            &MEDIA_PATH_BUCKETS,
                        )
                    })
                })
                .and_then(PrometheusBuilder::install_recorder)
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
            "RTP packet received by the kernel to its 16 kHz frame in the speech ring (includes the jitter buffer delay)",
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
        (
            "dialtone_media_tick_lateness_seconds",
            "How late a media worker's 20 ms tick started after its deadline",
            &latency.tick_lateness,
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
         # HELP dialtone_media_steps_stood_in_total Media steps (or a tick's packets) a worker took for another whose thread had not done them past their deadline\n\
         # TYPE dialtone_media_steps_stood_in_total counter\n\
         dialtone_media_steps_stood_in_total {}\n\
         # HELP dialtone_media_calls Calls whose media the workers are serving\n\
         # TYPE dialtone_media_calls gauge\n\
         dialtone_media_calls {}\n\
         # HELP dialtone_media_workers Media worker threads\n\
         # TYPE dialtone_media_workers gauge\n\
         dialtone_media_workers {}",
        latency.ticks_skipped,
        latency.steps_stood_in,
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
    /// The bound metrics address, when one was asked for.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound SIP address.
    pub sip_addr: SocketAddr,
    engine: Arc<Engine>,
    server: tokio::task::JoinHandle<()>,
    metrics_server: Option<tokio::task::JoinHandle<()>>,
    grpc: tokio::task::JoinHandle<()>,
    webhooks: tokio::task::JoinHandle<()>,
    /// Renews the node's lease and closes lost nodes' calls.
    lease: tokio::task::JoinHandle<()>,
    /// Carries out other nodes' commands for this node's calls (PostgreSQL).
    commands: Option<tokio::task::JoinHandle<()>>,
    /// Removes recordings past `DIALTONE_RECORDING_RETENTION_DAYS`.
    purging: Option<tokio::task::JoinHandle<()>>,
    /// Removes staging files of recordings a crash cut short.
    sweeping: tokio::task::JoinHandle<()>,
}

/// How often recordings past retention, and staging files a crash left, are looked for.
const RECORDING_PURGE_EVERY: Duration = Duration::from_secs(600);

impl Daemon {
    /// Opens storage, binds SIP, HTTP and gRPC, and serves.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        // Before anything counts: the start's own work (leftover hang-ups) is in the metrics.
        let recorder = prometheus();
        let storage = Storage::open(&config.database_url)
            .await?
            .with_node(&config.node_id);
        // The lease first: a survivor must not take this node's calls for a lost node's.
        node::take_lease_at_start(&storage, config.node_lease).await?;
        let org = storage
            .bootstrap_operator_key(&config.api_key)
            .await
            .map_err(|e| match e {
                dialtone_storage::StorageError::KeyRevoked { .. } => DaemonError::Config {
                    key: "DIALTONE_API_KEY",
                    problem: e.to_string(),
                },
                other => other.into(),
            })?;
        tracing::info!(organization = %org.id, "DIALTONE_API_KEY is an operator key");
        let mut webhook_config = WebhookConfig::new(config.webhook_secret.clone());
        webhook_config.private = config.private_destinations.clone();
        let webhooks = spawn_delivery(storage.clone(), webhook_config);
        let mut ua_config = UaConfig::new(config.sip_addr);
        ua_config.timers.t1 = config.sip_t1;
        // Calls placed to our numbers are answered by their agents (`direction` inbound).
        ua_config.inbound = true;
        if let Some((host, port)) = &config.sip_advertised {
            ua_config.advertised_host = Some(host.clone());
            ua_config.advertised_port = *port;
        }
        if let Some(tls) = &config.sip_tls {
            let read = |key: &'static str, path: &std::path::Path| {
                std::fs::read_to_string(path).map_err(|e| DaemonError::Config {
                    key,
                    problem: format!("cannot read {}: {e}", path.display()),
                })
            };
            ua_config.tls = Some(TlsListen {
                bind: tls.addr,
                cert_chain_pem: read("DIALTONE_SIP_TLS_CERT", &tls.cert)?,
                key_pem: read("DIALTONE_SIP_TLS_KEY", &tls.key)?,
            });
            ua_config.advertised_tls_port = tls.advertised_port;
        }
        let ua = Arc::new(SipUa::start(ua_config).await?);
        // The calls a killed run left live: their far ends hung up on the wire (from the
        // dialogs kept in storage), then their records closed.
        let hung_up = hang_up_leftovers(&storage, &ua, LEFTOVER_WAIT).await?;
        let interrupted = storage.close_interrupted_calls().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                hung_up,
                "closed calls left live by the previous run"
            );
        }
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
        let media = dialtone_media::MediaEngine::with_scheduling(
            config.media_workers,
            if config.media_realtime {
                dialtone_media::Scheduling::Realtime
            } else {
                dialtone_media::Scheduling::Normal
            },
        )?;
        let speech = SpeechWorkers::new(
            config.speech_threads,
            if config.media_realtime {
                dialtone_media::Scheduling::Favoured
            } else {
                dialtone_media::Scheduling::Normal
            },
        )
        .map_err(|source| DaemonError::Speech {
            threads: config.speech_threads,
            source,
        })?;
        let store: Arc<dyn dialtone_storage::RecordingStore> = match &config.recording_s3 {
            Some(s3) => Arc::new(dialtone_storage::S3Recordings::new(s3).map_err(|e| {
                DaemonError::Config {
                    key: "DIALTONE_RECORDING_S3_BUCKET",
                    problem: e.to_string(),
                }
            })?),
            None => Arc::new(dialtone_storage::LocalRecordings::new(
                &config.recording_dir,
            )),
        };
        let recordings = Recordings {
            staging: config.recording_dir.clone(),
            store,
        };
        let engine = Engine::new(
            storage,
            ua.clone(),
            media.clone(),
            speech,
            EngineConfig {
                rtp_bind: sip_addr.ip(),
                rtp_advertised: media_ip,
                rtp_first_port: config.rtp_ports.0,
                rtp_last_port: config.rtp_ports.1,
                default_brain: config.default_brain.clone(),
                rtp_timeout: config.rtp_timeout,
                queue_timeout: config.queue_timeout,
                private_destinations: config.private_destinations.clone(),
                default_org_max_concurrent_calls: config.default_org_max_concurrent_calls,
                signing_secret: config.webhook_secret.clone(),
            },
            Some(recordings.clone()),
        );
        let purging = config.recording_retention.map(|retention| {
            tokio::spawn(dialtone_engine::purge_expired(
                engine.storage().clone(),
                recordings.store.clone(),
                retention,
                RECORDING_PURGE_EVERY,
            ))
        });
        let sweeping = tokio::spawn(dialtone_engine::sweep_abandoned(
            recordings.staging.clone(),
            RECORDING_PURGE_EVERY,
        ));
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
        engine.answer_inbound();
        let lease = tokio::spawn(node::keep_lease(engine.clone(), ua, config.node_lease));
        // Other nodes' commands for this node's calls come through PostgreSQL (SQLite has one
        // node).
        let commands = (engine.storage().backend() == dialtone_storage::Backend::Postgres)
            .then(|| tokio::spawn(engine.clone().serve_commands()));
        let registering = engine.start_registrations().await?;
        if registering > 0 {
            tracing::info!(registering, "registering with trunks");
        }
        let api = ApiState {
            engine: engine.clone(),
            private_destinations: config.private_destinations.clone(),
            metrics: recorder.map(|handle| {
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
            let incoming =
                http::speaking_connections(grpc_listener, http::HttpTimeouts::default().header);
            if let Err(error) = grpc_router.serve_with_incoming(incoming).await {
                tracing::error!(%error, "gRPC server stopped");
            }
        });
        let (metrics_addr, metrics_server) = match config.metrics_addr {
            None => (None, None),
            Some(addr) => {
                let metrics_listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Http { addr, source })?;
                let bound = metrics_listener
                    .local_addr()
                    .map_err(|source| DaemonError::Http { addr, source })?;
                let app = dialtone_control::metrics_router(api.clone());
                let served = tokio::spawn(async move {
                    http::serve(metrics_listener, app, http::HttpTimeouts::default()).await;
                });
                (Some(bound), Some(served))
            }
        };
        let app = router(api);
        let server = tokio::spawn(async move {
            http::serve(listener, app, http::HttpTimeouts::default()).await;
        });
        tracing::info!(%http_addr, %grpc_addr, %sip_addr, node = %config.node_id, "dialtoned ready");
        Ok(Daemon {
            lease,
            commands,
            purging,
            sweeping,
            http_addr,
            metrics_addr,
            metrics_server,
            grpc_addr,
            grpc,
            sip_addr,
            engine,
            server,
            webhooks,
        })
    }

    /// Drains and stops: dispatches are refused from now on (503 / `UNAVAILABLE`), live calls
    /// go on for at most `drain`, then the rest are ended with `engine_shutdown` (BYE, CANCEL,
    /// or out of the queue) and their outcomes written. Undelivered webhook events stay in the
    /// outbox for the next start. Returns how many calls had to be ended.
    pub async fn shutdown(self, drain: Duration) -> usize {
        self.engine.stop_accepting();
        let wait_until = |deadline: tokio::time::Instant| {
            let engine = self.engine.clone();
            async move {
                while engine.live_calls() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        wait_until(tokio::time::Instant::now() + drain).await;
        let ended = self.engine.end_all();
        if ended > 0 {
            tracing::warn!(ended, "drain time over: ending the calls still live");
            // A BYE's transaction and the final writes take a moment (Timer F at most).
            wait_until(tokio::time::Instant::now() + Duration::from_secs(10)).await;
        }
        self.server.abort();
        if let Some(metrics) = &self.metrics_server {
            metrics.abort();
        }
        self.grpc.abort();
        self.webhooks.abort();
        self.lease.abort();
        if let Some(commands) = &self.commands {
            commands.abort();
        }
        if let Some(purging) = &self.purging {
            purging.abort();
        }
        self.sweeping.abort();
        // Every call is over: nothing of this node is left for a survivor to close.
        if let Err(error) = self.engine.storage().release_lease().await {
            tracing::warn!(%error, "cannot give the node's lease up");
        }
        self.engine.storage().close().await;
        ended
    }
}

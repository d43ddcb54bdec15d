//! `dialtoned`: the Dialtone daemon. `dialtoned [--config FILE]`; every key of the TOML file
//! can be overridden by its `DIALTONE_*` variable (see the `dialtone-daemon` crate
//! documentation). SIGINT/SIGTERM drain live calls (up to `DIALTONE_DRAIN_TIMEOUT_SECONDS`),
//! end the rest with `engine_shutdown`, and exit 0.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dialtone_daemon::{Config, Daemon, LogFormat};
use tracing_subscriber::EnvFilter;

/// The Dialtone telephony engine daemon.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file; `DIALTONE_*` variables override its keys.
    #[arg(long, env = "DIALTONE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: what failed and why, naming the setting.
            eprintln!("dialtoned: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    let filter = EnvFilter::try_new(&config.log).with_context(|| {
        format!(
            "invalid configuration: DIALTONE_LOG: {:?} is not a log filter",
            config.log
        )
    })?;
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let drain = config.drain_timeout;
    let daemon = Daemon::start(config).await.context("cannot start")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(?drain, "shutting down: no new calls; draining live ones");
    let ended = daemon.shutdown(drain).await;
    tracing::info!(ended, "stopped");
    Ok(())
}

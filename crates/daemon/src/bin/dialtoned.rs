//! `dialtoned`: the Dialtone daemon. Configuration comes from `DIALTONE_*` variables (see the
//! `dialtone-daemon` crate documentation); SIGINT/SIGTERM drain live calls and exit 0.

use std::time::Duration;

use anyhow::Context;
use dialtone_daemon::{Config, Daemon};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("DIALTONE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("DIALTONE_LOG_FORMAT").is_ok_and(|f| f == "json");
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = Config::from_env().context("invalid configuration")?;
    let daemon = Daemon::start(config).await.context("cannot start")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining live calls");
    daemon.shutdown(Duration::from_secs(30)).await;
    Ok(())
}

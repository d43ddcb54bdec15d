//! Trunk health (OPTIONS keep-alive) and registration (REGISTER with refresh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_sip_core::{OutOfDialogRequest, RequestHandle, RequestOutcome, Transport};
use tokio::sync::{oneshot, watch};

use crate::driver::Command;
use crate::trunk::Trunk;
use crate::{SipUa, UaError};

/// What the last OPTIONS probe of a trunk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkHealth {
    /// Any final response means up (even 401/404/405: something answers); 408 and transport
    /// failures mean down.
    pub up: bool,
    /// The last status (408 when nothing answered, 503 when the transport failed).
    pub last_status: Option<u16>,
    /// When the last probe ended.
    pub checked_at: Option<Instant>,
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// The first REGISTER has not been answered yet.
    Pending,
    /// Registered; refreshed before `expires` seconds run out.
    Registered {
        /// Lifetime the registrar granted.
        expires: u32,
        /// How many times it was refreshed.
        refreshes: u32,
    },
    /// The last attempt failed with this status; retried after a back-off.
    Failed {
        /// The status (408 when nothing answered).
        status: u16,
    },
}

/// A running OPTIONS keep-alive; dropping it stops the probes.
#[derive(Debug)]
pub struct TrunkMonitor {
    health: watch::Receiver<TrunkHealth>,
    task: tokio::task::JoinHandle<()>,
}

impl TrunkMonitor {
    /// The latest health.
    pub fn health(&self) -> TrunkHealth {
        *self.health.borrow()
    }

    /// Waits for the next change of health.
    pub async fn changed(&mut self) -> Option<TrunkHealth> {
        self.health.changed().await.ok()?;
        Some(*self.health.borrow())
    }
}

impl Drop for TrunkMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running registration; dropping it stops refreshing (the binding then expires).
#[derive(Debug)]
pub struct Registration {
    state: watch::Receiver<RegistrationState>,
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// The current state.
    pub fn state(&self) -> RegistrationState {
        *self.state.borrow()
    }

    /// Waits for the next change of state.
    pub async fn changed(&mut self) -> Option<RegistrationState> {
        self.state.changed().await.ok()?;
        Some(*self.state.borrow())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request of a series through the driver; returns the series and its final outcome.
async fn exchange(
    ua: &SipUa,
    series: Option<RequestHandle>,
    first: Option<(&Trunk, OutOfDialogRequest)>,
    expires: Option<u32>,
) -> Result<(RequestHandle, RequestOutcome), UaError> {
    let (reply, rx) = oneshot::channel();
    let (request, tls) = match first {
        Some((trunk, request)) => {
            let tls = (trunk.transport == Transport::Tls).then(|| Box::new(trunk.clone()));
            (Some(request), tls)
        }
        None => (None, None),
    };
    ua.send(Command::OutOfDialog {
        series,
        request,
        expires,
        tls,
        reply,
    })?;
    let (handle, outcome) = rx.await.map_err(|_| UaError::Stopped)??;
    let outcome = outcome.await.map_err(|_| UaError::Stopped)?;
    Ok((handle, outcome))
}

fn request_for(
    trunk: &Trunk,
    method: rsip::Method,
    target: std::net::SocketAddr,
    expires: Option<u32>,
) -> OutOfDialogRequest {
    let host_port = trunk.host_port();
    let user = trunk
        .credentials
        .as_ref()
        .map_or_else(|| "dialtone".to_owned(), |c| c.username.clone());
    let domain = trunk
        .from_domain
        .clone()
        .unwrap_or_else(|| host_port.clone());
    let scheme = trunk.transport.scheme();
    let aor = format!("<{scheme}:{user}@{domain}>");
    OutOfDialogRequest {
        method,
        request_uri: format!("{scheme}:{host_port}"),
        from: aor.clone(),
        to: aor,
        destination: target,
        transport: trunk.transport,
        credentials: trunk.credentials.clone(),
        expires,
    }
}

impl SipUa {
    /// Sends one OPTIONS to the trunk's first target and returns the final status (408 when
    /// nothing answered).
    pub async fn probe(&self, trunk: &Trunk) -> Result<u16, UaError> {
        let target = first_target(trunk, &self.dns).await?;
        let request = request_for(trunk, rsip::Method::Options, target, None);
        let (handle, outcome) = exchange(self, None, Some((trunk, request)), None).await?;
        let _ = self.send(Command::ForgetRequest { series: handle });
        Ok(outcome.status)
    }

    /// Probes the trunk with OPTIONS every `interval` and publishes whether it is up.
    pub fn monitor(&self, trunk: Arc<Trunk>, interval: Duration) -> TrunkMonitor {
        let (tx, health) = watch::channel(TrunkHealth {
            up: false,
            last_status: None,
            checked_at: None,
        });
        let ua = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let status = ua.probe(&trunk).await.unwrap_or(503);
                let up = !matches!(status, 408 | 503);
                tracing::debug!(trunk = %trunk.name, status, up, "OPTIONS keep-alive");
                if tx
                    .send(TrunkHealth {
                        up,
                        last_status: Some(status),
                        checked_at: Some(Instant::now()),
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        TrunkMonitor { health, task }
    }

    /// Registers with the trunk for `expires` seconds and keeps the binding fresh: refreshes
    /// when four fifths of the granted lifetime have passed, retries failures after a back-off
    /// (1 s doubling to 60 s).
    pub fn register(&self, trunk: Arc<Trunk>, expires: u32) -> Registration {
        let (tx, state) = watch::channel(RegistrationState::Pending);
        let ua = self.clone();
        let task = tokio::spawn(async move {
            let mut series: Option<RequestHandle> = None;
            let mut refreshes = 0u32;
            let mut backoff = Duration::from_secs(1);
            loop {
                let attempt = match series {
                    Some(h) => exchange(&ua, Some(h), None, None).await,
                    None => match first_target(&trunk, &ua.dns).await {
                        Ok(target) => {
                            let r =
                                request_for(&trunk, rsip::Method::Register, target, Some(expires));
                            exchange(&ua, None, Some((&trunk, r)), None).await
                        }
                        Err(e) => Err(e),
                    },
                };
                let retry_after = |backoff: &mut Duration| {
                    let wait = *backoff;
                    *backoff = (*backoff * 2).min(Duration::from_secs(60));
                    wait
                };
                let wait = match attempt {
                    Ok((h, outcome)) if (200..300).contains(&outcome.status) => {
                        let granted = outcome.expires.unwrap_or(expires).max(1);
                        if matches!(*tx.borrow(), RegistrationState::Registered { .. }) {
                            refreshes += 1;
                        }
                        series = Some(h);
                        backoff = Duration::from_secs(1);
                        let registered = RegistrationState::Registered {
                            expires: granted,
                            refreshes,
                        };
                        if tx.send(registered).is_err() {
                            break;
                        }
                        Duration::from_millis(u64::from(granted) * 800)
                    }
                    Ok((h, outcome)) => {
                        series = Some(h);
                        let failed = RegistrationState::Failed {
                            status: outcome.status,
                        };
                        if tx.send(failed).is_err() {
                            break;
                        }
                        retry_after(&mut backoff)
                    }
                    Err(UaError::Stopped) => break,
                    Err(error) => {
                        tracing::warn!(trunk = %trunk.name, %error, "cannot register");
                        retry_after(&mut backoff)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
        Registration { state, task }
    }
}

async fn first_target(
    trunk: &Trunk,
    dns: &crate::dns::Resolver,
) -> Result<std::net::SocketAddr, UaError> {
    trunk
        .resolve(dns)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| UaError::NoAddress {
            trunk: trunk.name.clone(),
            host: trunk.host.clone(),
        })
}

//! Webhook delivery from the durable outbox.
//!
//! Storage writes each event in the transaction of the state change it announces; this worker
//! claims due events for its node (one per call at a time, so a call's events arrive in order;
//! on PostgreSQL nodes never claim the same event, so each goes out from one node), POSTs the
//! stored JSON body, and records the outcome: 2xx delivered; 410 dead at once; network errors,
//! timeouts, 429 and 5xx retried with exponential back-off and jitter until the retry period is
//! over, then dead; other statuses dead. Requests are signed the Stripe way:
//! `Dialtone-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, with
//! `Dialtone-Event-Id` and `Dialtone-Event-Type`. A receiver verifies the HMAC over the raw body
//! with the shared secret and refuses timestamps older than its tolerance (five minutes is usual)
//! to stop replays; the event id deduplicates retried deliveries.
//!
//! Receivers are reached through [`outbound::Client`]: a receiver on a private, loopback or
//! reserved address (by IP literal or by name, checked at the connection) is dead at once
//! unless the operator allows them (`private`); redirects are not followed, so a 3xx is dead like other statuses.

use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dialtone_storage::{Delivery, Storage, WebhookEvent, now_ms};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::outbound::{self, OutboundError};

/// Webhook delivery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The HMAC secret.
    pub secret: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How long an event is retried before it is declared dead.
    pub retry_for: Duration,
    /// Which loopback, private, link-local and other addresses [`outbound::is_private`] names
    /// may be delivered to (tests, on-premise receivers).
    pub private: outbound::PrivateDestinations,
    /// How often the outbox is polled when idle.
    pub poll: Duration,
}

impl WebhookConfig {
    /// 10 s timeout, 24 h of retries, private addresses refused, 200 ms polling.
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(24 * 3600),
            private: outbound::PrivateDestinations::None,
            poll: Duration::from_millis(200),
        }
    }
}

/// Events claimed at a time by one node: a delivery round.
const CLAIM_BATCH: u32 = 128;

/// Deliveries of a round in flight at once (each of a different call: a round holds at most
/// one event per call).
const IN_FLIGHT: usize = 32;

/// How long a node's claim on a round lasts: its events [`IN_FLIGHT`] at a time, each at the
/// request timeout, and a margin. A node that dies with a claim leaves its events to the others
/// after that.
fn claim_for(config: &WebhookConfig) -> Duration {
    config.timeout * CLAIM_BATCH.div_ceil(IN_FLIGHT as u32) + Duration::from_secs(30)
}

/// The `Dialtone-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        // invariant: HMAC takes keys of any length, so this branch never runs.
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

// The address policy lives in `outbound`; this path stays for the API's URL checks.
pub use crate::outbound::is_private;

/// Back-off before attempt `attempts + 1`: 1 s doubling to 1 h, times a jitter in [0.5, 1).
fn backoff(attempts: u32, seed: u64) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.min(12)).min(Duration::from_secs(3600));
    let jitter = 0.5 + (seed % 1000) as f64 / 2000.0;
    base.mul_f64(jitter)
}

/// Starts the delivery worker; it runs until the task is aborted. Events go out in rounds: a
/// claimed batch delivered [`IN_FLIGHT`] at a time, its outcomes recorded in one transaction;
/// a receiver at its timeout delays the next round.
pub fn spawn_delivery(storage: Storage, config: WebhookConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match outbound::Client::new(config.private.clone(), config.timeout) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "cannot build the webhook HTTP client");
                return;
            }
        };
        loop {
            let due = match storage
                .claim_due_webhooks(now_ms(), CLAIM_BATCH, claim_for(&config))
                .await
            {
                Ok(d) => d,
                Err(error) => {
                    tracing::error!(%error, "cannot read the webhook outbox");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::time::sleep(config.poll).await;
                continue;
            }
            let attempts: Vec<_> = futures_util::stream::iter(due)
                .map(|event| attempt(&client, &config, event))
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            if let Err(error) = storage.record_deliveries(attempts).await {
                tracing::error!(%error, "cannot record a round of webhook attempts");
            }
        }
    })
}

/// Delivers `event` once, logging and counting the outcome.
async fn attempt(
    client: &outbound::Client,
    config: &WebhookConfig,
    event: WebhookEvent,
) -> (uuid::Uuid, Delivery) {
    let outcome = deliver(client, config, &event).await;
    tracing::info!(event_id = %event.id, call_id = %event.call_id, kind = %event.kind, ?outcome, "webhook attempt");
    let label = match &outcome {
        Delivery::Delivered => "delivered",
        Delivery::Retry { .. } => "retry",
        _ => "dead",
    };
    metrics::counter!("dialtone_webhook_attempts_total", "outcome" => label).increment(1);
    (event.id, outcome)
}

async fn deliver(
    client: &outbound::Client,
    config: &WebhookConfig,
    event: &WebhookEvent,
) -> Delivery {
    let retry_or_dead = |error: String| {
        let at = now_ms()
            + i64::try_from(
                backoff(
                    event.attempts,
                    std::collections::hash_map::RandomState::new().hash_one(event.id),
                )
                .as_millis(),
            )
            .unwrap_or(i64::MAX / 2);
        let deadline =
            event.created_at + i64::try_from(config.retry_for.as_millis()).unwrap_or(i64::MAX / 2);
        if at > deadline {
            Delivery::Dead { error }
        } else {
            Delivery::Retry { error, at }
        }
    };
    let refused = |error: &OutboundError| Delivery::Dead {
        error: match error {
            OutboundError::Private { .. } => {
                format!("{error} (DIALTONE_WEBHOOK_ALLOW_PRIVATE=true allows it)")
            }
            _ => error.to_string(),
        },
    };
    let request = match client.request(reqwest::Method::POST, &event.url) {
        Ok(r) => r,
        Err(error) => return refused(&error),
    };
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sent = request
        .header("Content-Type", "application/json")
        .header(
            "Dialtone-Signature",
            signature(&config.secret, timestamp, &event.body),
        )
        .header("Dialtone-Event-Id", event.id.to_string())
        .header("Dialtone-Event-Type", &event.kind)
        .body(event.body.clone())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Delivery::Delivered,
        Ok(r) if r.status().as_u16() == 410 => Delivery::Dead {
            error: "410 Gone".into(),
        },
        Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
            retry_or_dead(format!("HTTP {}", r.status().as_u16()))
        }
        Ok(r) => Delivery::Dead {
            error: format!("HTTP {}", r.status().as_u16()),
        },
        Err(error) => match outbound::cause_of(&error) {
            Some(private @ OutboundError::Private { .. }) => refused(private),
            Some(other) => retry_or_dead(other.to_string()),
            None => retry_or_dead(format!("request failed: {error}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_test_support::openssl_hmac_sha256;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn event(url: String) -> WebhookEvent {
        WebhookEvent {
            id: uuid::Uuid::new_v4(),
            call_id: uuid::Uuid::new_v4(),
            sequence: 1,
            kind: "call.completed".into(),
            url,
            body: "{\"type\":\"call.completed\"}".into(),
            attempts: 0,
            created_at: now_ms(),
        }
    }

    fn config(allow_private: bool) -> (outbound::Client, WebhookConfig) {
        let mut config = WebhookConfig::new("whsec");
        config.timeout = Duration::from_secs(5);
        config.private = if allow_private {
            outbound::PrivateDestinations::All
        } else {
            outbound::PrivateDestinations::None
        };
        let client = outbound::Client::new(config.private.clone(), config.timeout).unwrap();
        (client, config)
    }

    /// Takes one request on `listener`, answers it with `response`, returns the request.
    async fn answer(listener: &TcpListener, response: String) -> String {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(chunk.get(..n).unwrap());
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        String::from_utf8(request).unwrap()
    }

    /// No connection reaches `listener` within a moment (a connection the client made would
    /// already be queued: the kernel completes it without an accept).
    async fn untouched(listener: &TcpListener) -> bool {
        tokio::time::timeout(Duration::from_millis(200), listener.accept())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn private_receivers_are_refused_without_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (client, config) = config(false);
        for url in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://localhost:{port}/hook"),
        ] {
            match deliver(&client, &config, &event(url.clone())).await {
                Delivery::Dead { error } => {
                    assert!(
                        error.contains("DIALTONE_WEBHOOK_ALLOW_PRIVATE"),
                        "{url}: {error}"
                    )
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(untouched(&listener).await);
    }

    #[tokio::test]
    async fn private_receivers_are_delivered_to_when_allowed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (client, config) = config(true);
        for url in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://localhost:{port}/hook"),
        ] {
            let event = event(url.clone());
            let (outcome, request) = tokio::join!(
                deliver(&client, &config, &event),
                answer(
                    &listener,
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
                )
            );
            assert_eq!(outcome, Delivery::Delivered, "{url}");
            assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
            assert!(
                request
                    .to_ascii_lowercase()
                    .contains(&format!("dialtone-event-id: {}", event.id)),
                "{request}"
            );
            assert!(request.ends_with(&event.body), "{request}");
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client, config) = config(true);
        let event = event(format!("http://{}/hook", receiver.local_addr().unwrap()));
        let (outcome, _) = tokio::join!(
            deliver(&client, &config, &event),
            answer(
                &receiver,
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://{}/hook\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n",
                    target.local_addr().unwrap()
                )
            )
        );
        assert_eq!(
            outcome,
            Delivery::Dead {
                error: "HTTP 302".into()
            }
        );
        assert!(untouched(&target).await);
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Independent value: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec
        assert_eq!(
            signature("whsec", 1_700_000_000, "{\"a\":1}"),
            format!(
                "t=1700000000,v1={}",
                openssl_hmac_sha256("whsec", "1700000000.{\"a\":1}").unwrap()
            )
        );
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps_at_an_hour() {
        assert!((500..1000).contains(&backoff(0, 7).as_millis()));
        assert!((4000..8000).contains(&backoff(3, 7).as_millis()));
        assert!(backoff(30, 7) <= Duration::from_secs(3600));
    }
}

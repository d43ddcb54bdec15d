//! A webhook receiver on 127.0.0.1 for the call setup bench ([`crate::cps`]): it takes every
//! POST under `/<tag>` (one tag per run, so a late delivery of one run never counts for the
//! next), answers 200, and tallies per tag: requests, those without the `Dialtone-Signature`
//! header the daemon signs every delivery with, and per call (the body's `call_id`) how many
//! events came and whether its final one (`call.ended`) did. The signature is only checked to
//! be there: the bench counts deliveries, it does not verify them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use crate::LoadgenError;

/// The header every delivery is signed in.
pub const SIGNATURE_HEADER: &str = "dialtone-signature";

/// The event that ends a call's webhooks.
pub const FINAL_EVENT: &str = "call.ended";

/// What one tag received, as it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Received {
    requests: u64,
    unsigned: u64,
    /// Per call: events received, and whether its final one was among them.
    calls: HashMap<String, (u64, bool)>,
}

type Tags = Arc<Mutex<HashMap<String, Received>>>;

/// The deliveries of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebhookTally {
    /// POSTs received.
    pub received: u64,
    /// Of those, without the signature header.
    pub unsigned: u64,
    /// Calls with at least one event.
    pub calls: u64,
    /// Calls whose final event came.
    pub calls_ended: u64,
    /// How many calls got each number of events (events → calls).
    pub events_per_call: BTreeMap<u64, u64>,
    /// Calls the run expected whose final event never came.
    pub missing: u64,
}

impl WebhookTally {
    fn of(received: &Received, expected_calls: u64) -> Self {
        let mut events_per_call = BTreeMap::new();
        for (events, _) in received.calls.values() {
            *events_per_call.entry(*events).or_default() += 1;
        }
        let calls_ended = received.calls.values().filter(|(_, ended)| *ended).count() as u64;
        Self {
            received: received.requests,
            unsigned: received.unsigned,
            calls: received.calls.len() as u64,
            calls_ended,
            events_per_call,
            missing: expected_calls.saturating_sub(calls_ended),
        }
    }
}

/// The running receiver; it stops when dropped.
#[derive(Debug)]
pub struct WebhookSink {
    addr: SocketAddr,
    tags: Tags,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookSink {
    /// Serves on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Result<Self, LoadgenError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(LoadgenError::io("binding the webhook receiver"))?;
        let addr = listener
            .local_addr()
            .map_err(LoadgenError::io("the webhook receiver's address"))?;
        let tags = Tags::default();
        let app = Router::new()
            .route("/{tag}", post(receive))
            .with_state(tags.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "the webhook receiver stopped");
            }
        });
        Ok(Self { addr, tags, task })
    }

    /// The URL a run's calls name as their `webhook_url`.
    pub fn url(&self, tag: &str) -> String {
        format!("http://{}/{tag}", self.addr)
    }

    fn tally(&self, tag: &str, expected_calls: u64) -> WebhookTally {
        let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        tags.get(tag)
            .map(|r| WebhookTally::of(r, expected_calls))
            .unwrap_or(WebhookTally {
                missing: expected_calls,
                ..WebhookTally::default()
            })
    }

    /// Waits up to `within` for the final events of `expected_calls` calls under `tag`, and
    /// tallies what came.
    pub async fn wait(&self, tag: &str, expected_calls: u64, within: Duration) -> WebhookTally {
        let until = Instant::now() + within;
        loop {
            let tally = self.tally(tag, expected_calls);
            if tally.missing == 0 || Instant::now() >= until {
                return tally;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fields of a webhook body the tally reads.
#[derive(serde::Deserialize)]
struct Event {
    call_id: String,
    #[serde(rename = "type")]
    kind: String,
}

async fn receive(
    State(tags): State<Tags>,
    Path(tag): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let event = serde_json::from_slice::<Event>(&body).ok();
    let mut tags = tags.lock().unwrap_or_else(|e| e.into_inner());
    let received = tags.entry(tag).or_default();
    received.requests += 1;
    received.unsigned += u64::from(!headers.contains_key(SIGNATURE_HEADER));
    if let Some(event) = event {
        let call = received.calls.entry(event.call_id).or_default();
        call.0 += 1;
        call.1 |= event.kind == FINAL_EVENT;
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deliveries_are_tallied_per_tag_and_per_call() {
        let sink = WebhookSink::start().await.unwrap();
        let post = |tag: &str, call: &str, kind: &str, signed: bool| {
            let url = sink.url(tag);
            let body = format!("{{\"call_id\":\"{call}\",\"type\":\"{kind}\"}}");
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let addr = url
                    .trim_start_matches("http://")
                    .split_once('/')
                    .map(|(a, p)| (a.to_owned(), p.to_owned()))
                    .unwrap();
                let mut s = tokio::net::TcpStream::connect(&addr.0).await.unwrap();
                let signature = if signed {
                    "Dialtone-Signature: t=1,v1=00\r\n"
                } else {
                    ""
                };
                let request = format!(
                    "POST /{} HTTP/1.1\r\nHost: {}\r\n{signature}Content-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    addr.1,
                    addr.0,
                    body.len()
                );
                s.write_all(request.as_bytes()).await.unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).await.unwrap();
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            }
        };
        post("run-1", "a", "call.queued", true).await;
        post("run-1", "a", FINAL_EVENT, true).await;
        post("run-1", "b", "call.queued", false).await;
        post("run-2", "c", FINAL_EVENT, true).await;
        let tally = sink.wait("run-1", 2, Duration::from_millis(200)).await;
        assert_eq!(
            tally,
            WebhookTally {
                received: 3,
                unsigned: 1,
                calls: 2,
                calls_ended: 1,
                events_per_call: [(1, 1), (2, 1)].into(),
                missing: 1,
            }
        );
        assert_eq!(sink.wait("run-2", 1, Duration::ZERO).await.missing, 0);
        assert_eq!(sink.wait("run-3", 4, Duration::ZERO).await.missing, 4);
    }
}

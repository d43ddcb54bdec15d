//! Several `dialtoned` nodes on one PostgreSQL database, as real processes: a node's start
//! leaves another node's live call alone, and when a node dies (SIGKILL) a survivor, once the
//! dead node's lease has run out, hangs its call up on the wire (the BYE SIPp's scenario waits
//! for) and closes it as `node_lost`, by `engine`; with both nodes delivering from one
//! outbox, every webhook event arrives once, each call's in order; an organisation's cap on
//! concurrent calls holds across both nodes.

use std::time::{Duration, Instant};

use dialtone_test_support::{SipTransport, Sipp, SippOptions, scenario};
use serde_json::json;

use super::{
    Api, dialtoned, postgres_url, receiver, setup_agent, wait_final, wait_status, wait_up,
};

/// Real `dialtoned` nodes on one PostgreSQL schema of their own.
struct Cluster {
    url: String,
    data: tempfile::TempDir,
}

/// One running node: its API, and its process.
struct Node {
    api: Api,
    process: std::process::Child,
}

impl Cluster {
    /// A fresh schema; `None` where no PostgreSQL answers (outside CI).
    async fn new() -> Option<Cluster> {
        Some(Cluster {
            url: postgres_url().await?,
            data: tempfile::tempdir().unwrap(),
        })
    }

    /// Starts node `id` on its own HTTP port with RTP ports `rtp` and settings `extra`, and
    /// waits until it is ready.
    async fn start(&self, id: &str, rtp: &str, extra: &[(&str, &str)]) -> Node {
        let http = dialtone_test_support::free_port().unwrap();
        let mut settings = vec![
            ("DIALTONE_DATABASE_URL", self.url.as_str()),
            ("DIALTONE_NODE_ID", id),
        ];
        settings.extend_from_slice(extra);
        let process = dialtoned(self.data.path(), http, rtp, &settings);
        let api = Api {
            base: format!("http://127.0.0.1:{http}"),
            http: reqwest::Client::new(),
        };
        wait_up(&api.base).await;
        Node { api, process }
    }
}

impl Node {
    /// SIGKILL, and reaped.
    fn kill(self) {
        drop(self);
    }
}

impl Drop for Node {
    /// A node never outlives its test, even one whose assertion failed.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A call of `agent_id` dispatched through `api`, once in progress.
async fn live_call(api: &Api, agent_id: &str) -> String {
    let (_, call) = api
        .post(
            "/v1/calls",
            json!({"agent_id": agent_id, "to": "+15551230000"}),
        )
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    wait_status(api, &id, "in_progress").await;
    id
}

/// SIPp answering one call and waiting for our BYE.
fn waiting_for_bye() -> Sipp {
    Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &SippOptions::default(),
    )
    .unwrap()
}

/// Waits (at most `limit`) for SIPp's scenario to end: the BYE it waits for came.
async fn got_its_bye(sipp: Sipp, limit: Duration) {
    tokio::task::spawn_blocking(move || sipp.finish(limit))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_call_is_left_alone_then_closed_by_a_survivor_as_node_lost() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let sipp = waiting_for_bye();
    let lease = [("DIALTONE_NODE_LEASE_SECONDS", "3")];
    let a = cluster.start("node-a", "32600-32649", &lease).await;
    let (agent_id, _) = setup_agent(&a.api, sipp.port).await;
    let id = live_call(&a.api, &agent_id).await;

    // B starts on the same database: A's call is not B's to close.
    let b = cluster.start("node-b", "32650-32699", &lease).await;
    let (_, seen) = b.api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(seen["status"], "in_progress", "{seen:#}");
    assert_eq!(seen["node"], "node-a", "{seen:#}");

    a.kill();
    let killed = Instant::now();
    let record = wait_final(&b.api, &id).await;
    println!(
        "node A killed: its call closed by B after {:?} (lease 3 s, renewed and swept every 1 s)",
        killed.elapsed()
    );
    super::assert_ended(&record, "failed", "node_lost", "engine");
    // SIPp got B's BYE, from the dialog A kept.
    got_its_bye(sipp, Duration::from_secs(15)).await;
    b.kill();
}

/// Two nodes deliver webhooks from one outbox while calls dispatched through both (each
/// refused busy by SIPp) write their events: every event arrives exactly once — counted by
/// event id at the receiver — and each call's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_webhook_event_once_and_in_order() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let sipp = Sipp::uas(
        &scenario("reject.xml"),
        SipTransport::Udp,
        &SippOptions {
            calls: 12,
            replacements: vec![("status".into(), "486".into())],
            ..SippOptions::default()
        },
    )
    .unwrap();
    let (hook, got) = receiver(0).await;
    let a = cluster.start("node-a", "32700-32749", &[]).await;
    let b = cluster.start("node-b", "32750-32799", &[]).await;
    let (agent_id, _) = setup_agent(&a.api, sipp.port).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let through = if i % 2 == 0 { &a.api } else { &b.api };
        let (s, call) = through
            .post(
                "/v1/calls",
                json!({"agent_id": agent_id, "to": "+15551230000", "webhook_url": hook}),
            )
            .await;
        assert_eq!(s, 201, "{call}");
        ids.push(call["id"].as_str().unwrap().to_owned());
    }
    let mut expected = 0;
    for id in &ids {
        let record = wait_final(&b.api, id).await;
        assert_eq!(record["status"], "busy", "{record:#}");
        let (_, events) = a.api.get(&format!("/v1/calls/{id}/events")).await;
        expected += events["data"].as_array().map_or(0, Vec::len);
    }
    // Every event delivered, then a while for any duplicate to come.
    for _ in 0..100 {
        if got.lock().unwrap().len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = got.lock().unwrap().clone();
    let mut by_id: std::collections::HashMap<String, usize> = Default::default();
    let mut per_call: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for (_, event_id, body) in &received {
        *by_id.entry(event_id.clone()).or_default() += 1;
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        per_call
            .entry(body["data"]["call"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["sequence"].as_u64().unwrap());
    }
    let twice: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "{} events of {} calls through two nodes: {} delivered, {} more than once",
        expected,
        ids.len(),
        received.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(by_id.len(), expected);
    for (call, sequences) in per_call {
        assert!(sequences.is_sorted(), "{call}: {sequences:?}");
    }
    a.kill();
    b.kill();
}

/// A hang-up or a transfer asked of a node that does not carry the call reaches the node that
/// does, through the database: B refuses A's call's transfer to a host off the allow-list with
/// A's 400 naming `to`, then B's hang-up of it makes A send the BYE SIPp waits for, and the
/// record says the API ended it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_another_nodes_call_reach_its_owner() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let sipp = waiting_for_bye();
    let a = cluster.start("node-a", "32800-32849", &[]).await;
    let b = cluster.start("node-b", "32850-32899", &[]).await;
    let (agent_id, _) = setup_agent(&a.api, sipp.port).await;
    let id = live_call(&a.api, &agent_id).await;
    let started = Instant::now();
    let (s, e) = b
        .api
        .post(
            &format!("/v1/calls/{id}/transfer"),
            json!({"to": "sip:desk@elsewhere.example"}),
        )
        .await;
    let transfer_took = started.elapsed();
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "to", "{e}");
    let started = Instant::now();
    let (s, body) = b
        .api
        .post(&format!("/v1/calls/{id}/hangup"), json!({}))
        .await;
    let hangup_took = started.elapsed();
    assert_eq!(s, 200, "{body}");
    println!(
        "through the database to the owner: transfer answered in {transfer_took:?}, hang-up in \
         {hangup_took:?}"
    );
    let record = wait_final(&b.api, &id).await;
    super::assert_ended(&record, "completed", "completed", "api");
    got_its_bye(sipp, Duration::from_secs(10)).await;
    a.kill();
    b.kill();
}

/// An organisation capped at 4 concurrent calls, 12 calls of 2 s dispatched alternately through
/// two nodes: the calls wait for slots held in the database, so never more than 4 run at once
/// across both nodes (each node alone would let 4 through), and all 12 complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisations_cap_holds_across_both_nodes() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let sipp = Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &SippOptions {
            calls: 12,
            ..SippOptions::default()
        },
    )
    .unwrap();
    let a = cluster.start("node-a", "32900-32949", &[]).await;
    let b = cluster.start("node-b", "32950-32999", &[]).await;
    let (_, key) = super::second_org(&a.api, json!({"max_concurrent_calls": 4})).await;
    let (on_a, on_b) = (a.api.as_key(&key), b.api.as_key(&key));
    let post = |path: &'static str, body: serde_json::Value| {
        let on_a = &on_a;
        async move {
            let (s, made) = on_a.send(reqwest::Method::POST, path, Some(body)).await;
            assert_eq!(s, 201, "{made}");
            made
        }
    };
    let trunk = post(
        "/v1/trunks",
        json!({"name": "sipp", "host": "127.0.0.1", "port": sipp.port}),
    )
    .await;
    let number = post(
        "/v1/numbers",
        json!({"e164": "+15550002222", "trunk_id": trunk["id"]}),
    )
    .await;
    let agent = post(
        "/v1/agents",
        json!({"name": "capped", "brain": "builtin:echo", "number_ids": [number["id"]],
               "max_duration_seconds": 2}),
    )
    .await;
    let mut paths = Vec::new();
    for i in 0..12 {
        let through = if i % 2 == 0 { &on_a } else { &on_b };
        let (s, call) = through
            .send(
                reqwest::Method::POST,
                "/v1/calls",
                Some(json!({"agent_id": agent["id"], "to": "+15551230000"})),
            )
            .await;
        assert_eq!(s, 201, "{call}");
        paths.push(format!("/v1/calls/{}", call["id"].as_str().unwrap()));
    }
    // Each call from its INVITE to its end, on the two nodes' clocks (one machine's).
    let mut spans = Vec::new();
    let mut nodes = std::collections::BTreeSet::new();
    for path in &paths {
        let record = super::wait_final_with(&on_a, path).await;
        assert_eq!(record["status"], "completed", "{record:#}");
        let at = |field: &str| {
            dialtone_model::time::parse_rfc3339(record[field].as_str().unwrap()).unwrap()
        };
        spans.push((at("dialed_at"), at("ended_at")));
        nodes.insert(record["node"].as_str().unwrap().to_owned());
    }
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    println!("12 calls through two nodes under a cap of 4: at most {most} at once");
    assert_eq!(nodes.len(), 2, "both nodes carried calls: {nodes:?}");
    assert_eq!(most, 4, "the cap of 4 is used and never passed");
    a.kill();
    b.kill();
}

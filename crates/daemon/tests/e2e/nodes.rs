//! Several `dialtoned` nodes on one PostgreSQL database, as real processes: a node's start
//! leaves another node's live call alone, and when a node dies (SIGKILL) a survivor, once the
//! dead node's lease has run out, hangs its call up on the wire (the BYE SIPp's scenario waits
//! for) and closes it as `node_lost`, by `engine`.

use std::time::{Duration, Instant};

use dialtone_test_support::{SipTransport, Sipp, SippOptions, scenario};
use serde_json::json;

use super::{Api, dialtoned, postgres_url, setup_agent, wait_final, wait_status, wait_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_call_is_left_alone_then_closed_by_a_survivor_as_node_lost() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let sipp = Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &SippOptions::default(),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = |id: &str, http: u16, rtp: &str| {
        dialtoned(
            data.path(),
            http,
            rtp,
            &[
                ("DIALTONE_DATABASE_URL", url.as_str()),
                ("DIALTONE_NODE_ID", id),
                ("DIALTONE_NODE_LEASE_SECONDS", "3"),
            ],
        )
    };
    let api = |http: u16| Api {
        base: format!("http://127.0.0.1:{http}"),
        http: reqwest::Client::new(),
    };
    let (http_a, http_b) = (
        dialtone_test_support::free_port().unwrap(),
        dialtone_test_support::free_port().unwrap(),
    );
    let (a, b) = (api(http_a), api(http_b));
    let mut node_a = node("node-a", http_a, "32600-32649");
    wait_up(&a.base).await;
    let (agent_id, _) = setup_agent(&a, sipp.port).await;
    let (_, call) = a
        .post(
            "/v1/calls",
            json!({"agent_id": agent_id, "to": "+15551230000"}),
        )
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    wait_status(&a, &id, "in_progress").await;

    // B starts on the same database: A's call is not B's to close.
    let mut node_b = node("node-b", http_b, "32650-32699");
    wait_up(&b.base).await;
    let (_, seen) = b.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(seen["status"], "in_progress", "{seen:#}");
    assert_eq!(seen["node"], "node-a", "{seen:#}");

    node_a.kill().unwrap();
    node_a.wait().unwrap();
    let killed = Instant::now();
    let record = wait_final(&b, &id).await;
    println!(
        "node A killed: its call closed by B after {:?} (lease 3 s, renewed and swept every 1 s)",
        killed.elapsed()
    );
    super::assert_ended(&record, "failed", "node_lost", "engine");
    // SIPp got B's BYE, from the dialog A kept; without it the scenario never ends.
    tokio::task::spawn_blocking(move || sipp.finish(Duration::from_secs(15)))
        .await
        .unwrap()
        .unwrap();
    node_b.kill().unwrap();
    node_b.wait().unwrap();
}

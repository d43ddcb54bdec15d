//! Several `dialtoned` nodes on one PostgreSQL database, as real processes: a node's start
//! leaves another node's live call alone, and when a node dies (SIGKILL) a survivor, once the
//! dead node's lease has run out, hangs its call up on the wire (the BYE SIPp's scenario waits
//! for) and closes it as `node_lost`, by `engine`; with both nodes delivering from one
//! outbox, every webhook event arrives once, each call's in order; an organisation's cap on
//! concurrent calls holds across both nodes; and behind deploy/compose's Kamailio edge, a
//! draining node gets no new calls while its live one finishes.

use std::time::{Duration, Instant};

use dialtone_test_support::{SipTransport, Sipp, SippOptions, scenario};
use serde_json::json;

use super::{
    Api, dialtoned, dialtoned_command, postgres_url, receiver, setup_agent, wait_final,
    wait_status, wait_up,
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

    /// SIGTERM: the node drains (no new calls; live ones go on up to its drain time).
    fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (at most `limit`) for the process to exit; whether it did.
    async fn exited_within(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.process.try_wait().unwrap().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Node {
    /// A node never outlives its test, even one whose assertion failed.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A second process started under the id of a running node waits one lease (a killed run's
/// lease would have run out by then), then refuses to start, naming `DIALTONE_NODE_ID`: two
/// processes under one id would take each other's calls for their own. Once the first is
/// killed, a process under its id starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_a_running_nodes_id_refuses_to_start() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let lease = [("DIALTONE_NODE_LEASE_SECONDS", "3")];
    let a = cluster.start("node-a", "33150-33199", &lease).await;
    let mut twin = dialtoned_command(
        cluster.data.path(),
        dialtone_test_support::free_port().unwrap(),
        "33200-33249",
        &[
            ("DIALTONE_DATABASE_URL", cluster.url.as_str()),
            ("DIALTONE_NODE_ID", "node-a"),
            lease[0],
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = twin.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the twin did not give up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut twin.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("DIALTONE_NODE_ID") && stderr.contains("node-a"),
        "{stderr}"
    );
    // The first still serves.
    let (s, _) = a.api.get("/v1/calls").await;
    assert_eq!(s, 200);
    a.kill();
    let again = cluster.start("node-a", "33200-33249", &lease).await;
    let (s, _) = again.api.get("/v1/calls").await;
    assert_eq!(s, 200);
}

/// A call of `agent_id` dispatched through `api` (its webhooks to `webhook_url`), once in
/// progress.
async fn live_call(api: &Api, agent_id: &str, webhook_url: Option<&str>) -> String {
    let (_, call) = api
        .post(
            "/v1/calls",
            json!({"agent_id": agent_id, "to": "+15551230000", "webhook_url": webhook_url}),
        )
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    wait_status(api, &id, "in_progress").await;
    id
}

/// SIPp answering `calls` calls, each waiting for our BYE.
fn waiting_for_byes(calls: u32) -> Sipp {
    Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &SippOptions {
            calls,
            ..SippOptions::default()
        },
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

/// A killed node's eight live calls: B's start left them alone; once A's lease ran out B hangs
/// each up on the wire (the BYEs SIPp's scenario waits for) and closes it as `node_lost`, with
/// one `call.ended` each; B keeps serving, and A back under its id closes none of B's calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_calls_are_left_alone_then_closed_by_a_survivor_as_node_lost() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let sipp = waiting_for_byes(9);
    let (hook, got) = receiver(0).await;
    let lease = [("DIALTONE_NODE_LEASE_SECONDS", "3")];
    let a = cluster.start("node-a", "32600-32649", &lease).await;
    let (agent_id, _) = setup_agent(&a.api, sipp.port).await;
    let mut on_a = Vec::new();
    for _ in 0..8 {
        on_a.push(live_call(&a.api, &agent_id, Some(&hook)).await);
    }

    // B starts on the same database: A's calls are not B's to close.
    let b = cluster.start("node-b", "32650-32699", &lease).await;
    for id in &on_a {
        let (_, seen) = b.api.get(&format!("/v1/calls/{id}")).await;
        assert_eq!(seen["status"], "in_progress", "{seen:#}");
        assert_eq!(seen["node"], "node-a", "{seen:#}");
    }

    a.kill();
    let killed = Instant::now();
    for id in &on_a {
        let record = wait_final(&b.api, id).await;
        super::assert_ended(&record, "failed", "node_lost", "engine");
    }
    println!(
        "node A killed with 8 live calls: all closed by B after {:?} (lease 3 s, renewed and \
         swept every 1 s)",
        killed.elapsed()
    );
    // B keeps serving: a call of its own, which A, back under its id, leaves alone.
    let on_b = live_call(&b.api, &agent_id, None).await;
    let a = cluster.start("node-a", "32600-32649", &lease).await;
    let (_, seen) = a.api.get(&format!("/v1/calls/{on_b}")).await;
    assert_eq!(seen["status"], "in_progress", "{seen:#}");
    assert_eq!(seen["node"], "node-b", "{seen:#}");
    let (s, body) = a
        .api
        .post(&format!("/v1/calls/{on_b}/hangup"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    super::assert_ended(
        &wait_final(&a.api, &on_b).await,
        "completed",
        "completed",
        "api",
    );
    // SIPp got nine BYEs: B's for A's eight calls, from the dialogs A kept, and B's own.
    got_its_bye(sipp, Duration::from_secs(20)).await;
    // One `call.ended` each.
    for _ in 0..100 {
        if ended_events(&got) >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ended_events(&got), 8);
    a.kill();
    b.kill();
}

/// How long a survivor takes to find a killed node and close its call, over ten kills. Each
/// round a new node carries one live call and is killed (SIGKILL); B hangs the call up on the
/// wire (SIPp's BYE) and closes it as `node_lost`, once (one `call.ended` each). The spread
/// from the kill to the record's `ended_at` is printed for the notes: a 3 s lease renewed and
/// swept every second should put it between 2 and 4 s, plus the hang-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_killed_nodes_are_each_found_and_their_calls_closed_once() {
    const KILLS: usize = 10;
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let sipp = waiting_for_byes(u32::try_from(KILLS).unwrap());
    let (hook, got) = receiver(0).await;
    let lease = [("DIALTONE_NODE_LEASE_SECONDS", "3")];
    let b = cluster.start("node-b", "33250-33299", &lease).await;
    let (agent_id, _) = setup_agent(&b.api, sipp.port).await;
    let mut detected = Vec::new();
    for round in 0..KILLS {
        let a = cluster
            .start(&format!("node-a{round}"), "33300-33349", &lease)
            .await;
        let id = live_call(&a.api, &agent_id, Some(&hook)).await;
        a.kill();
        let killed = dialtone_storage::now_ms();
        let record = wait_final(&b.api, &id).await;
        super::assert_ended(&record, "failed", "node_lost", "engine");
        let ended =
            dialtone_model::time::parse_rfc3339(record["ended_at"].as_str().unwrap()).unwrap();
        detected.push(Duration::from_millis(
            u64::try_from(ended - killed).unwrap_or(0),
        ));
    }
    detected.sort();
    println!(
        "{KILLS} nodes killed, each with a live call: closed by the survivor after min {:?}, \
         median {:?}, max {:?} (lease 3 s, renewed and swept every 1 s)",
        detected[0],
        detected[KILLS / 2],
        detected[KILLS - 1]
    );
    got_its_bye(sipp, Duration::from_secs(20)).await;
    for _ in 0..100 {
        if ended_events(&got) >= KILLS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ended_events(&got), KILLS);
}

/// How many `call.ended` events the receiver got.
fn ended_events(got: &super::Received) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(_, _, body)| body.contains("\"call.ended\""))
        .count()
}

/// Two nodes deliver webhooks from one outbox while 60 calls dispatched alternately through
/// both (each answered, then hung up by SIPp) write their events: every call completes, and
/// every event arrives exactly once — counted by event id at the receiver — each call's in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_webhook_event_once_and_in_order() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let sipp = Sipp::uas(
        &scenario("answer_then_callee_hangs_up.xml"),
        SipTransport::Udp,
        &SippOptions {
            calls: 60,
            ..SippOptions::default()
        },
    )
    .unwrap();
    let (hook, got) = receiver(0).await;
    let a = cluster.start("node-a", "32700-32749", &[]).await;
    let b = cluster.start("node-b", "32750-32799", &[]).await;
    let (agent_id, _) = setup_agent(&a.api, sipp.port).await;
    let mut ids = Vec::new();
    for i in 0..60 {
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
        assert_eq!(record["status"], "completed", "{record:#}");
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
    let sipp = waiting_for_byes(1);
    let a = cluster.start("node-a", "32800-32849", &[]).await;
    let b = cluster.start("node-b", "32850-32899", &[]).await;
    let (agent_id, _) = setup_agent(&a.api, sipp.port).await;
    let id = live_call(&a.api, &agent_id, None).await;
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
    let sipp = waiting_for_byes(12);
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

/// Three nodes behind deploy/compose's Kamailio edge (its dispatcher probing them with OPTIONS
/// every second), a number answered by `builtin:echo`: three calls in land one on each node;
/// then node C is sent SIGTERM while its call goes on. It answers the probes 503, the edge marks
/// it down, and six more calls all land on A and B, while C's call runs to the caller's BYE and
/// C then exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_behind_the_kamailio_edge_gets_no_new_calls_and_finishes_its_own() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let free = || dialtone_test_support::free_port().unwrap().to_string();
    let sip: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free())).collect();
    let node = |i: usize| [("DIALTONE_SIP_ADDR", sip[i].as_str())];
    let a = cluster.start("node-a", "33000-33049", &node(0)).await;
    let b = cluster.start("node-b", "33050-33099", &node(1)).await;
    let drain = [node(2)[0], ("DIALTONE_DRAIN_TIMEOUT_SECONDS", "60")];
    let mut c = cluster.start("node-c", "33100-33149", &drain).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("dispatcher.list");
    let entries: String = sip.iter().map(|n| format!("1 sip:{n} 0 0\n")).collect();
    std::fs::write(&list, entries).unwrap();
    let cfg =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose/kamailio.cfg");
    let edge = dialtone_test_support::Kamailio::start_defined(
        &cfg,
        &[
            ("CARRIER", "127.0.0.1:9".to_owned()),
            ("DISPATCHER_LIST", list.display().to_string()),
            ("PING_INTERVAL", "1".to_owned()),
        ],
    )
    .unwrap();
    // The carrier is the edge: calls come from its address.
    let (s, trunk) = a
        .api
        .post(
            "/v1/trunks",
            json!({"name": "edge", "host": "127.0.0.1", "port": edge.port}),
        )
        .await;
    assert_eq!(s, 201, "{trunk}");
    let (s, number) = a
        .api
        .post(
            "/v1/numbers",
            json!({"e164": "+15550004000", "trunk_id": trunk["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{number}");
    let (s, agent) = a
        .api
        .post(
            "/v1/agents",
            json!({"name": "reception", "direction": "inbound", "brain": "builtin:echo",
                   "number_ids": [number["id"]]}),
        )
        .await;
    assert_eq!(s, 201, "{agent}");
    let tone =
        dialtone_test_support::write_ulaw_tone(&dir.path().join("tone.ulaw"), 440.0, 8000.0, 1)
            .unwrap();
    let calls_in = |calls: u32, talk_ms: &str| {
        Sipp::uac_playing(
            &scenario("caller_speaks_then_hangs_up.xml"),
            &format!("127.0.0.1:{}", edge.port),
            "127.0.0.1",
            &SippOptions {
                calls,
                replacements: [
                    ("NUMBER", "+15550004000"),
                    ("CALLER", "+15557770000"),
                    ("FROM_USER", "+15557770000"),
                    ("TONE", &tone.display().to_string()),
                    ("TALK_MS", talk_ms),
                ]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
                ..SippOptions::default()
            },
        )
        .unwrap()
    };
    // Three long calls: round robin puts one on each node.
    let first = calls_in(3, "12000");
    let live = wait_for_calls(&a.api, 3, "in_progress").await;
    let on: std::collections::BTreeSet<&str> =
        live.iter().filter_map(|c| c["node"].as_str()).collect();
    assert_eq!(
        on.len(),
        3,
        "one call on each node: {live:#?}\n{}",
        edge.log()
    );
    c.terminate();
    let down = format!("node sip:{} is down", sip[2]);
    for _ in 0..200 {
        if edge.log().contains(&down) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(edge.log().contains(&down), "{}", edge.log());
    // Six short calls: none lands on the draining node, and none needed a second try.
    let second = calls_in(6, "500");
    tokio::task::spawn_blocking(move || second.finish(Duration::from_secs(40)))
        .await
        .unwrap()
        .unwrap();
    let all = wait_for_calls(&a.api, 9, "").await;
    let later: Vec<&serde_json::Value> = all
        .iter()
        .filter(|c| !live.iter().any(|l| l["id"] == c["id"]))
        .collect();
    assert_eq!(later.len(), 6);
    for call in &later {
        assert_ne!(call["node"], "node-c", "{call:#}");
        let record = wait_final(&a.api, call["id"].as_str().unwrap()).await;
        assert_eq!(record["status"], "completed", "{record:#}");
    }
    assert!(
        !edge.log().contains("trying the next"),
        "the edge knew C was down before sending it calls: {}",
        edge.log()
    );
    // C's own call is still live, goes on to the caller's BYE, and C then exits.
    let on_c = live.iter().find(|l| l["node"] == "node-c").unwrap();
    let id = on_c["id"].as_str().unwrap();
    let (_, seen) = a.api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(seen["status"], "in_progress", "{seen:#}");
    tokio::task::spawn_blocking(move || first.finish(Duration::from_secs(40)))
        .await
        .unwrap()
        .unwrap();
    let record = wait_final(&a.api, id).await;
    super::assert_ended(&record, "completed", "completed", "caller");
    assert!(
        c.exited_within(Duration::from_secs(15)).await,
        "C exits once drained"
    );
    a.kill();
    b.kill();
}

/// Waits until there are `n` calls (all with status `status`, unless it is empty) and returns
/// them.
async fn wait_for_calls(api: &Api, n: usize, status: &str) -> Vec<serde_json::Value> {
    let mut calls = Vec::new();
    for _ in 0..400 {
        let (_, page) = api.get("/v1/calls").await;
        calls = page["data"].as_array().cloned().unwrap_or_default();
        let settled = status.is_empty() || calls.iter().all(|c| c["status"] == status);
        if calls.len() >= n && settled {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} calls ({status}) did not come: {calls:#?}");
}

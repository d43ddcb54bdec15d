//! One real call end to end: `POST /v1/calls` on a running daemon → SIP INVITE to SIPp playing
//! the callee → RTP both ways (the callee speaks a tone, `builtin:echo` sends it back) → the
//! callee hangs up → the stored call record, read back over HTTP. Plus the API's refusals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use dialtone_daemon::{Config, Daemon};
use dialtone_test_support::{
    SipTransport, Sipp, SippOptions, openssl_hmac_sha256, scenario, write_ulaw_tone,
};
use serde_json::{Value, json};

const KEY: &str = "test-key-123";

fn config(dir: &std::path::Path) -> Config {
    // Each daemon of this run its own 40 ports, so no call ever gets a port another test's
    // peer may still be sending to; below the kernel's ephemeral ports (32768 and up).
    static WORLDS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let world = WORLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 60;
    let base = 20000 + (std::process::id() % 5) as u16 * 2400 + world * 40;
    let database_url = format!("sqlite://{}", dir.join("e2e.db").display());
    let data_dir = dir.display().to_string();
    let rtp_ports = format!("{base}-{}", base + 39);
    let env = |key: &str| {
        let value = match key {
            "DIALTONE_HTTP_ADDR" | "DIALTONE_GRPC_ADDR" | "DIALTONE_SIP_ADDR" => "127.0.0.1:0",
            "DIALTONE_RTP_PORTS" => &rtp_ports,
            "DIALTONE_DATABASE_URL" => &database_url,
            "DIALTONE_DATA_DIR" => &data_dir,
            "DIALTONE_API_KEY" => KEY,
            "DIALTONE_BRAIN_ADDR" => "builtin:echo",
            "DIALTONE_WEBHOOK_SECRET" => "whsec-test",
            "DIALTONE_WEBHOOK_ALLOW_PRIVATE" => "true",
            "DIALTONE_MEDIA_WORKERS" => "1",
            _ => return None,
        };
        Some(value.to_owned())
    };
    Config::load_from(None, &env).unwrap()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// The Prometheus page, read with the operator key.
    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
}

async fn setup_agent(api: &Api, sipp_port: u16) -> (String, String) {
    let (s, trunk) = api
        .post(
            "/v1/trunks",
            json!({"name": "sipp", "host": "127.0.0.1", "port": sipp_port, "transport": "udp", "password": "hunter2"}),
        )
        .await;
    assert_eq!(s, 201, "{trunk}");
    assert!(trunk.get("password").is_none(), "password is write-only");
    let (s, number) = api
        .post(
            "/v1/numbers",
            json!({"e164": "+15559870000", "trunk_id": trunk["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{number}");
    let (s, agent) = api
        .post(
            "/v1/agents",
            json!({
                "name": "echo", "direction": "outbound", "instructions": "Repeat after the caller.",
                "brain": "builtin:echo", "number_ids": [number["id"]],
            }),
        )
        .await;
    assert_eq!(s, 201, "{agent}");
    (
        agent["id"].as_str().unwrap().to_owned(),
        number["id"].as_str().unwrap().to_owned(),
    )
}

/// A daemon on its own SQLite file, SIPp playing `scenario` as the trunk (when `None`, the trunk
/// is a UDP socket that never answers), and an echo agent calling through it. Scenarios may use
/// `__TONE__`: three seconds of 440 Hz at amplitude 10000 (-13.3 dBFS RMS), as PCMU.
struct World {
    _dir: tempfile::TempDir,
    sipp: Option<Sipp>,
    _silent_trunk: Option<std::net::UdpSocket>,
    daemon: Daemon,
    api: Api,
    agent_id: String,
}

async fn world(scenario_name: Option<&str>, keys: &[(&str, &str)]) -> World {
    world_on(|_| {}, scenario_name, keys).await
}

/// [`world`] with the daemon's configuration changed by `tweak` first.
async fn world_on(
    tweak: impl FnOnce(&mut Config),
    scenario_name: Option<&str>,
    keys: &[(&str, &str)],
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let tone = write_ulaw_tone(&dir.path().join("tone.ulaw"), 440.0, 10000.0, 3).unwrap();
    let sipp = scenario_name.map(|name| {
        let mut replacements: Vec<(String, String)> = keys
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        replacements.push(("tone".into(), tone.display().to_string()));
        Sipp::uas(
            &scenario(name),
            SipTransport::Udp,
            &SippOptions {
                replacements,
                ..SippOptions::default()
            },
        )
        .unwrap()
    });
    let silent_trunk = sipp
        .is_none()
        .then(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    let mut config = config(dir.path());
    tweak(&mut config);
    let daemon = Daemon::start(config).await.unwrap();
    let api = Api {
        base: format!("http://{}", daemon.http_addr),
        http: reqwest::Client::new(),
    };
    let trunk_port = match (&sipp, &silent_trunk) {
        (Some(s), _) => s.port,
        (None, Some(socket)) => socket.local_addr().unwrap().port(),
        (None, None) => unreachable!("one of the two is there"),
    };
    let (agent_id, _) = setup_agent(&api, trunk_port).await;
    World {
        _dir: dir,
        sipp,
        _silent_trunk: silent_trunk,
        daemon,
        api,
        agent_id,
    }
}

impl World {
    async fn dispatch(&self, extra: Value) -> String {
        let mut body = json!({"agent_id": self.agent_id, "to": "+15551230000"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (s, call) = self.api.post("/v1/calls", body).await;
        assert_eq!(s, 201, "{call}");
        call["id"].as_str().unwrap().to_owned()
    }

    async fn finish(self) {
        if let Some(sipp) = self.sipp {
            sipp.finish(Duration::from_secs(20)).unwrap();
        }
        self.daemon.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatched_call_goes_through_sip_and_rtp_into_the_record() {
    let w = world(
        Some("callee_speaks_then_hangs_up.xml"),
        &[("talk_ms", "2500")],
    )
    .await;
    let (s, call) = w
        .api
        .post(
            "/v1/calls",
            json!({"agent_id": w.agent_id, "to": "+15551230000", "context": {"appointment": "tomorrow 10:00"}, "metadata": {"crm_id": "42"}}),
        )
        .await;
    assert_eq!(s, 201, "{call}");
    assert_eq!(call["status"], "queued");
    assert_eq!(call["instructions"], "Repeat after the caller.");
    let record = wait_final(&w.api, call["id"].as_str().unwrap()).await;
    assert_ended(&record, "completed", "completed", "callee");
    // Answering-machine detection is off: an answered call was answered by someone unknown.
    assert_eq!(record["answered_by"], "unknown", "{record:#}");
    assert!(
        record["sip_call_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(record["metadata"], json!({"crm_id": "42"}));
    assert_eq!(record["context"], json!({"appointment": "tomorrow 10:00"}));
    assert_eq!(record["from_number"], "+15559870000");
    for t in [
        "created_at",
        "dialed_at",
        "ringing_at",
        "answered_at",
        "ended_at",
    ] {
        assert!(record[t].is_string(), "{t} missing: {record:#}");
    }
    let talk = record["talk_duration_ms"].as_i64().unwrap();
    assert!((2000..10000).contains(&talk), "talk {talk} ms");
    // Audio checked as audio: the callee's tone arrived loud and in most frames, and the
    // echo brain sent a full stream back.
    let media = &record["media_stats"];
    assert!(media["packets_in"].as_u64().unwrap() >= 80, "{media}");
    assert!(media["voiced_frames_in"].as_u64().unwrap() >= 80, "{media}");
    let peak = media["peak_level_dbfs"].as_f64().unwrap();
    assert!((-16.0..-10.0).contains(&peak), "peak {peak} dBFS");
    assert!(media["packets_out"].as_u64().unwrap() >= 80, "{media}");
    assert_eq!(media["malformed"], 0, "{media}");
    // Nothing is lost on loopback, and a frame is concealed only for a packet that came after
    // its playout time (a scheduling hiccup of a busy machine, counted as late).
    assert_eq!(media["lost"], 0, "{media}");
    assert!(
        media["concealed_frames"].as_u64() <= media["late_packets"].as_u64(),
        "{media}"
    );
    let metrics = w.api.metrics().await;
    // Trunks are labelled by id: their names are the tenants' own.
    let completed = format!(
        "dialtone_calls_total{{status=\"completed\",end_reason=\"completed\",trunk=\"{}\"}}",
        record["trunk_id"].as_str().unwrap()
    );
    assert!(!metrics.contains("trunk=\"sipp\""), "{metrics}");
    for series in [
        completed.as_str(),
        "dialtone_dispatch_to_invite_seconds",
        "dialtone_setup_seconds",
        "dialtone_active_calls",
        "dialtone_jitter_buffer_ms",
        "dialtone_media_step_seconds_bucket",
        "dialtone_media_outbound_latency_seconds_sum",
        "dialtone_media_workers 1",
        // The speech loop took every frame in time; one worker has no other to stand in for.
        "dialtone_inbound_ring_overflows_total 0",
        "dialtone_media_steps_stood_in_total 0",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    // Every frame of the call went through the media worker's latency histogram.
    let inbound_frames: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dialtone_media_inbound_latency_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(inbound_frames >= 80, "{inbound_frames}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_refusals_name_the_field_and_use_the_right_status() {
    let w = world(None, &[]).await;
    let (api, agent_id) = (&w.api, w.agent_id.clone());
    let cases = [
        (
            json!({"agent_id": agent_id, "to": "+15551230000", "persona": "x"}),
            400,
            Some("persona"),
        ),
        (
            json!({"agent_id": agent_id, "to": "+15551230000", "voicemail_action": "hangup"}),
            400,
            Some("voicemail_action"),
        ),
        (
            json!({"agent_id": agent_id, "to": "+15551230000", "contxt": {}}),
            400,
            Some("contxt"),
        ),
        (
            json!({"agent_id": agent_id, "to": "5551230000"}),
            400,
            Some("to"),
        ),
        (
            json!({"agent_id": "not-a-uuid", "to": "+15551230000"}),
            400,
            Some("agent_id"),
        ),
        (json!({"to": "+15551230000"}), 400, Some("agent_id")),
        (
            json!({"agent_id": agent_id, "to": "+15551230000", "context": [1]}),
            400,
            Some("context"),
        ),
        (
            json!({"agent_id": agent_id, "to": "+15551230000", "metadata": "x"}),
            400,
            Some("metadata"),
        ),
        (
            json!({"agent_id": agent_id, "to": "+15551230000", "webhook_url": "ftp://x"}),
            400,
            Some("webhook_url"),
        ),
        (
            json!({"agent_id": agent_id, "to": "+15551230000", "from_number": "+15550000001"}),
            400,
            Some("from_number"),
        ),
        (
            json!({"agent_id": "0190f5a0-0000-7000-8000-000000000000", "to": "+15551230000"}),
            404,
            None,
        ),
    ];
    for (body, status, field) in cases {
        let (s, err) = api.post("/v1/calls", body.clone()).await;
        assert_eq!(s, status, "{body} -> {err}");
        assert_eq!(err["error"]["field"].as_str(), field, "{body} -> {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (_, err) = api
        .post(
            "/v1/calls",
            json!({"agent_id": agent_id, "to": "+15551230000", "persona": "x"}),
        )
        .await;
    assert!(err["error"]["message"].as_str().unwrap().contains("agent"));
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/v1/calls", api.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let (s, _) = api
        .get("/v1/calls/0190f5a0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(s, 404);
    w.finish().await;
}

/// The record's status, end reason code and who ended the call.
fn assert_ended(record: &Value, status: &str, code: &str, by: &str) {
    assert_eq!(
        (
            record["status"].as_str(),
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some(status), Some(code), Some(by)),
        "{record:#}"
    );
}

async fn wait_final(api: &Api, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let (_, c) = api.get(&format!("/v1/calls/{id}")).await;
        if ["completed", "busy", "no_answer", "failed", "canceled"]
            .contains(&c["status"].as_str().unwrap_or(""))
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, c) = api.get(&format!("/v1/calls/{id}")).await;
    panic!("call {id} did not end: {c:#}");
}

async fn wait_status(api: &Api, id: &str, status: &str) {
    for _ in 0..300 {
        let (_, c) = api.get(&format!("/v1/calls/{id}")).await;
        if c["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("call {id} never reached {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_while_ringing_cancels_and_the_record_says_api() {
    let w = world(Some("ring_until_cancel.xml"), &[]).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "ringing").await;
    let (s, _) = w
        .api
        .post(&format!("/v1/calls/{id}/hangup"), json!({}))
        .await;
    assert_eq!(s, 200);
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "canceled", "canceled", "api");
    assert_eq!(record["end_reason"]["sip_status"], 487);
    assert!(record["answered_at"].is_null());
    let (s, err) = w
        .api
        .post(&format!("/v1/calls/{id}/hangup"), json!({}))
        .await;
    assert_eq!(s, 409, "{err}");
    w.finish().await;
}

/// Disabling an organisation with `end_live_calls` hangs its live calls up as the API's
/// hang-up does (here: a CANCEL to a ringing callee), and asks for `disabled: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_an_organisation_can_end_its_live_calls() {
    let w = world(Some("ring_until_cancel.xml"), &[]).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "ringing").await;
    let (_, orgs) = w.api.get("/v1/organizations").await;
    let org = orgs["data"][0]["id"].as_str().unwrap().to_owned();
    let patch = format!("/v1/organizations/{org}");
    let (s, err) = w.api.patch(&patch, json!({"end_live_calls": true})).await;
    assert_eq!(
        (s, err["error"]["field"].clone()),
        (400, json!("end_live_calls")),
        "{err}"
    );
    let (s, disabled) = w
        .api
        .patch(&patch, json!({"disabled": true, "end_live_calls": true}))
        .await;
    assert_eq!(s, 200, "{disabled}");
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "canceled", "canceled", "api");
    let (s, _) = w.api.patch(&patch, json!({"disabled": false})).await;
    assert_eq!(s, 200);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_can_hold_and_resume_and_we_answer_from_the_media_state() {
    let w = world(Some("callee_holds_and_resumes.xml"), &[]).await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "callee");
    // SIPp checked our answers (recvonly while held, sendrecv after) and fails otherwise.
    w.finish().await;
}

/// What the test's webhook receiver got: signature header, event id, raw body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A webhook receiver on loopback that answers 503 to its first `fail_first` requests.
async fn receiver(fail_first: usize) -> (String, Received) {
    use axum::http::{HeaderMap, StatusCode};
    let got: Received = Default::default();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(fail_first));
    let (g, f) = (got.clone(), failures.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (g, f) = (g.clone(), f.clone());
            async move {
                if f.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    f.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                g.lock().unwrap().push((
                    header("dialtone-signature"),
                    header("dialtone-event-id"),
                    body,
                ));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_in_order_once_each_despite_receiver_failures() {
    let (url, got) = receiver(2).await;
    let w = world(
        Some("callee_speaks_then_hangs_up.xml"),
        &[("talk_ms", "500")],
    )
    .await;
    let id = w.dispatch(json!({"webhook_url": url})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed");
    let mut events = Vec::new();
    for _ in 0..300 {
        events = w.api.get(&format!("/v1/calls/{id}/events")).await.1["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events.len() == 5 && events.iter().all(|e| e["state"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "call.queued",
            "call.dialing",
            "call.ringing",
            "call.answered",
            "call.ended"
        ]
    );
    assert!(
        events.iter().all(|e| e["state"] == "delivered"),
        "{events:#?}"
    );
    assert_eq!(
        events[0]["attempts"], 3,
        "the first event waited out two 503s"
    );
    let receiver_got = got;
    let got = receiver_got.lock().unwrap().clone();
    assert_eq!(got.len(), 5, "each event once");
    for (i, (signature, event_id, body)) in got.iter().enumerate() {
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["sequence"], i as u64 + 1, "in order");
        assert_eq!(event["id"].as_str().unwrap(), event_id);
        assert_eq!(event["call_id"], id.as_str());
        let (t, v1) = signature.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        assert_eq!(
            v1,
            openssl_hmac_sha256("whsec-test", &format!("{t}.{body}")).unwrap(),
            "signature"
        );
    }
    let ended: Value = serde_json::from_str(&got[4].2).unwrap();
    assert_eq!(ended["type"], "call.ended");
    assert_eq!(ended["data"]["call"]["status"], "completed");
    assert_eq!(ended["data"]["call"]["end_reason"]["by"], "callee");
    // Redelivery on request sends the same event (same id) once more.
    let first_id = events[0]["id"].as_str().unwrap();
    let (s, queued) = w
        .api
        .post(&format!("/v1/events/{first_id}/redeliver"), json!({}))
        .await;
    assert_eq!(s, 202, "{queued}");
    let (s, _) = w
        .api
        .post(
            "/v1/events/0190f5a0-0000-7000-8000-000000000000/redeliver",
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
    let mut again = 0;
    for _ in 0..100 {
        again = receiver_got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, event_id, _)| event_id == first_id)
            .count();
        if again == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(again, 2);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_webhook_urls_are_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.private_destinations = dialtone_engine::outbound::PrivateDestinations::None;
    let d = Daemon::start(config).await.unwrap();
    let api = Api {
        base: format!("http://{}", d.http_addr),
        http: reqwest::Client::new(),
    };
    let (agent_id, _) = setup_agent(&api, 5060).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest",
        "https://[::1]/x",
        "http://10.0.0.5/",
    ] {
        let (s, err) = api
            .post(
                "/v1/calls",
                json!({"agent_id": agent_id, "to": "+15551230000", "webhook_url": url}),
            )
            .await;
        assert_eq!(s, 400, "{url}: {err}");
        assert_eq!(err["error"]["field"], "webhook_url");
    }
    // One parser for the check and the connection: a backslash ends the authority, so this
    // host is the loopback address, not the public one after the `@`.
    let (s, err) = api
        .post(
            "/v1/calls",
            json!({"agent_id": agent_id, "to": "+15551230000",
                   "webhook_url": "http://127.0.0.1:28991\\@93.184.216.34/"}),
        )
        .await;
    assert_eq!(
        (s, err["error"]["field"].clone()),
        (400, json!("webhook_url")),
        "{err}"
    );
    // What an agent points the daemon at follows the same policy, at creation and PATCH.
    let agent = format!("/v1/agents/{agent_id}");
    let tool = json!([{"name": "t", "description": "d", "parameters": {"type": "object"},
                       "url": "http://169.254.169.254/latest"}]);
    let (s, err) = api.patch(&agent, json!({ "tools": tool })).await;
    assert_eq!(
        (s, err["error"]["field"].clone()),
        (400, json!("tools")),
        "{err}"
    );
    for (field, value) in [
        ("webhook_url", "http://127.0.0.1:9/hook"),
        ("brain", "grpc://127.0.0.1:7000"),
        ("brain", "grpc://[::ffff:10.0.0.1]:7000"),
        ("brain", "grpc://localhost:7000"),
    ] {
        let (s, err) = api.patch(&agent, json!({ field: value })).await;
        assert_eq!(
            (s, err["error"]["field"].clone()),
            (400, json!(field)),
            "{value}: {err}"
        );
        let (s, err) = api
            .post("/v1/agents", json!({"name": "x", field: value}))
            .await;
        assert_eq!(
            (s, err["error"]["field"].clone()),
            (400, json!(field)),
            "{value}: {err}"
        );
    }
    d.shutdown(Duration::from_secs(1)).await;
}

/// Every tenant string that reaches a SIP message is checked against the grammar it is
/// printed in, at creation and PATCH (a line break would inject a header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_strings_that_would_break_a_sip_message_are_refused() {
    let w = world(None, &[]).await;
    let long = "h".repeat(5000);
    for (field, value) in [
        ("username", "trunkuser\r\nX-Injected: yes"),
        ("from_domain", "evil.example>;tag=1"),
        ("host", ""),
        ("host", "a b"),
        ("host", "sip.example.com\r\nVia: x"),
        ("host", long.as_str()),
        ("realm", "r\"\r\n"),
        ("name", ""),
    ] {
        let mut body = json!({"name": "t-injected", "host": "sip.example.com"});
        body[field] = json!(value);
        let (s, err) = w.api.post("/v1/trunks", body).await;
        assert_eq!(
            (s, err["error"]["field"].clone()),
            (400, json!(field)),
            "{value:?}: {err}"
        );
    }
    let (s, trunks) = w.api.get("/v1/trunks").await;
    assert_eq!(s, 200);
    let id = trunks["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, err) = w
        .api
        .patch(
            &format!("/v1/trunks/{id}"),
            json!({"username": "u\nX-Injected: 1"}),
        )
        .await;
    assert_eq!(
        (s, err["error"]["field"].clone()),
        (400, json!("username")),
        "{err}"
    );
    // An unknown route answers in the API's one error shape.
    let (s, err) = w.api.get("/v1/no-such-route").await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (404, json!("not_found")),
        "{err}"
    );
    // So do a path that is not UTF-8 once decoded, and a method a route does not have.
    let (s, err) = w.api.get("/v1/calls/%FF%FE").await;
    assert!(
        (400..500).contains(&s) && err["error"]["code"].is_string(),
        "{s} {err}"
    );
    let (s, err) = w
        .api
        .send(reqwest::Method::PUT, "/v1/calls", Some(json!({})))
        .await;
    assert_eq!((s, err["error"]["code"].is_string()), (405, true), "{err}");
    // So does a URI longer than hyper reads, refused before any router sees it (sent by hand:
    // HTTP clients refuse to build such a URI).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = w.api.base.trim_start_matches("http://");
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/calls?to={} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\r\n",
        "1".repeat(70_000)
    );
    let _ = client.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
    let err: Value = serde_json::from_str(body).unwrap();
    assert_eq!(err["error"]["code"], "uri_too_long", "{err}");
    w.finish().await;
}

/// A client that connects and says nothing is cut off by both listeners, the HTTP API's and
/// gRPC's, once the first-byte limit (10 s) has passed, rather than holding a socket for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_is_closed_by_both_listeners() {
    use tokio::io::AsyncReadExt;
    let w = world(None, &[]).await;
    let http = w.api.base.trim_start_matches("http://").to_owned();
    let silent = |addr: String| async move {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(25), client.read_to_end(&mut rest)).await
    };
    let (http, grpc) = tokio::join!(silent(http), silent(w.daemon.grpc_addr.to_string()));
    assert!(http.is_ok(), "the HTTP listener kept a silent connection");
    assert!(grpc.is_ok(), "the gRPC listener kept a silent connection");
    w.finish().await;
}

/// The real `dialtoned` binary on loopback, its data in `data_dir`, its log on stderr kept.
fn dialtoned(
    data_dir: &std::path::Path,
    http: u16,
    rtp_ports: &str,
    extra: &[(&str, &str)],
) -> std::process::Child {
    dialtoned_command(data_dir, http, rtp_ports, extra)
        .spawn()
        .unwrap()
}

/// The command [`dialtoned`] runs, its output thrown away, for a caller to change first.
fn dialtoned_command(
    data_dir: &std::path::Path,
    http: u16,
    rtp_ports: &str,
    extra: &[(&str, &str)],
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dialtoned"));
    command
        .env("DIALTONE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("DIALTONE_GRPC_ADDR", "127.0.0.1:0")
        .env("DIALTONE_SIP_ADDR", "127.0.0.1:0")
        .env("DIALTONE_RTP_PORTS", rtp_ports)
        .env("DIALTONE_DATA_DIR", data_dir)
        .env("DIALTONE_API_KEY", KEY)
        .env("DIALTONE_WEBHOOK_SECRET", "whsec-test")
        .env("DIALTONE_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("DIALTONE_LOG", "warn")
        .envs(extra.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// Waits until the daemon at `base` is ready.
async fn wait_up(base: &str) {
    for _ in 0..200 {
        if reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("dialtoned did not come up");
}

/// The real binary gets SIGTERM during an answered call: from that moment dispatches are
/// refused (503) and it is not ready; the call goes on for the drain time, is then ended with
/// `engine_shutdown` (a BYE, which SIPp's scenario waits for), and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_ends_live_calls_as_engine_shutdown_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let sipp = Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &SippOptions::default(),
    )
    .unwrap();
    let http = dialtone_test_support::free_port().unwrap();
    let api = Api {
        base: format!("http://127.0.0.1:{http}"),
        http: reqwest::Client::new(),
    };
    let drain = [("DIALTONE_DRAIN_TIMEOUT_SECONDS", "2")];
    let mut daemon = dialtoned(tmp.path(), http, "32100-32199", &drain);
    wait_up(&api.base).await;
    let (agent_id, _) = setup_agent(&api, sipp.port).await;
    let (_, call) = api
        .post(
            "/v1/calls",
            json!({"agent_id": agent_id, "to": "+15551230000"}),
        )
        .await;
    let id = call["id"].as_str().unwrap().to_owned();
    wait_status(&api, &id, "in_progress").await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut refused = (0, Value::Null);
    for _ in 0..50 {
        refused = api
            .post(
                "/v1/calls",
                json!({"agent_id": agent_id, "to": "+15551230000"}),
            )
            .await;
        if refused.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert_eq!(refused.1["error"]["code"], "unavailable");
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down")
    );
    let ready = reqwest::get(format!("{}/readyz", api.base)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    // Still live while the drain time runs.
    let (_, c) = api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(c["status"], "in_progress");
    let mut exit = None;
    for _ in 0..300 {
        exit = daemon.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = exit.expect("dialtoned did not exit within 15 s of SIGTERM");
    assert!(exit.success(), "{exit:?}");
    sipp.finish(Duration::from_secs(10)).unwrap();

    // What was written before the exit, read by the next start.
    let mut again = dialtoned(tmp.path(), http, "32100-32199", &[]);
    wait_up(&api.base).await;
    let (_, record) = api.get(&format!("/v1/calls/{id}")).await;
    assert_ended(&record, "completed", "engine_shutdown", "engine");
    let talk = record["talk_duration_ms"].as_i64().unwrap();
    assert!(
        talk >= 2000,
        "the call went on for the drain time: {talk} ms"
    );
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn bad_configuration_stops_start_up_with_one_message_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dialtoned"))
            .args(args)
            .env("DIALTONE_DATA_DIR", tmp.path())
            .env("DIALTONE_HTTP_ADDR", "127.0.0.1:0")
            .env("DIALTONE_GRPC_ADDR", "127.0.0.1:0")
            .env("DIALTONE_SIP_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let keys = [("DIALTONE_API_KEY", "k"), ("DIALTONE_WEBHOOK_SECRET", "s")];
    let stderr = run(&[], &[keys[1]]);
    assert!(
        stderr.contains("invalid configuration: DIALTONE_API_KEY: is required"),
        "{stderr}"
    );
    let mut bad = keys.to_vec();
    bad.push(("DIALTONE_RTP_PORTS", "20000"));
    let stderr = run(&[], &bad);
    assert!(
        stderr.contains("DIALTONE_RTP_PORTS: \"20000\" is not a range like 20000-20999"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one message: {stderr}");
    let file = tmp.path().join("dialtone.toml");
    std::fs::write(&file, "sip_addres = \"127.0.0.1:5060\"\n").unwrap();
    let stderr = run(&["--config", file.to_str().unwrap()], &keys);
    assert!(stderr.contains("unknown key `sip_addres`"), "{stderr}");
    std::fs::write(&file, "log_format = \"yaml\"\n").unwrap();
    let stderr = run(&["--config", file.to_str().unwrap()], &keys);
    assert!(
        stderr.contains("DIALTONE_LOG_FORMAT: \"yaml\" (`log_format` in "),
        "{stderr}"
    );
}

/// A daemon killed with SIGKILL during a call, and started again.
struct Killed {
    api: Api,
    sipp: Sipp,
    second: std::process::Child,
    /// The daemon's data directory, kept for the second start.
    _data: tempfile::TempDir,
}

/// Runs SIPp's `scenario` as the callee of a real `dialtoned` (RTP ports `rtp_ports`,
/// webhooks to `webhook` if given), kills it with SIGKILL once the call is `status`, starts it
/// again on the same SIP address (as a restarted daemon listens, and where SIPp answers), and
/// checks the call was closed as `engine_restart`.
async fn killed_mid_call(
    scenario_name: &str,
    rtp_ports: &str,
    status: &str,
    webhook: Option<&str>,
) -> Killed {
    let data = tempfile::tempdir().unwrap();
    let sipp = Sipp::uas(
        &scenario(scenario_name),
        SipTransport::Udp,
        &SippOptions::default(),
    )
    .unwrap();
    let sip = format!("127.0.0.1:{}", dialtone_test_support::free_port().unwrap());
    let start = |http: u16| {
        dialtoned(
            data.path(),
            http,
            rtp_ports,
            &[("DIALTONE_SIP_ADDR", sip.as_str())],
        )
    };
    let http = dialtone_test_support::free_port().unwrap();
    let api = Api {
        base: format!("http://127.0.0.1:{http}"),
        http: reqwest::Client::new(),
    };
    let mut first = start(http);
    wait_up(&api.base).await;
    let (agent_id, _) = setup_agent(&api, sipp.port).await;
    let mut request = json!({"agent_id": agent_id, "to": "+15551230000"});
    if let Some(url) = webhook {
        request["webhook_url"] = json!(url);
    }
    let (_, call) = api.post("/v1/calls", request).await;
    let id = call["id"].as_str().unwrap().to_owned();
    wait_status(&api, &id, status).await;
    first.kill().unwrap();
    first.wait().unwrap();

    let second = start(http);
    wait_up(&api.base).await;
    let record = wait_final(&api, &id).await;
    assert_ended(&record, "failed", "engine_restart", "engine");
    Killed {
        api,
        sipp,
        second,
        _data: data,
    }
}

/// The real binary, killed with SIGKILL while a call rings: the next start sends the CANCEL
/// SIPp's scenario waits for (and acknowledges its 487), closes the call with `engine_restart`,
/// and every event still reaches the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_the_next_start_closes_the_call_and_delivers_its_events() {
    let (url, got) = receiver(0).await;
    let Killed {
        sipp, mut second, ..
    } = killed_mid_call(
        "ring_until_cancel.xml",
        "32000-32099",
        "ringing",
        Some(&url),
    )
    .await;
    let mut kinds = Vec::new();
    for _ in 0..100 {
        let mut seen: Vec<(u64, String)> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, body)| {
                let e: Value = serde_json::from_str(body).unwrap();
                (
                    e["sequence"].as_u64().unwrap(),
                    e["type"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        seen.sort();
        seen.dedup();
        kinds = seen.into_iter().map(|(_, k)| k).collect();
        if kinds.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        kinds,
        ["call.queued", "call.dialing", "call.ringing", "call.ended"]
    );
    // SIPp got the CANCEL and the ACK of its 487; without them the scenario never ends.
    tokio::task::spawn_blocking(move || sipp.finish(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    second.kill().unwrap();
    second.wait().unwrap();
}

/// The real binary, killed with SIGKILL during an answered call: the next start sends the BYE
/// SIPp's scenario waits for, from the dialog kept in storage at answer, before it closes the
/// call with `engine_restart`, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_the_next_start_sends_the_bye_of_an_answered_call() {
    let Killed {
        api,
        sipp,
        mut second,
        ..
    } = killed_mid_call(
        "answer_then_we_hang_up.xml",
        "32200-32299",
        "in_progress",
        None,
    )
    .await;
    // SIPp got the BYE (in the dialog it answered: its scenario matches the Call-ID) and
    // answered it; without it the scenario never ends.
    tokio::task::spawn_blocking(move || sipp.finish(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let metrics = api.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dialtone_leftover_hangups_total")
                && l.contains(r#"request="bye""#)
                && l.contains(r#"outcome="answered""#)
                && l.ends_with(" 1")),
        "{metrics}"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_never_dials_twice_and_calls_list_in_pages() {
    let w = world(Some("reject.xml"), &[("status", "486")]).await;
    let body = json!({"agent_id": w.agent_id, "to": "+15551230000", "metadata": {"attempt": 1}});
    let send = |body: Value| {
        w.api
            .http
            .post(format!("{}/v1/calls", w.api.base))
            .bearer_auth(KEY)
            .header("Idempotency-Key", "order-42")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the same call, not a second one");
    let other = send(json!({"agent_id": w.agent_id, "to": "+15551239999"}))
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 409);
    // Dialled once, and the callee's 486 is on the record as it said it.
    let record = wait_final(&w.api, first["id"].as_str().unwrap()).await;
    assert_ended(&record, "busy", "busy", "callee");
    assert_eq!(record["end_reason"]["sip_status"], 486);
    // SIPp serves one call (-m 1): a second INVITE would make it fail.
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_list_newest_first_in_pages_with_filters() {
    let w = world(None, &[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(w.dispatch(json!({"to": format!("+1555123000{i}")})).await);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/calls?limit=2".to_owned();
    loop {
        let (s, page) = w.api.get(&path).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/calls?limit=2&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let (_, one) = w.api.get("/v1/calls?to=%2B15551230003").await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    for bad in [
        "/v1/calls?limit=500",
        "/v1/calls?status=nope",
        "/v1/calls?cursor=zz",
        "/v1/calls?colour=red",
    ] {
        let (s, err) = w.api.get(bad).await;
        assert_eq!(s, 400, "{bad}: {err}");
    }
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunks_numbers_and_agents_are_changed_and_deleted() {
    let w = world(None, &[]).await;
    let api = &w.api;
    let (_, trunks) = api.get("/v1/trunks").await;
    let trunk_id = trunks["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(trunks["data"][0]["has_password"], true);
    // PATCH changes what it names and keeps the rest; null clears.
    let (s, trunk) = api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/trunks/{trunk_id}"),
            Some(json!({"port": 5080, "transport": "tcp"})),
        )
        .await;
    assert_eq!(s, 200, "{trunk}");
    assert_eq!(
        (trunk["port"].clone(), trunk["transport"].clone()),
        (json!(5080), json!("tcp"))
    );
    assert_eq!(trunk["name"], "sipp");
    assert_eq!(trunk["has_password"], true, "the password was kept");
    let (_, trunk) = api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/trunks/{trunk_id}"),
            Some(json!({"password": null})),
        )
        .await;
    assert_eq!(trunk["has_password"], false);
    let (s, e) = api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/trunks/{trunk_id}"),
            Some(json!({"prot": 1})),
        )
        .await;
    assert_eq!((s, e["error"]["field"].clone()), (400, json!("prot")));
    // A trunk with numbers, a number an agent uses: 409, saying why.
    let (s, e) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/trunks/{trunk_id}"),
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (409, json!("in_use")),
        "{e}"
    );
    let (_, numbers) = api.get("/v1/numbers").await;
    let number_id = numbers["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, e) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/numbers/{number_id}"),
            None,
        )
        .await;
    assert_eq!(s, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("agent"));
    // Detach the number from the agent: it then has no caller ID to dispatch with.
    let (s, agent) = api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"number_ids": []})),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    assert_eq!(agent["primary_number_id"], Value::Null);
    assert_eq!(agent["instructions"], "Repeat after the caller.");
    let (s, _) = api
        .post(
            "/v1/calls",
            json!({"agent_id": w.agent_id, "to": "+15551230000"}),
        )
        .await;
    assert_eq!(s, 409);
    // Now everything can go, in order; names and numbers are free again.
    for path in [
        format!("/v1/numbers/{number_id}"),
        format!("/v1/agents/{}", w.agent_id),
        format!("/v1/trunks/{trunk_id}"),
    ] {
        let (s, _) = api.send(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(s, 204, "{path}");
        let (s, _) = api.get(&path).await;
        assert_eq!(s, 404, "{path}");
    }
    let (_, agents) = api.get("/v1/agents").await;
    assert_eq!(agents["data"], json!([]));
    let (s, _) = api
        .post("/v1/trunks", json!({"name": "sipp", "host": "127.0.0.1"}))
        .await;
    assert_eq!(s, 201);
    w.finish().await;
}

impl Api {
    /// The same API with another key.
    fn as_key(&self, key: &str) -> KeyedApi<'_> {
        KeyedApi {
            api: self,
            key: key.to_owned(),
        }
    }
}

struct KeyedApi<'a> {
    api: &'a Api,
    key: String,
}

impl KeyedApi<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .api
            .http
            .request(method, format!("{}{path}", self.api.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// A second organisation with its own (non-admin) key, made by the admin key.
async fn second_org(api: &Api, caps: Value) -> (String, String) {
    let mut body = json!({"name": "other"});
    if let (Some(b), Some(c)) = (body.as_object_mut(), caps.as_object()) {
        b.extend(c.clone());
    }
    let (s, org) = api.post("/v1/organizations", body).await;
    assert_eq!(s, 201, "{org}");
    let org_id = org["id"].as_str().unwrap().to_owned();
    let (s, key) = api
        .post(&format!("/v1/organizations/{org_id}/keys"), json!({}))
        .await;
    assert_eq!(s, 201, "{key}");
    assert!(key["key"].as_str().unwrap().starts_with("dtk_"));
    assert_eq!(key["admin"], false);
    (org_id, key["key"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_echo_plays_each_utterance_back_after_it_ends() {
    use dialtone_test_support::media::{Baresip, speech_ulaw, ulaw_to_wav};
    let dir = tempfile::tempdir().unwrap();
    let speech = speech_ulaw(dir.path(), "Hello this is a test of the echo agent").unwrap();
    let wav = dir.path().join("callee.wav");
    // baresip ends the call when its file ends: four seconds of silence after the speech
    // leave time for the echo.
    let padded: Vec<u8> = speech.iter().copied().chain([0xffu8; 8000 * 4]).collect();
    ulaw_to_wav(&padded, 8000, &wav).unwrap();
    let baresip = Baresip::callee(&wav).unwrap();
    let w = world(None, &[]).await;
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, _) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &trunk,
            Some(json!({"port": baresip.port})),
        )
        .await;
    assert_eq!(s, 200);
    // The agent expects a result this brain never makes: the record says so.
    let (s, _) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"returns": {"type": "object"}})),
        )
        .await;
    assert_eq!(s, 200);
    let id = w.dispatch(json!({})).await;
    let path = format!("/v1/calls/{id}");
    // Answered, then long enough for the speech, the endpointing silence and the echo.
    let spoken_ms = speech.len() as u64 / 8;
    for _ in 0..200 {
        if w.api.get(&path).await.1["status"] == "in_progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // baresip hangs up when its file ends; we do if it has not once the speech, the
    // endpointing silence and the echo had their time.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2 * spoken_ms + 2000);
    while tokio::time::Instant::now() < deadline
        && w.api.get(&path).await.1["status"] == "in_progress"
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, e) = w.api.post(&format!("{path}/hangup"), json!({})).await;
    assert!(s == 200 || e["error"]["code"] == "call_ended", "{s} {e}");
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(
        record["result_error"],
        "builtin:echo returns no structured result"
    );
    // What baresip heard is our echo of its own speech: one voiced stretch about as long as
    // the speech, starting after the speech ended.
    let (rate, samples) = baresip.received_pcm(Duration::from_secs(10)).unwrap();
    let frame = rate as usize / 50;
    let voiced: Vec<usize> = samples
        .chunks_exact(frame)
        .enumerate()
        .filter(|(_, f)| dialtone_media::level_dbfs(f) > -40.0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !voiced.is_empty(),
        "baresip heard nothing back; its log:\n{}",
        baresip.log()
    );
    let (first, last) = (voiced[0], *voiced.last().unwrap());
    let echo_ms = (last - first + 1) as u64 * 20;
    let source_voiced_ms = speech
        .chunks_exact(160)
        .filter(|f| {
            let mut pcm = [0i16; 160];
            dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).decode(f, &mut pcm);
            dialtone_media::level_dbfs(&pcm) > -40.0
        })
        .count() as u64
        * 20;
    assert!(
        echo_ms * 10 >= source_voiced_ms * 8 && echo_ms <= spoken_ms + 200,
        "echo {echo_ms} ms, speech {source_voiced_ms} ms voiced of {spoken_ms} ms"
    );
    assert!(
        first as u64 * 20 >= source_voiced_ms,
        "the echo began {} ms into the call, before the {source_voiced_ms} ms of speech ended",
        first * 20
    );
    let decoded: Vec<f64> = speech
        .chunks_exact(160)
        .map(|f| {
            let mut pcm = [0i16; 160];
            dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).decode(f, &mut pcm);
            dialtone_media::level_dbfs(&pcm)
        })
        .collect();
    let speech_end_ms = (decoded.iter().rposition(|l| *l > -40.0).unwrap() as u64 + 1) * 20;
    // Both timelines start about when the call's audio starts, so this is the engine's share of
    // the voice-to-voice delay beyond the 500 ms endpointing silence (within a frame or two).
    println!(
        "echo began {} ms into baresip's recording; the speech ended at {speech_end_ms} ms; \
         overhead beyond endpointing ≈ {} ms",
        first * 20,
        (first as i64 * 20) - speech_end_ms as i64 - 500
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_answer_is_unknown_and_never_hung_up_on_as_a_machine() {
    // SIPp answers and sends no audio: someone may be listening, so AMD says `unknown` (the
    // agent speaks) and the voicemail action's hang-up does not apply; the call runs until its
    // maximum duration.
    let w = world(Some("answer_then_we_hang_up.xml"), &[]).await;
    let (s, agent) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({
                "amd": {"initial_silence_ms": 1500},
                "voicemail_action": "hangup",
                "max_duration_seconds": 4,
            })),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["answered_by"], "unknown");
    assert_eq!(record["answered_by_reason"]["code"], "initial_silence");
    assert_eq!(record["answered_by_reason"]["after_ms"], 1500);
    assert_eq!(record["end_reason"]["code"], "max_duration", "{record:#}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_ivr_speaks_collects_rfc4733_digits_and_returns_them() {
    use dialtone_test_support::media::{sipp_dtmf_captures, sipp_key_presses};
    let presses = sipp_key_presses(&sipp_dtmf_captures().unwrap(), "12#");
    let w = world(
        Some("callee_presses_digits.xml"),
        &[("listen_ms", "1500"), ("presses", presses.as_str())],
    )
    .await;
    let (s, agent) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({
                "brain": "builtin:ivr",
                "returns": {"type": "object", "properties": {"digits": {"type": "string", "pattern": "^[0-9]+$"}}, "required": ["digits"]},
            })),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w
        .dispatch(json!({"instructions": "Press one for yes, two for no, then the pound key."}))
        .await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "agent", "{record:#}");
    assert_eq!(record["result"], json!({"digits": "12"}), "{record:#}");
    assert_eq!(record["result_error"], Value::Null);
    let transcript = record["transcript"].as_array().unwrap();
    assert_eq!(transcript[0]["role"], "agent");
    assert_eq!(
        transcript[0]["text"],
        "Press one for yes, two for no, then the pound key."
    );
    assert_eq!(transcript[1]["text"], "DTMF 12");
    assert!(transcript[2]["text"].as_str().unwrap().contains("1 2"));
    // The prompt and the confirmation were heard: audio went out.
    assert!(record["media_stats"]["packets_out"].as_u64().unwrap() > 50);
    w.finish().await;
}

/// A callee that agreed on no telephone-event presses keys as tones in its audio:
/// `builtin:ivr` hears them (in-band detection is on for such a call), and the last key's
/// tone does not barge in on the confirmation it starts, which plays out and ends the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_without_telephone_event_is_heard_pressing_tones() {
    use dialtone_peers::capture::RtpCapture;
    let mut stream = RtpCapture::new();
    let mut silence = std::iter::repeat(0xffu8);
    let mut at = Duration::from_millis(1500);
    for key in "12#".chars() {
        let mut tone = vec![0i16; 8000 / 10];
        dialtone_test_support::audio::dtmf(8000, key, 6000.0, &mut tone);
        let mut tone = tone.into_iter().map(dialtone_codec::linear_to_ulaw);
        stream
            .audio(&mut silence, at)
            .audio(&mut tone, at + Duration::from_millis(100));
        at += Duration::from_millis(500);
    }
    stream.audio(&mut silence, at + Duration::from_millis(2000));
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tones.pcap");
    stream.write(&pcap).unwrap();
    let presses = dialtone_test_support::sipp_play_pcap(&pcap);
    let w = world(
        Some("callee_presses_tones.xml"),
        &[("listen_ms", "0"), ("presses", presses.as_str())],
    )
    .await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({
                "brain": "builtin:ivr",
                "returns": {"type": "object", "properties": {"digits": {"type": "string"}}, "required": ["digits"]},
            }),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w
        .dispatch(json!({"instructions": "Press one, two, then the pound key."}))
        .await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "agent", "{record:#}");
    assert_eq!(record["result"], json!({"digits": "12"}), "{record:#}");
    w.finish().await;
}

/// The Python interpreter with grpcio (scripts/python-env.sh).
fn python() -> String {
    std::env::var("DIALTONE_PYTHON").unwrap_or_else(|_| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new(root.join("scripts/python-env.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// The reference brain (examples/brain) on a free port; killed when dropped.
struct ReferenceBrain {
    child: std::process::Child,
    port: u16,
}

impl ReferenceBrain {
    fn start(extra: &[&str]) -> ReferenceBrain {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let port = dialtone_test_support::free_port().unwrap();
        let child = std::process::Command::new(python())
            .arg(root.join("examples/brain/appointment_brain.py"))
            .arg(root.join("proto"))
            .arg(port.to_string())
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the brain did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ReferenceBrain { child, port }
    }
}

impl Drop for ReferenceBrain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_brain_over_the_agent_bridge_confirms_an_appointment() {
    use dialtone_test_support::media::{sipp_dtmf_captures, sipp_key_presses};
    let brain = ReferenceBrain::start(&[]);
    let presses = sipp_key_presses(&sipp_dtmf_captures().unwrap(), "1");
    let w = world(
        Some("callee_presses_digits.xml"),
        &[("listen_ms", "3500"), ("presses", presses.as_str())],
    )
    .await;
    let (s, agent) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({
                "brain": format!("grpc://127.0.0.1:{}", brain.port),
                "returns": {"type": "object", "properties": {"confirmed": {"type": "boolean"}}, "required": ["confirmed"]},
            })),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w
        .dispatch(json!({"context": {"appointment": "tomorrow at ten"}}))
        .await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "agent", "{record:#}");
    assert_eq!(record["result"], json!({"confirmed": true}), "{record:#}");
    assert_eq!(record["result_error"], Value::Null);
    let texts: Vec<&str> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(
        texts[0].contains("appointment tomorrow at ten"),
        "{texts:?}"
    );
    assert!(texts.contains(&"pressed 1"), "{texts:?}");
    assert!(record["media_stats"]["packets_out"].as_u64().unwrap() > 50);
    w.finish().await;
}

/// A call whose agent's brain is `brain`, answered by SIPp (which waits for our BYE): the world
/// and the call's final record.
async fn call_with_brain(brain: &str) -> (World, Value) {
    let w = world(Some("answer_then_we_hang_up.xml"), &[]).await;
    let (s, _) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": brain}),
        )
        .await;
    assert_eq!(s, 200);
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    (w, record)
}

/// A brain that cannot be reached at all (nothing listens at its address) ends the call as
/// documented: an apology, then `brain_error` — not silence until the callee gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_brain_ends_the_call_as_brain_error_with_an_apology() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (w, record) = call_with_brain(&format!("grpc://127.0.0.1:{port}")).await;
    assert_eq!(record["end_reason"]["code"], "brain_error", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "agent");
    assert!(record["media_stats"]["packets_out"].as_u64().unwrap() > 50);
    w.finish().await;
}

/// A brain whose address takes the connection but never answers it (a listener that never
/// accepts: the kernel completes the handshake, nothing speaks HTTP/2) ends the call as
/// `brain_error` within seconds of the answer, not when the callee or the maximum duration
/// gives up (SIPp's callee here never hangs up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_that_never_answers_ends_the_call_as_brain_error_within_seconds() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (w, record) = call_with_brain(&format!("grpc://127.0.0.1:{port}")).await;
    assert_eq!(record["end_reason"]["code"], "brain_error", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "agent");
    let at =
        |field: &str| dialtone_model::time::parse_rfc3339(record[field].as_str().unwrap()).unwrap();
    let lasted = Duration::from_millis(u64::try_from(at("ended_at") - at("answered_at")).unwrap());
    // The limit, then the apology (about three seconds), with room for a busy machine; far
    // below the two minutes wait_final allows.
    assert!(
        lasted < dialtone_engine::BRAIN_CONNECT_LIMIT + Duration::from_secs(15),
        "the call lasted {lasted:?}"
    );
    assert!(record["media_stats"]["packets_out"].as_u64().unwrap() > 50);
    drop(silent);
    w.finish().await;
}

/// A brain address is vetted again when the call connects, not only when it is stored: an
/// agent whose brain points at loopback (written straight into storage, past the API's check)
/// on a daemon that allows no private destination ends its call as `brain_error`, and nothing
/// connects to that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_address_is_vetted_again_when_the_call_connects() {
    let w = world_on(
        |c| c.private_destinations = dialtone_engine::outbound::PrivateDestinations::None,
        Some("answer_then_we_hang_up.xml"),
        &[],
    )
    .await;
    let brain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let brain_url = format!("grpc://127.0.0.1:{}", brain.local_addr().unwrap().port());
    let (s, e) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": brain_url}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("brain")),
        "{e}"
    );
    let storage = dialtone_storage::Storage::open(&format!(
        "sqlite://{}",
        w._dir.path().join("e2e.db").display()
    ))
    .await
    .unwrap();
    let id = w.agent_id.parse().unwrap();
    let agent = storage.get_agent(id).await.unwrap();
    let mut config = agent.config.clone();
    config.brain = Some(brain_url);
    storage
        .update_agent(
            id,
            dialtone_storage::NewAgent {
                name: agent.name,
                config,
                number_ids: agent.number_ids,
                primary_number_id: agent.primary_number_id,
            },
        )
        .await
        .unwrap();
    let call = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &call).await;
    assert_eq!(record["end_reason"]["code"], "brain_error", "{record:#}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), brain.accept())
            .await
            .is_err(),
        "the daemon connected to a refused brain address"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_that_fails_ends_the_call_as_brain_error_with_an_apology() {
    let brain = ReferenceBrain::start(&["--crash-after-start"]);
    let w = world(Some("answer_then_we_hang_up.xml"), &[]).await;
    let (s, _) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"brain": format!("grpc://127.0.0.1:{}", brain.port)})),
        )
        .await;
    assert_eq!(s, 200);
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["end_reason"]["code"], "brain_error", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "agent");
    assert_eq!(
        record["result_error"],
        "the brain failed before returning a result"
    );
    // The caller heard the apology, not dead air.
    assert!(record["media_stats"]["packets_out"].as_u64().unwrap() > 50);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_left_after_the_voicemail_beep() {
    use dialtone_test_support::media::{speech_ulaw, write_rtp_pcap};
    // The callee is a voicemail box: a spoken greeting, then a 1 kHz beep, then silence.
    let dir = tempfile::tempdir().unwrap();
    let greeting = speech_ulaw(
        dir.path(),
        "Hi you have reached the voicemail of Jane Doe please leave a message after the tone",
    )
    .unwrap();
    let beep: Vec<u8> = (0..4000)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            dialtone_codec::linear_to_ulaw(
                (9000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16,
            )
        })
        .collect();
    let audio: Vec<u8> = greeting
        .iter()
        .copied()
        .chain(beep)
        .chain([0xffu8; 8000 * 8])
        .collect();
    let pcap = dir.path().join("voicemail.pcap");
    write_rtp_pcap(&pcap, &audio).unwrap();
    let play = format!(
        "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
        pcap.display()
    );
    let w = world(
        Some("callee_presses_digits.xml"),
        &[("listen_ms", "0"), ("presses", play.as_str())],
    )
    .await;
    let message = "Hello, this is Dialtone about your appointment. Please call us back.";
    let (s, agent) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({
                "amd": true,
                "voicemail_action": {"action": "leave_message", "message": message},
            })),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["answered_by"], "machine", "{record:#}");
    assert_eq!(
        record["end_reason"]["code"], "voicemail_message",
        "{record:#}"
    );
    assert_eq!(record["end_reason"]["by"], "agent");
    assert_eq!(record["transcript"][0]["text"], message, "{record:#}");
    assert_eq!(
        record["answered_by_reason"]["message_after"], "beep",
        "{record:#}"
    );
    // The message was spoken after the beep: the call lasted the greeting, the beep and it.
    let talk = record["talk_duration_ms"].as_u64().unwrap();
    assert!(
        talk > greeting.len() as u64 / 8 + 500 + 2000,
        "talked {talk} ms; the greeting lasts {} ms: {record:#}",
        greeting.len() / 8
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_is_asked_once_then_hung_up_on() {
    let w = world(Some("answer_then_we_hang_up.xml"), &[]).await;
    let (s, _) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"silence_timeout_seconds": 2})),
        )
        .await;
    assert_eq!(s, 200);
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(
        record["end_reason"]["code"], "silence_timeout",
        "{record:#}"
    );
    assert_eq!(record["end_reason"]["by"], "agent");
    assert_eq!(record["transcript"][0]["text"], "Are you still there?");
    let talk = record["talk_duration_ms"].as_u64().unwrap();
    assert!((4000..9000).contains(&talk), "talked {talk} ms");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_checked_field_by_field() {
    let w = world(None, &[]).await;
    let full = json!({
        "name": "confirmer",
        "direction": "outbound",
        "persona": "A friendly receptionist",
        "voice": "alloy",
        "language": "en-US",
        "instructions": "Confirm the appointment.",
        "returns": {"type": "object", "properties": {"confirmed": {"type": "boolean"}}, "required": ["confirmed"]},
        "tools": [{"name": "reschedule", "description": "Move the appointment",
                   "parameters": {"type": "object", "properties": {"when": {"type": "string"}}},
                   "url": "https://example.com/tools/reschedule"}],
        "voicemail_action": {"action": "leave_message", "message": "Please call us back."},
        "brain": "grpc://brain.internal:7000",
        "ring_timeout_seconds": 25,
        "max_duration_seconds": 300,
    });
    let (s, agent) = w.api.post("/v1/agents", full.clone()).await;
    assert_eq!(s, 201, "{agent}");
    for key in [
        "returns",
        "tools",
        "voicemail_action",
        "persona",
        "language",
    ] {
        assert_eq!(agent[key], full[key], "{key} round-trips");
    }
    for (field, value) in [
        ("returns", json!({"type": "no-such-type"})),
        ("returns", json!("not a schema")),
        (
            "tools",
            json!([{"name": "bad name!", "description": "x", "parameters": {}}]),
        ),
        (
            "tools",
            json!([{"name": "t", "description": "x", "parameters": {}}, {"name": "t", "description": "y", "parameters": {}}]),
        ),
        ("tools", json!([{"name": "t", "parameters": {}}])),
        ("voicemail_action", json!({"action": "leave_message"})),
        ("voicemail_action", json!("shout")),
        ("language", json!("english please")),
        ("brain", json!("grpc://nowhere")),
        ("ring_timeout_seconds", json!(0)),
        ("max_duration_seconds", json!(90000)),
        ("barge_in", json!("sometimes")),
        ("endpointing_silence_ms", json!(50)),
        ("silence_timeout_seconds", json!(0)),
        ("amd", json!({"greeting_ms": -1})),
        ("mask_dtmf", json!("yes")),
    ] {
        let mut body = full.clone();
        body[field] = value.clone();
        let (s, e) = w.api.post("/v1/agents", body).await;
        assert_eq!(s, 400, "{field}: {value} -> {e}");
        assert_eq!(e["error"]["field"], field, "{value}: {e}");
    }
    // PATCH is checked the same way.
    let (s, e) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/agents/{}", agent["id"].as_str().unwrap()),
            Some(json!({"voicemail_action": {"action": "sing"}})),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (400, json!("voicemail_action"))
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_that_registers_shows_its_registration() {
    // SIPp as a registrar: challenges, checks the digest, grants 2 s, expects the refresh.
    let w = world(Some("register_challenge.xml"), &[("expires", "2")]).await;
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let path = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    assert_eq!(trunks["data"][0]["registration"], Value::Null);
    let (s, trunk) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"username": "trunkuser", "password": "s3cret", "register": true})),
        )
        .await;
    assert_eq!(s, 200, "{trunk}");
    assert_eq!(trunk["register"], true);
    let mut registration = Value::Null;
    for _ in 0..200 {
        registration = w.api.get(&path).await.1["registration"].clone();
        if registration["refreshes"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(registration["state"], "registered", "{registration}");
    assert_eq!(registration["expires"], 2);
    assert!(
        registration["refreshes"].as_u64() >= Some(1),
        "{registration}"
    );
    let (_, trunk) = w
        .api
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"register": false})),
        )
        .await;
    assert_eq!(trunk["registration"], Value::Null);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sees_only_its_own_organisation() {
    let w = world(None, &[]).await;
    let (other_org, other_key) = second_org(&w.api, json!({})).await;
    let other = w.api.as_key(&other_key);
    // The first organisation's agent, trunk, number and calls do not exist for the other.
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk_id = trunks["data"][0]["id"].as_str().unwrap().to_owned();
    let (_, numbers) = w.api.get("/v1/numbers").await;
    let number_id = numbers["data"][0]["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/agents/{}", w.agent_id),
        format!("/v1/trunks/{trunk_id}"),
        format!("/v1/numbers/{number_id}"),
    ] {
        let (s, e) = other.send(reqwest::Method::GET, &path, None).await;
        assert_eq!(
            (s, e["error"]["code"].clone()),
            (404, json!("not_found")),
            "{path}"
        );
        let (s, _) = other.send(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(s, 404, "{path}");
    }
    for path in ["/v1/agents", "/v1/trunks", "/v1/numbers", "/v1/calls"] {
        let (s, list) = other.send(reqwest::Method::GET, path, None).await;
        assert_eq!((s, list["data"].clone()), (200, json!([])), "{path}");
    }
    let (s, _) = other
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"agent_id": w.agent_id, "to": "+15551230000"})),
        )
        .await;
    assert_eq!(s, 404);
    // Nor can it build on them: a number on their trunk, an agent with their number.
    let (s, e) = other
        .send(
            reqwest::Method::POST,
            "/v1/numbers",
            Some(json!({"e164": "+15550009999", "trunk_id": trunk_id})),
        )
        .await;
    assert_eq!((s, e["error"]["field"].clone()), (400, json!("trunk_id")));
    let (s, e) = other
        .send(
            reqwest::Method::POST,
            "/v1/agents",
            Some(json!({"name": "x", "number_ids": [number_id]})),
        )
        .await;
    assert_eq!((s, e["error"]["field"].clone()), (400, json!("number_ids")));
    // Names are the organisation's own: the other may call its trunk "sipp" too.
    let (s, _) = other
        .send(
            reqwest::Method::POST,
            "/v1/trunks",
            Some(json!({"name": "sipp", "host": "127.0.0.1"})),
        )
        .await;
    assert_eq!(s, 201);
    // Numbers are unique across organisations (an inbound call routes to one), but taking one
    // another organisation holds says no more than taking one's own twice: not whose it is.
    let (_, own_trunk) = other
        .send(
            reqwest::Method::POST,
            "/v1/trunks",
            Some(json!({"name": "own", "host": "127.0.0.1"})),
        )
        .await;
    let own_trunk = own_trunk["id"].as_str().unwrap();
    let e164 = numbers["data"][0]["e164"].as_str().unwrap();
    let take = |e164: &str| {
        let body = json!({"e164": e164, "trunk_id": own_trunk});
        other.send(reqwest::Method::POST, "/v1/numbers", Some(body))
    };
    let (s, held_elsewhere) = take(e164).await;
    assert_eq!(s, 409, "{held_elsewhere}");
    let (s, _) = take("+15550009998").await;
    assert_eq!(s, 201);
    let (s, held_here) = take("+15550009998").await;
    assert_eq!(s, 409);
    assert_eq!(held_elsewhere, held_here);
    let (_, orgs) = w.api.get("/v1/organizations").await;
    let holders = orgs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["id"].as_str())
        .filter(|id| *id != other_org);
    for secret in holders.chain([number_id.as_str()]) {
        assert!(
            !held_elsewhere.to_string().contains(secret),
            "{held_elsewhere}"
        );
    }
    // A non-admin key manages no organisations; a wrong key is 401.
    let (s, e) = other
        .send(reqwest::Method::GET, "/v1/organizations", None)
        .await;
    assert_eq!((s, e["error"]["code"].clone()), (403, json!("forbidden")));
    let (s, _) = w
        .api
        .as_key("dtk_nope")
        .send(reqwest::Method::GET, "/v1/calls", None)
        .await;
    assert_eq!(s, 401);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_caps_refuse_past_the_rate_and_queue_past_the_concurrency() {
    let w = world(None, &[]).await;
    let (_, key) = second_org(
        &w.api,
        json!({"max_calls_per_second": 2, "max_concurrent_calls": 1}),
    )
    .await;
    let org = w.api.as_key(&key);
    // Its own trunk (to a socket that never answers: a call stays dialing; a closed port
    // would fail it at once as trunk_unreachable), number, agent.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (_, trunk) = org
        .send(
            reqwest::Method::POST,
            "/v1/trunks",
            Some(json!({"name": "capped", "host": "127.0.0.1", "port": silent_port})),
        )
        .await;
    let (_, number) = org
        .send(
            reqwest::Method::POST,
            "/v1/numbers",
            Some(json!({"e164": "+15550002222", "trunk_id": trunk["id"]})),
        )
        .await;
    let (s, agent) = org
        .send(
            reqwest::Method::POST,
            "/v1/agents",
            Some(json!({"name": "capped", "brain": "builtin:echo", "number_ids": [number["id"]]})),
        )
        .await;
    assert_eq!(s, 201, "{agent}");
    let dispatch = json!({"agent_id": agent["id"], "to": "+15551230000"});
    let (s, first) = org
        .send(reqwest::Method::POST, "/v1/calls", Some(dispatch.clone()))
        .await;
    assert_eq!(s, 201);
    let (s, second) = org
        .send(reqwest::Method::POST, "/v1/calls", Some(dispatch.clone()))
        .await;
    assert_eq!(s, 201);
    // The third within the same second is over the rate: 429 with Retry-After.
    let resp = w
        .api
        .http
        .post(format!("{}/v1/calls", w.api.base))
        .bearer_auth(&key)
        .json(&dispatch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&retry), "Retry-After {retry}");
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limited");
    // One slot: the first call dials, the second waits in `queued`.
    let path = |c: &Value| format!("/v1/calls/{}", c["id"].as_str().unwrap());
    let mut first_status = Value::Null;
    for _ in 0..100 {
        first_status =
            org.send(reqwest::Method::GET, &path(&first), None).await.1["status"].clone();
        if first_status != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first_status, "dialing");
    let (_, waiting) = org.send(reqwest::Method::GET, &path(&second), None).await;
    assert_eq!(waiting["status"], "queued");
    // Hung up while queued: canceled, never dialled.
    let (s, _) = org
        .send(
            reqwest::Method::POST,
            &format!("{}/hangup", path(&second)),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let canceled = wait_final_with(&org, &path(&second)).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["end_reason"]["by"], "api");
    assert_eq!(canceled["dialed_at"], Value::Null);
    // (The first keeps dialing a port nobody answers; shutting down ends it.)
    w.finish().await;
}

/// Polls `path` with `api` until the call's status is final.
async fn wait_final_with(api: &KeyedApi<'_>, path: &str) -> Value {
    for _ in 0..600 {
        let (_, call) = api.send(reqwest::Method::GET, path, None).await;
        if ["completed", "busy", "no_answer", "failed", "canceled"]
            .contains(&call["status"].as_str().unwrap_or_default())
        {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let w = world(None, &[]).await;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", w.api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                continue;
            }
            operations.push(format!("{} {path}", method.to_uppercase()));
            // Every documented operation exists on the server with that method: without a
            // key it is a 401 (a missing route would be 404, a missing method 405).
            let url = format!(
                "{}{}",
                w.api.base,
                path.replace("{id}", "01900000-0000-7000-8000-000000000000")
                    .replace("{key_id}", "01900000-0000-7000-8000-000000000001")
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = http.request(method, &url).send().await.unwrap().status();
            assert_eq!(status, 401, "{path}");
            assert!(
                operation["responses"]["401"].is_object(),
                "{path} documents 401"
            );
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /v1/agents/{id}",
            "DELETE /v1/calls/{id}/recording",
            "DELETE /v1/numbers/{id}",
            "DELETE /v1/organizations/{id}",
            "DELETE /v1/organizations/{id}/keys/{key_id}",
            "DELETE /v1/providers/{id}",
            "DELETE /v1/trunks/{id}",
            "GET /v1/agents",
            "GET /v1/agents/{id}",
            "GET /v1/calls",
            "GET /v1/calls/{id}",
            "GET /v1/calls/{id}/events",
            "GET /v1/calls/{id}/recording",
            "GET /v1/numbers",
            "GET /v1/numbers/{id}",
            "GET /v1/organizations",
            "GET /v1/organizations/{id}",
            "GET /v1/organizations/{id}/keys",
            "GET /v1/providers",
            "GET /v1/providers/{id}",
            "GET /v1/trunks",
            "GET /v1/trunks/{id}",
            "PATCH /v1/agents/{id}",
            "PATCH /v1/organizations/{id}",
            "PATCH /v1/providers/{id}",
            "PATCH /v1/trunks/{id}",
            "POST /v1/agents",
            "POST /v1/calls",
            "POST /v1/calls/{id}/hangup",
            "POST /v1/calls/{id}/result",
            "POST /v1/calls/{id}/transfer",
            "POST /v1/events/{id}/redeliver",
            "POST /v1/numbers",
            "POST /v1/organizations",
            "POST /v1/organizations/{id}/keys",
            "POST /v1/providers",
            "POST /v1/trunks",
        ]
    );
    // The dispatch body is described with its fields, and the errors with their shape.
    let schemas = &doc["components"]["schemas"];
    for field in [
        "agent_id",
        "to",
        "from_number",
        "instructions",
        "context",
        "webhook_url",
        "metadata",
    ] {
        assert!(
            schemas["DispatchCall"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(schemas["ErrorBody"]["properties"]["error"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    w.finish().await;
}

/// A new organisation made by the operator key, and a key of it issued with `key_fields`: the
/// organisation's id and the key's secret.
async fn org_with_key(api: &Api, name: &str, key_fields: Value) -> (String, String) {
    let (s, org) = api.post("/v1/organizations", json!({"name": name})).await;
    assert_eq!(s, 201, "{org}");
    let org_id = org["id"].as_str().unwrap().to_owned();
    let key = issue_key(&api.as_key(KEY), &org_id, key_fields).await;
    (org_id, key["key"].as_str().unwrap().to_owned())
}

/// A key of `org` issued by `by` with `fields`: the issued key as the API shows it.
async fn issue_key(by: &KeyedApi<'_>, org: &str, fields: Value) -> Value {
    let (s, key) = by
        .send(
            reqwest::Method::POST,
            &format!("/v1/organizations/{org}/keys"),
            Some(fields),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    key
}

/// What a caller gets from a route in the scope walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Past authorisation: the route did its work (or refused the request's content).
    Allowed,
    /// `403` naming the scope needed.
    Forbidden,
    /// `404`: another organisation's resource.
    NotFound,
}

/// The resources of organisation A that the scope walk's paths name.
struct WalkFixtures<'a> {
    a: KeyedApi<'a>,
    org: String,
    trunk: String,
    number: String,
    agent: String,
    provider: String,
    call: String,
    event: String,
    fresh: std::sync::atomic::AtomicU32,
}

impl WalkFixtures<'_> {
    async fn create(&self, path: &str, body: Value) -> String {
        let (s, made) = self.a.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(s, 201, "{path}: {made}");
        made["id"].as_str().unwrap().to_owned()
    }

    /// `template` with its parameters filled in: A's resources, and a new one for what a
    /// `DELETE` removes, so every caller finds one to try.
    async fn path(&self, method: &str, template: &str) -> String {
        let n = self
            .fresh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delete = method == "DELETE";
        let id = match template.split('/').nth(2).unwrap() {
            "trunks" if delete => {
                self.create(
                    "/v1/trunks",
                    json!({"name": format!("walk-{n}"), "host": "127.0.0.1"}),
                )
                .await
            }
            "trunks" => self.trunk.clone(),
            "numbers" if delete => {
                self.create(
                    "/v1/numbers",
                    json!({"e164": format!("+1555070{n:04}"), "trunk_id": self.trunk}),
                )
                .await
            }
            "numbers" => self.number.clone(),
            "agents" if delete => {
                self.create("/v1/agents", json!({"name": format!("walk-{n}")}))
                    .await
            }
            "agents" => self.agent.clone(),
            "providers" if delete => {
                self.create(
                    "/v1/providers",
                    json!({"name": format!("walk-{n}"), "kind": "openai"}),
                )
                .await
            }
            "providers" => self.provider.clone(),
            "calls" => self.call.clone(),
            "events" => self.event.clone(),
            // The operator removes a new organisation, so A stays for the rest of the walk.
            "organizations" if delete && !template.contains("{key_id}") => {
                let (s, made) = self
                    .a
                    .api
                    .as_key(KEY)
                    .send(
                        reqwest::Method::POST,
                        "/v1/organizations",
                        Some(json!({"name": format!("walk-{n}")})),
                    )
                    .await;
                assert_eq!(s, 201, "{made}");
                made["id"].as_str().unwrap().to_owned()
            }
            "organizations" => self.org.clone(),
            other => panic!("the scope walk has no fixture for /v1/{other}: add one"),
        };
        let mut path = template.replace("{id}", &id);
        if path.contains("{key_id}") {
            let key = issue_key(&self.a, &self.org, json!({})).await;
            path = path.replace("{key_id}", key["id"].as_str().unwrap());
        }
        assert!(!path.contains('{'), "the scope walk cannot fill {template}");
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_scope_as_its_openapi_scope_says() {
    let w = world(None, &[]).await;
    // The operator's key lives in the first organisation; A has an admin and a plain key, B an
    // admin key (issued with the older `"admin": true`).
    let (org_a, a_admin) = org_with_key(&w.api, "a", json!({"scope": "admin"})).await;
    let a_plain = issue_key(&w.api.as_key(&a_admin), &org_a, json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, b_admin) = org_with_key(&w.api, "b", json!({"admin": true})).await;
    let a = w.api.as_key(&a_admin);
    let mut fixtures = WalkFixtures {
        a,
        org: org_a.clone(),
        trunk: String::new(),
        number: String::new(),
        agent: String::new(),
        provider: String::new(),
        call: String::new(),
        event: String::new(),
        fresh: std::sync::atomic::AtomicU32::new(0),
    };
    fixtures.trunk = fixtures
        .create(
            "/v1/trunks",
            json!({"name": "walk", "host": "127.0.0.1", "port": 9}),
        )
        .await;
    fixtures.number = fixtures
        .create(
            "/v1/numbers",
            json!({"e164": "+15550704444", "trunk_id": fixtures.trunk}),
        )
        .await;
    fixtures.agent = fixtures
        .create(
            "/v1/agents",
            json!({"name": "walk", "brain": "builtin:echo", "number_ids": [fixtures.number]}),
        )
        .await;
    fixtures.provider = fixtures
        .create(
            "/v1/providers",
            json!({"name": "walk", "kind": "deepgram", "api_key": "dg-key"}),
        )
        .await;
    fixtures.call = fixtures
        .create(
            "/v1/calls",
            json!({"agent_id": fixtures.agent, "to": "+15551230000",
                   "webhook_url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    let (s, events) = fixtures
        .a
        .send(
            reqwest::Method::GET,
            &format!("/v1/calls/{}/events", fixtures.call),
            None,
        )
        .await;
    assert_eq!(s, 200, "{events}");
    fixtures.event = events["data"][0]["id"].as_str().unwrap().to_owned();

    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", w.api.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let callers = [
        ("operator", KEY.to_owned()),
        ("admin of A", a_admin.clone()),
        ("plain key of A", a_plain.clone()),
        ("admin of B", b_admin.clone()),
    ];
    let mut declared = Vec::new();
    let mut walked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                continue;
            }
            let method = method.to_uppercase();
            let route = format!("{method} {template}");
            let scope = operation["x-dialtone-scope"]
                .as_str()
                .unwrap_or_else(|| panic!("{route} states no scope"))
                .to_owned();
            assert!(
                operation["description"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("Scope: `{scope}`")),
                "{route}: its description states its scope"
            );
            if scope != "standard" {
                assert!(
                    operation["responses"]["403"].is_object(),
                    "{route} documents 403"
                );
                declared.push(format!("{scope}: {route}"));
            }
            for (caller, key) in &callers {
                let expected = match (scope.as_str(), *caller) {
                    ("operator", "operator") => Outcome::Allowed,
                    ("operator", _) => Outcome::Forbidden,
                    ("admin", "operator" | "admin of A") => Outcome::Allowed,
                    ("admin", _) => Outcome::Forbidden,
                    // A's resources are A's keys' own; the others' keys find none.
                    ("standard", "admin of A" | "plain key of A") => Outcome::Allowed,
                    ("standard", _) if template.contains('{') => Outcome::NotFound,
                    ("standard", _) => Outcome::Allowed,
                    (other, _) => panic!("{route}: unknown scope {other}"),
                };
                let path = fixtures.path(&method, template).await;
                let body = (method != "GET" && method != "DELETE").then(|| json!({}));
                let (status, answer) = w
                    .api
                    .as_key(key)
                    .send(
                        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                        &path,
                        body,
                    )
                    .await;
                let no_recording = answer["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("recording of call"));
                let got = match status {
                    403 => Outcome::Forbidden,
                    // The caller's own call, found, has no recording: past authorisation.
                    404 if no_recording => Outcome::Allowed,
                    404 => Outcome::NotFound,
                    401 | 405 | 500.. => panic!("{route} as {caller}: {status} {answer}"),
                    _ => Outcome::Allowed,
                };
                assert_eq!(got, expected, "{route} as {caller}: {status} {answer}");
                if got == Outcome::Forbidden {
                    assert_eq!(answer["error"]["code"], "forbidden", "{route} as {caller}");
                    let message = answer["error"]["message"].as_str().unwrap();
                    assert!(
                        message.contains(&format!("needs an `{scope}` key")),
                        "{route} as {caller}: {message}"
                    );
                }
                walked += 1;
            }
        }
    }
    declared.sort();
    assert_eq!(
        declared,
        [
            "admin: DELETE /v1/organizations/{id}/keys/{key_id}",
            "admin: GET /v1/organizations/{id}/keys",
            "admin: POST /v1/organizations/{id}/keys",
            "operator: DELETE /v1/organizations/{id}",
            "operator: GET /v1/organizations",
            "operator: GET /v1/organizations/{id}",
            "operator: PATCH /v1/organizations/{id}",
            "operator: POST /v1/organizations",
        ]
    );
    assert!(walked >= 4 * 32, "walked {walked}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_admin_manages_its_own_keys_and_nothing_else() {
    let w = world(None, &[]).await;
    let operator = w.api.as_key(KEY);
    let (_, orgs) = w.api.get("/v1/organizations").await;
    let home = orgs["data"][0]["id"].as_str().unwrap().to_owned();
    // `"admin": true` still makes an organisation admin, shown with its scope.
    let (s, org) = w.api.post("/v1/organizations", json!({"name": "c"})).await;
    assert_eq!(s, 201);
    let c = org["id"].as_str().unwrap().to_owned();
    let issued = issue_key(&operator, &c, json!({"admin": true})).await;
    assert_eq!(
        (&issued["scope"], &issued["admin"]),
        (&json!("admin"), &json!(true))
    );
    assert_eq!(issued["expires_at"], Value::Null);
    let admin = w.api.as_key(issued["key"].as_str().unwrap());
    // It neither sees nor makes organisations, nor issues keys elsewhere — the first
    // organisation's included — nor makes an operator key anywhere.
    for (method, path, body) in [
        (reqwest::Method::GET, "/v1/organizations".to_owned(), None),
        (
            reqwest::Method::POST,
            "/v1/organizations".to_owned(),
            Some(json!({"name": "mine"})),
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/organizations/{c}"),
            Some(json!({"disabled": false})),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/organizations/{home}/keys"),
            Some(json!({"admin": true})),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/organizations/{home}/keys"),
            None,
        ),
    ] {
        let (s, e) = admin.send(method.clone(), &path, body).await;
        assert_eq!(
            (s, &e["error"]["code"]),
            (403, &json!("forbidden")),
            "{method} {path}"
        );
    }
    let (s, e) = admin
        .send(
            reqwest::Method::POST,
            &format!("/v1/organizations/{c}/keys"),
            Some(json!({"scope": "operator"})),
        )
        .await;
    assert_eq!((s, &e["error"]["field"]), (403, &json!("scope")), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`operator`")
    );
    // A key says its scope one way: `scope` and `admin` that disagree are a 400 naming `admin`.
    let (s, e) = admin
        .send(
            reqwest::Method::POST,
            &format!("/v1/organizations/{c}/keys"),
            Some(json!({"scope": "standard", "admin": true})),
        )
        .await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("admin")), "{e}");
    // In its own organisation it issues admin and plain keys.
    let second_admin = issue_key(&admin, &c, json!({"scope": "admin"})).await;
    assert_eq!(second_admin["scope"], "admin");
    let plain = issue_key(&admin, &c, json!({})).await;
    assert_eq!(
        (&plain["scope"], &plain["admin"]),
        (&json!("standard"), &json!(false))
    );
    // A plain key manages no keys, not even its own organisation's.
    let (s, e) = w
        .api
        .as_key(plain["key"].as_str().unwrap())
        .send(
            reqwest::Method::GET,
            &format!("/v1/organizations/{c}/keys"),
            None,
        )
        .await;
    assert_eq!(s, 403);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`admin`"),
        "{e}"
    );
    // The operator issues operator keys; one of those manages organisations.
    let second_operator = issue_key(&operator, &home, json!({"scope": "operator"})).await;
    assert_eq!(second_operator["scope"], "operator");
    let (s, _) = w
        .api
        .as_key(second_operator["key"].as_str().unwrap())
        .send(
            reqwest::Method::POST,
            "/v1/organizations",
            Some(json!({"name": "by-the-second-operator"})),
        )
        .await;
    assert_eq!(s, 201);
    // An admin of the first organisation sees none of the operator keys living there, and
    // cannot revoke one.
    let home_admin = issue_key(&operator, &home, json!({"scope": "admin"})).await;
    let home_admin_api = w.api.as_key(home_admin["key"].as_str().unwrap());
    let keys_of_home = format!("/v1/organizations/{home}/keys");
    let (s, listed) = home_admin_api
        .send(reqwest::Method::GET, &keys_of_home, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["scope"], "admin");
    let (_, all) = operator
        .send(reqwest::Method::GET, &keys_of_home, None)
        .await;
    let scopes: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["operator", "operator", "admin"]);
    // The bootstrapped key shows 4 of its characters, no more.
    assert_eq!(all["data"][0]["prefix"], KEY.get(..4).unwrap());
    let (s, e) = home_admin_api
        .send(
            reqwest::Method::DELETE,
            &format!("{keys_of_home}/{}", second_operator["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`operator`")
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_without_secrets_expire_and_are_revoked_at_once_on_every_node() {
    let w = world(None, &[]).await;
    // A second node on the same database.
    let node2 = Daemon::start(config(w._dir.path())).await.unwrap();
    let api2 = Api {
        base: format!("http://{}", node2.http_addr),
        http: reqwest::Client::new(),
    };
    let (org, admin_key) = org_with_key(&w.api, "acme", json!({"scope": "admin"})).await;
    let admin = w.api.as_key(&admin_key);
    let keys = format!("/v1/organizations/{org}/keys");
    let plain = issue_key(&admin, &org, json!({"expires_at": "2099-01-31T12:00:00Z"})).await;
    assert_eq!(plain["expires_at"], "2099-01-31T12:00:00Z");
    let secret = plain["key"].as_str().unwrap().to_owned();
    // An expiry must be an RFC 3339 time, in the future.
    for bad in ["tomorrow", "2001-01-01T00:00:00Z"] {
        let (s, e) = admin
            .send(
                reqwest::Method::POST,
                &keys,
                Some(json!({"expires_at": bad})),
            )
            .await;
        assert_eq!(
            (s, &e["error"]["field"]),
            (400, &json!("expires_at")),
            "{e}"
        );
    }
    let expiry = dialtone_storage::now_ms() + 1500;
    let short = issue_key(
        &admin,
        &org,
        json!({"expires_at": dialtone_model::time::rfc3339(expiry).unwrap()}),
    )
    .await;
    let short_secret = short["key"].as_str().unwrap().to_owned();
    let (s, _) = w
        .api
        .as_key(&short_secret)
        .send(reqwest::Method::GET, "/v1/trunks", None)
        .await;
    assert_eq!(s, 200);
    // The plain key works on both nodes; the list shows it with its last use, never a secret.
    for api in [&w.api, &api2] {
        let (s, _) = api
            .as_key(&secret)
            .send(reqwest::Method::GET, "/v1/agents", None)
            .await;
        assert_eq!(s, 200);
    }
    let (s, listed) = admin.send(reqwest::Method::GET, &keys, None).await;
    assert_eq!(s, 200, "{listed}");
    let text = listed.to_string();
    assert!(!text.contains(&secret) && !text.contains(&admin_key) && !text.contains(&short_secret));
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{listed}");
    let listed_plain = data.iter().find(|k| k["id"] == plain["id"]).unwrap();
    let mut fields: Vec<&str> = listed_plain
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "organization_id",
            "prefix",
            "scope"
        ]
    );
    assert_eq!(listed_plain["prefix"], plain["prefix"]);
    assert!(secret.starts_with(listed_plain["prefix"].as_str().unwrap()));
    assert_eq!(listed_plain["scope"], "standard");
    assert!(listed_plain["last_used_at"].is_string(), "{listed_plain}");
    // Revoked on the first node: the very next request is 401 on both.
    let (s, _) = admin
        .send(
            reqwest::Method::DELETE,
            &format!("{keys}/{}", plain["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 204);
    for api in [&api2, &w.api] {
        let (s, e) = api
            .as_key(&secret)
            .send(reqwest::Method::GET, "/v1/agents", None)
            .await;
        assert_eq!((s, &e["error"]["code"]), (401, &json!("unauthenticated")));
    }
    let (_, listed) = admin.send(reqwest::Method::GET, &keys, None).await;
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != plain["id"])
    );
    let (s, _) = admin
        .send(
            reqwest::Method::DELETE,
            &format!("{keys}/{}", plain["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 404);
    // Another organisation's key is not this one's to revoke.
    let (s, _) = w
        .api
        .as_key(KEY)
        .send(
            reqwest::Method::DELETE,
            &format!(
                "/v1/organizations/{}/keys/{}",
                w.api.get("/v1/organizations").await.1["data"][0]["id"]
                    .as_str()
                    .unwrap(),
                short["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(s, 404);
    // Past its expiry the short key is 401 like a wrong one.
    while dialtone_storage::now_ms() <= expiry + 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = api2
        .as_key(&short_secret)
        .send(reqwest::Method::GET, "/v1/trunks", None)
        .await;
    assert_eq!(s, 401);
    // The operator revokes the admin key itself.
    let (_, listed) = admin.send(reqwest::Method::GET, &keys, None).await;
    let admin_id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = w
        .api
        .as_key(KEY)
        .send(reqwest::Method::DELETE, &format!("{keys}/{admin_id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = admin.send(reqwest::Method::GET, &keys, None).await;
    assert_eq!(s, 401);
    // Even the bootstrapped operator key can be revoked (by an operator key) ...
    let (_, orgs) = w.api.get("/v1/organizations").await;
    let home_keys = format!(
        "/v1/organizations/{}/keys",
        orgs["data"][0]["id"].as_str().unwrap()
    );
    let (_, listed) = w.api.get(&home_keys).await;
    let bootstrapped = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = w
        .api
        .as_key(KEY)
        .send(
            reqwest::Method::DELETE,
            &format!("{home_keys}/{bootstrapped}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = api2.get("/v1/organizations").await;
    assert_eq!(s, 401);
    node2.shutdown(Duration::from_secs(1)).await;
    // ... and it stays revoked: a node configured with it refuses to start, naming the key.
    let e = Daemon::start(config(w._dir.path())).await.err().unwrap();
    let message = e.to_string();
    assert!(
        message.starts_with("DIALTONE_API_KEY:") && message.contains("revoked"),
        "{message}"
    );
    w.finish().await;
}

/// The status of the call at `path`, as `api` reads it.
async fn call_status(api: &KeyedApi<'_>, path: &str) -> String {
    api.send(reqwest::Method::GET, path, None).await.1["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits (bounded) until the call at `path`, as `api` reads it, is in `status`.
async fn wait_call_status(api: &KeyedApi<'_>, path: &str, status: &str) {
    for _ in 0..300 {
        if call_status(api, path).await == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call_status(api, path).await, status, "{path}");
}

/// An echo agent of `api`'s organisation calling from `e164` through a trunk at
/// 127.0.0.1:`trunk_port`; its id.
async fn echo_agent(api: &KeyedApi<'_>, trunk_port: u16, e164: &str) -> Value {
    let (_, trunk) = api
        .send(
            reqwest::Method::POST,
            "/v1/trunks",
            Some(json!({"name": "t", "host": "127.0.0.1", "port": trunk_port})),
        )
        .await;
    let (_, number) = api
        .send(
            reqwest::Method::POST,
            "/v1/numbers",
            Some(json!({"e164": e164, "trunk_id": trunk["id"]})),
        )
        .await;
    let (s, agent) = api
        .send(
            reqwest::Method::POST,
            "/v1/agents",
            Some(json!({"name": "a", "brain": "builtin:echo", "number_ids": [number["id"]]})),
        )
        .await;
    assert_eq!(s, 201, "{agent}");
    agent["id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_organisation_dispatches_nothing_and_ends_nothing_live() {
    let w = world(None, &[]).await;
    let (org, admin_key) = org_with_key(&w.api, "acme", json!({"scope": "admin"})).await;
    let a = w.api.as_key(&admin_key);
    // A trunk that never answers: a call stays `dialing`.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let agent = echo_agent(&a, port, "+15550705555").await;
    let dispatch = json!({"agent_id": agent, "to": "+15551230000"});
    let (s, live) = a
        .send(reqwest::Method::POST, "/v1/calls", Some(dispatch.clone()))
        .await;
    assert_eq!(s, 201, "{live}");
    let live_path = format!("/v1/calls/{}", live["id"].as_str().unwrap());
    wait_call_status(&a, &live_path, "dialing").await;
    // Only the operator disables an organisation.
    let patch = format!("/v1/organizations/{org}");
    let (s, _) = a
        .send(
            reqwest::Method::PATCH,
            &patch,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, e) = w.api.patch(&patch, json!({"disabled": "yes"})).await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("disabled")), "{e}");
    let (s, disabled) = w.api.patch(&patch, json!({"disabled": true})).await;
    assert_eq!(s, 200, "{disabled}");
    assert_eq!(disabled["disabled"], true);
    assert!(disabled["disabled_at"].is_string());
    // Its dispatches are refused, naming the organisation and its state ...
    let (s, e) = a
        .send(reqwest::Method::POST, "/v1/calls", Some(dispatch.clone()))
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (403, &json!("organization_disabled")),
        "{e}"
    );
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&org) && message.contains("disabled"),
        "{message}"
    );
    // ... while the call already live goes on, and the rest of the API works.
    assert_eq!(call_status(&a, &live_path).await, "dialing");
    let (s, _) = a.send(reqwest::Method::GET, "/v1/agents", None).await;
    assert_eq!(s, 200);
    let (_, orgs) = w.api.get("/v1/organizations").await;
    let listed = orgs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == org.as_str())
        .unwrap();
    assert_eq!(listed["disabled"], true);
    // Other organisations dispatch as before.
    w.dispatch(json!({})).await;
    // Enabled again, it dispatches.
    let (s, enabled) = w.api.patch(&patch, json!({"disabled": false})).await;
    assert_eq!(s, 200);
    assert_eq!(
        (&enabled["disabled"], &enabled["disabled_at"]),
        (&json!(false), &Value::Null)
    );
    let (s, _) = a
        .send(reqwest::Method::POST, "/v1/calls", Some(dispatch))
        .await;
    assert_eq!(s, 201);
    drop(silent);
    w.finish().await;
}

/// A schema of its own in the test PostgreSQL (`dialtone_test_support::postgres_test_url`), as
/// a database URL; `None`, saying why, where none answers (outside CI).
async fn postgres_url() -> Option<String> {
    let base = dialtone_test_support::postgres_test_url()?;
    let schema = format!(
        "dialtone_e2e_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let created = tokio::process::Command::new("psql")
        .arg(&base)
        .args(["-Atqc", &format!("CREATE SCHEMA {schema}")])
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_postgresql_goes_through_like_on_sqlite() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let w = world_on(
        |c| c.database_url = url.clone(),
        Some("callee_speaks_then_hangs_up.xml"),
        &[("talk_ms", "1000")],
    )
    .await;
    let id = w.dispatch(json!({"metadata": {"db": "pg"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["metadata"], json!({"db": "pg"}));
    assert!(record["media_stats"]["packets_in"].as_u64().unwrap() >= 30);
    let (_, page) = w.api.get("/v1/calls?status=completed&limit=5").await;
    assert_eq!(page["data"][0]["id"], id.as_str());
    w.finish().await;
}

impl World {
    /// Changes the agent's settings.
    async fn set_agent(&self, settings: Value) {
        let (s, agent) = self
            .api
            .patch(&format!("/v1/agents/{}", self.agent_id), settings)
            .await;
        assert_eq!(s, 200, "{agent}");
    }

    async fn hangup(&self, id: &str) {
        let (s, body) = self
            .api
            .post(&format!("/v1/calls/{id}/hangup"), json!({}))
            .await;
        assert_eq!(s, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_answers_is_canceled_after_the_ring_timeout_as_no_answer() {
    let w = world(Some("ring_until_cancel.xml"), &[]).await;
    w.set_agent(json!({"ring_timeout_seconds": 1})).await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "no_answer", "no_answer", "engine");
    assert_eq!(record["end_reason"]["sip_status"], 487);
    let ring = record["ring_duration_ms"].as_i64().unwrap();
    assert!((900..5000).contains(&ring), "rang {ring} ms");
    assert!(record["answered_at"].is_null());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_that_never_answers_fails_the_call_after_timer_b() {
    // T1 = 20 ms: Timer B fires after 64·T1 = 1.28 s of INVITE retransmissions.
    let w = world_on(|c| c.sip_t1 = Duration::from_millis(20), None, &[]).await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "failed", "trunk_timeout", "trunk");
    assert!(record["end_reason"]["sip_status"].is_null());
    assert!(record["ringing_at"].is_null());
    assert!(record["dialed_at"].is_string());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_an_answered_call_by_api_sends_bye_and_completes_it() {
    let w = world(Some("answer_then_we_hang_up.xml"), &[]).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    w.hangup(&id).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "completed", "api");
    assert!(record["answered_at"].is_string(), "{record:#}");
    assert!(record["talk_duration_ms"].as_i64().is_some(), "{record:#}");
    // SIPp's scenario fails unless our BYE came.
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_end_that_sends_no_rtp_is_hung_up_as_rtp_timeout() {
    let w = world_on(
        |c| c.rtp_timeout = Duration::from_secs(1),
        Some("answer_then_we_hang_up.xml"),
        &[],
    )
    .await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "rtp_timeout", "engine");
    assert_eq!(record["media_stats"]["packets_in"], 0);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_at_the_agents_maximum_duration_is_hung_up() {
    let w = world(Some("answer_then_we_hang_up.xml"), &[]).await;
    w.set_agent(json!({"max_duration_seconds": 1})).await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "max_duration", "engine");
    let talk = record["talk_duration_ms"].as_i64().unwrap();
    assert!((900..5000).contains(&talk), "talked {talk} ms");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_is_heard_before_answer_and_a_2xx_without_sdp_keeps_it() {
    let w = world(
        Some("ringback_then_answer_without_sdp.xml"),
        &[("talk_ms", "1000")],
    )
    .await;
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "callee");
    let media = &record["media_stats"];
    // Three seconds of tone before the answer, heard as audio, none of it left for the brain:
    // without the early listener it would overflow the 1 s ring to the speech loop.
    let early = media["early_media_ms"].as_u64().unwrap();
    let voiced = media["early_media_voiced_ms"].as_u64().unwrap();
    assert!(early >= 2800, "{media}");
    assert!(voiced >= 2500, "{media}");
    assert_eq!(media["inbound_overflow"], 0, "{media}");
    let ring = record["ring_duration_ms"].as_i64().unwrap();
    assert!(ring >= 3000, "rang {ring} ms");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_a_trunk_cap_wait_in_queued_until_a_slot_or_the_queue_timeout() {
    let w = world_on(
        |c| c.queue_timeout = Duration::from_secs(3),
        Some("answer_then_we_hang_up.xml"),
        &[],
    )
    .await;
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk_id = trunks["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, trunk) = w
        .api
        .patch(
            &format!("/v1/trunks/{trunk_id}"),
            json!({"max_concurrent_calls": 1}),
        )
        .await;
    assert_eq!(s, 200, "{trunk}");
    let first = w.dispatch(json!({})).await;
    wait_status(&w.api, &first, "in_progress").await;
    let canceled = w.dispatch(json!({})).await;
    let timed_out = w.dispatch(json!({})).await;
    for id in [&canceled, &timed_out] {
        let (_, c) = w.api.get(&format!("/v1/calls/{id}")).await;
        assert_eq!(c["status"], "queued", "{c:#}");
    }
    // Both stay queued behind the first call: neither is ever dialled (below), the second
    // not for the whole queue timeout.
    w.hangup(&canceled).await;
    let record = wait_final(&w.api, &canceled).await;
    assert_eq!(record["status"], "canceled", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "api");
    assert!(record["sip_call_id"].is_null(), "never dialled");
    let record = wait_final(&w.api, &timed_out).await;
    assert_eq!(record["status"], "failed", "{record:#}");
    assert_eq!(record["end_reason"]["code"], "queue_timeout");
    assert!(record["sip_call_id"].is_null(), "never dialled");
    assert!(record["dialed_at"].is_null(), "never dialled");
    w.hangup(&first).await;
    assert_eq!(wait_final(&w.api, &first).await["status"], "completed");
    let (_, events) = w.api.get(&format!("/v1/calls/{timed_out}/events")).await;
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.is_empty(), "no webhook URL, no events: {kinds:?}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_410_gets_each_event_once_and_no_retries() {
    use axum::http::StatusCode;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/gone",
        axum::routing::post(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                StatusCode::GONE
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gone", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let w = world(Some("reject.xml"), &[("status", "486")]).await;
    let id = w.dispatch(json!({"webhook_url": url})).await;
    wait_final(&w.api, &id).await;
    let mut events = Vec::new();
    for _ in 0..100 {
        events = w.api.get(&format!("/v1/calls/{id}/events")).await.1["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events.last().is_some_and(|e| e["type"] == "call.ended")
            && events.iter().all(|e| e["state"] == "dead")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        events
            .iter()
            .all(|e| e["state"] == "dead" && e["attempts"] == 1 && e["last_error"] == "410 Gone"),
        "{events:#?}"
    );
    // Half a second more: the worker polls every 200 ms, and must not try again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), events.len());
    let metrics = w.api.metrics().await;
    assert!(
        metrics.contains("dialtone_webhook_attempts_total{outcome=\"dead\"}"),
        "{metrics}"
    );
    w.finish().await;
}

/// deploy/compose/kamailio.cfg, the cluster's SIP edge, run for real: the node's trunk points at
/// Kamailio, which relays the INVITE to the carrier (SIPp) with a Record-Route; our BYE follows
/// the route set back through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_kamailio_edge_relays_a_nodes_call_to_the_carrier() {
    let w = world(Some("answer_then_we_hang_up.xml"), &[]).await;
    let carrier = w.sipp.as_ref().unwrap().port;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("dispatcher.list");
    std::fs::write(&list, format!("1 sip:{} 0 0\n", w.daemon.sip_addr)).unwrap();
    let cfg =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose/kamailio.cfg");
    let edge = dialtone_test_support::Kamailio::start_defined(
        &cfg,
        &[
            ("CARRIER", format!("127.0.0.1:{carrier}")),
            ("DISPATCHER_LIST", list.display().to_string()),
        ],
    )
    .unwrap();
    let (_, trunks) = w.api.get("/v1/trunks").await;
    let trunk_id = trunks["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = w
        .api
        .patch(
            &format!("/v1/trunks/{trunk_id}"),
            json!({"port": edge.port}),
        )
        .await;
    assert_eq!(s, 200);
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    w.hangup(&id).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}\n{}", edge.log());
    assert_eq!(record["end_reason"]["by"], "api");
    assert!(
        edge.log()
            .contains(&format!("node {} -> carrier", w.daemon.sip_addr)),
        "{}",
        edge.log()
    );
    // SIPp's scenario fails unless our BYE reached it through the edge.
    w.finish().await;
}

/// Runs the `dialtone` CLI against the world's daemon: exit success, stdout, stderr.
async fn cli(w: &World, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dialtone"))
        .args(args)
        .env("DIALTONE_SERVER", format!("http://{}", w.daemon.grpc_addr))
        .env("DIALTONE_API_KEY", KEY)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_the_api_and_follows_a_call_over_grpc() {
    let w = world(
        Some("callee_speaks_then_hangs_up.xml"),
        &[("talk_ms", "1000")],
    )
    .await;
    let (ok, out, err) = cli(
        &w,
        &[
            "trunks",
            "create",
            "--name",
            "cli",
            "--host",
            "sip.example.net",
            "--transport",
            "tcp",
            "--password",
            "pw",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let trunk: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(trunk["name"], "cli");
    assert_eq!(trunk["transport"], "tcp");
    assert_eq!(trunk["has_password"], true);
    assert!(trunk.get("password").is_none());
    let (ok, out, _) = cli(&w, &["trunks", "list"]).await;
    assert!(ok);
    assert!(out.starts_with("ID "), "a table: {out}");
    assert!(
        out.contains("sip.example.net") && out.contains("sipp"),
        "{out}"
    );
    let (ok, out, _) = cli(&w, &["agents", "list", "--json"]).await;
    assert!(ok);
    let agents: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(agents[0]["id"], w.agent_id.as_str());

    let (ok, out, err) = cli(
        &w,
        &[
            "call",
            "--agent",
            &w.agent_id,
            "--to",
            "+15551230000",
            "--metadata",
            "{\"crm\": 7}",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("dispatched call "))
        .unwrap()
        .to_owned();
    // Followed live: the statuses in order, then the record.
    let queued = out.find(" queued").unwrap();
    let in_progress = out.find(" in_progress").unwrap();
    let completed = out.find(" completed\n").unwrap();
    assert!(queued < in_progress && in_progress < completed, "{out}");
    assert!(out.contains("status       completed"), "{out}");
    assert!(out.contains("end reason   completed (by callee)"), "{out}");
    let (ok, out, _) = cli(&w, &["calls", "get", &id, "--json"]).await;
    assert!(ok);
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["status"], "completed");
    assert_eq!(record["metadata"], json!({"crm": 7}));
    let (ok, out, _) = cli(&w, &["calls", "list", "--status", "completed"]).await;
    assert!(ok && out.contains(&id), "{out}");

    // Refusals: exit status 1 and the server's message.
    let (ok, _, err) = cli(&w, &["call", "--agent", &w.agent_id, "--to", "5551230000"]).await;
    assert!(!ok);
    assert!(
        err.starts_with("dialtone: InvalidArgument:") && err.contains("(field to)"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &w,
        &["numbers", "get", "0190f5a0-0000-7000-8000-000000000000"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("NotFound"), "{err}");
    let (ok, _, err) = cli(&w, &["calls", "list", "--status", "ringing!"]).await;
    assert!(!ok);
    assert!(
        err.contains("--status \"ringing!\" is not a call status"),
        "{err}"
    );
    w.finish().await;
}

/// A provider's API key goes in and never comes out: not in a creation's answer, a read, a
/// list or a PATCH's answer (nor over gRPC, whose message has no such field).
fn assert_keyless(provider: &Value) {
    assert!(provider.get("api_key").is_none(), "{provider}");
    assert!(
        !provider.to_string().contains("sk-provider-secret"),
        "{provider}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_keep_their_key_write_only_and_refuse_what_breaks_a_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.private_destinations = dialtone_engine::outbound::PrivateDestinations::None;
    let d = Daemon::start(config).await.unwrap();
    let api = Api {
        base: format!("http://{}", d.http_addr),
        http: reqwest::Client::new(),
    };
    let (s, provider) = api
        .post(
            "/v1/providers",
            json!({"name": "openai", "kind": "openai", "api_key": "sk-provider-secret"}),
        )
        .await;
    assert_eq!(s, 201, "{provider}");
    assert_keyless(&provider);
    assert_eq!(provider["has_api_key"], true);
    assert_eq!(provider["base_url"], "https://api.openai.com/v1");
    let id = provider["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/providers/{id}");
    let (s, read) = api.get(&path).await;
    assert_eq!(s, 200);
    assert_keyless(&read);
    assert_eq!(read, provider);
    let (_, list) = api.get("/v1/providers").await;
    assert_eq!(list["data"], json!([provider]));
    assert_eq!(list["next_cursor"], Value::Null);
    // PATCH changes what it names and keeps the key; a new kind brings its default base URL.
    let (s, changed) = api.patch(&path, json!({"kind": "deepgram"})).await;
    assert_eq!(s, 200, "{changed}");
    assert_keyless(&changed);
    assert_eq!(
        (changed["kind"].clone(), changed["base_url"].clone()),
        (json!("deepgram"), json!("https://api.deepgram.com/v1"))
    );
    assert_eq!(changed["has_api_key"], true, "the key was kept");
    let (s, changed) = api
        .patch(
            &path,
            json!({"kind": "openai", "base_url": "https://api.groq.com/openai/v1"}),
        )
        .await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!(changed["base_url"], "https://api.groq.com/openai/v1");
    let (_, cleared) = api.patch(&path, json!({"api_key": null})).await;
    assert_eq!(cleared["has_api_key"], false);
    let (_, keyed) = api
        .patch(&path, json!({"api_key": "sk-provider-secret"}))
        .await;
    assert_keyless(&keyed);
    assert_eq!(keyed["has_api_key"], true);
    // Each rule names its field; the same at creation and PATCH.
    for (body, field) in [
        (json!({"kind": "openai"}), "name"),
        (json!({"name": "x"}), "kind"),
        (json!({"name": "x", "kind": "gpt"}), "kind"),
        (
            json!({"name": "x", "kind": "openai", "base_url": "ftp://x"}),
            "base_url",
        ),
        (
            json!({"name": "x", "kind": "openai", "api_key": "a\nb"}),
            "api_key",
        ),
        (
            json!({"name": "x", "kind": "openai", "apikey": "k"}),
            "apikey",
        ),
        (json!({"name": "openai", "kind": "openai"}), "name"),
    ] {
        let (s, e) = api.post("/v1/providers", body.clone()).await;
        assert!(s == 400 || s == 409, "{body}: {s} {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {e}"
        );
    }
    let (s, e) = api.patch(&path, json!({"base_url": "gopher://x"})).await;
    assert_eq!((s, e["error"]["field"].clone()), (400, json!("base_url")));
    // A base URL on a private or loopback address follows the webhook URLs' policy.
    for url in [
        "http://127.0.0.1:8000/v1",
        "http://169.254.169.254/latest",
        "http://10.0.0.5/v1",
    ] {
        let (s, e) = api
            .post(
                "/v1/providers",
                json!({"name": "local", "kind": "openai", "base_url": url}),
            )
            .await;
        assert_eq!(
            (s, e["error"]["field"].clone()),
            (400, json!("base_url")),
            "{url}: {e}"
        );
        let (s, e) = api.patch(&path, json!({ "base_url": url })).await;
        assert_eq!(
            (s, e["error"]["field"].clone()),
            (400, json!("base_url")),
            "{url}: {e}"
        );
    }
    // Another organisation's key finds none of it.
    let (_, other_key) = second_org(&api, json!({})).await;
    let other = api.as_key(&other_key);
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let body = (method == reqwest::Method::PATCH).then(|| json!({"name": "mine"}));
        let (s, e) = other.send(method.clone(), &path, body).await;
        assert_eq!(
            (s, e["error"]["code"].clone()),
            (404, json!("not_found")),
            "{method}"
        );
    }
    let (_, theirs) = other
        .send(reqwest::Method::GET, "/v1/providers", None)
        .await;
    assert_eq!(theirs["data"], json!([]));
    // The same name is free in another organisation.
    let (s, _) = other
        .send(
            reqwest::Method::POST,
            "/v1/providers",
            Some(json!({"name": "openai", "kind": "openai"})),
        )
        .await;
    assert_eq!(s, 201);
    // An agent naming it: deleting it, or renaming it away from the name the agent uses, is
    // 409 in_use naming the agent.
    let (s, agent) = api
        .post(
            "/v1/agents",
            json!({"name": "closer", "brain": "builtin:agent",
                   "llm": {"provider": "openai", "model": "gpt-4o-mini"},
                   "stt": {"provider": id, "model": "whisper-1"}}),
        )
        .await;
    assert_eq!(s, 201, "{agent}");
    let (s, e) = api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (409, json!("in_use")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"closer\""),
        "{e}"
    );
    let (s, e) = api.patch(&path, json!({"name": "renamed"})).await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (409, json!("in_use")),
        "{e}"
    );
    assert_eq!(e["error"]["field"], "name");
    // Pointed at the id everywhere, the provider can be renamed; it is still in use.
    let agent_path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    let (s, _) = api
        .patch(
            &agent_path,
            json!({"llm": {"provider": id, "model": "gpt-4o-mini"}}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, renamed) = api.patch(&path, json!({"name": "renamed"})).await;
    assert_eq!(
        (s, renamed["name"].clone()),
        (200, json!("renamed")),
        "{renamed}"
    );
    let (s, _) = api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(s, 409);
    let (s, _) = api.send(reqwest::Method::DELETE, &agent_path, None).await;
    assert_eq!(s, 204);
    let (s, _) = api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(s, 204);
    let (s, _) = api.get(&path).await;
    assert_eq!(s, 404);
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_name_providers_of_their_organisation_of_a_kind_that_fits() {
    let w = world(None, &[]).await;
    let mut ids = std::collections::HashMap::new();
    for (name, kind) in [
        ("chat", "openai"),
        ("ears", "deepgram"),
        ("voice", "cartesia"),
    ] {
        // Private base URLs are allowed on this daemon (DIALTONE_WEBHOOK_ALLOW_PRIVATE).
        let (s, p) = w
            .api
            .post(
                "/v1/providers",
                json!({"name": name, "kind": kind, "base_url": "http://127.0.0.1:9/v1"}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        ids.insert(name, p["id"].as_str().unwrap().to_owned());
    }
    let (_, other_key) = second_org(&w.api, json!({})).await;
    let (s, theirs) = w
        .api
        .as_key(&other_key)
        .send(
            reqwest::Method::POST,
            "/v1/providers",
            Some(json!({"name": "theirs", "kind": "openai"})),
        )
        .await;
    assert_eq!(s, 201);
    let agent = |llm: &str, stt: &str, tts: Option<&str>| {
        let mut body = json!({"name": "talker", "brain": "builtin:agent",
                              "llm": {"provider": llm, "model": "m"},
                              "stt": {"provider": stt, "model": "m"}});
        if let Some(tts) = tts {
            body["tts"] = json!({ "provider": tts });
        }
        body
    };
    for (body, field, words) in [
        (agent("nobody", "ears", None), "llm.provider", "\"nobody\""),
        (
            agent(theirs["id"].as_str().unwrap(), "ears", None),
            "llm.provider",
            "neither the name nor the id",
        ),
        (
            agent("ears", "ears", None),
            "llm.provider",
            "kind \"openai\"",
        ),
        (
            agent("chat", "voice", None),
            "stt.provider",
            "kind \"openai\" or \"deepgram\"",
        ),
        (agent("chat", "nobody", None), "stt.provider", "\"nobody\""),
        (
            agent("chat", "ears", Some("ears")),
            "tts.provider",
            "\"openai\", \"cartesia\" or \"elevenlabs\", or \"builtin:espeak\"",
        ),
        (
            agent("chat", "ears", Some("builtin:festival")),
            "tts.provider",
            "\"builtin:festival\"",
        ),
    ] {
        let (s, e) = w.api.post("/v1/agents", body.clone()).await;
        assert_eq!(
            (s, e["error"]["field"].clone()),
            (400, json!(field)),
            "{body}: {e}"
        );
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field) && message.contains(words),
            "{body}: {message}"
        );
    }
    // Names and ids both resolve; `builtin:espeak` needs no provider.
    for body in [
        agent("chat", "ears", None),
        agent(&ids["chat"], &ids["chat"], Some("builtin:espeak")),
        agent("chat", "ears", Some(&ids["voice"])),
        agent("chat", "ears", Some("chat")),
    ] {
        let (s, a) = w.api.post("/v1/agents", body.clone()).await;
        assert_eq!(s, 201, "{body}: {a}");
    }
    // An agent speaking through espeak-ng names one of its voices.
    let mut alloy = agent("chat", "ears", None);
    alloy["voice"] = json!("alloy");
    let (s, e) = w.api.post("/v1/agents", alloy.clone()).await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (400, json!("voice")),
        "{e}"
    );
    alloy["tts"] = json!({"provider": "voice"});
    let (s, a) = w.api.post("/v1/agents", alloy).await;
    assert_eq!(s, 201, "{a}");
    // PATCH checks the resulting agent the same way.
    let path = format!("/v1/agents/{}", w.agent_id);
    let (s, e) = w
        .api
        .patch(&path, json!({"tts": {"provider": "chat-typo"}}))
        .await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (400, json!("tts.provider")),
        "{e}"
    );
    let (s, e) = w
        .api
        .patch(&path, json!({"tts": {"provider": "ears"}}))
        .await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (400, json!("tts.provider")),
        "{e}"
    );
    let (s, a) = w
        .api
        .patch(
            &path,
            json!({"tts": {"provider": "voice", "model": "sonic-2"}}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_providers_with_the_key_from_the_environment() {
    let w = world(None, &[]).await;
    let run = |args: &[&str], key: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dialtone"));
        command
            .args(args)
            .env("DIALTONE_SERVER", format!("http://{}", w.daemon.grpc_addr))
            .env("DIALTONE_API_KEY", KEY)
            .env_remove("DIALTONE_PROVIDER_API_KEY");
        if let Some(key) = key {
            command.env("DIALTONE_PROVIDER_API_KEY", key);
        }
        async move {
            let out = command.output().await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!stdout.contains("sk-provider-secret"), "{stdout}");
            (out.status.success(), stdout, stderr)
        }
    };
    let (ok, out, err) = run(
        &[
            "providers",
            "create",
            "--name",
            "groq",
            "--kind",
            "openai",
            "--base-url",
            "https://api.groq.com/openai/v1",
            "--json",
        ],
        Some("sk-provider-secret"),
    )
    .await;
    assert!(ok, "{err}");
    let provider: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            provider["name"].clone(),
            provider["kind"].clone(),
            provider["has_api_key"].clone()
        ),
        (json!("groq"), json!("openai"), json!(true))
    );
    let id = provider["id"].as_str().unwrap();
    let (ok, out, _) = run(&["providers", "list"], None).await;
    assert!(
        ok && out.starts_with("ID ") && out.contains("api.groq.com"),
        "{out}"
    );
    let (ok, out, err) = run(
        &["providers", "update", id, "--kind", "deepgram", "--json"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let changed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(changed["kind"], "deepgram");
    assert_eq!(changed["base_url"], "https://api.groq.com/openai/v1");
    assert_eq!(changed["has_api_key"], true);
    let (ok, out, _) = run(&["providers", "get", id, "--json"], None).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), changed);
    let (ok, _, err) = run(
        &["providers", "create", "--name", "groq", "--kind", "openai"],
        None,
    )
    .await;
    assert!(!ok && err.contains("AlreadyExists"), "{err}");
    let (ok, _, _) = run(&["providers", "delete", id], None).await;
    assert!(ok);
    let (ok, _, err) = run(&["providers", "get", id], None).await;
    assert!(!ok && err.contains("NotFound"), "{err}");
    w.finish().await;
}

#[path = "e2e/agent.rs"]
mod agent;
#[path = "e2e/agent_speech.rs"]
mod agent_speech;
#[path = "e2e/amd.rs"]
mod amd;
#[path = "e2e/brain_audio.rs"]
mod brain_audio;
#[path = "e2e/bridge.rs"]
mod bridge;
#[path = "e2e/codecs.rs"]
mod codecs;
#[path = "e2e/failures.rs"]
mod failures;
#[path = "e2e/inbound.rs"]
mod inbound;
#[path = "e2e/nodes.rs"]
mod nodes;
#[path = "e2e/recording.rs"]
mod recording;
#[path = "e2e/secure.rs"]
mod secure;
#[path = "e2e/streams.rs"]
mod streams;
#[path = "e2e/transfer.rs"]
mod transfer;

mod grpc {
    //! The same service over gRPC: a tonic client against the daemon's gRPC port.

    use super::*;
    use dialtone_control::proto::{
        self, agent_service_client::AgentServiceClient, call_service_client::CallServiceClient,
        trunk_service_client::TrunkServiceClient,
    };
    use tonic::metadata::MetadataValue;
    use tonic::transport::Channel;

    async fn channel(daemon: &Daemon) -> Channel {
        Channel::from_shared(format!("http://{}", daemon.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn authed<T>(message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {KEY}")).unwrap(),
        );
        r
    }

    fn dispatch_request(agent_id: &str) -> proto::DispatchCallRequest {
        proto::DispatchCallRequest {
            agent_id: agent_id.to_owned(),
            to: "+15551230000".into(),
            context: Some(prost_types::Struct {
                fields: [(
                    "appointment".to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue("tomorrow".into())),
                    },
                )]
                .into(),
            }),
            ..Default::default()
        }
    }

    /// The call object HTTP shows and the message gRPC sends for the same call agree, field by
    /// field.
    fn same_call(http: &Value, grpc: &proto::Call) {
        use dialtone_control::proto::json::{from_struct, from_value};
        let text = |key: &str| http[key].as_str().map(str::to_owned);
        assert_eq!(text("id").unwrap(), grpc.id);
        assert_eq!(text("agent_id").unwrap(), grpc.agent_id);
        assert_eq!(text("to").unwrap(), grpc.to);
        assert_eq!(text("from_number").unwrap(), grpc.from_number);
        assert_eq!(text("instructions").unwrap_or_default(), grpc.instructions);
        assert_eq!(
            http["context"],
            grpc.context.as_ref().map_or(Value::Null, from_struct)
        );
        assert_eq!(
            http["metadata"],
            grpc.metadata.as_ref().map_or(Value::Null, from_struct)
        );
        assert_eq!(text("webhook_url"), grpc.webhook_url);
        assert_eq!(
            text("status"),
            grpc.status().to_model().map(|s| s.as_str().to_owned())
        );
        let reason = grpc.end_reason.as_ref().unwrap();
        assert_eq!(http["end_reason"]["code"], reason.code.as_str());
        assert_eq!(http["end_reason"]["by"], reason.by.as_str());
        assert_eq!(
            http["end_reason"]["sip_status"].as_u64(),
            reason.sip_status.map(u64::from)
        );
        assert_eq!(
            http["end_reason"]["message"].as_str(),
            reason.message.as_deref()
        );
        assert_eq!(text("answered_by"), grpc.answered_by);
        assert_eq!(text("sip_call_id"), grpc.sip_call_id);
        assert_eq!(text("trunk_id"), grpc.trunk_id);
        assert_eq!(text("created_at").unwrap(), grpc.created_at);
        assert_eq!(text("dialed_at"), grpc.dialed_at);
        assert_eq!(text("ringing_at"), grpc.ringing_at);
        assert_eq!(text("answered_at"), grpc.answered_at);
        assert_eq!(text("ended_at"), grpc.ended_at);
        assert_eq!(http["ring_duration_ms"].as_i64(), grpc.ring_duration_ms);
        assert_eq!(http["talk_duration_ms"].as_i64(), grpc.talk_duration_ms);
        let lines = http["transcript"].as_array().unwrap();
        assert_eq!(lines.len(), grpc.transcript.len());
        for (line, message) in lines.iter().zip(&grpc.transcript) {
            assert_eq!(line["role"], message.role.as_str());
            assert_eq!(line["text"], message.text.as_str());
            assert_eq!(line["at"], message.at.as_str());
        }
        assert_eq!(
            http["result"],
            grpc.result.as_ref().map_or(Value::Null, from_value)
        );
        assert_eq!(text("result_error"), grpc.result_error);
        // Struct numbers are doubles: compare the statistics as numbers.
        let numbers = |v: &Value| -> Vec<(String, Option<f64>)> {
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| (k.clone(), n.as_f64()))
                .collect()
        };
        assert_eq!(
            numbers(&http["media_stats"]),
            numbers(&grpc.media_stats.as_ref().map_or(Value::Null, from_struct))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_dispatched_over_grpc_is_watched_to_its_end() {
        let w = world(
            Some("callee_speaks_then_hangs_up.xml"),
            &[("talk_ms", "1500")],
        )
        .await;
        let mut calls = CallServiceClient::new(channel(&w.daemon).await);
        let mut request = dispatch_request(&w.agent_id);
        request.idempotency_key = Some("grpc-1".into());
        let dispatched = calls
            .dispatch_call(authed(request.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(!dispatched.replayed);
        let call = dispatched.call.unwrap();
        assert_eq!(call.status(), proto::CallStatus::Queued);
        assert_eq!(call.instructions, "Repeat after the caller.");
        // Watch it: every state in order, ending with the final one.
        let mut stream = calls
            .watch_call(authed(proto::WatchCallRequest {
                id: call.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while let Some(update) = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap()
            .unwrap()
        {
            seen.push(update.call.unwrap().status());
        }
        assert_eq!(seen.last(), Some(&proto::CallStatus::Completed), "{seen:?}");
        assert!(
            seen.windows(2).all(|p| p[0] < p[1]),
            "forward only: {seen:?}"
        );
        assert!(seen.contains(&proto::CallStatus::InProgress), "{seen:?}");
        // The same idempotency key replays the same call.
        let again = calls
            .dispatch_call(authed(request))
            .await
            .unwrap()
            .into_inner();
        assert!(again.replayed);
        assert_eq!(again.call.unwrap().id, call.id);
        let got = calls
            .get_call(authed(proto::GetCallRequest {
                id: call.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .call
            .unwrap();
        assert_eq!(got.status(), proto::CallStatus::Completed);
        let (status, http) = w.api.get(&format!("/v1/calls/{}", call.id)).await;
        assert_eq!(status, 200, "{http}");
        same_call(&http, &got);
        assert_eq!(got.end_reason.as_ref().unwrap().by, "callee");
        assert!(got.talk_duration_ms.unwrap() >= 1000);
        let context = got.context.unwrap();
        assert!(context.fields.contains_key("appointment"));
        let media = got.media_stats.unwrap();
        assert!(media.fields.contains_key("packets_in"));
        let listed = calls
            .list_calls(authed(proto::ListCallsRequest {
                status: proto::CallStatus::Completed as i32,
                limit: Some(10),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.calls.len(), 1);
        assert_eq!(listed.next_cursor, None);
        w.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disabled_organisations_dispatch_is_permission_denied() {
        let w = world(None, &[]).await;
        let (_, orgs) = w.api.get("/v1/organizations").await;
        let home = orgs["data"][0]["id"].as_str().unwrap().to_owned();
        let patch = format!("/v1/organizations/{home}");
        let (s, _) = w.api.patch(&patch, json!({"disabled": true})).await;
        assert_eq!(s, 200);
        let mut calls = CallServiceClient::new(channel(&w.daemon).await);
        let e = calls
            .dispatch_call(authed(dispatch_request(&w.agent_id)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            e.metadata().get("dialtone-error-code").unwrap(),
            "organization_disabled"
        );
        assert!(e.message().contains(&home), "{}", e.message());
        let (s, _) = w.api.patch(&patch, json!({"disabled": false})).await;
        assert_eq!(s, 200);
        calls
            .dispatch_call(authed(dispatch_request(&w.agent_id)))
            .await
            .unwrap();
        w.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_errors_carry_the_right_code_and_name_the_field() {
        let w = world(None, &[]).await;
        let channel = channel(&w.daemon).await;
        let mut calls = CallServiceClient::new(channel.clone());
        // No key.
        let e = calls
            .get_call(proto::GetCallRequest { id: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        // A bad number names `to`.
        let mut bad = dispatch_request(&w.agent_id);
        bad.to = "5551230000".into();
        let e = calls.dispatch_call(authed(bad)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.metadata().get("dialtone-error-field").unwrap(), "to");
        // An unknown agent.
        let e = calls
            .dispatch_call(authed(dispatch_request(
                "01900000-0000-7000-8000-000000000000",
            )))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        // A from_number the agent does not have.
        let mut other = dispatch_request(&w.agent_id);
        other.from_number = Some("+15550000000".into());
        let e = calls.dispatch_call(authed(other)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("from_number"), "{}", e.message());
        // A trunk whose name is taken.
        let mut trunks = TrunkServiceClient::new(channel.clone());
        let e = trunks
            .create_trunk(authed(proto::CreateTrunkRequest {
                trunk: Some(proto::TrunkFields {
                    name: Some("sipp".into()),
                    host: Some("127.0.0.1".into()),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists);
        // A trunk still carrying numbers cannot be deleted.
        let listed = trunks
            .list_trunks(authed(proto::ListTrunksRequest {}))
            .await
            .unwrap()
            .into_inner();
        let trunk = &listed.trunks[0];
        assert!(trunk.has_password, "the password is set but never shown");
        let e = trunks
            .delete_trunk(authed(proto::DeleteTrunkRequest {
                id: trunk.id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        // Agents: update keeps what it does not name.
        let mut agents = AgentServiceClient::new(channel.clone());
        let updated = agents
            .update_agent(authed(proto::UpdateAgentRequest {
                id: w.agent_id.clone(),
                agent: Some(proto::AgentFields {
                    persona: Some("A patient receptionist".into()),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .agent
            .unwrap()
            .fields
            .unwrap();
        assert_eq!(updated.persona.as_deref(), Some("A patient receptionist"));
        assert_eq!(
            updated.instructions.as_deref(),
            Some("Repeat after the caller.")
        );
        assert_eq!(updated.number_ids.len(), 1);
        w.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_python_grpcio_client_dispatches_through_the_generated_stubs() {
        let w = world(
            Some("callee_speaks_then_hangs_up.xml"),
            &[("talk_ms", "1000")],
        )
        .await;
        // A virtualenv with grpcio and grpcio-tools from PyPI: scripts/test.sh makes it and names
        // its interpreter in DIALTONE_PYTHON; otherwise the same script makes it now.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = match std::env::var("DIALTONE_PYTHON") {
            Ok(p) => p,
            Err(_) => {
                let out = std::process::Command::new(root.join("scripts/python-env.sh"))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
        };
        let grpc_addr = w.daemon.grpc_addr.to_string();
        let agent_id = w.agent_id.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&python)
                .arg(root.join("crates/daemon/tests/python/dispatch_call.py"))
                .arg(root.join("proto"))
                .args([grpc_addr.as_str(), KEY, agent_id.as_str(), "+15551230000"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run {python}: {e}"))
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("dispatched"), "{stdout}");
        assert!(
            stdout.contains("final CALL_STATUS_COMPLETED completed {'source': 'python'}"),
            "{stdout}"
        );
        assert!(
            stdout.contains("status CALL_STATUS_IN_PROGRESS"),
            "{stdout}"
        );
        assert!(stdout.trim_end().ends_with("unauthenticated"), "{stdout}");
        w.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn providers_over_grpc_never_send_the_key_back() {
        use dialtone_control::proto::provider_service_client::ProviderServiceClient;
        let w = world(None, &[]).await;
        let mut providers = ProviderServiceClient::new(channel(&w.daemon).await);
        let made = providers
            .create_provider(authed(proto::CreateProviderRequest {
                provider: Some(proto::ProviderFields {
                    name: Some("speech".into()),
                    kind: proto::ProviderKind::Openai as i32,
                    api_key: Some("sk-provider-secret".into()),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .provider
            .unwrap();
        assert!(made.has_api_key);
        assert_eq!(made.base_url, "https://api.openai.com/v1");
        assert!(!format!("{made:?}").contains("sk-provider-secret"));
        // The same provider over HTTP.
        let (_, http) = w.api.get(&format!("/v1/providers/{}", made.id)).await;
        assert_eq!(http["kind"], "openai");
        assert_eq!(http["created_at"], made.created_at.as_str());
        // Update keeps what it does not set, the key included.
        let updated = providers
            .update_provider(authed(proto::UpdateProviderRequest {
                id: made.id.clone(),
                provider: Some(proto::ProviderFields {
                    name: Some("voice".into()),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .provider
            .unwrap();
        assert_eq!(
            (updated.name.as_str(), updated.has_api_key),
            ("voice", true)
        );
        assert_eq!(updated.kind, proto::ProviderKind::Openai as i32);
        let listed = providers
            .list_providers(authed(proto::ListProvidersRequest {}))
            .await
            .unwrap()
            .into_inner()
            .providers;
        assert_eq!(listed, vec![updated.clone()]);
        let got = providers
            .get_provider(authed(proto::GetProviderRequest {
                id: made.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .provider
            .unwrap();
        assert_eq!(got, updated);
        // A missing kind names the field; an agent's provider cannot be deleted.
        let e = providers
            .create_provider(authed(proto::CreateProviderRequest {
                provider: Some(proto::ProviderFields {
                    name: Some("x".into()),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.metadata().get("dialtone-error-field").unwrap(), "kind");
        let (s, _) = w
            .api
            .patch(
                &format!("/v1/agents/{}", w.agent_id),
                json!({"tts": {"provider": "voice"}}),
            )
            .await;
        assert_eq!(s, 200);
        let e = providers
            .delete_provider(authed(proto::DeleteProviderRequest {
                id: made.id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.metadata().get("dialtone-error-code").unwrap(), "in_use");
        w.finish().await;
    }

    fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {key}")).unwrap(),
        );
        r
    }

    /// The organisation HTTP shows and the message gRPC sends agree, field by field.
    fn same_organization(http: &Value, grpc: &proto::Organization) {
        let text = |key: &str| http[key].as_str().map(str::to_owned);
        let number = |key: &str| http[key].as_u64().map(|n| u32::try_from(n).unwrap());
        assert_eq!(text("id").unwrap(), grpc.id);
        assert_eq!(text("name").unwrap(), grpc.name);
        assert_eq!(number("max_concurrent_calls"), grpc.max_concurrent_calls);
        assert_eq!(number("max_calls_per_second"), grpc.max_calls_per_second);
        assert_eq!(http["disabled"].as_bool().unwrap(), grpc.disabled);
        assert_eq!(text("disabled_at"), grpc.disabled_at);
        assert_eq!(text("created_at").unwrap(), grpc.created_at);
        assert_eq!(http.as_object().unwrap().len(), 7, "{http}");
    }

    /// The key HTTP lists and the message gRPC sends agree, field by field.
    fn same_key(http: &Value, grpc: &proto::Key) {
        let text = |key: &str| http[key].as_str().map(str::to_owned);
        assert_eq!(text("id").unwrap(), grpc.id);
        assert_eq!(text("organization_id").unwrap(), grpc.organization_id);
        assert_eq!(text("prefix").unwrap(), grpc.prefix);
        assert_eq!(
            text("scope").unwrap(),
            format!("{:?}", grpc.scope()).to_lowercase()
        );
        assert_eq!(text("created_at").unwrap(), grpc.created_at);
        assert_eq!(text("expires_at"), grpc.expires_at);
        assert_eq!(text("last_used_at"), grpc.last_used_at);
        assert_eq!(http.as_object().unwrap().len(), 7, "{http}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn organisations_and_keys_over_grpc_agree_with_http_and_keep_their_scopes() {
        use dialtone_control::proto::organization_service_client::OrganizationServiceClient;
        let w = world(None, &[]).await;
        let mut orgs = OrganizationServiceClient::new(channel(&w.daemon).await);
        let made = orgs
            .create_organization(authed(proto::CreateOrganizationRequest {
                organization: Some(proto::OrganizationFields {
                    name: "acme".into(),
                    max_concurrent_calls: Some(3),
                    max_calls_per_second: None,
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap();
        let path = format!("/v1/organizations/{}", made.id);
        let (s, http) = w.api.get(&path).await;
        assert_eq!(s, 200, "{http}");
        same_organization(&http, &made);
        assert_eq!(made.max_concurrent_calls, Some(3));
        // Disabled over gRPC, the same over HTTP and in the gRPC read and list.
        let disabled = orgs
            .update_organization(authed(proto::UpdateOrganizationRequest {
                id: made.id.clone(),
                disabled: Some(true),
                end_live_calls: None,
            }))
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap();
        assert!(disabled.disabled && disabled.disabled_at.is_some());
        let (_, http) = w.api.get(&path).await;
        same_organization(&http, &disabled);
        let got = orgs
            .get_organization(authed(proto::GetOrganizationRequest {
                id: made.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap();
        assert_eq!(got, disabled);
        let listed = orgs
            .list_organizations(authed(proto::ListOrganizationsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .organizations;
        let (_, http_list) = w.api.get("/v1/organizations").await;
        let http_list = http_list["data"].as_array().unwrap();
        assert_eq!(listed.len(), http_list.len());
        for (h, g) in http_list.iter().zip(&listed) {
            same_organization(h, g);
        }
        // The same rule as HTTP, naming the field.
        let e = orgs
            .update_organization(authed(proto::UpdateOrganizationRequest {
                id: made.id.clone(),
                disabled: None,
                end_live_calls: Some(true),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.metadata().get("dialtone-error-field").unwrap(),
            "end_live_calls"
        );
        // Keys: an admin key issued over gRPC, listed the same on both faces.
        let issued = orgs
            .issue_key(authed(proto::IssueKeyRequest {
                organization_id: made.id.clone(),
                scope: proto::KeyScope::Admin as i32,
                expires_at: Some("2099-01-01T00:00:00Z".into()),
            }))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        assert!(issued.key.starts_with(&issued.prefix), "{issued:?}");
        assert_eq!(issued.organization_id, made.id);
        assert_eq!(issued.scope(), proto::KeyScope::Admin);
        let keys = orgs
            .list_keys(authed(proto::ListKeysRequest {
                organization_id: made.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .keys;
        let (s, http_keys) = w.api.get(&format!("{path}/keys")).await;
        assert_eq!(s, 200, "{http_keys}");
        let http_keys = http_keys["data"].as_array().unwrap();
        assert_eq!((keys.len(), http_keys.len()), (1, 1));
        same_key(&http_keys[0], &keys[0]);
        assert_eq!(keys[0].id, issued.id);
        assert_eq!(keys[0].expires_at, issued.expires_at);
        assert!(
            !format!("{keys:?}").contains(&issued.key),
            "no secret listed"
        );
        // Scopes: the admin key manages its own keys but not organisations, nor operator keys.
        let admin = issued.key.clone();
        let e = orgs
            .list_organizations(with_key(proto::ListOrganizationsRequest {}, &admin))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("`operator`"), "{}", e.message());
        let e = orgs
            .issue_key(with_key(
                proto::IssueKeyRequest {
                    organization_id: made.id.clone(),
                    scope: proto::KeyScope::Operator as i32,
                    expires_at: None,
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(e.metadata().get("dialtone-error-field").unwrap(), "scope");
        let plain = orgs
            .issue_key(with_key(
                proto::IssueKeyRequest {
                    organization_id: made.id.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        assert_eq!(plain.scope(), proto::KeyScope::Standard);
        let e = orgs
            .list_keys(with_key(
                proto::ListKeysRequest {
                    organization_id: made.id.clone(),
                },
                &plain.key,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // Revoked over gRPC: gone from HTTP's list, the key unauthenticated at once.
        orgs.revoke_key(with_key(
            proto::RevokeKeyRequest {
                organization_id: made.id.clone(),
                id: plain.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
        let (_, http_keys) = w.api.get(&format!("{path}/keys")).await;
        assert_eq!(http_keys["data"].as_array().unwrap().len(), 1);
        let e = orgs
            .list_keys(with_key(
                proto::ListKeysRequest {
                    organization_id: made.id.clone(),
                },
                &plain.key,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        // Deleted over gRPC: not found on both faces.
        orgs.delete_organization(authed(proto::DeleteOrganizationRequest {
            id: made.id.clone(),
        }))
        .await
        .unwrap();
        let (s, _) = w.api.get(&path).await;
        assert_eq!(s, 404);
        let e = orgs
            .get_organization(authed(proto::GetOrganizationRequest { id: made.id }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        w.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_and_reflection_answer() {
        let w = world(None, &[]).await;
        let channel = channel(&w.daemon).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in ["", "dialtone.v1.CallService", "dialtone.v1.AgentService"] {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("{response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "dialtone.v1.CallService",
            "dialtone.v1.AgentService",
            "dialtone.v1.NumberService",
            "dialtone.v1.ProviderService",
            "dialtone.v1.OrganizationService",
            "dialtone.v1.TrunkService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        w.finish().await;
    }
}

/// The metrics describe every organisation: on the API they take an operator key; a private
/// network's scraper reads them without one on `DIALTONE_METRICS_ADDR`, which serves nothing
/// else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_an_operator_key_on_the_api_and_none_on_their_own_address() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let d = Daemon::start(config).await.unwrap();
    let api = Api {
        base: format!("http://{}", d.http_addr),
        http: reqwest::Client::new(),
    };
    let page = |url: String, key: Option<String>| {
        let http = api.http.clone();
        async move {
            let mut request = http.get(url);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let on_api = format!("{}/metrics", api.base);
    let (s, body) = page(on_api.clone(), None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("\"unauthenticated\""), "{body}");
    let (_, tenant_key) = second_org(&api, json!({})).await;
    assert_eq!(page(on_api.clone(), Some(tenant_key)).await.0, 403);
    let (s, body) = page(on_api, Some(KEY.to_owned())).await;
    assert_eq!(s, 200);
    assert!(body.contains("dialtone_media_"), "{body}");
    let own = d.metrics_addr.unwrap();
    let (s, body) = page(format!("http://{own}/metrics"), None).await;
    assert_eq!(s, 200);
    assert!(body.contains("dialtone_media_"), "{body}");
    assert_eq!(page(format!("http://{own}/v1/calls"), None).await.0, 404);
    d.shutdown(Duration::from_secs(1)).await;
}

/// One organisation cannot take every media port: with 20 calls' worth of ports and 18 held by
/// a greedy tenant (calls to a trunk that never answers hold theirs while `dialing`), a newcomer
/// still gets one, and the greedy tenant's next call is the one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_tenant_cannot_take_every_media_port() {
    let w = world(None, &[]).await;
    let mut greedy = Vec::new();
    for _ in 0..18 {
        greedy.push(w.dispatch(json!({})).await);
    }
    for id in &greedy {
        wait_status(&w.api, id, "dialing").await;
    }
    let trunk_port = w
        ._silent_trunk
        .as_ref()
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_, key) = org_with_key(&w.api, "newcomer", json!({"scope": "admin"})).await;
    let newcomer = w.api.as_key(&key);
    let agent = echo_agent(&newcomer, trunk_port, "+15550809999").await;
    let (s, call) = newcomer
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"agent_id": agent, "to": "+15551230000"})),
        )
        .await;
    assert_eq!(s, 201, "{call}");
    let path = format!("/v1/calls/{}", call["id"].as_str().unwrap());
    // The newcomer got a port.
    wait_call_status(&newcomer, &path, "dialing").await;
    let over = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &over).await;
    assert_ended(&record, "failed", "media_unavailable", "engine");
    // Running out is counted, for the operator's alerting.
    let metrics = w.api.metrics().await;
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dialtone_media_ports_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(refused.is_some_and(|n| n >= 1.0), "{metrics}");
    w.finish().await;
}

/// An operator removes an organisation: refused while it has live calls, then its keys stop
/// working at once and it is no longer shown; its calls stay on record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_organisation_loses_its_keys_and_keeps_its_calls() {
    let w = world(None, &[]).await;
    // No call of it ever leaves the queue: a live call that a hang-up ends at once.
    let (s, made) = w
        .api
        .post(
            "/v1/organizations",
            json!({"name": "gone", "max_concurrent_calls": 0}),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let org = made["id"].as_str().unwrap().to_owned();
    let key = issue_key(&w.api.as_key(KEY), &org, json!({"scope": "admin"})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = w.api.as_key(&key);
    let trunk_port = w
        ._silent_trunk
        .as_ref()
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = echo_agent(&gone, trunk_port, "+15550801111").await;
    let (s, call) = gone
        .send(
            reqwest::Method::POST,
            "/v1/calls",
            Some(json!({"agent_id": agent, "to": "+15551230000"})),
        )
        .await;
    assert_eq!(s, 201, "{call}");
    let call_id = call["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/organizations/{org}");
    let (s, err) = w.api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (409, json!("in_use")),
        "{err}"
    );
    let (s, _) = w
        .api
        .patch(&path, json!({"disabled": true, "end_live_calls": true}))
        .await;
    assert_eq!(s, 200);
    let call_path = format!("/v1/calls/{call_id}");
    wait_call_status(&gone, &call_path, "canceled").await;
    let (s, _) = w.api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(s, 204);
    let (s, _) = gone.send(reqwest::Method::GET, "/v1/agents", None).await;
    assert_eq!(s, 401, "the removed organisation's key no longer works");
    let (_, orgs) = w.api.get("/v1/organizations").await;
    assert!(
        orgs["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["id"] != org.as_str()),
        "{orgs}"
    );
    let (s, _) = w.api.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(s, 404);
    w.finish().await;
}

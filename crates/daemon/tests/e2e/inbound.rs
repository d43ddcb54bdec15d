//! Calls placed to our numbers, against SIPp as the trunk calling in: answered by
//! `builtin:echo` with the audio checked as audio and the record `inbound`; refused `403` from
//! an address that is not the number's trunk's, `404` to a number that is not ours or that no
//! agent answers, none of them leaving a record; `486` over the organisation's concurrency cap,
//! without a record either; a caller cancelling before the answer; and a flood of refused
//! INVITEs from one address cut short while a legitimate call still completes;
//! `builtin:agent` answering like `builtin:echo`; and a transfer of a call placed to us, by
//! REFER and bridged (the second leg dialled from our number, not the caller's).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use dialtone_test_support::{Sipp, SippOptions, scenario, write_ulaw_tone};
use serde_json::{Value, json};

use super::{Api, assert_ended, cli, receiver, wait_final, world, world_on};

const OUR_NUMBER: &str = "+15550001000";

/// A trunk on 127.0.0.1, our number on it, and an agent answering it with `builtin:echo`
/// (`direction` as given) that sends its webhooks to `webhook_url`; returns the trunk's and
/// the agent's ids.
async fn answering_agent(
    api: &Api,
    e164: &str,
    direction: &str,
    webhook_url: Option<&str>,
) -> (String, String) {
    let (s, trunk) = api
        .post(
            "/v1/trunks",
            json!({"name": format!("carrier {e164}"), "host": "127.0.0.1", "port": 5060}),
        )
        .await;
    assert_eq!(s, 201, "{trunk}");
    let (s, number) = api
        .post(
            "/v1/numbers",
            json!({"e164": e164, "trunk_id": trunk["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{number}");
    let mut agent = json!({
        "name": format!("reception {e164}"), "direction": direction, "brain": "builtin:echo",
        "number_ids": [number["id"]],
    });
    if let Some(url) = webhook_url {
        agent["webhook_url"] = json!(url);
    }
    let (s, agent) = api.post("/v1/agents", agent).await;
    assert_eq!(s, 201, "{agent}");
    assert_eq!(agent["direction"], direction, "{agent}");
    let (s, shown) = api
        .get(&format!("/v1/numbers/{}", number["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 200, "{shown}");
    let answering = if direction == "outbound" {
        Value::Null
    } else {
        agent["id"].clone()
    };
    assert_eq!(shown["answering_agent_id"], answering, "{shown}");
    (
        trunk["id"].as_str().unwrap().to_owned(),
        agent["id"].as_str().unwrap().to_owned(),
    )
}

/// SIPp from `local_ip` playing `scenario_name` against the daemon, finished (its scenario
/// checks every answer) on a blocking thread.
async fn call_in(target: String, local_ip: &str, scenario_name: &str, keys: Vec<(String, String)>) {
    let sipp = Sipp::uac_playing(
        &scenario(scenario_name),
        &target,
        local_ip,
        &SippOptions {
            replacements: keys,
            ..SippOptions::default()
        },
    )
    .unwrap();
    tokio::task::spawn_blocking(move || sipp.finish(Duration::from_secs(40)))
        .await
        .unwrap()
        .unwrap();
}

fn keys(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn calls(api: &Api) -> Vec<Value> {
    let (s, page) = api.get("/v1/calls").await;
    assert_eq!(s, 200, "{page}");
    page["data"].as_array().cloned().unwrap_or_default()
}

/// The trunk calls our number from its own address: the daemon answers (100, 180, 200), the
/// caller's tone reaches `builtin:echo` and comes back, the caller hangs up, and the record is
/// `inbound`, from the caller's asserted number to ours, `completed` by the caller, with the
/// webhooks `call.ringing`, `call.answered` and `call.ended` at the agent's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_the_numbers_trunk_is_answered_by_echo_and_recorded_inbound() {
    let (url, got) = receiver(0).await;
    let w = world(None, &[]).await;
    let (_, agent) = answering_agent(&w.api, OUR_NUMBER, "inbound", Some(&url)).await;
    // The CLI shows which agent answers the number.
    let (ok, out, err) = cli(&w, &["numbers", "list"]).await;
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains(OUR_NUMBER))
        .unwrap_or_default();
    assert!(row.contains(&agent), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let tone = write_ulaw_tone(&dir.path().join("tone.ulaw"), 440.0, 10000.0, 3).unwrap();
    let started = Instant::now();
    call_in(
        w.daemon.sip_addr.to_string(),
        "127.0.0.1",
        "caller_speaks_then_hangs_up.xml",
        keys(&[
            ("number", OUR_NUMBER),
            ("caller", "+15551230000"),
            ("from_user", "15557654321"),
            ("tone", &tone.display().to_string()),
            ("talk_ms", "2500"),
        ]),
    )
    .await;
    println!(
        "inbound call, INVITE to the caller's BYE answered: {:?}",
        started.elapsed()
    );
    let listed = calls(&w.api).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let record = wait_final(&w.api, listed[0]["id"].as_str().unwrap()).await;
    assert_ended(&record, "completed", "completed", "caller");
    assert_eq!(record["direction"], "inbound", "{record:#}");
    let (ok, out, err) = cli(&w, &["calls", "get", record["id"].as_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("inbound"), "{out}");
    assert_eq!(record["to"], OUR_NUMBER);
    assert_eq!(
        record["from_number"], "+15551230000",
        "P-Asserted-Identity over From"
    );
    assert!(
        record["sip_call_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    for t in ["ringing_at", "answered_at", "ended_at"] {
        assert!(record[t].is_string(), "{t} missing: {record:#}");
    }
    println!(
        "ringing (row written, 180 sent) to the caller's ACK of our 200: {} ms",
        record["ring_duration_ms"]
    );
    // Audio checked as audio: the caller's tone arrived loud in most frames, and the echo
    // brain sent a full stream back.
    let media = &record["media_stats"];
    assert!(media["packets_in"].as_u64().unwrap() >= 80, "{media}");
    assert!(media["voiced_frames_in"].as_u64().unwrap() >= 80, "{media}");
    let peak = media["peak_level_dbfs"].as_f64().unwrap();
    assert!((-16.0..-10.0).contains(&peak), "peak {peak} dBFS");
    assert!(media["packets_out"].as_u64().unwrap() >= 80, "{media}");
    assert_eq!(media["malformed"], 0, "{media}");
    // The webhooks of the call's life, in order, to the agent's URL.
    let mut types = Vec::new();
    for _ in 0..500 {
        types = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, body)| {
                let body: Value = serde_json::from_str(body).unwrap();
                body["type"].as_str().unwrap_or_default().to_owned()
            })
            .collect::<Vec<_>>();
        if types.iter().any(|t| t == "call.ended") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wanted: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| ["call.ringing", "call.answered", "call.ended"].contains(t))
        .collect();
    assert_eq!(
        wanted,
        ["call.ringing", "call.answered", "call.ended"],
        "{types:?}"
    );
    w.finish().await;
}

/// Toll-fraud guard: from an address that is not the number's trunk's → 403; to a number that
/// is not ours, or whose agents only place calls → 404; none leaves a record. Naming the
/// stranger's network in the trunk's `inbound_cidrs` lets its calls in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_unknown_numbers_and_outbound_only_agents_are_refused_without_a_record() {
    let w = world(None, &[]).await;
    let (trunk, _) = answering_agent(&w.api, OUR_NUMBER, "both", None).await;
    answering_agent(&w.api, "+15550002000", "outbound", None).await;
    let target = w.daemon.sip_addr.to_string();
    for (local_ip, number, status) in [
        ("127.0.0.2", OUR_NUMBER, "403"),
        ("127.0.0.1", "+15550009999", "404"),
        ("127.0.0.1", "+15550002000", "404"),
    ] {
        call_in(
            target.clone(),
            local_ip,
            "caller_is_refused.xml",
            keys(&[("number", number), ("status", status)]),
        )
        .await;
    }
    assert!(
        calls(&w.api).await.is_empty(),
        "refused calls leave no record"
    );
    let path = format!("/v1/trunks/{trunk}");
    let (s, refused) = w
        .api
        .patch(&path, json!({"inbound_cidrs": ["127.0.0.0/33"]}))
        .await;
    assert_eq!(
        (s, refused["error"]["field"].as_str()),
        (400, Some("inbound_cidrs")),
        "{refused}"
    );
    let (s, patched) = w
        .api
        .patch(&path, json!({"inbound_cidrs": ["127.0.0.2/32"]}))
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["inbound_cidrs"], json!(["127.0.0.2/32"]));
    let dir = tempfile::tempdir().unwrap();
    let tone = write_ulaw_tone(&dir.path().join("tone.ulaw"), 440.0, 10000.0, 3).unwrap();
    call_in(
        target,
        "127.0.0.2",
        "caller_speaks_then_hangs_up.xml",
        keys(&[
            ("number", OUR_NUMBER),
            ("caller", "+15551230000"),
            ("from_user", "+15551230000"),
            ("tone", &tone.display().to_string()),
            ("talk_ms", "1000"),
        ]),
    )
    .await;
    let listed = calls(&w.api).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let record = wait_final(&w.api, listed[0]["id"].as_str().unwrap()).await;
    assert_ended(&record, "completed", "completed", "caller");
    w.finish().await;
}

/// An INVITE to `number` from `from`, with branch and Call-ID made of `n`.
fn invite(from: std::net::SocketAddr, to: std::net::SocketAddr, number: &str, n: usize) -> String {
    format!(
        "INVITE sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKflood{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:scanner@{from}>;tag=f{n}\r\nTo: <sip:{number}@{to}>\r\n\
         Call-ID: flood-{n}@{from}\r\nCSeq: 1 INVITE\r\nContact: <sip:scanner@{from}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A scanner floods INVITEs to numbers that are not ours from one address: past its budget
/// of refusals it is no longer answered at all, while a call from the trunk still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_invites_is_cut_short_while_a_real_call_completes() {
    const FLOOD: usize = 300;
    let w = world(None, &[]).await;
    answering_agent(&w.api, OUR_NUMBER, "inbound", None).await;
    let target = w.daemon.sip_addr;
    let scanner = UdpSocket::bind("127.0.0.3:0").unwrap();
    let from = scanner.local_addr().unwrap();
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        // Refusals by Call-ID: a 404 is retransmitted until its ACK, which a scanner never sends.
        let mut refused = std::collections::HashSet::new();
        let mut take = |answer: &[u8]| {
            let text = String::from_utf8_lossy(answer);
            if text.starts_with("SIP/2.0 404")
                && let Some(id) = text.lines().find_map(|l| l.strip_prefix("Call-ID: "))
            {
                refused.insert(id.to_owned());
            }
        };
        scanner
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut buf = [0u8; 4096];
        for n in 0..FLOOD {
            let number = format!("+1555999{n:04}");
            scanner
                .send_to(invite(from, target, &number, n).as_bytes(), target)
                .unwrap();
            while let Ok((len, _)) = scanner.recv_from(&mut buf) {
                take(&buf[..len]);
            }
        }
        // What is still on its way.
        scanner
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        while let Ok((len, _)) = scanner.recv_from(&mut buf) {
            take(&buf[..len]);
        }
        refused.len()
    });
    let dir = tempfile::tempdir().unwrap();
    let tone = write_ulaw_tone(&dir.path().join("tone.ulaw"), 440.0, 10000.0, 3).unwrap();
    call_in(
        target.to_string(),
        "127.0.0.1",
        "caller_speaks_then_hangs_up.xml",
        keys(&[
            ("number", OUR_NUMBER),
            ("caller", "+15551230000"),
            ("from_user", "+15551230000"),
            ("tone", &tone.display().to_string()),
            ("talk_ms", "1500"),
        ]),
    )
    .await;
    let refusals = flood.join().unwrap();
    let elapsed = started.elapsed();
    println!(
        "{FLOOD} INVITEs from one address: {refusals} refused (404), the rest dropped, in {elapsed:?}"
    );
    // The default budget: 20 refusals at once, one more a second.
    let budget = 20 + elapsed.as_secs() as usize + 1;
    assert!(
        refusals >= 20,
        "the first refusals are answered: {refusals}"
    );
    assert!(
        refusals <= budget,
        "{refusals} refusals past a budget of {budget}"
    );
    let listed = calls(&w.api).await;
    assert_eq!(
        listed.len(),
        1,
        "only the real call is recorded: {listed:#?}"
    );
    let record = wait_final(&w.api, listed[0]["id"].as_str().unwrap()).await;
    assert_ended(&record, "completed", "completed", "caller");
    assert!(record["media_stats"]["voiced_frames_in"].as_u64().unwrap() >= 50);
    let metrics = w.api.metrics().await;
    // The rest of the flood was dropped unanswered, before any routing (the counter is the
    // process's: other tests' drops could only add to it).
    let dropped: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dialtone_sip_inbound_dropped_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(
        dropped >= FLOOD - budget,
        "{dropped} dropped of {FLOOD}, {refusals} refused"
    );
    w.finish().await;
}

/// The caller cancels before the answer: the CANCEL gets 200, the INVITE 487, and the call's
/// record (written before any answer) ends `canceled` by the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_cancels_before_the_answer_leaves_a_canceled_record() {
    let w = world(None, &[]).await;
    answering_agent(&w.api, OUR_NUMBER, "inbound", None).await;
    call_in(
        w.daemon.sip_addr.to_string(),
        "127.0.0.1",
        "caller_cancels.xml",
        keys(&[("number", OUR_NUMBER)]),
    )
    .await;
    let mut listed = Vec::new();
    for _ in 0..500 {
        listed = calls(&w.api).await;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let record = wait_final(&w.api, listed[0]["id"].as_str().unwrap()).await;
    assert_ended(&record, "canceled", "canceled", "caller");
    assert_eq!(record["end_reason"]["sip_status"], 487, "{record:#}");
    assert_eq!(record["direction"], "inbound");
    assert!(record["answered_at"].is_null(), "{record:#}");
    w.finish().await;
}

/// A caller that hangs up the moment it is answered, before its ACK (RFC 3261 allows a BYE in
/// the dialog the 200 made): the BYE gets its 200 and the record is `completed` by the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_before_its_ack_ends_the_call_as_completed() {
    let w = world(None, &[]).await;
    answering_agent(&w.api, OUR_NUMBER, "inbound", None).await;
    call_in(
        w.daemon.sip_addr.to_string(),
        "127.0.0.1",
        "caller_hangs_up_before_ack.xml",
        keys(&[("number", OUR_NUMBER)]),
    )
    .await;
    let listed = calls(&w.api).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let record = wait_final(&w.api, listed[0]["id"].as_str().unwrap()).await;
    assert_ended(&record, "completed", "completed", "caller");
    assert_eq!(record["direction"], "inbound");
    w.finish().await;
}

/// Over the organisation's concurrency cap a call placed to us is refused `486 Busy Here`, and
/// leaves no record; the call in progress goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_organisations_cap_a_call_is_busy_and_not_recorded() {
    let w = world_on(
        |config| config.default_org_max_concurrent_calls = Some(1),
        None,
        &[],
    )
    .await;
    answering_agent(&w.api, OUR_NUMBER, "inbound", None).await;
    let dir = tempfile::tempdir().unwrap();
    let tone = write_ulaw_tone(&dir.path().join("tone.ulaw"), 440.0, 10000.0, 3).unwrap();
    let target = w.daemon.sip_addr.to_string();
    let first = tokio::spawn(call_in(
        target.clone(),
        "127.0.0.1",
        "caller_speaks_then_hangs_up.xml",
        keys(&[
            ("number", OUR_NUMBER),
            ("caller", "+15551230000"),
            ("from_user", "+15551230000"),
            ("tone", &tone.display().to_string()),
            ("talk_ms", "3000"),
        ]),
    ));
    let mut in_progress = false;
    for _ in 0..500 {
        in_progress = calls(&w.api)
            .await
            .first()
            .is_some_and(|c| c["status"] == "in_progress");
        if in_progress {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(in_progress, "the first call is answered");
    call_in(
        target,
        "127.0.0.1",
        "caller_is_refused.xml",
        keys(&[("number", OUR_NUMBER), ("status", "486")]),
    )
    .await;
    first.await.unwrap();
    let listed = calls(&w.api).await;
    assert_eq!(
        listed.len(),
        1,
        "the busy call leaves no record: {listed:#?}"
    );
    let record = wait_final(&w.api, listed[0]["id"].as_str().unwrap()).await;
    assert_ended(&record, "completed", "completed", "caller");
    w.finish().await;
}

/// `builtin:agent` answers a call placed to us like a dispatched one: with its provider down,
/// it apologises aloud (espeak-ng) and hangs up, the record `brain_error` by the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_agent_answers_an_inbound_call_and_hangs_up_with_an_apology() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let w = world(None, &[]).await;
    let (_, agent) = answering_agent(&w.api, OUR_NUMBER, "inbound", None).await;
    let (s, provider) = w
        .api
        .post(
            "/v1/providers",
            json!({"name": "local", "kind": "openai", "base_url": base_url, "api_key": "sk-test"}),
        )
        .await;
    assert_eq!(s, 201, "{provider}");
    let (s, patched) = w
        .api
        .patch(
            &format!("/v1/agents/{agent}"),
            json!({
                "brain": "builtin:agent", "persona": "You are Ava at Acme's front desk.",
                "llm": {"provider": "local", "model": "gpt-test"},
                "stt": {"provider": "local", "model": "whisper-test"},
                "tts": {"provider": "builtin:espeak"}, "voice": "en-us",
            }),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    call_in(
        w.daemon.sip_addr.to_string(),
        "127.0.0.1",
        "caller_waits_for_bye.xml",
        keys(&[("number", OUR_NUMBER), ("caller", "+15551230000")]),
    )
    .await;
    let listed = calls(&w.api).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let record = wait_final(&w.api, listed[0]["id"].as_str().unwrap()).await;
    assert_ended(&record, "completed", "brain_error", "agent");
    assert_eq!(record["direction"], "inbound");
    let said_sorry = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["text"].as_str().unwrap_or_default().contains("I'm sorry"));
    assert!(said_sorry, "{record:#}");
    // The apology went out as audio.
    let media = &record["media_stats"];
    assert!(media["packets_out"].as_u64().unwrap() >= 25, "{media}");
    w.finish().await;
}

/// A call placed to us is transferred like a dispatched one: the REFER goes in the caller's
/// dialog, its `Refer-To` a number reached through the trunk the call came from, and the
/// `200 OK` sipfrag ends our leg as `transferred`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_is_transferred_to_a_number_through_its_trunk() {
    let w = world(None, &[]).await;
    answering_agent(&w.api, OUR_NUMBER, "inbound", None).await;
    let caller = tokio::spawn(call_in(
        w.daemon.sip_addr.to_string(),
        "127.0.0.1",
        "caller_is_transferred.xml",
        keys(&[
            ("number", OUR_NUMBER),
            ("number_re", r"\+15550001000"),
            ("refer_to_re", r"sip:\+15550001111@127\.0\.0\.1:5060"),
        ]),
    ));
    let mut id = String::new();
    for _ in 0..500 {
        if let Some(call) = calls(&w.api).await.first()
            && call["status"] == "in_progress"
        {
            id = call["id"].as_str().unwrap().to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!id.is_empty(), "the call is answered");
    let (s, call) = w
        .api
        .post(
            &format!("/v1/calls/{id}/transfer"),
            json!({"to": "+15550001111"}),
        )
        .await;
    assert_eq!(s, 202, "{call}");
    // SIPp fails its scenario unless the REFER carried the Refer-To and Referred-By it checks,
    // both NOTIFYs were answered 200 and our BYE followed the final one.
    caller.await.unwrap();
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "api");
    assert_eq!(record["transferred_to"], "+15550001111", "{record:#}");
    assert_eq!(record["direction"], "inbound");
    w.finish().await;
}

/// A call placed to us, bridged: the second leg goes through the number's trunk from OUR
/// number (the one called), never the caller's (a third party's, unverified); the caller
/// hanging up while bridged ends both legs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_is_bridged_from_our_number() {
    let w = world(None, &[]).await;
    let (trunk, _) = answering_agent(&w.api, OUR_NUMBER, "inbound", None).await;
    // The destination, where the trunk leads: SIPp checks the leg's From.
    let destination = Sipp::uas(
        &scenario("destination_checks_caller_id.xml"),
        dialtone_test_support::SipTransport::Udp,
        &SippOptions {
            replacements: keys(&[("caller_id_re", r"\+15550001000")]),
            ..SippOptions::default()
        },
    )
    .unwrap();
    let (s, t) = w
        .api
        .patch(
            &format!("/v1/trunks/{trunk}"),
            json!({"port": destination.port}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let dir = tempfile::tempdir().unwrap();
    let tone = write_ulaw_tone(&dir.path().join("tone.ulaw"), 440.0, 10000.0, 8).unwrap();
    let caller = tokio::spawn(call_in(
        w.daemon.sip_addr.to_string(),
        "127.0.0.1",
        "caller_speaks_then_hangs_up.xml",
        keys(&[
            ("number", OUR_NUMBER),
            ("caller", "+15551230000"),
            ("from_user", "15551230000"),
            ("tone", &tone.display().to_string()),
            ("talk_ms", "5000"),
        ]),
    ));
    let mut id = String::new();
    for _ in 0..500 {
        if let Some(call) = calls(&w.api).await.first()
            && call["status"] == "in_progress"
        {
            id = call["id"].as_str().unwrap().to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!id.is_empty(), "the call is answered");
    let (s, call) = w
        .api
        .post(
            &format!("/v1/calls/{id}/transfer"),
            json!({"to": "+15550002222", "mode": "bridge"}),
        )
        .await;
    assert_eq!(s, 202, "{call}");
    caller.await.unwrap();
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["from_number"], "+15551230000", "{record:#}");
    assert_ended(&record, "completed", "transferred", "api");
    assert_eq!(record["transfer"]["status"], "completed", "{record:#}");
    // SIPp fails its scenario unless the leg's From was our number and our BYE came.
    tokio::task::spawn_blocking(move || destination.finish(Duration::from_secs(20)))
        .await
        .unwrap()
        .unwrap();
    w.finish().await;
}

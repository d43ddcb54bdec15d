//! Bridged transfers end to end. The trunk is Kamailio routing by the called number (a carrier
//! as the engine sees one): the call's callee on one side, the transfer destination (SIPp) on
//! the other, both reached through the same trunk. baresip as the callee hears generated
//! ringback while the destination rings, then the destination's tone relayed through the media
//! workers; the destination hanging up ends the call as `transferred` with both legs on the
//! record. A busy destination (486) leaves the call with the agent, the record saying why, and
//! `builtin:agent`'s model hears it as its `transfer_call` tool's answer and goes on. The
//! callee hanging up while bridged sends the destination its BYE. The destination's re-INVITEs
//! (hold, resume) are answered while bridged.

use std::path::Path;
use std::time::Duration;

use dialtone_test_support::audio::tone_amplitude;
use dialtone_test_support::media::{Baresip, write_wav};
use dialtone_test_support::openai::{ChatReply, ScriptedCall, ScriptedOpenAi};
use dialtone_test_support::{Kamailio, SipTransport, Sipp, SippOptions, scenario, write_ulaw_tone};
use serde_json::{Value, json};

use super::agent::make_agent;
use super::{Api, World, assert_ended, wait_final, wait_status, world};

/// Where the tests transfer to (Kamailio sends it to the destination).
const NUMBER: &str = "+15550002222";
/// The destination's tone: apart from ringback's 440 and 480 Hz.
const DESTINATION_HZ: f64 = 1000.0;

/// A SIPp UAS playing `name` with `keys` (and `TONE`: 3 s of [`DESTINATION_HZ`] as PCMU).
fn sipp(dir: &Path, name: &str, keys: &[(&str, &str)]) -> Sipp {
    let tone = write_ulaw_tone(
        &dir.join(format!("{name}.ulaw")),
        DESTINATION_HZ,
        10000.0,
        3,
    )
    .unwrap();
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
}

/// Kamailio routing [`NUMBER`] to `destination_port` and every other number to
/// `callee_port`; the world's trunk points at it.
async fn route(api: &Api, callee_port: u16, destination_port: u16) -> Kamailio {
    let router = Kamailio::start(
        &scenario("kamailio-number-router.cfg"),
        &[
            ("callee_port", callee_port.to_string()),
            ("destination_port", destination_port.to_string()),
            ("destination_number", NUMBER.to_owned()),
        ],
    )
    .unwrap();
    let (_, trunks) = api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, t) = api.patch(&trunk, json!({"port": router.port})).await;
    assert_eq!(s, 200, "{t}");
    router
}

/// Asks for a bridged transfer of call `id` to [`NUMBER`]: it starts, pending.
async fn bridge(api: &Api, id: &str) {
    let (s, call) = api
        .post(
            &format!("/v1/calls/{id}/transfer"),
            json!({"to": NUMBER, "mode": "bridge"}),
        )
        .await;
    assert_eq!(s, 202, "{call}");
    assert_eq!(call["transfer"]["status"], "pending", "{call:#}");
    assert_eq!(call["transfer"]["mode"], "bridge", "{call:#}");
}

/// The record once its transfer reached `status`.
async fn wait_transfer(api: &Api, id: &str, status: &str) -> Value {
    for _ in 0..1000 {
        let (_, call) = api.get(&format!("/v1/calls/{id}")).await;
        if call["transfer"]["status"] == status {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, call) = api.get(&format!("/v1/calls/{id}")).await;
    panic!("the transfer never reached {status}: {call:#}");
}

/// baresip answering as the callee, playing silence.
fn baresip(dir: &Path) -> Baresip {
    let wav = dir.join("silence.wav");
    write_wav(&wav, 8000, &vec![0i16; 8000 * 30]).unwrap();
    Baresip::callee(&wav).unwrap()
}

/// The strongest one-second window of `hz` in `samples` (at `rate`).
fn strongest(samples: &[i16], rate: u32, hz: f64) -> f64 {
    samples
        .chunks(rate as usize)
        .map(|w| tone_amplitude(w, rate, hz))
        .fold(0.0, f64::max)
}

fn kamailio_routed(router: &Kamailio, to: &str) {
    let log = router.log();
    assert!(
        log.contains(&format!("routing {NUMBER} to the destination")) && log.contains(to),
        "Kamailio routed the legs: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_hears_ringback_then_the_destination_which_hangs_up_both_legs() {
    let dir = tempfile::tempdir().unwrap();
    let callee = baresip(dir.path());
    let destination = sipp(
        dir.path(),
        "callee_rings_speaks_then_hangs_up.xml",
        &[("ring_ms", "2500"), ("talk_ms", "3500")],
    );
    let w: World = world(None, &[]).await;
    let router = route(&w.api, callee.port, destination.port).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    bridge(&w.api, &id).await;
    let bridged = wait_transfer(&w.api, &id, "completed").await;
    assert_eq!(bridged["status"], "in_progress", "{bridged:#}");
    assert_eq!(bridged["transferred_to"], NUMBER, "{bridged:#}");
    // The destination hangs up after its tone: our leg to baresip ends too.
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "api");
    assert_eq!(record["transferred_to"], NUMBER, "{record:#}");
    let transfer = &record["transfer"];
    assert_eq!(
        (
            &transfer["mode"],
            &transfer["status"],
            &transfer["sip_status"]
        ),
        (&json!("bridge"), &json!("completed"), &json!(200)),
        "{record:#}"
    );
    let leg = &transfer["bridge"];
    let leg_call_id = leg["sip_call_id"].as_str().unwrap_or_default();
    assert!(
        !leg_call_id.is_empty() && Some(leg_call_id) != record["sip_call_id"].as_str(),
        "the second leg has a Call-ID of its own: {record:#}"
    );
    assert!(leg["answered_at"].is_string(), "{record:#}");
    // SIPp talks 3.5 s after its answer's ACK before its BYE.
    let bridged_ms = leg["duration_ms"].as_u64().unwrap_or_default();
    assert!(bridged_ms >= 3000, "bridged {bridged_ms} ms: {record:#}");
    // What baresip heard: ringback (440 + 480 Hz) while the destination rang, then the
    // destination's tone, relayed.
    let (rate, heard) = callee.received_pcm(Duration::from_secs(10)).unwrap();
    let tone = strongest(&heard, rate, DESTINATION_HZ);
    let (ring_a, ring_b) = (
        strongest(&heard, rate, 440.0),
        strongest(&heard, rate, 480.0),
    );
    println!("baresip heard: {DESTINATION_HZ} Hz at {tone:.0}, ringback {ring_a:.0} + {ring_b:.0}");
    assert!(
        tone > 3000.0,
        "the destination's tone reached the caller: amplitude {tone:.0}\n{}",
        callee.log()
    );
    assert!(
        ring_a > 1000.0 && ring_b > 1000.0,
        "ringback while the destination rang: {ring_a:.0} / {ring_b:.0}"
    );
    kamailio_routed(&router, "routing +15551230000 to the callee");
    w.finish().await;
    // SIPp's scenario fails unless our BYE answered its BYE... and the ACK came.
    destination.finish(Duration::from_secs(20)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_destination_leaves_the_caller_with_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let callee = baresip(dir.path());
    let destination = sipp(dir.path(), "reject.xml", &[("status", "486")]);
    let w = world(None, &[]).await;
    let _router = route(&w.api, callee.port, destination.port).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    bridge(&w.api, &id).await;
    let record = wait_transfer(&w.api, &id, "failed").await;
    let transfer = &record["transfer"];
    assert_eq!(
        (&transfer["sip_status"], &transfer["reason"]),
        (&json!(486), &json!("destination_failed")),
        "{record:#}"
    );
    assert!(transfer["bridge"]["sip_call_id"].is_string(), "{record:#}");
    assert!(transfer["bridge"]["answered_at"].is_null(), "{record:#}");
    assert_eq!(record["status"], "in_progress", "{record:#}");
    assert!(record["transferred_to"].is_null(), "{record:#}");
    // The call is the agent's again: still up until it is hung up, and a new transfer may
    // start (to the same busy line: it fails the same way).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, call) = w.api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(call["status"], "in_progress", "{call:#}");
    w.hangup(&id).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "completed", "api");
    destination.finish(Duration::from_secs(20)).unwrap();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_hanging_up_while_bridged_sends_the_destination_its_bye() {
    let dir = tempfile::tempdir().unwrap();
    // The callee speaks for 6 s, then hangs up; the destination answers and waits for a BYE.
    let callee = sipp(
        dir.path(),
        "callee_speaks_then_hangs_up.xml",
        &[("talk_ms", "6000")],
    );
    let destination = sipp(dir.path(), "answer_then_we_hang_up.xml", &[]);
    let w = world(None, &[]).await;
    let _router = route(&w.api, callee.port, destination.port).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    bridge(&w.api, &id).await;
    wait_transfer(&w.api, &id, "completed").await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "api");
    let leg = &record["transfer"]["bridge"];
    assert!(
        leg["answered_at"].is_string() && leg["duration_ms"].is_u64(),
        "{record:#}"
    );
    // Each SIPp fails its scenario unless it got what it waits for: the destination our BYE.
    destination.finish(Duration::from_secs(20)).unwrap();
    callee.finish(Duration::from_secs(20)).unwrap();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hears_why_its_bridge_failed_and_keeps_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let callee = baresip(dir.path());
    let destination = sipp(dir.path(), "reject.xml", &[("status", "486")]);
    let openai = ScriptedOpenAi::start().await.unwrap();
    let w = world(None, &[]).await;
    let _router = route(&w.api, callee.port, destination.port).await;
    // The desk is a bridge destination: the tool's transfer takes its mode.
    make_agent(
        &w,
        &openai.base_url(),
        json!({"transfer_destinations": [
            {"name": "desk", "to": NUMBER, "description": "The front desk", "mode": "bridge"}
        ]}),
    )
    .await;
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("Let me put you through.".into()),
        calls: vec![ScriptedCall::new(
            "t1",
            "transfer_call",
            r#"{"destination": "desk"}"#,
        )],
        fragment: 5,
        reuse_index: false,
    });
    openai.push_chat(ChatReply::ToolCalls {
        text: Some("The desk is busy, sorry. Goodbye!".into()),
        calls: vec![ScriptedCall::new("t2", "end_call", "{}")],
        fragment: 2,
        reuse_index: false,
    });
    openai.push_chat(ChatReply::text("The desk was busy."));
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    // The agent had the caller back, said goodbye and hung up itself.
    assert_ended(&record, "completed", "completed", "agent");
    let transfer = &record["transfer"];
    assert_eq!(
        (
            &transfer["mode"],
            &transfer["sip_status"],
            &transfer["reason"]
        ),
        (&json!("bridge"), &json!(486), &json!("destination_failed")),
        "{record:#}"
    );
    let asked: Vec<Value> = openai
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .filter_map(|r| r.json)
        .collect();
    let answer = asked[1]["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(answer["role"], "tool", "{answer}");
    let content = answer["content"].as_str().unwrap();
    assert!(
        content.contains("486") && content.contains("could not be reached"),
        "{content}"
    );
    destination.finish(Duration::from_secs(20)).unwrap();
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destinations_hold_and_resume_are_answered_while_bridged() {
    let dir = tempfile::tempdir().unwrap();
    let callee = baresip(dir.path());
    // The destination answers, holds (a=sendonly) and resumes with re-INVITEs, then hangs up.
    let destination = sipp(dir.path(), "callee_holds_and_resumes.xml", &[]);
    let w = world(None, &[]).await;
    let _router = route(&w.api, callee.port, destination.port).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    bridge(&w.api, &id).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "api");
    assert_eq!(record["transfer"]["status"], "completed", "{record:#}");
    // SIPp fails its scenario unless both re-INVITEs got our 200 (recvonly while held,
    // sendrecv after) rather than none.
    destination.finish(Duration::from_secs(20)).unwrap();
    w.finish().await;
}

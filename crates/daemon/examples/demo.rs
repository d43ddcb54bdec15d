//! Dialtone's main job on one machine: a daemon on the embedded SQLite storage, SIPp as the
//! callee's trunk (it answers, listens to the agent, presses 1 and # as RFC 4733 digits and
//! waits), a trunk, a number and an appointment-confirmation agent with the `builtin:ivr` brain
//! created over the HTTP API, one call dispatched with `POST /v1/calls` and followed live, and
//! the final call record printed: status, durations, transcript and structured result.
//!
//! `cargo run --release -p dialtone-daemon --example demo` (after `scripts/setup.sh`).

// Indexing a serde_json::Value by key yields Null when absent; it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::time::Duration;

use anyhow::{Context, bail};
use dialtone_daemon::{Config, Daemon};
use dialtone_test_support::media::{sipp_dtmf_captures, sipp_key_presses};
use dialtone_test_support::{SipTransport, Sipp, SippOptions, scenario};
use serde_json::{Value, json};

const KEY: &str = "demo-key";

async fn post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let resp = http.post(&url).bearer_auth(KEY).json(&body).send().await?;
    let status = resp.status();
    let value: Value = resp.json().await?;
    if !status.is_success() {
        bail!("POST {url} → {status}: {value}");
    }
    Ok(value)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let work = tmp.path();
    let captures = sipp_dtmf_captures().context("finding SIPp's DTMF captures")?;
    let callee = Sipp::uas(
        &scenario("callee_presses_digits.xml"),
        SipTransport::Udp,
        &SippOptions {
            replacements: vec![
                ("listen_ms".into(), "6000".into()),
                ("presses".into(), sipp_key_presses(&captures, "1#")),
            ],
            ..SippOptions::default()
        },
    )
    .context("starting SIPp (run scripts/setup.sh first)")?;
    println!(
        "callee: SIPp on udp 127.0.0.1:{} (answers, listens, presses 1 then #)",
        callee.port
    );

    let database_url = format!("sqlite://{}", work.join("dialtone.db").display());
    let env = |key: &str| {
        let value = match key {
            "DIALTONE_HTTP_ADDR" | "DIALTONE_GRPC_ADDR" | "DIALTONE_SIP_ADDR" => "127.0.0.1:0",
            "DIALTONE_DATABASE_URL" => &database_url,
            "DIALTONE_API_KEY" => KEY,
            "DIALTONE_WEBHOOK_SECRET" => "whsec-demo",
            "DIALTONE_MEDIA_WORKERS" => "1",
            _ => return None,
        };
        Some(value.to_owned())
    };
    let daemon = Daemon::start(Config::load_from(None, &env)?).await?;
    let base = format!("http://{}", daemon.http_addr);
    println!(
        "dialtoned: HTTP {base}, SIP udp+tcp {}, SQLite in {}",
        daemon.sip_addr,
        work.display()
    );

    let http = reqwest::Client::new();
    let trunk = post(
        &http,
        format!("{base}/v1/trunks"),
        json!({
            "name": "local-sipp", "host": "127.0.0.1", "port": callee.port, "transport": "udp"
        }),
    )
    .await?;
    let number = post(
        &http,
        format!("{base}/v1/numbers"),
        json!({
            "e164": "+15559870000", "trunk_id": trunk["id"]
        }),
    )
    .await?;
    let agent = post(
        &http,
        format!("{base}/v1/agents"),
        json!({
            "name": "appointment-confirmation", "direction": "outbound",
            "language": "en-US", "brain": "builtin:ivr",
            "instructions": "Hello, this is Dialtone calling about your appointment tomorrow \
                             at ten. Press 1 to confirm or 2 to cancel, then the pound key.",
            "returns": {"type": "object", "required": ["digits"],
                        "properties": {"digits": {"type": "string", "enum": ["1", "2"]}}},
            "number_ids": [number["id"]],
        }),
    )
    .await?;
    let call = post(
        &http,
        format!("{base}/v1/calls"),
        json!({
            "agent_id": agent["id"], "to": "+15551230000",
            "context": {"appointment": "tomorrow 10:00"}, "metadata": {"crm_id": "demo-1"},
        }),
    )
    .await?;
    let id = call["id"].as_str().context("call id")?.to_owned();
    println!("POST /v1/calls → 201, call {id}");

    let mut last = String::new();
    let mut record = Value::Null;
    for _ in 0..600 {
        record = http
            .get(format!("{base}/v1/calls/{id}"))
            .bearer_auth(KEY)
            .send()
            .await?
            .json()
            .await?;
        let status = record["status"].as_str().unwrap_or("?").to_owned();
        if status != last {
            println!("  status: {status}");
            last = status.clone();
        }
        if ["completed", "busy", "no_answer", "failed", "canceled"].contains(&status.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "\nfinal call record:\n{}",
        serde_json::to_string_pretty(&record)?
    );
    callee.finish(Duration::from_secs(20))?;
    daemon.shutdown(Duration::from_secs(2)).await;
    if record["status"] != "completed" {
        bail!("the demo call did not complete");
    }
    if record["result"] != json!({"digits": "1"}) {
        bail!(
            "the demo call's result is not the confirmation: {}",
            record["result"]
        );
    }
    println!(
        "\nTo call through your own SIP trunk: run `dialtoned` (see README), create a trunk with \
         your provider's host and credentials (POST /v1/trunks), attach your number \
         (POST /v1/numbers) to an agent (POST /v1/agents), then POST /v1/calls."
    );
    Ok(())
}

//! `dialtone demo`: Dialtone's main job on one machine. A daemon on the embedded SQLite
//! storage in a work directory of its own, SIPp as the callee's trunk ([`callee`]: it answers,
//! streams a quiet line, presses 1 and # as RFC 4733 events in that stream and waits for our
//! BYE), a trunk, a number and an appointment-confirmation agent on the `builtin:ivr` brain
//! created over gRPC, one call dispatched and followed live, and the final record printed.
//! Fails (exit status 1) unless the record is a healthy call's ([`check`]): completed, the
//! prompt, digit and confirmation in its transcript, the confirmation as its result, and the
//! media statistics of a clean line.

// Indexing a serde_json::Value by key yields Null when the key is absent: it cannot panic.
#![allow(clippy::indexing_slicing)]

mod callee;
mod check;

use std::time::Duration;

use anyhow::{Context, bail};
use dialtone_control::proto;
use dialtone_daemon::{Config, Daemon};
use dialtone_peers::WorkDir;
use dialtone_proto::json::to_struct;
use serde_json::json;

use crate::{Client, render};

const KEY: &str = "demo-key";
/// What the agent says first.
const INSTRUCTIONS: &str = "Hello, this is Dialtone calling about your appointment tomorrow at \
                            ten. Press 1 to confirm or 2 to cancel, then the pound key.";

pub(crate) async fn run(json_output: bool) -> anyhow::Result<()> {
    let say = |line: String| {
        if !json_output {
            println!("{line}");
        }
    };
    let tmp = WorkDir::new("dialtone-demo").context("creating the demo's work directory")?;
    let callee = callee::Callee::start()?;
    say(format!(
        "callee:    SIPp on udp 127.0.0.1:{} (answers, streams a quiet line, presses {} in it)",
        callee.port(),
        callee::KEYS.map(String::from).join(" then ")
    ));

    let database_url = format!("sqlite://{}", tmp.path().join("dialtone.db").display());
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
    say(format!(
        "dialtoned: gRPC {}, HTTP {}, SIP udp+tcp {}, SQLite in {}",
        daemon.grpc_addr,
        daemon.http_addr,
        daemon.sip_addr,
        tmp.path().display()
    ));

    let client = Client::connect(
        &format!("http://{}", daemon.grpc_addr),
        Some(KEY),
        json_output,
    )
    .await?;
    let trunk = client
        .create_trunk(proto::TrunkFields {
            name: Some("local-sipp".into()),
            host: Some("127.0.0.1".into()),
            port: Some(u32::from(callee.port())),
            transport: proto::TrunkTransport::Udp as i32,
            ..proto::TrunkFields::default()
        })
        .await?;
    let trunk_id = trunk["id"].as_str().context("trunk id")?;
    let number = client.create_number("+15559870000", trunk_id).await?;
    let number_id = number["id"].as_str().context("number id")?.to_owned();
    let agent = client
        .create_agent(proto::AgentFields {
            name: Some("appointment-confirmation".into()),
            direction: Some("outbound".into()),
            language: Some("en-US".into()),
            brain: Some("builtin:ivr".into()),
            instructions: Some(INSTRUCTIONS.into()),
            returns: Some(to_struct(&json!({
                "type": "object", "required": ["digits"],
                "properties": {"digits": {"type": "string", "enum": ["1", "2"]}}
            }))),
            number_ids: vec![number_id.clone()],
            primary_number_id: Some(number_id),
            ..proto::AgentFields::default()
        })
        .await?;
    let agent_id = agent["id"].as_str().context("agent id")?.to_owned();
    say(format!(
        "created:   trunk {trunk_id}, number +15559870000, agent {agent_id} (builtin:ivr)\n"
    ));

    let record = client
        .call(
            proto::DispatchCallRequest {
                agent_id,
                to: "+15551230000".into(),
                context: Some(to_struct(&json!({"appointment": "tomorrow 10:00"}))),
                metadata: Some(to_struct(&json!({"crm_id": "demo-1"}))),
                ..proto::DispatchCallRequest::default()
            },
            true,
        )
        .await?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        println!("\n{}", render::call_record(&record));
    }
    callee.finish(Duration::from_secs(20))?;
    daemon.shutdown(Duration::from_secs(2)).await;
    let wrong = check::shortcomings(&record, INSTRUCTIONS);
    if !wrong.is_empty() {
        bail!(
            "the demo call's record is not a healthy call's:\n  {}",
            wrong.join("\n  ")
        );
    }
    say(
        "\nThe same through your own SIP trunk:\n\
         \x20 DIALTONE_API_KEY=… DIALTONE_WEBHOOK_SECRET=… dialtoned --config dialtone.toml\n\
         \x20 export DIALTONE_API_KEY=…\n\
         \x20 dialtone trunks create --name my-trunk --host sip.example.net --username … --password …\n\
         \x20 dialtone numbers create --e164 +1… --trunk <trunk id>\n\
         \x20 dialtone agents create --name confirm --brain builtin:ivr --number <number id> --instructions '…'\n\
         \x20 dialtone call --agent <agent id> --to +1…"
            .into(),
    );
    Ok(())
}

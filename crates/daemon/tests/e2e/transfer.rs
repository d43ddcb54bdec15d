//! Blind transfer (REFER, RFC 3515 + RFC 5589) end to end, against SIPp as the callee: a REFER
//! accepted with a `200 OK` sipfrag ends our leg as `transferred`; one refused with 405, or
//! accepted but followed by a `486 Busy Here` sipfrag, leaves the call with the agent until it
//! is hung up. And the API's refusals: not in progress (409), a `to` that is no destination
//! (400 naming `to`), a SIP host off the trunk's `transfer_sip_domains` (400 naming `to`), a
//! `bridge` to a SIP URI (400 naming `to`), an ended call (409). And `builtin:agent`'s `transfer_call`
//! tool: a completed transfer ends the call as the agent's, a failed one is the tool's answer.

use std::time::Duration;

use dialtone_test_support::openai::{ChatReply, ScriptedCall, ScriptedOpenAi};
use serde_json::{Value, json};

use super::agent::make_agent;
use super::{Api, World, assert_ended, cli, receiver, wait_final, wait_status, world};

/// Where the tests transfer to.
const NUMBER: &str = "+15550001111";

/// SIPp's check of our Refer-To for [`NUMBER`]: the trunk's URI for it, like the INVITE's.
const NUMBER_URI_RE: &str = r"sip:\+15550001111@127\.0\.0\.1:[0-9]+";

/// Asks for a transfer of call `id`; the status and body.
async fn transfer(api: &Api, id: &str, body: Value) -> (u16, Value) {
    api.post(&format!("/v1/calls/{id}/transfer"), body).await
}

/// The record once its transfer attempt reached `status` (`completed`, `failed`).
async fn wait_transfer(api: &Api, id: &str, status: &str) -> Value {
    for _ in 0..500 {
        let (_, call) = api.get(&format!("/v1/calls/{id}")).await;
        if call["transfer"]["status"] == status {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, call) = api.get(&format!("/v1/calls/{id}")).await;
    panic!("the transfer never reached {status}: {call:#}");
}

/// The world's trunk allows SIP transfer destinations on `domains`.
async fn allow_sip_domains(api: &Api, domains: &[&str]) {
    let (_, trunks) = api.get("/v1/trunks").await;
    let trunk = format!("/v1/trunks/{}", trunks["data"][0]["id"].as_str().unwrap());
    let (s, t) = api
        .patch(&trunk, json!({"transfer_sip_domains": domains}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["transfer_sip_domains"], json!(domains), "{t}");
}

/// A world whose SIPp answers, then takes a REFER matching `refer_to_re` with 202 and reports
/// `final_frag` after `100 Trying`.
async fn notified(refer_to_re: &str, final_frag: &str) -> World {
    world(
        Some("answer_then_refer_notified.xml"),
        &[("refer_to_re", refer_to_re), ("final_frag", final_frag)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refer_accepted_with_a_200_sipfrag_ends_the_call_as_transferred() {
    let (url, got) = receiver(0).await;
    let w = notified(NUMBER_URI_RE, "200 OK").await;
    let id = w.dispatch(json!({"webhook_url": url})).await;
    wait_status(&w.api, &id, "in_progress").await;
    let (s, call) = transfer(&w.api, &id, json!({"to": NUMBER})).await;
    assert_eq!(s, 202, "{call}");
    assert_eq!(call["status"], "in_progress", "{call:#}");
    assert_eq!(
        call["transfer"],
        json!({"to": NUMBER, "mode": "refer", "status": "pending"}),
        "{call:#}"
    );
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "api");
    assert_eq!(record["transferred_to"], NUMBER, "{record:#}");
    assert_eq!(
        record["transfer"],
        json!({"to": NUMBER, "mode": "refer", "status": "completed", "sip_status": 200}),
        "{record:#}"
    );
    // The transfer was written before the final status: `call.ended` carries it.
    let mut ended = Value::Null;
    for _ in 0..300 {
        let bodies: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, body)| serde_json::from_str(body).unwrap())
            .collect();
        if let Some(body) = bodies.into_iter().find(|b| b["type"] == "call.ended") {
            ended = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let call = &ended["data"]["call"];
    assert_eq!(call["transferred_to"], NUMBER, "{ended:#}");
    assert_eq!(call["end_reason"]["code"], "transferred", "{ended:#}");
    assert_eq!(call["transfer"]["status"], "completed", "{ended:#}");
    // SIPp fails its scenario unless the REFER carried the Refer-To and Referred-By it checks,
    // both NOTIFYs were answered 200 and our BYE followed the final one.
    w.finish().await;
}

/// A far end that accepts the REFER and hangs up without a final NOTIFY went ahead with the
/// transfer: the call ends `transferred`, not `completed` by the callee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_end_hanging_up_after_the_202_ends_the_call_as_transferred() {
    let w = world(
        Some("answer_then_refer_accepted_then_bye.xml"),
        &[("refer_to_re", NUMBER_URI_RE)],
    )
    .await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    let (s, call) = transfer(&w.api, &id, json!({"to": NUMBER})).await;
    assert_eq!(s, 202, "{call}");
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "api");
    assert_eq!(record["transferred_to"], NUMBER, "{record:#}");
    assert_eq!(
        record["transfer"],
        json!({"to": NUMBER, "mode": "refer", "status": "completed"}),
        "{record:#}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refer_refused_with_405_leaves_the_call_with_the_agent() {
    let w = world(
        Some("answer_then_refuse_refer.xml"),
        &[("refer_to_re", NUMBER_URI_RE)],
    )
    .await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    let (s, call) = transfer(&w.api, &id, json!({"to": NUMBER, "mode": "refer"})).await;
    assert_eq!(s, 202, "{call}");
    let record = wait_transfer(&w.api, &id, "failed").await;
    assert_eq!(
        record["transfer"],
        json!({"to": NUMBER, "mode": "refer", "status": "failed", "sip_status": 405,
            "reason": "refused"}),
        "{record:#}"
    );
    assert_eq!(record["status"], "in_progress", "{record:#}");
    assert!(record["transferred_to"].is_null(), "{record:#}");
    // The call is the agent's still: it goes on until it is hung up.
    w.hangup(&id).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "completed", "api");
    assert_eq!(record["transfer"]["status"], "failed", "{record:#}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sipfrag_leaves_the_call_with_the_agent() {
    let w = notified(r"sip:desk@pbx\.example\.com", "486 Busy Here").await;
    allow_sip_domains(&w.api, &["pbx.example.com"]).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    let desk = "sip:desk@pbx.example.com";
    let (s, call) = transfer(&w.api, &id, json!({"to": desk})).await;
    assert_eq!(s, 202, "{call}");
    let record = wait_transfer(&w.api, &id, "failed").await;
    assert_eq!(
        record["transfer"],
        json!({"to": desk, "mode": "refer", "status": "failed", "sip_status": 486,
            "reason": "destination_failed"}),
        "{record:#}"
    );
    assert_eq!(record["status"], "in_progress", "{record:#}");
    w.hangup(&id).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "completed", "api");
    assert!(record["transferred_to"].is_null(), "{record:#}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_refusals_name_the_rule_and_use_the_right_status() {
    let w = world(Some("ring_until_cancel.xml"), &[]).await;
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "ringing").await;
    let (s, body) = transfer(&w.api, &id, json!({"to": NUMBER})).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("not_in_progress")),
        "{body}"
    );
    for (request, field, words) in [
        (json!({"to": "sales"}), "to", "E.164"),
        (json!({"to": "tel:+15550001111"}), "to", "SIP URI"),
        (
            json!({"to": "sip:anyone@evil.example"}),
            "to",
            "transfer_sip_domains",
        ),
        (
            json!({"to": "sip:desk@127.0.0.1", "mode": "bridge"}),
            "to",
            "E.164",
        ),
        (json!({"to": NUMBER, "mode": "warm"}), "mode", "warm"),
        (json!({"to": NUMBER, "who": "me"}), "who", "who"),
    ] {
        let (s, body) = transfer(&w.api, &id, request.clone()).await;
        assert_eq!(s, 400, "{request} → {body}");
        assert_eq!(body["error"]["field"], field, "{request} → {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{request} → {message}");
    }
    let (s, _) = transfer(
        &w.api,
        "00000000-0000-7000-8000-000000000000",
        json!({"to": NUMBER}),
    )
    .await;
    assert_eq!(s, 404);
    w.hangup(&id).await;
    let record = wait_final(&w.api, &id).await;
    assert!(record["transfer"].is_null(), "{record:#}");
    let (s, body) = transfer(&w.api, &id, json!({"to": NUMBER})).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("call_ended")),
        "{body}"
    );
    w.finish().await;
}

/// `builtin:agent` with a `desk` destination at [`NUMBER`], its model scripted to open by
/// transferring there; `then` is what it answers after the tool's answer (when the call goes
/// on), followed by the after-call summary.
async fn transferring_agent(w: &World, openai: &ScriptedOpenAi, then: Option<ChatReply>) {
    make_agent(
        w,
        &openai.base_url(),
        json!({"transfer_destinations": [
            {"name": "desk", "to": NUMBER, "description": "A person at the front desk"}
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
    if let Some(reply) = then {
        openai.push_chat(reply);
    }
    openai.push_chat(ChatReply::text("The caller asked for the front desk."));
}

/// The chat completion requests the model got, in order.
fn chats(openai: &ScriptedOpenAi) -> Vec<Value> {
    openai
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .filter_map(|r| r.json)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_transfer_call_tool_hands_the_caller_over() {
    let openai = ScriptedOpenAi::start().await.unwrap();
    let w = notified(NUMBER_URI_RE, "200 OK").await;
    transferring_agent(&w, &openai, None).await;
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "agent");
    assert_eq!(record["transferred_to"], NUMBER, "{record:#}");
    assert_eq!(record["transfer"]["status"], "completed", "{record:#}");
    let asked = chats(&openai);
    let tools: Vec<&str> = asked[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"transfer_call"), "{tools:?}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hears_why_its_transfer_failed_and_keeps_the_caller() {
    let openai = ScriptedOpenAi::start().await.unwrap();
    let w = world(
        Some("answer_then_refuse_refer.xml"),
        &[("refer_to_re", NUMBER_URI_RE)],
    )
    .await;
    transferring_agent(
        &w,
        &openai,
        Some(ChatReply::ToolCalls {
            text: Some("Sorry, I cannot put you through right now. Goodbye!".into()),
            calls: vec![ScriptedCall::new("t2", "end_call", "{}")],
            fragment: 2,
            reuse_index: false,
        }),
    )
    .await;
    let id = w.dispatch(json!({"context": {"name": "Sam"}})).await;
    let record = wait_final(&w.api, &id).await;
    // The agent went on and hung up itself.
    assert_ended(&record, "completed", "completed", "agent");
    assert!(record["transferred_to"].is_null(), "{record:#}");
    assert_eq!(
        record["transfer"],
        json!({"to": NUMBER, "mode": "refer", "status": "failed", "sip_status": 405,
            "reason": "refused"}),
        "{record:#}"
    );
    // The model heard why as the tool's answer.
    let asked = chats(&openai);
    let answer = asked[1]["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(answer["role"], "tool", "{answer}");
    assert_eq!(answer["tool_call_id"], "t1", "{answer}");
    let content = answer["content"].as_str().unwrap();
    assert!(
        content.contains("refused") && content.contains("405"),
        "{content}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_transfers_over_grpc_and_sets_a_trunks_transfer_domains() {
    let w = notified(NUMBER_URI_RE, "200 OK").await;
    let (ok, out, err) = cli(
        &w,
        &[
            "trunks",
            "create",
            "--name",
            "pbx",
            "--host",
            "sip.example.net",
            "--transfer-sip-domain",
            "pbx.example.com",
            "--transfer-sip-domain",
            "desk.example.com",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let trunk: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        trunk["transfer_sip_domains"],
        json!(["pbx.example.com", "desk.example.com"]),
        "{trunk}"
    );
    let id = w.dispatch(json!({})).await;
    wait_status(&w.api, &id, "in_progress").await;
    for (to, mode, words) in [
        ("sales", "refer", "(field to)"),
        ("sip:desk@pbx.example.com", "refer", "transfer_sip_domains"),
        ("sip:desk@127.0.0.1", "bridge", "E.164"),
    ] {
        let all = ["calls", "transfer", &id, "--to", to, "--mode", mode];
        let (ok, _, err) = cli(&w, &all).await;
        assert!(!ok, "{all:?} should have been refused");
        assert!(err.contains(words), "{all:?}: {err}");
    }
    let (ok, out, err) = cli(&w, &["calls", "transfer", &id, "--to", NUMBER, "--json"]).await;
    assert!(ok, "{err}");
    let call: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        call["transfer"],
        json!({"to": NUMBER, "mode": "refer", "status": "pending", "sip_status": null,
            "reason": null}),
        "{call}"
    );
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "transferred", "api");
    let (ok, out, err) = cli(&w, &["calls", "get", &id]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("transfer     completed to +15550001111 (refer, SIP 200)"),
        "{out}"
    );
    w.finish().await;
}

/// An AgentBridge server that asks, at the session's start, to transfer the caller to
/// [`NUMBER`], and hangs up when told the transfer failed; what it was told is kept.
mod transferring_brain {
    use std::sync::{Arc, Mutex};

    use dialtone_control::proto::agent_bridge_service_server::{
        AgentBridgeService, AgentBridgeServiceServer,
    };
    use dialtone_control::proto::converse_request::Event;
    use dialtone_control::proto::converse_response::Action;
    use dialtone_control::proto::{
        ConverseRequest, ConverseResponse, HangUp, TransferFailed, TransferTo,
    };
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response, Status, Streaming};

    pub(super) type Heard = Arc<Mutex<Vec<TransferFailed>>>;

    struct Brain {
        heard: Heard,
    }

    #[tonic::async_trait]
    impl AgentBridgeService for Brain {
        type ConverseStream = ReceiverStream<Result<ConverseResponse, Status>>;

        async fn converse(
            &self,
            request: Request<Streaming<ConverseRequest>>,
        ) -> Result<Response<Self::ConverseStream>, Status> {
            let mut events = request.into_inner();
            let (tx, rx) = mpsc::channel(16);
            let heard = self.heard.clone();
            tokio::spawn(async move {
                let reply = |action| {
                    Ok(ConverseResponse {
                        action: Some(action),
                    })
                };
                while let Ok(Some(message)) = events.message().await {
                    let action = match message.event {
                        Some(Event::Start(_)) => Action::Transfer(TransferTo {
                            to: super::NUMBER.into(),
                            mode: None,
                        }),
                        Some(Event::TransferFailed(failed)) => {
                            heard.lock().unwrap().push(failed);
                            Action::HangUp(HangUp {
                                reason: "completed".into(),
                            })
                        }
                        _ => continue,
                    };
                    if tx.send(reply(action)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
    }

    /// Serves the brain on a free loopback port; its address and what it hears.
    pub(super) async fn start() -> (String, Heard) {
        let heard = Heard::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("grpc://{}", listener.local_addr().unwrap());
        let service = AgentBridgeServiceServer::new(Brain {
            heard: heard.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (address, heard)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_bridge_brain_transfers_and_hears_why_it_failed() {
    let (address, heard) = transferring_brain::start().await;
    let w = world(
        Some("answer_then_refuse_refer.xml"),
        &[("refer_to_re", NUMBER_URI_RE)],
    )
    .await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": address}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_ended(&record, "completed", "completed", "agent");
    assert_eq!(
        record["transfer"],
        json!({"to": NUMBER, "mode": "refer", "status": "failed", "sip_status": 405,
            "reason": "refused"}),
        "{record:#}"
    );
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(
        (
            heard[0].to.as_str(),
            heard[0].sip_status,
            heard[0].reason.as_str()
        ),
        (NUMBER, Some(405), "refused")
    );
    assert!(heard[0].message.contains("refused"), "{heard:?}");
    w.finish().await;
}

//! The gRPC services (`dialtone.v1`), over the same service functions as the HTTP API: a
//! request message becomes the JSON object the HTTP API would take, goes through the same
//! validation and storage, and the JSON answer becomes the response message. Errors keep
//! their meaning: a 400 is `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 404 `NOT_FOUND`, 409
//! `FAILED_PRECONDITION` (`ALREADY_EXISTS` for a taken name), 413 `INVALID_ARGUMENT`, 429
//! `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`; the message is the HTTP error's message, and the
//! metadata `dialtone-error-code` / `dialtone-error-field` carry its code and field.
//!
//! [`services`] builds the router with the four services, the standard health service and
//! server reflection; every call must carry `authorization: Bearer <key>`.

use std::pin::Pin;

use dialtone_proto::json::{from_struct, from_value, object_to_struct as to_struct, to_value};
use serde_json::{Map, Value, json};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::proto::{
    self, agent_service_server::AgentService, call_service_server::CallService,
    number_service_server::NumberService, trunk_service_server::TrunkService,
};
use crate::{ApiError, ApiState, ListQuery};
use dialtone_storage::KeyOwner;

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match (e.status, e.code) {
            (400 | 413, _) => tonic::Code::InvalidArgument,
            (401, _) => tonic::Code::Unauthenticated,
            (404, _) => tonic::Code::NotFound,
            (409, "conflict") => tonic::Code::AlreadyExists,
            (409, _) => tonic::Code::FailedPrecondition,
            (429, _) => tonic::Code::ResourceExhausted,
            (503, _) => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        };
        let mut status = Status::new(code, e.message);
        if let Ok(v) = e.code.parse() {
            status.metadata_mut().insert("dialtone-error-code", v);
        }
        if let Some(field) = e.field.and_then(|f| f.parse().ok()) {
            status.metadata_mut().insert("dialtone-error-field", field);
        }
        status
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn uint(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

fn object(v: &Value, key: &str) -> Option<prost_types::Struct> {
    v.get(key).and_then(Value::as_object).map(to_struct)
}

/// Puts `value` under `key` when it is set.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v);
    }
}

fn transport_name(t: i32) -> Option<Value> {
    match proto::TrunkTransport::try_from(t) {
        Ok(proto::TrunkTransport::Udp) => Some(json!("udp")),
        Ok(proto::TrunkTransport::Tcp) => Some(json!("tcp")),
        _ => None,
    }
}

fn trunk_fields_map(f: proto::TrunkFields) -> Map<String, Value> {
    let mut m = Map::new();
    put(&mut m, "name", f.name.map(Value::from));
    put(&mut m, "host", f.host.map(Value::from));
    put(&mut m, "port", f.port.map(Value::from));
    put(&mut m, "transport", transport_name(f.transport));
    put(&mut m, "username", f.username.map(Value::from));
    put(&mut m, "password", f.password.map(Value::from));
    put(&mut m, "realm", f.realm.map(Value::from));
    put(&mut m, "from_domain", f.from_domain.map(Value::from));
    put(
        &mut m,
        "max_concurrent_calls",
        f.max_concurrent_calls.map(Value::from),
    );
    put(
        &mut m,
        "max_calls_per_second",
        f.max_calls_per_second.map(Value::from),
    );
    put(&mut m, "register", f.register.map(Value::from));
    m
}

fn trunk_message(v: &Value) -> proto::Trunk {
    proto::Trunk {
        id: text(v, "id").unwrap_or_default(),
        name: text(v, "name").unwrap_or_default(),
        host: text(v, "host").unwrap_or_default(),
        port: uint(v, "port").unwrap_or_default(),
        transport: match text(v, "transport").as_deref() {
            Some("tcp") => proto::TrunkTransport::Tcp,
            _ => proto::TrunkTransport::Udp,
        } as i32,
        username: text(v, "username"),
        realm: text(v, "realm"),
        from_domain: text(v, "from_domain"),
        max_concurrent_calls: uint(v, "max_concurrent_calls"),
        max_calls_per_second: uint(v, "max_calls_per_second"),
        has_password: v
            .get("has_password")
            .and_then(Value::as_bool)
            .unwrap_or_default(),
        created_at: text(v, "created_at").unwrap_or_default(),
        register: v
            .get("register")
            .and_then(Value::as_bool)
            .unwrap_or_default(),
        registration_state: v.get("registration").and_then(|r| text(r, "state")),
    }
}

fn number_message(v: &Value) -> proto::Number {
    proto::Number {
        id: text(v, "id").unwrap_or_default(),
        e164: text(v, "e164").unwrap_or_default(),
        trunk_id: text(v, "trunk_id").unwrap_or_default(),
        created_at: text(v, "created_at").unwrap_or_default(),
    }
}

fn agent_fields_map(f: proto::AgentFields) -> Map<String, Value> {
    let mut m = Map::new();
    put(&mut m, "name", f.name.map(Value::from));
    put(&mut m, "direction", f.direction.map(Value::from));
    put(&mut m, "persona", f.persona.map(Value::from));
    put(&mut m, "voice", f.voice.map(Value::from));
    put(&mut m, "language", f.language.map(Value::from));
    put(&mut m, "instructions", f.instructions.map(Value::from));
    put(&mut m, "returns", f.returns.as_ref().map(from_struct));
    if !f.tools.is_empty() {
        let tools: Vec<Value> = f
            .tools
            .iter()
            .map(|t| {
                let mut tool = Map::new();
                tool.insert("name".into(), json!(t.name));
                tool.insert("description".into(), json!(t.description));
                put(
                    &mut tool,
                    "parameters",
                    t.parameters.as_ref().map(from_struct),
                );
                put(&mut tool, "url", t.url.clone().map(Value::from));
                Value::Object(tool)
            })
            .collect();
        m.insert("tools".into(), Value::Array(tools));
    }
    if let Some(v) = f.voicemail_action {
        let mut action = Map::new();
        action.insert("action".into(), json!(v.action));
        put(&mut action, "message", v.message.map(Value::from));
        m.insert("voicemail_action".into(), Value::Object(action));
    }
    put(&mut m, "webhook_url", f.webhook_url.map(Value::from));
    if !f.number_ids.is_empty() {
        m.insert("number_ids".into(), json!(f.number_ids));
    }
    put(
        &mut m,
        "primary_number_id",
        f.primary_number_id.map(Value::from),
    );
    put(&mut m, "brain", f.brain.map(Value::from));
    put(
        &mut m,
        "ring_timeout_seconds",
        f.ring_timeout_seconds.map(Value::from),
    );
    put(
        &mut m,
        "max_duration_seconds",
        f.max_duration_seconds.map(Value::from),
    );
    put(&mut m, "mask_dtmf", f.mask_dtmf.map(Value::from));
    put(&mut m, "amd", f.amd.as_ref().map(from_value));
    put(&mut m, "barge_in", f.barge_in.as_ref().map(from_value));
    put(
        &mut m,
        "endpointing_silence_ms",
        f.endpointing_silence_ms.map(Value::from),
    );
    put(
        &mut m,
        "silence_timeout_seconds",
        f.silence_timeout_seconds.map(Value::from),
    );
    m
}

fn agent_message(v: &Value) -> proto::Agent {
    let tools = v
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .map(|t| proto::Tool {
                    name: text(t, "name").unwrap_or_default(),
                    description: text(t, "description").unwrap_or_default(),
                    parameters: object(t, "parameters"),
                    url: text(t, "url"),
                })
                .collect()
        })
        .unwrap_or_default();
    let voicemail_action = v.get("voicemail_action").map(|a| match a {
        Value::String(s) => proto::VoicemailAction {
            action: s.clone(),
            message: None,
        },
        other => proto::VoicemailAction {
            action: text(other, "action").unwrap_or_default(),
            message: text(other, "message"),
        },
    });
    proto::Agent {
        id: text(v, "id").unwrap_or_default(),
        created_at: text(v, "created_at").unwrap_or_default(),
        fields: Some(proto::AgentFields {
            name: text(v, "name"),
            direction: text(v, "direction"),
            persona: text(v, "persona"),
            voice: text(v, "voice"),
            language: text(v, "language"),
            instructions: text(v, "instructions"),
            returns: object(v, "returns"),
            tools,
            voicemail_action,
            webhook_url: text(v, "webhook_url"),
            number_ids: v
                .get("number_ids")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            primary_number_id: text(v, "primary_number_id"),
            brain: text(v, "brain"),
            ring_timeout_seconds: uint(v, "ring_timeout_seconds"),
            max_duration_seconds: uint(v, "max_duration_seconds"),
            mask_dtmf: v.get("mask_dtmf").and_then(Value::as_bool),
            amd: v.get("amd").filter(|a| !a.is_null()).map(to_value),
            barge_in: v.get("barge_in").filter(|a| !a.is_null()).map(to_value),
            endpointing_silence_ms: uint(v, "endpointing_silence_ms"),
            silence_timeout_seconds: uint(v, "silence_timeout_seconds"),
        }),
    }
}

fn status_of(name: &str) -> proto::CallStatus {
    match name {
        "queued" => proto::CallStatus::Queued,
        "dialing" => proto::CallStatus::Dialing,
        "ringing" => proto::CallStatus::Ringing,
        "in_progress" => proto::CallStatus::InProgress,
        "completed" => proto::CallStatus::Completed,
        "busy" => proto::CallStatus::Busy,
        "no_answer" => proto::CallStatus::NoAnswer,
        "failed" => proto::CallStatus::Failed,
        "canceled" => proto::CallStatus::Canceled,
        _ => proto::CallStatus::Unspecified,
    }
}

fn status_name(status: proto::CallStatus) -> Option<&'static str> {
    Some(match status {
        proto::CallStatus::Unspecified => return None,
        proto::CallStatus::Queued => "queued",
        proto::CallStatus::Dialing => "dialing",
        proto::CallStatus::Ringing => "ringing",
        proto::CallStatus::InProgress => "in_progress",
        proto::CallStatus::Completed => "completed",
        proto::CallStatus::Busy => "busy",
        proto::CallStatus::NoAnswer => "no_answer",
        proto::CallStatus::Failed => "failed",
        proto::CallStatus::Canceled => "canceled",
    })
}

fn call_message(v: &Value) -> proto::Call {
    proto::Call {
        id: text(v, "id").unwrap_or_default(),
        agent_id: text(v, "agent_id").unwrap_or_default(),
        to: text(v, "to").unwrap_or_default(),
        from_number: text(v, "from_number").unwrap_or_default(),
        instructions: text(v, "instructions").unwrap_or_default(),
        context: object(v, "context"),
        metadata: object(v, "metadata"),
        webhook_url: text(v, "webhook_url"),
        status: status_of(&text(v, "status").unwrap_or_default()) as i32,
        end_reason: v
            .get("end_reason")
            .filter(|r| r.is_object())
            .map(|r| proto::EndReason {
                code: text(r, "code").unwrap_or_default(),
                by: text(r, "by").unwrap_or_default(),
                sip_status: uint(r, "sip_status"),
                message: text(r, "message"),
            }),
        answered_by: text(v, "answered_by"),
        sip_call_id: text(v, "sip_call_id"),
        trunk_id: text(v, "trunk_id"),
        created_at: text(v, "created_at").unwrap_or_default(),
        dialed_at: text(v, "dialed_at"),
        ringing_at: text(v, "ringing_at"),
        answered_at: text(v, "answered_at"),
        ended_at: text(v, "ended_at"),
        ring_duration_ms: int(v, "ring_duration_ms"),
        talk_duration_ms: int(v, "talk_duration_ms"),
        transcript: v
            .get("transcript")
            .and_then(Value::as_array)
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| proto::TranscriptLine {
                        role: text(l, "role").unwrap_or_default(),
                        text: text(l, "text").unwrap_or_default(),
                        at: text(l, "at").unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        result: v.get("result").filter(|r| !r.is_null()).map(to_value),
        result_error: text(v, "result_error"),
        media_stats: object(v, "media_stats"),
    }
}

/// Who the request's key speaks for.
async fn authorized<T>(state: &ApiState, request: &Request<T>) -> Result<KeyOwner, Status> {
    let given = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    crate::authenticate(state, given)
        .await
        .map_err(Status::from)
}

/// The gRPC side of the API.
#[derive(Debug, Clone)]
pub struct Grpc {
    state: ApiState,
}

#[tonic::async_trait]
impl TrunkService for Grpc {
    async fn create_trunk(
        &self,
        request: Request<proto::CreateTrunkRequest>,
    ) -> Result<Response<proto::CreateTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let fields = request.into_inner().trunk.unwrap_or_default();
        let v =
            crate::service_create_trunk(&self.state, &caller, &trunk_fields_map(fields)).await?;
        Ok(Response::new(proto::CreateTrunkResponse {
            trunk: Some(trunk_message(&v)),
        }))
    }

    async fn get_trunk(
        &self,
        request: Request<proto::GetTrunkRequest>,
    ) -> Result<Response<proto::GetTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_get_trunk(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetTrunkResponse {
            trunk: Some(trunk_message(&v)),
        }))
    }

    async fn list_trunks(
        &self,
        request: Request<proto::ListTrunksRequest>,
    ) -> Result<Response<proto::ListTrunksResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_list_trunks(&self.state, &caller).await?;
        Ok(Response::new(proto::ListTrunksResponse {
            trunks: list(&v).iter().map(trunk_message).collect(),
        }))
    }

    async fn update_trunk(
        &self,
        request: Request<proto::UpdateTrunkRequest>,
    ) -> Result<Response<proto::UpdateTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let patch = trunk_fields_map(r.trunk.unwrap_or_default());
        let v = crate::service_update_trunk(&self.state, &caller, &r.id, &patch).await?;
        Ok(Response::new(proto::UpdateTrunkResponse {
            trunk: Some(trunk_message(&v)),
        }))
    }

    async fn delete_trunk(
        &self,
        request: Request<proto::DeleteTrunkRequest>,
    ) -> Result<Response<proto::DeleteTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        crate::service_delete_trunk(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteTrunkResponse {}))
    }
}

/// The `data` list of a list answer.
fn list(v: &Value) -> Vec<Value> {
    v.get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[tonic::async_trait]
impl NumberService for Grpc {
    async fn create_number(
        &self,
        request: Request<proto::CreateNumberRequest>,
    ) -> Result<Response<proto::CreateNumberResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let mut map = Map::new();
        map.insert("e164".into(), json!(r.e164));
        map.insert("trunk_id".into(), json!(r.trunk_id));
        let v = crate::service_create_number(&self.state, &caller, &map).await?;
        Ok(Response::new(proto::CreateNumberResponse {
            number: Some(number_message(&v)),
        }))
    }

    async fn get_number(
        &self,
        request: Request<proto::GetNumberRequest>,
    ) -> Result<Response<proto::GetNumberResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_get_number(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetNumberResponse {
            number: Some(number_message(&v)),
        }))
    }

    async fn list_numbers(
        &self,
        request: Request<proto::ListNumbersRequest>,
    ) -> Result<Response<proto::ListNumbersResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_list_numbers(&self.state, &caller).await?;
        Ok(Response::new(proto::ListNumbersResponse {
            numbers: list(&v).iter().map(number_message).collect(),
        }))
    }

    async fn delete_number(
        &self,
        request: Request<proto::DeleteNumberRequest>,
    ) -> Result<Response<proto::DeleteNumberResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        crate::service_delete_number(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteNumberResponse {}))
    }
}

#[tonic::async_trait]
impl AgentService for Grpc {
    async fn create_agent(
        &self,
        request: Request<proto::CreateAgentRequest>,
    ) -> Result<Response<proto::CreateAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let fields = request.into_inner().agent.unwrap_or_default();
        let v =
            crate::service_create_agent(&self.state, &caller, &agent_fields_map(fields)).await?;
        Ok(Response::new(proto::CreateAgentResponse {
            agent: Some(agent_message(&v)),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<proto::GetAgentRequest>,
    ) -> Result<Response<proto::GetAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_get_agent(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetAgentResponse {
            agent: Some(agent_message(&v)),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_list_agents(&self.state, &caller).await?;
        Ok(Response::new(proto::ListAgentsResponse {
            agents: list(&v).iter().map(agent_message).collect(),
        }))
    }

    async fn update_agent(
        &self,
        request: Request<proto::UpdateAgentRequest>,
    ) -> Result<Response<proto::UpdateAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let patch = agent_fields_map(r.agent.unwrap_or_default());
        let v = crate::service_update_agent(&self.state, &caller, &r.id, &patch).await?;
        Ok(Response::new(proto::UpdateAgentResponse {
            agent: Some(agent_message(&v)),
        }))
    }

    async fn delete_agent(
        &self,
        request: Request<proto::DeleteAgentRequest>,
    ) -> Result<Response<proto::DeleteAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        crate::service_delete_agent(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteAgentResponse {}))
    }
}

/// The stream WatchCall answers with.
type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchCallResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CallService for Grpc {
    async fn dispatch_call(
        &self,
        request: Request<proto::DispatchCallRequest>,
    ) -> Result<Response<proto::DispatchCallResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let mut map = Map::new();
        map.insert("agent_id".into(), json!(r.agent_id));
        map.insert("to".into(), json!(r.to));
        put(&mut map, "from_number", r.from_number.map(Value::from));
        put(&mut map, "instructions", r.instructions.map(Value::from));
        put(&mut map, "context", r.context.as_ref().map(from_struct));
        put(&mut map, "webhook_url", r.webhook_url.map(Value::from));
        put(&mut map, "metadata", r.metadata.as_ref().map(from_struct));
        let (call, replayed) =
            crate::service_dispatch(&self.state, &caller, &map, r.idempotency_key.as_deref())
                .await?;
        Ok(Response::new(proto::DispatchCallResponse {
            call: Some(call_message(&call)),
            replayed,
        }))
    }

    async fn get_call(
        &self,
        request: Request<proto::GetCallRequest>,
    ) -> Result<Response<proto::GetCallResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_get_call(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetCallResponse {
            call: Some(call_message(&v)),
        }))
    }

    async fn list_calls(
        &self,
        request: Request<proto::ListCallsRequest>,
    ) -> Result<Response<proto::ListCallsResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let status = proto::CallStatus::try_from(r.status)
            .map_err(|_| Status::invalid_argument("`status` is not a CallStatus"))?;
        let query = ListQuery {
            agent_id: r.agent_id,
            status: status_name(status).map(str::to_owned),
            to: r.to,
            created_after: r.created_after,
            created_before: r.created_before,
            limit: r.limit,
            cursor: r.cursor,
        };
        let v = crate::service_list_calls(&self.state, &caller, query).await?;
        Ok(Response::new(proto::ListCallsResponse {
            calls: list(&v).iter().map(call_message).collect(),
            next_cursor: text(&v, "next_cursor"),
        }))
    }

    async fn hangup_call(
        &self,
        request: Request<proto::HangupCallRequest>,
    ) -> Result<Response<proto::HangupCallResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let v = crate::service_hangup(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::HangupCallResponse {
            call: Some(call_message(&v)),
        }))
    }

    type WatchCallStream = WatchStream;

    async fn watch_call(
        &self,
        request: Request<proto::WatchCallRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let id = request.into_inner().id;
        // Subscribe before the first read, so no change between them is missed.
        let mut changes = self.state.engine.changes();
        let first = crate::service_get_call(&self.state, &caller, &id).await?;
        let state = self.state.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = first;
            if tx.send(Ok(watched(&last))).await.is_err() {
                return;
            }
            while !is_final(&last) {
                match changes.recv().await {
                    Ok(changed) if changed.to_string() != id => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                let now = match crate::service_get_call(&state, &caller, &id).await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if now != last {
                    last = now;
                    if tx.send(Ok(watched(&last))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

fn watched(call: &Value) -> proto::WatchCallResponse {
    proto::WatchCallResponse {
        call: Some(call_message(call)),
    }
}

fn is_final(call: &Value) -> bool {
    matches!(
        text(call, "status").as_deref(),
        Some("completed" | "busy" | "no_answer" | "failed" | "canceled")
    )
}

/// A stream fed by a task through a bounded channel.
fn async_stream<F, Fut>(produce: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<proto::WatchCallResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The gRPC router: the four services, health (`grpc.health.v1`, every service serving) and
/// reflection.
pub async fn services(
    state: ApiState,
) -> Result<tonic::transport::server::Router, tonic_reflection::server::Error> {
    let grpc = Grpc { state };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    for name in [
        "dialtone.v1.TrunkService",
        "dialtone.v1.NumberService",
        "dialtone.v1.AgentService",
        "dialtone.v1.CallService",
        "",
    ] {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(proto::trunk_service_server::TrunkServiceServer::new(
            grpc.clone(),
        ))
        .add_service(proto::number_service_server::NumberServiceServer::new(
            grpc.clone(),
        ))
        .add_service(proto::agent_service_server::AgentServiceServer::new(
            grpc.clone(),
        ))
        .add_service(proto::call_service_server::CallServiceServer::new(grpc)))
}

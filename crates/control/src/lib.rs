//! # dialtone-control — the HTTP/JSON API
//!
//! Routes (all under `Authorization: Bearer <key>`; a key belongs to one organisation and sees
//! only its resources — another organisation's are `404` to it):
//!
//! | route | what |
//! |---|---|
//! | `POST/GET /v1/trunks`, `GET/PATCH/DELETE /v1/trunks/{id}` | SIP trunks (the password is write-only) |
//! | `POST/GET /v1/numbers`, `GET/DELETE /v1/numbers/{id}` | numbers on trunks |
//! | `POST/GET /v1/agents`, `GET/PATCH/DELETE /v1/agents/{id}` | agents |
//! | `POST /v1/calls` (with `Idempotency-Key`), `GET /v1/calls` (filters `agent_id`, `status`, `to`, `created_after`, `created_before`; `limit` ≤ 200, `cursor`), `GET /v1/calls/{id}`, `POST /v1/calls/{id}/hangup` | calls |
//! | `GET /v1/calls/{id}/events`, `POST /v1/events/{id}/redeliver` | a call's webhook events and their delivery state; queue one again |
//! | `POST/GET /v1/organizations`, `POST /v1/organizations/{id}/keys` | tenants and their API keys (admin keys only) |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document of all of the above (no auth) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | liveness, readiness, Prometheus (no auth) |
//!
//! Every error has one shape: `{"error": {"code", "message", "field"}}` with the status the rule
//! calls for (400 naming the field, 401, 404, 409, 413, 503). Request bodies are parsed strictly:
//! a field this API does not know is a 400 naming it, never silently ignored.

use std::sync::Arc;

pub mod grpc;
pub mod openapi;

pub use dialtone_proto as proto;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dialtone_engine::outbound::{self, OutboundError};
use dialtone_engine::{DispatchRequest, Dispatched, Engine, EngineError, RegistrationState};
use dialtone_model::time::rfc3339;
use dialtone_storage::{
    CallFilter, KeyOwner, NewAgent, NewTrunk, StorageError, Stored, TrunkTransport,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Most bytes of `instructions`.
pub const MAX_INSTRUCTIONS_BYTES: usize = 32 * 1024;
/// Most bytes of `context` or `metadata`, serialised.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;
/// Most bytes of a request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// An API error: status, machine code, message, and the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
    /// Seconds until a retry can succeed (429: sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "invalid_request",
            message: message.into(),
            field: Some(field.to_owned()),
            retry_after: None,
        }
    }

    fn not_found(entity: &str, id: impl std::fmt::Display) -> Self {
        Self {
            status: 404,
            code: "not_found",
            message: format!("{entity} {id} not found"),
            field: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(v) = header::HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound { entity, id } => ApiError::not_found(entity, id),
            StorageError::Conflict {
                entity: "dispatch",
                field,
            } => ApiError {
                status: 409,
                code: "idempotency_conflict",
                message: "this Idempotency-Key was already used with a different request body"
                    .into(),
                field: Some(field.to_owned()),
                retry_after: None,
            },
            StorageError::InUse { .. } => ApiError {
                status: 409,
                code: "in_use",
                message: e.to_string(),
                field: None,
                retry_after: None,
            },
            StorageError::Conflict { entity, field } => ApiError {
                status: 409,
                code: "conflict",
                message: format!("a {entity} with this {field} already exists"),
                field: Some(field.to_owned()),
                retry_after: None,
            },
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError {
                    status: 500,
                    code: "internal",
                    message: "storage failure".into(),
                    field: None,
                    retry_after: None,
                }
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::AgentNotFound { agent_id } => ApiError::not_found("agent", agent_id),
            EngineError::CallNotFound { call_id } => ApiError::not_found("call", call_id),
            EngineError::FromNumberNotAttached { .. } => ApiError::invalid("from_number", message),
            EngineError::NoCallerId { .. } | EngineError::BrainUnavailable { .. } => ApiError {
                status: 409,
                code: "failed_precondition",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::CallEnded { .. } => ApiError {
                status: 409,
                code: "call_ended",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::RateLimited { retry_after, .. } => ApiError {
                status: 429,
                code: "rate_limited",
                message,
                field: None,
                // Whole seconds, rounded up: a client that waits that long gets through.
                retry_after: Some(retry_after.as_millis().div_ceil(1000).max(1) as u64),
            },
            EngineError::ShuttingDown | EngineError::SipStopped => ApiError {
                status: 503,
                code: "unavailable",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::Storage(s) => s.into(),
            _ => ApiError {
                status: 500,
                code: "internal",
                message,
                field: None,
                retry_after: None,
            },
        }
    }
}

/// Shared state of the API.
#[derive(Clone)]
pub struct ApiState {
    /// The engine (and through it, storage, where API keys are checked).
    pub engine: Arc<Engine>,
    /// Accept webhook URLs on loopback, private and link-local addresses.
    pub allow_private_webhooks: bool,
    /// Renders the Prometheus metrics page for `GET /metrics`.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("allow_private_webhooks", &self.allow_private_webhooks)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// The router with every route, and the OpenAPI document of the `/v1` routes (built from the
/// same registrations).
pub fn router(state: ApiState) -> Router {
    let (v1, document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(create_trunk, list_trunks))
        .routes(routes!(get_trunk, update_trunk, delete_trunk))
        .routes(routes!(create_number, list_numbers))
        .routes(routes!(get_number, delete_number))
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(create_call, list_calls))
        .routes(routes!(get_call))
        .routes(routes!(hangup_call))
        .routes(routes!(call_events))
        .routes(routes!(redeliver_event))
        .routes(routes!(create_organization, list_organizations))
        .routes(routes!(issue_key))
        .split_for_parts();
    let document = Arc::new(document);
    v1.route(
        "/v1/openapi.json",
        get(move || {
            let document = document.clone();
            async move { Json(document.as_ref().clone()) }
        }),
    )
    .route("/healthz", get(|| async { "ok" }))
    .route("/readyz", get(ready))
    .route("/metrics", get(metrics_page))
    .with_state(state)
}

async fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<KeyOwner, ApiError> {
    authenticate(
        state,
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .await
}

/// Who an `Authorization` value (HTTP header or gRPC metadata) speaks for. Keys are looked up
/// by their SHA-256, so the comparison never touches the secret itself.
pub(crate) async fn authenticate(
    state: &ApiState,
    authorization: Option<&str>,
) -> Result<KeyOwner, ApiError> {
    let unauthenticated = || ApiError {
        status: 401,
        code: "unauthenticated",
        message: "missing or wrong API key (Authorization: Bearer <key>)".into(),
        field: None,
        retry_after: None,
    };
    let key = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| !k.is_empty())
        .ok_or_else(unauthenticated)?;
    state
        .engine
        .storage()
        .key_owner(key)
        .await?
        .ok_or_else(unauthenticated)
}

/// `found` when it belongs to the caller's organisation; another organisation's resource is
/// `404` to it, exactly like one that does not exist.
fn owned<T>(
    caller: &KeyOwner,
    org_id: Uuid,
    entity: &str,
    id: impl std::fmt::Display,
    found: T,
) -> Result<T, ApiError> {
    if org_id == caller.org_id {
        Ok(found)
    } else {
        Err(ApiError::not_found(entity, id))
    }
}

/// Refuses the first key not in `allowed`, naming it.
fn only_fields(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::invalid(
            unknown,
            format!("unknown field `{unknown}`"),
        )),
        None => Ok(()),
    }
}

/// Parses a body that must be one JSON object within the size limit.
fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError {
            status: 413,
            code: "too_large",
            message: format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            field: None,
            retry_after: None,
        });
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid("body", "body must be a JSON object"));
    };
    Ok(map)
}

fn opt_string(map: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a string"),
        )),
    }
}

fn req_string(map: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    opt_string(map, field)?
        .ok_or_else(|| ApiError::invalid(field, format!("`{field}` is required")))
}

fn opt_u32(map: &Map<String, Value>, field: &str) -> Result<Option<u32>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(field, format!("`{field}` must be a non-negative integer"))
            }),
    }
}

fn uuid_field(map: &Map<String, Value>, field: &str) -> Result<Uuid, ApiError> {
    let s = req_string(map, field)?;
    Uuid::parse_str(&s).map_err(|_| ApiError::invalid(field, format!("`{field}` must be a UUID")))
}

/// `+` then 2–15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn e164_field(map: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match opt_string(map, field)? {
        Some(s) if !is_e164(&s) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be an E.164 number: + then 2-15 digits, the first not 0"),
        )),
        other => Ok(other),
    }
}

fn object_field(map: &Map<String, Value>, field: &str) -> Result<Value, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(json!({})),
        Some(v @ Value::Object(_)) => {
            if v.to_string().len() > MAX_OBJECT_BYTES {
                return Err(ApiError {
                    status: 413,
                    code: "too_large",
                    message: format!("`{field}` is larger than {MAX_OBJECT_BYTES} bytes"),
                    field: Some(field.to_owned()),
                    retry_after: None,
                });
            }
            Ok(v.clone())
        }
        Some(_) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a JSON object"),
        )),
    }
}

fn url_field(map: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match opt_string(map, field)? {
        Some(u)
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.contains(char::is_whitespace) =>
        {
            Err(ApiError::invalid(
                field,
                format!("`{field}` must be an http(s) URL"),
            ))
        }
        other => Ok(other),
    }
}

/// An http(s) URL whose host is not a loopback, private or link-local address (cloud metadata
/// endpoints in particular), unless the API was configured to allow those.
async fn public_url_field(
    state: &ApiState,
    map: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ApiError> {
    let Some(url) = url_field(map, field)? else {
        return Ok(None);
    };
    match outbound::vet_url(&url, state.allow_private_webhooks).await {
        // A name that does not resolve now may later; delivery vets it again.
        Ok(()) | Err(OutboundError::Unresolved { .. }) => {}
        Err(OutboundError::Private { host, .. }) => {
            return Err(ApiError::invalid(
                field,
                format!(
                    "`{field}` points at a private or loopback address ({host}); receivers must be public"
                ),
            ));
        }
        Err(e) => return Err(ApiError::invalid(field, format!("`{field}`: {e}"))),
    }
    Ok(Some(url))
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn metrics_page(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Ready when storage answers, the SIP user agent runs and calls are taken (not draining).
async fn ready(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    state.engine.storage().ping().await?;
    if !state.engine.sip_running().await {
        return Err(EngineError::SipStopped.into());
    }
    if !state.engine.is_accepting() {
        return Err(EngineError::ShuttingDown.into());
    }
    Ok("ready")
}

const TRUNK_FIELDS: &[&str] = &[
    "name",
    "host",
    "port",
    "transport",
    "username",
    "password",
    "realm",
    "from_domain",
    "max_concurrent_calls",
    "max_calls_per_second",
    "register",
];

#[utoipa::path(post, path = "/v1/trunks", tag = "trunks", request_body = openapi::TrunkFields, responses((status = 201, body = openapi::Trunk), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 409, description = "conflicts with what is stored", body = openapi::ErrorBody)))]
async fn create_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let map = json_object(&body)?;
    Ok(created(service_create_trunk(&state, &caller, &map).await?))
}

/// A trunk as the API shows it: no password, whether one is set, RFC 3339 times, and where
/// its registration stands when it keeps one.
pub(crate) fn trunk_json(state: &ApiState, trunk: &dialtone_storage::Trunk) -> Value {
    let mut v = to_json(trunk);
    if let Value::Object(m) = &mut v {
        let registration = state.engine.registration_state(trunk.id).map(|r| match r {
            RegistrationState::Pending => json!({"state": "pending"}),
            RegistrationState::Registered { expires, refreshes } => {
                json!({"state": "registered", "expires": expires, "refreshes": refreshes})
            }
            RegistrationState::Failed { status } => {
                json!({"state": "failed", "sip_status": status})
            }
        });
        m.insert("registration".into(), registration.unwrap_or(Value::Null));
        m.insert("has_password".into(), json!(trunk.password.is_some()));
        m.insert("created_at".into(), json!(rfc3339(trunk.created_at)));
        m.insert("updated_at".into(), json!(rfc3339(trunk.updated_at)));
    }
    v
}

/// A number as the API shows it.
pub(crate) fn number_json(number: &dialtone_storage::Number) -> Value {
    let mut v = to_json(number);
    if let Value::Object(m) = &mut v {
        m.insert("created_at".into(), json!(rfc3339(number.created_at)));
    }
    v
}

/// A trunk's fields from a request body (or a stored trunk with a patch laid over it).
fn trunk_from_map(map: &Map<String, Value>) -> Result<NewTrunk, ApiError> {
    only_fields(map, TRUNK_FIELDS)?;
    let port = opt_u32(map, "port")?.unwrap_or(5060);
    let transport = match opt_string(map, "transport")?.as_deref() {
        None | Some("udp") => TrunkTransport::Udp,
        Some("tcp") => TrunkTransport::Tcp,
        Some(_) => {
            return Err(ApiError::invalid(
                "transport",
                "`transport` must be \"udp\" or \"tcp\"",
            ));
        }
    };
    Ok(NewTrunk {
        name: req_string(map, "name")?,
        host: req_string(map, "host")?,
        port: u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ApiError::invalid("port", "`port` must be 1-65535"))?,
        transport,
        username: opt_string(map, "username")?,
        password: opt_string(map, "password")?,
        realm: opt_string(map, "realm")?,
        from_domain: opt_string(map, "from_domain")?,
        max_concurrent_calls: opt_u32(map, "max_concurrent_calls")?,
        max_calls_per_second: opt_u32(map, "max_calls_per_second")?,
        register: match map.get("register") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid(
                    "register",
                    "`register` must be true or false",
                ));
            }
        },
    })
}

pub(crate) async fn service_create_trunk(
    state: &ApiState,
    caller: &KeyOwner,
    map: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let trunk = state
        .engine
        .storage()
        .create_trunk(caller.org_id, trunk_from_map(map)?)
        .await?;
    state.engine.sync_registration(&trunk);
    Ok(trunk_json(state, &trunk))
}

/// Lays `patch` over `current`: a key present replaces, `null` clears.
fn patched(mut current: Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    for (k, v) in patch {
        if v.is_null() {
            current.remove(k);
        } else {
            current.insert(k.clone(), v.clone());
        }
    }
    current
}

pub(crate) async fn service_update_trunk(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, ApiError> {
    only_fields(patch, TRUNK_FIELDS)?;
    let current = own::<dialtone_storage::Trunk>(state, caller, id).await?;
    let id = current.id;
    let Value::Object(mut map) = to_json(&current) else {
        return Err(ApiError::not_found("trunk", id));
    };
    map.retain(|k, _| TRUNK_FIELDS.contains(&k.as_str()));
    if let Some(p) = &current.password {
        map.insert("password".into(), json!(p));
    }
    let trunk = state
        .engine
        .storage()
        .update_trunk(id, trunk_from_map(&patched(map, patch))?)
        .await?;
    state.engine.sync_registration(&trunk);
    Ok(trunk_json(state, &trunk))
}

pub(crate) async fn service_delete_trunk(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<(), ApiError> {
    let trunk = own::<dialtone_storage::Trunk>(state, caller, id).await?;
    state.engine.storage().delete_trunk(trunk.id).await?;
    state.engine.stop_registration(trunk.id);
    Ok(())
}

#[utoipa::path(patch, path = "/v1/trunks/{id}", tag = "trunks", params(("id" = String, Path, description = "UUID")), request_body = openapi::TrunkFields, responses((status = 200, body = openapi::Trunk), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody), (status = 409, description = "conflicts with what is stored", body = openapi::ErrorBody)))]
async fn update_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let patch = json_object(&body)?;
    Ok(Json(
        service_update_trunk(&state, &caller, &id, &patch).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/trunks/{id}", tag = "trunks", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "deleted"), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody), (status = 409, description = "conflicts with what is stored", body = openapi::ErrorBody)))]
async fn delete_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    service_delete_trunk(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/trunks", tag = "trunks", responses((status = 200, body = openapi::TrunkList), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody)))]
async fn list_trunks(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_list_trunks(&state, &caller).await?))
}

pub(crate) async fn service_list_trunks(
    state: &ApiState,
    caller: &KeyOwner,
) -> Result<Value, ApiError> {
    let trunks = state.engine.storage().list_trunks(caller.org_id).await?;
    let data: Vec<Value> = trunks.iter().map(|t| trunk_json(state, t)).collect();
    Ok(json!({"data": data, "next_cursor": null}))
}

fn path_uuid(id: &str, entity: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(entity, id))
}

/// The resource `id` names when it belongs to the caller's organisation (else `404`).
async fn own<T: Stored>(state: &ApiState, caller: &KeyOwner, id: &str) -> Result<T, ApiError> {
    let id = path_uuid(id, T::ENTITY)?;
    let found = T::fetch(state.engine.storage(), id).await?;
    owned(caller, found.org_id(), T::ENTITY, id, found)
}

#[utoipa::path(get, path = "/v1/trunks/{id}", tag = "trunks", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = openapi::Trunk), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn get_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_get_trunk(&state, &caller, &id).await?))
}

pub(crate) async fn service_get_trunk(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(trunk_json(
        state,
        &own::<dialtone_storage::Trunk>(state, caller, id).await?,
    ))
}

#[utoipa::path(post, path = "/v1/numbers", tag = "numbers", request_body = openapi::NumberFields, responses((status = 201, body = openapi::Number), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 409, description = "conflicts with what is stored", body = openapi::ErrorBody)))]
async fn create_number(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let map = json_object(&body)?;
    Ok(created(service_create_number(&state, &caller, &map).await?))
}

pub(crate) async fn service_create_number(
    state: &ApiState,
    caller: &KeyOwner,
    map: &Map<String, Value>,
) -> Result<Value, ApiError> {
    only_fields(map, &["e164", "trunk_id"])?;
    let map = map.clone();
    let e164 =
        e164_field(&map, "e164")?.ok_or_else(|| ApiError::invalid("e164", "`e164` is required"))?;
    let trunk_id = uuid_field(&map, "trunk_id")?;
    let number = match state
        .engine
        .storage()
        .create_number(caller.org_id, &e164, trunk_id)
        .await
    {
        Err(StorageError::NotFound { .. }) => {
            return Err(ApiError::invalid(
                "trunk_id",
                format!("trunk {trunk_id} does not exist"),
            ));
        }
        other => other?,
    };
    Ok(number_json(&number))
}

#[utoipa::path(get, path = "/v1/numbers/{id}", tag = "numbers", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = openapi::Number), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn get_number(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_get_number(&state, &caller, &id).await?))
}

pub(crate) async fn service_list_numbers(
    state: &ApiState,
    caller: &KeyOwner,
) -> Result<Value, ApiError> {
    let numbers = state.engine.storage().list_numbers(caller.org_id).await?;
    let data: Vec<Value> = numbers.iter().map(number_json).collect();
    Ok(json!({"data": data, "next_cursor": null}))
}

pub(crate) async fn service_delete_number(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<(), ApiError> {
    let number = own::<dialtone_storage::Number>(state, caller, id).await?;
    Ok(state.engine.storage().delete_number(number.id).await?)
}

#[utoipa::path(get, path = "/v1/numbers", tag = "numbers", responses((status = 200, body = openapi::NumberList), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody)))]
async fn list_numbers(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_list_numbers(&state, &caller).await?))
}

#[utoipa::path(delete, path = "/v1/numbers/{id}", tag = "numbers", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "deleted"), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody), (status = 409, description = "conflicts with what is stored", body = openapi::ErrorBody)))]
async fn delete_number(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    service_delete_number(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn service_get_number(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(number_json(
        &own::<dialtone_storage::Number>(state, caller, id).await?,
    ))
}

const AGENT_FIELDS: &[&str] = &[
    "name",
    "direction",
    "persona",
    "voice",
    "language",
    "instructions",
    "returns",
    "tools",
    "voicemail_action",
    "webhook_url",
    "number_ids",
    "primary_number_id",
    "brain",
    "ring_timeout_seconds",
    "max_duration_seconds",
    "amd",
    "mask_dtmf",
    "barge_in",
    "endpointing_silence_ms",
    "silence_timeout_seconds",
];

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = openapi::AgentFields, responses((status = 201, body = openapi::Agent), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody)))]
async fn create_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let map = json_object(&body)?;
    Ok(created(service_create_agent(&state, &caller, &map).await?))
}

/// Checks that `schema` at `field` is a JSON Schema (an object that compiles as one, of a
/// draft the validator knows: no remote meta-schemas).
fn json_schema(field: &str, schema: &Value) -> Result<(), ApiError> {
    if !schema.is_object() {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be a JSON Schema object"),
        ));
    }
    if let Some(dialect) = schema.get("$schema")
        && !dialect.as_str().is_some_and(|d| {
            d.starts_with("http://json-schema.org/") || d.starts_with("https://json-schema.org/")
        })
    {
        return Err(ApiError::invalid(
            field,
            format!("`{field}`.$schema must name a JSON Schema draft of json-schema.org"),
        ));
    }
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(field, format!("`{field}` is not a valid JSON Schema: {e}")))
}

/// Validates the agent fields whose shape the API fixes (the rest are free text).
fn check_agent_fields(map: &Map<String, Value>) -> Result<(), ApiError> {
    for field in ["persona", "voice", "language", "instructions", "brain"] {
        opt_string(map, field)?;
    }
    if opt_string(map, "instructions")?.is_some_and(|i| i.len() > MAX_INSTRUCTIONS_BYTES) {
        return Err(ApiError::invalid(
            "instructions",
            format!("`instructions` is longer than {MAX_INSTRUCTIONS_BYTES} bytes"),
        ));
    }
    if let Some(language) = opt_string(map, "language")? {
        let mut parts = language.split('-');
        let primary_ok = parts.next().is_some_and(|p| {
            (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic())
        });
        if !primary_ok
            || !parts
                .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(ApiError::invalid(
                "language",
                "`language` must be a BCP 47 tag such as \"en-US\"",
            ));
        }
    }
    if let Some(brain) = opt_string(map, "brain")? {
        let known = brain == "builtin:echo"
            || brain == "builtin:ivr"
            || brain
                .strip_prefix("grpc://")
                .and_then(|a| a.rsplit_once(':'))
                .is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
        if !known {
            return Err(ApiError::invalid(
                "brain",
                "`brain` must be \"builtin:echo\", \"builtin:ivr\" or \"grpc://host:port\"",
            ));
        }
    }
    for (field, max) in [
        ("ring_timeout_seconds", 300),
        ("max_duration_seconds", 86_400),
    ] {
        if opt_u32(map, field)?.is_some_and(|v| v == 0 || v > max) {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` must be 1-{max}"),
            ));
        }
    }
    if let Some(returns) = map.get("returns").filter(|v| !v.is_null()) {
        json_schema("returns", returns)?;
    }
    match map.get("voicemail_action") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "hangup" || s == "continue" => {}
        Some(Value::Object(action)) => {
            only_fields(action, &["action", "message"])?;
            let message = action.get("message").and_then(Value::as_str).unwrap_or("");
            match action.get("action").and_then(Value::as_str) {
                Some("hangup" | "continue") => {}
                Some("leave_message") if !message.trim().is_empty() => {}
                Some("leave_message") => {
                    return Err(ApiError::invalid(
                        "voicemail_action",
                        "`voicemail_action` \"leave_message\" needs the `message` to leave",
                    ));
                }
                _ => {
                    return Err(ApiError::invalid(
                        "voicemail_action",
                        "`voicemail_action.action` must be \"hangup\", \"leave_message\" or \"continue\"",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "voicemail_action",
                "`voicemail_action` must be \"hangup\", \"continue\" or {\"action\": ..., \"message\": ...}",
            ));
        }
    }
    match map.get("barge_in") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "on" || s == "off" => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|ms| (1..=10_000).contains(&ms)) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "barge_in",
                "`barge_in` must be \"on\", \"off\" or a minimum of speech in ms (1-10000)",
            ));
        }
    }
    for (field, min, max) in [
        ("endpointing_silence_ms", 100, 5_000),
        ("silence_timeout_seconds", 1, 3_600),
    ] {
        if opt_u32(map, field)?.is_some_and(|v| !(min..=max).contains(&v)) {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` must be {min}-{max}"),
            ));
        }
    }
    if map
        .get("mask_dtmf")
        .is_some_and(|v| !v.is_boolean() && !v.is_null())
    {
        return Err(ApiError::invalid(
            "mask_dtmf",
            "`mask_dtmf` must be true or false",
        ));
    }
    match map.get("amd") {
        None | Some(Value::Null | Value::Bool(_)) => {}
        Some(Value::Object(o)) => {
            only_fields(
                o,
                &[
                    "initial_silence_ms",
                    "greeting_ms",
                    "after_greeting_silence_ms",
                    "total_analysis_time_ms",
                    "maximum_words",
                ],
            )?;
            if o.values()
                .any(|v| !v.as_u64().is_some_and(|n| (1..=60_000).contains(&n)))
            {
                return Err(ApiError::invalid(
                    "amd",
                    "`amd` thresholds must be whole numbers from 1 to 60000",
                ));
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "amd",
                "`amd` must be true, false or an object of thresholds",
            ));
        }
    }
    match map.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            let mut names = std::collections::HashSet::new();
            for tool in tools {
                let Value::Object(tool) = tool else {
                    return Err(ApiError::invalid(
                        "tools",
                        "each of `tools` must be an object",
                    ));
                };
                only_fields(tool, &["name", "description", "parameters", "url"])?;
                let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
                let name_ok = (1..=64).contains(&name.len())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !name_ok || !names.insert(name.to_owned()) {
                    return Err(ApiError::invalid(
                        "tools",
                        "each tool needs a unique `name` of 1-64 letters, digits, `_` or `-`",
                    ));
                }
                if !tool.get("description").is_some_and(Value::is_string) {
                    return Err(ApiError::invalid(
                        "tools",
                        format!("tool `{name}` needs a `description` string"),
                    ));
                }
                json_schema("tools", tool.get("parameters").unwrap_or(&Value::Null))?;
                url_field(tool, "url")?;
            }
        }
        Some(_) => return Err(ApiError::invalid("tools", "`tools` must be a list")),
    }
    Ok(())
}

/// An agent's fields from a request body (or a stored agent with a patch laid over it).
fn agent_from_map(map: &Map<String, Value>) -> Result<NewAgent, ApiError> {
    only_fields(map, AGENT_FIELDS)?;
    check_agent_fields(map)?;
    let name = req_string(map, "name")?;
    match opt_string(map, "direction")?.as_deref() {
        None | Some("outbound") => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "direction",
                "`direction` must be \"outbound\"",
            ));
        }
    }
    url_field(map, "webhook_url")?;
    let number_ids = match map.get("number_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid("number_ids", "`number_ids` must be a list of UUIDs")
            })?,
        Some(_) => {
            return Err(ApiError::invalid(
                "number_ids",
                "`number_ids` must be a list of UUIDs",
            ));
        }
    };
    let primary = match map.get("primary_number_id") {
        None | Some(Value::Null) => number_ids.first().copied(),
        Some(_) => Some(uuid_field(map, "primary_number_id")?),
    };
    if let Some(p) = primary
        && !number_ids.contains(&p)
    {
        return Err(ApiError::invalid(
            "primary_number_id",
            "`primary_number_id` must be one of `number_ids`",
        ));
    }
    let mut config = map.clone();
    config.remove("name");
    config.remove("number_ids");
    config.remove("primary_number_id");
    Ok(NewAgent {
        name,
        config: Value::Object(config),
        number_ids,
        primary_number_id: primary,
    })
}

/// A number that does not exist, named as the `number_ids` field's fault.
fn unknown_number(e: StorageError) -> ApiError {
    match e {
        StorageError::NotFound {
            entity: "number",
            id,
        } => ApiError::invalid("number_ids", format!("number {id} does not exist")),
        other => other.into(),
    }
}

pub(crate) async fn service_create_agent(
    state: &ApiState,
    caller: &KeyOwner,
    map: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let agent = state
        .engine
        .storage()
        .create_agent(caller.org_id, agent_from_map(map)?)
        .await
        .map_err(unknown_number)?;
    Ok(agent_json(&agent))
}

pub(crate) async fn service_update_agent(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, ApiError> {
    only_fields(patch, AGENT_FIELDS)?;
    let current = own::<dialtone_storage::Agent>(state, caller, id).await?;
    let id = current.id;
    let Value::Object(mut map) = agent_json(&current) else {
        return Err(ApiError::not_found("agent", id));
    };
    map.retain(|k, _| AGENT_FIELDS.contains(&k.as_str()));
    // New numbers without a new primary: the primary stays if it is still attached.
    if patch.contains_key("number_ids") && !patch.contains_key("primary_number_id") {
        let keeps = current.primary_number_id.is_some_and(|p| {
            patch
                .get("number_ids")
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.iter().any(|v| v.as_str() == Some(&p.to_string())))
        });
        if !keeps {
            map.remove("primary_number_id");
        }
    }
    let agent = state
        .engine
        .storage()
        .update_agent(id, agent_from_map(&patched(map, patch))?)
        .await
        .map_err(unknown_number)?;
    Ok(agent_json(&agent))
}

pub(crate) async fn service_list_agents(
    state: &ApiState,
    caller: &KeyOwner,
) -> Result<Value, ApiError> {
    let agents = state.engine.storage().list_agents(caller.org_id).await?;
    let data: Vec<Value> = agents.iter().map(agent_json).collect();
    Ok(json!({"data": data, "next_cursor": null}))
}

pub(crate) async fn service_delete_agent(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<(), ApiError> {
    let agent = own::<dialtone_storage::Agent>(state, caller, id).await?;
    Ok(state.engine.storage().delete_agent(agent.id).await?)
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = openapi::AgentList), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody)))]
async fn list_agents(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_list_agents(&state, &caller).await?))
}

#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID")), request_body = openapi::AgentFields, responses((status = 200, body = openapi::Agent), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn update_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let patch = json_object(&body)?;
    Ok(Json(
        service_update_agent(&state, &caller, &id, &patch).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "deleted"), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn delete_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    service_delete_agent(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn agent_json(agent: &dialtone_storage::Agent) -> Value {
    let mut v = agent.config.clone();
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), json!(agent.id));
        m.insert("name".into(), json!(agent.name));
        m.insert("number_ids".into(), json!(agent.number_ids));
        m.insert("primary_number_id".into(), json!(agent.primary_number_id));
        m.insert("created_at".into(), json!(rfc3339(agent.created_at)));
    }
    v
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = openapi::Agent), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn get_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_get_agent(&state, &caller, &id).await?))
}

pub(crate) async fn service_get_agent(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(agent_json(
        &own::<dialtone_storage::Agent>(state, caller, id).await?,
    ))
}

/// Fields that live on the agent and are refused on a call.
const AGENT_ONLY_FIELDS: &[&str] = &[
    "persona",
    "voice",
    "language",
    "returns",
    "tools",
    "voicemail_action",
];
const CALL_FIELDS: &[&str] = &[
    "agent_id",
    "to",
    "from_number",
    "instructions",
    "context",
    "webhook_url",
    "metadata",
];

#[utoipa::path(post, path = "/v1/calls", tag = "calls", request_body = openapi::DispatchCall, params(("Idempotency-Key" = Option<String>, Header, description = "the same key and body return the same call and place no second one; another body is 409")), responses((status = 201, description = "stored before this answer; `Idempotent-Replayed: true` on a replay", body = openapi::Call), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody), (status = 409, description = "the agent cannot call (no number) or the key was used with another body", body = openapi::ErrorBody), (status = 413, description = "instructions, context or metadata too large", body = openapi::ErrorBody), (status = 503, description = "shutting down", body = openapi::ErrorBody)))]
async fn create_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let map = json_object(&body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid(
                "Idempotency-Key",
                "the Idempotency-Key header must be 1-255 visible characters",
            )
        })?),
    };
    let (call, replayed) = service_dispatch(&state, &caller, &map, key).await?;
    if replayed {
        Ok((
            StatusCode::CREATED,
            [("idempotent-replayed", "true")],
            Json(call),
        )
            .into_response())
    } else {
        Ok(created(call))
    }
}

/// Dispatches a call; the call object and whether an earlier request with the same
/// idempotency key made it.
pub(crate) async fn service_dispatch(
    state: &ApiState,
    caller: &KeyOwner,
    map: &Map<String, Value>,
    idempotency_key: Option<&str>,
) -> Result<(Value, bool), ApiError> {
    let map = map.clone();
    if let Some(field) = AGENT_ONLY_FIELDS.iter().find(|f| map.contains_key(**f)) {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` is not accepted on a call: it is set on the agent"),
        ));
    }
    only_fields(&map, CALL_FIELDS)?;
    let agent_id = uuid_field(&map, "agent_id")?;
    let to = e164_field(&map, "to")?.ok_or_else(|| ApiError::invalid("to", "`to` is required"))?;
    // An E.164 string or the id of one of the agent's numbers.
    let from_number = match opt_string(&map, "from_number")? {
        Some(f) if is_e164(&f) || Uuid::parse_str(&f).is_ok() => Some(f),
        Some(_) => {
            return Err(ApiError::invalid(
                "from_number",
                "`from_number` must be an E.164 number (+ then 2-15 digits) or a number id",
            ));
        }
        None => None,
    };
    let instructions = opt_string(&map, "instructions")?;
    if instructions
        .as_ref()
        .is_some_and(|i| i.len() > MAX_INSTRUCTIONS_BYTES)
    {
        return Err(ApiError {
            status: 413,
            code: "too_large",
            message: format!("`instructions` is longer than {MAX_INSTRUCTIONS_BYTES} bytes"),
            field: Some("instructions".into()),
            retry_after: None,
        });
    }
    let idempotency = match idempotency_key {
        None => None,
        Some(v) => {
            let key = Some(v)
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Idempotency-Key",
                        "the Idempotency-Key header must be 1-255 visible characters",
                    )
                })?;
            // serde_json's maps are sorted, so equal bodies print equally.
            let canonical = Value::Object(map.clone()).to_string();
            let digest = Sha256::digest(canonical.as_bytes());
            let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            Some((key.to_owned(), hash))
        }
    };
    let request = DispatchRequest {
        org_id: caller.org_id,
        agent_id,
        to,
        from_number,
        instructions,
        context: object_field(&map, "context")?,
        webhook_url: public_url_field(state, &map, "webhook_url").await?,
        metadata: object_field(&map, "metadata")?,
        idempotency,
    };
    Ok(match state.engine.dispatch(request).await? {
        Dispatched::New(call) => (call.to_json(), false),
        Dispatched::Replayed(call) => (call.to_json(), true),
    })
}

/// Query parameters of `GET /v1/calls`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    agent_id: Option<String>,
    status: Option<String>,
    to: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn rfc3339_param(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| {
                    ApiError::invalid(field, format!("`{field}` must be an RFC 3339 time"))
                })
        })
        .transpose()
}

#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(("agent_id" = Option<String>, Query, description = "UUID"), ("status" = Option<String>, Query), ("to" = Option<String>, Query, description = "E.164"), ("created_after" = Option<String>, Query, description = "RFC 3339"), ("created_before" = Option<String>, Query, description = "RFC 3339"), ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")), responses((status = 200, body = openapi::CallList), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody)))]
async fn list_calls(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    Ok(Json(service_list_calls(&state, &caller, q).await?))
}

pub(crate) async fn service_list_calls(
    state: &ApiState,
    caller: &KeyOwner,
    q: ListQuery,
) -> Result<Value, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be 1-200"));
    }
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse()
                .map_err(|_| ApiError::invalid("status", format!("unknown status {s:?}")))
        })
        .transpose()?;
    let agent_id = q
        .agent_id
        .as_deref()
        .map(|a| {
            Uuid::parse_str(a)
                .map_err(|_| ApiError::invalid("agent_id", "`agent_id` must be a UUID"))
        })
        .transpose()?;
    let filter = CallFilter {
        org_id: Some(caller.org_id),
        agent_id,
        status,
        to: q.to,
        created_after: rfc3339_param("created_after", q.created_after.as_deref())?,
        created_before: rfc3339_param("created_before", q.created_before.as_deref())?,
    };
    let (calls, next) = match state
        .engine
        .storage()
        .list_calls(&filter, limit, q.cursor.as_deref())
        .await
    {
        Err(StorageError::InvalidCursor { cursor }) => {
            return Err(ApiError::invalid(
                "cursor",
                format!("cursor {cursor:?} is not valid"),
            ));
        }
        other => other?,
    };
    let data: Vec<Value> = calls.iter().map(|c| c.to_json()).collect();
    Ok(json!({"data": data, "next_cursor": next}))
}

#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = openapi::Call), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn get_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_get_call(&state, &caller, &id).await?))
}

pub(crate) async fn service_get_call(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(own::<dialtone_storage::Call>(state, caller, id)
        .await?
        .to_json())
}

#[utoipa::path(get, path = "/v1/calls/{id}/events", tag = "webhooks", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = openapi::EventList), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn call_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let call = own::<dialtone_storage::Call>(&state, &caller, &id).await?;
    let events = state.engine.storage().call_events(call.id).await?;
    Ok(Json(json!({"data": events, "next_cursor": null})))
}

#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "webhooks", params(("id" = String, Path, description = "UUID")), responses((status = 202, body = openapi::Redelivery), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody)))]
async fn redeliver_event(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let event_id = path_uuid(&id, "event")?;
    // Another organisation's event does not exist for this caller.
    let call_id = state.engine.storage().event_call(event_id).await?;
    own::<dialtone_storage::Call>(&state, &caller, &call_id.to_string())
        .await
        .map_err(|_| ApiError::not_found("event", event_id))?;
    state.engine.storage().redeliver(event_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": event_id, "call_id": call_id, "state": "pending"})),
    )
        .into_response())
}

/// Only admin keys manage organisations and keys.
fn admin_only(caller: &KeyOwner) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError {
            status: 403,
            code: "forbidden",
            message: "only an admin key may manage organisations and keys".into(),
            field: None,
            retry_after: None,
        })
    }
}

#[utoipa::path(post, path = "/v1/organizations", tag = "organizations", request_body = openapi::OrganizationFields, responses((status = 201, body = openapi::Organization), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 403, description = "not an admin key", body = openapi::ErrorBody)))]
async fn create_organization(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    admin_only(&caller)?;
    let map = json_object(&body)?;
    only_fields(
        &map,
        &["name", "max_concurrent_calls", "max_calls_per_second"],
    )?;
    let org = state
        .engine
        .storage()
        .create_organization(
            &req_string(&map, "name")?,
            opt_u32(&map, "max_concurrent_calls")?,
            opt_u32(&map, "max_calls_per_second")?,
        )
        .await?;
    Ok(created(organization_json(&org)))
}

fn organization_json(org: &dialtone_storage::Organization) -> Value {
    let mut v = to_json(org);
    if let Value::Object(m) = &mut v {
        m.insert("created_at".into(), json!(rfc3339(org.created_at)));
    }
    v
}

#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", responses((status = 200, body = openapi::OrganizationList), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 403, description = "not an admin key", body = openapi::ErrorBody)))]
async fn list_organizations(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    admin_only(&caller)?;
    let orgs = state.engine.storage().list_organizations().await?;
    let data: Vec<Value> = orgs.iter().map(organization_json).collect();
    Ok(Json(json!({"data": data, "next_cursor": null})))
}

#[utoipa::path(post, path = "/v1/organizations/{id}/keys", tag = "organizations", params(("id" = String, Path, description = "UUID")), request_body = openapi::KeyFields, responses((status = 201, description = "the key's secret is shown this once", body = openapi::IssuedKey), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 403, description = "not an admin key", body = openapi::ErrorBody), (status = 404, description = "no such organisation", body = openapi::ErrorBody)))]
async fn issue_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    admin_only(&caller)?;
    let map = if body.is_empty() {
        Map::new()
    } else {
        json_object(&body)?
    };
    only_fields(&map, &["admin"])?;
    let admin = match map.get("admin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("admin", "`admin` must be true or false")),
    };
    let org = path_uuid(&id, "organization")?;
    let issued = state.engine.storage().issue_key(org, admin).await?;
    Ok(created(json!({
        "id": issued.id,
        "organization_id": issued.org_id,
        "key": issued.key,
        "prefix": issued.prefix,
        "admin": issued.admin,
    })))
}

#[utoipa::path(post, path = "/v1/calls/{id}/hangup", tag = "calls", params(("id" = String, Path, description = "UUID")), responses((status = 200, description = "the hang-up is under way", body = openapi::Call), (status = 400, description = "a field breaks a rule; `field` names it", body = openapi::ErrorBody), (status = 401, description = "missing or wrong key", body = openapi::ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = openapi::ErrorBody), (status = 409, description = "the call has already ended", body = openapi::ErrorBody)))]
async fn hangup_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(service_hangup(&state, &caller, &id).await?))
}

pub(crate) async fn service_hangup(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<Value, ApiError> {
    let id = own::<dialtone_storage::Call>(state, caller, id).await?.id;
    state.engine.hangup(id).await?;
    let call = state.engine.storage().get_call(id).await?;
    Ok(call.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_rules() {
        for ok in ["+15551230000", "+44", "+123456789012345"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "15551230000",
            "+0555",
            "+1",
            "+1234567890123456",
            "+1555-123",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn strict_bodies_name_the_unknown_field() {
        let map = json_object(&Bytes::from_static(b"{\"agent_idd\": 1}")).unwrap();
        let err = only_fields(&map, CALL_FIELDS).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("agent_idd"));
        assert_eq!(err.status, 400);
        let err = json_object(&Bytes::from_static(b"[1]")).unwrap_err();
        assert_eq!(err.message, "body must be a JSON object");
    }
}

//! `/v1/agents` and gRPC `AgentService`. The settings are the model's `AgentFields`; what
//! serde cannot check (JSON Schemas that must compile, webhook receivers that must be public,
//! the providers `llm`, `stt` and `tts` name, which must be the organisation's and of a kind
//! that does the job) is checked here.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dialtone_model::agent::AgentView;
use dialtone_model::{AgentFields, BUILTIN_AGENT, BUILTIN_ESPEAK, Page, ProviderKind};
use dialtone_storage::{Agent, KeyOwner, NewAgent, StorageError};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::{authorize, own};
use crate::body::{json_object, parse, patched};
use crate::openapi::ErrorBody;
use crate::views::agent_view;
use crate::{ApiError, ApiState, created, public_url};

/// Checks that `schema` at `field` is a JSON Schema (an object that compiles as one, of a
/// draft the validator knows: no remote meta-schemas).
pub(crate) fn json_schema(field: &str, schema: &Value) -> Result<(), ApiError> {
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

/// The provider kinds that do each job, by setting: `llm` (chat completions), `stt` (speech
/// recognition), `tts` (speech synthesis; `builtin:espeak` needs no provider).
const PROVIDER_JOBS: [(&str, &str, &[ProviderKind]); 3] = [
    ("llm", "the language model", &[ProviderKind::OpenAi]),
    (
        "stt",
        "speech recognition",
        &[ProviderKind::OpenAi, ProviderKind::Deepgram],
    ),
    (
        "tts",
        "speech synthesis",
        &[
            ProviderKind::OpenAi,
            ProviderKind::Cartesia,
            ProviderKind::ElevenLabs,
        ],
    ),
];

/// Each provider the agent's `llm`, `stt` and `tts` settings name is one of organisation
/// `org`'s (by name or id) and of a kind that does that job; else a 400 naming
/// `llm.provider` (or `stt.provider`, `tts.provider`).
async fn check_providers(
    state: &ApiState,
    org: Uuid,
    fields: &AgentFields,
) -> Result<(), ApiError> {
    let references = [
        fields.llm.as_ref().map(|s| s.provider.as_str()),
        fields.stt.as_ref().map(|s| s.provider.as_str()),
        fields.tts.as_ref().map(|s| s.provider.as_str()),
    ];
    for ((setting, job, kinds), reference) in PROVIDER_JOBS.iter().zip(references) {
        let Some(reference) = reference else {
            continue;
        };
        if *setting == "tts" && reference == BUILTIN_ESPEAK {
            continue;
        }
        let field = format!("{setting}.provider");
        let Some(provider) = state.engine.storage().find_provider(org, reference).await? else {
            return Err(ApiError::invalid(
                &field,
                format!(
                    "`{field}` {reference:?} is neither the name nor the id of one of this \
                     organization's providers"
                ),
            ));
        };
        if !kinds.contains(&provider.kind) {
            let names: Vec<String> = kinds.iter().map(|k| format!("{:?}", k.as_str())).collect();
            let fit = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.join(""),
            };
            let espeak = if *setting == "tts" {
                format!(", or {BUILTIN_ESPEAK:?}")
            } else {
                String::new()
            };
            return Err(ApiError::invalid(
                &field,
                format!(
                    "`{field}` {reference:?} is a {} provider; {job} takes a provider of kind \
                     {fit}{espeak}",
                    provider.kind
                ),
            ));
        }
    }
    let local_tts = fields
        .tts
        .as_ref()
        .is_none_or(|t| t.provider == BUILTIN_ESPEAK);
    let brain = fields
        .brain
        .as_deref()
        .unwrap_or_else(|| state.engine.default_brain());
    if brain == BUILTIN_AGENT
        && local_tts
        && let Some(voice) = &fields.voice
        && !dialtone_agent::EspeakNg::default().has_voice(voice)
    {
        return Err(ApiError::invalid(
            "voice",
            format!(
                "`voice` {voice:?} is not a voice of {BUILTIN_ESPEAK} (`espeak-ng --voices` lists \
                 them, e.g. \"en-us\"); set `tts` to a provider to use its voices"
            ),
        ));
    }
    Ok(())
}

/// What storage keeps of checked agent fields of organisation `org`: the settings, and the
/// numbers apart.
async fn new_agent(
    state: &ApiState,
    org: Uuid,
    mut fields: AgentFields,
) -> Result<NewAgent, ApiError> {
    fields.check()?;
    check_providers(state, org, &fields).await?;
    // What the daemon will connect to is checked like every tenant-given destination.
    public_url(state, "webhook_url", fields.webhook_url.as_deref()).await?;
    if let Some(address) = fields
        .brain
        .as_deref()
        .and_then(|b| b.strip_prefix("grpc://"))
    {
        public_url(state, "brain", Some(&format!("http://{address}"))).await?;
    }
    // A Media Streams app's websocket: its host checked as the http(s) URL it upgrades from.
    if let Some(rest) = fields
        .brain
        .as_deref()
        .and_then(|b| b.strip_prefix("ws://"))
    {
        public_url(state, "brain", Some(&format!("http://{rest}"))).await?;
    }
    if let Some(rest) = fields
        .brain
        .as_deref()
        .and_then(|b| b.strip_prefix("wss://"))
    {
        public_url(state, "brain", Some(&format!("https://{rest}"))).await?;
    }
    if let Some(returns) = &fields.returns {
        json_schema("returns", returns)?;
    }
    for tool in fields.tools.iter().flatten() {
        json_schema("tools", &tool.parameters)?;
        public_url(state, "tools", tool.url.as_deref()).await?;
    }
    let primary_number_id = fields.primary_or_first();
    let number_ids = fields.number_ids.take().unwrap_or_default();
    fields.primary_number_id = None;
    Ok(NewAgent {
        name: fields.name.take().unwrap_or_default(),
        config: fields,
        number_ids,
        primary_number_id,
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

pub(crate) async fn create(
    state: &ApiState,
    caller: &KeyOwner,
    fields: AgentFields,
) -> Result<AgentView, ApiError> {
    let agent = state
        .engine
        .storage()
        .create_agent(
            caller.org_id,
            new_agent(state, caller.org_id, fields).await?,
        )
        .await
        .map_err(unknown_number)?;
    Ok(agent_view(&agent))
}

pub(crate) async fn get(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<AgentView, ApiError> {
    Ok(agent_view(&own::<Agent>(state, caller, id).await?))
}

pub(crate) async fn list(state: &ApiState, caller: &KeyOwner) -> Result<Page<AgentView>, ApiError> {
    let agents = state.engine.storage().list_agents(caller.org_id).await?;
    Ok(Page::all(agents.iter().map(agent_view).collect()))
}

/// Lays `patch` (a JSON merge patch of [`AgentFields`]) over the stored agent. New numbers
/// without a new primary keep the primary when it is still attached.
pub(crate) async fn update(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
    patch: Map<String, Value>,
) -> Result<AgentView, ApiError> {
    let current = own::<Agent>(state, caller, id).await?;
    let mut fields = current.config.clone();
    fields.name = Some(current.name.clone());
    fields.number_ids = Some(current.number_ids.clone());
    fields.primary_number_id = current.primary_number_id;
    if patch.contains_key("number_ids") && !patch.contains_key("primary_number_id") {
        let keeps = current.primary_number_id.is_some_and(|p| {
            patch
                .get("number_ids")
                .and_then(Value::as_array)
                .is_some_and(|ids| {
                    ids.iter()
                        .filter_map(|v| v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()))
                        .any(|id| id == p)
                })
        });
        if !keeps {
            fields.primary_number_id = None;
        }
    }
    let fields = patched(&fields, AgentFields::FIELDS, patch)?;
    let agent = state
        .engine
        .storage()
        .update_agent(current.id, new_agent(state, current.org_id, fields).await?)
        .await
        .map_err(unknown_number)?;
    Ok(agent_view(&agent))
}

pub(crate) async fn delete(state: &ApiState, caller: &KeyOwner, id: &str) -> Result<(), ApiError> {
    let agent = own::<Agent>(state, caller, id).await?;
    Ok(state.engine.storage().delete_agent(agent.id).await?)
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = AgentFields, responses((status = 201, body = AgentView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody)))]
pub(crate) async fn create_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(created(create(&state, &caller, parse(&body)?).await?))
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = Page<AgentView>), (status = 401, description = "missing or wrong key", body = ErrorBody)))]
pub(crate) async fn list_agents(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Page<AgentView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(list(&state, &caller).await?))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = AgentView), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn get_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(get(&state, &caller, &id).await?))
}

#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID")), request_body = AgentFields, responses((status = 200, body = AgentView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn update_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AgentView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let patch = json_object(&body)?;
    Ok(Json(update(&state, &caller, &id, patch).await?))
}

#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "deleted"), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "still used by calls", body = ErrorBody)))]
pub(crate) async fn delete_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

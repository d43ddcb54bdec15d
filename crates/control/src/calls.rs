//! `/v1/calls` and gRPC `CallService`: dispatch (with idempotency keys), reads, lists with
//! filters and cursors, hang-up. Every answer is the model's `CallView`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_engine::{DispatchRequest, Dispatched};
use dialtone_model::time::parse_rfc3339;
use dialtone_model::{CallStatus, CallView, DispatchCall, Page, TransferCall};
use dialtone_storage::{Call, CallFilter, KeyOwner, StorageError};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{authorize, own};
use crate::body::json_object;
use crate::openapi::ErrorBody;
use crate::{ApiError, ApiState, created, public_url};

/// What an idempotency key must be.
const IDEMPOTENCY_KEY_RULE: &str = "the Idempotency-Key header must be 1-255 visible characters";

/// Dispatches a call; the call object and whether an earlier request with the same
/// idempotency key made it (then nothing new is dialled).
pub(crate) async fn dispatch(
    state: &ApiState,
    caller: &KeyOwner,
    call: DispatchCall,
    idempotency_key: Option<&str>,
) -> Result<(CallView, bool), ApiError> {
    let idempotency = match idempotency_key {
        None => None,
        Some(key) => {
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::invalid("Idempotency-Key", IDEMPOTENCY_KEY_RULE));
            }
            // The typed request prints the same for the same request, whichever face sent it
            // (absent fields left out, so a field added later changes no earlier hash).
            let canonical = serde_json::to_value(&call)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let digest = Sha256::digest(canonical.as_bytes());
            let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            Some((key.to_owned(), hash))
        }
    };
    public_url(state, "webhook_url", call.webhook_url.as_deref()).await?;
    let request = DispatchRequest {
        org_id: caller.org_id,
        agent_id: call.agent_id,
        context: call.context_or_empty(),
        metadata: call.metadata_or_empty(),
        to: call.to,
        from_number: call.from_number,
        instructions: call.instructions,
        webhook_url: call.webhook_url,
        idempotency,
    };
    Ok(match state.engine.dispatch(request).await? {
        Dispatched::New(call) => (CallView::from(&call), false),
        Dispatched::Replayed(call) => (CallView::from(&call), true),
    })
}

pub(crate) async fn get(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<CallView, ApiError> {
    Ok(CallView::from(&own::<Call>(state, caller, id).await?))
}

/// Query parameters of `GET /v1/calls` (and the fields of gRPC `ListCalls`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pub(crate) agent_id: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) created_after: Option<String>,
    pub(crate) created_before: Option<String>,
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

/// An RFC 3339 query parameter as Unix milliseconds.
fn time_param(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                ApiError::invalid(field, format!("`{field}` must be an RFC 3339 time"))
            })
        })
        .transpose()
}

pub(crate) async fn list(
    state: &ApiState,
    caller: &KeyOwner,
    q: ListQuery,
) -> Result<Page<CallView>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be 1-200"));
    }
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
        status: q
            .status
            .as_deref()
            .map(|s| {
                s.parse::<CallStatus>()
                    .map_err(|_| ApiError::invalid("status", format!("unknown status {s:?}")))
            })
            .transpose()?,
        to: q.to,
        created_after: time_param("created_after", q.created_after.as_deref())?,
        created_before: time_param("created_before", q.created_before.as_deref())?,
    };
    let (calls, next_cursor) = match state
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
    Ok(Page {
        data: calls.iter().map(CallView::from).collect(),
        next_cursor,
    })
}

/// Asks the call to hang up (out of the queue, CANCEL, or BYE); the call as it stands.
pub(crate) async fn hang_up(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<CallView, ApiError> {
    let id = own::<Call>(state, caller, id).await?.id;
    state.engine.hangup(id).await?;
    Ok(CallView::from(&state.engine.storage().get_call(id).await?))
}

/// Transfers a call in progress; the call as it stands (its `transfer` pending). The call is
/// looked up before the request is read: another organisation's call is a 404 whatever the
/// body.
pub(crate) async fn transfer(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
    request: Result<TransferCall, ApiError>,
) -> Result<CallView, ApiError> {
    let id = own::<Call>(state, caller, id).await?.id;
    state.engine.transfer(id, request?).await?;
    Ok(CallView::from(&state.engine.storage().get_call(id).await?))
}

#[utoipa::path(post, path = "/v1/calls", tag = "calls", request_body = DispatchCall, params(("Idempotency-Key" = Option<String>, Header, description = "the same key and body return the same call and place no second one; another body is 409")), responses((status = 201, description = "stored before this answer; `Idempotent-Replayed: true` on a replay", body = CallView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "the agent cannot call (no number) or the key was used with another body", body = ErrorBody), (status = 413, description = "instructions, context or metadata too large", body = ErrorBody), (status = 429, description = "over the organisation's dispatch rate; `Retry-After` says when", body = ErrorBody), (status = 503, description = "shutting down", body = ErrorBody)))]
pub(crate) async fn create_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let call = DispatchCall::from_json(json_object(&body)?)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key", IDEMPOTENCY_KEY_RULE))?,
        ),
    };
    let (call, replayed) = dispatch(&state, &caller, call, key).await?;
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

#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(("agent_id" = Option<String>, Query, description = "UUID"), ("status" = Option<CallStatus>, Query), ("to" = Option<String>, Query, description = "E.164"), ("created_after" = Option<String>, Query, description = "RFC 3339"), ("created_before" = Option<String>, Query, description = "RFC 3339"), ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")), responses((status = 200, body = Page<CallView>), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody)))]
pub(crate) async fn list_calls(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<CallView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    Ok(Json(list(&state, &caller, q).await?))
}

#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = CallView), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn get_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CallView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(get(&state, &caller, &id).await?))
}

#[utoipa::path(post, path = "/v1/calls/{id}/hangup", tag = "calls", params(("id" = String, Path, description = "UUID")), responses((status = 200, description = "the hang-up is under way", body = CallView), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "the call has already ended", body = ErrorBody)))]
pub(crate) async fn hangup_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CallView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(hang_up(&state, &caller, &id).await?))
}

#[utoipa::path(post, path = "/v1/calls/{id}/result", tag = "calls", params(("id" = String, Path, description = "UUID")), request_body(content = Object, description = "`{\"result\": {…}}`: the call's structured result, checked against the agent's `returns`; it replaces any result or `result_error` on the record. For brains with no other way to give one (a Media Streams app), open to any."), responses((status = 200, description = "recorded", body = CallView), (status = 400, description = "`result` is missing or does not match the agent's `returns`; `field` is `result`", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn post_result(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<CallView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let id = own::<Call>(&state, &caller, &id).await?.id;
    let mut body = json_object(&body)?;
    let result = body
        .remove("result")
        .ok_or_else(|| ApiError::invalid("result", "`result` is required"))?;
    if let Some(other) = body.keys().next() {
        return Err(ApiError::invalid(
            other,
            format!("unknown field `{other}`: the body holds only `result`"),
        ));
    }
    state.engine.post_result(id, &result).await?;
    Ok(Json(CallView::from(
        &state.engine.storage().get_call(id).await?,
    )))
}

#[utoipa::path(post, path = "/v1/calls/{id}/transfer", tag = "calls", params(("id" = String, Path, description = "UUID")), request_body = TransferCall, responses((status = 202, description = "the transfer started (`transfer.status` `pending`); its outcome goes on the call: `transfer` (`completed` or `failed` with `reason`; a `bridge` one with its second leg in `transfer.bridge`), `transferred_to`, and end reason `transferred` once the call ends after a completed transfer", body = CallView), (status = 400, description = "`to` is not E.164 nor a SIP URI, or names a SIP host that is neither the trunk's nor in its `transfer_sip_domains`; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "the call is not in progress, has ended, or a transfer is under way", body = ErrorBody)))]
pub(crate) async fn transfer_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let request =
        json_object(&body).and_then(|b| TransferCall::from_json(b).map_err(ApiError::from));
    let call = transfer(&state, &caller, &id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(call)).into_response())
}

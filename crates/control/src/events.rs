//! A call's webhook events and their delivery state; queueing one again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_model::{EventView, Page};
use dialtone_storage::Call;

use crate::auth::{authorize, own, path_uuid};
use crate::openapi::{ErrorBody, Redelivery};
use crate::{ApiError, ApiState};

#[utoipa::path(get, path = "/v1/calls/{id}/events", tag = "webhooks", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = Page<EventView>), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn call_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Page<EventView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let call = own::<Call>(&state, &caller, &id).await?;
    Ok(Json(Page::all(
        state.engine.storage().call_events(call.id).await?,
    )))
}

#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "webhooks", params(("id" = String, Path, description = "UUID")), responses((status = 202, body = Redelivery), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn redeliver_event(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let event_id = path_uuid(&id, "event")?;
    // Another organisation's event does not exist for this caller.
    let call_id = state.engine.storage().event_call(event_id).await?;
    own::<Call>(&state, &caller, &call_id.to_string())
        .await
        .map_err(|_| ApiError::not_found("event", event_id))?;
    state.engine.storage().redeliver(event_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            id: event_id,
            call_id,
            state: "pending".into(),
        }),
    )
        .into_response())
}

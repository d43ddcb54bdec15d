//! `/v1/numbers` and gRPC `NumberService`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dialtone_model::number::check_e164;
use dialtone_model::{NumberFields, NumberView, Page};
use dialtone_storage::{KeyOwner, Number, StorageError};

use crate::auth::{authorize, own};
use crate::body::parse;
use crate::openapi::ErrorBody;
use crate::views::number_view;
use crate::{ApiError, ApiState, created};

pub(crate) async fn create(
    state: &ApiState,
    caller: &KeyOwner,
    fields: NumberFields,
) -> Result<NumberView, ApiError> {
    check_e164("e164", &fields.e164)?;
    let number = match state
        .engine
        .storage()
        .create_number(caller.org_id, &fields.e164, fields.trunk_id)
        .await
    {
        Err(StorageError::NotFound { .. }) => {
            return Err(ApiError::invalid(
                "trunk_id",
                format!("trunk {} does not exist", fields.trunk_id),
            ));
        }
        other => other?,
    };
    // A new number has no agent yet.
    Ok(number_view(&number, None))
}

/// `number` as the API shows it, with the agent that answers it.
async fn shown(state: &ApiState, number: &Number) -> Result<NumberView, ApiError> {
    let answering = state.engine.storage().answering_agent(number.id).await?;
    Ok(number_view(number, answering.map(|a| a.id)))
}

pub(crate) async fn get(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<NumberView, ApiError> {
    shown(state, &own::<Number>(state, caller, id).await?).await
}

pub(crate) async fn list(
    state: &ApiState,
    caller: &KeyOwner,
) -> Result<Page<NumberView>, ApiError> {
    let numbers = state.engine.storage().list_numbers(caller.org_id).await?;
    let mut views = Vec::with_capacity(numbers.len());
    for number in &numbers {
        views.push(shown(state, number).await?);
    }
    Ok(Page::all(views))
}

pub(crate) async fn delete(state: &ApiState, caller: &KeyOwner, id: &str) -> Result<(), ApiError> {
    let number = own::<Number>(state, caller, id).await?;
    Ok(state.engine.storage().delete_number(number.id).await?)
}

#[utoipa::path(post, path = "/v1/numbers", tag = "numbers", request_body = NumberFields, responses((status = 201, body = NumberView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 409, description = "conflicts with what is stored", body = ErrorBody)))]
pub(crate) async fn create_number(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(created(create(&state, &caller, parse(&body)?).await?))
}

#[utoipa::path(get, path = "/v1/numbers", tag = "numbers", responses((status = 200, body = Page<NumberView>), (status = 401, description = "missing or wrong key", body = ErrorBody)))]
pub(crate) async fn list_numbers(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Page<NumberView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(list(&state, &caller).await?))
}

#[utoipa::path(get, path = "/v1/numbers/{id}", tag = "numbers", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = NumberView), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn get_number(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<NumberView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(get(&state, &caller, &id).await?))
}

#[utoipa::path(delete, path = "/v1/numbers/{id}", tag = "numbers", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "deleted"), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "still attached to an agent", body = ErrorBody)))]
pub(crate) async fn delete_number(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! `/v1/providers` and gRPC `ProviderService`: one service function per operation, both faces
//! over it. The API key is write-only (the view says `has_api_key`); a `base_url` the tenant
//! gives follows the outbound-address policy of webhook URLs; deleting a provider agents name,
//! or renaming one they name by its name, is `409 in_use` naming the agents.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dialtone_model::{Page, ProviderFields, ProviderView};
use dialtone_storage::{KeyOwner, NewProvider, Provider};
use serde_json::{Map, Value};

use crate::auth::{authorize, own};
use crate::body::{json_object, parse, patched};
use crate::openapi::ErrorBody;
use crate::views::provider_view;
use crate::{ApiError, ApiState, created, public_url};

/// What storage keeps of checked provider fields: the base URL given (vetted against the
/// outbound policy), else the kind's default.
async fn new_provider(state: &ApiState, fields: ProviderFields) -> Result<NewProvider, ApiError> {
    fields.check()?;
    public_url(state, "base_url", fields.base_url.as_deref()).await?;
    let base_url = fields.base_url_or_default().unwrap_or_default();
    Ok(NewProvider {
        name: fields.name.unwrap_or_default(),
        kind: fields
            .kind
            .ok_or_else(|| ApiError::invalid("kind", "`kind` is required"))?,
        base_url,
        api_key: fields.api_key,
    })
}

/// The stored provider's writable fields (the key included, to be kept by a patch). A base URL
/// that is its kind's default is left out, so a patch changing the kind gets the new kind's.
fn fields_of(provider: &Provider) -> ProviderFields {
    ProviderFields {
        name: Some(provider.name.clone()),
        kind: Some(provider.kind),
        base_url: Some(provider.base_url.clone())
            .filter(|url| url != provider.kind.default_base_url()),
        api_key: provider.api_key.clone(),
    }
}

pub(crate) async fn create(
    state: &ApiState,
    caller: &KeyOwner,
    fields: ProviderFields,
) -> Result<ProviderView, ApiError> {
    let provider = state
        .engine
        .storage()
        .create_provider(caller.org_id, new_provider(state, fields).await?)
        .await?;
    Ok(provider_view(&provider))
}

pub(crate) async fn get(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<ProviderView, ApiError> {
    Ok(provider_view(&own::<Provider>(state, caller, id).await?))
}

pub(crate) async fn list(
    state: &ApiState,
    caller: &KeyOwner,
) -> Result<Page<ProviderView>, ApiError> {
    let providers = state.engine.storage().list_providers(caller.org_id).await?;
    Ok(Page::all(providers.iter().map(provider_view).collect()))
}

/// Lays `patch` (a JSON merge patch of [`ProviderFields`]) over the stored provider.
pub(crate) async fn update(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
    patch: Map<String, Value>,
) -> Result<ProviderView, ApiError> {
    let current = own::<Provider>(state, caller, id).await?;
    let fields = patched(&fields_of(&current), ProviderFields::FIELDS, patch)?;
    let provider = state
        .engine
        .storage()
        .update_provider(current.id, new_provider(state, fields).await?)
        .await?;
    Ok(provider_view(&provider))
}

pub(crate) async fn delete(state: &ApiState, caller: &KeyOwner, id: &str) -> Result<(), ApiError> {
    let provider = own::<Provider>(state, caller, id).await?;
    Ok(state.engine.storage().delete_provider(provider.id).await?)
}

#[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = ProviderFields, responses((status = 201, body = ProviderView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 409, description = "conflicts with what is stored", body = ErrorBody)))]
pub(crate) async fn create_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(created(create(&state, &caller, parse(&body)?).await?))
}

#[utoipa::path(get, path = "/v1/providers", tag = "providers", responses((status = 200, body = Page<ProviderView>), (status = 401, description = "missing or wrong key", body = ErrorBody)))]
pub(crate) async fn list_providers(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Page<ProviderView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(list(&state, &caller).await?))
}

#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = ProviderView), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn get_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(get(&state, &caller, &id).await?))
}

#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers", params(("id" = String, Path, description = "UUID")), request_body = ProviderFields, responses((status = 200, body = ProviderView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "the name is taken, or agents name the provider by the name it would lose (`in_use`)", body = ErrorBody)))]
pub(crate) async fn update_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ProviderView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let patch = json_object(&body)?;
    Ok(Json(update(&state, &caller, &id, patch).await?))
}

#[utoipa::path(delete, path = "/v1/providers/{id}", tag = "providers", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "deleted"), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "agents name it (`in_use`)", body = ErrorBody)))]
pub(crate) async fn delete_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

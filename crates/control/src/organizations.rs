//! `/v1/organizations` and gRPC `OrganizationService`: tenants (managed by `operator` keys
//! only: create, list, read, disable, remove) and their API keys (issued, listed and revoked
//! by an `operator` key for any organisation, or by an `admin` key for its own). One service
//! function per operation, both faces over it, the scope checked inside it. Each handler
//! declares its scope in the OpenAPI document (`x-dialtone-scope`); the routes without one
//! need any key (`standard`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dialtone_engine::EngineError;
use dialtone_model::time::{parse_rfc3339, rfc3339};
use dialtone_model::{
    CallStatus, IssuedKeyView, KeyFields, KeyScope, KeyView, OrganizationFields, OrganizationPatch,
    OrganizationView, Page,
};
use dialtone_storage::{CallFilter, KeyOwner, now_ms};

use crate::auth::{authorize, forbidden, manages_keys_of, operator_only, path_uuid};
use crate::body::parse;
use crate::openapi::ErrorBody;
use crate::views::{key_view, organization_view};
use crate::{ApiError, ApiState, created};

/// What `operator_only` says is being done.
const MANAGING_ORGANIZATIONS: &str = "managing organizations";

pub(crate) async fn create(
    state: &ApiState,
    caller: &KeyOwner,
    fields: OrganizationFields,
) -> Result<OrganizationView, ApiError> {
    operator_only(caller, MANAGING_ORGANIZATIONS)?;
    fields.check()?;
    let org = state
        .engine
        .storage()
        .create_organization(
            &fields.name,
            fields.max_concurrent_calls,
            fields.max_calls_per_second,
        )
        .await?;
    Ok(organization_view(&org))
}

pub(crate) async fn list(
    state: &ApiState,
    caller: &KeyOwner,
) -> Result<Page<OrganizationView>, ApiError> {
    operator_only(caller, MANAGING_ORGANIZATIONS)?;
    let orgs = state.engine.storage().list_organizations().await?;
    Ok(Page::all(orgs.iter().map(organization_view).collect()))
}

pub(crate) async fn get(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<OrganizationView, ApiError> {
    operator_only(caller, MANAGING_ORGANIZATIONS)?;
    let id = path_uuid(id, "organization")?;
    let org = state.engine.storage().get_organization(id).await?;
    Ok(organization_view(&org))
}

/// Disables or enables the organisation (and with `end_live_calls` hangs up its live calls).
pub(crate) async fn update(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
    patch: OrganizationPatch,
) -> Result<OrganizationView, ApiError> {
    operator_only(caller, MANAGING_ORGANIZATIONS)?;
    let id = path_uuid(id, "organization")?;
    let end_live_calls = patch.end_live_calls == Some(true);
    if end_live_calls && patch.disabled != Some(true) {
        return Err(ApiError::invalid(
            "end_live_calls",
            "`end_live_calls` goes with `\"disabled\": true`",
        ));
    }
    let storage = state.engine.storage();
    let org = match patch.disabled {
        Some(disabled) => storage.set_organization_disabled(id, disabled).await?,
        None => storage.get_organization(id).await?,
    };
    if end_live_calls {
        let ended = end_live_calls_of(state, org.id).await?;
        tracing::info!(organization = %org.id, ended, "disabled; its live calls hung up");
    }
    Ok(organization_view(&org))
}

pub(crate) async fn delete(state: &ApiState, caller: &KeyOwner, id: &str) -> Result<(), ApiError> {
    operator_only(caller, MANAGING_ORGANIZATIONS)?;
    let id = path_uuid(id, "organization")?;
    Ok(state.engine.storage().delete_organization(id).await?)
}

/// Hangs up every live call of `org` as the API's hang-up does; how many were asked.
async fn end_live_calls_of(state: &ApiState, org: uuid::Uuid) -> Result<usize, ApiError> {
    let storage = state.engine.storage();
    let mut asked = 0;
    for status in CallStatus::ALL.iter().filter(|s| !s.is_final()) {
        let filter = CallFilter {
            org_id: Some(org),
            status: Some(*status),
            ..CallFilter::default()
        };
        let mut cursor: Option<String> = None;
        loop {
            let (calls, next) = storage.list_calls(&filter, 200, cursor.as_deref()).await?;
            for call in &calls {
                match state.engine.hangup(call.id).await {
                    Ok(()) => asked += 1,
                    // Ended meanwhile.
                    Err(EngineError::CallEnded { .. } | EngineError::CallNotFound { .. }) => {}
                    Err(other) => return Err(other.into()),
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(asked)
}

/// Issues a key of organisation `org`; its secret is in the answer, this once.
pub(crate) async fn issue(
    state: &ApiState,
    caller: &KeyOwner,
    org: &str,
    fields: KeyFields,
) -> Result<IssuedKeyView, ApiError> {
    let org = path_uuid(org, "organization")?;
    manages_keys_of(caller, org)?;
    let scope = fields.requested_scope()?;
    if scope == KeyScope::Operator && caller.scope != KeyScope::Operator {
        return Err(forbidden(
            format!(
                "issuing an `{}` key needs an `{}` key; this key's scope is `{}`",
                KeyScope::Operator,
                KeyScope::Operator,
                caller.scope
            ),
            Some("scope"),
        ));
    }
    let expires_at = match fields.expires_at.as_deref() {
        None => None,
        Some(text) => Some(future_time("expires_at", text)?),
    };
    let issued = state
        .engine
        .storage()
        .issue_key(org, scope, expires_at)
        .await?;
    let stored = issued.stored;
    Ok(IssuedKeyView {
        id: stored.id,
        organization_id: stored.org_id,
        key: issued.key,
        prefix: stored.prefix,
        scope: stored.scope,
        admin: stored.scope.manages_keys(),
        expires_at: stored.expires_at.and_then(rfc3339),
    })
}

/// `text` as Unix milliseconds, when it is an RFC 3339 time in the future.
fn future_time(field: &str, text: &str) -> Result<i64, ApiError> {
    let at = parse_rfc3339(text).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("`{field}` must be an RFC 3339 time, like 2030-01-31T12:00:00Z"),
        )
    })?;
    if at <= now_ms() {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be in the future"),
        ));
    }
    Ok(at)
}

/// The keys of `org` not revoked, oldest first; an `admin` caller does not see `operator` ones.
pub(crate) async fn keys(
    state: &ApiState,
    caller: &KeyOwner,
    org: &str,
) -> Result<Page<KeyView>, ApiError> {
    let org = path_uuid(org, "organization")?;
    manages_keys_of(caller, org)?;
    let storage = state.engine.storage();
    storage.get_organization(org).await?;
    let keys = storage.list_keys(org).await?;
    Ok(Page::all(
        keys.iter()
            .filter(|k| caller.scope == KeyScope::Operator || k.scope != KeyScope::Operator)
            .map(key_view)
            .collect(),
    ))
}

pub(crate) async fn revoke(
    state: &ApiState,
    caller: &KeyOwner,
    org: &str,
    key_id: &str,
) -> Result<(), ApiError> {
    let org = path_uuid(org, "organization")?;
    manages_keys_of(caller, org)?;
    let key_id = path_uuid(key_id, "key")?;
    let storage = state.engine.storage();
    let key = storage.get_key(org, key_id).await?;
    if key.scope == KeyScope::Operator && caller.scope != KeyScope::Operator {
        return Err(forbidden(
            format!(
                "revoking an `{}` key needs an `{}` key; this key's scope is `{}`",
                KeyScope::Operator,
                KeyScope::Operator,
                caller.scope
            ),
            None,
        ));
    }
    Ok(storage.revoke_key(org, key.id).await?)
}

#[utoipa::path(post, path = "/v1/organizations", tag = "organizations", request_body = OrganizationFields, extensions(("x-dialtone-scope" = json!(KeyScope::Operator))), responses((status = 201, body = OrganizationView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "not an `operator` key", body = ErrorBody)))]
pub(crate) async fn create_organization(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    // The scope before the body: a caller without it learns nothing of the rules.
    operator_only(&caller, MANAGING_ORGANIZATIONS)?;
    Ok(created(create(&state, &caller, parse(&body)?).await?))
}

#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", extensions(("x-dialtone-scope" = json!(KeyScope::Operator))), responses((status = 200, body = Page<OrganizationView>), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "not an `operator` key", body = ErrorBody)))]
pub(crate) async fn list_organizations(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Page<OrganizationView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(list(&state, &caller).await?))
}

#[utoipa::path(get, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path, description = "UUID")), extensions(("x-dialtone-scope" = json!(KeyScope::Operator))), responses((status = 200, body = OrganizationView), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "not an `operator` key", body = ErrorBody), (status = 404, description = "no such organisation", body = ErrorBody)))]
pub(crate) async fn get_organization(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<OrganizationView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(get(&state, &caller, &id).await?))
}

#[utoipa::path(patch, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path, description = "UUID")), request_body = OrganizationPatch, extensions(("x-dialtone-scope" = json!(KeyScope::Operator))), responses((status = 200, body = OrganizationView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "not an `operator` key", body = ErrorBody), (status = 404, description = "no such organisation", body = ErrorBody)))]
pub(crate) async fn update_organization(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<OrganizationView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    operator_only(&caller, MANAGING_ORGANIZATIONS)?;
    Ok(Json(update(&state, &caller, &id, parse(&body)?).await?))
}

#[utoipa::path(delete, path = "/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path, description = "UUID")), extensions(("x-dialtone-scope" = json!(KeyScope::Operator))), responses((status = 204, description = "removed: its keys revoked at once, the organisation no longer shown; its calls stay on record"), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "not an `operator` key", body = ErrorBody), (status = 404, description = "no such organisation", body = ErrorBody), (status = 409, description = "it has live calls (disable it with `end_live_calls` first) or holds operator keys", body = ErrorBody)))]
pub(crate) async fn delete_organization(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/organizations/{id}/keys", tag = "organizations", params(("id" = String, Path, description = "UUID")), request_body = KeyFields, extensions(("x-dialtone-scope" = json!(KeyScope::Admin))), responses((status = 201, description = "the key's secret is shown this once", body = IssuedKeyView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "neither an `admin` key of this organisation nor an `operator` key (only those issue `operator` keys)", body = ErrorBody), (status = 404, description = "no such organisation", body = ErrorBody)))]
pub(crate) async fn issue_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    // The scope before the body: a caller without it learns nothing of the rules.
    manages_keys_of(&caller, path_uuid(&id, "organization")?)?;
    Ok(created(issue(&state, &caller, &id, parse(&body)?).await?))
}

#[utoipa::path(get, path = "/v1/organizations/{id}/keys", tag = "organizations", params(("id" = String, Path, description = "UUID")), extensions(("x-dialtone-scope" = json!(KeyScope::Admin))), responses((status = 200, description = "the keys not revoked, oldest first, never their secrets; an `admin` key does not see `operator` keys", body = Page<KeyView>), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "neither an `admin` key of this organisation nor an `operator` key", body = ErrorBody), (status = 404, description = "no such organisation", body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Page<KeyView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(keys(&state, &caller, &id).await?))
}

#[utoipa::path(delete, path = "/v1/organizations/{id}/keys/{key_id}", tag = "organizations", params(("id" = String, Path, description = "UUID of the organisation"), ("key_id" = String, Path, description = "UUID of the key")), extensions(("x-dialtone-scope" = json!(KeyScope::Admin))), responses((status = 204, description = "revoked: from the next request on, on every node, the key is `401`"), (status = 401, description = "missing, wrong, expired or revoked key", body = ErrorBody), (status = 403, description = "neither an `admin` key of this organisation nor an `operator` key (only those revoke `operator` keys)", body = ErrorBody), (status = 404, description = "no such key in this organisation", body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    revoke(&state, &caller, &id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

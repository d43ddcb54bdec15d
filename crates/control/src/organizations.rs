//! `/v1/organizations`: tenants and their API keys (admin keys only).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use dialtone_model::{IssuedKeyView, KeyFields, OrganizationFields, OrganizationView, Page};

use crate::auth::{admin_only, authorize, path_uuid};
use crate::body::parse;
use crate::openapi::ErrorBody;
use crate::views::organization_view;
use crate::{ApiError, ApiState, created};

#[utoipa::path(post, path = "/v1/organizations", tag = "organizations", request_body = OrganizationFields, responses((status = 201, body = OrganizationView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 403, description = "not an admin key", body = ErrorBody)))]
pub(crate) async fn create_organization(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    admin_only(&caller)?;
    let fields: OrganizationFields = parse(&body)?;
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
    Ok(created(organization_view(&org)))
}

#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", responses((status = 200, body = Page<OrganizationView>), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 403, description = "not an admin key", body = ErrorBody)))]
pub(crate) async fn list_organizations(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Page<OrganizationView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    admin_only(&caller)?;
    let orgs = state.engine.storage().list_organizations().await?;
    Ok(Json(Page::all(
        orgs.iter().map(organization_view).collect(),
    )))
}

#[utoipa::path(post, path = "/v1/organizations/{id}/keys", tag = "organizations", params(("id" = String, Path, description = "UUID")), request_body = KeyFields, responses((status = 201, description = "the key's secret is shown this once", body = IssuedKeyView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 403, description = "not an admin key", body = ErrorBody), (status = 404, description = "no such organisation", body = ErrorBody)))]
pub(crate) async fn issue_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    admin_only(&caller)?;
    let fields: KeyFields = parse(&body)?;
    let org = path_uuid(&id, "organization")?;
    let issued = state
        .engine
        .storage()
        .issue_key(org, fields.admin.unwrap_or(false))
        .await?;
    Ok(created(IssuedKeyView {
        id: issued.id,
        organization_id: issued.org_id,
        key: issued.key,
        prefix: issued.prefix,
        admin: issued.admin,
    }))
}

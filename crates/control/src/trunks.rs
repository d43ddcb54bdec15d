//! `/v1/trunks` and gRPC `TrunkService`: one service function per operation, both faces
//! over it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dialtone_model::{FieldError, Page, TrunkFields, TrunkView};
use dialtone_storage::{KeyOwner, NewTrunk, SrtpMode, Trunk, TrunkSecurity, TrunkTransport};

use crate::auth::{authorize, own};
use crate::body::{json_object, parse, patched};
use crate::openapi::ErrorBody;
use crate::views::trunk_view;
use crate::{ApiError, ApiState, created};

/// What storage keeps of checked trunk fields; a TLS trunk's settings must make a TLS client.
fn new_trunk(fields: TrunkFields) -> Result<NewTrunk, ApiError> {
    fields.check()?;
    let port = fields.checked_port()?;
    let trunk = stored_fields(fields, port);
    if trunk.transport == TrunkTransport::Tls {
        dialtone_engine::check_trunk_tls(&trunk.security)
            .map_err(|e| FieldError::invalid(e.field, e.reason))?;
    }
    Ok(trunk)
}

/// Checked trunk fields as storage keeps them.
fn stored_fields(fields: TrunkFields, port: u16) -> NewTrunk {
    NewTrunk {
        name: fields.name.unwrap_or_default(),
        host: fields.host.unwrap_or_default(),
        port,
        transport: fields.transport.unwrap_or(TrunkTransport::Udp),
        username: fields.username,
        password: fields.password,
        realm: fields.realm,
        from_domain: fields.from_domain,
        max_concurrent_calls: fields.max_concurrent_calls,
        max_calls_per_second: fields.max_calls_per_second,
        register: fields.register.unwrap_or(false),
        security: TrunkSecurity {
            tls_ca_pem: fields.tls_ca_pem,
            tls_verify: fields.tls_verify.unwrap_or(true),
            tls_client_cert_pem: fields.tls_client_cert_pem,
            tls_client_key_pem: fields.tls_client_key_pem,
            srtp: fields.srtp.unwrap_or(SrtpMode::Off),
            transfer_sip_domains: fields.transfer_sip_domains.unwrap_or_default(),
        },
        codecs: fields.codecs,
    }
}

/// The stored trunk's writable fields (the password included, to be kept by a patch).
fn fields_of(trunk: &Trunk) -> TrunkFields {
    TrunkFields {
        name: Some(trunk.name.clone()),
        host: Some(trunk.host.clone()),
        port: Some(u32::from(trunk.port)),
        transport: Some(trunk.transport),
        username: trunk.username.clone(),
        password: trunk.password.clone(),
        realm: trunk.realm.clone(),
        from_domain: trunk.from_domain.clone(),
        max_concurrent_calls: trunk.max_concurrent_calls,
        max_calls_per_second: trunk.max_calls_per_second,
        register: Some(trunk.register),
        inbound_cidrs: (!trunk.inbound_cidrs.is_empty()).then(|| {
            trunk
                .inbound_cidrs
                .iter()
                .map(ToString::to_string)
                .collect()
        }),
        tls_ca_pem: trunk.security.tls_ca_pem.clone(),
        // Kept only where it says something (the default is true).
        tls_verify: (!trunk.security.tls_verify).then_some(false),
        tls_client_cert_pem: trunk.security.tls_client_cert_pem.clone(),
        tls_client_key_pem: trunk.security.tls_client_key_pem.clone(),
        srtp: (trunk.security.srtp != SrtpMode::Off).then_some(trunk.security.srtp),
        codecs: trunk.codecs.clone(),
        transfer_sip_domains: Some(trunk.security.transfer_sip_domains.clone())
            .filter(|d| !d.is_empty()),
    }
}

pub(crate) async fn create(
    state: &ApiState,
    caller: &KeyOwner,
    fields: TrunkFields,
) -> Result<TrunkView, ApiError> {
    let networks = fields.checked_inbound_cidrs()?;
    let storage = state.engine.storage();
    let trunk = storage
        .create_trunk(caller.org_id, new_trunk(fields)?)
        .await?;
    storage.set_inbound_cidrs(trunk.id, &networks).await?;
    let trunk = storage.get_trunk(trunk.id).await?;
    state.engine.sync_registration(&trunk);
    Ok(trunk_view(&state.engine, &trunk))
}

pub(crate) async fn get(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<TrunkView, ApiError> {
    Ok(trunk_view(
        &state.engine,
        &own::<Trunk>(state, caller, id).await?,
    ))
}

pub(crate) async fn list(state: &ApiState, caller: &KeyOwner) -> Result<Page<TrunkView>, ApiError> {
    let trunks = state.engine.storage().list_trunks(caller.org_id).await?;
    Ok(Page::all(
        trunks
            .iter()
            .map(|t| trunk_view(&state.engine, t))
            .collect(),
    ))
}

/// Lays `patch` (a JSON merge patch of [`TrunkFields`]) over the stored trunk.
pub(crate) async fn update(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<TrunkView, ApiError> {
    let current = own::<Trunk>(state, caller, id).await?;
    let mut stored = fields_of(&current);
    if let Some(transport) = patch.get("transport").and_then(|t| t.as_str())
        && transport != current.transport.as_str()
    {
        // A new transport brings its own default port, and leaving TLS its settings, unless
        // the patch sets them.
        if !patch.contains_key("port") {
            stored.port = None;
        }
        if transport != TrunkTransport::Tls.as_str() {
            stored.tls_ca_pem = None;
            stored.tls_verify = None;
            stored.tls_client_cert_pem = None;
            stored.tls_client_key_pem = None;
        }
    }
    let fields = patched(&stored, TrunkFields::FIELDS, patch)?;
    let networks = fields.checked_inbound_cidrs()?;
    let storage = state.engine.storage();
    storage.update_trunk(current.id, new_trunk(fields)?).await?;
    storage.set_inbound_cidrs(current.id, &networks).await?;
    let trunk = storage.get_trunk(current.id).await?;
    state.engine.sync_registration(&trunk);
    Ok(trunk_view(&state.engine, &trunk))
}

pub(crate) async fn delete(state: &ApiState, caller: &KeyOwner, id: &str) -> Result<(), ApiError> {
    let trunk = own::<Trunk>(state, caller, id).await?;
    state.engine.storage().delete_trunk(trunk.id).await?;
    state.engine.stop_registration(trunk.id);
    Ok(())
}

#[utoipa::path(post, path = "/v1/trunks", tag = "trunks", request_body = TrunkFields, responses((status = 201, body = TrunkView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 409, description = "conflicts with what is stored", body = ErrorBody)))]
pub(crate) async fn create_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(created(create(&state, &caller, parse(&body)?).await?))
}

#[utoipa::path(get, path = "/v1/trunks", tag = "trunks", responses((status = 200, body = Page<TrunkView>), (status = 401, description = "missing or wrong key", body = ErrorBody)))]
pub(crate) async fn list_trunks(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Page<TrunkView>>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(list(&state, &caller).await?))
}

#[utoipa::path(get, path = "/v1/trunks/{id}", tag = "trunks", params(("id" = String, Path, description = "UUID")), responses((status = 200, body = TrunkView), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody)))]
pub(crate) async fn get_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TrunkView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    Ok(Json(get(&state, &caller, &id).await?))
}

#[utoipa::path(patch, path = "/v1/trunks/{id}", tag = "trunks", params(("id" = String, Path, description = "UUID")), request_body = TrunkFields, responses((status = 200, body = TrunkView), (status = 400, description = "a field breaks a rule; `field` names it", body = ErrorBody), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "conflicts with what is stored", body = ErrorBody)))]
pub(crate) async fn update_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TrunkView>, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let patch = json_object(&body)?;
    Ok(Json(update(&state, &caller, &id, patch).await?))
}

#[utoipa::path(delete, path = "/v1/trunks/{id}", tag = "trunks", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "deleted"), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such resource (or not this organisation's)", body = ErrorBody), (status = 409, description = "still used by a number", body = ErrorBody)))]
pub(crate) async fn delete_trunk(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

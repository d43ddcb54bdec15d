//! # dialtone-control — the HTTP/JSON API
//!
//! Routes (all under `Authorization: Bearer <key>`; a key belongs to one organisation and sees
//! only its resources — another organisation's are `404` to it; its scope, `standard`, `admin`
//! or `operator`, adds key and organisation management, and every operation of the OpenAPI
//! document states the scope it needs, in its description and as `x-dialtone-scope`):
//!
//! | route | what |
//! |---|---|
//! | `POST/GET /v1/trunks`, `GET/PATCH/DELETE /v1/trunks/{id}` | SIP trunks (the password is write-only) |
//! | `POST/GET /v1/numbers`, `GET/DELETE /v1/numbers/{id}` | numbers on trunks |
//! | `POST/GET /v1/agents`, `GET/PATCH/DELETE /v1/agents/{id}` | agents (the providers their `llm`, `stt`, `tts` name must be the organisation's, of a kind that fits) |
//! | `POST/GET /v1/providers`, `GET/PATCH/DELETE /v1/providers/{id}` | language and speech providers (the API key is write-only) |
//! | `POST /v1/calls` (with `Idempotency-Key`), `GET /v1/calls` (filters `agent_id`, `status`, `to`, `created_after`, `created_before`; `limit` ≤ 200, `cursor`), `GET /v1/calls/{id}`, `POST /v1/calls/{id}/hangup`, `POST /v1/calls/{id}/transfer`, `POST /v1/calls/{id}/result` | calls |
//! | `GET/DELETE /v1/calls/{id}/recording` | the call's recording: the file, streamed, with byte ranges (`Range`, `206`, `416`); removed from the store and the record |
//! | `GET/POST /2010-04-01/Accounts/{org_id}/Calls/{call_id}.json` (basic auth, the API key as the password; `Status=completed` hangs up) | the Twilio REST shim for Media Streams apps that end calls through it |
//! | `GET /v1/calls/{id}/events`, `POST /v1/events/{id}/redeliver` | a call's webhook events and their delivery state; queue one again |
//! | `POST/GET /v1/organizations`, `GET/PATCH/DELETE /v1/organizations/{id}` (`disabled`) | tenants (`operator` keys only) |
//! | `POST/GET /v1/organizations/{id}/keys`, `DELETE /v1/organizations/{id}/keys/{key_id}` | an organisation's API keys: issue (scope, expiry), list, revoke (`operator` keys, or the organisation's `admin` keys) |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document of all of the above (no auth) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | liveness, readiness (no auth), Prometheus (operator key; or without one on `DIALTONE_METRICS_ADDR`) |
//!
//! Parts: [`error`] (the one error shape), `auth` (keys, ownership, scopes), `body`
//! (bodies read into the model's types), one module per resource — each holds the service
//! functions that both faces call and the HTTP handlers over them — and [`grpc`], the same
//! service functions behind the gRPC services.
//!
//! Every error has one shape: `{"error": {"code", "message", "field"}}` with the status the rule
//! calls for (400 naming the field, 401, 403 naming the scope needed, 404, 409, 413, 503).
//! Request bodies are parsed strictly: a field this API does not know is a 400 naming it, never
//! silently ignored.

mod agents;
mod auth;
mod body;
mod calls;
pub mod error;
mod error_shape;
mod events;
pub mod grpc;
mod health;
mod numbers;
pub mod openapi;
mod organizations;
mod providers;
mod recordings;
mod trunks;
mod twilio;
mod views;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dialtone_engine::Engine;
use dialtone_engine::outbound::{self, OutboundError};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use dialtone_proto as proto;
pub use error::ApiError;

/// Shared state of the API.
#[derive(Clone)]
pub struct ApiState {
    /// The engine (and through it, storage, where API keys are checked).
    pub engine: Arc<Engine>,
    /// Which loopback, private and link-local addresses tenants' URLs may point at.
    pub private_destinations: outbound::PrivateDestinations,
    /// Renders the Prometheus metrics page for `GET /metrics`.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("private_destinations", &self.private_destinations)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// The router with every route, and the OpenAPI document of the `/v1` routes (built from the
/// same registrations).
pub fn router(state: ApiState) -> Router {
    let (v1, document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(trunks::create_trunk, trunks::list_trunks))
        .routes(routes!(
            trunks::get_trunk,
            trunks::update_trunk,
            trunks::delete_trunk
        ))
        .routes(routes!(numbers::create_number, numbers::list_numbers))
        .routes(routes!(numbers::get_number, numbers::delete_number))
        .routes(routes!(agents::create_agent, agents::list_agents))
        .routes(routes!(
            agents::get_agent,
            agents::update_agent,
            agents::delete_agent
        ))
        .routes(routes!(
            providers::create_provider,
            providers::list_providers
        ))
        .routes(routes!(
            providers::get_provider,
            providers::update_provider,
            providers::delete_provider
        ))
        .routes(routes!(calls::create_call, calls::list_calls))
        .routes(routes!(calls::get_call))
        .routes(routes!(calls::hangup_call))
        .routes(routes!(calls::transfer_call))
        .routes(routes!(calls::post_result))
        .routes(routes!(
            recordings::get_recording,
            recordings::delete_recording
        ))
        .routes(routes!(events::call_events))
        .routes(routes!(events::redeliver_event))
        .routes(routes!(
            organizations::create_organization,
            organizations::list_organizations
        ))
        .routes(routes!(
            organizations::get_organization,
            organizations::update_organization,
            organizations::delete_organization
        ))
        .routes(routes!(organizations::issue_key, organizations::list_keys))
        .routes(routes!(organizations::revoke_key))
        .split_for_parts();
    let document = Arc::new(openapi::with_scopes(document));
    v1.route(
        "/v1/openapi.json",
        get(move || {
            let document = document.clone();
            async move { Json(document.as_ref().clone()) }
        }),
    )
    .route(
        twilio::CALL_PATH,
        get(twilio::fetch_call).post(twilio::update_call),
    )
    .route("/healthz", get(|| async { "ok" }))
    .route("/readyz", get(health::ready))
    .route("/metrics", get(health::metrics_page))
    .fallback(|uri: axum::http::Uri| async move { ApiError::not_found("route", uri.path()) })
    .layer(axum::middleware::map_response(error_shape::json_errors))
    .with_state(state)
}

/// The metrics address's router: `GET /metrics` without a key, nothing else.
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(health::open_metrics_page))
        .with_state(state)
}

/// `201 Created` with `body`.
fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Refuses a URL a tenant gives at `field` (a webhook receiver, a tool, a brain, a provider's
/// base URL) on a loopback,
/// private or link-local address (cloud metadata included) the operator did not allow: the
/// engine's outbound policy.
async fn public_url(state: &ApiState, field: &str, url: Option<&str>) -> Result<(), ApiError> {
    let Some(url) = url else {
        return Ok(());
    };
    match outbound::vet_url(url, &state.private_destinations).await {
        // A name that does not resolve now may later; delivery vets it again.
        Ok(()) | Err(OutboundError::Unresolved { .. }) => Ok(()),
        Err(OutboundError::Private { host, .. }) => Err(ApiError::invalid(
            field,
            format!(
                "`{field}` points at a private or loopback address ({host}); destinations must be public unless the operator allows them"
            ),
        )),
        Err(e) => Err(ApiError::invalid(field, format!("`{field}`: {e}"))),
    }
}

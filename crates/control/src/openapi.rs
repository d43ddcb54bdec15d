//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`. It is assembled from the same
//! registrations that build the router (`utoipa-axum`), so a route cannot exist without being
//! documented, nor the reverse; the bodies' schemas are the model's own types (the ones the
//! handlers parse and answer with), so no shape is declared twice. This file keeps only what
//! belongs to the HTTP face alone: the error body, the redelivery answer and the security
//! scheme.

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// The one error shape of the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine code: `invalid_request`, `unauthenticated`, `not_found`, `conflict`,
    /// `idempotency_conflict`, `in_use`, `failed_precondition`, `call_ended`, `too_large`,
    /// `rate_limited`, `forbidden`, `unavailable`, `internal`.
    pub code: String,
    /// For people; names the field and the rule.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
}

/// An event queued for delivery again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivery {
    /// The event.
    pub id: Uuid,
    /// Its call.
    pub call_id: Uuid,
    /// `pending`.
    pub state: String,
}

/// Adds the bearer-key security scheme.
#[derive(Debug)]
pub struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document's frame; the paths come from the router's registrations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Dialtone",
        description = "Outbound AI voice calls: trunks, numbers, agents and calls. Every route \
                       needs `Authorization: Bearer <key>`; errors have one shape, `ErrorBody`.",
    ),
    modifiers(&BearerKey),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

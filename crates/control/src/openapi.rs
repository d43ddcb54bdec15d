//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`. It is assembled from the same
//! registrations that build the router (`utoipa-axum`), so a route cannot exist without being
//! documented, nor the reverse; the bodies' schemas are the model's own types (the ones the
//! handlers parse and answer with), so no shape is declared twice. This file keeps only what
//! belongs to the HTTP face alone: the error body, the redelivery answer, the security scheme,
//! and the scope each operation needs ([`with_scopes`]).

use dialtone_model::KeyScope;
use serde::Serialize;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// The operation extension naming the scope a route needs (a [`KeyScope`]).
pub const SCOPE_EXTENSION: &str = "x-dialtone-scope";

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
    /// `rate_limited`, `forbidden`, `organization_disabled`, `unavailable`, `internal`.
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

/// `document` with every operation stating the scope it needs: the one its handler declares
/// (`extensions(("x-dialtone-scope" = json!(KeyScope::…)))`), else `standard` — any key, on
/// its own organisation's resources. The scope goes into the operation's description too.
pub fn with_scopes(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            state_scope(operation);
        }
    }
    document
}

/// Writes the operation's scope into its extensions and description.
fn state_scope(operation: &mut Operation) {
    let extensions = operation.extensions.get_or_insert_with(Extensions::default);
    let scope = extensions
        .get(SCOPE_EXTENSION)
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(KeyScope::Standard);
    extensions.insert(SCOPE_EXTENSION.to_owned(), scope.as_str().into());
    let sentence = match scope {
        KeyScope::Standard => {
            "Scope: `standard` — any key, on its own organisation's resources (another \
             organisation's are `404`)."
        }
        KeyScope::Admin => {
            "Scope: `admin` — an `admin` key of the organisation in the path, or an `operator` \
             key; any other key is `403`."
        }
        KeyScope::Operator => "Scope: `operator` — operator keys only; any other key is `403`.",
    };
    operation.description = Some(match operation.description.take() {
        Some(text) if !text.is_empty() => format!("{text}\n\n{sentence}"),
        _ => sentence.to_owned(),
    });
}

/// The document's frame; the paths come from the router's registrations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Dialtone",
        description = "Outbound AI voice calls: trunks, numbers, agents, providers and calls. \
                       Every route needs `Authorization: Bearer <key>` and states the key scope \
                       it needs (`standard`, `admin` or `operator`; `x-dialtone-scope`); errors \
                       have one shape, `ErrorBody`.",
    ),
    modifiers(&BearerKey),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

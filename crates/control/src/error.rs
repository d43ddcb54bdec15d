//! The API's one error: status, machine code, message and the field at fault, and how the
//! storage's, the engine's and the model's errors become it.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dialtone_engine::EngineError;
use dialtone_model::FieldError;
use dialtone_storage::StorageError;

use crate::openapi::{ErrorBody, ErrorDetail};

/// An API error: status, machine code, message, and the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
    /// Seconds until a retry can succeed (429: sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "invalid_request",
            message: message.into(),
            field: Some(field.to_owned()),
            retry_after: None,
        }
    }

    pub(crate) fn not_found(entity: &str, id: impl std::fmt::Display) -> Self {
        Self {
            status: 404,
            code: "not_found",
            message: format!("{entity} {id} not found"),
            field: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(v) = header::HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound { entity, id } => ApiError::not_found(entity, id),
            StorageError::Conflict {
                entity: "dispatch",
                field,
            } => ApiError {
                status: 409,
                code: "idempotency_conflict",
                message: "this Idempotency-Key was already used with a different request body"
                    .into(),
                field: Some(field.to_owned()),
                retry_after: None,
            },
            StorageError::InUse { .. } => ApiError {
                status: 409,
                code: "in_use",
                message: e.to_string(),
                field: None,
                retry_after: None,
            },
            StorageError::ProviderInUse { action, .. } => ApiError {
                status: 409,
                code: "in_use",
                message: e.to_string(),
                field: (action == "renamed").then(|| "name".to_owned()),
                retry_after: None,
            },
            StorageError::Conflict { entity, field } => ApiError {
                status: 409,
                code: "conflict",
                message: format!("a {entity} with this {field} already exists"),
                field: Some(field.to_owned()),
                retry_after: None,
            },
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError {
                    status: 500,
                    code: "internal",
                    message: "storage failure".into(),
                    field: None,
                    retry_after: None,
                }
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::AgentNotFound { agent_id } => ApiError::not_found("agent", agent_id),
            EngineError::CallNotFound { call_id } => ApiError::not_found("call", call_id),
            EngineError::FromNumberNotAttached { .. } => ApiError::invalid("from_number", message),
            EngineError::MissingContextKey { .. } => ApiError::invalid("context", message),
            EngineError::InvalidResult(_) => ApiError::invalid("result", message),
            EngineError::AgentProvider { field, .. } => ApiError {
                status: 409,
                code: "failed_precondition",
                field: Some(field.clone()),
                message,
                retry_after: None,
            },
            EngineError::NoCallerId { .. } | EngineError::BrainUnavailable { .. } => ApiError {
                status: 409,
                code: "failed_precondition",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::OrganizationDisabled { .. } => ApiError {
                status: 403,
                code: "organization_disabled",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::CallEnded { .. } => ApiError {
                status: 409,
                code: "call_ended",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::CallNotInProgress { .. } => ApiError {
                status: 409,
                code: "not_in_progress",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::TransferUnderWay { .. } => ApiError {
                status: 409,
                code: "transfer_under_way",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::InvalidTransfer(error) => error.into(),
            EngineError::RateLimited { retry_after, .. } => ApiError {
                status: 429,
                code: "rate_limited",
                message,
                field: None,
                // Whole seconds, rounded up: a client that waits that long gets through.
                retry_after: Some(retry_after.as_millis().div_ceil(1000).max(1) as u64),
            },
            EngineError::ShuttingDown
            | EngineError::SipStopped
            | EngineError::LeaseLost
            | EngineError::OwnerUnreachable { .. } => ApiError {
                status: 503,
                code: "unavailable",
                message,
                field: None,
                retry_after: None,
            },
            EngineError::Storage(s) => s.into(),
            _ => ApiError {
                status: 500,
                code: "internal",
                message,
                field: None,
                retry_after: None,
            },
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        if e.too_large {
            Self {
                status: 413,
                code: "too_large",
                message: e.message,
                field: Some(e.field),
                retry_after: None,
            }
        } else {
            Self::invalid(&e.field, e.message)
        }
    }
}

//! Liveness and readiness (no auth), and the Prometheus page: on the API for operator keys, and
//! without a key on the metrics address when the operator asks for one.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dialtone_engine::EngineError;

use crate::auth::{authorize, operator_only};
use crate::{ApiError, ApiState};

/// `GET /metrics` on the API: an operator key's only (the metrics describe every organisation).
pub(crate) async fn metrics_page(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let caller = match authorize(&state, &headers).await {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = operator_only(&caller, "reading the metrics") {
        return refused.into_response();
    }
    open_metrics_page(State(state)).await
}

/// `GET /metrics` on the metrics address: no key (that address is for a private network).
pub(crate) async fn open_metrics_page(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Ready when storage answers, the SIP user agent runs and calls are taken (not draining, and
/// the node holds its lease).
pub(crate) async fn ready(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    state.engine.storage().ping().await?;
    if !state.engine.sip_running().await {
        return Err(EngineError::SipStopped.into());
    }
    if !state.engine.is_accepting() {
        return Err(EngineError::ShuttingDown.into());
    }
    if !state.engine.holds_lease() {
        return Err(EngineError::LeaseLost.into());
    }
    Ok("ready")
}

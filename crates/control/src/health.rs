//! Liveness, readiness and the Prometheus page (no auth).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dialtone_engine::EngineError;

use crate::{ApiError, ApiState};

pub(crate) async fn metrics_page(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Ready when storage answers, the SIP user agent runs and calls are taken (not draining).
pub(crate) async fn ready(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    state.engine.storage().ping().await?;
    if !state.engine.sip_running().await {
        return Err(EngineError::SipStopped.into());
    }
    if !state.engine.is_accepting() {
        return Err(EngineError::ShuttingDown.into());
    }
    Ok("ready")
}

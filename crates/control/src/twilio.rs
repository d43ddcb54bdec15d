//! The Twilio REST shim: the one call of Twilio's REST API that Media Streams apps make to end
//! their calls, `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with the form
//! body `Status=completed`, and the `GET` of the same resource. `AccountSid` is the
//! organisation's id and `CallSid` the call's (what the stream's `start` names); HTTP basic
//! auth carries an API key as the password (the user name is not checked: Twilio's clients
//! put the account or key SID there). The answer is shaped like Twilio's call resource
//! (`sid`, `account_sid`, `status`, …). A wrong key is `401`, another organisation's call
//! `404`; what Dialtone cannot do through this shim (`Twiml`, `Url`: the agent runs the
//! call) is a `400` naming the parameter.
//!
//! Refusals are shaped like Twilio's own ([`TwilioError`]): `{"code", "message", "more_info",
//! "status"}` with Twilio's error code for the status, which Twilio's client libraries read
//! into their exceptions; `details` adds Dialtone's code and the field at fault.

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dialtone_model::{CallStatus, Direction};
use dialtone_storage::{Call, KeyOwner};
use serde::Serialize;

use crate::auth::{authenticate, own};
use crate::{ApiError, ApiState};

/// The route (axum's syntax); `{call}` holds `<CallSid>.json`.
pub(crate) const CALL_PATH: &str = "/2010-04-01/Accounts/{account}/Calls/{call}";

/// What Twilio's call resource holds that an app reads.
#[derive(Debug, Serialize)]
pub(crate) struct CallResource {
    sid: String,
    account_sid: String,
    status: &'static str,
    to: String,
    from: String,
    direction: &'static str,
    uri: String,
}

/// A refusal in Twilio's shape (an [`ApiError`] underneath: the same status and message).
#[derive(Debug)]
pub(crate) struct TwilioError(ApiError);

impl From<ApiError> for TwilioError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

/// Twilio's error code for an HTTP status of the shim's refusals.
fn twilio_code(status: u16) -> u32 {
    match status {
        400 => 20001,
        401 => 20003,
        403 => 20403,
        404 => 20404,
        429 => 20429,
        _ => 20500,
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let ApiError {
            status,
            code,
            message,
            field,
            retry_after,
        } = self.0;
        let twilio = twilio_code(status);
        let body = serde_json::json!({
            "code": twilio,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{twilio}"),
            "status": status,
            "details": {"dialtone_code": code, "field": field},
        });
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// Twilio's name for a call status.
fn twilio_status(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Queued | CallStatus::Dialing => "queued",
        CallStatus::Ringing => "ringing",
        CallStatus::InProgress => "in-progress",
        CallStatus::Completed => "completed",
        CallStatus::Busy => "busy",
        CallStatus::NoAnswer => "no-answer",
        CallStatus::Failed => "failed",
        CallStatus::Canceled => "canceled",
    }
}

fn resource(call: &Call) -> CallResource {
    let (sid, account_sid) = (call.id.to_string(), call.org_id.to_string());
    CallResource {
        uri: format!("/2010-04-01/Accounts/{account_sid}/Calls/{sid}.json"),
        sid,
        account_sid,
        status: twilio_status(call.status),
        to: call.to.clone(),
        from: call.from_number.clone(),
        direction: match call.direction {
            Direction::Outbound => "outbound-api",
            Direction::Inbound => "inbound",
        },
    }
}

/// The key in a basic `Authorization` header (its password).
fn basic_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (_, password) = decoded.split_once(':')?;
    Some(password.to_owned())
}

/// Who the request speaks for (401 without a good key) and the call it names, which must be
/// the organisation's (404 otherwise, as for one that does not exist).
async fn owned_call(
    state: &ApiState,
    headers: &HeaderMap,
    account: &str,
    call: &str,
) -> Result<(KeyOwner, Call), ApiError> {
    let key = basic_key(headers);
    let caller = authenticate(state, key.map(|k| format!("Bearer {k}")).as_deref()).await?;
    let sid = call
        .strip_suffix(".json")
        .ok_or_else(|| ApiError::not_found("call", call))?;
    if account != caller.org_id.to_string() {
        return Err(ApiError::not_found("call", sid));
    }
    let found = own::<Call>(state, &caller, sid).await?;
    Ok((caller, found))
}

/// `GET …/Calls/{CallSid}.json`: the call.
pub(crate) async fn fetch_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((account, call)): Path<(String, String)>,
) -> Result<Json<CallResource>, TwilioError> {
    let (_, call) = owned_call(&state, &headers, &account, &call).await?;
    Ok(Json(resource(&call)))
}

/// `POST …/Calls/{CallSid}.json`: `Status=completed` (or `canceled`) hangs up; a call that
/// already ended is answered as it stands.
pub(crate) async fn update_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((account, call)): Path<(String, String)>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Json<CallResource>, TwilioError> {
    let (_, call) = owned_call(&state, &headers, &account, &call).await?;
    let Form(params) = form.map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the body must be a form (application/x-www-form-urlencoded): {e}"),
        )
    })?;
    let mut hang_up = false;
    for (name, value) in &params {
        match name.as_str() {
            "Status" if value == "completed" || value == "canceled" => hang_up = true,
            "Status" => {
                return Err(ApiError::invalid(
                    "Status",
                    "`Status` must be \"completed\" or \"canceled\" (hang up)",
                )
                .into());
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!(
                        "`{other}` is not supported: Dialtone runs the call's agent; this shim only hangs up (`Status=completed`)"
                    ),
                )
                .into());
            }
        }
    }
    if !hang_up {
        return Err(
            ApiError::invalid("Status", "`Status` is required: \"completed\" hangs up").into(),
        );
    }
    if !call.status.is_final() {
        match state.engine.hangup(call.id).await {
            Ok(()) => {}
            // It ended meanwhile: answered as it stands.
            Err(dialtone_engine::EngineError::CallEnded { .. }) => {}
            Err(error) => return Err(ApiError::from(error).into()),
        }
    }
    let call = state
        .engine
        .storage()
        .get_call(call.id)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(resource(&call)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn shaped(error: ApiError) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = TwilioError::from(error).into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    /// A refusal reads as Twilio's: its code for the status, the message, where its code is
    /// documented, the status; Dialtone's own code and field under `details`.
    #[tokio::test]
    async fn a_refusal_has_twilios_shape_and_names_the_field() {
        let (status, _, body) =
            shaped(ApiError::invalid("Twiml", "`Twiml` is not supported")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            serde_json::json!({
                "code": 20001,
                "message": "`Twiml` is not supported",
                "more_info": "https://www.twilio.com/docs/errors/20001",
                "status": 400,
                "details": {"dialtone_code": "invalid_request", "field": "Twiml"},
            })
        );
        let (status, _, body) = shaped(ApiError::not_found("call", "x")).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::NOT_FOUND, 20404.into())
        );
    }

    /// A refusal to retry later keeps its `Retry-After`.
    #[tokio::test]
    async fn a_rate_limited_refusal_keeps_its_retry_after() {
        let error = ApiError {
            status: 429,
            code: "rate_limited",
            message: "too many requests".into(),
            field: None,
            retry_after: Some(3),
        };
        let (status, headers, body) = shaped(error).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "3");
        assert_eq!(body["code"], 20429);
    }
}

//! `GET /v1/calls/{id}/recording` (the file, streamed, with byte ranges) and `DELETE` (the
//! file removed from the store and taken off the record). Another organisation's call, a call
//! without a recording, or a node with recording not set up: 404.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dialtone_model::RecordingView;
use dialtone_storage::{Call, KeyOwner, StoredRange};
use tokio::io::AsyncReadExt;

use crate::auth::{authorize, own};
use crate::openapi::ErrorBody;
use crate::{ApiError, ApiState};

/// Bytes sent per chunk of a streamed recording.
const CHUNK: usize = 64 * 1024;

/// What a `Range` header asks of a file of `total` bytes (RFC 9110 §14.1.2): one range
/// `start..=end`, or the whole file (no header, a unit other than bytes, or several ranges:
/// a server may ignore those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// Everything.
    Whole,
    /// `start..=end`, within the file.
    Part(u64, u64),
    /// A range the file cannot satisfy (416).
    Unsatisfiable,
}

/// Reads a `Range` header against a file of `total` bytes.
pub(crate) fn wanted(range: Option<&str>, total: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Unsatisfiable;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), number(first), number(last)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(suffix)) if suffix > 0 && total > 0 => {
            Wanted::Part(total.saturating_sub(suffix), total - 1)
        }
        (false, Some(start), end) if start < total && (last.is_empty() || end.is_some()) => {
            match end {
                Some(end) if end < start => Wanted::Unsatisfiable,
                Some(end) => Wanted::Part(start, end.min(total - 1)),
                None => Wanted::Part(start, total - 1),
            }
        }
        _ => Wanted::Unsatisfiable,
    }
}

/// The recording of the caller's call `id`.
async fn recording_of(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<RecordingView, ApiError> {
    let call = own::<Call>(state, caller, id).await?;
    match (call.recording, state.engine.recordings()) {
        (Some(recording), Some(_)) => Ok(recording),
        _ => Err(ApiError::not_found("recording of call", call.id)),
    }
}

#[utoipa::path(get, path = "/v1/calls/{id}/recording", tag = "calls", params(("id" = String, Path, description = "UUID"), ("Range" = Option<String>, Header, description = "one byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`")), responses((status = 200, description = "the recording (`audio/wav`)", content_type = "audio/wav", body = Vec<u8>), (status = 206, description = "the range asked for, with `Content-Range`", content_type = "audio/wav", body = Vec<u8>), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such call, not this organisation's, or no recording (yet, or deleted)", body = ErrorBody), (status = 416, description = "the range is outside the file; `Content-Range: bytes */size`", body = ErrorBody)))]
pub(crate) async fn get_recording(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let recording = recording_of(&state, &caller, &id).await?;
    let Some(recordings) = state.engine.recordings() else {
        return Err(ApiError::not_found("recording of call", id));
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match wanted(range, recording.bytes) {
        Wanted::Whole => (StatusCode::OK, 0, None),
        Wanted::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, Some(end)),
        Wanted::Unsatisfiable => {
            let mut refused = ApiError {
                status: 416,
                code: "range_not_satisfiable",
                message: format!("the recording has {} bytes", recording.bytes),
                field: Some("Range".into()),
                retry_after: None,
            }
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", recording.bytes)) {
                refused.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(refused);
        }
    };
    let StoredRange { reader, total } = recordings.store.read(&recording.id, start, end).await?;
    let last = end
        .unwrap_or(total.saturating_sub(1))
        .min(total.saturating_sub(1));
    let length = (last + 1).saturating_sub(start);
    let body = Body::from_stream(futures_util::stream::unfold(
        reader,
        |mut reader| async move {
            let mut chunk = vec![0u8; CHUNK];
            match reader.read(&mut chunk).await {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok::<_, std::io::Error>(chunk), reader))
                }
                Err(e) => Some((Err(e), reader)),
            }
        },
    ));
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, length)
        .header(header::ETAG, format!("\"{}\"", recording.sha256));
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{last}/{total}"),
        );
    }
    response.body(body).map_err(|e| ApiError {
        status: 500,
        code: "internal",
        message: e.to_string(),
        field: None,
        retry_after: None,
    })
}

#[utoipa::path(delete, path = "/v1/calls/{id}/recording", tag = "calls", params(("id" = String, Path, description = "UUID")), responses((status = 204, description = "the file is removed and the record's `recording` is null"), (status = 401, description = "missing or wrong key", body = ErrorBody), (status = 404, description = "no such call, not this organisation's, or no recording", body = ErrorBody)))]
pub(crate) async fn delete_recording(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&state, &headers).await?;
    let recording = recording_of(&state, &caller, &id).await?;
    if let Some(recordings) = state.engine.recordings() {
        recordings.store.delete(&recording.id).await?;
    }
    let call = own::<Call>(&state, &caller, &id).await?;
    state.engine.storage().clear_recording(call.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_read_as_rfc_9110_says() {
        for (header, expected) in [
            (None, Wanted::Whole),
            (Some("bytes=0-9"), Wanted::Part(0, 9)),
            (Some("bytes=90-"), Wanted::Part(90, 99)),
            (Some("bytes=-10"), Wanted::Part(90, 99)),
            (Some("bytes=-1000"), Wanted::Part(0, 99)),
            (Some("bytes=50-1000"), Wanted::Part(50, 99)),
            (Some("bytes=0-1,5-6"), Wanted::Whole),
            (Some("items=0-1"), Wanted::Whole),
            (Some("bytes=100-"), Wanted::Unsatisfiable),
            (Some("bytes=9-3"), Wanted::Unsatisfiable),
            (Some("bytes=-0"), Wanted::Unsatisfiable),
            (Some("bytes=x-3"), Wanted::Unsatisfiable),
            (Some("bytes=3"), Wanted::Unsatisfiable),
            (Some("bytes=+3-4"), Wanted::Unsatisfiable),
        ] {
            assert_eq!(wanted(header, 100), expected, "{header:?}");
        }
    }

    proptest! {
        #[test]
        fn any_header_gives_a_range_inside_the_file(header in "\\PC{0,24}", total in 0u64..10_000) {
            if let Wanted::Part(start, end) = wanted(Some(&header), total) {
                prop_assert!(start <= end && end < total);
            }
        }

        #[test]
        fn every_range_inside_the_file_is_served(total in 1u64..10_000, a in 0u64..10_000, b in 0u64..10_000) {
            let (start, end) = (a.min(b) % total, a.max(b) % total);
            let (start, end) = (start.min(end), start.max(end));
            prop_assert_eq!(
                wanted(Some(&format!("bytes={start}-{end}")), total),
                Wanted::Part(start, end)
            );
        }
    }
}

//! Who a request speaks for, and what it may touch: API keys (looked up by their SHA-256),
//! resources owned by the caller's organisation (another's are `404`, exactly like one that
//! does not exist), and the admin scope.

use axum::http::{HeaderMap, header};
use dialtone_storage::{KeyOwner, Stored};
use uuid::Uuid;

use crate::{ApiError, ApiState};

/// Who the request's `Authorization` header speaks for.
pub(crate) async fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<KeyOwner, ApiError> {
    authenticate(
        state,
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .await
}

/// Who an `Authorization` value (HTTP header or gRPC metadata) speaks for. Keys are looked up
/// by their SHA-256, so the comparison never touches the secret itself.
pub(crate) async fn authenticate(
    state: &ApiState,
    authorization: Option<&str>,
) -> Result<KeyOwner, ApiError> {
    let unauthenticated = || ApiError {
        status: 401,
        code: "unauthenticated",
        message: "missing or wrong API key (Authorization: Bearer <key>)".into(),
        field: None,
        retry_after: None,
    };
    let key = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| !k.is_empty())
        .ok_or_else(unauthenticated)?;
    state
        .engine
        .storage()
        .key_owner(key)
        .await?
        .ok_or_else(unauthenticated)
}

/// A path's id; one that is not a UUID names nothing (`404`).
pub(crate) fn path_uuid(id: &str, entity: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(entity, id))
}

/// The resource `id` names when it belongs to the caller's organisation (else `404`).
pub(crate) async fn own<T: Stored>(
    state: &ApiState,
    caller: &KeyOwner,
    id: &str,
) -> Result<T, ApiError> {
    let id = path_uuid(id, T::ENTITY)?;
    let found = T::fetch(state.engine.storage(), id).await?;
    if found.org_id() == caller.org_id {
        Ok(found)
    } else {
        Err(ApiError::not_found(T::ENTITY, id))
    }
}

/// Only admin keys manage organisations and keys.
pub(crate) fn admin_only(caller: &KeyOwner) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError {
            status: 403,
            code: "forbidden",
            message: "only an admin key may manage organisations and keys".into(),
            field: None,
            retry_after: None,
        })
    }
}

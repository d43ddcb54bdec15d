//! Who a request speaks for, and what it may touch: API keys (looked up by their SHA-256, in
//! the database on every request, so an expired or revoked key is `401` at once on every
//! node), resources owned by the caller's organisation (another's are `404`, exactly like one
//! that does not exist), and the scopes above `standard`: [`operator_only`] for managing
//! organisations, [`manages_keys_of`] for an organisation's keys. A scope refusal is `403`
//! naming the scope needed.

use axum::http::{HeaderMap, header};
use dialtone_model::KeyScope;
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
        message: "missing, wrong, expired or revoked API key (Authorization: Bearer <key>)".into(),
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

/// A `403` naming what was asked and the scope it needs.
pub(crate) fn forbidden(message: String, field: Option<&str>) -> ApiError {
    ApiError {
        status: 403,
        code: "forbidden",
        message,
        field: field.map(str::to_owned),
        retry_after: None,
    }
}

/// Only `operator` keys do `what` (manage organisations, issue or revoke operator keys).
pub(crate) fn operator_only(caller: &KeyOwner, what: &str) -> Result<(), ApiError> {
    if caller.scope == KeyScope::Operator {
        Ok(())
    } else {
        Err(forbidden(
            format!(
                "{what} needs an `{}` key; this key's scope is `{}`",
                KeyScope::Operator,
                caller.scope
            ),
            None,
        ))
    }
}

/// The keys of `org` are managed by an `operator` key, or an `admin` key of `org` itself.
pub(crate) fn manages_keys_of(caller: &KeyOwner, org: Uuid) -> Result<(), ApiError> {
    match caller.scope {
        KeyScope::Operator => Ok(()),
        KeyScope::Admin if caller.org_id == org => Ok(()),
        scope => Err(forbidden(
            format!(
                "managing the keys of organization {org} needs an `{}` key of that \
                 organization or an `{}` key; this key is `{scope}` in organization {}",
                KeyScope::Admin,
                KeyScope::Operator,
                caller.org_id
            ),
            None,
        )),
    }
}

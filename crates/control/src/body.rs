//! Request bodies: one JSON object within the size limit, read into the model's types (the
//! field at fault named), and PATCH as a merge patch of the top-level fields (a key present
//! replaces, `null` clears) laid over the stored fields before they are read again.

use axum::body::Bytes;
use dialtone_model::MAX_BODY_BYTES;
use dialtone_model::parse::from_value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::ApiError;

/// Parses a body that must be one JSON object within the size limit.
pub(crate) fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError {
            status: 413,
            code: "too_large",
            message: format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            field: None,
            retry_after: None,
        });
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid("body", "body must be a JSON object"));
    };
    Ok(map)
}

/// A body read as `T` (an empty body is `{}`).
pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let map = if body.is_empty() {
        Map::new()
    } else {
        json_object(body)?
    };
    Ok(from_value(Value::Object(map))?)
}

/// `current` with `patch` laid over it (top-level keys; a key given `null` is cleared), read
/// back as `T`, whose fields are `fields` (a key that is not one is refused, `null` or not).
pub(crate) fn patched<T: Serialize + DeserializeOwned>(
    current: &T,
    fields: &[&str],
    patch: Map<String, Value>,
) -> Result<T, ApiError> {
    if let Some(unknown) = patch.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            format!("unknown field `{unknown}`"),
        ));
    }
    let mut fields = match serde_json::to_value(current) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (k, v) in patch {
        if v.is_null() {
            fields.remove(&k);
        } else {
            fields.insert(k, v);
        }
    }
    Ok(from_value(Value::Object(fields))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_bodies_name_the_unknown_field() {
        let err =
            parse::<dialtone_model::KeyFields>(&Bytes::from_static(b"{\"admn\": 1}")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("admn"));
        assert_eq!(err.status, 400);
        let err = json_object(&Bytes::from_static(b"[1]")).unwrap_err();
        assert_eq!(err.message, "body must be a JSON object");
    }

    #[test]
    fn a_patch_replaces_and_null_clears() {
        let current = dialtone_model::TrunkFields {
            name: Some("t".into()),
            host: Some("h".into()),
            realm: Some("r".into()),
            ..Default::default()
        };
        let mut patch = Map::new();
        patch.insert("host".into(), "h2".into());
        patch.insert("realm".into(), Value::Null);
        let after = patched(&current, dialtone_model::TrunkFields::FIELDS, patch).unwrap();
        assert_eq!(after.host.as_deref(), Some("h2"));
        assert_eq!(after.realm, None);
        assert_eq!(after.name.as_deref(), Some("t"));
        let mut unknown = Map::new();
        unknown.insert("bogus".into(), Value::Null);
        let refused = patched(&current, dialtone_model::TrunkFields::FIELDS, unknown);
        assert_eq!(refused.unwrap_err().field.as_deref(), Some("bogus"));
    }
}

//! Reading request bodies into the model's types, with the field at fault named (the request's
//! own field; the message gives the whole path, `tools[0].description`, or for a key the
//! type does not know the key itself): serde through
//! `serde_path_to_error`, its messages put in the API's words (`` `port` must be a
//! non-negative integer``, `` unknown field `x` ``, `` `name` is required``).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A request field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// The field's path (`port`, `amd.greeting_ms`, `tools[0].name`), or `body`.
    pub field: String,
    /// For people: names the field and the rule.
    pub message: String,
    /// Whether the rule broken is a size limit (the API answers 413, not 400).
    pub too_large: bool,
}

impl FieldError {
    /// `field` breaks the rule `message` says.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
            too_large: false,
        }
    }

    /// `field` is over a size limit.
    pub fn too_large(field: &str, message: impl Into<String>) -> Self {
        Self {
            too_large: true,
            ..Self::invalid(field, message)
        }
    }
}

/// Reads `value` as a `T`, naming the field at fault.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let mut error = described(&path, &e.into_inner().to_string());
        // The request field at fault; the message keeps the whole path inside it.
        if let Some(top) = error.field.split(['.', '[']).next() {
            error.field = top.to_owned();
        }
        error
    })
}

/// serde's message for the field at `path`, in the API's words.
fn described(path: &str, serde_message: &str) -> FieldError {
    let quoted = |text: &str| text.split('`').nth(1).map(str::to_owned);
    if let Some(rest) = serde_message.strip_prefix("unknown field ") {
        // The path already ends at the unknown key.
        let name = quoted(rest).unwrap_or_default();
        let field = if path == "." {
            name.clone()
        } else {
            path.to_owned()
        };
        return FieldError::invalid(&field, format!("unknown field `{name}`"));
    }
    if let Some(rest) = serde_message.strip_prefix("missing field ") {
        let name = quoted(rest).unwrap_or_default();
        let field = match path {
            "." | "" => name,
            parent => format!("{parent}.{name}"),
        };
        return FieldError::invalid(&field, format!("`{field}` is required"));
    }
    let field = if path == "." || path.is_empty() {
        "body"
    } else {
        path
    };
    // The model's own rules already speak the API's words.
    if serde_message.starts_with('`') {
        return FieldError::invalid(field, serde_message);
    }
    let expected = serde_message
        .split_once(", expected ")
        .map_or(serde_message, |(_, e)| e);
    let rule = match expected {
        _ if serde_message.starts_with("UUID parsing failed") => "must be a UUID".to_owned(),
        "a string" => "must be a string".to_owned(),
        "a boolean" => "must be true or false".to_owned(),
        "u8" | "u16" | "u32" | "u64" => "must be a non-negative integer".to_owned(),
        "a UUID string" => "must be a UUID".to_owned(),
        "a sequence" => "must be a list".to_owned(),
        "a map" | "a JSON object" => "must be a JSON object".to_owned(),
        other if other.starts_with("struct ") => "must be a JSON object".to_owned(),
        other if other.starts_with("one of ") => format!("must be {other}"),
        _ => format!("is not valid: {serde_message}"),
    };
    FieldError::invalid(field, format!("`{field}` {rule}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `value`, with every field set, serialises to exactly the keys `listed` names.
    pub(crate) fn assert_lists_every_key<T: serde::Serialize>(value: &T, listed: &[&str]) {
        let written = serde_json::to_value(value).unwrap();
        let mut keys: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = listed.to_vec();
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed);
    }
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        port: Option<u16>,
        id: Option<uuid::Uuid>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        on: Option<bool>,
    }

    fn error(body: Value) -> (String, String) {
        let e = from_value::<Sample>(body).unwrap_err();
        (e.field, e.message)
    }

    #[test]
    fn each_kind_of_error_names_its_field() {
        use serde_json::json;
        assert_eq!(
            error(json!({"name": "x", "bogus": 1})),
            ("bogus".into(), "unknown field `bogus`".into())
        );
        assert_eq!(
            error(json!({"port": 1})),
            ("name".into(), "`name` is required".into())
        );
        assert_eq!(
            error(json!({"name": "x", "port": "a"})),
            (
                "port".into(),
                "`port` must be a non-negative integer".into()
            )
        );
        assert_eq!(
            error(json!({"name": "x", "port": 70000})).0,
            "port".to_owned()
        );
        assert_eq!(
            error(json!({"name": "x", "id": "nope"})),
            ("id".into(), "`id` must be a UUID".into())
        );
        assert_eq!(
            error(json!({"name": "x", "inner": {"off": true}})),
            ("inner".into(), "unknown field `off`".into())
        );
        assert_eq!(
            error(json!({"name": "x", "inner": {"on": 3}})),
            ("inner".into(), "`inner.on` must be true or false".into())
        );
        assert_eq!(error(json!("text")).0, "body".to_owned());
    }
}

//! JSON ↔ the protobuf well-known `Struct` and `Value`, as the services and the bridge carry
//! free-form objects (context, metadata, schemas, results). Whole numbers come back as
//! integers; a JSON value that is not an object becomes an empty `Struct`.

use prost_types::value::Kind;
use serde_json::{Map, Value};

/// JSON → `google.protobuf.Value`.
pub fn to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(object_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object → `google.protobuf.Struct`.
pub fn object_to_struct(o: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

/// Any JSON value → `google.protobuf.Struct` (empty unless it is an object).
pub fn to_struct(v: &Value) -> prost_types::Struct {
    v.as_object().map(object_to_struct).unwrap_or_default()
}

/// `google.protobuf.Value` → JSON.
pub fn from_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            Value::from(*n as i64)
        }
        Some(Kind::NumberValue(n)) => Value::from(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// `google.protobuf.Struct` → a JSON object.
pub fn from_struct(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_go_there_and_back() {
        let v = json!({"a": 1, "b": [true, null, "x", 2.5], "c": {"d": -7}});
        assert_eq!(from_struct(&to_struct(&v)), v);
        assert_eq!(to_struct(&json!([1])), prost_types::Struct::default());
    }
}

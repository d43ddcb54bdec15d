//! The agent's `returns` in the form OpenAI's strict Structured Outputs accept, and the
//! model's answer taken back to the agent's own schema.
//!
//! With `strict: true` OpenAI takes a subset of JSON Schema: the root is an object, every
//! object sets `additionalProperties: false` and lists every one of its `properties` in
//! `required`; a property that may be missing is instead required and nullable (`type`
//! `[T, "null"]`, or `anyOf` with `{"type": "null"}`). [`strict_schema`] derives that form
//! (through `properties`, `items`, `anyOf`, `$defs` and `definitions`); it is what goes on the
//! wire. Objects whose extra keys the agent's schema allowed get none in the strict form.
//!
//! The answer is then checked against the agent's own schema, after
//! [`without_optional_nulls`] has left out the nulls the strict form made the model write for
//! the optional properties it had nothing for.

use serde_json::{Map, Value, json};

/// The deepest chain of `$ref`s followed while taking an answer back to the agent's schema
/// (a schema may refer to itself).
const MAX_REF_DEPTH: usize = 32;

/// Schema nodes visited at most while reading one answer: `$ref`s and `anyOf`s that lead to
/// each other could otherwise make the walk exponential in the schema's size.
const MAX_VISITS: usize = 10_000;

/// The strict form of `schema` (see the [module documentation](self)).
pub fn strict_schema(schema: &Value) -> Value {
    let mut strict = schema.clone();
    tighten(&mut strict);
    strict
}

/// `answer` (valid under [`strict_schema`]`(schema)`) without the null values of the
/// properties `schema` did not require: the answer as `schema` itself expects it.
pub fn without_optional_nulls(mut answer: Value, schema: &Value) -> Value {
    let mut visits = MAX_VISITS;
    drop_optional_nulls(&mut answer, schema, schema, 0, &mut visits);
    answer
}

/// Makes every object schema under (and at) `schema` strict.
fn tighten(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    for key in ["$defs", "definitions", "properties"] {
        if let Some(Value::Object(children)) = node.get_mut(key) {
            children.values_mut().for_each(tighten);
        }
    }
    match node.get_mut("items") {
        Some(Value::Array(items)) => items.iter_mut().for_each(tighten),
        Some(items) => tighten(items),
        None => {}
    }
    if let Some(Value::Array(branches)) = node.get_mut("anyOf") {
        branches.iter_mut().for_each(tighten);
    }
    if !is_object_schema(node) {
        return;
    }
    let required = required_names(node);
    let properties = node
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(properties) = properties else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if !required.contains(name) {
            make_nullable(property);
        }
    }
    let every: Vec<Value> = properties.keys().map(|name| json!(name)).collect();
    node.insert("required".into(), Value::Array(every));
    node.insert("additionalProperties".into(), Value::Bool(false));
}

/// The schema describes objects: it has `properties` or its `type` is (or includes) `object`.
fn is_object_schema(node: &Map<String, Value>) -> bool {
    node.contains_key("properties")
        || match node.get("type") {
            Some(Value::String(kind)) => kind == "object",
            Some(Value::Array(kinds)) => kinds.iter().any(|k| k == "object"),
            _ => false,
        }
}

/// The names a schema's `required` lists.
fn required_names(node: &Map<String, Value>) -> Vec<String> {
    node.get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The schema already lets `null` through its `type` or one of its `anyOf` branches.
fn allows_null(node: &Map<String, Value>) -> bool {
    let null_type = |kind: Option<&Value>| match kind {
        Some(Value::String(kind)) => kind == "null",
        Some(Value::Array(kinds)) => kinds.iter().any(|k| k == "null"),
        _ => false,
    };
    null_type(node.get("type"))
        || node
            .get("anyOf")
            .and_then(Value::as_array)
            .is_some_and(|branches| branches.iter().any(|b| null_type(b.get("type"))))
}

/// Lets `null` through `schema` too: added to its `type` (and `enum`), or to its `anyOf`, or
/// the schema becomes one branch of an `anyOf` whose other is `{"type": "null"}`.
fn make_nullable(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    if allows_null(node) {
        return;
    }
    let typed = !node.contains_key("const") && !node.contains_key("$ref");
    match node.get_mut("type") {
        Some(Value::String(kind)) if typed => {
            let kind = std::mem::take(kind);
            node.insert("type".into(), json!([kind, "null"]));
            if let Some(Value::Array(values)) = node.get_mut("enum") {
                values.push(Value::Null);
            }
            return;
        }
        Some(Value::Array(kinds)) if typed => {
            kinds.push(json!("null"));
            if let Some(Value::Array(values)) = node.get_mut("enum") {
                values.push(Value::Null);
            }
            return;
        }
        _ => {}
    }
    if node.len() == 1
        && let Some(Value::Array(branches)) = node.get_mut("anyOf")
    {
        branches.push(json!({"type": "null"}));
        return;
    }
    let original = std::mem::take(node);
    node.insert(
        "anyOf".into(),
        json!([Value::Object(original), {"type": "null"}]),
    );
}

/// Drops, in `value` read under `schema`, the nulls of properties `schema` does not require
/// (`root` resolves `$ref`s), visiting at most `visits` more schema nodes.
fn drop_optional_nulls(
    value: &mut Value,
    schema: &Value,
    root: &Value,
    depth: usize,
    visits: &mut usize,
) {
    let Some(node) = schema.as_object() else {
        return;
    };
    if depth > MAX_REF_DEPTH || *visits == 0 {
        return;
    }
    *visits -= 1;
    if let Some(target) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve(root, r))
    {
        drop_optional_nulls(value, target, root, depth + 1, visits);
    }
    if let Some(branch) = node
        .get("anyOf")
        .and_then(Value::as_array)
        .and_then(|branches| branches.iter().find(|b| fits_shape(value, b, root)))
    {
        drop_optional_nulls(value, branch, root, depth + 1, visits);
    }
    match value {
        Value::Object(fields) => {
            let Some(properties) = node.get("properties").and_then(Value::as_object) else {
                return;
            };
            let required = required_names(node);
            fields.retain(|name, field| {
                !(field.is_null() && properties.contains_key(name) && !required.contains(name))
            });
            for (name, field) in fields.iter_mut() {
                if let Some(property) = properties.get(name) {
                    drop_optional_nulls(field, property, root, depth, visits);
                }
            }
        }
        Value::Array(elements) => match node.get("items") {
            Some(Value::Array(items)) => {
                for (element, item) in elements.iter_mut().zip(items) {
                    drop_optional_nulls(element, item, root, depth, visits);
                }
            }
            Some(items) => {
                for element in elements {
                    drop_optional_nulls(element, items, root, depth, visits);
                }
            }
            None => {}
        },
        _ => {}
    }
}

/// The schema a local `$ref` (`#/$defs/…`, `#/definitions/…`, any JSON pointer into the root)
/// names.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    root.pointer(reference.strip_prefix('#')?)
}

/// `branch` (of an `anyOf`) is the one `value` was written under, as far as dropping nulls
/// goes: an object schema naming every key of an object, or an array schema for an array.
fn fits_shape(value: &Value, branch: &Value, root: &Value) -> bool {
    let branch = branch
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve(root, r))
        .unwrap_or(branch);
    match value {
        Value::Object(fields) => branch
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|properties| fields.keys().all(|k| properties.contains_key(k))),
        Value::Array(_) => branch.get("items").is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use dialtone_test_support::openai::strict_schema_violation;
    use proptest::prelude::*;

    #[test]
    fn optional_properties_become_required_and_nullable_and_objects_closed() {
        let schema = json!({
            "type": "object",
            "properties": {
                "interested": {"type": "boolean"},
                "budget": {"type": "number", "description": "In dollars"},
                "tier": {"type": "string", "enum": ["gold", "silver"]},
                "address": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                    "required": ["city"],
                },
                "callback": {"$ref": "#/$defs/slot"},
                "notes": {"type": ["string", "null"]},
            },
            "required": ["interested"],
            "$defs": {"slot": {"type": "object", "properties": {"day": {"type": "string"}}}},
        });
        let strict = strict_schema(&schema);
        assert_eq!(
            strict,
            json!({
                "type": "object",
                "properties": {
                    "interested": {"type": "boolean"},
                    "budget": {"type": ["number", "null"], "description": "In dollars"},
                    "tier": {"type": ["string", "null"], "enum": ["gold", "silver", null]},
                    "address": {
                        "type": ["object", "null"],
                        "properties": {
                            "city": {"type": "string"},
                            "zip": {"type": ["string", "null"]},
                        },
                        "required": ["city", "zip"],
                        "additionalProperties": false,
                    },
                    "callback": {"anyOf": [{"$ref": "#/$defs/slot"}, {"type": "null"}]},
                    "notes": {"type": ["string", "null"]},
                },
                "required": ["address", "budget", "callback", "interested", "notes", "tier"],
                "additionalProperties": false,
                "$defs": {"slot": {
                    "type": "object",
                    "properties": {"day": {"type": ["string", "null"]}},
                    "required": ["day"],
                    "additionalProperties": false,
                }},
            })
        );
        assert_eq!(strict_schema_violation(&strict), None);
        assert!(strict_schema_violation(&schema).is_some());
    }

    #[test]
    fn arrays_any_of_and_bare_objects_are_made_strict() {
        let schema = json!({
            "type": "object",
            "properties": {
                "slots": {"type": "array", "items": {
                    "type": "object", "properties": {"day": {"type": "string"}},
                    "additionalProperties": true,
                }},
                "value": {"anyOf": [
                    {"type": "string"},
                    {"type": "object", "properties": {"n": {"type": "integer"}}},
                ]},
                "extra": {"type": "object"},
            },
            "required": ["slots", "value", "extra"],
        });
        let strict = strict_schema(&schema);
        assert_eq!(strict_schema_violation(&strict), None, "{strict:#}");
        assert_eq!(
            strict["properties"]["slots"]["items"]["additionalProperties"],
            false
        );
        assert_eq!(
            strict["properties"]["value"]["anyOf"][1]["required"],
            json!(["n"])
        );
        assert_eq!(
            strict["properties"]["extra"],
            json!({"type": "object", "properties": {}, "required": [],
                   "additionalProperties": false})
        );
        // An already strict schema is its own strict form.
        assert_eq!(strict_schema(&strict), strict);
    }

    #[test]
    fn the_nulls_of_optional_properties_are_left_out_of_the_answer() {
        let schema = json!({
            "type": "object",
            "properties": {
                "interested": {"type": ["boolean", "null"]},
                "budget": {"type": "number"},
                "slots": {"type": "array", "items": {"$ref": "#/definitions/slot"}},
            },
            "required": ["interested"],
            "definitions": {"slot": {
                "type": "object",
                "properties": {"day": {"type": "string"}, "hour": {"type": "integer"}},
                "required": ["day"],
            }},
        });
        let answer = json!({
            "interested": null,
            "budget": null,
            "slots": [{"day": "monday", "hour": null}, {"day": null, "hour": 9}],
        });
        assert_eq!(
            without_optional_nulls(answer, &schema),
            json!({
                "interested": null,
                "slots": [{"day": "monday"}, {"day": null, "hour": 9}],
            }),
            "required nulls stay (they may be wrong: validation says so)"
        );
    }

    /// Definitions that lead to each other both by `$ref` and by `anyOf` would walk every path
    /// through them (exponential in their number); the walk stops at its budget of visits.
    #[test]
    fn a_schema_of_chained_references_is_walked_in_bounded_time() {
        let mut definitions = serde_json::Map::new();
        for n in 0..40 {
            let next = format!("#/definitions/d{}", n + 1);
            definitions.insert(
                format!("d{n}"),
                json!({"$ref": next, "anyOf": [{"$ref": next}], "properties": {"x": {}}}),
            );
        }
        definitions.insert(
            "d40".into(),
            json!({"type": "object", "properties": {"x": {}}}),
        );
        let schema = json!({"$ref": "#/definitions/d0", "definitions": definitions});
        let started = std::time::Instant::now();
        let answer = without_optional_nulls(json!({"x": null}), &schema);
        assert!(answer.is_object());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// A schema and a value valid under it, made together.
    #[derive(Debug, Clone)]
    enum Shape {
        Text(String),
        Number(i32),
        Flag(bool),
        Choice(String),
        List(Vec<Shape>, Box<Shape>),
        /// Properties: name, shape, required, present in the value (always, when required).
        Object(Vec<(String, Shape, bool, bool)>),
    }

    impl Shape {
        fn schema(&self) -> Value {
            match self {
                Self::Text(_) => json!({"type": "string"}),
                Self::Number(_) => json!({"type": "integer"}),
                Self::Flag(_) => json!({"type": "boolean"}),
                Self::Choice(_) => json!({"type": "string", "enum": ["a", "b", "c"]}),
                Self::List(_, item) => json!({"type": "array", "items": item.schema()}),
                Self::Object(fields) => {
                    let mut properties = Map::new();
                    let mut required = Vec::new();
                    for (name, shape, is_required, _) in fields {
                        properties.insert(name.clone(), shape.schema());
                        if *is_required {
                            required.push(json!(name));
                        }
                    }
                    json!({"type": "object", "properties": properties, "required": required})
                }
            }
        }

        /// The value; `strict`: with the missing optional properties as nulls.
        fn value(&self, strict: bool) -> Value {
            match self {
                Self::Text(s) | Self::Choice(s) => json!(s),
                Self::Number(n) => json!(n),
                Self::Flag(b) => json!(b),
                Self::List(elements, _) => elements.iter().map(|e| e.value(strict)).collect(),
                Self::Object(fields) => {
                    let mut object = Map::new();
                    for (name, shape, required, present) in fields {
                        if *required || *present {
                            object.insert(name.clone(), shape.value(strict));
                        } else if strict {
                            object.insert(name.clone(), Value::Null);
                        }
                    }
                    Value::Object(object)
                }
            }
        }
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let leaf = prop_oneof![
            "[a-z ]{0,8}".prop_map(Shape::Text),
            any::<i32>().prop_map(Shape::Number),
            any::<bool>().prop_map(Shape::Flag),
            "[abc]".prop_map(Shape::Choice),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                inner.clone().prop_flat_map(|item| {
                    // Elements of the item's own type: the same shape repeated.
                    (0usize..3).prop_map(move |n| {
                        Shape::List(vec![item.clone(); n], Box::new(item.clone()))
                    })
                }),
                proptest::collection::btree_map(
                    "[a-z]{1,6}",
                    (inner, any::<bool>(), any::<bool>()),
                    0..5
                )
                .prop_map(|fields| Shape::Object(
                    fields
                        .into_iter()
                        .map(|(name, (shape, required, present))| {
                            (name, shape, required, present)
                        })
                        .collect()
                )),
            ]
        })
    }

    fn object_shape() -> impl Strategy<Value = Shape> {
        proptest::collection::btree_map("[a-z]{1,6}", (shape(), any::<bool>(), any::<bool>()), 0..5)
            .prop_map(|fields| {
                Shape::Object(
                    fields
                        .into_iter()
                        .map(|(name, (shape, required, present))| (name, shape, required, present))
                        .collect(),
                )
            })
    }

    proptest! {
        /// The strict form passes OpenAI's rules; an answer to it (optional properties as
        /// nulls) is valid under it, and without those nulls it is the answer the agent's own
        /// schema takes.
        #[test]
        fn the_strict_form_is_accepted_and_its_answers_come_back_valid(shape in object_shape()) {
            let schema = shape.schema();
            let strict = strict_schema(&schema);
            prop_assert_eq!(strict_schema_violation(&strict), None);
            let answer = shape.value(true);
            let strict_validator = jsonschema::validator_for(&strict).unwrap();
            prop_assert!(strict_validator.is_valid(&answer), "{:#} under {:#}", answer, strict);
            let back = without_optional_nulls(answer, &schema);
            prop_assert_eq!(&back, &shape.value(false));
            prop_assert!(jsonschema::is_valid(&schema, &back));
        }
    }
}

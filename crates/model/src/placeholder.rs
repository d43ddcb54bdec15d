//! `{{context.KEY}}` placeholders in an agent's instructions and first message, filled from
//! the call's `context`. `KEY` may be a dotted path into nested objects
//! (`{{context.customer.name}}`); spaces inside the braces are allowed. A string value goes in
//! as it is, any other value as compact JSON. A placeholder whose key the context lacks is an
//! error naming the key: the dispatch is refused rather than the agent saying "{{context…}}".

use serde_json::Value;

/// The first placeholder in `text` whose key `context` lacks.
pub fn missing_key(text: &str, context: &Value) -> Option<String> {
    placeholders(text).find_map(|(_, key)| lookup(context, key).is_none().then(|| key.to_owned()))
}

/// `text` with every placeholder filled from `context`; a missing key is left as it is
/// (dispatch refuses those first, with [`missing_key`]).
pub fn fill(text: &str, context: &Value) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (span, key) in placeholders(text) {
        out.push_str(text.get(last..span.start).unwrap_or_default());
        match lookup(context, key) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => out.push_str(text.get(span.clone()).unwrap_or_default()),
        }
        last = span.end;
    }
    out.push_str(text.get(last..).unwrap_or_default());
    out
}

/// Each placeholder's byte range and key.
fn placeholders(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, &str)> {
    let mut from = 0;
    std::iter::from_fn(move || {
        loop {
            let open = from + text.get(from..)?.find("{{")?;
            let close = open + text.get(open..)?.find("}}")?;
            let inner = text.get(open + 2..close)?.trim();
            if let Some(key) = inner.strip_prefix("context.")
                && !key.is_empty()
                && !key.contains("{{")
            {
                from = close + 2;
                return Some((open..close + 2, key));
            }
            // Not a placeholder: one may still start inside it ("{{ {{context.x}}").
            from = open + 2;
        }
    })
}

fn lookup<'a>(context: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(context, |value, part| value.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_filled_from_the_context() {
        let context = json!({"name": "Sam", "order": {"id": 42}, "tags": ["a"]});
        assert_eq!(
            fill(
                "Hi {{context.name}}, order {{ context.order.id }} {{context.tags}} {{other}}",
                &context
            ),
            "Hi Sam, order 42 [\"a\"] {{other}}"
        );
        assert_eq!(missing_key("{{context.name}}", &context), None);
    }

    #[test]
    fn a_missing_key_is_named() {
        let context = json!({"name": "Sam"});
        assert_eq!(
            missing_key("Hi {{context.name}} about {{context.order.id}}", &context).as_deref(),
            Some("order.id")
        );
        assert_eq!(missing_key("unclosed {{context.x", &context), None);
        assert_eq!(
            missing_key("stray {{ {{context.order}}", &context).as_deref(),
            Some("order")
        );
    }
}

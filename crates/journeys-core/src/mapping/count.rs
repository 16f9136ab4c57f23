//! Counting the mapped fields of a mapping, for the per-step limit (SPEC section 3: at most 100
//! mapped fields per send step).
//!
//! A field is a leaf of the output shape: a literal scalar (or null), or a directive that
//! produces one value (`@path`, `@template`, `@case`, `@replace`, `@json`, `@flatten`). Raw
//! objects and arrays count their contents (empty ones count nothing). Directives that carry
//! an output shape count that shape instead: the item shape of `@arrayPath`, the `mapping` of
//! `@transform`, the objects of `@merge`, the larger branch of `@if`, and the value of
//! `@literal` and `@excludeWhenNull`. Such a directive counts at least one field. Conditions and
//! `@transform`'s intermediate `apply` object do not appear in the output and are not counted.

use serde_json::Value;

use super::compile::MAX_DEPTH;

pub(crate) fn count_fields(mapping: &Value) -> usize {
    count(mapping, 0)
}

fn count(value: &Value, depth: usize) -> usize {
    // Beyond the depth limit the mapping is invalid anyway; stop recursing.
    if depth > MAX_DEPTH {
        return 1;
    }
    match value {
        Value::Object(map) => match map.iter().find(|(key, _)| key.starts_with('@')) {
            Some((name, argument)) => directive(name, argument, depth + 1),
            None => map.values().map(|field| count(field, depth + 1)).sum(),
        },
        Value::Array(items) => items.iter().map(|item| count(item, depth + 1)).sum(),
        _ => 1,
    }
}

fn directive(name: &str, argument: &Value, depth: usize) -> usize {
    let nested = |value: Option<&Value>| value.map_or(0, |value| count(value, depth + 1));
    let fields = match name {
        "@literal" | "@excludeWhenNull" => count(argument, depth + 1),
        "@arrayPath" => match argument.get(1) {
            Some(shape @ Value::Object(fields)) if !fields.is_empty() => count(shape, depth + 1),
            _ => 1,
        },
        "@if" => nested(argument.get("then")).max(nested(argument.get("else"))),
        "@merge" => nested(argument.get("objects")),
        "@transform" => nested(argument.get("mapping")),
        _ => 1,
    };
    fields.max(1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counts_leaves_of_raw_objects_and_arrays() {
        assert_eq!(count_fields(&json!({})), 0);
        assert_eq!(
            count_fields(&json!({"a": 1, "b": {"c": null, "d": [1, 2]}})),
            4
        );
    }

    #[test]
    fn a_value_directive_is_one_field() {
        let mapping = json!({
            "email": {"@path": "$.traits.email"},
            "greeting": {"@template": "Hi {{traits.name}}"},
            "code": {"@case": {"operator": "upper", "value": {"@path": "$.code"}}},
            "kind": "static"
        });
        assert_eq!(count_fields(&mapping), 4);
    }

    #[test]
    fn shaping_directives_count_their_shape() {
        let mapping = json!({
            "items": {"@arrayPath": ["$.products", {"id": {"@path": "$.id"}, "price": {"@path": "$.price"}}]},
            "maybe": {"@if": {"exists": {"@path": "$.a"}, "then": {"x": 1, "y": 2, "z": 3}, "else": "none"}},
            "merged": {"@merge": {"direction": "right", "objects": [{"a": 1}, {"@path": "$.b"}]}},
            "plain": {"@arrayPath": ["$.products"]}
        });
        assert_eq!(count_fields(&mapping), 2 + 3 + 2 + 1);
    }
}

//! `@flatten`: turns nested objects (and, unless `omitArrays`, arrays) into one object whose
//! keys are the joined paths, e.g. `{"a": {"b": 1}}` becomes `{"a.b": 1}`.
//!
//! Follows mapping-kit's `flattenObject`: array elements are keyed by their index, empty
//! objects and arrays vanish, and a value that is not a container flattens to `{"": value}`
//! (mapping-kit's quirk, kept so results match). A missing value flattens to `{}`.

use serde_json::{Map, Value};

pub(crate) fn flatten(
    value: Option<&Value>,
    separator: &str,
    omit_arrays: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(value) = value {
        flatten_into(value, String::new(), separator, omit_arrays, &mut out);
    }
    out
}

fn flatten_into(
    value: &Value,
    prefix: String,
    separator: &str,
    omit_arrays: bool,
    out: &mut Map<String, Value>,
) {
    let child_key = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}{separator}{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                flatten_into(item, child_key(key), separator, omit_arrays, out);
            }
        }
        Value::Array(items) if !omit_arrays => {
            for (index, item) in items.iter().enumerate() {
                flatten_into(
                    item,
                    child_key(&index.to_string()),
                    separator,
                    omit_arrays,
                    out,
                );
            }
        }
        leaf => {
            out.insert(prefix, leaf.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flat(value: &Value, separator: &str, omit_arrays: bool) -> Value {
        Value::Object(flatten(Some(value), separator, omit_arrays))
    }

    #[test]
    fn nested_objects_join_their_keys() {
        let input = json!({"a": {"b": {"c": 1}, "d": 2}});
        assert_eq!(flat(&input, ".", false), json!({"a.b.c": 1, "a.d": 2}));
        assert_eq!(flat(&input, "/", false), json!({"a/b/c": 1, "a/d": 2}));
    }

    #[test]
    fn arrays_are_keyed_by_index_unless_omitted() {
        let input = json!({"a": [{"b": 1}, {"c": 2}]});
        assert_eq!(flat(&input, ".", false), json!({"a.0.b": 1, "a.1.c": 2}));
        assert_eq!(flat(&input, ".", true), input);
        assert_eq!(
            flat(&json!([{"fazz": "bar"}]), ".", false),
            json!({"0.fazz": "bar"})
        );
    }

    #[test]
    fn empty_containers_vanish_and_scalars_get_the_empty_key() {
        assert_eq!(
            flat(&json!({"a": {}, "b": [], "c": null}), ".", false),
            json!({"c": null})
        );
        assert_eq!(flat(&json!("x"), ".", false), json!({"": "x"}));
        assert_eq!(Value::Object(flatten(None, ".", false)), json!({}));
    }
}

//! Rendering a compiled mapping against an input payload.
//!
//! Every node resolves to `None` ("missing", mapping-kit's `undefined`) or a value. Values taken
//! from the input or from literals are borrowed until they land in the output, so lookups and
//! tests such as `@if` do not copy anything.
//!
//! The input is a [`Scope`]: a JSON value, or a [`LazyInput`] that answers path lookups
//! without having been built as a tree (a send's default payload, whose parts are mostly
//! borrowed from the instance and the journey).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::MAX_RENDERED_STRING_BYTES;
use super::error::MappingError;
use super::flatten::flatten;
use super::js;
use super::node::{
    ArrayPathNode, ArraySource, Condition, IfNode, MergeItem, MergeNode, Node, ObjectNode,
    ReplaceNode,
};
use super::path::PathExpr;
use super::template::Template;

type Resolved<'a> = Result<Option<Cow<'a, Value>>, MappingError>;

/// An input that resolves paths itself instead of being a JSON tree, so that building the
/// tree can be skipped when a mapping only reads some of its leaves.
///
/// An implementation stands for one JSON value (the input "as a tree"): `lookup` must give
/// exactly what looking `path` up in that value would give.
pub(crate) trait LazyInput {
    /// The value at `path`, or `None` when the path leads nowhere.
    fn lookup(&self, path: &PathExpr) -> Option<&Value>;
}

/// What a node renders against.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'a> {
    Value(&'a Value),
    Lazy(&'a dyn LazyInput),
}

impl<'a> Scope<'a> {
    pub(crate) fn lookup(self, path: &PathExpr) -> Option<&'a Value> {
        match self {
            Scope::Value(value) => path.lookup(value),
            Scope::Lazy(input) => input.lookup(path),
        }
    }
}

impl Node {
    pub(crate) fn render(&self, input: &Value) -> Result<Option<Value>, MappingError> {
        self.render_in(Scope::Value(input))
    }

    pub(crate) fn render_in(&self, input: Scope<'_>) -> Result<Option<Value>, MappingError> {
        Ok(self.eval(input)?.map(Cow::into_owned))
    }

    fn eval<'a>(&'a self, input: Scope<'a>) -> Resolved<'a> {
        match self {
            Node::Literal(value) => Ok(Some(Cow::Borrowed(value))),
            Node::Object(object) => eval_object(object, input),
            Node::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for node in items {
                    out.push(node.eval(input)?.map_or(Value::Null, Cow::into_owned));
                }
                Ok(Some(Cow::Owned(Value::Array(out))))
            }
            Node::Path(path) => Ok(input.lookup(path).map(Cow::Borrowed)),
            Node::DynamicPath { path, at } => {
                let resolved = path.eval(input)?;
                let text = expect_string(resolved.as_deref(), at)?;
                Ok(input
                    .lookup(&PathExpr::parse_directive(text))
                    .map(Cow::Borrowed))
            }
            Node::Template(template) => Ok(Some(owned_string(template.render(input)))),
            Node::DynamicTemplate { template, at } => {
                let resolved = template.eval(input)?;
                let text = expect_string(resolved.as_deref(), at)?;
                Ok(Some(owned_string(Template::parse(text).render(input))))
            }
            Node::If(node) => eval_if(node, input),
            Node::ArrayPath(node) => eval_array_path(node, input),
            Node::Case { upper, value } => Ok(match value.eval(input)? {
                Some(resolved) => match resolved.as_ref() {
                    Value::String(text) => Some(owned_string(if *upper {
                        text.to_uppercase()
                    } else {
                        text.to_lowercase()
                    })),
                    _ => Some(resolved),
                },
                None => None,
            }),
            Node::Replace(node) => eval_replace(node, input),
            Node::Merge(node) => eval_merge(node, input),
            Node::Transform { apply, mapping } => {
                let new_input = apply
                    .render_in(input)?
                    .unwrap_or_else(|| Value::Object(Map::new()));
                Ok(mapping.render(&new_input)?.map(Cow::Owned))
            }
            Node::Flatten {
                value,
                separator,
                omit_arrays,
            } => {
                let resolved = value.eval(input)?;
                let flat = flatten(resolved.as_deref(), separator, *omit_arrays);
                Ok(Some(Cow::Owned(Value::Object(flat))))
            }
            Node::Json { encode, value, at } => eval_json(*encode, value, at, input),
            Node::ExcludeWhenNull(value) => Ok(match value.eval(input)? {
                None => None,
                Some(resolved) => match resolved.as_ref() {
                    Value::Null => None,
                    Value::Object(_) => {
                        let mut owned = resolved.into_owned();
                        drop_null_fields(&mut owned);
                        Some(Cow::Owned(owned))
                    }
                    _ => Some(resolved),
                },
            }),
        }
    }
}

fn owned_string<'a>(text: String) -> Cow<'a, Value> {
    Cow::Owned(Value::String(text))
}

fn expect_string<'v>(value: Option<&'v Value>, at: &str) -> Result<&'v str, MappingError> {
    match value {
        Some(Value::String(text)) => Ok(text),
        other => Err(MappingError::ExpectedString {
            path: at.to_owned(),
            found: js::type_name(other),
        }),
    }
}

fn eval_object<'a>(object: &'a ObjectNode, input: Scope<'a>) -> Resolved<'a> {
    let Some(shape) = &object.shape else {
        let mut out = Vec::with_capacity(object.fields.len());
        for (key, node) in &object.fields {
            if let Some(value) = node.eval(input)? {
                out.push((key.clone(), value.into_owned()));
            }
        }
        return Ok(Some(Cow::Owned(Value::Object(out.into_iter().collect()))));
    };
    let mut out = shape.clone();
    let mut missing = Vec::new();
    for ((key, slot), (_, node)) in out.iter_mut().zip(&object.fields) {
        match node.eval(input)? {
            Some(value) => *slot = value.into_owned(),
            None => missing.push(key.clone()),
        }
    }
    for key in &missing {
        out.remove(key);
    }
    Ok(Some(Cow::Owned(Value::Object(out))))
}

fn eval_if<'a>(node: &'a IfNode, input: Scope<'a>) -> Resolved<'a> {
    let tested = node.test.eval(input)?;
    let holds = match (node.condition, tested.as_deref()) {
        (_, None | Some(Value::Null)) => false,
        (Condition::Exists, Some(_)) => true,
        (Condition::NotBlank, Some(value)) => value.as_str() != Some(""),
    };
    if holds && node.then_is_test {
        return Ok(tested);
    }
    let branch = if holds { &node.then } else { &node.otherwise };
    match branch {
        Some(branch) => branch.eval(input),
        None => Ok(None),
    }
}

fn eval_array_path<'a>(node: &'a ArrayPathNode, input: Scope<'a>) -> Resolved<'a> {
    let root = match &node.source {
        ArraySource::Path(path) => input.lookup(path).map(Cow::Borrowed),
        ArraySource::Node(source) => source.eval(input)?,
    };
    let Some(shape) = &node.shape else {
        return Ok(root);
    };
    let Some(root) = root else {
        return Ok(None);
    };
    // Only arrays and objects (read as a one-element array) are reshaped; anything else is
    // returned as it is, like mapping-kit does.
    if !matches!(root.as_ref(), Value::Array(_) | Value::Object(_)) {
        return Ok(Some(root));
    }
    let items: &[Value] = match root.as_ref() {
        Value::Array(items) => items,
        object => std::slice::from_ref(object),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(shape.render(item)?.unwrap_or(Value::Null));
    }
    Ok(Some(Cow::Owned(Value::Array(out))))
}

fn eval_replace<'a>(node: &'a ReplaceNode, input: Scope<'a>) -> Resolved<'a> {
    let resolved = node.value.eval(input)?;
    let mut number_text = String::new();
    let text = match resolved.as_deref() {
        Some(Value::String(text)) => text.as_str(),
        Some(Value::Bool(true)) => "true",
        Some(Value::Bool(false)) => "false",
        Some(Value::Number(n)) => {
            js::push_number(n, &mut number_text);
            number_text.as_str()
        }
        // mapping-kit resolves anything else (missing, null, objects, arrays) to "".
        _ => return Ok(Some(owned_string(String::new()))),
    };
    let too_large = || MappingError::TooLarge {
        path: node.at.clone(),
        limit: MAX_RENDERED_STRING_BYTES,
    };
    let mut replaced = node
        .first
        .apply(text, MAX_RENDERED_STRING_BYTES)
        .ok_or_else(too_large)?;
    if let Some(second) = &node.second {
        replaced = second
            .apply(&replaced, MAX_RENDERED_STRING_BYTES)
            .ok_or_else(too_large)?;
    }
    Ok(Some(owned_string(replaced)))
}

fn eval_merge<'a>(node: &'a MergeNode, input: Scope<'a>) -> Resolved<'a> {
    let mut out = Map::new();
    let mut assign = |item: &MergeItem| -> Result<(), MappingError> {
        match item {
            MergeItem::Fields(fields) => {
                for (key, field) in fields {
                    match field.render_in(input)? {
                        Some(value) => {
                            out.insert(key.clone(), value);
                        }
                        None => {
                            out.remove(key);
                        }
                    }
                }
            }
            MergeItem::Value(source) => {
                if let Some(Value::Object(map)) = source.render_in(input)? {
                    out.extend(map);
                }
            }
        }
        Ok(())
    };
    if node.left {
        node.objects.iter().rev().try_for_each(&mut assign)?;
    } else {
        node.objects.iter().try_for_each(&mut assign)?;
    }
    Ok(Some(Cow::Owned(Value::Object(out))))
}

fn eval_json<'a>(encode: bool, value: &'a Node, at: &str, input: Scope<'a>) -> Resolved<'a> {
    let Some(resolved) = value.eval(input)? else {
        return Ok(None);
    };
    if encode {
        let mut text = String::new();
        js::push_json(&resolved, &mut text);
        return Ok(Some(owned_string(text)));
    }
    match resolved.as_ref() {
        Value::String(text) => serde_json::from_str(text)
            .map(|decoded| Some(Cow::Owned(decoded)))
            .map_err(|err| MappingError::InvalidJson {
                path: at.to_owned(),
                reason: err.to_string(),
            }),
        _ => Ok(Some(resolved)),
    }
}

/// `@excludeWhenNull` on an object also drops its null fields, at every depth of nested
/// objects (arrays are left as they are).
fn drop_null_fields(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, field| !field.is_null());
        for field in map.values_mut() {
            drop_null_fields(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mapping::compile::Compiler;

    fn render(mapping: &Value, input: &Value) -> Result<Option<Value>, MappingError> {
        match Compiler::compile(mapping) {
            Ok(node) => node.render(input),
            Err(problems) => Err(MappingError::Invalid(problems)),
        }
    }

    #[test]
    fn nested_replace_stops_at_the_rendering_budget_instead_of_multiplying_the_event() {
        // Each level multiplies the text by 20: 20 KB → 400 KB → 8 MB → 160 MB unbounded.
        let inner = json!({"@replace": {"pattern": "a", "replacement": "a".repeat(20), "value": {"@path": "$.text"}}});
        let middle =
            json!({"@replace": {"pattern": "a", "replacement": "a".repeat(20), "value": inner}});
        let outer = json!({"body": {"@replace": {"pattern": "a", "replacement": "a".repeat(20), "value": middle}}});
        let input = json!({"text": "a".repeat(20 * 1024)});
        match render(&outer, &input) {
            Err(MappingError::TooLarge { path, limit }) => {
                assert_eq!(limit, MAX_RENDERED_STRING_BYTES);
                // The innermost level already passes the budget (20 KB × 20).
                assert_eq!(path, "body.@replace.value.@replace.value.@replace");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Within the budget a replacement still renders.
        let small =
            json!({"@replace": {"pattern": "a", "replacement": "bb", "value": {"@path": "$.t"}}});
        assert_eq!(
            render(&small, &json!({"t": "aXa"})).ok(),
            Some(Some(json!("bbXbb")))
        );
    }

    #[test]
    fn literal_subtrees_are_returned_without_evaluation() {
        let mapping = json!({"a": {"b": [1, 2]}, "c": {"@path": "$.c"}});
        assert_eq!(
            render(&mapping, &json!({"c": "x"})).ok(),
            Some(Some(json!({"a": {"b": [1, 2]}, "c": "x"})))
        );
    }

    #[test]
    fn merge_direction_decides_which_object_wins() {
        let objects = json!([{"k": 1, "a": 1}, {"@path": "$.o"}, {"k": 3}]);
        let input = json!({"o": {"k": 2, "b": 2}});
        let right = json!({"@merge": {"direction": "right", "objects": objects}});
        let left = json!({"@merge": {"direction": "left", "objects": objects}});
        assert_eq!(
            render(&right, &input).ok(),
            Some(Some(json!({"k": 3, "a": 1, "b": 2})))
        );
        assert_eq!(
            render(&left, &input).ok(),
            Some(Some(json!({"k": 1, "a": 1, "b": 2})))
        );
    }

    #[test]
    fn merge_field_resolving_to_nothing_unsets_the_key_in_assignment_order() {
        let objects = json!([{"a": 1}, {"a": {"@path": "$.missing"}}, {"b": 2}]);
        let right = json!({"@merge": {"direction": "right", "objects": objects}});
        let left = json!({"@merge": {"direction": "left", "objects": objects}});
        assert_eq!(render(&right, &json!({})).ok(), Some(Some(json!({"b": 2}))));
        assert_eq!(
            render(&left, &json!({})).ok(),
            Some(Some(json!({"a": 1, "b": 2})))
        );
    }

    #[test]
    fn exclude_when_null_leaves_array_elements_alone() {
        let mapping = json!({"v": {"@excludeWhenNull": {"@path": "$.v"}}});
        let input = json!({"v": {"list": [null, {"x": null}], "gone": null}});
        assert_eq!(
            render(&mapping, &input).ok(),
            Some(Some(json!({"v": {"list": [null, {"x": null}]}})))
        );
    }

    #[test]
    fn json_decode_error_names_the_directive() {
        let mapping = json!({"props": {"raw": {"@json": {"mode": "decode", "value": "{"}}}});
        match render(&mapping, &json!({})) {
            Err(MappingError::InvalidJson { path, .. }) => assert_eq!(path, "props.raw.@json"),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn dynamic_template_must_resolve_to_a_string() {
        let mapping = json!({"t": {"@template": {"@path": "$.tpl"}}});
        match render(&mapping, &json!({})) {
            Err(MappingError::ExpectedString { path, found }) => {
                assert_eq!(path, "t.@template");
                assert_eq!(found, "nothing (missing)");
            }
            other => panic!("expected a type error, got {other:?}"),
        }
    }

    #[test]
    fn transform_renders_its_mapping_against_the_applied_object() {
        let mapping = json!({"@transform": {
            "apply": {"user": {"@path": "$.traits"}},
            "mapping": {"name": {"@template": "{{user.first}} {{user.last}}"}}
        }});
        let input = json!({"traits": {"first": "Ada", "last": "Lovelace"}});
        assert_eq!(
            render(&mapping, &input).ok(),
            Some(Some(json!({"name": "Ada Lovelace"})))
        );
    }

    #[test]
    fn array_path_shape_is_rendered_per_element() {
        let mapping = json!({"@arrayPath": ["$.xs", {"double": {"@template": "{{v}}{{v}}"}}]});
        let input = json!({"xs": [{"v": 1}, {"v": "a"}]});
        assert_eq!(
            render(&mapping, &input).ok(),
            Some(Some(json!([{"double": "11"}, {"double": "aa"}])))
        );
    }
}

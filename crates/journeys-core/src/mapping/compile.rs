//! Checks a mapping and compiles it in one pass, collecting every problem with its JSON path.
//!
//! The rules for raw values live here (objects, arrays, scalars, what makes an object a
//! directive); the rules for each directive's argument live in `directives.rs`.

use serde_json::{Map, Value};

use super::error::MappingProblem;
use super::js;
use super::node::{Node, ObjectNode};

/// Deepest nesting of objects, arrays and directives a mapping may have. Rendering recurses
/// once per level, so this bounds stack use for mappings built by hand rather than parsed
/// (`serde_json`'s parser already stops at 128).
pub(crate) const MAX_DEPTH: usize = 64;

/// The key mapping-kit (and Segment's editor) allows beside a directive for its own notes; it
/// is ignored.
const METADATA_KEY: &str = "_metadata";

pub(crate) struct Compiler {
    problems: Vec<MappingProblem>,
    /// JSON path of the value being compiled, maintained as a stack of appended segments.
    path: String,
    depth: usize,
}

impl Compiler {
    pub(crate) fn compile(mapping: &Value) -> Result<Node, Vec<MappingProblem>> {
        let mut compiler = Compiler {
            problems: Vec::new(),
            path: String::new(),
            depth: 0,
        };
        let node = compiler.value(mapping);
        if compiler.problems.is_empty() {
            Ok(node)
        } else {
            Err(compiler.problems)
        }
    }

    /// Records a problem at the current path.
    pub(super) fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(MappingProblem {
            path: self.path.clone(),
            message: message.into(),
        });
    }

    /// The current path, for runtime errors raised by the node being compiled.
    pub(super) fn here(&self) -> String {
        self.path.clone()
    }

    pub(super) fn at_key<T>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let len = self.path.len();
        push_key(&mut self.path, key);
        let out = f(self);
        self.path.truncate(len);
        out
    }

    pub(super) fn at_index<T>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> T) -> T {
        let len = self.path.len();
        self.path.push('[');
        self.path.push_str(&index.to_string());
        self.path.push(']');
        let out = f(self);
        self.path.truncate(len);
        out
    }

    /// Compiles any mapping value: a raw value (with directives resolved inside it) or a
    /// directive.
    pub(super) fn value(&mut self, value: &Value) -> Node {
        if self.depth >= MAX_DEPTH {
            self.problem(format!(
                "the mapping is nested too deeply (more than {MAX_DEPTH} levels)"
            ));
            return Node::Literal(Value::Null);
        }
        self.depth += 1;
        let node = match value {
            Value::Object(map) => self.object(map),
            Value::Array(items) => self.array(items),
            scalar => Node::Literal(scalar.clone()),
        };
        self.depth -= 1;
        node
    }

    fn object(&mut self, map: &Map<String, Value>) -> Node {
        let mut directives = map.iter().filter(|(key, _)| key.starts_with('@'));
        let Some((name, argument)) = directives.next() else {
            return literal_or_object(self.raw_fields(map));
        };
        let others = directives.count();
        if others > 0 {
            self.problem(format!(
                "a directive object has exactly one @-prefixed key, this one has {}",
                others + 1
            ));
            return Node::Literal(Value::Null);
        }
        let extra: Vec<String> = map
            .keys()
            .filter(|key| !key.starts_with('@') && key.as_str() != METADATA_KEY)
            .map(|key| format!("{key:?}"))
            .collect();
        if !extra.is_empty() {
            self.problem(format!(
                "a directive object may not have other keys, found {}",
                extra.join(", ")
            ));
        }
        self.at_key(name, |c| c.directive(name, argument))
    }

    /// Compiles the fields of a raw object (one without an @-prefixed key).
    pub(super) fn raw_fields(&mut self, map: &Map<String, Value>) -> Vec<(String, Node)> {
        map.iter()
            .map(|(key, value)| (key.clone(), self.at_key(key, |c| c.value(value))))
            .collect()
    }

    fn array(&mut self, items: &[Value]) -> Node {
        let nodes: Vec<Node> = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.at_index(i, |c| c.value(item)))
            .collect();
        if nodes.iter().all(Node::is_literal) {
            Node::Literal(Value::Array(
                nodes.into_iter().filter_map(into_literal).collect(),
            ))
        } else {
            Node::Array(nodes)
        }
    }
}

/// An object whose fields have no directives becomes one literal, copied as is at render time.
fn literal_or_object(fields: Vec<(String, Node)>) -> Node {
    if fields.iter().all(|(_, node)| node.is_literal()) {
        let map = fields
            .into_iter()
            .filter_map(|(key, node)| into_literal(node).map(|value| (key, value)))
            .collect();
        Node::Literal(Value::Object(map))
    } else {
        Node::Object(Box::new(ObjectNode::new(fields)))
    }
}

fn into_literal(node: Node) -> Option<Value> {
    match node {
        Node::Literal(value) => Some(value),
        _ => None,
    }
}

/// Whether mapping-kit would treat `value` as a directive: an object with an @-prefixed key.
pub(super) fn is_directive(value: &Value) -> bool {
    matches!(value, Value::Object(map) if map.keys().any(|key| key.starts_with('@')))
}

/// A value's kind for validation messages, telling directives apart from raw objects.
pub(super) fn describe(value: &Value) -> &'static str {
    if is_directive(value) {
        "a directive"
    } else {
        js::type_name(Some(value))
    }
}

fn push_key(path: &mut String, key: &str) {
    if key.is_empty() || key.contains(['.', '[', ']', '"']) {
        path.push('[');
        path.push_str(&Value::String(key.to_owned()).to_string());
        path.push(']');
    } else {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(mapping: &Value) -> Vec<String> {
        match Compiler::compile(mapping) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn raw_values_without_directives_are_valid() {
        assert!(paths(&json!({"a": 1, "b": [true, null, {"c": "d"}], "e": {}})).is_empty());
        assert!(paths(&json!("just a string")).is_empty());
    }

    #[test]
    fn directive_mixed_with_raw_keys_is_reported_at_the_object() {
        assert_eq!(paths(&json!({"foo": "bar", "@path": "$.x"})), vec![""]);
        assert_eq!(
            paths(&json!({"a": {"b": {"@path": "x", "c": 1}}})),
            vec!["a.b"]
        );
    }

    #[test]
    fn metadata_beside_a_directive_is_allowed() {
        assert!(paths(&json!({"@path": "$.x", "_metadata": {"type": "variable"}})).is_empty());
    }

    #[test]
    fn two_directives_in_one_object_are_reported() {
        assert_eq!(
            paths(&json!({"x": {"@path": "$.a", "@template": "{{b}}"}})),
            vec!["x"]
        );
    }

    #[test]
    fn unknown_directive_is_reported_at_its_key() {
        assert_eq!(paths(&json!({"a": [1, {"@oops": {}}]})), vec!["a[1].@oops"]);
    }

    #[test]
    fn keys_with_dots_are_quoted_in_paths() {
        assert_eq!(
            paths(&json!({"a.b": {"": {"@nope": 1}}})),
            vec![r#"["a.b"][""].@nope"#]
        );
    }

    #[test]
    fn nesting_beyond_the_limit_is_reported_once() {
        let mut mapping = json!(1);
        for _ in 0..(MAX_DEPTH + 5) {
            mapping = json!({ "a": mapping });
        }
        let problems = Compiler::compile(&mapping).err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("nested too deeply"));
    }
}

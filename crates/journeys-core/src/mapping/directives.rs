//! The argument rules of each directive, checked while compiling.
//!
//! The rules follow mapping-kit's validator and runtime checks, with two deliberate tightenings
//! so that mistakes surface when a journey is validated rather than as a silently empty field:
//! option objects may not carry unknown fields (a typo such as `"thne"` is reported), and
//! options that mapping-kit only checks at render time (`@case` operator, `@if` condition and
//! branch, `@merge` direction) are checked here.

use serde_json::{Map, Value};

use super::compile::{Compiler, describe, is_directive};
use super::node::{
    ArrayPathNode, ArraySource, Condition, IfNode, MergeItem, MergeNode, Node, ReplaceNode,
};
use super::path::PathExpr;
use super::replace::Replacer;
use super::template::Template;

/// Every directive name, for messages.
const DIRECTIVES: &str = "@arrayPath, @case, @excludeWhenNull, @flatten, @if, @json, @literal, \
                          @merge, @path, @replace, @template, @transform";

fn placeholder() -> Node {
    Node::Literal(Value::Null)
}

impl Compiler {
    /// Compiles the directive `name` with its argument; the current path is `….@name`.
    pub(super) fn directive(&mut self, name: &str, arg: &Value) -> Node {
        match name {
            "@path" => self.path_directive(arg),
            "@template" => self.template_directive(arg),
            "@literal" | "@excludeWhenNull" => {
                let value = self.value(arg);
                if name == "@literal" {
                    value
                } else {
                    Node::ExcludeWhenNull(Box::new(value))
                }
            }
            "@if" => self.if_directive(arg),
            "@arrayPath" => self.array_path_directive(arg),
            "@case" => self.case_directive(arg),
            "@replace" => self.replace_directive(arg),
            "@merge" => self.merge_directive(arg),
            "@transform" => self.transform_directive(arg),
            "@flatten" => self.flatten_directive(arg),
            "@json" => self.json_directive(arg),
            _ => {
                self.problem(format!(
                    "unknown directive {name}; expected one of {DIRECTIVES}"
                ));
                placeholder()
            }
        }
    }

    fn path_directive(&mut self, arg: &Value) -> Node {
        match arg {
            Value::String(path) => Node::Path(PathExpr::parse_directive(path)),
            Value::Array(items) => {
                let mut keys = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(key) => keys.push(key.clone()),
                        Value::Number(n) if n.is_u64() => keys.push(n.to_string()),
                        other => self.at_index(i, |c| {
                            c.problem(format!(
                                "a path key must be a string, got {}",
                                describe(other)
                            ));
                        }),
                    }
                }
                Node::Path(PathExpr::from_keys(keys))
            }
            directive if is_directive(directive) => Node::DynamicPath {
                at: self.here(),
                path: Box::new(self.value(directive)),
            },
            other => {
                self.problem(format!(
                    "@path expects a path string, an array of keys or a directive, got {}",
                    describe(other)
                ));
                placeholder()
            }
        }
    }

    fn template_directive(&mut self, arg: &Value) -> Node {
        match arg {
            Value::String(template) => Node::Template(Template::parse(template)),
            directive if is_directive(directive) => Node::DynamicTemplate {
                at: self.here(),
                template: Box::new(self.value(directive)),
            },
            other => {
                self.problem(format!(
                    "@template expects a string or a directive, got {}",
                    describe(other)
                ));
                placeholder()
            }
        }
    }

    fn if_directive(&mut self, arg: &Value) -> Node {
        let Some(opts) = self.options("@if", arg, &["exists", "blank", "then", "else"]) else {
            return placeholder();
        };
        let condition = match (opts.get("exists"), opts.get("blank")) {
            (Some(test), None) => Some((Condition::Exists, "exists", test)),
            (None, Some(test)) => Some((Condition::NotBlank, "blank", test)),
            (Some(_), Some(_)) => {
                self.problem(r#"@if takes one condition, "exists" or "blank", not both"#);
                None
            }
            (None, None) => {
                self.problem(r#"@if requires a condition: "exists" or "blank""#);
                None
            }
        };
        if !opts.contains_key("then") && !opts.contains_key("else") {
            self.problem(r#"@if requires a "then" or an "else" branch"#);
        }
        let test = condition.map(|(kind, key, test)| (kind, self.at_key(key, |c| c.value(test))));
        let then = self.optional_value(opts, "then");
        let otherwise = self.optional_value(opts, "else");
        match test {
            Some((condition, test)) => {
                Node::If(Box::new(IfNode::new(condition, test, then, otherwise)))
            }
            None => placeholder(),
        }
    }

    fn array_path_directive(&mut self, arg: &Value) -> Node {
        let Value::Array(items) = arg else {
            self.problem(format!(
                "@arrayPath expects an array [path, item shape], got {}",
                describe(arg)
            ));
            return placeholder();
        };
        let source = match items.first() {
            None => {
                self.problem("@arrayPath requires a path as its first element");
                None
            }
            Some(Value::String(path)) => Some(ArraySource::Path(PathExpr::parse_directive(path))),
            Some(directive) if is_directive(directive) => {
                Some(ArraySource::Node(self.at_index(0, |c| c.value(directive))))
            }
            Some(other) => {
                self.at_index(0, |c| {
                    c.problem(format!(
                        "the array path must be a string or a directive, got {}",
                        describe(other)
                    ));
                });
                None
            }
        };
        // Elements after the shape are ignored, as in mapping-kit.
        let shape = match items.get(1) {
            None | Some(Value::Null) => None,
            Some(shape @ Value::Object(fields)) => {
                let node = self.at_index(1, |c| c.value(shape));
                (!fields.is_empty()).then_some(node)
            }
            Some(other) => {
                self.at_index(1, |c| {
                    c.problem(format!(
                        "the item shape must be an object or null, got {}",
                        describe(other)
                    ));
                });
                None
            }
        };
        match source {
            Some(source) => Node::ArrayPath(Box::new(ArrayPathNode { source, shape })),
            None => placeholder(),
        }
    }

    fn case_directive(&mut self, arg: &Value) -> Node {
        let Some(opts) = self.options("@case", arg, &["operator", "value"]) else {
            return placeholder();
        };
        let upper = self
            .required(opts, "@case", "operator")
            .and_then(|op| self.at_key("operator", |c| c.one_of(op, &["lower", "upper"])))
            .map(|op| op == "upper");
        let value = self
            .required(opts, "@case", "value")
            .and_then(|value| self.at_key("value", |c| c.string_or_directive(value)));
        match (upper, value) {
            (Some(upper), Some(value)) => Node::Case {
                upper,
                value: Box::new(value),
            },
            _ => placeholder(),
        }
    }

    fn replace_directive(&mut self, arg: &Value) -> Node {
        let fields = [
            "pattern",
            "replacement",
            "pattern2",
            "replacement2",
            "ignorecase",
            "global",
            "value",
        ];
        let Some(opts) = self.options("@replace", arg, &fields) else {
            return placeholder();
        };
        let pattern = self
            .required(opts, "@replace", "pattern")
            .and_then(|p| self.at_key("pattern", |c| c.non_empty_string(p)));
        let replacement = self.optional_string(opts, "replacement").unwrap_or("");
        let pattern2 = self.optional_string(opts, "pattern2").unwrap_or("");
        let replacement2 = self.optional_string(opts, "replacement2").unwrap_or("");
        let ignore_case = self.optional_bool(opts, "ignorecase").unwrap_or(false);
        let global = self.optional_bool(opts, "global").unwrap_or(true);
        let value = self
            .required(opts, "@replace", "value")
            .and_then(|value| self.at_key("value", |c| c.string_or_directive(value)));
        let (Some(pattern), Some(value)) = (pattern, value) else {
            return placeholder();
        };
        // An empty second pattern is ignored, as mapping-kit does.
        let second = (!pattern2.is_empty())
            .then(|| Replacer::new(pattern2, replacement2, ignore_case, global));
        Node::Replace(Box::new(ReplaceNode {
            at: self.here(),
            first: Replacer::new(pattern, replacement, ignore_case, global),
            second,
            value,
        }))
    }

    fn merge_directive(&mut self, arg: &Value) -> Node {
        let Some(opts) = self.options("@merge", arg, &["objects", "direction"]) else {
            return placeholder();
        };
        let left = self
            .required(opts, "@merge", "direction")
            .and_then(|d| self.at_key("direction", |c| c.one_of(d, &["left", "right"])))
            .map(|d| d == "left");
        let objects = match self.required(opts, "@merge", "objects") {
            None => None,
            Some(Value::Array(items)) => Some(self.at_key("objects", |c| c.merge_items(items))),
            Some(other) => {
                self.at_key("objects", |c| {
                    c.problem(format!(
                        "expected an array of objects, got {}",
                        describe(other)
                    ));
                });
                None
            }
        };
        match (left, objects) {
            (Some(left), Some(objects)) => Node::Merge(Box::new(MergeNode { objects, left })),
            _ => placeholder(),
        }
    }

    fn merge_items(&mut self, items: &[Value]) -> Vec<MergeItem> {
        let mut objects = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.at_index(i, |c| match item {
                directive if is_directive(directive) => {
                    objects.push(MergeItem::Value(c.value(directive)));
                }
                Value::Object(fields) => objects.push(MergeItem::Fields(c.raw_fields(fields))),
                other => c.problem(format!(
                    "each entry must be an object or a directive, got {}",
                    describe(other)
                )),
            });
        }
        objects
    }

    fn transform_directive(&mut self, arg: &Value) -> Node {
        let Some(opts) = self.options("@transform", arg, &["apply", "mapping"]) else {
            return placeholder();
        };
        let apply = self
            .required(opts, "@transform", "apply")
            .and_then(|apply| {
                self.at_key("apply", |c| {
                    if matches!(apply, Value::Object(_)) && !is_directive(apply) {
                        Some(c.value(apply))
                    } else {
                        c.problem(format!(
                            "expected an object of fields to build the new input, got {}",
                            describe(apply)
                        ));
                        None
                    }
                })
            });
        let mapping = self
            .required(opts, "@transform", "mapping")
            .and_then(|mapping| {
                self.at_key("mapping", |c| {
                    if matches!(mapping, Value::Object(_)) {
                        Some(c.value(mapping))
                    } else {
                        c.problem(format!(
                            "expected an object or a directive, got {}",
                            describe(mapping)
                        ));
                        None
                    }
                })
            });
        match (apply, mapping) {
            (Some(apply), Some(mapping)) => Node::Transform {
                apply: Box::new(apply),
                mapping: Box::new(mapping),
            },
            _ => placeholder(),
        }
    }

    fn flatten_directive(&mut self, arg: &Value) -> Node {
        let Some(opts) = self.options("@flatten", arg, &["value", "separator", "omitArrays"])
        else {
            return placeholder();
        };
        let value = self
            .required(opts, "@flatten", "value")
            .map(|value| self.at_key("value", |c| c.value(value)));
        let separator = self
            .required(opts, "@flatten", "separator")
            .and_then(|s| self.at_key("separator", |c| c.non_empty_string(s)));
        let omit_arrays = self.optional_bool(opts, "omitArrays").unwrap_or(false);
        match (value, separator) {
            (Some(value), Some(separator)) => Node::Flatten {
                value: Box::new(value),
                separator: separator.to_owned(),
                omit_arrays,
            },
            _ => placeholder(),
        }
    }

    fn json_directive(&mut self, arg: &Value) -> Node {
        let Some(opts) = self.options("@json", arg, &["mode", "value"]) else {
            return placeholder();
        };
        let encode = self
            .required(opts, "@json", "mode")
            .and_then(|mode| self.at_key("mode", |c| c.one_of(mode, &["encode", "decode"])))
            .map(|mode| mode == "encode");
        let value = self
            .required(opts, "@json", "value")
            .map(|value| self.at_key("value", |c| c.value(value)));
        match (encode, value) {
            (Some(encode), Some(value)) => Node::Json {
                encode,
                value: Box::new(value),
                at: self.here(),
            },
            _ => placeholder(),
        }
    }

    // Helpers for option objects. Each reports its problem at the option's path.

    /// The directive's argument as an option object, reporting unknown fields.
    fn options<'v>(
        &mut self,
        name: &str,
        arg: &'v Value,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let opts = match arg {
            Value::Object(opts) if !is_directive(arg) => opts,
            other => {
                self.problem(format!(
                    "{name} expects an object with the fields {}, got {}",
                    allowed.join(", "),
                    describe(other)
                ));
                return None;
            }
        };
        for key in opts.keys() {
            if !allowed.contains(&key.as_str()) {
                self.at_key(key, |c| {
                    c.problem(format!(
                        "unknown field for {name}; expected one of {}",
                        allowed.join(", ")
                    ));
                });
            }
        }
        Some(opts)
    }

    fn required<'v>(
        &mut self,
        opts: &'v Map<String, Value>,
        name: &str,
        key: &str,
    ) -> Option<&'v Value> {
        let value = opts.get(key);
        if value.is_none() {
            self.problem(format!("{name} requires the field {key:?}"));
        }
        value
    }

    fn optional_value(&mut self, opts: &Map<String, Value>, key: &str) -> Option<Node> {
        opts.get(key)
            .map(|value| self.at_key(key, |c| c.value(value)))
    }

    fn optional_string<'v>(&mut self, opts: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
        opts.get(key)
            .and_then(|value| self.at_key(key, |c| c.literal_string(value)))
    }

    fn optional_bool(&mut self, opts: &Map<String, Value>, key: &str) -> Option<bool> {
        match opts.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.at_key(key, |c| {
                    c.problem(format!("expected true or false, got {}", describe(other)));
                });
                None
            }
        }
    }

    fn literal_string<'v>(&mut self, value: &'v Value) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.problem(format!("expected a string, got {}", describe(other)));
                None
            }
        }
    }

    fn non_empty_string<'v>(&mut self, value: &'v Value) -> Option<&'v str> {
        let text = self.literal_string(value)?;
        if text.is_empty() {
            self.problem("must not be empty");
            return None;
        }
        Some(text)
    }

    fn one_of<'v>(&mut self, value: &'v Value, allowed: &[&str]) -> Option<&'v str> {
        let text = self.literal_string(value)?;
        if allowed.contains(&text) {
            Some(text)
        } else {
            self.problem(format!(
                "expected one of {}, got {text:?}",
                allowed.join(", ")
            ));
            None
        }
    }

    fn string_or_directive(&mut self, value: &Value) -> Option<Node> {
        match value {
            Value::String(_) => Some(Node::Literal(value.clone())),
            directive if is_directive(directive) => Some(self.value(directive)),
            other => {
                self.problem(format!(
                    "expected a string or a directive, got {}",
                    describe(other)
                ));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(mapping: &Value) -> Vec<(String, String)> {
        Compiler::compile(mapping)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn unknown_directive_lists_the_known_ones() {
        let found = problems(&json!({"x": {"@field": "a"}}));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "x.@field");
        assert!(found[0].1.contains("@path"), "{}", found[0].1);
    }

    #[test]
    fn missing_required_fields_are_named_at_the_directive() {
        assert_eq!(
            problems(&json!({"x": {"@json": {"mode": "encode"}}})),
            vec![(
                "x.@json".to_owned(),
                r#"@json requires the field "value""#.to_owned()
            )]
        );
    }

    #[test]
    fn unknown_option_fields_are_reported_at_the_field() {
        let found = problems(&json!({"@case": {"operator": "lower", "value": "A", "mode": "x"}}));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "@case.mode");
    }

    #[test]
    fn nested_directives_inside_options_are_checked() {
        let mapping = json!({"@replace": {"pattern": "a", "value": {"@path": true}}});
        let found = problems(&mapping);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "@replace.value.@path");
    }

    #[test]
    fn directive_objects_are_not_option_objects() {
        let found = problems(&json!({"@if": {"@path": "$.a"}}));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "@if");
        assert!(found[0].1.contains("got a directive"), "{}", found[0].1);
    }

    #[test]
    fn every_directive_accepts_its_documented_form() {
        let mapping = json!({
            "path": {"@path": "$.a"},
            "keys": {"@path": ["a", 0]},
            "template": {"@template": "{{a}}"},
            "literal": {"@literal": {"x": 1}},
            "if": {"@if": {"blank": {"@path": "$.a"}, "else": "none"}},
            "array": {"@arrayPath": [{"@path": "$.xs"}, {"id": {"@path": "$.id"}}]},
            "case": {"@case": {"operator": "upper", "value": "abc"}},
            "replace": {"@replace": {"pattern": "a", "replacement": "b", "pattern2": "c",
                                     "replacement2": "d", "ignorecase": true, "global": false,
                                     "value": {"@path": "$.a"}}},
            "merge": {"@merge": {"direction": "left", "objects": [{"a": 1}, {"@path": "$.o"}]}},
            "transform": {"@transform": {"apply": {"a": 1}, "mapping": {"@path": "$.a"}}},
            "flatten": {"@flatten": {"value": {"@path": "$.o"}, "separator": "_", "omitArrays": true}},
            "json": {"@json": {"mode": "decode", "value": {"@path": "$.s"}}},
            "exclude": {"@excludeWhenNull": {"@path": "$.n"}}
        });
        assert_eq!(problems(&mapping), Vec::<(String, String)>::new());
    }
}

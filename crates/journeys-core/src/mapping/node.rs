//! The compiled form of a mapping: a tree that mirrors the mapping JSON, with every path and
//! template parsed and every directive argument checked, so rendering only walks it.
//!
//! Subtrees without directives collapse into [`Node::Literal`] and are copied as they are.

use serde_json::{Map, Value};

use super::path::PathExpr;
use super::replace::Replacer;
use super::template::Template;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A value with no directive in it, output as is.
    Literal(Value),
    /// A raw object with at least one directive below it; fields that resolve to nothing are
    /// left out of the output.
    Object(Box<ObjectNode>),
    /// A raw array with at least one directive below it; elements that resolve to nothing
    /// become `null`, as `JSON.stringify` renders mapping-kit's `undefined` elements.
    Array(Vec<Node>),
    Path(PathExpr),
    /// `@path` whose argument is a directive, resolved and parsed at render time.
    DynamicPath {
        path: Box<Node>,
        at: String,
    },
    Template(Template),
    /// `@template` whose argument is a directive, resolved and parsed at render time.
    DynamicTemplate {
        template: Box<Node>,
        at: String,
    },
    If(Box<IfNode>),
    ArrayPath(Box<ArrayPathNode>),
    Case {
        upper: bool,
        value: Box<Node>,
    },
    Replace(Box<ReplaceNode>),
    Merge(Box<MergeNode>),
    Transform {
        apply: Box<Node>,
        mapping: Box<Node>,
    },
    Flatten {
        value: Box<Node>,
        separator: String,
        omit_arrays: bool,
    },
    Json {
        encode: bool,
        value: Box<Node>,
        at: String,
    },
    ExcludeWhenNull(Box<Node>),
}

impl Node {
    pub(crate) fn is_literal(&self) -> bool {
        matches!(self, Node::Literal(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// True when the value is present and not null.
    Exists,
    /// True when the value is present, not null and not the empty string.
    NotBlank,
}

/// A raw object's fields, in the order of the output object's keys.
#[derive(Debug, Clone)]
pub(crate) struct ObjectNode {
    pub(crate) fields: Vec<(String, Node)>,
    /// The output object with every key and `null` values, when `fields` are in its key order
    /// (they are when compiled from a JSON object): rendering copies it and fills in the
    /// values, which builds the object without sorting or searching its keys.
    pub(crate) shape: Option<Map<String, Value>>,
}

impl ObjectNode {
    pub(crate) fn new(fields: Vec<(String, Node)>) -> Self {
        let shape: Map<String, Value> = fields
            .iter()
            .map(|(key, _)| (key.clone(), Value::Null))
            .collect();
        let in_order = shape.len() == fields.len()
            && shape
                .keys()
                .zip(&fields)
                .all(|(key, (field, _))| key == field);
        Self {
            fields,
            shape: in_order.then_some(shape),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct IfNode {
    pub(crate) condition: Condition,
    pub(crate) test: Node,
    pub(crate) then: Option<Node>,
    pub(crate) otherwise: Option<Node>,
    /// `then` reads the very path the condition tests (`{"exists": {"@path": p}, "then":
    /// {"@path": p}}`, the usual way to give a default): the tested value is the result.
    pub(crate) then_is_test: bool,
}

impl IfNode {
    pub(crate) fn new(
        condition: Condition,
        test: Node,
        then: Option<Node>,
        otherwise: Option<Node>,
    ) -> Self {
        let then_is_test = matches!(
            (&test, &then),
            (Node::Path(tested), Some(Node::Path(read))) if tested == read
        );
        Self {
            condition,
            test,
            then,
            otherwise,
            then_is_test,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum ArraySource {
    Path(PathExpr),
    Node(Node),
}

#[derive(Debug, Clone)]
pub(crate) struct ArrayPathNode {
    pub(crate) source: ArraySource,
    /// Rendered once per element (with the element as the input); `None` returns the source as
    /// is, as mapping-kit does when the shape is absent, null or an empty object.
    pub(crate) shape: Option<Node>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReplaceNode {
    /// Where the directive stands, for the error when its output outgrows the budget.
    pub(crate) at: String,
    pub(crate) first: Replacer,
    pub(crate) second: Option<Replacer>,
    pub(crate) value: Node,
}

#[derive(Debug, Clone)]
pub(crate) enum MergeItem {
    /// A raw object: each field is assigned in turn, and a field that resolves to nothing
    /// removes the key set by earlier objects (JavaScript's `Object.assign` copies `undefined`).
    Fields(Vec<(String, Node)>),
    /// A directive; its keys are assigned when it resolves to an object, otherwise it is skipped.
    Value(Node),
}

#[derive(Debug, Clone)]
pub(crate) struct MergeNode {
    pub(crate) objects: Vec<MergeItem>,
    /// `direction: "left"`: the first object that sets a key wins (mapping-kit reverses the
    /// list before assigning).
    pub(crate) left: bool,
}

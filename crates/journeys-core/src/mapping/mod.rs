//! Mapping engine (SPEC.md section 5): shapes the payload of a send step from its default
//! payload, compatible with Segment's open-source mapping-kit (`@segment/actions-core`) so that
//! mappings written for Segment work unchanged.
//!
//! A mapping is JSON whose values are raw values or directives: objects with exactly one
//! `@`-prefixed key (plus, as in mapping-kit, an ignored `_metadata` key). Supported directives:
//! `@path`, `@template`, `@literal`, `@if`, `@arrayPath`, `@case`, `@replace`, `@merge`,
//! `@transform`, `@flatten`, `@json`, `@excludeWhenNull`. A field that resolves to nothing is
//! left out of its object; `null` is kept. Elements of a raw array that resolve to nothing become
//! `null`, which is what mapping-kit's output looks like once serialized.
//!
//! A mapping is compiled once ([`compile`]): every path and template is parsed and every
//! directive argument checked, with each fault reported at its JSON path. The compiled form
//! renders without re-parsing and without copying anything it only reads.
//!
//! Where this engine knowingly differs from mapping-kit (JavaScript quirks and checks moved
//! earlier), the module that implements the directive says so. In short:
//! - a path that steps through `null`, `0`, `false` or `""` is missing (JavaScript's
//!   `a && a[k]` returns that falsy value instead), and no JavaScript properties such as
//!   `length` are reachable;
//! - `@if` uses `else` whenever it is present (mapping-kit ignores a falsy `else` such as
//!   `false`, `0`, `""` or `null`), and `blank` treats only missing, `null` and `""` as blank
//!   (mapping-kit's loose `!= ''` also counts `0`, `false` and `[]`);
//! - `@replace` has no 10-character limit on patterns (matching here is literal), and keeps
//!   `` $` `` and `$'` in a replacement as written;
//! - template values are never re-scanned for placeholders;
//! - `@merge` skips entries that are not objects (JavaScript would spread a string's
//!   characters into the result);
//! - Segment's internal `__segment_internal_directive` root key has no special meaning;
//! - validation is stricter: directives inside raw arrays are checked, option objects may not
//!   carry unknown fields, and options mapping-kit only checks while rendering (`@case`
//!   operator, `@merge` direction, `@if` condition and branch) are checked up front.

mod compile;
mod count;
mod directives;
mod error;
mod eval;
mod flatten;
mod js;
mod node;
mod path;
mod replace;
mod template;

use serde_json::Value;

use self::compile::Compiler;
pub use self::error::{MappingError, MappingProblem};
pub(crate) use self::eval::LazyInput;
use self::eval::Scope;
use self::node::Node;
pub(crate) use self::path::PathExpr;

/// The longest text one directive may produce while rendering. A send's whole payload must
/// fit in [`crate::payload::MAX_PAYLOAD_BYTES`], so no longer string can ever be delivered;
/// stopping at this size bounds the memory a hostile mapping or event can take.
pub const MAX_RENDERED_STRING_BYTES: usize = crate::payload::MAX_PAYLOAD_BYTES;

/// A mapping checked and compiled once, to be rendered for many payloads.
///
/// Send steps render their mapping on every transition, so the journey runtime compiles each
/// mapping when a journey version is loaded and keeps this value; it is immutable and can be
/// shared between threads.
#[derive(Debug, Clone)]
pub struct CompiledMapping {
    root: Node,
}

impl CompiledMapping {
    /// Renders the mapping against `input` (the default payload). A root that resolves to
    /// nothing renders as `null`.
    ///
    /// # Errors
    ///
    /// Only payload-dependent faults: a nested directive that should give a path or template
    /// resolving to a non-string, or `@json` decoding text that is not JSON.
    pub fn render(&self, input: &Value) -> Result<Value, MappingError> {
        Ok(self.root.render(input)?.unwrap_or(Value::Null))
    }

    /// [`render`](Self::render) against an input that resolves paths itself, so the input
    /// need not be built as a tree.
    pub(crate) fn render_lazy(&self, input: &dyn LazyInput) -> Result<Value, MappingError> {
        Ok(self
            .root
            .render_in(Scope::Lazy(input))?
            .unwrap_or(Value::Null))
    }
}

/// Checks and compiles `mapping` once, for rendering many payloads.
///
/// # Errors
///
/// Every problem found, each with its JSON path, when the mapping is invalid.
pub fn compile(mapping: &Value) -> Result<CompiledMapping, Vec<MappingProblem>> {
    Compiler::compile(mapping).map(|root| CompiledMapping { root })
}

/// Renders `mapping` against `input` (the default payload, a JSON object). A field whose value
/// resolves to "missing" is removed; JSON null is kept.
///
/// Compiles the mapping on every call; hot paths should [`compile`] once and reuse the result.
///
/// # Errors
///
/// [`MappingError::Invalid`] with every problem when the mapping is invalid, otherwise the
/// payload-dependent faults of [`CompiledMapping::render`].
pub fn render(mapping: &Value, input: &Value) -> Result<Value, MappingError> {
    compile(mapping)
        .map_err(MappingError::Invalid)?
        .render(input)
}

/// Static validation: every fault with a JSON path relative to the mapping root, e.g.
/// `properties.total.@path` or `items.@arrayPath[1]`. Empty = valid.
///
/// Journey validation calls this so that an invalid mapping is rejected before it is published
/// rather than failing sends at run time.
#[must_use]
pub fn validate(mapping: &Value) -> Vec<MappingProblem> {
    compile(mapping).err().unwrap_or_default()
}

/// Number of mapped leaf fields, for the limit of 100 mapped fields per send step (SPEC
/// section 3). Raw objects and arrays count their leaves, a directive counts one field, and
/// directives that carry an output shape (`@arrayPath`, `@transform`, `@merge`, `@if`,
/// `@literal`, `@excludeWhenNull`) count that shape instead.
#[must_use]
pub fn count_fields(mapping: &Value) -> usize {
    count::count_fields(mapping)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn readme_example_renders() {
        let mapping = json!({
            "name": "Mr. Rogers",
            "neighborhood": {"@path": "$.properties.neighborhood"},
            "greeting": {"@template": "Won't you be my {{properties.noun}}?"}
        });
        let input = json!({
            "type": "track",
            "event": "Sweater On",
            "properties": {"neighborhood": "Latrobe", "noun": "neighbor", "sweaterColor": "red"}
        });
        assert_eq!(
            render(&mapping, &input).ok(),
            Some(json!({
                "name": "Mr. Rogers",
                "neighborhood": "Latrobe",
                "greeting": "Won't you be my neighbor?"
            }))
        );
    }

    #[test]
    fn missing_fields_are_removed_and_null_is_kept() {
        let mapping = json!({"foo": {"@path": "$.a"}, "bar": {"@path": "$.b"}, "baz": null});
        let rendered = render(&mapping, &json!({"a": 1})).ok();
        assert_eq!(rendered, Some(json!({"foo": 1, "baz": null})));
    }

    #[test]
    fn compiled_mapping_renders_many_payloads() {
        let compiled = compile(&json!({"id": {"@path": "$.userId"}})).ok();
        let Some(compiled) = compiled else {
            panic!("mapping should compile");
        };
        for user in ["u1", "u2"] {
            assert_eq!(
                compiled.render(&json!({"userId": user})).ok(),
                Some(json!({"id": user}))
            );
        }
    }

    #[test]
    fn invalid_mapping_fails_render_with_its_problems() {
        let mapping = json!({"properties": {"total": {"@path": 5}}});
        match render(&mapping, &json!({})) {
            Err(MappingError::Invalid(problems)) => {
                assert_eq!(problems.len(), 1);
                assert_eq!(problems[0].path, "properties.total.@path");
            }
            other => panic!("expected an invalid mapping, got {other:?}"),
        }
    }

    #[test]
    fn validate_reports_every_problem() {
        let mapping = json!({
            "obj": {"@path": "foo.bar", "oops": true},
            "hash": {"@template": {}},
            "items": {"@arrayPath": ["$.products", "not a shape"]}
        });
        let mut paths: Vec<String> = validate(&mapping).into_iter().map(|p| p.path).collect();
        paths.sort();
        assert_eq!(paths, vec!["hash.@template", "items.@arrayPath[1]", "obj"]);
    }

    #[test]
    fn root_resolving_to_nothing_renders_null() {
        assert_eq!(
            render(&json!({"@path": "$.nope"}), &json!({})).ok(),
            Some(Value::Null)
        );
    }
}

//! Paths into the input payload, as `@path`, `@arrayPath` and template placeholders read them.
//!
//! The syntax follows mapping-kit's `get`: the text is cut at every `.`, `[` and `]`, empty
//! pieces are dropped, and each remaining piece is a key (or an index when the value reached is
//! an array). So `$.foo.bar[0].baz`, `foo.bar.0.baz` and `foo[bar][0]baz` are the same path, and
//! keys may contain spaces (`integrations.Actions Amplitude.session_id`). Keys that contain `.`
//! or brackets can be reached with the array form of `@path` (`["integrations", "a.b"]`). A path
//! with no pieces (`""`, `"$."`) is the whole payload. Paths are parsed once, at compile time.

use serde_json::Value;

/// A parsed path; looking it up never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathExpr {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: String,
    /// The key read as an array index, when it is one (canonical decimal, as JavaScript reads
    /// array property names).
    index: Option<usize>,
}

impl Segment {
    fn new(key: String) -> Self {
        let index = parse_index(&key);
        Segment { key, index }
    }
}

fn parse_index(key: &str) -> Option<usize> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key.len() == 1 || !key.starts_with('0'));
    if canonical { key.parse().ok() } else { None }
}

impl PathExpr {
    /// Parses the text of a `@path` or the first element of an `@arrayPath`. Like mapping-kit,
    /// the first `$.` is removed before the path is cut into pieces.
    pub(crate) fn parse_directive(raw: &str) -> Self {
        if raw.contains("$.") {
            Self::parse_pieces(&raw.replacen("$.", "", 1))
        } else {
            Self::parse_pieces(raw)
        }
    }

    /// Parses a `{{placeholder}}`: mapping-kit trims it but does not remove `$.`.
    pub(crate) fn parse_placeholder(raw: &str) -> Self {
        Self::parse_pieces(raw.trim())
    }

    /// The array form of `@path`: every element is one key, taken literally.
    pub(crate) fn from_keys(keys: Vec<String>) -> Self {
        PathExpr {
            segments: keys.into_iter().map(Segment::new).collect(),
        }
    }

    fn parse_pieces(text: &str) -> Self {
        let segments = text
            .split(['.', '[', ']'])
            .filter(|piece| !piece.is_empty())
            .map(|piece| Segment::new(piece.to_owned()))
            .collect();
        PathExpr { segments }
    }

    /// The value at this path, or `None` when the path leads nowhere (a missing key, an index
    /// out of range, or a step into a string, number, boolean or null).
    pub(crate) fn lookup<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.lookup_from(root, 0)
    }

    /// The key of piece `index` of the path, if the path has that many pieces.
    pub(crate) fn key(&self, index: usize) -> Option<&str> {
        self.segments.get(index).map(|segment| segment.key.as_str())
    }

    /// Follows the path from piece `start` on, with `value` the value its first `start`
    /// pieces reached: [`lookup`](Self::lookup) for an input that resolves the first pieces
    /// itself.
    pub(crate) fn lookup_from<'a>(&self, value: &'a Value, start: usize) -> Option<&'a Value> {
        let mut current = value;
        for segment in self.segments.get(start..).unwrap_or_default() {
            current = match current {
                Value::Object(map) => map.get(&segment.key)?,
                Value::Array(items) => items.get(segment.index?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn get<'a>(path: &str, input: &'a Value) -> Option<&'a Value> {
        PathExpr::parse_directive(path).lookup(input)
    }

    #[test]
    fn dollar_prefix_is_optional() {
        let input = json!({"foo": {"bar": 42}});
        assert_eq!(get("$.foo.bar", &input), Some(&json!(42)));
        assert_eq!(get("foo.bar", &input), Some(&json!(42)));
    }

    #[test]
    fn empty_paths_are_the_whole_payload() {
        let input = json!({"foo": "bar"});
        for path in ["", "$.", "$..", "."] {
            assert_eq!(get(path, &input), Some(&input), "path {path:?}");
        }
    }

    #[test]
    fn indexes_work_with_brackets_and_dots() {
        let input = json!({"foo": {"baz": [{"num": 1}, {"num": 2}]}});
        assert_eq!(get("$.foo.baz[0].num", &input), Some(&json!(1)));
        assert_eq!(get("foo.baz.1.num", &input), Some(&json!(2)));
        assert_eq!(get("foo.baz[2].num", &input), None);
        assert_eq!(get("foo.baz[01].num", &input), None);
    }

    #[test]
    fn numeric_keys_of_objects_are_plain_keys() {
        let input = json!({"codes": {"0": "zero"}});
        assert_eq!(get("codes[0]", &input), Some(&json!("zero")));
    }

    #[test]
    fn keys_may_contain_spaces() {
        let input = json!({"integrations": {"Actions Amplitude": {"session_id": "s1"}}});
        assert_eq!(
            get("$.integrations.Actions Amplitude.session_id", &input),
            Some(&json!("s1"))
        );
    }

    #[test]
    fn stepping_into_a_scalar_or_null_is_missing() {
        let input = json!({"foo": "bar", "n": null});
        assert_eq!(get("foo.bar.baz", &input), None);
        assert_eq!(get("n.x", &input), None);
        assert_eq!(get("n", &input), Some(&Value::Null));
    }

    #[test]
    fn braces_and_trailing_dots_are_not_special() {
        let input = json!({"foo": "bar"});
        assert_eq!(get("$.{{foo}}", &input), None);
        assert_eq!(get("$.foo.", &input), Some(&json!("bar")));
    }

    #[test]
    fn key_array_form_takes_keys_literally() {
        let input = json!({"integrations": {"Company.Billing": {"chicken": "noodle"}}});
        let path = PathExpr::from_keys(vec![
            "integrations".into(),
            "Company.Billing".into(),
            "chicken".into(),
        ]);
        assert_eq!(path.lookup(&input), Some(&json!("noodle")));
    }

    #[test]
    fn placeholders_keep_the_dollar_and_trim_spaces() {
        let input = json!({"a": 1, "$": {"a": 2}});
        assert_eq!(
            PathExpr::parse_placeholder(" a ").lookup(&input),
            Some(&json!(1))
        );
        assert_eq!(
            PathExpr::parse_placeholder("$.a").lookup(&input),
            Some(&json!(2))
        );
    }
}

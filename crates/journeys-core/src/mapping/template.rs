//! `@template` strings: text with `{{path}}` (or `{{{path}}}`) placeholders, parsed once.
//!
//! As in mapping-kit, a placeholder is two (or three) opening braces, at least one character
//! that is not `}`, and as many closing braces; its inside is trimmed and read as a path (without
//! `$.` stripping). A missing or null value becomes empty text, other values are interpolated as
//! JavaScript's `String(x)` would. Nothing is HTML-escaped, and both brace styles behave the same.
//!
//! One deliberate difference: mapping-kit substitutes triple-brace placeholders first and then
//! scans the result again for double-brace ones, so payload text containing `{{x}}` could be
//! expanded a second time. Here the template is parsed once and values are never re-scanned.

use serde_json::Value;

use super::eval::Scope;
use super::js;
use super::path::PathExpr;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
    /// Bytes of literal text, to size the output in one allocation in the common case.
    text_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(PathExpr),
}

impl Template {
    pub(crate) fn parse(source: &str) -> Self {
        let bytes = source.as_bytes();
        let mut parts = Vec::new();
        let mut text_len = 0;
        let mut text_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'{' {
                let found = placeholder_at(source, i, 3).or_else(|| placeholder_at(source, i, 2));
                if let Some((inner, end)) = found {
                    if text_start < i {
                        text_len += i - text_start;
                        parts.push(Part::Text(source[text_start..i].to_owned()));
                    }
                    parts.push(Part::Field(PathExpr::parse_placeholder(inner)));
                    i = end;
                    text_start = end;
                    continue;
                }
            }
            i += 1;
        }
        if text_start < bytes.len() {
            text_len += bytes.len() - text_start;
            parts.push(Part::Text(source[text_start..].to_owned()));
        }
        Template { parts, text_len }
    }

    pub(crate) fn render(&self, input: Scope<'_>) -> String {
        let mut out = String::with_capacity(self.text_len + 16 * self.parts.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) => match input.lookup(path) {
                    None | Some(Value::Null) => {}
                    Some(value) => js::push_string(value, &mut out),
                },
            }
        }
        out
    }
}

/// Matches `{`×n, one or more non-`}` bytes, `}`×n at byte `start`; returns the inside and the
/// byte just past the match. Braces are ASCII, so every returned index is a char boundary.
fn placeholder_at(source: &str, start: usize, braces: usize) -> Option<(&str, usize)> {
    let bytes = source.as_bytes();
    let inner_start = start + braces;
    if bytes.len() < inner_start || !bytes[start..inner_start].iter().all(|&b| b == b'{') {
        return None;
    }
    let inner_len = bytes[inner_start..]
        .iter()
        .take_while(|&&b| b != b'}')
        .count();
    if inner_len == 0 {
        return None;
    }
    let inner_end = inner_start + inner_len;
    let end = inner_end + braces;
    if bytes.len() < end || !bytes[inner_end..end].iter().all(|&b| b == b'}') {
        return None;
    }
    Some((&source[inner_start..inner_end], end))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(template: &str, input: &Value) -> String {
        Template::parse(template).render(Scope::Value(input))
    }

    #[test]
    fn replaces_placeholders_with_payload_values() {
        let input = json!({"traits": {"name": "Mr. Rogers"}, "userId": "abc123"});
        assert_eq!(
            render("Hello, {{traits.name}}!", &input),
            "Hello, Mr. Rogers!"
        );
        assert_eq!(
            render("{{traits.name}} ({{userId}})", &input),
            "Mr. Rogers (abc123)"
        );
    }

    #[test]
    fn missing_and_null_values_become_empty_text() {
        let input = json!({"n": null});
        assert_eq!(render("Hello, {{traits.fullName}}!", &input), "Hello, !");
        assert_eq!(render("[{{n}}]", &input), "[]");
    }

    #[test]
    fn non_string_values_interpolate_like_javascript() {
        let input = json!({"b": true, "n": 1, "f": 2.50, "o": {"x": 1}, "a": [1, "two"]});
        assert_eq!(
            render("{{b}} {{n}} {{f}} {{o}} {{a}}", &input),
            "true 1 2.5 [object Object] 1,two"
        );
    }

    #[test]
    fn triple_braces_are_not_escaped_either() {
        let input = json!({"a": "<b>Hi</b>"});
        assert_eq!(
            render("<blink>{{a}} {{{a}}}</blink>", &input),
            "<blink><b>Hi</b> <b>Hi</b></blink>"
        );
    }

    #[test]
    fn stray_braces_stay_as_text() {
        let input = json!({"foo": "hello"});
        assert_eq!(render("{{foo}}}", &input), "hello}");
        assert_eq!(render("{{}} {foo} {{ foo }}", &input), "{{}} {foo} hello");
        assert_eq!(render("{{foo", &input), "{{foo");
        assert_eq!(render("{{[unknown]}}", &input), "");
    }

    #[test]
    fn values_are_not_rescanned_for_placeholders() {
        let input = json!({"a": "{{b}}", "b": "no"});
        assert_eq!(render("{{{a}}} {{a}}", &input), "{{b}} {{b}}");
    }

    #[test]
    fn multibyte_text_around_placeholders_is_kept() {
        let input = json!({"name": "Zoë"});
        assert_eq!(render("¡Hola, {{name}}! ✓", &input), "¡Hola, Zoë! ✓");
    }
}

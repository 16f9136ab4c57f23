//! How JavaScript turns JSON values into text.
//!
//! mapping-kit runs on Node.js, so text it produces (template interpolation, `@replace` on
//! numbers and booleans, `@json` encoding) follows JavaScript's `String(x)` and
//! `JSON.stringify(x)`. Mappings written for Segment should produce the same bytes here, so the
//! conversions are reproduced: `1.0` prints as `1`, `1e21` as `1e+21`, objects interpolate as
//! `[object Object]` and arrays as their comma-joined elements.

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// A short name for the JSON type of `value`, for error messages.
pub(crate) fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None => "nothing (missing)",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

/// Appends JavaScript's `String(value)`.
pub(crate) fn push_string(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => push_number(n, out),
        Value::String(s) => out.push_str(s),
        Value::Object(_) => out.push_str("[object Object]"),
        Value::Array(items) => {
            // `Array.prototype.join`: null elements become empty text.
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !item.is_null() {
                    push_string(item, out);
                }
            }
        }
    }
}

/// Appends JavaScript's `Number.prototype.toString()` of `n`.
pub(crate) fn push_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        push_f64(f, out);
    }
}

fn push_f64(value: f64, out: &mut String) {
    if value == 0.0 {
        out.push('0');
        return;
    }
    if !value.is_finite() {
        // JSON cannot hold these, but `String(x)` would print them this way.
        out.push_str(if value.is_nan() {
            "NaN"
        } else if value > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    if value < 0.0 {
        out.push('-');
    }
    // `{:e}` gives the shortest digits that round-trip, as JavaScript does; only the layout
    // differs, and that is rebuilt below (ECMA-262 Number::toString).
    let sci = format!("{:e}", value.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(n - k).unwrap_or(0),
        ));
    } else if 0 < n && n <= 21 {
        let split = usize::try_from(n).unwrap_or(0);
        out.push_str(&digits[..split]);
        out.push('.');
        out.push_str(&digits[split..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', usize::try_from(-n).unwrap_or(0)));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs());
    }
}

/// Appends JavaScript's `JSON.stringify(value)` (compact, numbers printed as JavaScript does).
pub(crate) fn push_json(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => push_number(n, out),
        Value::String(s) => push_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(key, out);
                out.push(':');
                push_json(item, out);
            }
            out.push('}');
        }
        Value::Null | Value::Bool(_) => push_string(value, out),
    }
}

/// JSON.stringify's escaping: short forms for `\b \f \n \r \t`, lowercase `\u00XX` for other
/// control characters, and nothing else (Rust strings cannot hold lone surrogates).
fn push_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn string(value: &Value) -> String {
        let mut out = String::new();
        push_string(value, &mut out);
        out
    }

    fn json_text(value: &Value) -> String {
        let mut out = String::new();
        push_json(value, &mut out);
        out
    }

    #[test]
    fn numbers_print_like_javascript() {
        let cases = [
            (json!(1), "1"),
            (json!(-7), "-7"),
            (json!(1.0), "1"),
            (json!(1.5), "1.5"),
            (json!(0.1), "0.1"),
            (json!(-0.25), "-0.25"),
            (json!(123_456.789), "123456.789"),
            (json!(1e21), "1e+21"),
            (json!(1.5e21), "1.5e+21"),
            (json!(1e20), "100000000000000000000"),
            (json!(0.000_001), "0.000001"),
            (json!(1.5e-7), "1.5e-7"),
            (
                json!(18_446_744_073_709_551_615_u64),
                "18446744073709551615",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(string(&value), expected, "{value}");
        }
    }

    #[test]
    fn containers_stringify_like_javascript() {
        assert_eq!(string(&json!({"a": 1})), "[object Object]");
        assert_eq!(
            string(&json!([1, null, "x", [2, 3], true])),
            "1,,x,2,3,true"
        );
        assert_eq!(string(&Value::Null), "null");
    }

    #[test]
    fn json_encoding_matches_json_stringify() {
        assert_eq!(json_text(&json!("bar")), "\"bar\"");
        assert_eq!(json_text(&json!({"bar": "baz"})), "{\"bar\":\"baz\"}");
        assert_eq!(json_text(&json!([1.0, 2.5, null])), "[1,2.5,null]");
        assert_eq!(
            json_text(&json!("tab\there \"q\"")),
            "\"tab\\there \\\"q\\\"\""
        );
        assert_eq!(json_text(&json!("\u{1}é/")), "\"\\u0001é/\"");
    }
}

//! Dot paths into JSON values: `cart.total`, `items[0].sku`, optionally prefixed by `$.`.
//!
//! Used by filters, conditions and unique identifiers. A path that names nothing resolves to
//! `None` ("missing"), which is different from a present JSON `null`.

use serde_json::Value;

/// One step of a parsed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `path` into segments; `None` when it is malformed (empty segment, bad index).
pub fn parse(path: &str) -> Option<Vec<Segment<'_>>> {
    let path = path.strip_prefix("$.").unwrap_or(path);
    if path.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() {
            return None;
        }
        out.push(Segment::Key(key));
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let index = rest.get(1..close)?.parse::<usize>().ok()?;
            out.push(Segment::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(out)
}

/// Whether `path` is well formed.
pub fn is_valid(path: &str) -> bool {
    parse(path).is_some()
}

/// The value at `path` inside `root`, or `None` when missing or malformed.
pub fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    // Fast path for the common single-key case.
    if !path.bytes().any(|b| matches!(b, b'.' | b'[' | b'$')) {
        return root.as_object()?.get(path);
    }
    let mut cur = root;
    for seg in parse(path)? {
        cur = match seg {
            Segment::Key(k) => cur.as_object()?.get(k)?,
            Segment::Index(i) => cur.as_array()?.get(i)?,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn looks_up_nested_keys_and_indexes() {
        let v = json!({"cart": {"total": 10, "items": [{"sku": "a"}, {"sku": "b"}]}, "plan": null});
        assert_eq!(lookup(&v, "cart.total"), Some(&json!(10)));
        assert_eq!(lookup(&v, "$.cart.items[1].sku"), Some(&json!("b")));
        assert_eq!(lookup(&v, "cart.items[2].sku"), None);
        assert_eq!(lookup(&v, "plan"), Some(&Value::Null));
        assert_eq!(lookup(&v, "missing"), None);
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in ["", "a..b", "a.", ".a", "a[x]", "a[1", "a[1]b"] {
            assert!(!is_valid(bad), "{bad} should be invalid");
        }
        for good in ["a", "a.b", "a[0]", "a[0][1].c", "$.a.b"] {
            assert!(is_valid(good), "{good} should be valid");
        }
    }
}

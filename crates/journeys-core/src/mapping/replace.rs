//! Literal search-and-replace for `@replace`.
//!
//! mapping-kit escapes every regular-expression character of the pattern and then calls
//! `String.prototype.replace` with the `g` (global, the default) and `i` (ignorecase) flags, so
//! the pattern is always literal. The replacement text is still read by JavaScript's
//! substitution rules: `$$` inserts `$` and `$&` the matched text; since the escaped pattern has
//! no groups, `$1` and the like stay as written. Case-insensitive matching compares characters
//! by their simple uppercase form, as JavaScript's non-Unicode `i` flag does.
//!
//! One deliberate difference: `` $` `` and `$'` (the text before and after the match) are kept
//! as written, because with a global replace they make the output grow with the square of the
//! payload text.
//!
//! mapping-kit also caps patterns and replacements at 10 characters to bound regular-expression
//! cost; matching here is linear and literal, so there is no such cap.

/// One compiled pattern/replacement pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replacer {
    pattern: String,
    /// The pattern's characters in folded form, when matching ignores case.
    folded: Option<Vec<char>>,
    replacement: Vec<Piece>,
    global: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Matched,
}

impl Replacer {
    /// `pattern` must not be empty (validation guarantees it).
    pub(crate) fn new(pattern: &str, replacement: &str, ignore_case: bool, global: bool) -> Self {
        Replacer {
            pattern: pattern.to_owned(),
            folded: ignore_case.then(|| pattern.chars().map(fold).collect()),
            replacement: parse_replacement(replacement),
            global,
        }
    }

    /// Replaces matches in `value`; `None` as soon as the output would pass `limit` bytes, so
    /// that nested replacements cannot multiply an event into an unbounded string.
    pub(crate) fn apply(&self, value: &str, limit: usize) -> Option<String> {
        if value.len() > limit {
            return None;
        }
        let mut out = String::with_capacity(value.len());
        let mut copied = 0;
        let mut search_from = 0;
        while let Some((start, end)) = self.find(value, search_from) {
            out.push_str(&value[copied..start]);
            for piece in &self.replacement {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Matched => out.push_str(&value[start..end]),
                }
            }
            if out.len() > limit {
                return None;
            }
            copied = end;
            search_from = end;
            if !self.global || end == start {
                break;
            }
        }
        out.push_str(&value[copied..]);
        (out.len() <= limit).then_some(out)
    }

    /// Byte range of the first match at or after byte `from` (a char boundary).
    fn find(&self, value: &str, from: usize) -> Option<(usize, usize)> {
        let rest = value.get(from..)?;
        match &self.folded {
            None => rest
                .find(&self.pattern)
                .map(|at| (from + at, from + at + self.pattern.len())),
            Some(folded) => rest.char_indices().find_map(|(at, _)| {
                let mut chars = rest[at..].char_indices();
                for &want in folded {
                    let (_, got) = chars.next()?;
                    if fold(got) != want {
                        return None;
                    }
                }
                let len = chars.next().map_or(rest.len() - at, |(next, _)| next);
                Some((from + at, from + at + len))
            }),
        }
    }
}

/// JavaScript's `Canonicalize` for a non-Unicode, case-insensitive regular expression: the
/// character's uppercase form when that is a single character, except that a non-ASCII
/// character never folds onto an ASCII one.
fn fold(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) if c.is_ascii() || !u.is_ascii() => u,
        _ => c,
    }
}

fn parse_replacement(replacement: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            text.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                text.push('$');
            }
            Some('&') => {
                chars.next();
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Matched);
            }
            _ => text.push('$'),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(
        value: &str,
        pattern: &str,
        replacement: &str,
        ignore: bool,
        global: bool,
    ) -> String {
        Replacer::new(pattern, replacement, ignore, global)
            .apply(value, usize::MAX)
            .unwrap_or_default()
    }

    #[test]
    fn global_replaces_every_occurrence_and_first_only_otherwise() {
        assert_eq!(
            replace("many+different+things", "+", "_", false, true),
            "many_different_things"
        );
        assert_eq!(
            replace("many+different+things", "+", "_", false, false),
            "many_different+things"
        );
    }

    #[test]
    fn case_sensitivity_follows_the_flag() {
        assert_eq!(
            replace("cWWl-story-ww", "WW", "oo", false, true),
            "cool-story-ww"
        );
        assert_eq!(
            replace("aab-----AaB---aab", "AaB", "nice", true, true),
            "nice-----nice---nice"
        );
    }

    #[test]
    fn regex_characters_are_literal() {
        assert_eq!(replace("a.b.c", ".", "", false, true), "abc");
        assert_eq!(replace("abc\"def\\gh", "\\", "", false, true), "abc\"defgh");
        assert_eq!(replace("x(1)", "(1)", "[2]", false, true), "x[2]");
    }

    #[test]
    fn dollar_sequences_substitute_like_javascript() {
        assert_eq!(replace("a-b", "-", "[$&]", false, true), "a[-]b");
        assert_eq!(replace("a-b", "-", "$$", false, true), "a$b");
        assert_eq!(replace("a-b", "-", "<$`|$'>", false, true), "a<$`|$'>b");
        assert_eq!(replace("a-b", "-", "$1$x$", false, true), "a$1$x$b");
    }

    #[test]
    fn ignorecase_handles_multibyte_text() {
        assert_eq!(
            replace("ÉCOLE école", "éc", "ec", true, true),
            "ecOLE ecole"
        );
        // A non-ASCII character does not fold onto ASCII (U+017F LONG S uppercases to S).
        assert_eq!(replace("ſ s", "s", "x", true, true), "ſ x");
    }

    #[test]
    fn no_match_returns_the_value_unchanged() {
        assert_eq!(replace("abcdefgh", "_", "rrrrr", false, true), "abcdefgh");
        assert_eq!(replace("", "_", "rrrrr", false, true), "");
    }
}

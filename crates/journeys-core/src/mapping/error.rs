//! Faults the mapping engine reports: static problems found when a mapping is compiled (so a
//! journey can be rejected with the JSON path of each fault), and the few runtime faults that
//! depend on the payload being rendered.

use std::fmt;

/// One fault in a mapping, found without looking at any payload.
///
/// `path` locates the fault relative to the mapping root so an editor can point at it: object
/// keys are joined with `.` (keys that contain `.`, `[`, `]` or `"` are written `["key"]`),
/// array elements are written `[n]`, and directive names appear as keys, e.g.
/// `properties.total.@path` or `items.@arrayPath[1]`. The root itself is the empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingProblem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for MappingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(root): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a mapping could not be rendered.
///
/// Everything that can be known from the mapping alone is reported as [`MappingError::Invalid`]
/// (and by `validate` before a journey is published); the other variants depend on the payload,
/// mirroring the cases where mapping-kit throws at transform time.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The mapping itself is invalid; render only reports this when it was not compiled first.
    #[error("invalid mapping: {}", join_problems(.0))]
    Invalid(Vec<MappingProblem>),
    /// A directive whose argument is itself a directive (`{"@path": {"@path": ...}}`,
    /// `{"@template": {...}}`) resolved to something other than a string.
    #[error("{path}: expected the nested directive to resolve to a string, got {found}")]
    ExpectedString { path: String, found: &'static str },
    /// `@json` in `decode` mode was given a string that is not JSON. mapping-kit throws here
    /// (`JSON.parse`), so the send fails instead of silently dropping the field.
    #[error("{path}: @json could not decode the value: {reason}")]
    InvalidJson { path: String, reason: String },
    /// A directive's output outgrew the rendering budget (nested `@replace` can multiply a
    /// payload's size at every level); rendering stops there instead of exhausting memory.
    #[error("{path}: the rendered text would exceed {limit} bytes")]
    TooLarge { path: String, limit: usize },
}

fn join_problems(problems: &[MappingProblem]) -> String {
    let mut out = String::new();
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&problem.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_every_problem_with_its_path() {
        let err = MappingError::Invalid(vec![
            MappingProblem {
                path: String::new(),
                message: "bad root".into(),
            },
            MappingProblem {
                path: "a.@path".into(),
                message: "bad path".into(),
            },
        ]);
        assert_eq!(
            err.to_string(),
            "invalid mapping: (root): bad root; a.@path: bad path"
        );
    }
}

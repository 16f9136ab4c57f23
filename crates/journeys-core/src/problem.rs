//! A fault in a journey definition, located by the path a user can act on.

use serde::{Deserialize, Serialize};

/// One problem with a definition: `path` uses the gRPC field names (`steps[3].hold_until.branches[1].next`),
/// so a user can find the field in the JSON they sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

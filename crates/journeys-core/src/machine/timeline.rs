//! Timeline rows as the state machine writes them and as readers rely on them: the kinds
//! (stored by name) and the detail of a branch row, whose JSON path the store's statistics
//! query. Both sides use these values, so a rename cannot silently break the counts.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::{Json, Timestamp};

/// The key of the branch name in a branch row's detail.
pub const BRANCH_DETAIL_KEY: &str = "branch";

/// The JSON path of the branch name in a branch row's detail (for SQL `JSON_EXTRACT`).
pub const BRANCH_DETAIL_PATH: &str = "$.branch";

/// The detail of a [`TimelineKind::Branch`] row for the branch named `name`.
pub fn branch_detail(name: &str) -> Json {
    json!({ BRANCH_DETAIL_KEY: name })
}

/// One transition of an instance, as `GetInstance` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    pub step_key: String,
    pub kind: TimelineKind,
    pub cause: Cause,
    /// Extra facts (branch taken, message id…); `null` when there are none.
    #[serde(default, skip_serializing_if = "Json::is_null")]
    pub detail: Json,
}

/// What a timeline row records. Names are stable (stored and shown in the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Entered,
    /// The instance reached a step.
    Step,
    /// A hold-until, data-split or random-split branch was taken.
    Branch,
    /// A hold-until branch returned to the start of its step.
    ReturnedToStart,
    /// A hold-until's maximum duration passed; the timeout branch follows.
    TimedOut,
    Send,
    Completed,
    Exited,
    Failed,
}

impl TimelineKind {
    /// The stable name stored in timeline rows.
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Entered => "entered",
            TimelineKind::Step => "step",
            TimelineKind::Branch => "branch",
            TimelineKind::ReturnedToStart => "returned_to_start",
            TimelineKind::TimedOut => "timed_out",
            TimelineKind::Send => "send",
            TimelineKind::Completed => "completed",
            TimelineKind::Exited => "exited",
            TimelineKind::Failed => "failed",
        }
    }
}

/// Why a transition happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cause {
    /// An event, by its `messageId`.
    Event { message_id: String },
    /// A timer, by its id.
    Timer { id: String },
    /// An operator or the control plane (archive in exit mode, `ExitInstance`).
    Operator,
}

impl Cause {
    /// The short form the API shows: the event's message id, `timer` or `operator`.
    pub fn label(&self) -> &str {
        match self {
            Cause::Event { message_id } => message_id,
            Cause::Timer { .. } => "timer",
            Cause::Operator => "operator",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_branch_path_are_what_readers_query() {
        assert_eq!(TimelineKind::Step.as_str(), "step");
        assert_eq!(TimelineKind::Branch.as_str(), "branch");
        for kind in [
            TimelineKind::Entered,
            TimelineKind::ReturnedToStart,
            TimelineKind::TimedOut,
        ] {
            let stored = serde_json::to_value(kind).unwrap_or_default();
            assert_eq!(stored, Json::from(kind.as_str()));
        }
        let detail = branch_detail("Bought");
        let path = BRANCH_DETAIL_PATH.trim_start_matches("$.");
        assert_eq!(detail.get(path), Some(&Json::from("Bought")));
    }
}

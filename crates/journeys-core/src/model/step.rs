//! Steps: the nodes of a journey's graph.
//!
//! A `next` of `None` ends the instance. Durations are `std::time::Duration`; the limits they
//! must respect are checked by validation, not by construction, so that an invalid draft can
//! still be stored and reported on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Json;
use super::filter::{Condition, PropertyFilter};

/// One node of the journey graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique and stable within the journey: `[a-z0-9_]{1,64}`.
    pub key: String,
    /// Display name, at most 73 characters.
    pub name: String,
    pub kind: StepKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    Delay(DelayStep),
    HoldUntil(HoldUntilStep),
    DataSplit(DataSplitStep),
    RandomSplit(RandomSplitStep),
    Send(SendStep),
    End,
}

impl StepKind {
    /// Every step key this step can lead to, in branch order (for graph checks).
    pub fn successors(&self) -> Vec<&str> {
        let nexts: Vec<&Option<String>> = match self {
            StepKind::Delay(d) => vec![&d.next],
            StepKind::HoldUntil(h) => h
                .branches
                .iter()
                .map(|b| &b.next)
                .chain(std::iter::once(&h.timeout_next))
                .collect(),
            StepKind::DataSplit(s) => s
                .branches
                .iter()
                .map(|b| &b.next)
                .chain(std::iter::once(&s.else_next))
                .collect(),
            StepKind::RandomSplit(s) => s.branches.iter().map(|b| &b.next).collect(),
            StepKind::Send(s) => vec![&s.next],
            StepKind::End => Vec::new(),
        };
        nexts.into_iter().filter_map(Option::as_deref).collect()
    }

    /// Short lowercase name of the step type, for timelines and messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Delay(_) => "delay",
            StepKind::HoldUntil(_) => "hold_until",
            StepKind::DataSplit(_) => "data_split",
            StepKind::RandomSplit(_) => "random_split",
            StepKind::Send(_) => "send",
            StepKind::End => "end",
        }
    }
}

/// Waits a fixed duration, then continues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayStep {
    pub duration: Duration,
    pub next: Option<String>,
}

/// Waits for the first matching branch event, or takes `timeout_next` after `max_duration`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldUntilStep {
    pub branches: Vec<HoldBranch>,
    pub max_duration: Duration,
    pub timeout_next: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldBranch {
    pub name: String,
    pub event: String,
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
    pub next: Option<String>,
    /// Add the event to context, restart the hold timer and keep waiting (bounded passes).
    #[serde(default)]
    pub return_to_start: bool,
}

/// Evaluated at once; the first branch whose conditions all hold wins, else `else_next`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSplitStep {
    pub branches: Vec<DataSplitBranch>,
    pub else_next: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSplitBranch {
    pub name: String,
    /// ANDed.
    pub conditions: Vec<Condition>,
    pub next: Option<String>,
}

/// Deterministic weighted choice; percentages total exactly 100.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomSplitStep {
    pub branches: Vec<RandomBranch>,
    /// Draw from (journey, profile) instead of (journey, instance).
    #[serde(default)]
    pub same_branch_on_reentry: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomBranch {
    pub name: String,
    pub percent: u32,
    pub next: Option<String>,
}

/// Queues a payload for a destination, then continues at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendStep {
    #[serde(flatten)]
    pub spec: SendSpec,
    pub next: Option<String>,
}

/// What to send and where; shared by send steps and exit-rule sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendSpec {
    pub destination_id: String,
    #[serde(default)]
    pub action: SendAction,
    /// Event name in the payload; defaults to the step name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Profile traits copied into `properties`.
    #[serde(default)]
    pub traits: Vec<String>,
    /// Mapping-kit mapping evaluated against the default payload; replaces the body when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<Json>,
}

/// The webhook request to make: method and a path appended to the destination URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAction {
    /// Upper-case HTTP method; `POST` by default.
    pub method: String,
    /// Appended to the destination URL; may hold `{{...}}` placeholders over the payload.
    #[serde(default)]
    pub path: String,
}

impl Default for SendAction {
    fn default() -> Self {
        Self {
            method: "POST".to_owned(),
            path: String::new(),
        }
    }
}

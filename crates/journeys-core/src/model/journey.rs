//! A journey definition: entry trigger, entry rule, steps and exit rules.

use serde::{Deserialize, Serialize};

use super::filter::PropertyFilter;
use super::step::{SendSpec, Step};

/// Everything an operator defines about a journey. Identity, lifecycle state and revision live
/// outside (see [`JourneyMeta`]) because they are assigned by the control plane, not authored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JourneyDefinition {
    /// Unique among journeys, at most 73 characters.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub entry: EntryTrigger,
    pub entry_rule: EntryRule,
    /// Key of the first step.
    pub start_step: String,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub exit_rules: Vec<ExitRule>,
}

impl JourneyDefinition {
    /// The step with `key`, if any. Linear: journeys have at most 50 steps.
    pub fn step(&self, key: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.key == key)
    }

    /// The property path that keys parallel instances, when the journey re-enters.
    pub fn unique_identifier(&self) -> Option<&str> {
        match &self.entry_rule {
            EntryRule::ReenterEveryTime { unique_identifier } => Some(unique_identifier),
            EntryRule::EnterOnce => None,
        }
    }
}

/// Identity and version of a published journey, stamped into payloads and timelines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyMeta {
    pub id: String,
    /// The journey's revision; published journeys never change, so this pins the definition.
    pub version: i64,
    pub name: String,
}

/// What starts an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryTrigger {
    /// Track event name (or `identify`/`page`… for other call types).
    pub event: String,
    /// The profile must be in this audience when the event is processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_key: Option<String>,
    /// All must match (AND).
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
}

/// Whether and how a profile may enter again. The unique identifier lives inside the re-entry
/// variant so that "re-entry without an identifier" cannot be expressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum EntryRule {
    /// Each distinct value of `unique_identifier` (a dot path into the entry event's
    /// properties) gets its own instance; an active instance with the same value blocks a
    /// second one.
    ReenterEveryTime { unique_identifier: String },
    /// At most one instance per profile, ever.
    EnterOnce,
}

/// Ends every active instance of the journey for the profile when a matching event arrives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitRule {
    pub event: String,
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
    /// Only instances whose unique-identifier value equals the event's value exit.
    #[serde(default)]
    pub match_unique_identifier: bool,
    /// Sent before the instance exits, with the exit event in its journey context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<SendSpec>,
}

//! Which exit rule, if any, an event triggers for an instance.

use super::Journey;
use super::entry::canonical_value;
use super::instance::Instance;
use crate::eval::filters_match;
use crate::model::Event;

/// The first exit rule of `journey` that `event` triggers for `instance`, if any. Only active
/// instances exit. Feed the index to `step` as [`Input::Exit`](super::Input::Exit).
pub fn matching_exit_rule(journey: &Journey, event: &Event, instance: &Instance) -> Option<usize> {
    if !instance.is_active() {
        return None;
    }
    (0..journey.definition().exit_rules.len())
        .find(|&i| exit_rule_matches(journey, i, event, instance))
}

/// Whether exit rule `index` matches `event` for `instance`: same event name, every filter
/// matches, and — when the rule asks for it and the journey re-enters — the event's value of
/// the unique identifier equals the instance's. For an `ENTER_ONCE` journey (one instance per
/// profile) `match_unique_identifier` has nothing to compare and is satisfied.
pub fn exit_rule_matches(
    journey: &Journey,
    index: usize,
    event: &Event,
    instance: &Instance,
) -> bool {
    let Some(rule) = journey.definition().exit_rules.get(index) else {
        return false;
    };
    if rule.event != event.event || !filters_match(&rule.filters, &event.properties) {
        return false;
    }
    if !rule.match_unique_identifier {
        return true;
    }
    match journey.definition().unique_identifier() {
        None => true,
        Some(path) => {
            let value = event.property(path).and_then(canonical_value);
            value.is_some() && value == instance.unique_value
        }
    }
}

//! The trait merge of an `identify`: top-level keys replace (as the store merges them), and a
//! boolean trait named like an active audience sets the profile's membership of it.

use std::collections::HashSet;

use serde_json::Map;

use super::{ProfileEffect, ProfileState};
use crate::model::Json;

/// Merges `incoming` (anything but an object is ignored) into the profile's traits and keeps
/// the memberships of the audiences in `audience_keys` in sync with boolean traits.
pub fn merge(
    state: &mut ProfileState,
    incoming: &Json,
    audience_keys: &HashSet<String>,
    effects: &mut Vec<ProfileEffect>,
) {
    let Json::Object(incoming) = incoming else {
        return;
    };
    if !state.traits.is_object() {
        state.traits = Json::Object(Map::new());
    }
    for (key, value) in incoming {
        if let Json::Object(current) = &mut state.traits {
            current.insert(key.clone(), value.clone());
        }
        if let Json::Bool(member) = value
            && audience_keys.contains(key)
        {
            if *member {
                state.audiences.insert(key.clone());
            } else {
                state.audiences.remove(key);
            }
        }
    }
    effects.push(ProfileEffect::TraitsMerged(incoming.clone()));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn keys_replace_and_boolean_traits_sync_active_audiences() {
        let mut state = ProfileState {
            traits: json!({"plan": "free", "nested": {"a": 1}}),
            audiences: keys(&["vip"]),
            ..ProfileState::default()
        };
        let active = keys(&["vip", "beta"]);
        let mut effects = Vec::new();
        merge(
            &mut state,
            &json!({"vip": false, "beta": true, "newsletter": true, "nested": {"b": 2}}),
            &active,
            &mut effects,
        );
        assert_eq!(
            state.traits,
            json!({"plan": "free", "vip": false, "beta": true, "newsletter": true, "nested": {"b": 2}})
        );
        // newsletter names no active audience: no membership.
        assert_eq!(state.audiences, keys(&["beta"]));
        assert_eq!(effects.len(), 1);
        // A non-boolean value leaves the membership alone.
        merge(&mut state, &json!({"beta": "yes"}), &active, &mut effects);
        assert_eq!(state.audiences, keys(&["beta"]));
        // Anything but an object is no merge.
        merge(&mut state, &json!(["vip"]), &active, &mut effects);
        assert_eq!(effects.len(), 2);
    }

    #[test]
    fn traits_that_are_no_object_become_one() {
        let mut state = ProfileState {
            traits: Json::Null,
            ..ProfileState::default()
        };
        merge(
            &mut state,
            &json!({"a": 1}),
            &HashSet::new(),
            &mut Vec::new(),
        );
        assert_eq!(state.traits, json!({"a": 1}));
    }
}

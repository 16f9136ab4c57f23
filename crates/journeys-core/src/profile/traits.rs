//! The trait merge of an `identify`: top-level keys replace (as the store merges them), and a
//! boolean trait named like an active audience sets the profile's membership of it.

use std::collections::HashSet;

use serde_json::Map;

use super::{ProfileEffect, ProfileState};
use crate::model::Json;

/// How large a profile's traits may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraitLimits {
    /// Most top-level traits of one profile.
    pub max_count: usize,
    /// Most bytes of one profile's traits, serialized as JSON.
    pub max_bytes: usize,
}

impl TraitLimits {
    /// 1,000 traits and 256 KiB per profile: far above what identify calls carry, far below
    /// what makes a profile slow to load and to read back (`GetProfile`).
    pub const DEFAULT: TraitLimits = TraitLimits {
        max_count: 1_000,
        max_bytes: 256 * 1024,
    };
}

impl Default for TraitLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Whether merging `incoming` into `current` keeps the traits within `limits`; `Err` says
/// which limit and by how much. A merge that does not grow the traits past a limit is always
/// allowed, so a profile already over a (lowered) limit can still be updated and shrunk.
///
/// # Errors
/// A sentence for the client naming the limit.
pub fn check_limits(current: &Json, incoming: &Json, limits: TraitLimits) -> Result<(), String> {
    let Json::Object(incoming) = incoming else {
        return Ok(());
    };
    let empty = Map::new();
    let current = match current {
        Json::Object(current) => current,
        _ => &empty,
    };
    let added = incoming
        .keys()
        .filter(|k| !current.contains_key(*k))
        .count();
    let count = current.len() + added;
    if added > 0 && count > limits.max_count {
        return Err(format!(
            "this identify would give the profile {count} traits; at most {} are kept per \
             profile",
            limits.max_count
        ));
    }
    let before = json_len(&Json::Object(current.clone()));
    let mut merged = current.clone();
    for (key, value) in incoming {
        merged.insert(key.clone(), value.clone());
    }
    let after = json_len(&Json::Object(merged));
    if after > before && after > limits.max_bytes {
        return Err(format!(
            "this identify would make the profile's traits {after} bytes; at most {} are kept \
             per profile",
            limits.max_bytes
        ));
    }
    Ok(())
}

/// Bytes of `value` as compact JSON.
fn json_len(value: &Json) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

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
    fn growth_past_the_trait_limits_is_refused_but_updates_are_not() {
        let limits = TraitLimits {
            max_count: 3,
            max_bytes: 40,
        };
        let current = json!({"a": 1, "b": 2});
        assert!(check_limits(&current, &json!({"c": 3}), limits).is_ok());
        let err = check_limits(&current, &json!({"c": 3, "d": 4}), limits).unwrap_err();
        assert!(err.contains("4 traits; at most 3"), "{err}");
        // Replacing keys adds none.
        let full = json!({"a": 1, "b": 2, "c": 3, "d": 4});
        assert!(check_limits(&full, &json!({"a": 5}), limits).is_ok());
        let err = check_limits(&current, &json!({"b": "x".repeat(40)}), limits).unwrap_err();
        assert!(err.contains("at most 40 are kept"), "{err}");
        // Shrinking an oversized profile is fine.
        let big = json!({"a": "x".repeat(100)});
        assert!(check_limits(&big, &json!({"a": "small"}), limits).is_ok());
        assert!(check_limits(&current, &json!("not an object"), limits).is_ok());
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

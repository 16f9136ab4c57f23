//! One profile's state while a lane evaluates a batch: traits, audience memberships,
//! enter-once journeys and active instances, as loaded and then as changed by the batch's
//! earlier items (so a later event of the batch sees what an earlier one did).

use std::collections::{BTreeSet, HashSet};

use journeys_core::machine::Instance;
use journeys_core::model::Json;
use journeys_store::ProfileState;
use serde_json::Map;

/// An instance of the profile, with what the commit needs to know about it.
#[derive(Debug, Clone)]
pub(crate) struct WorkInstance {
    pub inst: Instance,
    /// The stored version when loaded; `None` for an instance started in this batch.
    pub stored_version: Option<i64>,
    /// Changed in this batch, so it must be written.
    pub dirty: bool,
}

/// A profile as the batch sees it.
#[derive(Debug, Clone)]
pub(crate) struct ProfileWork {
    /// Always a JSON object.
    pub traits: Json,
    /// Trait keys set in this batch, with their latest values.
    pub trait_changes: Map<String, Json>,
    /// Current memberships of active audiences.
    pub audiences: HashSet<String>,
    /// Memberships as loaded, to write only the net difference at the end.
    pub loaded_audiences: BTreeSet<String>,
    /// Enter-once journeys the profile entered.
    pub entered_once: HashSet<String>,
    /// Loaded active instances (id order), then those started in this batch; finished ones
    /// stay in the list (not active any more) until the batch is written.
    pub instances: Vec<WorkInstance>,
}

impl ProfileWork {
    /// The working copy of a loaded profile. An instance whose stored blob does not decode is
    /// left out (and logged): it cannot be stepped, and it must not block the profile.
    pub fn from_state(profile_id: &str, state: &ProfileState) -> Self {
        let instances = state
            .active_instances
            .iter()
            .filter_map(|record| {
                match serde_json::from_value::<Instance>(record.state_blob.clone()) {
                    Ok(inst) => Some(WorkInstance {
                        inst,
                        stored_version: Some(record.version),
                        dirty: false,
                    }),
                    Err(err) => {
                        tracing::error!(
                            profile_id,
                            instance_id = %record.id,
                            error = %err,
                            "stored instance does not decode; skipped"
                        );
                        None
                    }
                }
            })
            .collect();
        Self {
            traits: Json::Object(state.traits.clone()),
            trait_changes: Map::new(),
            audiences: state.audiences.iter().cloned().collect(),
            loaded_audiences: state.audiences.iter().cloned().collect(),
            entered_once: state.entered_once.iter().cloned().collect(),
            instances,
        }
    }

    /// Merges `identify` traits (top-level keys replace, as the store does) and keeps the
    /// memberships of active audiences named by boolean traits in sync.
    pub fn merge_traits(&mut self, traits: &Json, audience_keys: &HashSet<String>) {
        let Json::Object(incoming) = traits else {
            return;
        };
        if !self.traits.is_object() {
            self.traits = Json::Object(Map::new());
        }
        for (key, value) in incoming {
            if let Json::Object(current) = &mut self.traits {
                current.insert(key.clone(), value.clone());
            }
            self.trait_changes.insert(key.clone(), value.clone());
            if let Json::Bool(member) = value
                && audience_keys.contains(key)
            {
                if *member {
                    self.audiences.insert(key.clone());
                } else {
                    self.audiences.remove(key);
                }
            }
        }
    }

    /// Active instances across journeys.
    pub fn active_count(&self) -> usize {
        self.instances.iter().filter(|w| w.inst.is_active()).count()
    }

    /// Membership changes of the batch: `(added, removed)` audience keys.
    pub fn audience_changes(&self) -> (Vec<String>, Vec<String>) {
        let now: BTreeSet<&String> = self.audiences.iter().collect();
        let added = now
            .iter()
            .filter(|k| !self.loaded_audiences.contains(k.as_str()))
            .map(|k| (*k).clone())
            .collect();
        let removed = self
            .loaded_audiences
            .iter()
            .filter(|k| !self.audiences.contains(k.as_str()))
            .cloned()
            .collect();
        (added, removed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn boolean_traits_sync_active_audiences_by_net_change() {
        let state = ProfileState {
            traits: json!({"plan": "free"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            audiences: vec!["vip".into()],
            ..ProfileState::default()
        };
        let mut work = ProfileWork::from_state("u1", &state);
        let active = keys(&["vip", "beta"]);
        work.merge_traits(
            &json!({"vip": false, "beta": true, "newsletter": true}),
            &active,
        );
        work.merge_traits(&json!({"vip": true, "plan": "pro"}), &active);
        assert_eq!(
            work.traits,
            json!({"plan": "pro", "vip": true, "beta": true, "newsletter": true})
        );
        // vip was removed and re-added: no net change; newsletter is no active audience.
        assert_eq!(work.audience_changes(), (vec!["beta".to_owned()], vec![]));
        work.merge_traits(&json!({"vip": false}), &active);
        assert_eq!(
            work.audience_changes(),
            (vec!["beta".to_owned()], vec!["vip".to_owned()])
        );
        assert_eq!(work.trait_changes.len(), 4);
    }
}

//! One profile's state while a lane evaluates a batch: the core's [`ProfileState`] (traits,
//! audience memberships, enter-once journeys, instances), as loaded and then as changed by the
//! batch's earlier items, plus what the commit needs to know — stored versions, which
//! instances changed, which traits were set, which memberships were loaded.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use journeys_core::machine::Instance;
use journeys_core::model::Json;
use journeys_core::profile::{ChangeCause, ProfileEffect, ProfileState as CoreProfile};
use journeys_store::{ProfileState, Tombstone};
use serde_json::Map;

/// A profile as the batch sees it.
#[derive(Debug, Clone)]
pub(crate) struct ProfileWork {
    /// What the core's rules read and change.
    pub state: CoreProfile,
    /// Per instance of `state.instances`: the stored version when loaded, `None` for one
    /// started in this batch.
    pub stored_versions: Vec<Option<i64>>,
    /// Per instance of `state.instances`: changed in this batch, so it must be written.
    pub dirty: Vec<bool>,
    /// Trait keys set in this batch, with their latest values.
    pub trait_changes: Map<String, Json>,
    /// Memberships as loaded, to write only the net difference at the end.
    pub loaded_audiences: BTreeSet<String>,
    /// Set once the profile was deleted: its events are then dropped (see
    /// [`Tombstone::drops`]).
    pub tombstone: Option<Tombstone>,
    /// The profile this id is linked to: everything reaching it is handed on there.
    pub linked_to: Option<String>,
    /// Ids linked to this profile.
    pub identities: Vec<String>,
    /// States of linked profiles waiting to be merged into this one (loaded from the store
    /// with it), merged when the batch first touches the profile.
    pub pending: Vec<(String, ProfileState)>,
    /// When the traits were last written (`None`: never), to decide which value of a trait
    /// both merged profiles hold wins.
    pub traits_at: Option<DateTime<Utc>>,
}

/// What merging a linked profile into a profile did ([`ProfileWork::merge_from`]).
#[derive(Debug, Default)]
pub(crate) struct MergedState {
    /// Enter-once journeys the profile gained.
    pub entered_once: Vec<String>,
    /// Positions of the instances moved in.
    pub moved: Vec<usize>,
}

impl ProfileWork {
    /// The journeys of the profile's active instances, and of those waiting to be merged in.
    pub fn journey_ids(&self) -> impl Iterator<Item = &str> {
        let own = self.state.instances.iter().map(|i| i.journey_id.as_str());
        let pending = self
            .pending
            .iter()
            .flat_map(|(_, state)| state.active_instances.iter())
            .map(|i| i.journey_id.as_str());
        own.chain(pending)
    }

    /// The working copy of a loaded profile. An instance whose stored blob does not decode is
    /// left out (and logged): it cannot be stepped, and it must not block the profile.
    pub fn from_state(profile_id: &str, state: &ProfileState) -> Self {
        let mut instances = Vec::with_capacity(state.active_instances.len());
        let mut stored_versions = Vec::with_capacity(state.active_instances.len());
        for record in &state.active_instances {
            match serde_json::from_value::<Instance>(record.state_blob.clone()) {
                Ok(inst) => {
                    instances.push(inst);
                    stored_versions.push(Some(record.version));
                }
                Err(err) => tracing::error!(
                    profile_id,
                    instance_id = %record.id,
                    error = %err,
                    "stored instance does not decode; skipped"
                ),
            }
        }
        let dirty = vec![false; instances.len()];
        Self {
            state: CoreProfile {
                traits: Json::Object(state.traits.clone()),
                audiences: state.audiences.iter().cloned().collect(),
                entered_once: state.entered_once.iter().cloned().collect(),
                instances,
            },
            stored_versions,
            dirty,
            trait_changes: Map::new(),
            loaded_audiences: state.audiences.iter().cloned().collect(),
            tombstone: state.tombstone,
            linked_to: state.linked_to.clone(),
            identities: state.identities.clone(),
            pending: Vec::new(),
            traits_at: state.updated_at,
        }
    }

    /// Merges the state of the linked profile `from` into this profile `into`: traits (on a
    /// key both hold, the value of the profile whose traits were written last wins), audience
    /// memberships and enter-once journeys (unions), and the active instances, which keep
    /// waiting here. A moved instance is re-keyed to `into` (its timers follow), unless this
    /// profile already has an active instance of the same journey for the same unique value:
    /// then both are kept and the moved one keeps its key.
    pub fn merge_from(&mut self, into: &str, from: &str, state: &ProfileState) -> MergedState {
        let mut merged = MergedState::default();
        let theirs_newer = match (state.updated_at, self.traits_at) {
            (Some(theirs), Some(ours)) => theirs > ours,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !self.state.traits.is_object() {
            self.state.traits = Json::Object(Map::new());
        }
        if let Json::Object(traits) = &mut self.state.traits {
            for (key, value) in &state.traits {
                if theirs_newer || !traits.contains_key(key) {
                    traits.insert(key.clone(), value.clone());
                    self.trait_changes.insert(key.clone(), value.clone());
                }
            }
        }
        if theirs_newer {
            self.traits_at = state.updated_at;
        }
        self.state.audiences.extend(state.audiences.iter().cloned());
        for journey_id in &state.entered_once {
            if self.state.entered_once.insert(journey_id.clone()) {
                merged.entered_once.push(journey_id.clone());
            }
        }
        let other = ProfileWork::from_state(from, state);
        for (mut inst, version) in other.state.instances.into_iter().zip(other.stored_versions) {
            let taken = inst.unique_value.is_some()
                && self.state.instances.iter().any(|mine| {
                    mine.is_active()
                        && mine.journey_id == inst.journey_id
                        && mine.unique_value == inst.unique_value
                });
            if !taken {
                inst.profile_id = into.to_owned();
            }
            if inst.user_id.is_none() {
                inst.user_id = Some(into.to_owned());
            }
            merged.moved.push(self.state.instances.len());
            self.state.instances.push(inst);
            self.stored_versions.push(version);
            self.dirty.push(true);
        }
        merged
    }

    /// What is left of a profile deleted at `tombstone`: nothing but the tombstone.
    pub fn deleted(tombstone: Tombstone) -> Self {
        let mut work = Self::from_state("", &ProfileState::default());
        work.tombstone = Some(tombstone);
        work
    }

    /// Notes what the core changed: traits set, instances started or moved on.
    pub fn absorb(&mut self, effects: &[ProfileEffect]) {
        for effect in effects {
            match effect {
                ProfileEffect::TraitsMerged(traits) => {
                    for (key, value) in traits {
                        self.trait_changes.insert(key.clone(), value.clone());
                    }
                }
                ProfileEffect::Instance(change) => {
                    if change.why == ChangeCause::Entered
                        || change.position >= self.stored_versions.len()
                    {
                        self.stored_versions.push(None);
                        self.dirty.push(false);
                    }
                    if let Some(dirty) = self.dirty.get_mut(change.position) {
                        *dirty = true;
                    }
                }
                ProfileEffect::EnteredOnce { .. } | ProfileEffect::EntrySkipped { .. } => {}
            }
        }
    }

    /// The profile as the store holds it once this batch committed: only active instances,
    /// at the versions the commit wrote (see `ChangeSet::write_instance`), nothing pending.
    /// What an owner keeps in memory for the next batch.
    pub fn settled(mut self) -> Self {
        let mut instances = Vec::with_capacity(self.state.instances.len());
        let mut versions = Vec::with_capacity(self.state.instances.len());
        let rows = std::mem::take(&mut self.state.instances)
            .into_iter()
            .zip(self.stored_versions)
            .zip(self.dirty);
        for ((inst, stored), dirty) in rows {
            if !inst.is_active() {
                continue;
            }
            let version = if dirty {
                stored.map_or(1, |v| v + 1)
            } else {
                stored.unwrap_or(1)
            };
            instances.push(inst);
            versions.push(Some(version));
        }
        self.state.instances = instances;
        self.dirty = vec![false; versions.len()];
        self.stored_versions = versions;
        self.trait_changes = Map::new();
        self.loaded_audiences = self.state.audiences.iter().cloned().collect();
        self.pending = Vec::new();
        if self.linked_to.is_some() {
            // Its state moved to the profile it is linked to: nothing of it is read again.
            self.state = CoreProfile::default();
            self.stored_versions = Vec::new();
            self.dirty = Vec::new();
            self.loaded_audiences = BTreeSet::new();
        }
        self
    }

    /// The working copy of a settled profile, with memberships of audiences that are no
    /// longer active (archived since) left out, as a load from the store would.
    pub fn reopened(mut self, active_audiences: &std::collections::HashSet<String>) -> Self {
        let work = &mut self;
        work.state
            .audiences
            .retain(|key| active_audiences.contains(key));
        work.loaded_audiences
            .retain(|key| active_audiences.contains(key));
        self
    }

    /// The instances changed in this batch, with their stored versions.
    pub fn changed(&self) -> impl Iterator<Item = (&Instance, Option<i64>)> {
        self.state
            .instances
            .iter()
            .zip(&self.stored_versions)
            .zip(&self.dirty)
            .filter(|(_, dirty)| **dirty)
            .map(|((inst, version), _)| (inst, *version))
    }

    /// Membership changes of the batch: `(added, removed)` audience keys.
    pub fn audience_changes(&self) -> (Vec<String>, Vec<String>) {
        let audiences = &self.state.audiences;
        let now: BTreeSet<&String> = audiences.iter().collect();
        let added = now
            .iter()
            .filter(|k| !self.loaded_audiences.contains(k.as_str()))
            .map(|k| (*k).clone())
            .collect();
        let removed = self
            .loaded_audiences
            .iter()
            .filter(|k| !audiences.contains(k.as_str()))
            .cloned()
            .collect();
        (added, removed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use journeys_core::profile::traits;
    use serde_json::json;

    use super::*;

    fn keys(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn merge(work: &mut ProfileWork, incoming: &Json, active: &HashSet<String>) {
        let mut effects = Vec::new();
        traits::merge(&mut work.state, incoming, active, &mut effects);
        work.absorb(&effects);
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
        merge(
            &mut work,
            &json!({"vip": false, "beta": true, "newsletter": true}),
            &active,
        );
        merge(&mut work, &json!({"vip": true, "plan": "pro"}), &active);
        assert_eq!(
            work.state.traits,
            json!({"plan": "pro", "vip": true, "beta": true, "newsletter": true})
        );
        // vip was removed and re-added: no net change; newsletter is no active audience.
        assert_eq!(work.audience_changes(), (vec!["beta".to_owned()], vec![]));
        merge(&mut work, &json!({"vip": false}), &active);
        assert_eq!(
            work.audience_changes(),
            (vec!["beta".to_owned()], vec!["vip".to_owned()])
        );
        assert_eq!(work.trait_changes.len(), 4);
    }

    fn stored(traits: &Json, at: i64, audiences: &[&str], once: &[&str]) -> ProfileState {
        ProfileState {
            traits: traits.as_object().cloned().unwrap_or_default(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            entered_once: once.iter().map(|j| (*j).to_owned()).collect(),
            updated_at: chrono::DateTime::from_timestamp(at, 0),
            ..ProfileState::default()
        }
    }

    #[test]
    fn a_merged_profile_adds_its_keys_and_wins_where_its_traits_are_newer() {
        let user = stored(
            &json!({"plan": "free", "name": "Ann"}),
            100,
            &["vip"],
            &["j1"],
        );
        let newer = stored(
            &json!({"plan": "pro", "email": "a@x"}),
            200,
            &["beta"],
            &["j1", "j2"],
        );
        let mut work = ProfileWork::from_state("u1", &user);
        let merged = work.merge_from("u1", "a1", &newer);
        assert_eq!(
            work.state.traits,
            json!({"plan": "pro", "name": "Ann", "email": "a@x"})
        );
        assert_eq!(work.trait_changes.len(), 2, "plan and email are written");
        assert_eq!(merged.entered_once, ["j2"], "j1 was entered already");
        assert_eq!(work.audience_changes(), (vec!["beta".to_owned()], vec![]));

        let older = stored(&json!({"plan": "trial", "email": "a@x"}), 50, &[], &[]);
        let mut work = ProfileWork::from_state("u1", &user);
        work.merge_from("u1", "a1", &older);
        assert_eq!(
            work.state.traits,
            json!({"plan": "free", "name": "Ann", "email": "a@x"}),
            "the user's newer value stays"
        );
        assert_eq!(work.trait_changes.len(), 1);
    }
}

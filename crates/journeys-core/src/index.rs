//! In-memory indexes a runtime keeps so that an event costs one hash lookup when no journey
//! mentions it, and a hold-until match reads only the instances of that profile waiting for
//! that event — never a scan.

use std::collections::HashMap;

use crate::machine::{Instance, Journey};
use crate::model::StepKind;

/// The journeys an event name concerns, as positions in [`JourneyIndex::journeys`]. Each list
/// is sorted and free of duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventRoutes {
    /// Journeys whose entry trigger is this event.
    pub entries: Vec<usize>,
    /// Journeys with a hold-until branch on this event.
    pub holds: Vec<usize>,
    /// Journeys with an exit rule on this event.
    pub exits: Vec<usize>,
}

/// Published journeys indexed by the event names they react to (trigger, hold-until branches,
/// exit rules). Rebuilt when a journey is published or archived; published journeys never
/// change, so no finer invalidation is needed.
#[derive(Clone, Debug, Default)]
pub struct JourneyIndex {
    journeys: Vec<Journey>,
    by_id: HashMap<String, usize>,
    by_event: HashMap<String, EventRoutes>,
}

impl JourneyIndex {
    /// Indexes `journeys`; positions in [`EventRoutes`] refer to this order.
    pub fn new(journeys: impl IntoIterator<Item = Journey>) -> Self {
        let journeys: Vec<Journey> = journeys.into_iter().collect();
        let mut by_event: HashMap<String, EventRoutes> = HashMap::new();
        let mut by_id = HashMap::with_capacity(journeys.len());
        for (i, journey) in journeys.iter().enumerate() {
            by_id.insert(journey.id().to_owned(), i);
            let def = journey.definition();
            push_unique(
                &mut by_event.entry(def.entry.event.clone()).or_default().entries,
                i,
            );
            for step in &def.steps {
                if let StepKind::HoldUntil(hold) = &step.kind {
                    for branch in &hold.branches {
                        push_unique(
                            &mut by_event.entry(branch.event.clone()).or_default().holds,
                            i,
                        );
                    }
                }
            }
            for rule in &def.exit_rules {
                push_unique(
                    &mut by_event.entry(rule.event.clone()).or_default().exits,
                    i,
                );
            }
        }
        Self {
            journeys,
            by_id,
            by_event,
        }
    }

    /// What an event with this name concerns; `None` (the common case) when no journey
    /// mentions it.
    pub fn routes(&self, event_name: &str) -> Option<&EventRoutes> {
        self.by_event.get(event_name)
    }

    /// The journey at a position taken from [`EventRoutes`].
    pub fn journey(&self, position: usize) -> Option<&Journey> {
        self.journeys.get(position)
    }

    /// The journey with this id (a timer or a stored instance names its journey by id).
    pub fn by_id(&self, journey_id: &str) -> Option<&Journey> {
        self.by_id.get(journey_id).map(|&i| &self.journeys[i])
    }

    /// Every indexed journey, in position order.
    pub fn journeys(&self) -> &[Journey] {
        &self.journeys
    }

    /// Number of indexed journeys.
    pub fn len(&self) -> usize {
        self.journeys.len()
    }

    /// Whether no journey is published.
    pub fn is_empty(&self) -> bool {
        self.journeys.is_empty()
    }
}

fn push_unique(list: &mut Vec<usize>, i: usize) {
    if list.last() != Some(&i) {
        list.push(i);
    }
}

/// Instances waiting in a hold-until, by profile and event name: the in-memory shape of the
/// store's `(journey_id, profile, waiting_event)` index. A profile has few waiting instances,
/// so each profile keeps a small vector scanned linearly — cheaper than a second hash.
#[derive(Clone, Debug, Default)]
pub struct WaitingIndex {
    by_profile: HashMap<String, Vec<(String, String)>>,
    len: usize,
}

impl WaitingIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Indexes `instance` under each event its hold waits for (nothing unless it waits in a
    /// hold-until).
    pub fn insert(&mut self, instance: &Instance) {
        let events = instance.waiting_events();
        if events.is_empty() {
            return;
        }
        let list = self
            .by_profile
            .entry(instance.profile_id.clone())
            .or_default();
        for event in events {
            list.push((event.clone(), instance.id.clone()));
            self.len += 1;
        }
    }

    /// Removes every entry of the instance.
    pub fn remove(&mut self, profile_id: &str, instance_id: &str) {
        if let Some(list) = self.by_profile.get_mut(profile_id) {
            let before = list.len();
            list.retain(|(_, id)| id != instance_id);
            self.len -= before - list.len();
            if list.is_empty() {
                self.by_profile.remove(profile_id);
            }
        }
    }

    /// Re-indexes an instance after a transition.
    pub fn update(&mut self, after: &Instance) {
        self.remove(&after.profile_id, &after.id);
        self.insert(after);
    }

    /// Ids of the profile's instances waiting for `event_name`.
    pub fn waiting_for<'a>(
        &'a self,
        profile_id: &str,
        event_name: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.by_profile
            .get(profile_id)
            .into_iter()
            .flatten()
            .filter(move |(event, _)| event == event_name)
            .map(|(_, id)| id.as_str())
    }

    /// Number of (instance, event) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no instance waits in a hold-until.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::eval::NoAudiences;
    use crate::machine::tests::{event, journey_with, t0};
    use crate::machine::{
        DEFAULT_MAX_RETURN_TO_START_PASSES, DEFAULT_MAX_UNIQUE_VALUE_CHARS, EntryFacts,
        StepContext, decide_entry, enter,
    };
    use crate::model::{EntryRule, JourneyMeta};

    fn journeys() -> Vec<Journey> {
        let base = journey_with(EntryRule::EnterOnce, vec![]);
        (0..3)
            .map(|n| {
                let mut def = base.definition().clone();
                def.entry.event = format!("start_{n}");
                Journey::new(
                    JourneyMeta {
                        id: format!("j{n}"),
                        version: 1,
                        name: format!("J {n}"),
                    },
                    def,
                )
            })
            .collect()
    }

    #[test]
    fn routes_by_trigger_hold_and_exit_event() {
        let index = JourneyIndex::new(journeys());
        assert_eq!(index.len(), 3);
        assert_eq!(index.routes("page_viewed"), None);
        let start = index.routes("start_1").unwrap();
        assert_eq!(start.entries, [1]);
        assert!(start.holds.is_empty());
        let bought = index.routes("purchase_completed").unwrap();
        assert_eq!(bought.holds, [0, 1, 2]);
        assert_eq!(index.journey(2).unwrap().id(), "j2");
        assert_eq!(
            index.by_id("j1").unwrap().definition().entry.event,
            "start_1"
        );
    }

    #[test]
    fn waiting_index_finds_only_that_profile_and_event() {
        let j = journey_with(EntryRule::EnterOnce, vec![]);
        let ctx = StepContext {
            traits: &json!({}),
            audiences: &NoAudiences,
            now: t0(),
            max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
        };
        let facts = EntryFacts {
            audiences: &NoAudiences,
            already_entered: false,
            active_unique_values: &[],
            max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
        };
        let mut index = WaitingIndex::new();
        let mut ids = Vec::new();
        for user in ["u1", "u2"] {
            let mut e = event("checkout_started", json!({}));
            e.user_id = Some(user.into());
            e.message_id = format!("m-{user}");
            let admission = decide_entry(&j, &e, &facts).unwrap();
            let t = enter(&j, format!("i-{user}"), &e, admission, &ctx);
            index.insert(&t.instance);
            ids.push(t.instance);
        }
        assert_eq!(index.len(), 2);
        let found: Vec<&str> = index.waiting_for("u1", "purchase_completed").collect();
        assert_eq!(found, ["i-u1"]);
        assert_eq!(index.waiting_for("u1", "other").count(), 0);
        assert_eq!(index.waiting_for("u3", "purchase_completed").count(), 0);
        let mut done = ids[0].clone();
        done.state = crate::machine::InstanceState::Completed;
        index.update(&done);
        assert_eq!(index.waiting_for("u1", "purchase_completed").count(), 0);
        assert_eq!(index.len(), 1);
        index.remove("u2", "i-u2");
        assert!(index.is_empty());
    }
}

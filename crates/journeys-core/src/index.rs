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
    pub fn new(journeys: impl IntoIterator<Item = Journey>) -> Self {
        let journeys: Vec<Journey> = journeys.into_iter().collect();
        let mut by_event: HashMap<String, EventRoutes> = HashMap::new();
        let mut by_id = HashMap::with_capacity(journeys.len());
        for (i, journey) in journeys.iter().enumerate() {
            by_id.insert(journey.id().to_owned(), i);
            let def = journey.definition();
            push_unique(&mut by_event.entry(def.entry.event.clone()).or_default().entries, i);
            for step in &def.steps {
                if let StepKind::HoldUntil(hold) = &step.kind {
                    for branch in &hold.branches {
                        push_unique(&mut by_event.entry(branch.event.clone()).or_default().holds, i);
                    }
                }
            }
            for rule in &def.exit_rules {
                push_unique(&mut by_event.entry(rule.event.clone()).or_default().exits, i);
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

    pub fn by_id(&self, journey_id: &str) -> Option<&Journey> {
        self.by_id.get(journey_id).map(|&i| &self.journeys[i])
    }

    pub fn journeys(&self) -> &[Journey] {
        &self.journeys
    }

    pub fn len(&self) -> usize {
        self.journeys.len()
    }

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

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

//! `SimulateJourney`: runs a definition over timestamped events on a virtual clock, with the
//! same entry decisions and state machine as production, and reports each instance's path,
//! every payload it would send and its final state. Nothing is stored or sent.
//!
//! The virtual runtime mirrors the data plane and the scheduler:
//! - Events are applied in order of their virtual time (`at`, else the event's `timestamp`);
//!   events with the same time keep their input order.
//! - Timers fire exactly at their due time. A timer due at the same instant as an event fires
//!   *after* that event: the production scheduler takes a hold-until timeout only once every
//!   event received up to its deadline has been applied (SPEC.md section 7), so a purchase at
//!   the deadline still counts as in time. Timers due at the same instant fire in the order
//!   they were set.
//! - For each event, in this order: the profile's traits are updated (an `identify` merges its
//!   traits into the snapshot), exit rules are applied to the profile's active instances, then
//!   waiting hold-untils, then the entry decision. So an event that exits an instance may start
//!   a new one, but a hold never takes the event that just started its own instance.
//! - Instance ids come from [`instance_id`] (journey id and entry `messageId`), as in
//!   production, so randomized splits draw the same branches.
//! - With `until`, events after it are not applied and timers due after it do not fire; without
//!   it the run continues until no timer is left.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::machine::{
    Effect, EntryFacts, Input, Instance, InstanceState, Journey, SkipReason, StepContext,
    TimelineKind, Timer, decide_entry, instance_id, matching_exit_rule, step,
};
use crate::model::{Event, EventType, Json, Timestamp};

/// An event applied at a virtual time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulatedEvent {
    pub event: Event,
    /// Virtual receive time; `None` uses `event.timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// A profile as the simulation sees it at the start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileSnapshot {
    /// A JSON object (anything else counts as no traits).
    #[serde(default)]
    pub traits: Json,
    #[serde(default)]
    pub audiences: BTreeSet<String>,
}

/// What to simulate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    pub events: Vec<SimulatedEvent>,
    /// For every profile without an entry in `profiles`.
    #[serde(default)]
    pub default_profile: ProfileSnapshot,
    /// By profile id (`userId`, else `anonymousId`).
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

/// What a simulation found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimulationResult {
    /// Every instance started, in order of entry.
    pub instances: Vec<SimulatedInstance>,
    /// Entry events (events named like the trigger) that started no instance.
    pub skipped: Vec<SkippedEntry>,
}

/// One simulated instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulatedInstance {
    pub instance_id: String,
    pub profile_id: String,
    pub unique_value: Option<String>,
    /// Every timeline entry, oldest first.
    pub path: Vec<PathEntry>,
    pub sends: Vec<SimulatedSend>,
    pub final_state: InstanceState,
    pub final_step: String,
    /// The instance as it would be stored at the end (context, waiting, passes…).
    pub instance: Instance,
}

/// One transition of a simulated instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathEntry {
    pub step_key: String,
    pub at: Timestamp,
    pub kind: TimelineKind,
    /// The event's `messageId`, `timer` or `operator`.
    pub cause: String,
    #[serde(default, skip_serializing_if = "Json::is_null")]
    pub detail: Json,
}

/// A payload the instance would have sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulatedSend {
    pub step_key: String,
    pub destination_id: String,
    pub at: Timestamp,
    pub method: String,
    pub path: String,
    pub payload: Json,
    pub message_id: String,
}

/// An entry event that started no instance, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedEntry {
    pub message_id: String,
    /// Empty when the event had no profile.
    pub profile_id: String,
    pub at: Timestamp,
    pub reason: SkipReason,
}

struct Tracked {
    instance: Instance,
    path: Vec<PathEntry>,
    sends: Vec<SimulatedSend>,
}

/// The virtual runtime's state.
struct World<'j> {
    journey: &'j Journey,
    instances: Vec<Tracked>,
    by_profile: HashMap<String, Vec<usize>>,
    entered: HashSet<String>,
    profiles: HashMap<String, ProfileSnapshot>,
    defaults: &'j ProfileSnapshot,
    /// Pending timers by (due time, set order) → (instance position, timer).
    timers: BTreeMap<(Timestamp, u64), (usize, Timer)>,
    timer_slots: HashMap<String, (Timestamp, u64)>,
    seq: u64,
    skipped: Vec<SkippedEntry>,
}

/// Runs `simulation` against `journey` (draft or published alike).
pub fn simulate(journey: &Journey, simulation: &Simulation) -> SimulationResult {
    let mut events: Vec<(Timestamp, &Event)> = simulation
        .events
        .iter()
        .map(|e| (e.at.unwrap_or(e.event.timestamp), &e.event))
        .collect();
    // Stable: equal times keep their input order.
    events.sort_by_key(|(at, _)| *at);

    let mut world = World {
        journey,
        instances: Vec::new(),
        by_profile: HashMap::new(),
        entered: HashSet::new(),
        profiles: simulation
            .profiles
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        defaults: &simulation.default_profile,
        timers: BTreeMap::new(),
        timer_slots: HashMap::new(),
        seq: 0,
        skipped: Vec::new(),
    };

    for (at, event) in events {
        if simulation.until.is_some_and(|until| at > until) {
            break;
        }
        // Strictly earlier timers first; timers at `at` wait for the event (see module docs).
        world.fire_timers(|due| due < at);
        world.apply_event(event, at);
    }
    match simulation.until {
        Some(until) => world.fire_timers(|due| due <= until),
        None => world.fire_timers(|_| true),
    }

    SimulationResult {
        instances: world
            .instances
            .into_iter()
            .map(|t| SimulatedInstance {
                instance_id: t.instance.id.clone(),
                profile_id: t.instance.profile_id.clone(),
                unique_value: t.instance.unique_value.clone(),
                path: t.path,
                sends: t.sends,
                final_state: t.instance.state,
                final_step: t.instance.current_step.clone(),
                instance: t.instance,
            })
            .collect(),
        skipped: world.skipped,
    }
}

impl World<'_> {
    fn profile(&self, profile_id: &str) -> &ProfileSnapshot {
        self.profiles.get(profile_id).unwrap_or(self.defaults)
    }

    fn fire_timers(&mut self, due: impl Fn(Timestamp) -> bool) {
        while let Some(entry) = self.timers.first_entry() {
            if !due(entry.key().0) {
                break;
            }
            let (slot, (position, timer)) = entry.remove_entry();
            self.timer_slots.remove(&timer.id);
            self.step_instance(position, Input::TimerFired(&timer), slot.0);
        }
    }

    fn apply_event(&mut self, event: &Event, at: Timestamp) {
        let journey = self.journey;
        let Some(profile_id) = event.profile_id().map(str::to_owned) else {
            if event.event == journey.definition().entry.event {
                self.skip(event, "", at, SkipReason::MissingProfile);
            }
            return;
        };
        if event.kind == EventType::Identify {
            self.merge_traits(&profile_id, &event.traits);
        }
        let mine = self
            .by_profile
            .get(&profile_id)
            .cloned()
            .unwrap_or_default();
        for &position in &mine {
            if let Some(rule) =
                matching_exit_rule(journey, event, &self.instances[position].instance)
            {
                self.step_instance(position, Input::Exit { event, rule }, at);
            }
        }
        for &position in &mine {
            let waits = self.instances[position]
                .instance
                .waiting_events()
                .contains(&event.event);
            if waits {
                self.step_instance(position, Input::Event(event), at);
            }
        }
        if event.event != journey.definition().entry.event {
            return;
        }
        let active: Vec<&str> = mine
            .iter()
            .map(|&p| &self.instances[p].instance)
            .filter(|i| i.is_active())
            .filter_map(|i| i.unique_value.as_deref())
            .collect();
        let profile = self.profile(&profile_id);
        let facts = EntryFacts {
            audiences: &profile.audiences,
            already_entered: self.entered.contains(&profile_id),
            active_unique_values: &active,
        };
        match decide_entry(journey, event, &facts) {
            Ok(admission) => {
                let id = instance_id(journey.id(), &event.message_id);
                let instance = Instance::new(journey, id, event, admission, at);
                let position = self.instances.len();
                self.instances.push(Tracked {
                    instance,
                    path: Vec::new(),
                    sends: Vec::new(),
                });
                self.by_profile
                    .entry(profile_id.clone())
                    .or_default()
                    .push(position);
                self.entered.insert(profile_id);
                self.step_instance(position, Input::Enter(event), at);
            }
            Err(reason) => self.skip(event, &profile_id, at, reason),
        }
    }

    fn merge_traits(&mut self, profile_id: &str, traits: &Json) {
        let Json::Object(new) = traits else {
            return;
        };
        let snapshot = self
            .profiles
            .entry(profile_id.to_owned())
            .or_insert_with(|| self.defaults.clone());
        if !snapshot.traits.is_object() {
            snapshot.traits = Json::Object(Map::new());
        }
        if let Json::Object(existing) = &mut snapshot.traits {
            for (k, v) in new {
                existing.insert(k.clone(), v.clone());
            }
        }
    }

    fn skip(&mut self, event: &Event, profile_id: &str, at: Timestamp, reason: SkipReason) {
        self.skipped.push(SkippedEntry {
            message_id: event.message_id.clone(),
            profile_id: profile_id.to_owned(),
            at,
            reason,
        });
    }

    fn step_instance(&mut self, position: usize, input: Input<'_>, now: Timestamp) {
        let transition = {
            let tracked = &self.instances[position];
            let profile = self.profile(&tracked.instance.profile_id);
            let ctx = StepContext {
                traits: &profile.traits,
                audiences: &profile.audiences,
                now,
            };
            step(self.journey, &tracked.instance, input, &ctx)
        };
        for effect in transition.effects {
            match effect {
                Effect::Timeline(entry) => self.instances[position].path.push(PathEntry {
                    step_key: entry.step_key,
                    at: entry.at,
                    kind: entry.kind,
                    cause: entry.cause.label().to_owned(),
                    detail: entry.detail,
                }),
                Effect::Send(send) => self.instances[position].sends.push(SimulatedSend {
                    step_key: send.step_key,
                    destination_id: send.destination_id,
                    at: now,
                    method: send.method,
                    path: send.path,
                    payload: send.payload,
                    message_id: send.message_id,
                }),
                Effect::SetTimer(timer) => {
                    let slot = (timer.due_at, self.seq);
                    self.seq += 1;
                    self.timer_slots.insert(timer.id.clone(), slot);
                    self.timers.insert(slot, (position, timer));
                }
                Effect::CancelTimer { id } => {
                    if let Some(slot) = self.timer_slots.remove(&id) {
                        self.timers.remove(&slot);
                    }
                }
                Effect::Completed | Effect::Exited { .. } | Effect::Failed { .. } => {}
            }
        }
        self.instances[position].instance = transition.instance;
    }
}

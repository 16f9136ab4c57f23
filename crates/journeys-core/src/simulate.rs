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
//! - Each event and each fired timer goes through [`crate::profile::apply`], the function the
//!   production engine calls: traits (an `identify` merges its traits and syncs the audiences
//!   named by boolean traits), exit rules, waiting hold-untils, then the entry decision
//!   (enter-once, re-entry, replayed entries, the active-instance limit when one is given),
//!   under the return-to-start and unique-identifier limits given (the engine's configured
//!   ones when the control plane simulates).
//! - An event whose `messageId` was applied within the dedupe window before (the one given,
//!   else [`DEDUPE_WINDOW`]) is a duplicate and ignored, as the data plane acknowledges it
//!   `DUPLICATE` and drops it. An event refused whole at the active-instance limit was not
//!   applied: the same `messageId` later is applied like a new event.
//! - Instance ids come from [`instance_id`] (journey id and entry `messageId`), as in
//!   production, so randomized splits draw the same branches.
//! - With `until`, events after it are not applied and timers due after it do not fire; without
//!   it the run continues until no timer is left.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::index::JourneyIndex;
use crate::machine::{
    Effect, Instance, InstanceLimits, InstanceState, Journey, SkipReason, TimelineKind, Timer,
};
use crate::model::{ConditionSubject, Event, Json, StepKind, Timestamp};
use crate::profile::{
    ChangeCause, DEDUPE_WINDOW, InputOutcome, InstanceChange, ProfileEffect, ProfileInput,
    ProfileState, Rules, apply, is_duplicate,
};

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
    /// Keys of the active audiences, whose memberships follow boolean traits of an
    /// `identify` (as in production). `None`: the audiences the journey refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_keys: Option<BTreeSet<String>>,
    /// The per-profile limit of active instances, as the engine applies it. `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_instances: Option<usize>,
    /// Return-to-start passes and unique-identifier length, as the engine applies them.
    #[serde(default)]
    pub instance_limits: InstanceLimits,
    /// The dedupe window, as the engine applies it. `None`: [`DEDUPE_WINDOW`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_window: Option<Duration>,
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
    profile_id: String,
    /// Position in the profile's `ProfileState::instances`.
    position: usize,
    path: Vec<PathEntry>,
    sends: Vec<SimulatedSend>,
}

/// A simulated profile: its state as the rules see it, and its instances' places in
/// `World::instances`.
struct Profile {
    state: ProfileState,
    tracked: Vec<usize>,
}

/// A pending timer: its profile, its instance and the timer itself.
type PendingTimer = (String, String, Timer);

/// The virtual runtime's state.
struct World<'s> {
    journey: &'s Journey,
    index: JourneyIndex,
    audience_keys: HashSet<String>,
    max_active: usize,
    instance_limits: InstanceLimits,
    dedupe_window: Duration,
    /// Always empty: nothing is archived and every instance is in memory.
    none: HashSet<String>,
    /// Always empty: a simulated journey replaced none.
    no_exclusions: HashMap<String, String>,
    profiles: HashMap<String, Profile>,
    initial: &'s BTreeMap<String, ProfileSnapshot>,
    defaults: &'s ProfileSnapshot,
    instances: Vec<Tracked>,
    /// Pending timers by (due time, set order).
    timers: BTreeMap<(Timestamp, u64), PendingTimer>,
    timer_slots: HashMap<String, (Timestamp, u64)>,
    seq: u64,
    skipped: Vec<SkippedEntry>,
    /// When each `messageId` was first applied (for dedupe).
    seen: HashMap<String, Timestamp>,
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

    let audience_keys = match &simulation.audience_keys {
        Some(keys) => keys.iter().cloned().collect(),
        None => referenced_audiences(journey),
    };
    let mut world = World {
        journey,
        index: JourneyIndex::new([journey.clone()]),
        audience_keys,
        max_active: simulation.max_active_instances.unwrap_or(usize::MAX),
        instance_limits: simulation.instance_limits,
        dedupe_window: simulation.dedupe_window.unwrap_or(DEDUPE_WINDOW),
        none: HashSet::new(),
        no_exclusions: HashMap::new(),
        profiles: HashMap::new(),
        initial: &simulation.profiles,
        defaults: &simulation.default_profile,
        instances: Vec::new(),
        timers: BTreeMap::new(),
        timer_slots: HashMap::new(),
        seq: 0,
        skipped: Vec::new(),
        seen: HashMap::new(),
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
    world.finish()
}

/// The audiences `journey` reads: its trigger's and those of data-split conditions.
fn referenced_audiences(journey: &Journey) -> HashSet<String> {
    let def = journey.definition();
    let mut keys: HashSet<String> = def.entry.audience_key.iter().cloned().collect();
    for step in &def.steps {
        if let StepKind::DataSplit(split) = &step.kind {
            for branch in &split.branches {
                for condition in &branch.conditions {
                    if let ConditionSubject::Audience(key) = &condition.subject {
                        keys.insert(key.clone());
                    }
                }
            }
        }
    }
    keys
}

impl World<'_> {
    fn fire_timers(&mut self, due: impl Fn(Timestamp) -> bool) {
        while let Some(entry) = self.timers.first_entry() {
            if !due(entry.key().0) {
                break;
            }
            let (slot, (profile_id, instance_id, timer)) = entry.remove_entry();
            self.timer_slots.remove(&timer.id);
            let is_fired = |t: &Timer| t.id == timer.id;
            let input = ProfileInput::TimerFired {
                instance_id: &instance_id,
                is_fired: &is_fired,
            };
            self.apply(&profile_id, input, slot.0);
        }
    }

    fn apply_event(&mut self, event: &Event, at: Timestamp) {
        let Some(profile_id) = event.profile_id().map(str::to_owned) else {
            if event.event == self.journey.definition().entry.event {
                self.skipped.push(SkippedEntry {
                    message_id: event.message_id.clone(),
                    profile_id: String::new(),
                    at,
                    reason: SkipReason::MissingProfile,
                });
            }
            return;
        };
        if let Some(first) = self.seen.get(event.dedupe_key().as_ref())
            && is_duplicate(*first, at, self.dedupe_window)
        {
            return;
        }
        let outcome = self.apply(&profile_id, ProfileInput::Event(event), at);
        // A refused event is not stored by the engine, so its `messageId` is not seen.
        if !matches!(outcome, InputOutcome::TooManyInstances { .. }) {
            self.seen.insert(event.dedupe_key().into_owned(), at);
        }
    }

    /// Applies `input` to the profile through the production rules and keeps what it did.
    fn apply(&mut self, profile_id: &str, input: ProfileInput<'_>, at: Timestamp) -> InputOutcome {
        let rules = Rules {
            journeys: &self.index,
            archived: &self.none,
            excluded_while_active_in: &self.no_exclusions,
            audience_keys: &self.audience_keys,
            max_active_instances: self.max_active,
            instance_limits: self.instance_limits,
            known_instance_ids: &self.none,
            now: at,
        };
        let profile = self
            .profiles
            .entry(profile_id.to_owned())
            .or_insert_with(|| {
                let snapshot = self.initial.get(profile_id).unwrap_or(self.defaults);
                Profile {
                    state: ProfileState {
                        traits: if snapshot.traits.is_object() {
                            snapshot.traits.clone()
                        } else {
                            Json::Object(serde_json::Map::new())
                        },
                        audiences: snapshot.audiences.iter().cloned().collect(),
                        ..ProfileState::default()
                    },
                    tracked: Vec::new(),
                }
            });
        let applied = apply(&mut profile.state, &rules, input);
        for effect in applied.effects {
            match effect {
                ProfileEffect::EntrySkipped { reason, .. } => {
                    if let ProfileInput::Event(event) = input {
                        self.skipped.push(SkippedEntry {
                            message_id: event.message_id.clone(),
                            profile_id: profile_id.to_owned(),
                            at,
                            reason,
                        });
                    }
                }
                ProfileEffect::Instance(change) => {
                    let Some(profile) = self.profiles.get_mut(profile_id) else {
                        continue;
                    };
                    let tracked = track(&mut self.instances, profile, profile_id, &change);
                    let instance_id = profile.state.instances[change.position].id.clone();
                    self.record(tracked, profile_id, &instance_id, change.effects, at);
                }
                ProfileEffect::TraitsMerged(_) | ProfileEffect::EnteredOnce { .. } => {}
            }
        }
        applied.outcome
    }

    /// Keeps the path, sends and timers of one transition of instance `tracked`.
    fn record(
        &mut self,
        tracked: usize,
        profile_id: &str,
        instance_id: &str,
        effects: Vec<Effect>,
        now: Timestamp,
    ) {
        for effect in effects {
            match effect {
                Effect::Timeline(entry) => self.instances[tracked].path.push(PathEntry {
                    step_key: entry.step_key,
                    at: entry.at,
                    kind: entry.kind,
                    cause: entry.cause.label().to_owned(),
                    detail: entry.detail,
                }),
                Effect::Send(send) => self.instances[tracked].sends.push(SimulatedSend {
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
                    let pending = (profile_id.to_owned(), instance_id.to_owned(), timer);
                    self.timers.insert(slot, pending);
                }
                Effect::CancelTimer { id } => {
                    if let Some(slot) = self.timer_slots.remove(&id) {
                        self.timers.remove(&slot);
                    }
                }
                Effect::Completed | Effect::Exited { .. } | Effect::Failed { .. } => {}
            }
        }
    }

    fn finish(self) -> SimulationResult {
        let profiles = self.profiles;
        let instances = self
            .instances
            .into_iter()
            .filter_map(|t| {
                let instance = profiles
                    .get(&t.profile_id)?
                    .state
                    .instances
                    .get(t.position)?
                    .clone();
                Some(SimulatedInstance {
                    instance_id: instance.id.clone(),
                    profile_id: instance.profile_id.clone(),
                    unique_value: instance.unique_value.clone(),
                    path: t.path,
                    sends: t.sends,
                    final_state: instance.state,
                    final_step: instance.current_step.clone(),
                    instance,
                })
            })
            .collect();
        SimulationResult {
            instances,
            skipped: self.skipped,
        }
    }
}

/// The place in `instances` of the instance a change concerns, tracking it when it just
/// started.
fn track(
    instances: &mut Vec<Tracked>,
    profile: &mut Profile,
    profile_id: &str,
    change: &InstanceChange,
) -> usize {
    if change.why == ChangeCause::Entered || change.position >= profile.tracked.len() {
        instances.push(Tracked {
            profile_id: profile_id.to_owned(),
            position: change.position,
            path: Vec::new(),
            sends: Vec::new(),
        });
        profile.tracked.push(instances.len() - 1);
    }
    profile.tracked[change.position]
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use serde_json::json;

    use super::*;
    use crate::machine::tests::{event, journey_with, t0};
    use crate::model::{EntryRule, EventType};

    fn vip_journey() -> Journey {
        let base = journey_with(EntryRule::EnterOnce, vec![]);
        let mut def = base.definition().clone();
        def.entry.audience_key = Some("vip".into());
        Journey::new(base.meta().clone(), def)
    }

    fn at(mut e: Event, id: &str, secs: i64) -> SimulatedEvent {
        e.message_id = id.into();
        e.timestamp = t0() + TimeDelta::seconds(secs);
        SimulatedEvent { event: e, at: None }
    }

    fn identify(traits: Json) -> Event {
        let mut e = event("identify", json!({}));
        e.kind = EventType::Identify;
        e.traits = traits;
        e
    }

    #[test]
    fn boolean_traits_set_memberships_as_in_production() {
        let events = vec![
            at(event("checkout_started", json!({})), "m1", 0),
            at(identify(json!({"vip": true})), "m2", 1),
            at(event("checkout_started", json!({})), "m3", 2),
        ];
        let sim = Simulation {
            events,
            ..Simulation::default()
        };
        let result = simulate(&vip_journey(), &sim);
        assert_eq!(result.skipped.len(), 1);
        assert_eq!(result.skipped[0].reason, SkipReason::NotInAudience);
        assert_eq!(result.instances.len(), 1);
        assert_eq!(result.instances[0].path[0].cause, "m3");

        // Only active audiences follow traits: with none given, vip never becomes a member.
        let inactive = Simulation {
            audience_keys: Some(BTreeSet::new()),
            ..sim
        };
        let result = simulate(&vip_journey(), &inactive);
        assert!(result.instances.is_empty());
        assert_eq!(result.skipped.len(), 2);
    }

    #[test]
    fn a_resent_event_is_a_duplicate_within_the_window_then_a_replay() {
        let j = journey_with(EntryRule::EnterOnce, vec![]);
        let mut def = j.definition().clone();
        def.entry_rule = EntryRule::ReenterEveryTime {
            unique_identifier: "session_id".into(),
        };
        let j = Journey::new(j.meta().clone(), def);
        let sim = Simulation {
            events: vec![
                at(
                    event("checkout_started", json!({"session_id": "a"})),
                    "m1",
                    0,
                ),
                at(
                    event("checkout_started", json!({"session_id": "b"})),
                    "m1",
                    1,
                ),
                at(
                    event("checkout_started", json!({"session_id": "c"})),
                    "m1",
                    25 * 3600,
                ),
            ],
            ..Simulation::default()
        };
        let result = simulate(&j, &sim);
        assert_eq!(result.instances.len(), 1);
        // The second is dropped as a duplicate; the third, past the window, is a replay.
        assert_eq!(result.skipped.len(), 1);
        assert_eq!(result.skipped[0].reason, SkipReason::ReplayedEntry);
        assert_eq!(result.skipped[0].at, t0() + TimeDelta::hours(25));
    }
}

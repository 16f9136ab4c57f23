//! What one input does to one profile: the rules of an event, a fired timer and an operator
//! exit, as one pure function, [`apply`]. The data plane and the scheduler (through the
//! engine) and `SimulateJourney` all call it, so they cannot disagree.
//!
//! Where each rule lives:
//! - trait merge and boolean-trait audience sync: [`traits`](self::traits) (`traits.rs`);
//! - exit rules and operator exits: `exits.rs`;
//! - hold-until matching (which waiting instances an event reaches): `holds.rs`, the branch
//!   an instance takes in `machine/run.rs`;
//! - entry decision: `entries.rs` (archived-journey gate, replayed entry, the active-instance
//!   limit), on top of the per-journey admission in `machine/entry.rs`;
//! - timer firing: `timers.rs`.
//!
//! For an event the order is: traits (an `identify`), then — for that event name — exit rules
//! on the profile's active instances, hold-until branches of its waiting instances, and
//! finally entries. So an event that both exits and enters a journey ends the old instance
//! before starting a new one, and an instance never takes a hold branch with the event that
//! started it.
//!
//! Decisions where SPEC.md is silent:
//! - The per-profile instance limit counts instances that stay active: an entry whose
//!   transition ends at once (a forwarding journey) is always made; one that would wait while
//!   the profile already has the maximum active is refused as `too_many_instances`. Such an
//!   event is refused whole ([`InputOutcome::TooManyInstances`]): nothing of it applies (no
//!   traits, exits, hold branches or other entries), so the runtime can answer it as rejected
//!   and not stored, and the same event sent again once instances have ended applies in full.
//!   Only the refused entries are reported (as skips, to be counted).
//! - An entry whose deterministic instance id already exists (the same `messageId` resent after
//!   the dedupe window) is skipped as `replayed_entry`, never started twice.

mod entries;
mod exits;
mod holds;
mod timers;
pub mod traits;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Map;

use crate::index::JourneyIndex;
use crate::machine::{
    Effect, ExitReason, Input, Instance, InstanceLimits, Journey, SkipReason, StepContext, Timer,
    step,
};
use crate::model::{Event, EventType, Json, Timestamp};

/// A `messageId` seen within this window before is a duplicate: acknowledged and ignored, never
/// applied twice. The engine's default window; simulation uses it too.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether an event whose `messageId` was first applied at `first_seen` is, at `now`, a
/// duplicate under `window` (the engine asks its store the same question: seen at or after
/// `now - window`).
pub fn is_duplicate(first_seen: Timestamp, now: Timestamp, window: Duration) -> bool {
    match chrono::TimeDelta::from_std(window) {
        Ok(window) => now.signed_duration_since(first_seen) <= window,
        Err(_) => true,
    }
}

/// One profile as the rules see it: loaded once, then changed by each input in turn (so a
/// later input sees what an earlier one did).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileState {
    /// Always a JSON object once a trait was merged.
    pub traits: Json,
    /// Memberships of audiences (only active ones are synced from traits).
    pub audiences: HashSet<String>,
    /// Ids of the enter-once journeys the profile entered.
    pub entered_once: HashSet<String>,
    /// The profile's instances: those loaded (active ones, at least), then those started since.
    /// Positions are stable: instances are only appended, and finished ones stay until the
    /// caller drops the state, so effects can name an instance by position.
    pub instances: Vec<Instance>,
}

impl ProfileState {
    /// Active instances across journeys (what the per-profile limit counts).
    pub fn active_count(&self) -> usize {
        self.instances.iter().filter(|i| i.is_active()).count()
    }
}

/// Everything an input is judged against besides the profile.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// Published (and archived) journeys, indexed by the event names they react to.
    pub journeys: &'a JourneyIndex,
    /// Ids of archived journeys: their instances drain, but none starts.
    pub archived: &'a HashSet<String>,
    /// Journeys published to replace another with `exclude_active`, by id, with the id of the
    /// one they replaced: a profile with an instance still active there does not enter them.
    pub excluded_while_active_in: &'a HashMap<String, String>,
    /// Keys of active audiences: a boolean trait with such a key sets the membership.
    pub audience_keys: &'a HashSet<String>,
    /// Most instances of one profile that may be active at once (across journeys).
    pub max_active_instances: usize,
    /// Return-to-start passes and unique-identifier length, as configured.
    pub instance_limits: InstanceLimits,
    /// Instance ids known to exist beyond `ProfileState::instances` (finished ones): an entry
    /// that would create one of them is a replay.
    pub known_instance_ids: &'a HashSet<String>,
    pub now: Timestamp,
}

/// Something that happens to a profile.
#[derive(Clone, Copy)]
pub enum ProfileInput<'a> {
    /// An accepted event of the profile (already deduplicated and rate limited).
    Event(&'a Event),
    /// A timer of `instance_id` came due. `is_fired` tells whether the timer the instance
    /// waits on is the one that fired (a runtime may know the fired timer only by a derived
    /// row id); any other timer is stale.
    TimerFired {
        instance_id: &'a str,
        is_fired: &'a dyn Fn(&Timer) -> bool,
    },
    /// End an instance at once: `ExitInstance`, or its journey archived in exit mode.
    Terminate {
        instance_id: &'a str,
        reason: &'a ExitReason,
    },
}

/// What an input did: the changes in order, and the answer for the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub effects: Vec<ProfileEffect>,
    pub outcome: InputOutcome,
}

/// The answer for one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputOutcome {
    /// The event applied (whatever it changed).
    Event,
    /// The event was refused whole: it would have started an instance of each of
    /// `journey_ids` while the profile had the maximum of active instances. The profile is as
    /// it was; the effects hold only the refused entries (`too_many_instances` skips).
    TooManyInstances {
        journey_ids: Vec<String>,
    },
    Timer(TimerFiring),
    Terminate(Termination),
}

/// What a fired timer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerFiring {
    /// The instance took the timer and moved on.
    Fired,
    /// Nothing: the instance is missing or finished, or waits on another timer. The timer is
    /// spent either way.
    Discarded,
    /// The instance's journey is not loaded: nothing happened, try again later.
    JourneyNotLoaded { journey_id: String },
}

/// What an operator exit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Termination {
    /// The instance was active and is now exited.
    Exited,
    /// No active instance has this id.
    NotActive,
    /// The instance's journey is not loaded: nothing happened.
    JourneyNotLoaded { journey_id: String },
}

/// One change to the profile, in the order it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum ProfileEffect {
    /// `identify` traits merged into the profile (top-level keys replace).
    TraitsMerged(Map<String, Json>),
    /// The profile entered an enter-once journey (recorded so it never enters again).
    EnteredOnce { journey_id: String },
    /// An entry event did not start an instance of `journey_id`.
    EntrySkipped {
        journey_id: String,
        reason: SkipReason,
    },
    /// An instance started or moved on; its new state is `ProfileState::instances[position]`.
    Instance(InstanceChange),
}

/// A transition of one of the profile's instances.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceChange {
    /// Position in `ProfileState::instances`.
    pub position: usize,
    pub why: ChangeCause,
    /// The step the instance was in before the change; `None` for an entry.
    pub from_step: Option<String>,
    /// The state machine's effects (timers, sends, timeline rows, ending), in order.
    pub effects: Vec<Effect>,
}

/// Which rule moved an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeCause {
    /// It started (its position is new).
    Entered,
    /// An exit rule matched an event.
    ExitRule,
    /// A hold-until branch took an event.
    HoldMatched,
    /// Its timer fired.
    TimerFired,
    /// An operator or an archive ended it.
    Terminated,
}

/// Applies `input` to `state` under `rules`: updates the state and returns what changed.
/// Pure: no I/O, no clock (`rules.now` is the time).
pub fn apply(state: &mut ProfileState, rules: &Rules<'_>, input: ProfileInput<'_>) -> Applied {
    let mut effects = Vec::new();
    let outcome = match input {
        ProfileInput::Event(event) => apply_event(state, rules, event, &mut effects),
        ProfileInput::TimerFired {
            instance_id,
            is_fired,
        } => InputOutcome::Timer(timers::fire(
            state,
            rules,
            instance_id,
            is_fired,
            &mut effects,
        )),
        ProfileInput::Terminate {
            instance_id,
            reason,
        } => InputOutcome::Terminate(exits::terminate(
            state,
            rules,
            instance_id,
            reason,
            &mut effects,
        )),
    };
    Applied { effects, outcome }
}

fn apply_event(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    event: &Event,
    effects: &mut Vec<ProfileEffect>,
) -> InputOutcome {
    let routes = rules.journeys.routes(&event.event);
    // An event starts at most one instance per journey it enters, and nothing else it does
    // adds active instances: below this bound no entry can meet the limit, so the state is
    // kept for a refusal only when one might.
    let entries = routes.map_or(0, |r| r.entries.len());
    let before = (entries > 0 && state.active_count() + entries > rules.max_active_instances)
        .then(|| state.clone());
    if event.kind == EventType::Identify {
        traits::merge(state, &event.traits, rules.audience_keys, effects);
    }
    let Some(routes) = routes else {
        return InputOutcome::Event;
    };
    exits::exit_rules(state, rules, routes, event, effects);
    holds::hold_matches(state, rules, routes, event, effects);
    entries::enter(state, rules, routes, event, effects);
    if let Some(before) = before {
        let journey_ids: Vec<String> = effects
            .iter()
            .filter_map(|effect| match effect {
                ProfileEffect::EntrySkipped {
                    journey_id,
                    reason: SkipReason::TooManyInstances,
                } => Some(journey_id.clone()),
                _ => None,
            })
            .collect();
        if !journey_ids.is_empty() {
            *state = before;
            effects.retain(|effect| {
                matches!(
                    effect,
                    ProfileEffect::EntrySkipped {
                        reason: SkipReason::TooManyInstances,
                        ..
                    }
                )
            });
            return InputOutcome::TooManyInstances { journey_ids };
        }
    }
    InputOutcome::Event
}

/// Offers each instance of the journeys at `positions` (in the index) to `offer`, in instance
/// order, and steps it with the input `offer` returns, if any.
fn offer_instances<'e>(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    positions: &[usize],
    why: ChangeCause,
    effects: &mut Vec<ProfileEffect>,
    offer: impl Fn(&Journey, &Instance) -> Option<Input<'e>>,
) {
    for journey in positions.iter().filter_map(|&p| rules.journeys.journey(p)) {
        for i in 0..state.instances.len() {
            let inst = &state.instances[i];
            if inst.journey_id != journey.id() {
                continue;
            }
            if let Some(input) = offer(journey, inst) {
                advance(state, i, journey, input, rules, why, effects);
            }
        }
    }
}

/// Steps instance `position` with `input`; keeps the new state and records the change.
/// Returns whether the input applied.
fn advance(
    state: &mut ProfileState,
    position: usize,
    journey: &Journey,
    input: Input<'_>,
    rules: &Rules<'_>,
    why: ChangeCause,
    effects: &mut Vec<ProfileEffect>,
) -> bool {
    let ProfileState {
        traits,
        audiences,
        instances,
        ..
    } = state;
    let Some(slot) = instances.get_mut(position) else {
        return false;
    };
    let ctx = StepContext {
        traits,
        audiences,
        now: rules.now,
        max_return_to_start_passes: rules.instance_limits.max_return_to_start_passes,
    };
    let transition = step(journey, slot, input, &ctx);
    if transition.is_noop() {
        return false;
    }
    let from_step = std::mem::replace(slot, transition.instance).current_step;
    effects.push(ProfileEffect::Instance(InstanceChange {
        position,
        why,
        from_step: Some(from_step),
        effects: transition.effects,
    }));
    true
}

#[cfg(test)]
mod tests;

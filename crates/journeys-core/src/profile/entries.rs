//! The entry decision for one profile: for each journey an event triggers, whether it starts
//! an instance. On top of the journey's own admission ([`decide_entry`]: trigger, filters,
//! audience, unique identifier, entry rule) come the profile-wide rules: archived journeys are
//! never entered, a journey that replaced another with `exclude_active` is not entered while
//! the profile is active in the replaced one, an entry that would recreate an existing
//! instance is a replay, and an entry that would wait while the profile has the maximum of
//! active instances is skipped.

use super::{ChangeCause, InstanceChange, ProfileEffect, ProfileState, Rules};
use crate::index::EventRoutes;
use crate::machine::{
    EntryFacts, Input, Instance, Journey, SkipReason, StepContext, decide_entry, instance_id, step,
};
use crate::model::{EntryRule, Event};

/// Starts an instance of every enterable journey `event` triggers that admits it.
pub(super) fn enter(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    routes: &EventRoutes,
    event: &Event,
    effects: &mut Vec<ProfileEffect>,
) {
    for journey in routes
        .entries
        .iter()
        .filter_map(|&p| rules.journeys.journey(p))
    {
        if rules.archived.contains(journey.id()) {
            continue;
        }
        if let Err(reason) = enter_one(state, rules, journey, event, effects) {
            effects.push(ProfileEffect::EntrySkipped {
                journey_id: journey.id().to_owned(),
                reason,
            });
        }
    }
}

/// Starts an instance of `journey` or says why not. `NotTriggered` is no skip: it is
/// swallowed here.
fn enter_one(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    journey: &Journey,
    event: &Event,
    effects: &mut Vec<ProfileEffect>,
) -> Result<(), SkipReason> {
    let active_values: Vec<&str> = state
        .instances
        .iter()
        .filter(|i| i.is_active() && i.journey_id == journey.id())
        .filter_map(|i| i.unique_value.as_deref())
        .collect();
    let facts = EntryFacts {
        audiences: &state.audiences,
        already_entered: state.entered_once.contains(journey.id()),
        active_unique_values: &active_values,
        max_unique_value_chars: rules.instance_limits.max_unique_value_chars,
    };
    let admission = match decide_entry(journey, event, &facts) {
        Ok(admission) => admission,
        Err(SkipReason::NotTriggered) => return Ok(()),
        Err(reason) => return Err(reason),
    };
    if let Some(replaced) = rules.excluded_while_active_in.get(journey.id())
        && state
            .instances
            .iter()
            .any(|i| i.is_active() && i.journey_id == *replaced)
    {
        return Err(SkipReason::ActiveInReplacedJourney);
    }
    let id = instance_id(journey.id(), &event.dedupe_key());
    if rules.known_instance_ids.contains(&id) || state.instances.iter().any(|i| i.id == id) {
        return Err(SkipReason::ReplayedEntry);
    }
    let fresh = Instance::new(journey, id, event, admission, rules.now);
    let ctx = StepContext {
        traits: &state.traits,
        audiences: &state.audiences,
        now: rules.now,
        max_return_to_start_passes: rules.instance_limits.max_return_to_start_passes,
    };
    let transition = step(journey, &fresh, Input::Enter(event), &ctx);
    if transition.instance.is_active() && state.active_count() >= rules.max_active_instances {
        return Err(SkipReason::TooManyInstances);
    }
    if journey.definition().entry_rule == EntryRule::EnterOnce {
        state.entered_once.insert(journey.id().to_owned());
        effects.push(ProfileEffect::EnteredOnce {
            journey_id: journey.id().to_owned(),
        });
    }
    effects.push(ProfileEffect::Instance(InstanceChange {
        position: state.instances.len(),
        why: ChangeCause::Entered,
        from_step: None,
        effects: transition.effects,
    }));
    state.instances.push(transition.instance);
    Ok(())
}

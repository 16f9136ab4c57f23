//! Timer firing: a due timer moves its instance on only if it is the timer the instance waits
//! on (a delay, or a hold-until's timeout); any other — the instance finished, or left that
//! wait because an event came first — is stale and spent without effect.

use super::{ChangeCause, ProfileEffect, ProfileState, Rules, TimerFiring, advance};
use crate::machine::{Input, Timer};

/// Fires the timer of `instance_id` that `is_fired` recognises.
pub(super) fn fire(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    instance_id: &str,
    is_fired: &dyn Fn(&Timer) -> bool,
    effects: &mut Vec<ProfileEffect>,
) -> TimerFiring {
    let waiting = state
        .instances
        .iter()
        .position(|inst| inst.id == instance_id && inst.waiting_timer().is_some_and(is_fired));
    let Some(i) = waiting else {
        return TimerFiring::Discarded;
    };
    let inst = &state.instances[i];
    let Some(journey) = rules.journeys.by_id(&inst.journey_id) else {
        return TimerFiring::JourneyNotLoaded {
            journey_id: inst.journey_id.clone(),
        };
    };
    let Some(timer) = inst.waiting_timer().cloned() else {
        return TimerFiring::Discarded;
    };
    let input = Input::TimerFired(&timer);
    if advance(
        state,
        i,
        journey,
        input,
        rules,
        ChangeCause::TimerFired,
        effects,
    ) {
        TimerFiring::Fired
    } else {
        TimerFiring::Discarded
    }
}

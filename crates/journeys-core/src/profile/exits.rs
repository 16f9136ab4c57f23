//! How an instance ends before its journey does: an exit rule matched by an event of the
//! profile, or an operator exit (`ExitInstance`, a journey archived in exit mode).

use super::{ChangeCause, ProfileEffect, ProfileState, Rules, Termination, advance};
use crate::index::EventRoutes;
use crate::machine::{ExitReason, Input, matching_exit_rule};
use crate::model::Event;

/// Applies the first matching exit rule of each active instance whose journey has an exit rule
/// on this event.
pub(super) fn exit_rules(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    routes: &EventRoutes,
    event: &Event,
    effects: &mut Vec<ProfileEffect>,
) {
    for journey in routes
        .exits
        .iter()
        .filter_map(|&p| rules.journeys.journey(p))
    {
        for i in 0..state.instances.len() {
            let inst = &state.instances[i];
            if inst.journey_id != journey.id() {
                continue;
            }
            if let Some(rule) = matching_exit_rule(journey, event, inst) {
                let input = Input::Exit { event, rule };
                advance(
                    state,
                    i,
                    journey,
                    input,
                    rules,
                    ChangeCause::ExitRule,
                    effects,
                );
            }
        }
    }
}

/// Ends instance `instance_id` at once, if it is active.
pub(super) fn terminate(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    instance_id: &str,
    reason: &ExitReason,
    effects: &mut Vec<ProfileEffect>,
) -> Termination {
    let Some(i) = state
        .instances
        .iter()
        .position(|inst| inst.id == instance_id && inst.is_active())
    else {
        return Termination::NotActive;
    };
    let journey_id = &state.instances[i].journey_id;
    let Some(journey) = rules.journeys.by_id(journey_id) else {
        return Termination::JourneyNotLoaded {
            journey_id: journey_id.clone(),
        };
    };
    let input = Input::Terminate(reason.clone());
    if advance(
        state,
        i,
        journey,
        input,
        rules,
        ChangeCause::Terminated,
        effects,
    ) {
        Termination::Exited
    } else {
        Termination::NotActive
    }
}

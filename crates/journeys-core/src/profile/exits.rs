//! How an instance ends before its journey does: an exit rule matched by an event of the
//! profile, or an operator exit (`ExitInstance`, a journey archived in exit mode).

use super::{
    ChangeCause, ProfileEffect, ProfileState, Rules, Termination, advance, offer_instances,
};
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
    let why = ChangeCause::ExitRule;
    offer_instances(
        state,
        rules,
        &routes.exits,
        why,
        effects,
        |journey, inst| {
            matching_exit_rule(journey, event, inst).map(|rule| Input::Exit { event, rule })
        },
    );
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

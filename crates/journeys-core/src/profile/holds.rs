//! Hold-until matching: which of the profile's instances an event reaches. Only instances of
//! a journey with a hold-until branch on this event, waiting for this event name, are offered
//! it; the state machine (`machine/run.rs`) then picks the branch, checking its filters and,
//! under re-entry, the unique identifier.

use super::{ChangeCause, ProfileEffect, ProfileState, Rules, offer_instances};
use crate::index::EventRoutes;
use crate::machine::Input;
use crate::model::Event;

/// Offers `event` to every instance waiting for it in a hold-until.
pub(super) fn hold_matches(
    state: &mut ProfileState,
    rules: &Rules<'_>,
    routes: &EventRoutes,
    event: &Event,
    effects: &mut Vec<ProfileEffect>,
) {
    let why = ChangeCause::HoldMatched;
    offer_instances(state, rules, &routes.holds, why, effects, |_, inst| {
        let waits = inst.waiting_events().contains(&event.event);
        waits.then_some(Input::Event(event))
    });
}

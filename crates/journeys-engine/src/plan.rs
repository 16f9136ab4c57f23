//! Evaluation of one lane batch, without I/O: given the loaded profiles and the journey
//! snapshot, runs every item through the core state machine in order and gathers the rows to
//! commit, the per-item outcomes and the counters.
//!
//! For an event the order is: traits and audience sync (`identify`), catalog, then — via the
//! index, for that event name — exit rules on the profile's active instances, hold-until
//! branches of its waiting instances, and finally entries. So an event that both exits and
//! enters a journey ends the old instance before starting a new one, and an instance never
//! takes a hold branch with the event that started it.
//!
//! Decisions where SPEC.md is silent:
//! - The per-profile instance limit counts instances that stay active: an entry whose
//!   transition ends at once (a forwarding journey) is always made; one that would wait while
//!   the profile already has the maximum active is skipped as `too_many_instances`. The event
//!   itself is still accepted (its other effects apply).
//! - An entry whose deterministic instance id already exists (the same `messageId` resent after
//!   the dedupe window) is skipped as `replayed_entry`, never started twice.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use journeys_core::machine::{
    EntryFacts, ExitReason, Input, Instance, Journey, SkipReason, StepContext, decide_entry,
    instance_id, matching_exit_rule, step,
};
use journeys_core::model::{EntryRule, Event, EventType};
use journeys_store::{Changes, ProfileState, TimerRecord};

use crate::ack::AckStatus;
use crate::cache::Snapshot;
use crate::changes::{ChangeSet, timer_row_id};
use crate::job::{Item, Outcome, TerminateOutcome, TimerStatus};
use crate::profile::{ProfileWork, WorkInstance};
use crate::stats::StatsDelta;

/// Skip reason of an entry over the per-profile active-instance limit.
pub(crate) const TOO_MANY_INSTANCES: &str = "too_many_instances";
/// Skip reason of an entry whose instance already exists.
pub(crate) const REPLAYED_ENTRY: &str = "replayed_entry";

/// What the lane decided about an item before evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Evaluate it.
    Pass,
    /// Answer without evaluating (duplicate, rate limited).
    Answer(Outcome),
}

/// The fixed inputs of one evaluation.
pub(crate) struct PlanContext<'a> {
    pub snapshot: &'a Snapshot,
    pub now: DateTime<Utc>,
    pub max_active: usize,
    /// Ids of instances known to exist already (checked on retries only).
    pub existing: &'a HashSet<String>,
}

/// The result of evaluating a batch.
#[derive(Debug)]
pub(crate) struct Plan {
    pub changes: Changes,
    /// One per item, in item order.
    pub outcomes: Vec<Outcome>,
    pub delta: StatsDelta,
    /// Ids of the instances the plan creates.
    pub new_instance_ids: Vec<String>,
}

/// Evaluates `items` (`(profile id, item, gate, trace context)`) in order against `profiles`.
/// The outbox rows an item queues carry its trace context (a W3C `traceparent`), if any.
///
/// # Errors
/// When an instance cannot be serialized (a bug): the batch cannot be written.
pub(crate) fn evaluate(
    ctx: &PlanContext<'_>,
    profiles: &HashMap<String, ProfileState>,
    items: &[(&str, &Item, &Gate, Option<&str>)],
) -> Result<Plan, serde_json::Error> {
    let mut planner = Planner {
        ctx,
        profiles: HashMap::new(),
        order: Vec::new(),
        out: ChangeSet::default(),
        delta: StatsDelta::default(),
    };
    let mut outcomes = Vec::with_capacity(items.len());
    for (profile_id, item, gate, trace) in items {
        let queued = planner.out.changes.outbox_new.len();
        let outcome = match gate {
            Gate::Answer(outcome) => {
                if let Outcome::Ack(status) = outcome {
                    planner.count_answer(status);
                }
                outcome.clone()
            }
            Gate::Pass => {
                planner.load(profile_id, profiles);
                match item {
                    Item::Event(event) => {
                        planner.event(profile_id, event);
                        Outcome::Ack(AckStatus::Accepted)
                    }
                    Item::Timer(timer) => Outcome::Timer(planner.timer(profile_id, timer)),
                    Item::Terminate {
                        instance_id,
                        reason,
                    } => Outcome::Terminate(planner.terminate(profile_id, instance_id, reason)),
                }
            }
        };
        if let Some(trace) = trace {
            for row in &mut planner.out.changes.outbox_new[queued..] {
                row.traceparent = Some((*trace).to_owned());
            }
        }
        outcomes.push(outcome);
    }
    planner.finish(outcomes)
}

struct Planner<'a> {
    ctx: &'a PlanContext<'a>,
    profiles: HashMap<String, ProfileWork>,
    /// Profiles in first-seen order, so rows are written deterministically.
    order: Vec<String>,
    out: ChangeSet,
    delta: StatsDelta,
}

impl Planner<'_> {
    fn count_answer(&mut self, status: &AckStatus) {
        match status {
            AckStatus::Accepted => self.delta.events_accepted += 1,
            AckStatus::Duplicate => self.delta.events_duplicate += 1,
            AckStatus::Rejected { code, .. } => self.delta.reject(code),
        }
    }

    fn load(&mut self, profile_id: &str, profiles: &HashMap<String, ProfileState>) {
        if self.profiles.contains_key(profile_id) {
            return;
        }
        let work = match profiles.get(profile_id) {
            Some(state) => ProfileWork::from_state(profile_id, state),
            None => ProfileWork::from_state(profile_id, &ProfileState::default()),
        };
        self.profiles.insert(profile_id.to_owned(), work);
        self.order.push(profile_id.to_owned());
    }

    fn event(&mut self, profile_id: &str, event: &Event) {
        let Self {
            ctx,
            profiles,
            out,
            delta,
            ..
        } = self;
        let Some(work) = profiles.get_mut(profile_id) else {
            return;
        };
        let now = ctx.now;
        delta.events_accepted += 1;
        out.changes.dedupe.push((event.message_id.clone(), now));
        out.changes.catalog_seen.push((event.event.clone(), now));
        if event.kind == EventType::Identify {
            work.merge_traits(&event.traits, &ctx.snapshot.audiences);
        }
        let index = &ctx.snapshot.index;
        let Some(routes) = index.routes(&event.event) else {
            return;
        };
        for journey in routes.exits.iter().filter_map(|&p| index.journey(p)) {
            for i in 0..work.instances.len() {
                let inst = &work.instances[i].inst;
                if inst.journey_id != journey.id() {
                    continue;
                }
                if let Some(rule) = matching_exit_rule(journey, event, inst)
                    && advance(
                        out,
                        delta,
                        work,
                        i,
                        journey,
                        Input::Exit { event, rule },
                        now,
                    )
                {
                    delta.exits += 1;
                }
            }
        }
        for journey in routes.holds.iter().filter_map(|&p| index.journey(p)) {
            for i in 0..work.instances.len() {
                let inst = &work.instances[i].inst;
                if inst.journey_id != journey.id() || !inst.waiting_events().contains(&event.event)
                {
                    continue;
                }
                if advance(out, delta, work, i, journey, Input::Event(event), now) {
                    delta.hold_matches += 1;
                }
            }
        }
        for journey in routes.entries.iter().filter_map(|&p| index.journey(p)) {
            if !ctx.snapshot.enterable(journey.id()) {
                continue;
            }
            enter(ctx, out, delta, work, journey, event);
        }
    }

    fn timer(&mut self, profile_id: &str, timer: &TimerRecord) -> TimerStatus {
        let Self {
            ctx,
            profiles,
            out,
            delta,
            ..
        } = self;
        let Some(work) = profiles.get_mut(profile_id) else {
            return TimerStatus::Retry {
                code: "internal".into(),
                message: "profile not loaded".into(),
            };
        };
        let waiting = work.instances.iter().position(|w| {
            w.inst.id == timer.instance_id
                && w.inst
                    .waiting_timer()
                    .is_some_and(|t| timer_row_id(&t.id) == timer.id)
        });
        let Some(i) = waiting else {
            // Missing or finished instance, or a timer it no longer waits on.
            out.delete_timer(timer.id.clone());
            delta.timers_discarded += 1;
            return TimerStatus::Discarded;
        };
        let Some(journey) = ctx.snapshot.index.by_id(&work.instances[i].inst.journey_id) else {
            tracing::warn!(
                timer_id = %timer.id,
                journey_id = %timer.journey_id,
                "timer of a journey that is not loaded; left for a retry"
            );
            return TimerStatus::Retry {
                code: "journey_not_loaded".into(),
                message: format!("journey {} is not loaded", timer.journey_id),
            };
        };
        let Some(core_timer) = work.instances[i].inst.waiting_timer().cloned() else {
            return TimerStatus::Discarded;
        };
        out.delete_timer(timer.id.clone());
        if advance(
            out,
            delta,
            work,
            i,
            journey,
            Input::TimerFired(&core_timer),
            ctx.now,
        ) {
            delta.timers_fired += 1;
            TimerStatus::Fired
        } else {
            delta.timers_discarded += 1;
            TimerStatus::Discarded
        }
    }

    fn terminate(
        &mut self,
        profile_id: &str,
        instance_id: &str,
        reason: &ExitReason,
    ) -> Result<TerminateOutcome, String> {
        let Self {
            ctx,
            profiles,
            out,
            delta,
            ..
        } = self;
        let Some(work) = profiles.get_mut(profile_id) else {
            return Ok(TerminateOutcome::NotActive);
        };
        let Some(i) = work
            .instances
            .iter()
            .position(|w| w.inst.id == instance_id && w.inst.is_active())
        else {
            return Ok(TerminateOutcome::NotActive);
        };
        let journey_id = work.instances[i].inst.journey_id.clone();
        let Some(journey) = ctx.snapshot.index.by_id(&journey_id) else {
            return Err(format!("journey {journey_id} is not loaded"));
        };
        let input = Input::Terminate(reason.clone());
        if advance(out, delta, work, i, journey, input, ctx.now) {
            delta.terminations += 1;
            Ok(TerminateOutcome::Exited)
        } else {
            Ok(TerminateOutcome::NotActive)
        }
    }

    fn finish(mut self, outcomes: Vec<Outcome>) -> Result<Plan, serde_json::Error> {
        for profile_id in &self.order {
            let Some(work) = self.profiles.get(profile_id) else {
                continue;
            };
            if !work.trait_changes.is_empty() {
                self.out
                    .changes
                    .traits
                    .push((profile_id.clone(), work.trait_changes.clone()));
            }
            let (added, removed) = work.audience_changes();
            for key in added {
                self.out
                    .changes
                    .audience_adds
                    .push((key, profile_id.clone()));
            }
            for key in removed {
                self.out
                    .changes
                    .audience_removes
                    .push((key, profile_id.clone()));
            }
            for w in work.instances.iter().filter(|w| w.dirty) {
                self.out.write_instance(&w.inst, w.stored_version)?;
            }
        }
        let new_instance_ids = self.out.new_instance_ids();
        Ok(Plan {
            changes: self.out.into_changes(),
            outcomes,
            delta: self.delta,
            new_instance_ids,
        })
    }
}

/// Steps instance `i` of `work` with `input`; records the effects and keeps the new state.
/// Returns whether the input applied.
fn advance(
    out: &mut ChangeSet,
    delta: &mut StatsDelta,
    work: &mut ProfileWork,
    i: usize,
    journey: &Journey,
    input: Input<'_>,
    now: DateTime<Utc>,
) -> bool {
    let ProfileWork {
        traits,
        audiences,
        instances,
        ..
    } = work;
    let Some(slot) = instances.get_mut(i) else {
        return false;
    };
    let step_ctx = StepContext {
        traits,
        audiences,
        now,
    };
    let transition = step(journey, &slot.inst, input, &step_ctx);
    if transition.is_noop() {
        return false;
    }
    out.record(&transition, now, delta);
    slot.inst = transition.instance;
    slot.dirty = true;
    true
}

/// Starts an instance of `journey` for the event's profile if its entry rules admit it.
fn enter(
    ctx: &PlanContext<'_>,
    out: &mut ChangeSet,
    delta: &mut StatsDelta,
    work: &mut ProfileWork,
    journey: &Journey,
    event: &Event,
) {
    let active_values: Vec<&str> = work
        .instances
        .iter()
        .filter(|w| w.inst.is_active() && w.inst.journey_id == journey.id())
        .filter_map(|w| w.inst.unique_value.as_deref())
        .collect();
    let facts = EntryFacts {
        audiences: &work.audiences,
        already_entered: work.entered_once.contains(journey.id()),
        active_unique_values: &active_values,
    };
    let admission = match decide_entry(journey, event, &facts) {
        Ok(admission) => admission,
        Err(SkipReason::NotTriggered) => return,
        Err(reason) => {
            delta.skip(reason.as_str());
            return;
        }
    };
    let id = instance_id(journey.id(), &event.message_id);
    if ctx.existing.contains(&id) || work.instances.iter().any(|w| w.inst.id == id) {
        delta.skip(REPLAYED_ENTRY);
        return;
    }
    let fresh = Instance::new(journey, id, event, admission, ctx.now);
    let step_ctx = StepContext {
        traits: &work.traits,
        audiences: &work.audiences,
        now: ctx.now,
    };
    let transition = step(journey, &fresh, Input::Enter(event), &step_ctx);
    if transition.instance.is_active() && work.active_count() >= ctx.max_active {
        tracing::warn!(
            profile_id = %fresh.profile_id,
            journey_id = %journey.id(),
            message_id = %event.message_id,
            limit = ctx.max_active,
            "entry skipped: the profile has the maximum number of active instances"
        );
        delta.skip(TOO_MANY_INSTANCES);
        return;
    }
    if journey.definition().entry_rule == EntryRule::EnterOnce {
        work.entered_once.insert(journey.id().to_owned());
        out.changes
            .enter_once
            .push((journey.id().to_owned(), fresh.profile_id));
    }
    delta.entries += 1;
    out.record(&transition, ctx.now, delta);
    work.instances.push(WorkInstance {
        inst: transition.instance,
        stored_version: None,
        dirty: true,
    });
}

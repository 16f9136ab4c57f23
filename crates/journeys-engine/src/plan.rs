//! Evaluation of one lane batch, without I/O: given the loaded profiles and the journey
//! snapshot, runs every item through the core's profile rules ([`journeys_core::profile`]) in
//! order and turns what they did into the rows to commit, the per-item outcomes and the
//! counters. The rules themselves (exits, then holds, then entries; the active-instance limit;
//! replayed entries; the archived-journey gate; trait merge and audience sync; timer firing)
//! live in the core, shared with `SimulateJourney`.

mod identity;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use journeys_core::machine::{ExitReason, InstanceLimits, Timer};
use journeys_core::model::{Event, EventType};
use journeys_core::profile::traits::{TraitLimits, check_limits};
use journeys_core::profile::{
    Applied, ChangeCause, InputOutcome, ProfileEffect, ProfileInput, Rules, Termination,
    TimerFiring, apply,
};
use journeys_store::{Changes, ProfileState, TimerRecord};

use crate::ack::AckStatus;
use crate::cache::Snapshot;
use crate::changes::{ChangeSet, timer_row_id};
use crate::job::{Item, Outcome, TerminateOutcome, TimerStatus};
use crate::profile::ProfileWork;
use crate::stats::StatsDelta;

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
    /// Return-to-start passes and unique-identifier length.
    pub instance_limits: InstanceLimits,
    /// How long after its entry an instance expires.
    pub instance_lifetime: TimeDelta,
    /// How far a profile's traits may grow.
    pub trait_limits: TraitLimits,
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
    /// Every profile the plan evaluated, as it is once the plan is committed (to settle).
    pub profiles: Vec<(String, ProfileWork)>,
    /// Ids that were linked to the profiles the plan deletes: their owners must forget them
    /// (they would hand their items on to the deleted profile).
    pub unlinked: Vec<String>,
}

/// Evaluates `items` (`(profile id, item, gate, trace context)`) in order against `profiles`.
/// The outbox rows an item queues carry its trace context (a W3C `traceparent`), if any.
///
/// # Errors
/// When an instance cannot be serialized (a bug): the batch cannot be written.
pub(crate) fn evaluate(
    ctx: &PlanContext<'_>,
    profiles: &HashMap<String, ProfileWork>,
    items: &[(&str, &Item, &Gate, Option<&str>)],
) -> Result<Plan, serde_json::Error> {
    let mut planner = Planner {
        ctx,
        profiles: HashMap::new(),
        order: Vec::new(),
        out: ChangeSet::default(),
        delta: StatsDelta::default(),
        unlinked: Vec::new(),
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
            Gate::Pass => planner.pass(profile_id, item, profiles),
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

impl Planner<'_> {
    /// Evaluates one item that passed its gate.
    fn pass(
        &mut self,
        profile_id: &str,
        item: &Item,
        profiles: &HashMap<String, ProfileWork>,
    ) -> Outcome {
        if let Item::Relay { to, .. } = item {
            return Outcome::Forward {
                to: to.clone(),
                merge: false,
            };
        }
        self.load(profile_id, profiles);
        if let Some(to) = self.redirect(profile_id, item) {
            if let Item::Merge { from } = item {
                self.relink(profile_id, from, &to);
            }
            return Outcome::Forward { to, merge: false };
        }
        match item {
            Item::Event(event) => self.event(profile_id, event),
            Item::Link(event) => self.link(profile_id, event),
            Item::Relay { to, .. } => Outcome::Forward {
                to: to.clone(),
                merge: false,
            },
            Item::Merge { from } => self.merge_item(profile_id, from),
            Item::Timer(timer) => Outcome::Timer(self.timer(profile_id, timer)),
            Item::Terminate {
                instance_id,
                reason,
            } => Outcome::Terminate(self.terminate(profile_id, instance_id, reason)),
            Item::Delete { suppress } => {
                self.delete(profile_id, *suppress);
                Outcome::Delete(Ok(()))
            }
        }
    }
}

struct Planner<'a> {
    ctx: &'a PlanContext<'a>,
    profiles: HashMap<String, ProfileWork>,
    /// Profiles in first-seen order, so rows are written deterministically.
    order: Vec<String>,
    out: ChangeSet,
    delta: StatsDelta,
    /// Ids that were linked to the profiles deleted in the batch.
    unlinked: Vec<String>,
}

impl Planner<'_> {
    fn count_answer(&mut self, status: &AckStatus) {
        match status {
            AckStatus::Accepted => self.delta.events_accepted += 1,
            AckStatus::Duplicate => self.delta.events_duplicate += 1,
            AckStatus::Rejected { code, .. } => self.delta.reject(code),
        }
    }

    fn load(&mut self, profile_id: &str, profiles: &HashMap<String, ProfileWork>) {
        if self.profiles.contains_key(profile_id) {
            return;
        }
        let work = match profiles.get(profile_id) {
            Some(work) => work.clone(),
            None => ProfileWork::from_state(profile_id, &ProfileState::default()),
        };
        self.profiles.insert(profile_id.to_owned(), work);
        self.order.push(profile_id.to_owned());
        self.merge_pending(profile_id);
    }

    /// Applies `input` to the loaded profile and records what it did; `None` when the profile
    /// is not loaded. For a fired timer, `spent` is its row: deleted (unless the journey is
    /// not loaded) before the transition's rows are added.
    fn apply(
        &mut self,
        profile_id: &str,
        input: ProfileInput<'_>,
        spent: Option<&TimerRecord>,
    ) -> Option<Applied> {
        let ctx = self.ctx;
        let work = self.profiles.get_mut(profile_id)?;
        let applied = apply(&mut work.state, &rules(ctx), input);
        if let Some(timer) = spent
            && !matches!(
                applied.outcome,
                InputOutcome::Timer(TimerFiring::JourneyNotLoaded { .. })
            )
        {
            self.out.delete_timer(timer.id.clone());
        }
        work.absorb(&applied.effects);
        if applied
            .effects
            .iter()
            .any(|e| matches!(e, ProfileEffect::TraitsMerged(_)))
        {
            work.traits_at = Some(ctx.now);
        }
        record(
            ctx,
            &mut self.out,
            &mut self.delta,
            work,
            profile_id,
            &applied.effects,
        );
        Some(applied)
    }

    /// Deletes the profile: what the batch did to it so far and everything stored go (the
    /// commit removes its rows after the batch's other writes); what follows in the batch sees
    /// only the tombstone.
    fn delete(&mut self, profile_id: &str, suppress: bool) {
        let tombstone = journeys_store::Tombstone {
            deleted_at: self.ctx.now,
            suppressed: suppress,
        };
        if let Some(work) = self.profiles.get(profile_id) {
            self.unlinked.extend(work.identities.iter().cloned());
        }
        self.profiles
            .insert(profile_id.to_owned(), ProfileWork::deleted(tombstone));
        self.out
            .changes
            .deletions
            .push(journeys_store::ProfileDeletion {
                profile_id: profile_id.to_owned(),
                deleted_at: self.ctx.now,
                suppressed: suppress,
            });
        tracing::info!(profile_id, suppress, "profile deleted");
    }

    fn event(&mut self, profile_id: &str, event: &Event) -> Outcome {
        let accepted = Outcome::Ack(AckStatus::Accepted);
        let Some(work) = self.profiles.get(profile_id) else {
            return accepted;
        };
        if let Some(tombstone) = work.tombstone
            && (tombstone.drops(event.timestamp) || self.deleted_in_batch(profile_id))
        {
            // Acknowledged like any event (a client has nothing to retry), applied to nothing.
            tracing::debug!(profile_id, message_id = %event.message_id, "event of a deleted profile dropped");
            self.delta.events_accepted += 1;
            return accepted;
        }
        if event.kind == EventType::Identify
            && let Err(why) = check_limits(&work.state.traits, &event.traits, self.ctx.trait_limits)
        {
            let status = AckStatus::Rejected {
                code: crate::ack::TRAITS_LIMIT.into(),
                message: why,
            };
            self.count_answer(&status);
            return Outcome::Ack(status);
        }
        let applied = self.apply(profile_id, ProfileInput::Event(event), None);
        if let Some(Applied {
            outcome: InputOutcome::TooManyInstances { journey_ids },
            ..
        }) = &applied
        {
            // Refused whole: the core left the profile as it was; only the refused entries
            // were recorded (counted). No dedupe key, so the event may be sent again.
            tracing::warn!(
                profile_id,
                message_id = %event.message_id,
                journeys = ?journey_ids,
                limit = self.ctx.max_active,
                "event rejected: it would start an instance while the profile has the maximum of active instances"
            );
            let status = AckStatus::Rejected {
                code: crate::ack::TOO_MANY_INSTANCES.into(),
                message: format!(
                    "the profile has the maximum of {} active instances; this event would start \
                     another (journey {}); send it again once some have ended",
                    self.ctx.max_active,
                    journey_ids.join(", ")
                ),
            };
            self.count_answer(&status);
            return Outcome::Ack(status);
        }
        let now = self.ctx.now;
        self.delta.events_accepted += 1;
        self.out
            .changes
            .dedupe
            .push((event.dedupe_key().into_owned(), now));
        self.out
            .changes
            .catalog_seen
            .push((event.event.clone(), now));
        accepted
    }

    /// Whether the batch deleted the profile (its later events in the batch are dropped
    /// whatever their timestamps: the deletion's rows are written after everything else).
    fn deleted_in_batch(&self, profile_id: &str) -> bool {
        self.out
            .changes
            .deletions
            .iter()
            .any(|d| d.profile_id == profile_id)
    }

    fn timer(&mut self, profile_id: &str, timer: &TimerRecord) -> TimerStatus {
        // The store knows a timer by a row id derived from the core's timer id.
        let is_fired = |t: &Timer| timer_row_id(&t.id) == timer.id;
        let input = ProfileInput::TimerFired {
            instance_id: &timer.instance_id,
            is_fired: &is_fired,
        };
        let Some(applied) = self.apply(profile_id, input, Some(timer)) else {
            return TimerStatus::Retry {
                code: crate::ack::INTERNAL.into(),
                message: "profile not loaded".into(),
            };
        };
        let InputOutcome::Timer(firing) = applied.outcome else {
            return TimerStatus::Discarded;
        };
        match firing {
            TimerFiring::Fired => TimerStatus::Fired,
            TimerFiring::Discarded => {
                // Missing or finished instance, or a timer it no longer waits on.
                self.delta.timers_discarded += 1;
                TimerStatus::Discarded
            }
            TimerFiring::JourneyNotLoaded { journey_id } => {
                tracing::warn!(
                    timer_id = %timer.id,
                    %journey_id,
                    "timer of a journey that is not loaded; left for a retry"
                );
                TimerStatus::Retry {
                    code: "journey_not_loaded".into(),
                    message: format!("journey {} is not loaded", timer.journey_id),
                }
            }
        }
    }

    fn terminate(
        &mut self,
        profile_id: &str,
        instance_id: &str,
        reason: &ExitReason,
    ) -> Result<TerminateOutcome, String> {
        let input = ProfileInput::Terminate {
            instance_id,
            reason,
        };
        let Some(applied) = self.apply(profile_id, input, None) else {
            return Ok(TerminateOutcome::NotActive);
        };
        match applied.outcome {
            InputOutcome::Terminate(Termination::Exited) => Ok(TerminateOutcome::Exited),
            InputOutcome::Terminate(Termination::JourneyNotLoaded { journey_id }) => {
                Err(format!("journey {journey_id} is not loaded"))
            }
            _ => Ok(TerminateOutcome::NotActive),
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
            for (inst, stored_version) in work.changed() {
                self.out
                    .write_instance(inst, stored_version, self.ctx.instance_lifetime)?;
            }
        }
        let new_instance_ids = self.out.new_instance_ids();
        let mut profiles = self.profiles;
        let profiles = self
            .order
            .into_iter()
            .filter_map(|id| profiles.remove(&id).map(|work| (id, work)))
            .collect();
        Ok(Plan {
            changes: self.out.into_changes(),
            outcomes,
            delta: self.delta,
            new_instance_ids,
            profiles,
            unlinked: self.unlinked,
        })
    }
}

/// The rules the core applies an item under.
fn rules<'a>(ctx: &'a PlanContext<'a>) -> Rules<'a> {
    Rules {
        journeys: &ctx.snapshot.index,
        archived: &ctx.snapshot.archived,
        excluded_while_active_in: &ctx.snapshot.excluded_while_active_in,
        audience_keys: &ctx.snapshot.audiences,
        max_active_instances: ctx.max_active,
        instance_limits: ctx.instance_limits,
        known_instance_ids: ctx.existing,
        now: ctx.now,
    }
}

/// Turns the core's effects on one profile into rows and counters.
fn record(
    ctx: &PlanContext<'_>,
    out: &mut ChangeSet,
    delta: &mut StatsDelta,
    work: &ProfileWork,
    profile_id: &str,
    effects: &[ProfileEffect],
) {
    for effect in effects {
        match effect {
            ProfileEffect::TraitsMerged(_) => {}
            ProfileEffect::EnteredOnce { journey_id } => out
                .changes
                .enter_once
                .push((journey_id.clone(), profile_id.to_owned())),
            ProfileEffect::EntrySkipped { journey_id, reason } => {
                delta.skip(reason.as_str());
                out.count_skip(journey_id, reason.as_str(), ctx.now);
            }
            ProfileEffect::Instance(change) => {
                match change.why {
                    ChangeCause::Entered => delta.entries += 1,
                    ChangeCause::ExitRule => delta.exits += 1,
                    ChangeCause::HoldMatched => delta.hold_matches += 1,
                    ChangeCause::TimerFired => delta.timers_fired += 1,
                    ChangeCause::Terminated => delta.terminations += 1,
                }
                if let Some(inst) = work.state.instances.get(change.position) {
                    out.record(
                        inst,
                        change.from_step.as_deref(),
                        &change.effects,
                        ctx.now,
                        delta,
                    );
                }
            }
        }
    }
}

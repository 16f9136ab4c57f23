//! The step function: applies one input to one instance and runs every instantaneous step
//! that follows (splits, sends) until the instance waits or ends.

use serde_json::json;

use super::entry::{Admission, canonical_value};
use super::exit::exit_rule_matches;
use super::instance::{Instance, InstanceState, Timer, TimerKind, Waiting};
use super::random::random_branch;
use super::{
    Cause, Effect, ExitReason, FailReason, Input, Journey, StepContext, TimelineEntry,
    TimelineKind, Transition, branch_detail, exit_send_key,
};
use crate::eval::{ConditionInput, conditions_hold, filters_match};
use crate::model::{
    DataSplitStep, Event, HoldUntilStep, Json, RandomSplitStep, SendSpec, StepKind,
};
use crate::payload::{PayloadError, SendContext, render_send};

/// Applies `input` to `instance`. Pure: the same arguments always give the same transition.
///
/// Inputs that do not apply (an event no waiting branch takes, a stale timer, anything sent to
/// a finished instance, `Enter` on an instance that already entered) give no effects and the
/// instance unchanged.
pub fn step(
    journey: &Journey,
    instance: &Instance,
    input: Input<'_>,
    ctx: &StepContext<'_>,
) -> Transition {
    if !applies(journey, instance, &input) {
        return Transition {
            instance: instance.clone(),
            effects: Vec::new(),
        };
    }
    run(journey, instance.clone(), input, ctx)
}

/// [`step`] taking the instance by value, for callers that do not keep the old version (it
/// saves a copy of the instance and its context).
pub fn step_owned(
    journey: &Journey,
    instance: Instance,
    input: Input<'_>,
    ctx: &StepContext<'_>,
) -> Transition {
    if !applies(journey, &instance, &input) {
        return Transition {
            instance,
            effects: Vec::new(),
        };
    }
    run(journey, instance, input, ctx)
}

/// Starts an admitted instance: [`Instance::new`] then `Enter`, in one call.
pub fn enter(
    journey: &Journey,
    instance_id: String,
    event: &Event,
    admission: Admission,
    ctx: &StepContext<'_>,
) -> Transition {
    let instance = Instance::new(journey, instance_id, event, admission, ctx.now);
    run(journey, instance, Input::Enter(event), ctx)
}

fn run(
    journey: &Journey,
    instance: Instance,
    input: Input<'_>,
    ctx: &StepContext<'_>,
) -> Transition {
    let mut run = Run {
        journey,
        ctx,
        inst: instance,
        effects: Vec::with_capacity(6),
    };
    match input {
        Input::Enter(event) => run.enter(event),
        Input::Event(event) => run.hold_event(event),
        Input::TimerFired(timer) => run.timer_fired(timer),
        Input::Exit { event, rule } => run.exit(event, rule),
        Input::Terminate(reason) => run.terminate(reason),
    }
    run.inst.updated_at = ctx.now;
    Transition {
        instance: run.inst,
        effects: run.effects,
    }
}

/// Cheap pre-check so that the common "does not apply" case clones nothing.
fn applies(journey: &Journey, instance: &Instance, input: &Input<'_>) -> bool {
    if !instance.is_active() {
        return false;
    }
    match input {
        Input::Enter(_) => instance.is_fresh(),
        Input::Event(event) => hold_branch(journey, instance, event).is_some(),
        Input::TimerFired(timer) => instance.waiting_timer().is_some_and(|t| t.id == timer.id),
        Input::Exit { event, rule } => {
            !instance.is_fresh() && exit_rule_matches(journey, *rule, event, instance)
        }
        Input::Terminate(_) => true,
    }
}

/// The hold-until step the instance waits in and the index of the first branch `event` takes.
fn hold_branch<'j>(
    journey: &'j Journey,
    instance: &Instance,
    event: &Event,
) -> Option<(&'j HoldUntilStep, usize)> {
    let Some(Waiting::Hold { events, .. }) = &instance.waiting else {
        return None;
    };
    if !events.contains(&event.event) {
        return None;
    }
    let StepKind::HoldUntil(hold) = &journey.step(&instance.current_step)?.kind else {
        return None;
    };
    let index = hold.branches.iter().position(|b| {
        b.event == event.event
            && filters_match(&b.filters, &event.properties)
            && unique_value_matches(journey, instance, event)
    })?;
    Some((hold, index))
}

/// Under re-entry a branch event only reaches the instance with the same unique value.
fn unique_value_matches(journey: &Journey, instance: &Instance, event: &Event) -> bool {
    match journey.definition().unique_identifier() {
        None => true,
        Some(path) => {
            let value = event.property(path).and_then(canonical_value);
            value.is_some() && value == instance.unique_value
        }
    }
}

/// The context key of hold branch `index`: its event name, or `"<event> - <branch name>"`
/// when another branch of the same step waits for the same event.
pub(crate) fn context_key(hold: &HoldUntilStep, index: usize) -> String {
    let branch = &hold.branches[index];
    let shared = hold
        .branches
        .iter()
        .enumerate()
        .any(|(i, b)| i != index && b.event == branch.event);
    if shared {
        format!("{} - {}", branch.event, branch.name)
    } else {
        branch.event.clone()
    }
}

struct Run<'a> {
    journey: &'a Journey,
    ctx: &'a StepContext<'a>,
    inst: Instance,
    effects: Vec<Effect>,
}

impl<'a> Run<'a> {
    fn timeline(&mut self, step_key: &str, kind: TimelineKind, cause: &Cause, detail: Json) {
        self.push_timeline(step_key.to_owned(), kind, cause, detail);
    }

    /// A timeline row at the step the instance is in.
    fn timeline_here(&mut self, kind: TimelineKind, cause: &Cause, detail: Json) {
        self.push_timeline(self.inst.current_step.clone(), kind, cause, detail);
    }

    fn push_timeline(&mut self, step_key: String, kind: TimelineKind, cause: &Cause, detail: Json) {
        self.effects.push(Effect::Timeline(TimelineEntry {
            at: self.ctx.now,
            step_key,
            kind,
            cause: cause.clone(),
            detail,
        }));
    }

    fn enter(&mut self, event: &Event) {
        let cause = event_cause(event);
        self.inst
            .context
            .insert(event.event.clone(), event.properties.clone());
        let start = self.journey.definition().start_step.as_str();
        self.timeline(start, TimelineKind::Entered, &cause, Json::Null);
        self.run_from(Some(start), &cause);
    }

    fn hold_event(&mut self, event: &Event) {
        let Some((hold, index)) = hold_branch(self.journey, &self.inst, event) else {
            return;
        };
        let cause = event_cause(event);
        let branch = &hold.branches[index];
        let step_key = self.inst.current_step.clone();
        self.inst
            .context
            .insert(context_key(hold, index), event.properties.clone());
        self.timeline(
            &step_key,
            TimelineKind::Branch,
            &cause,
            branch_detail(&branch.name),
        );
        self.cancel_waiting_timer();
        let passes = self.inst.passes.get(&step_key).copied().unwrap_or(0);
        if branch.return_to_start && passes < self.ctx.max_return_to_start_passes {
            self.inst.passes.insert(step_key.clone(), passes + 1);
            self.timeline(
                &step_key,
                TimelineKind::ReturnedToStart,
                &cause,
                json!({ "pass": passes + 1 }),
            );
            self.wait_in_hold(&step_key, hold, &cause);
        } else {
            self.run_from(branch.next.as_deref(), &cause);
        }
    }

    fn timer_fired(&mut self, timer: &Timer) {
        let cause = Cause::Timer {
            id: timer.id.clone(),
        };
        let Some(waiting) = self.inst.waiting.take() else {
            return;
        };
        let step_key = self.inst.current_step.clone();
        let next = match (&waiting, self.journey.step(&step_key).map(|s| &s.kind)) {
            (Waiting::Timer(_), Some(StepKind::Delay(delay))) => delay.next.as_deref(),
            (Waiting::Hold { .. }, Some(StepKind::HoldUntil(hold))) => {
                self.timeline(&step_key, TimelineKind::TimedOut, &cause, Json::Null);
                hold.timeout_next.as_deref()
            }
            _ => {
                self.fail(&cause, FailReason::UnknownStep { step_key });
                return;
            }
        };
        self.run_from(next, &cause);
    }

    fn exit(&mut self, event: &Event, rule_index: usize) {
        let cause = event_cause(event);
        let Some(rule) = self.journey.definition().exit_rules.get(rule_index) else {
            return;
        };
        self.cancel_waiting_timer();
        self.inst
            .context
            .insert(event.event.clone(), event.properties.clone());
        if let Some(spec) = &rule.send {
            let local_key = exit_send_key(rule_index);
            let name = format!("Exit on {}", rule.event);
            if !self.send(&local_key, &name, spec, &cause) {
                return;
            }
        }
        self.end_exited(
            &cause,
            ExitReason::ExitRule {
                index: rule_index,
                event: rule.event.clone(),
            },
        );
    }

    fn terminate(&mut self, reason: ExitReason) {
        self.cancel_waiting_timer();
        self.end_exited(&Cause::Operator, reason);
    }

    fn end_exited(&mut self, cause: &Cause, reason: ExitReason) {
        let detail = serde_json::to_value(&reason).unwrap_or(Json::Null);
        self.timeline_here(TimelineKind::Exited, cause, detail);
        self.inst.state = InstanceState::Exited;
        self.inst.ended_at = Some(self.ctx.now);
        self.effects.push(Effect::Exited { reason });
    }

    fn cancel_waiting_timer(&mut self) {
        if let Some(waiting) = self.inst.waiting.take() {
            self.effects.push(Effect::CancelTimer {
                id: waiting.timer().id.clone(),
            });
        }
    }

    /// Runs steps from `next` until the instance waits or ends. The journey graph is acyclic,
    /// so a transition visits each step at most once; more visits than steps means a cycle.
    fn run_from(&mut self, mut next: Option<&'a str>, cause: &Cause) {
        let journey = self.journey;
        let limit = journey.definition().steps.len() + 1;
        for _ in 0..limit {
            let Some(key) = next.take() else {
                self.complete(cause);
                return;
            };
            let Some(step) = journey.step(key) else {
                self.fail(
                    cause,
                    FailReason::UnknownStep {
                        step_key: key.to_owned(),
                    },
                );
                return;
            };
            self.inst.current_step.clear();
            self.inst.current_step.push_str(key);
            self.timeline(key, TimelineKind::Step, cause, Json::Null);
            match &step.kind {
                StepKind::Delay(delay) => {
                    let Some(timer) = self.timer(key, TimerKind::Delay, delay.duration, 0) else {
                        self.fail(
                            cause,
                            FailReason::InvalidDuration {
                                step_key: key.to_owned(),
                            },
                        );
                        return;
                    };
                    self.effects.push(Effect::SetTimer(timer.clone()));
                    self.inst.waiting = Some(Waiting::Timer(timer));
                    return;
                }
                StepKind::HoldUntil(hold) => {
                    self.wait_in_hold(key, hold, cause);
                    return;
                }
                StepKind::DataSplit(split) => next = self.take_data_split(key, split, cause),
                StepKind::RandomSplit(split) => {
                    next = self.take_random_split(key, split, cause);
                }
                StepKind::Send(send) => {
                    if !self.send(key, &step.name, &send.spec, cause) {
                        return;
                    }
                    next = send.next.as_deref();
                }
                StepKind::End => {
                    self.complete(cause);
                    return;
                }
            }
        }
        self.fail(cause, FailReason::TooManySteps { limit });
    }

    /// The first data-split branch whose conditions hold, else "everyone else": recorded on
    /// the timeline, and the step it leads to.
    fn take_data_split(
        &mut self,
        key: &str,
        split: &'a DataSplitStep,
        cause: &Cause,
    ) -> Option<&'a str> {
        let input = ConditionInput {
            traits: self.ctx.traits,
            audiences: self.ctx.audiences,
            context: &self.inst.context,
        };
        match split
            .branches
            .iter()
            .find(|b| conditions_hold(&b.conditions, &input))
        {
            Some(branch) => {
                self.timeline(
                    key,
                    TimelineKind::Branch,
                    cause,
                    branch_detail(&branch.name),
                );
                branch.next.as_deref()
            }
            None => {
                self.timeline(
                    key,
                    TimelineKind::Branch,
                    cause,
                    json!({ "everyone_else": true }),
                );
                split.else_next.as_deref()
            }
        }
    }

    /// The randomized-split branch drawn for this instance, recorded on the timeline, and the
    /// step it leads to (none when no branch has a weight).
    fn take_random_split(
        &mut self,
        key: &str,
        split: &'a RandomSplitStep,
        cause: &Cause,
    ) -> Option<&'a str> {
        let i = random_branch(self.journey.id(), &self.inst, key, split)?;
        let branch = &split.branches[i];
        self.timeline(
            key,
            TimelineKind::Branch,
            cause,
            branch_detail(&branch.name),
        );
        branch.next.as_deref()
    }

    /// Waits in a hold-until: a fresh timeout timer (its id carries the pass, so a timer of
    /// an earlier pass is stale) and the branch event names.
    fn wait_in_hold(&mut self, key: &str, hold: &HoldUntilStep, cause: &Cause) {
        let pass = self.inst.passes.get(key).copied().unwrap_or(0);
        let Some(timer) = self.timer(key, TimerKind::HoldTimeout, hold.max_duration, pass) else {
            self.fail(
                cause,
                FailReason::InvalidDuration {
                    step_key: key.to_owned(),
                },
            );
            return;
        };
        let mut events: Vec<String> = Vec::with_capacity(hold.branches.len());
        for b in &hold.branches {
            if !events.contains(&b.event) {
                events.push(b.event.clone());
            }
        }
        self.effects.push(Effect::SetTimer(timer.clone()));
        self.inst.waiting = Some(Waiting::Hold { timer, events });
    }

    fn timer(
        &self,
        key: &str,
        kind: TimerKind,
        duration: std::time::Duration,
        pass: u32,
    ) -> Option<Timer> {
        let delta = chrono::TimeDelta::from_std(duration).ok()?;
        let due_at = self.ctx.now.checked_add_signed(delta)?;
        Some(Timer {
            id: format!("{}:{key}:{pass}", self.inst.id),
            due_at,
            kind,
            step_key: key.to_owned(),
        })
    }

    /// Renders and queues a send; on a render error fails the instance and returns `false`.
    fn send(&mut self, local_key: &str, step_name: &str, spec: &SendSpec, cause: &Cause) -> bool {
        let sc = SendContext {
            journey: self.journey,
            instance: &self.inst,
            step_key: local_key,
            step_name,
            spec,
            traits: self.ctx.traits,
            now: self.ctx.now,
            // A send step is reached at most once per instance (the graph is acyclic and
            // return-to-start only loops a hold onto itself), so its pass is always 0.
            pass: 0,
        };
        match render_send(&sc) {
            Ok(request) => {
                self.timeline(
                    local_key,
                    TimelineKind::Send,
                    cause,
                    json!({
                        "message_id": request.message_id,
                        "destination_id": request.destination_id,
                    }),
                );
                self.effects.push(Effect::Send(Box::new(request)));
                true
            }
            Err(e) => {
                let step_key = local_key.to_owned();
                let reason = match e {
                    PayloadError::TooLarge { size, limit } => FailReason::PayloadTooLarge {
                        step_key,
                        size,
                        limit,
                    },
                    PayloadError::Mapping(message) => {
                        FailReason::MappingFailed { step_key, message }
                    }
                };
                self.fail(cause, reason);
                false
            }
        }
    }

    fn complete(&mut self, cause: &Cause) {
        self.timeline_here(TimelineKind::Completed, cause, Json::Null);
        self.inst.state = InstanceState::Completed;
        self.inst.waiting = None;
        self.inst.ended_at = Some(self.ctx.now);
        self.effects.push(Effect::Completed);
    }

    fn fail(&mut self, cause: &Cause, reason: FailReason) {
        self.cancel_waiting_timer();
        self.timeline_here(
            TimelineKind::Failed,
            cause,
            json!({ "code": reason.code(), "message": reason.to_string() }),
        );
        self.inst.state = InstanceState::Failed;
        self.inst.ended_at = Some(self.ctx.now);
        self.effects.push(Effect::Failed { reason });
    }
}

fn event_cause(event: &Event) -> Cause {
    Cause::Event {
        message_id: event.message_id.clone(),
    }
}

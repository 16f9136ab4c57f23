//! The per-instance state machine: entry decisions, `step` and exit-rule matching.
//!
//! `step(journey, instance, input, ctx) -> Transition { instance, effects }` is a pure function:
//! the runtime persists the new instance (with an optimistic version) and executes the effects
//! (timers, outbox rows, timeline rows); simulation applies them on a virtual clock. Effects
//! are data so that the data plane, the scheduler and `SimulateJourney` cannot disagree.
//!
//! Race safety between an event and a timer of the same instance comes from two rules: a
//! timer whose id is not the one the instance waits on is ignored (no effects), and the store
//! rejects a transition computed from a stale instance version.

mod entry;
mod exit;
mod instance;
mod limits;
mod random;
mod run;
mod timeline;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use entry::{Admission, EntryFacts, SkipReason, canonical_value, decide_entry};
pub use exit::{exit_rule_matches, matching_exit_rule};
pub(crate) use instance::push_hex;
pub use instance::{Instance, InstanceState, Timer, TimerKind, Waiting, instance_id};
pub use limits::{
    DEFAULT_MAX_RETURN_TO_START_PASSES, DEFAULT_MAX_UNIQUE_VALUE_CHARS, InstanceLimits,
};
pub use random::{random_branch, random_bucket};
pub use run::{enter, step, step_owned};
pub use timeline::{
    BRANCH_DETAIL_KEY, BRANCH_DETAIL_PATH, Cause, TimelineEntry, TimelineKind, branch_detail,
};

use crate::eval::AudienceMembership;
use crate::mapping::CompiledMapping;
use crate::model::{
    Event, JourneyDefinition, JourneyMeta, Json, SendSpec, Step, StepKind, Timestamp,
};

/// A published (or simulated) journey with the lookups the state machine needs, computed once
/// when the journey is loaded rather than on every event: step positions, send keys and
/// compiled mappings.
#[derive(Clone, Debug)]
pub struct Journey {
    meta: JourneyMeta,
    definition: JourneyDefinition,
    /// Step key → position in `definition.steps`.
    steps: HashMap<String, usize>,
    /// Local send key (a send step's key, or [`exit_send_key`]) → what rendering needs.
    sends: HashMap<String, PreparedSend>,
}

/// A send's precomputed parts.
#[derive(Clone, Debug)]
struct PreparedSend {
    send_key: String,
    /// The compiled mapping, or the compile problems as text (a draft being simulated may be
    /// invalid; its sends then fail with this message).
    mapping: Option<Result<CompiledMapping, String>>,
}

impl Journey {
    /// Pairs a definition with its identity and precomputes step lookups, send keys and
    /// compiled mappings.
    pub fn new(meta: JourneyMeta, definition: JourneyDefinition) -> Self {
        let steps = definition
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.clone(), i))
            .collect();
        let prepare = |local: &str, spec: &SendSpec| PreparedSend {
            send_key: crate::payload::send_key(&meta.name, &meta.id, local),
            mapping: spec.mapping.as_ref().map(|m| {
                crate::mapping::compile(m).map_err(|problems| {
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            }),
        };
        let mut sends = HashMap::new();
        for step in &definition.steps {
            if let StepKind::Send(send) = &step.kind {
                sends.insert(step.key.clone(), prepare(&step.key, &send.spec));
            }
        }
        for (i, rule) in definition.exit_rules.iter().enumerate() {
            if let Some(spec) = &rule.send {
                let local = exit_send_key(i);
                let prepared = prepare(&local, spec);
                sends.insert(local, prepared);
            }
        }
        Self {
            meta,
            definition,
            steps,
            sends,
        }
    }

    /// Identity and version, stamped into payloads and instances.
    pub fn meta(&self) -> &JourneyMeta {
        &self.meta
    }

    /// The definition as authored (read-only: the precomputed lookups depend on it).
    pub fn definition(&self) -> &JourneyDefinition {
        &self.definition
    }

    /// The journey id; the input of deterministic ids and random draws.
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// The step with `key`, in constant time.
    pub fn step(&self, key: &str) -> Option<&Step> {
        self.steps.get(key).map(|&i| &self.definition.steps[i])
    }

    /// The key of a send (a send step's key or [`exit_send_key`]) that is unique across all
    /// journeys: what `context.journeys.step_key` carries so a destination can tell sends apart.
    pub fn send_key(&self, local_key: &str) -> Option<&str> {
        self.sends.get(local_key).map(|s| s.send_key.as_str())
    }

    /// The compiled mapping of a send, if it has one (`Err` with the problems when invalid).
    pub fn mapping(&self, local_key: &str) -> Option<Result<&CompiledMapping, &str>> {
        self.sends
            .get(local_key)?
            .mapping
            .as_ref()
            .map(|m| m.as_ref().map_err(String::as_str))
    }
}

/// The local key of an exit rule's send: `exit_rules[<index>]`. Brackets cannot occur in step
/// keys (`[a-z0-9_]`), so it never collides with a step.
pub fn exit_send_key(rule_index: usize) -> String {
    format!("exit_rules[{rule_index}]")
}

/// What the step function needs besides the instance: the profile as it is *now* (traits and
/// audiences are read live, never snapshotted into the context), the current time and the
/// configured return-to-start limit.
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    /// The profile's traits (a JSON object).
    pub traits: &'a Json,
    pub audiences: &'a dyn AudienceMembership,
    pub now: Timestamp,
    /// Return-to-start passes a hold-until step allows per instance
    /// ([`InstanceLimits::max_return_to_start_passes`]); the next match of a return-to-start
    /// branch continues onward to that branch's next step.
    pub max_return_to_start_passes: u32,
}

/// Something that happened to an instance.
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// Start a fresh instance (from [`Instance::new`]) with its entry event.
    Enter(&'a Event),
    /// An event of the profile that a waiting hold-until may take.
    Event(&'a Event),
    /// A timer came due. Ignored unless it is the one the instance waits on.
    TimerFired(&'a Timer),
    /// An exit rule (by index) matched this event; see [`matching_exit_rule`].
    Exit { event: &'a Event, rule: usize },
    /// End the instance at once for a reason outside the journey (archive in exit mode,
    /// `ExitInstance`).
    Terminate(ExitReason),
}

/// The outcome of one `step`: the new instance and what the runtime must do. No effects means
/// nothing changed (the input did not apply); the runtime then writes nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub instance: Instance,
    pub effects: Vec<Effect>,
}

impl Transition {
    /// Whether the input changed nothing.
    pub fn is_noop(&self) -> bool {
        self.effects.is_empty()
    }

    /// The sends, in the order they were queued.
    pub fn sends(&self) -> impl Iterator<Item = &SendRequest> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Send(s) => Some(&**s),
            _ => None,
        })
    }
}

/// One thing the runtime must do, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Schedule a timer; when due, feed it back as [`Input::TimerFired`].
    SetTimer(Timer),
    /// Drop a timer that can no longer apply (it would be ignored anyway; this saves work).
    CancelTimer { id: String },
    /// Queue a rendered payload in the outbox. Boxed: it is by far the largest effect.
    Send(Box<SendRequest>),
    /// The instance reached an end.
    Completed,
    /// The instance was ended by an exit rule or an operator.
    Exited { reason: ExitReason },
    /// The instance cannot continue (for example a payload over 32 KB: an error, never a
    /// silent cut).
    Failed { reason: FailReason },
    /// A row for the instance's timeline.
    Timeline(TimelineEntry),
}

/// A send, fully rendered: the dispatcher only signs and delivers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    pub destination_id: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// The action's path with its `{{...}}` placeholders filled from the payload
    /// (percent-encoded).
    pub path: String,
    pub payload: Json,
    /// Deterministic from (instance, step, pass): the same on every retry and replay, so it
    /// doubles as the `Idempotency-Key`.
    pub message_id: String,
    /// The send step's key within the journey ([`exit_send_key`] for an exit send).
    pub step_key: String,
    /// The key unique across journeys (`context.journeys.step_key` of the default payload).
    pub send_key: String,
}

/// Why an instance exited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ExitReason {
    /// Exit rule `index` matched an event.
    ExitRule { index: usize, event: String },
    /// The journey was archived in exit mode.
    JourneyArchived,
    /// An operator ended it (`ExitInstance`).
    Operator,
    /// It reached the longest an instance may live (`max_instance_lifetime_days`) and
    /// housekeeping ended it.
    LifetimeReached,
}

/// Why an instance failed. `code()` names are stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum FailReason {
    /// The rendered payload is over the limit; it is never cut to fit.
    PayloadTooLarge {
        step_key: String,
        size: usize,
        limit: usize,
    },
    /// The mapping could not be evaluated against the default payload.
    MappingFailed { step_key: String, message: String },
    /// The definition names a step that does not exist (validation prevents this).
    UnknownStep { step_key: String },
    /// More steps ran in one transition than the journey has: the graph has a cycle
    /// (validation prevents this); failing beats looping forever.
    TooManySteps { limit: usize },
    /// A duration that does not fit a timestamp.
    InvalidDuration { step_key: String },
}

impl FailReason {
    /// The stable snake_case code, for counters and the API.
    pub fn code(&self) -> &'static str {
        match self {
            FailReason::PayloadTooLarge { .. } => "payload_too_large",
            FailReason::MappingFailed { .. } => "mapping_failed",
            FailReason::UnknownStep { .. } => "unknown_step",
            FailReason::TooManySteps { .. } => "too_many_steps",
            FailReason::InvalidDuration { .. } => "invalid_duration",
        }
    }
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::PayloadTooLarge {
                step_key,
                size,
                limit,
            } => write!(
                f,
                "payload of step {step_key} is {size} bytes, over the limit of {limit}"
            ),
            FailReason::MappingFailed { step_key, message } => {
                write!(f, "mapping of step {step_key} failed: {message}")
            }
            FailReason::UnknownStep { step_key } => write!(f, "unknown step {step_key}"),
            FailReason::TooManySteps { limit } => {
                write!(f, "more than {limit} steps in one transition")
            }
            FailReason::InvalidDuration { step_key } => {
                write!(f, "duration of step {step_key} is out of range")
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! One run of a journey for one profile, as the store persists it (JSON) and `step` reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Map;
use sha2::{Digest, Sha256};

use super::Journey;
use super::entry::Admission;
use crate::model::{Event, Json, Timestamp};

/// Lifecycle of an instance. Serialized in upper case like the API's `InstanceState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Waiting in a delay or a hold-until (or, before its first `step`, about to enter).
    Active,
    Completed,
    Exited,
    Failed,
}

impl InstanceState {
    /// The API name (`ACTIVE`, `COMPLETED`…), as `SimulatedInstance.final_state` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Active => "ACTIVE",
            InstanceState::Completed => "COMPLETED",
            InstanceState::Exited => "EXITED",
            InstanceState::Failed => "FAILED",
        }
    }

    /// Whether the instance has ended for good.
    pub fn is_finished(self) -> bool {
        self != InstanceState::Active
    }
}

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// The end of a delay step.
    Delay,
    /// The maximum duration of a hold-until step.
    HoldTimeout,
}

impl TimerKind {
    /// The stable name stored in the timers table.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Delay => "delay",
            TimerKind::HoldTimeout => "hold_timeout",
        }
    }
}

/// A durable timer. Its `id` is deterministic (instance, step, hold pass), so a restarted hold
/// gets a new id and the old timer, should it still fire, is recognised as stale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: String,
    pub due_at: Timestamp,
    pub kind: TimerKind,
    pub step_key: String,
}

/// What an active instance waits for. Every active instance (after its first `step`) waits on
/// exactly one timer, so none can be stuck: a hold-until also waits for events, bounded by its
/// timeout timer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Waiting {
    /// A delay step.
    Timer(Timer),
    /// A hold-until step: any of `events` (distinct branch event names, in branch order) or
    /// the timeout.
    Hold { timer: Timer, events: Vec<String> },
}

impl Waiting {
    /// The one timer every kind of waiting has.
    pub fn timer(&self) -> &Timer {
        match self {
            Waiting::Timer(t) | Waiting::Hold { timer: t, .. } => t,
        }
    }
}

/// One run of a journey for one profile (and, with re-entry, one unique-identifier value).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub journey_id: String,
    /// The journey revision this instance runs; published revisions never change.
    pub journey_version: i64,
    /// `userId`, else `anonymousId`, of the entry event.
    pub profile_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// Canonical string of the unique identifier's value (re-entry only); hold-until branches
    /// and exit rules match events against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_value: Option<String>,
    pub state: InstanceState,
    /// The step the instance is in, or ended in.
    pub current_step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// Journey context: event properties keyed by event name, or `"<event> - <branch>"` when
    /// two branches of one hold share an event name. A newer event replaces an older one.
    #[serde(default)]
    pub context: Map<String, Json>,
    /// Return-to-start passes taken per hold-until step key (at most the configured
    /// [`max_return_to_start_passes`](super::InstanceLimits::max_return_to_start_passes)).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub passes: BTreeMap<String, u32>,
    pub entered_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
}

impl Instance {
    /// A fresh instance for an admitted entry event, about to enter the start step: feed it to
    /// `step` with [`Input::Enter`](super::Input::Enter) to run it.
    pub fn new(
        journey: &Journey,
        id: String,
        event: &Event,
        admission: Admission,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            journey_id: journey.meta().id.clone(),
            journey_version: journey.meta().version,
            profile_id: admission.profile_id,
            user_id: event.user_id.clone().filter(|s| !s.is_empty()),
            anonymous_id: event.anonymous_id.clone().filter(|s| !s.is_empty()),
            unique_value: admission.unique_value,
            state: InstanceState::Active,
            current_step: journey.definition().start_step.clone(),
            waiting: None,
            context: Map::new(),
            passes: BTreeMap::new(),
            entered_at: now,
            updated_at: now,
            ended_at: None,
        }
    }

    /// Whether the instance can still react to inputs.
    pub fn is_active(&self) -> bool {
        self.state == InstanceState::Active
    }

    /// Whether the instance has been created but not yet stepped with `Enter`.
    pub fn is_fresh(&self) -> bool {
        self.is_active() && self.waiting.is_none()
    }

    /// The event names a waiting hold-until would take, so a runtime can index instances by
    /// (profile, event name) and never scan. Empty unless the instance waits in a hold.
    pub fn waiting_events(&self) -> &[String] {
        match (&self.state, &self.waiting) {
            (InstanceState::Active, Some(Waiting::Hold { events, .. })) => events,
            _ => &[],
        }
    }

    /// The timer the instance waits on, if active and waiting.
    pub fn waiting_timer(&self) -> Option<&Timer> {
        self.waiting.as_ref().map(Waiting::timer)
    }
}

/// A deterministic instance id for an entry: derived from the journey and the entry event's
/// `messageId`, formatted like a UUID. The same entry always gets the same id, so a replayed
/// event cannot create a second instance, and simulation agrees with production on
/// randomized splits keyed by instance.
pub fn instance_id(journey_id: &str, entry_message_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(journey_id.as_bytes());
    h.update([0]);
    h.update(entry_message_id.as_bytes());
    let d = h.finalize();
    let mut out = String::with_capacity(36);
    for (i, byte) in d[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        push_hex(&mut out, *byte);
    }
    out
}

/// Appends the two lower-case hex digits of `byte` (no intermediate allocation).
pub(crate) fn push_hex(out: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(DIGITS[usize::from(byte >> 4)]));
    out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
}

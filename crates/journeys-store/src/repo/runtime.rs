//! The runtime's side of the store: one all-or-nothing commit per micro-batch (or timer
//! firing), the batched reads the data plane needs before evaluating, statistics, and
//! housekeeping.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::repo::instances::{InstanceRecord, TimelineEntry};
use crate::repo::timers::TimerRecord;
use crate::repo::outbox::OutboxRecord;

/// Everything one micro-batch (or one timer firing) changes, committed by [`Runtime::commit`]
/// in one transaction with multi-row statements.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// `(messageId, seen at)` to remember; a key already stored is a conflict.
    pub dedupe: Vec<(String, DateTime<Utc>)>,
    /// `(profile id, traits)` shallow-merged into the profile (created when missing), in order.
    pub traits: Vec<(String, Map<String, Value>)>,
    /// `(event name, received at)` for the event catalog.
    pub catalog_seen: Vec<(String, DateTime<Utc>)>,
    /// `(audience key, user id)` memberships to add; existing ones, unknown and archived
    /// audiences are skipped.
    pub audience_adds: Vec<(String, String)>,
    /// `(audience key, user id)` memberships to remove (applied after the adds); missing ones,
    /// unknown and archived audiences are skipped.
    pub audience_removes: Vec<(String, String)>,
    /// `(journey id, profile id)` entries of enter-once journeys; an existing pair is a conflict.
    pub enter_once: Vec<(String, String)>,
    /// New instances; a taken id or `active_key` is a conflict.
    pub instances_new: Vec<InstanceRecord>,
    /// `(instance as it should be stored, version it is expected to have now)`; the caller sets
    /// `record.version` to `expected + 1`. A stored version other than `expected` is a conflict.
    pub instances_updated: Vec<(InstanceRecord, i64)>,
    /// Timeline rows to append.
    pub timeline: Vec<TimelineEntry>,
    /// Timers to create.
    pub timers_new: Vec<TimerRecord>,
    /// Ids of timers to delete (fired or cancelled); missing ones are ignored.
    pub timers_deleted: Vec<String>,
    /// Sends to queue.
    pub outbox_new: Vec<OutboxRecord>,
}

impl Changes {
    /// Whether there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dedupe.is_empty()
            && self.traits.is_empty()
            && self.catalog_seen.is_empty()
            && self.audience_adds.is_empty()
            && self.audience_removes.is_empty()
            && self.enter_once.is_empty()
            && self.instances_new.is_empty()
            && self.instances_updated.is_empty()
            && self.timeline.is_empty()
            && self.timers_new.is_empty()
            && self.timers_deleted.is_empty()
            && self.outbox_new.is_empty()
    }
}

/// What the data plane needs to know about one profile before evaluating its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileState {
    /// Stored traits (empty when the profile has none yet).
    pub traits: Map<String, Value>,
    /// Keys of the active audiences the profile belongs to, sorted.
    pub audiences: Vec<String>,
    /// The profile's active instances, across journeys, in id order.
    pub active_instances: Vec<InstanceRecord>,
    /// Ids of the enter-once journeys the profile has entered, sorted.
    pub entered_once: Vec<String>,
}

/// Per-step counts of one journey.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepCounts {
    pub step_key: String,
    /// Instances that reached the step (timeline `entered` and `step` rows).
    pub entered: i64,
    /// Active instances currently at the step.
    pub waiting: i64,
    /// Reached the step and moved on or ended there: `entered - waiting - exited`, never
    /// negative.
    pub completed: i64,
    /// Instances that exited while at the step.
    pub exited: i64,
}

/// Per-step delivery counts of one journey.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendCounts {
    pub step_key: String,
    pub sent: i64,
    /// Sends that failed at least once (retried or with an error recorded).
    pub failed: i64,
    pub dead_lettered: i64,
}

/// How often one branch of a step was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchCounts {
    pub step_key: String,
    pub branch_name: String,
    pub taken: i64,
}

/// Statistics of one journey, each list sorted by step key (then branch name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JourneyStats {
    pub steps: Vec<StepCounts>,
    pub sends: Vec<SendCounts>,
    pub branches: Vec<BranchCounts>,
}

/// The runtime's repository; obtained from [`crate::Store::runtime`].
#[derive(Debug, Clone, Copy)]
pub struct Runtime<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Runtime<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Writes `changes` in one transaction: all of them or, on any error, none.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a taken dedupe key, enter-once pair, instance id or active
    /// key, or an instance version mismatch; database errors.
    pub async fn commit(&self, changes: &Changes) -> Result<(), StoreError> {
        let _ = (self.db, changes);
        unimplemented!()
    }

    /// The ids among `message_ids` seen at or after `since`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn seen_message_ids(
        &self,
        message_ids: &[String],
        since: DateTime<Utc>,
    ) -> Result<HashSet<String>, StoreError> {
        let _ = (message_ids, since);
        unimplemented!()
    }

    /// The state of each profile in `profile_ids` (an entry for every id, empty for unknown
    /// profiles), read with a few multi-row queries.
    ///
    /// # Errors
    /// Database errors.
    pub async fn load_profiles(
        &self,
        profile_ids: &[String],
    ) -> Result<HashMap<String, ProfileState>, StoreError> {
        let _ = profile_ids;
        unimplemented!()
    }

    /// The instances among `ids` that exist, in id order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn instances_by_ids(&self, ids: &[String]) -> Result<Vec<InstanceRecord>, StoreError> {
        let _ = ids;
        unimplemented!()
    }

    /// Up to `limit` active instances of a journey, in id order (archive-with-exit).
    ///
    /// # Errors
    /// Database errors.
    pub async fn active_instances_of_journey(
        &self,
        journey_id: &str,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let _ = (journey_id, limit);
        unimplemented!()
    }

    /// Step, send and branch counts of a journey.
    ///
    /// # Errors
    /// Database errors.
    pub async fn journey_stats(&self, journey_id: &str) -> Result<JourneyStats, StoreError> {
        let _ = journey_id;
        unimplemented!()
    }

    /// Deletes dedupe keys seen before `before`; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn purge_dedupe(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let _ = before;
        unimplemented!()
    }

    /// Deletes instances that ended before `ended_before`, with their timeline (and any
    /// leftover timers); returns how many instances.
    ///
    /// # Errors
    /// Database errors.
    pub async fn purge_finished_instances(
        &self,
        ended_before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let _ = ended_before;
        unimplemented!()
    }

    /// Up to `limit` active instances whose `expires_at` is at or before `now`, earliest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn expired_active_instances(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let _ = (now, limit);
        unimplemented!()
    }
}

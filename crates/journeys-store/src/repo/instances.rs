//! Journey instances and their timelines: the read side used by the control plane, and the
//! inserts the runtime (and tests) build on.

use std::fmt;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::entity::instance::{self, Column};
use crate::entity::timeline;
use crate::error::StoreError;
use crate::page::{self, Page};
use crate::repo::{INSERT_CHUNK, micros};

const ENTITY: &str = "instance";

/// Longest `active_key` the indexed column holds.
const ACTIVE_KEY_LEN: usize = crate::MAX_KEY_CHARS;
/// Instances live at most this long (SPEC §7).
pub(crate) const MAX_AGE_DAYS: i64 = 365;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Running, delayed or waiting.
    Active,
    /// Reached an end.
    Completed,
    /// Left through an exit rule or an operator's exit.
    Exited,
    /// Stopped by an error it cannot recover from.
    Failed,
}

impl InstanceState {
    /// The stored form (`ACTIVE`, `COMPLETED`, `EXITED`, `FAILED`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Completed => "COMPLETED",
            Self::Exited => "EXITED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "ACTIVE" => Ok(Self::Active),
            "COMPLETED" => Ok(Self::Completed),
            "EXITED" => Ok(Self::Exited),
            "FAILED" => Ok(Self::Failed),
            other => Err(StoreError::Internal(format!(
                "unknown instance state {other:?}"
            ))),
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored instance. The columns besides `state_blob` are denormalized from it so that the
/// runtime can find instances by index without decoding blobs.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// `UUIDv7` text.
    pub id: String,
    pub journey_id: String,
    /// The journey revision the instance runs; a published journey never changes.
    pub journey_revision: i64,
    /// User id, or anonymous id when the profile has none.
    pub profile_id: String,
    /// Value of the journey's unique-identifier property, for re-entry journeys.
    pub unique_value: Option<String>,
    pub state: InstanceState,
    pub current_step: Option<String>,
    /// Event name a hold-until step waits for (indexed for hold matching).
    pub waiting_event: Option<String>,
    /// The journey context: collected events by key.
    pub context: Value,
    /// The core's full serialized instance.
    pub state_blob: Value,
    /// Passes through the current hold-until step ("return to start" loops).
    pub passes: i32,
    /// Optimistic-concurrency counter, bumped by every write of the runtime.
    pub version: i64,
    pub entered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Unique while the instance is active in a re-entry journey (see
    /// [`InstanceRecord::active_key_for`]); `None` otherwise, and once the instance finished.
    /// The database refuses a second active instance with the same key.
    pub active_key: Option<String>,
    /// When the instance is ended by the store's age limit: `entered_at` + 365 days, set by
    /// the caller.
    pub expires_at: DateTime<Utc>,
}

impl InstanceRecord {
    /// The `active_key` of an active instance of `journey_id` for `profile_id` with
    /// `unique_value`: `"{journey_id}|{profile_id}|{unique_value}"`, or, when that would not fit
    /// the indexed column (191 characters), `"{journey_id}|#{sha256 of profile and value}"`.
    #[must_use]
    pub fn active_key_for(journey_id: &str, profile_id: &str, unique_value: &str) -> String {
        let key = format!("{journey_id}|{profile_id}|{unique_value}");
        if key.chars().count() <= ACTIVE_KEY_LEN {
            return key;
        }
        let mut hasher = Sha256::new();
        hasher.update(profile_id.as_bytes());
        hasher.update([0]);
        hasher.update(unique_value.as_bytes());
        format!("{journey_id}|#{}", hex::encode(hasher.finalize()))
    }
}

impl TryFrom<instance::Model> for InstanceRecord {
    type Error = StoreError;

    fn try_from(m: instance::Model) -> Result<Self, StoreError> {
        Ok(Self {
            state: InstanceState::parse(&m.state)?,
            id: m.id,
            journey_id: m.journey_id,
            journey_revision: m.journey_revision,
            profile_id: m.profile_id,
            unique_value: m.unique_value,
            current_step: m.current_step,
            waiting_event: m.waiting_event,
            context: m.context,
            state_blob: m.state_blob,
            passes: m.passes,
            version: m.version,
            entered_at: m.entered_at,
            updated_at: m.updated_at,
            // Rows written before `expires_at` existed were backfilled by the migration; a
            // NULL can only come from outside the store.
            expires_at: m
                .expires_at
                .unwrap_or_else(|| m.entered_at + chrono::Duration::days(MAX_AGE_DAYS)),
            ended_at: m.ended_at,
            active_key: m.active_key,
        })
    }
}

/// A timeline row to append; the store assigns its id.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub instance_id: String,
    pub profile_id: String,
    pub at: DateTime<Utc>,
    pub step_key: String,
    /// What happened (`entered`, `step`, `waiting`, `branch`, `sent`, `exited`, ...).
    pub kind: String,
    /// What caused it: an event's `messageId`, or a timer.
    pub cause: String,
    pub detail: Value,
}

/// A stored timeline row.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRecord {
    /// Increasing in insertion order; breaks ties between rows with the same `at`.
    pub id: i64,
    pub instance_id: String,
    pub profile_id: String,
    pub at: DateTime<Utc>,
    pub step_key: String,
    pub kind: String,
    pub cause: String,
    pub detail: Value,
}

impl From<timeline::Model> for TimelineRecord {
    fn from(m: timeline::Model) -> Self {
        Self {
            id: m.id,
            instance_id: m.instance_id,
            profile_id: m.profile_id,
            at: m.at,
            step_key: m.step_key,
            kind: m.kind,
            cause: m.cause,
            detail: m.detail,
        }
    }
}

/// An instance with its timeline, oldest transition first.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceDetail {
    pub instance: InstanceRecord,
    pub timeline: Vec<TimelineRecord>,
}

/// Which instances [`Instances::list`] returns; unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    pub journey_id: Option<String>,
    pub profile_id: Option<String>,
    pub state: Option<InstanceState>,
}

/// Repository of instances; obtained from [`crate::Store::instances`].
#[derive(Debug, Clone, Copy)]
pub struct Instances<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Instances<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores a new instance and returns it as stored.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the id is taken.
    pub async fn insert_instance(
        &self,
        instance: &InstanceRecord,
    ) -> Result<InstanceRecord, StoreError> {
        let stored = truncated(instance);
        let model = to_active_model(&stored);
        instance::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(|e| StoreError::from_write(ENTITY, e))?;
        Ok(stored)
    }

    /// Appends timeline rows, in multi-row inserts.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_timeline(&self, entries: &[TimelineEntry]) -> Result<(), StoreError> {
        insert_timeline(self.db, entries).await
    }

    /// The instance with `id` and its timeline, ordered by time, then insertion order.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, id: &str) -> Result<InstanceDetail, StoreError> {
        let instance: InstanceRecord = instance::Entity::find_by_id(id)
            .one(self.db)
            .await?
            .ok_or_else(|| StoreError::not_found(ENTITY, id))?
            .try_into()?;
        let timeline = timeline::Entity::find()
            .filter(timeline::Column::InstanceId.eq(id))
            .order_by_asc(timeline::Column::At)
            .order_by_asc(timeline::Column::Id)
            .all(self.db)
            .await?
            .into_iter()
            .map(TimelineRecord::from)
            .collect();
        Ok(InstanceDetail { instance, timeline })
    }

    /// Instances matching `filter`, in id order (entry order, as ids are `UUIDv7`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(
        &self,
        filter: &InstanceFilter,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page<InstanceRecord>, StoreError> {
        let size = page::effective_size(page_size);
        let mut query = instance::Entity::find()
            .order_by_asc(Column::Id)
            .limit(size + 1);
        if let Some(journey_id) = &filter.journey_id {
            query = query.filter(Column::JourneyId.eq(journey_id.as_str()));
        }
        if let Some(profile_id) = &filter.profile_id {
            query = query.filter(Column::ProfileId.eq(profile_id.as_str()));
        }
        if let Some(state) = filter.state {
            query = query.filter(Column::State.eq(state.as_str()));
        }
        if let Some(after) = page::token(page_token) {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query
            .all(self.db)
            .await?
            .into_iter()
            .map(InstanceRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page::finish(rows, size, |i| i.id.clone()))
    }

    /// Active instances of one profile, across journeys (the per-profile limit).
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_active_by_profile(&self, profile_id: &str) -> Result<u64, StoreError> {
        let n = instance::Entity::find()
            .filter(Column::ProfileId.eq(profile_id))
            .filter(Column::State.eq(InstanceState::Active.as_str()))
            .count(self.db)
            .await?;
        Ok(n)
    }
}

/// `record` with its timestamps at the stored (microsecond) precision.
pub(crate) fn truncated(record: &InstanceRecord) -> InstanceRecord {
    let mut stored = record.clone();
    stored.entered_at = micros(stored.entered_at);
    stored.updated_at = micros(stored.updated_at);
    stored.ended_at = stored.ended_at.map(micros);
    stored.expires_at = micros(stored.expires_at);
    stored
}

/// The row for `record`, every column set (timestamps as given: callers truncate first).
pub(crate) fn to_active_model(record: &InstanceRecord) -> instance::ActiveModel {
    instance::ActiveModel {
        id: Set(record.id.clone()),
        journey_id: Set(record.journey_id.clone()),
        journey_revision: Set(record.journey_revision),
        profile_id: Set(record.profile_id.clone()),
        unique_value: Set(record.unique_value.clone()),
        state: Set(record.state.as_str().to_owned()),
        current_step: Set(record.current_step.clone()),
        waiting_event: Set(record.waiting_event.clone()),
        context: Set(record.context.clone()),
        state_blob: Set(record.state_blob.clone()),
        passes: Set(record.passes),
        version: Set(record.version),
        entered_at: Set(record.entered_at),
        updated_at: Set(record.updated_at),
        ended_at: Set(record.ended_at),
        active_key: Set(record.active_key.clone()),
        expires_at: Set(Some(record.expires_at)),
    }
}

/// Appends timeline rows on `db` (a connection or a transaction), in multi-row inserts.
pub(crate) async fn insert_timeline<C: ConnectionTrait>(
    db: &C,
    entries: &[TimelineEntry],
) -> Result<(), StoreError> {
    for chunk in entries.chunks(INSERT_CHUNK) {
        let models = chunk.iter().map(|e| timeline::ActiveModel {
            id: NotSet,
            instance_id: Set(e.instance_id.clone()),
            profile_id: Set(e.profile_id.clone()),
            at: Set(micros(e.at)),
            step_key: Set(e.step_key.clone()),
            kind: Set(e.kind.clone()),
            cause: Set(e.cause.clone()),
            detail: Set(e.detail.clone()),
        });
        timeline::Entity::insert_many(models)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

//! Journey instances and their timelines: the read side used by the control plane, and the
//! inserts the runtime (and tests) build on.
//!
//! # Compact timeline
//!
//! The runtime writes at most one timeline row per transition. A transition that did one
//! thing is stored as that entry, exactly as before. A transition that did several (an entry
//! that passes steps, takes a branch, sends and completes) is one row whose `kind` and
//! `step_key` are those of its last entry (where the transition left the instance) and whose
//! detail lists every entry in order: `{"transition": [{"step_key", "kind", "detail"?}, ...]}`.
//! Readers ([`Instances::get`]) expand such a row back into the entries, so `GetInstance` shows
//! the same path, with the core's timeline kinds, as when every entry had its own row.
//!
//! An instance that starts and ends within one batch (a forwarding journey: enter, send,
//! complete) is not written to `instances` at all. Its last timeline row *stands in* for it:
//! the row carries the journey in `journey_id` and the revision and unique value in its detail
//! (`"instance": {...}`). [`Instances::get`] and [`Instances::list`] build the instance from
//! that row (no context, no state blob), and the housekeeping purge removes it past retention
//! like a finished instance.

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
use crate::repo::{PurgePace, micros, sized_chunks};

const ENTITY: &str = "instance";

/// Longest `active_key` the indexed column holds.
const ACTIVE_KEY_LEN: usize = crate::MAX_KEY_CHARS;

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
    /// When housekeeping ends the instance for its age: `entered_at` plus the configured
    /// maximum lifetime (365 days by default), set by the caller.
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
            // NULL can only come from outside the store, and says no expiry is known.
            expires_at: m.expires_at.unwrap_or(DateTime::<Utc>::MAX_UTC),
            ended_at: m.ended_at,
            active_key: m.active_key,
        })
    }
}

/// The detail key under which a compact row lists its transition's entries.
const TRANSITION_KEY: &str = "transition";
/// The detail key under which a stand-in row keeps what the instance row would have held.
const INSTANCE_KEY: &str = "instance";

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
    /// The journey, on a row that stands in for an instance never stored
    /// ([`TimelineEntry::stand_in_for`]); `None` on every other row.
    pub journey_id: Option<String>,
}

/// One entry of a transition, as [`TimelineEntry::transition`] gathers them.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionEntry {
    pub step_key: String,
    pub kind: String,
    /// `null` when the entry has no detail.
    pub detail: Value,
}

impl TimelineEntry {
    /// The one row of a transition of `instance_id` at `at`, caused by `cause`, that did
    /// `entries` in order (see the module docs); `None` when there are none.
    #[must_use]
    pub fn transition(
        instance_id: &str,
        profile_id: &str,
        at: DateTime<Utc>,
        cause: &str,
        mut entries: Vec<TransitionEntry>,
    ) -> Option<Self> {
        let last = entries.last()?;
        let (step_key, kind) = (last.step_key.clone(), last.kind.clone());
        let detail = if entries.len() == 1 {
            entries.pop().map_or(Value::Null, |e| e.detail)
        } else {
            compact_detail(entries)
        };
        Some(Self {
            instance_id: instance_id.to_owned(),
            profile_id: profile_id.to_owned(),
            at,
            step_key,
            kind,
            cause: cause.to_owned(),
            detail,
            journey_id: None,
        })
    }

    /// Makes this row (the instance's last) stand in for an instance of `journey_id` at
    /// `journey_revision` that is not written to `instances`.
    pub fn stand_in_for(
        &mut self,
        journey_id: &str,
        journey_revision: i64,
        unique_value: Option<&str>,
    ) {
        if !is_compact(&self.detail) {
            let single = TransitionEntry {
                step_key: self.step_key.clone(),
                kind: self.kind.clone(),
                detail: std::mem::take(&mut self.detail),
            };
            self.detail = compact_detail(vec![single]);
        }
        let mut instance = serde_json::Map::new();
        instance.insert("journey_revision".into(), journey_revision.into());
        if let Some(value) = unique_value {
            instance.insert("unique_value".into(), value.into());
        }
        if let Value::Object(detail) = &mut self.detail {
            detail.insert(INSTANCE_KEY.into(), Value::Object(instance));
        }
        self.journey_id = Some(journey_id.to_owned());
    }
}

/// `{"transition": [...]}` for `entries`.
fn compact_detail(entries: Vec<TransitionEntry>) -> Value {
    let list = entries
        .into_iter()
        .map(|e| {
            let mut m = serde_json::Map::new();
            m.insert("step_key".into(), e.step_key.into());
            m.insert("kind".into(), e.kind.into());
            if !e.detail.is_null() {
                m.insert("detail".into(), e.detail);
            }
            Value::Object(m)
        })
        .collect();
    let mut detail = serde_json::Map::new();
    detail.insert(TRANSITION_KEY.into(), Value::Array(list));
    Value::Object(detail)
}

fn is_compact(detail: &Value) -> bool {
    detail.get(TRANSITION_KEY).is_some_and(Value::is_array)
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

/// The entries a stored row holds: itself, or each entry a compact row lists (sharing its id,
/// time and cause).
fn expand(row: TimelineRecord, out: &mut Vec<TimelineRecord>) {
    let Some(Value::Array(entries)) = row.detail.get(TRANSITION_KEY) else {
        out.push(row);
        return;
    };
    for entry in entries {
        let text = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        out.push(TimelineRecord {
            id: row.id,
            instance_id: row.instance_id.clone(),
            profile_id: row.profile_id.clone(),
            at: row.at,
            step_key: text("step_key"),
            kind: text("kind"),
            cause: row.cause.clone(),
            detail: entry.get("detail").cloned().unwrap_or(Value::Null),
        });
    }
}

/// The instance a stand-in row (`journey_id` set) records: ended where and when the row says;
/// entered then too (it started and ended within one batch, whose rows share one time);
/// without context or state blob, which were never stored.
fn stood_in(row: &timeline::Model, journey_id: &str) -> InstanceRecord {
    let entered_at = row.at;
    let instance = row.detail.get(INSTANCE_KEY);
    let state = match row.kind.as_str() {
        "exited" => InstanceState::Exited,
        "failed" => InstanceState::Failed,
        _ => InstanceState::Completed,
    };
    InstanceRecord {
        id: row.instance_id.clone(),
        journey_id: journey_id.to_owned(),
        journey_revision: instance
            .and_then(|i| i.get("journey_revision"))
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        profile_id: row.profile_id.clone(),
        unique_value: instance
            .and_then(|i| i.get("unique_value"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        state,
        current_step: Some(row.step_key.clone()),
        waiting_event: None,
        context: Value::Object(serde_json::Map::new()),
        state_blob: Value::Null,
        passes: 0,
        version: 1,
        entered_at,
        updated_at: row.at,
        ended_at: Some(row.at),
        active_key: None,
        // Finished: nothing left to expire.
        expires_at: row.at,
    }
}

/// An instance with its timeline, oldest transition first.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceDetail {
    pub instance: InstanceRecord,
    pub timeline: Vec<TimelineRecord>,
    /// The instance's sends the outbox still holds (pending, dead, and delivered ones until
    /// they are purged past retention), oldest first, with their payloads.
    pub sends: Vec<crate::repo::outbox::OutboxRecord>,
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

    /// The instance with `id` and its timeline (compact rows expanded), ordered by time, then
    /// insertion order. An instance never stored is built from its stand-in timeline row.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, id: &str) -> Result<InstanceDetail, StoreError> {
        let stored = instance::Entity::find_by_id(id).one(self.db).await?;
        let rows = timeline::Entity::find()
            .filter(timeline::Column::InstanceId.eq(id))
            .order_by_asc(timeline::Column::At)
            .order_by_asc(timeline::Column::Id)
            .all(self.db)
            .await?;
        let instance = match stored {
            Some(m) => InstanceRecord::try_from(m)?,
            None => rows
                .iter()
                .rev()
                .find_map(|r| Some(stood_in(r, r.journey_id.as_deref()?)))
                .ok_or_else(|| StoreError::not_found(ENTITY, id))?,
        };
        let mut timeline = Vec::with_capacity(rows.len());
        for row in rows {
            expand(TimelineRecord::from(row), &mut timeline);
        }
        // By profile first: the outbox is indexed by profile, not by instance.
        let sends = crate::entity::outbox::Entity::find()
            .filter(crate::entity::outbox::Column::ProfileId.eq(instance.profile_id.as_str()))
            .filter(crate::entity::outbox::Column::InstanceId.eq(id))
            .order_by_asc(crate::entity::outbox::Column::CreatedAt)
            .order_by_asc(crate::entity::outbox::Column::Id)
            .all(self.db)
            .await?
            .into_iter()
            .map(crate::repo::outbox::OutboxRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InstanceDetail {
            instance,
            timeline,
            sends,
        })
    }

    /// Instances matching `filter`, in id order: stored ones and those whose stand-in timeline
    /// row takes their place.
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
        let mut rows = query
            .all(self.db)
            .await?
            .into_iter()
            .map(InstanceRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let stood_in = self
            .list_stood_in(filter, size + 1, page::token(page_token))
            .await?;
        if !stood_in.is_empty() {
            rows.extend(stood_in);
            rows.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(page::finish(rows, size, |i| i.id.clone()))
    }

    /// Up to `limit` instances matching `filter` after `after` that only a stand-in timeline
    /// row records, in id order (none are active).
    async fn list_stood_in(
        &self,
        filter: &InstanceFilter,
        limit: u64,
        after: Option<&str>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        use timeline::Column as T;
        let kind = match filter.state {
            Some(InstanceState::Active) => return Ok(Vec::new()),
            Some(InstanceState::Completed) => Some("completed"),
            Some(InstanceState::Exited) => Some("exited"),
            Some(InstanceState::Failed) => Some("failed"),
            None => None,
        };
        let mut query = timeline::Entity::find()
            .order_by_asc(T::InstanceId)
            .limit(limit);
        query = match &filter.journey_id {
            Some(journey_id) => query.filter(T::JourneyId.eq(journey_id.as_str())),
            None => query.filter(T::JourneyId.is_not_null()),
        };
        if let Some(profile_id) = &filter.profile_id {
            query = query.filter(T::ProfileId.eq(profile_id.as_str()));
        }
        if let Some(kind) = kind {
            query = query.filter(T::Kind.eq(kind));
        }
        if let Some(after) = after {
            query = query.filter(T::InstanceId.gt(after));
        }
        let rows = query.all(self.db).await?;
        Ok(rows
            .iter()
            .filter_map(|row| Some(stood_in(row, row.journey_id.as_deref()?)))
            .collect())
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
    for chunk in sized_chunks(entries) {
        let models = chunk.iter().map(|e| timeline::ActiveModel {
            id: NotSet,
            instance_id: Set(e.instance_id.clone()),
            profile_id: Set(e.profile_id.clone()),
            at: Set(micros(e.at)),
            step_key: Set(e.step_key.clone()),
            kind: Set(e.kind.clone()),
            cause: Set(e.cause.clone()),
            detail: Set(e.detail.clone()),
            journey_id: Set(e.journey_id.clone()),
        });
        timeline::Entity::insert_many(models)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Deletes the timelines of instances never stored whose stand-in row is older than
/// `ended_before` (the retention purge of finished instances), in small transactions at
/// `pace`; returns how many instances.
pub(crate) async fn purge_unstored(
    db: &DatabaseConnection,
    ended_before: DateTime<Utc>,
    pace: PurgePace,
) -> Result<u64, StoreError> {
    let ended_before = micros(ended_before);
    pace.drain(
        db,
        |limit| {
            timeline::Entity::find()
                .select_only()
                .column(timeline::Column::InstanceId)
                .filter(timeline::Column::At.lt(ended_before))
                .filter(timeline::Column::JourneyId.is_not_null())
                // Oldest first, by the time index: without the order the server walked the
                // journey index, reading most of the table for every chunk.
                .order_by_asc(timeline::Column::At)
                .limit(limit)
                .into_tuple::<String>()
                .all(db)
        },
        |txn, ids| {
            Box::pin(async move {
                let instances = ids.len() as u64;
                timeline::Entity::delete_many()
                    .filter(timeline::Column::InstanceId.is_in(ids))
                    .exec(txn)
                    .await?;
                Ok(instances)
            })
        },
    )
    .await
}

//! Durable timers (delays and hold-until deadlines): claiming due timers with leases so that any
//! number of scheduler replicas can run, releasing claims, and reads for tests and health.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::entity::timer::{self, Column};
use crate::error::StoreError;
use crate::repo::{INSERT_CHUNK, begin_read_committed, finish, micros, padded};

/// A stored timer. Created and deleted through [`crate::Changes`]; claimed through
/// [`Timers::claim_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    /// `UUIDv7` text.
    pub id: String,
    pub instance_id: String,
    pub profile_id: String,
    pub journey_id: String,
    /// When the timer fires.
    pub due_at: DateTime<Utc>,
    /// What fires (`delay`, `hold_timeout`, ...): the core's vocabulary, opaque to the store.
    pub kind: String,
    /// The step that set the timer.
    pub step_key: String,
}

impl From<timer::Model> for TimerRecord {
    fn from(m: timer::Model) -> Self {
        Self {
            id: m.id,
            instance_id: m.instance_id,
            profile_id: m.profile_id,
            journey_id: m.journey_id,
            due_at: m.due_at,
            kind: m.kind,
            step_key: m.step_key,
        }
    }
}

/// Health figures of the timer table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerStats {
    /// Timers in the table, claimed or not.
    pub pending: i64,
    /// Timers whose `due_at` is before `now`.
    pub overdue: i64,
    /// The earliest `due_at`.
    pub next_due_at: Option<DateTime<Utc>>,
}

/// Repository of timers; obtained from [`crate::Store::timers`].
#[derive(Debug, Clone, Copy)]
pub struct Timers<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Timers<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Claims up to `limit` timers due at or before `until` (which may lie ahead of now, for a
    /// scheduler that fires from memory) whose claim is free or expired (`claimed_until` before
    /// the current time), earliest first, and leases them to the caller until `lease_until`.
    ///
    /// While the lease holds no other caller gets these timers, in this process or another: on
    /// MySQL the rows are picked with `FOR UPDATE SKIP LOCKED` and stamped in the same
    /// transaction. A fired timer is deleted through [`crate::Changes::timers_deleted`]; one
    /// that will not be fired should be [`Timers::release`]d.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due(
        &self,
        until: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        self.claim_due_in(until, limit, lease_until, None).await
    }

    /// [`Timers::claim_due`] limited to the timers of `partitions` (and those written before
    /// timers carried a partition); `None` claims from every partition.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due_in(
        &self,
        until: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
        partitions: Option<&[u32]>,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        if limit == 0 || partitions.is_some_and(<[u32]>::is_empty) {
            return Ok(Vec::new());
        }
        let now = micros(Utc::now());
        let skip_locked = self.db.get_database_backend() == DbBackend::MySql;
        let txn = begin_read_committed(self.db).await?;
        let result = async {
            // Free timers first, then those whose claim lapsed (a replica that died holding
            // them). Both passes read the `(claimed_until, due_at)` index from where their
            // timers start, so a claim never scans through the timers claimed before it and
            // not yet fired (at 5,000 timers/s, about ten thousand within the horizon).
            let limit = u64::from(limit);
            let mut rows = claimable(until, limit, partitions, skip_locked)
                .filter(Column::ClaimedUntil.is_null())
                .all(&txn)
                .await?;
            let room = limit.saturating_sub(rows.len() as u64);
            if room > 0 {
                rows.extend(
                    claimable(until, room, partitions, skip_locked)
                        .filter(Column::ClaimedUntil.lt(now))
                        .all(&txn)
                        .await?,
                );
            }
            let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            set_claim(&txn, &ids, Some(micros(lease_until))).await?;
            Ok(rows.into_iter().map(TimerRecord::from).collect())
        }
        .await;
        finish(txn, result).await
    }

    /// Clears the claims of `ids` (claimed timers that were not fired), so the next claim
    /// takes them at once. Missing ids are ignored.
    ///
    /// # Errors
    /// Database errors.
    pub async fn release(&self, ids: &[String]) -> Result<(), StoreError> {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        set_claim(self.db, &ids, None).await
    }

    /// The timer with `id`, if it still exists.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get(&self, id: &str) -> Result<Option<TimerRecord>, StoreError> {
        Ok(timer::Entity::find_by_id(id)
            .one(self.db)
            .await?
            .map(TimerRecord::from))
    }

    /// The timers of one instance, earliest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_for_instance(
        &self,
        instance_id: &str,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        let rows = timer::Entity::find()
            .filter(Column::InstanceId.eq(instance_id))
            .order_by_asc(Column::DueAt)
            .order_by_asc(Column::Id)
            .all(self.db)
            .await?;
        Ok(rows.into_iter().map(TimerRecord::from).collect())
    }

    /// Counts for health and metrics. `pending` counts the whole table, so this is meant for
    /// occasional calls, not for every tick.
    ///
    /// # Errors
    /// Database errors.
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<TimerStats, StoreError> {
        let pending = timer::Entity::find().count(self.db).await?;
        let overdue = timer::Entity::find()
            .filter(Column::DueAt.lt(micros(now)))
            .count(self.db)
            .await?;
        let next_due_at = timer::Entity::find()
            .select_only()
            .column(Column::DueAt)
            .order_by_asc(Column::DueAt)
            .into_tuple::<DateTime<Utc>>()
            .one(self.db)
            .await?;
        Ok(TimerStats {
            pending: i64::try_from(pending).unwrap_or(i64::MAX),
            overdue: i64::try_from(overdue).unwrap_or(i64::MAX),
            next_due_at,
        })
    }
}

/// Timers due by `until`, earliest first, at most `limit`, of `partitions` (and those without
/// one) when given; on MySQL locked for update, skipping rows other claims hold.
fn claimable(
    until: DateTime<Utc>,
    limit: u64,
    partitions: Option<&[u32]>,
    skip_locked: bool,
) -> sea_orm::Select<timer::Entity> {
    let mut query = timer::Entity::find()
        .filter(Column::DueAt.lte(micros(until)))
        .order_by_asc(Column::DueAt)
        .limit(limit);
    if let Some(partitions) = partitions {
        query = query.filter(
            Condition::any()
                .add(Column::PartitionId.is_in(partitions.iter().copied()))
                .add(Column::PartitionId.is_null()),
        );
    }
    if skip_locked {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    query
}

/// Sets (or clears) `claimed_until` of `ids`.
async fn set_claim<C: ConnectionTrait>(
    db: &C,
    ids: &[&str],
    claimed_until: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(INSERT_CHUNK) {
        timer::Entity::update_many()
            .col_expr(Column::ClaimedUntil, Expr::value(claimed_until))
            .filter(Column::Id.is_in(padded(chunk)))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// The row for `timer`, unclaimed.
pub(crate) fn to_active_model(timer: &TimerRecord) -> timer::ActiveModel {
    timer::ActiveModel {
        id: Set(timer.id.clone()),
        instance_id: Set(timer.instance_id.clone()),
        profile_id: Set(timer.profile_id.clone()),
        journey_id: Set(timer.journey_id.clone()),
        due_at: Set(micros(timer.due_at)),
        kind: Set(timer.kind.clone()),
        step_key: Set(timer.step_key.clone()),
        claimed_until: Set(None),
        partition_id: Set(None),
    }
}

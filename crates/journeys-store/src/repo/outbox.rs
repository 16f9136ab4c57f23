//! The transactional outbox seen from the delivery dispatcher: claiming due sends with leases,
//! recording their outcome (sent, retry later, dead-lettered) one by one or in batches, and
//! listing and replaying dead letters.
//!
//! A claim holds a row until its lease (`claimed_until`, minutes: longer than any request) runs
//! out. A dispatcher that keeps a claimant lease (`outbox_claimants`, seconds, renewed while it
//! runs) also names itself on its claims (`claimed_by`): when that lease runs out or its row is
//! gone, the process is taken for dead and its claims are free at once, so a killed process's
//! queued sends go out within seconds instead of after the claim's lease. A live claimant's
//! claims are never taken.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait, UpdateMany,
};
use serde_json::Value;

use crate::entity::outbox::{self, Column, Entity};
use crate::error::StoreError;
use crate::page::{self, Page};
use crate::repo::batches::upsert_counters;
use crate::repo::partitions::{db_now, micros_of};
use crate::repo::{
    CounterKey, CounterKind, INSERT_CHUNK, PurgePace, begin_read_committed, finish, micros,
};

const ENTITY: &str = "outbox row";

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// Delivered.
    Sent,
    /// Gave up: a final error, or the retry budget is spent. Can be replayed.
    Dead,
}

impl OutboxStatus {
    /// The stored form (`PENDING`, `SENT`, `DEAD`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sent => "SENT",
            Self::Dead => "DEAD",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "PENDING" => Ok(Self::Pending),
            "SENT" => Ok(Self::Sent),
            "DEAD" => Ok(Self::Dead),
            other => Err(StoreError::Internal(format!(
                "unknown outbox status {other:?}"
            ))),
        }
    }
}

impl fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A send queued by a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// `UUIDv7` text.
    pub id: String,
    pub instance_id: String,
    pub profile_id: String,
    pub journey_id: String,
    pub step_key: String,
    pub destination_id: String,
    /// Sent as `messageId` and `Idempotency-Key` on every attempt, so repeats can be dropped.
    pub message_id: String,
    /// HTTP method of the request.
    pub method: String,
    /// Path appended to the destination's base URL.
    pub path: String,
    /// The request body.
    pub payload: Value,
    pub status: OutboxStatus,
    /// Attempts made so far.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// W3C `traceparent` of the transition, so delivery joins the event's trace.
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
}

impl TryFrom<outbox::Model> for OutboxRecord {
    type Error = StoreError;

    fn try_from(m: outbox::Model) -> Result<Self, StoreError> {
        Ok(Self {
            status: OutboxStatus::parse(&m.status)?,
            id: m.id,
            instance_id: m.instance_id,
            profile_id: m.profile_id,
            journey_id: m.journey_id,
            step_key: m.step_key,
            destination_id: m.destination_id,
            message_id: m.message_id,
            method: m.method,
            path: m.path,
            payload: m.payload,
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at,
            last_error: m.last_error,
            traceparent: m.traceparent,
            created_at: m.created_at,
            sent_at: m.sent_at,
            dead_at: m.dead_at,
        })
    }
}

/// The send an outcome belongs to: the counters it feeds (`journey_counters`, the destination
/// id as the branch). A dispatcher has it from the claimed row; a mark without it is looked up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendOf {
    pub journey_id: String,
    pub step_key: String,
    pub destination_id: String,
}

impl SendOf {
    /// The send of `row`.
    #[must_use]
    pub fn of(row: &OutboxRecord) -> Self {
        Self {
            journey_id: row.journey_id.clone(),
            step_key: row.step_key.clone(),
            destination_id: row.destination_id.clone(),
        }
    }
}

/// The outcome of one delivery attempt, recorded with others in one transaction by
/// [`Outbox::record`]. Each form does what its one-row method does, claim cleared included.
/// `send` names the row's journey, step and destination for the delivery counters; `None`
/// makes [`Outbox::record`] read them from the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxMark {
    /// Delivered: as [`Outbox::mark_sent`].
    Sent {
        /// The row.
        id: String,
        send: Option<SendOf>,
    },
    /// Failed, to be tried again: as [`Outbox::schedule_retry`].
    Retry {
        /// The row.
        id: String,
        send: Option<SendOf>,
        /// Attempts made so far.
        attempts: i32,
        /// When the row is due again.
        next_attempt_at: DateTime<Utc>,
        /// What went wrong.
        last_error: String,
    },
    /// Given up: as [`Outbox::mark_dead`].
    Dead {
        /// The row.
        id: String,
        send: Option<SendOf>,
        /// Attempts made.
        attempts: i32,
        /// What went wrong last.
        last_error: String,
    },
}

impl OutboxMark {
    /// The row the mark is for.
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            Self::Sent { id, .. } | Self::Retry { id, .. } | Self::Dead { id, .. } => id,
        }
    }

    /// The send the mark is for, when the mark names it.
    #[must_use]
    pub fn send(&self) -> Option<&SendOf> {
        match self {
            Self::Sent { send, .. } | Self::Retry { send, .. } | Self::Dead { send, .. } => {
                send.as_ref()
            }
        }
    }
}

/// Repository of outbox rows; obtained from [`crate::Store::outbox`].
///
/// Rows are created by [`crate::Batches::commit`] together with the transition that queued
/// them (the transactional outbox); this repository only moves them through their life.
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Claims up to `limit` pending rows due at `now` whose claim is free, expired or held by a
    /// dead claimant, earliest first, leasing them to the caller until `lease_until`.
    ///
    /// While the lease holds no other dispatcher gets these rows: on MySQL they are picked with
    /// `FOR UPDATE SKIP LOCKED` and stamped in the same transaction. The outcome is recorded
    /// with [`Outbox::mark_sent`], [`Outbox::schedule_retry`] or [`Outbox::mark_dead`], or for
    /// many rows at once with [`Outbox::record`]; a row whose dispatcher died (or whose outcome
    /// was never recorded) is claimed again once its lease expired, or at once when the claim
    /// named a claimant whose lease ran out ([`Outbox::claim_due_by`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.claim(now, limit, lease_until, None, &[]).await
    }

    /// As [`Outbox::claim_due`], naming `claimant` on the claims: they stay the caller's while
    /// `claimant`'s lease ([`Outbox::lease_claimant`]) runs and `lease_until` has not passed,
    /// and are free for others at once when that lease runs out or is removed. The caller's own
    /// claims are never taken back by itself, even if its lease lapsed meanwhile. Rows of the
    /// destinations in `excluding` (those the caller has as many sends in flight to as it
    /// allows) are left for later.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due_by(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
        claimant: &str,
        excluding: &[String],
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.claim(now, limit, lease_until, Some(claimant), excluding)
            .await
    }

    /// Gives back rows `claimant` claimed but will not send now: any dispatcher (itself
    /// included) may claim them again at once. Returns how many were freed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn unclaim(&self, ids: &[String], claimant: &str) -> Result<u64, StoreError> {
        let mut freed = 0;
        for chunk in ids.chunks(INSERT_CHUNK) {
            freed += Entity::update_many()
                .col_expr(Column::ClaimedUntil, Expr::value(None::<DateTime<Utc>>))
                .col_expr(Column::ClaimedBy, Expr::value(None::<String>))
                .filter(Column::Id.is_in(chunk.iter().map(String::as_str)))
                .filter(Column::ClaimedBy.eq(claimant))
                .filter(Column::Status.eq(OutboxStatus::Pending.as_str()))
                .exec(self.db)
                .await?
                .rows_affected;
        }
        Ok(freed)
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
        claimant: Option<&str>,
        excluding: &[String],
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = micros(now);
        let lease_until = micros(lease_until);
        let skip_locked = self.db.get_database_backend() == DbBackend::MySql;
        let txn = begin_read_committed(self.db).await?;
        let result = async {
            // Read first, not as a subquery of the locking read: `SKIP LOCKED` must never pass
            // over a claimant row being renewed and take a live claimant for a dead one.
            let live = live_claimants(&txn).await?;
            let mut query = Entity::find()
                .filter(claimable(now, Some(live), claimant, excluding))
                .filter(Column::NextAttemptAt.lte(now))
                .order_by_asc(Column::NextAttemptAt)
                .limit(u64::from(limit));
            if skip_locked {
                query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            }
            let rows = query.all(&txn).await?;
            let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            for chunk in ids.chunks(INSERT_CHUNK) {
                Entity::update_many()
                    .col_expr(Column::ClaimedUntil, Expr::value(Some(lease_until)))
                    .col_expr(Column::ClaimedBy, Expr::value(claimant.map(str::to_owned)))
                    .filter(Column::Id.is_in(chunk.iter().copied()))
                    .exec(&txn)
                    .await?;
            }
            rows.into_iter().map(OutboxRecord::try_from).collect()
        }
        .await;
        finish(txn, result).await
    }

    /// Sets `claimant`'s lease (a dispatcher of node `node_id`) to `ttl` from now on the
    /// database's clock, creating its row on first use. Its claims are its own while the lease
    /// runs; renew well within `ttl`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn lease_claimant(
        &self,
        claimant: &str,
        node_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let backend = self.db.get_database_backend();
        let now = db_now(backend);
        let sql = match backend {
            DbBackend::MySql => format!(
                "INSERT INTO outbox_claimants (claimant_id, node_id, lease_until) \
                 VALUES (?, ?, {now} + ?) ON DUPLICATE KEY UPDATE \
                 lease_until = VALUES(lease_until)"
            ),
            _ => format!(
                "INSERT INTO outbox_claimants (claimant_id, node_id, lease_until) \
                 VALUES (?, ?, {now} + ?) ON CONFLICT (claimant_id) DO UPDATE SET \
                 lease_until = excluded.lease_until"
            ),
        };
        self.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [claimant.into(), node_id.into(), micros_of(ttl).into()],
            ))
            .await?;
        Ok(())
    }

    /// A dispatcher stopping: frees the pending rows `claimant` still claims (their sends
    /// were cut off; any dispatcher may take them at once) and removes its lease. Returns how
    /// many rows were freed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn retire_claimant(&self, claimant: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin().await?;
        let result = async {
            let freed = Entity::update_many()
                .col_expr(Column::ClaimedUntil, Expr::value(None::<DateTime<Utc>>))
                .col_expr(Column::ClaimedBy, Expr::value(None::<String>))
                .filter(Column::ClaimedBy.eq(claimant))
                .filter(Column::Status.eq(OutboxStatus::Pending.as_str()))
                .exec(&txn)
                .await?
                .rows_affected;
            let backend = txn.get_database_backend();
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                "DELETE FROM outbox_claimants WHERE claimant_id = ?",
                [claimant.into()],
            ))
            .await?;
            Ok(freed)
        }
        .await;
        finish(txn, result).await
    }

    /// Removes the rows of claimants whose lease ran out more than `lapsed_for` ago (processes
    /// that were killed). A claim naming a removed claimant is free, as one naming a lapsed
    /// claimant is, so this changes no claim. Returns how many rows were removed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn purge_claimants(&self, lapsed_for: Duration) -> Result<u64, StoreError> {
        let backend = self.db.get_database_backend();
        let sql = format!(
            "DELETE FROM outbox_claimants WHERE lease_until < {} - ?",
            db_now(backend)
        );
        Ok(self
            .db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [micros_of(lapsed_for).into()],
            ))
            .await?
            .rows_affected())
    }

    /// The claimant the pending row `id` is claimed by, if its claim names one.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn claimed_by(&self, id: &str) -> Result<Option<String>, StoreError> {
        Entity::find_by_id(id)
            .one(self.db)
            .await?
            .map(|row| row.claimed_by)
            .ok_or_else(|| StoreError::not_found(ENTITY, id))
    }

    /// Marks the row delivered and clears its claim.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn mark_sent(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mark = OutboxMark::Sent {
            id: id.to_owned(),
            send: None,
        };
        self.record_one(mark, now).await
    }

    /// Marks the rows `ids` delivered at `now` and clears their claims, as [`Outbox::record`].
    /// Ids of missing rows are ignored. Returns how many rows were marked.
    ///
    /// # Errors
    /// Database errors; then no row of the call is marked.
    pub async fn mark_sent_many(
        &self,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let marks: Vec<OutboxMark> = ids
            .iter()
            .map(|id| OutboxMark::Sent {
                id: id.clone(),
                send: None,
            })
            .collect();
        self.record(&marks, now).await
    }

    /// Records the outcomes of many delivery attempts in one transaction: the delivered rows
    /// are marked with one `UPDATE … WHERE id IN (…)` per send (journey, step, destination)
    /// and 500 rows, retries and dead letters one statement each (they carry values of their
    /// own and are rare next to sends); then the rows each statement changed are added to the
    /// delivery counters in one upsert. A delivered mark changes a row not yet delivered; a
    /// retry or dead letter, a row still pending (one delivered meanwhile by a dispatcher whose
    /// claim had lapsed stays delivered), so a repeated mark is neither applied nor counted
    /// twice. No outbox row is read with a lock: marks that name their send
    /// ([`OutboxMark::send`]) read nothing. `now` is the `sent_at` and `dead_at` stamp and the
    /// counters' hour. Marks of missing rows are ignored. Returns how many rows changed.
    ///
    /// # Errors
    /// Database errors; then no mark of the call is recorded.
    pub async fn record(
        &self,
        marks: &[OutboxMark],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if marks.is_empty() {
            return Ok(0);
        }
        let txn = begin_read_committed(self.db).await?;
        let result = record_marks(&txn, marks, now).await;
        finish(txn, result).await
    }

    /// Records a failed attempt (`attempts` made so far, the error) to be retried at
    /// `next_attempt_at`, and clears the claim. The row stays pending.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn schedule_retry(
        &self,
        id: &str,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        last_error: &str,
    ) -> Result<(), StoreError> {
        let mark = OutboxMark::Retry {
            id: id.to_owned(),
            send: None,
            attempts,
            next_attempt_at,
            last_error: last_error.to_owned(),
        };
        self.record_one(mark, Utc::now()).await
    }

    /// Dead-letters the row with its attempts and last error, and clears its claim.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn mark_dead(
        &self,
        id: &str,
        attempts: i32,
        last_error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mark = OutboxMark::Dead {
            id: id.to_owned(),
            send: None,
            attempts,
            last_error: last_error.to_owned(),
        };
        self.record_one(mark, now).await
    }

    /// [`Outbox::record`] of one mark; [`StoreError::NotFound`] when its row is missing.
    async fn record_one(&self, mark: OutboxMark, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.record(std::slice::from_ref(&mark), now).await? == 0 {
            // Unchanged: missing, or already in the state the mark asks for.
            self.get(mark.id()).await?;
        }
        Ok(())
    }

    /// The earliest `next_attempt_at` of pending rows, claimed or not: how long a dispatcher
    /// with nothing to do may sleep.
    ///
    /// # Errors
    /// Database errors.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(Entity::find()
            .select_only()
            .column(Column::NextAttemptAt)
            .filter(Column::Status.eq(OutboxStatus::Pending.as_str()))
            .order_by_asc(Column::NextAttemptAt)
            .into_tuple::<DateTime<Utc>>()
            .one(self.db)
            .await?)
    }

    /// The earliest `next_attempt_at` of the rows unclaimed at `now` or whose claim lapsed
    /// (leaving out the destinations in `excluding`), due or not, read without locks. A due row
    /// here that a claim just passed over was locked by a write in progress (`SKIP LOCKED`):
    /// worth claiming again shortly rather than at the next poll. Rows of claimants no longer
    /// live are not counted: the next poll finds them.
    ///
    /// # Errors
    /// Database errors.
    pub async fn next_claimable_at(
        &self,
        now: DateTime<Utc>,
        excluding: &[String],
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(Entity::find()
            .select_only()
            .column(Column::NextAttemptAt)
            .filter(claimable(micros(now), None, None, excluding))
            .order_by_asc(Column::NextAttemptAt)
            .into_tuple::<DateTime<Utc>>()
            .one(self.db)
            .await?)
    }

    /// Dead letters in id order (creation order), optionally of one destination and/or
    /// journey.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_dead(
        &self,
        destination_id: Option<&str>,
        journey_id: Option<&str>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page<OutboxRecord>, StoreError> {
        let size = page::effective_size(page_size);
        let mut query = Entity::find()
            .filter(Column::Status.eq(OutboxStatus::Dead.as_str()))
            .order_by_asc(Column::Id)
            .limit(size + 1);
        if let Some(destination_id) = destination_id {
            query = query.filter(Column::DestinationId.eq(destination_id));
        }
        if let Some(journey_id) = journey_id {
            query = query.filter(Column::JourneyId.eq(journey_id));
        }
        if let Some(after) = page::token(page_token) {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query
            .all(self.db)
            .await?
            .into_iter()
            .map(OutboxRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page::finish(rows, size, |r| r.id.clone()))
    }

    /// Moves the dead rows among `ids` back to pending: due at `now`, no attempts, unclaimed,
    /// and `created_at = now` so the retry budget starts again (the last error is kept for
    /// reference). Rows that are not dead are left alone. Each replayed row is taken off the
    /// dead-lettered count of the hour it was dead-lettered in (that count is of sends still
    /// dead), in the same transaction. Returns how many rows changed.
    ///
    /// # Errors
    /// Database errors; then nothing changed.
    pub async fn replay(&self, ids: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let txn = self.db.begin().await?;
        let result = replay_rows(&txn, ids, now).await;
        finish(txn, result).await
    }

    /// Deletes delivered rows last due before `before` (their delivery came after), in chunks
    /// at `pace`, each its own statement; returns how many. Dead letters and pending rows stay.
    /// The journey and destination statistics are counters and do not change.
    ///
    /// # Errors
    /// Database errors; rows deleted before the error stay deleted.
    pub async fn purge_sent(
        &self,
        before: DateTime<Utc>,
        pace: PurgePace,
    ) -> Result<u64, StoreError> {
        let before = micros(before);
        pace.drain(
            self.db,
            |limit| {
                Entity::find()
                    .select_only()
                    .column(Column::Id)
                    .filter(Column::Status.eq(OutboxStatus::Sent.as_str()))
                    .filter(Column::NextAttemptAt.lt(before))
                    .limit(limit)
                    .into_tuple::<String>()
                    .all(self.db)
            },
            |txn, ids| {
                Box::pin(async move {
                    let deleted = Entity::delete_many()
                        .filter(Column::Id.is_in(ids))
                        .filter(Column::Status.eq(OutboxStatus::Sent.as_str()))
                        .exec(txn)
                        .await?;
                    Ok(deleted.rows_affected)
                })
            },
        )
        .await
    }

    /// The row with `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, id: &str) -> Result<OutboxRecord, StoreError> {
        Entity::find_by_id(id)
            .one(self.db)
            .await?
            .ok_or_else(|| StoreError::not_found(ENTITY, id))?
            .try_into()
    }
}

/// Pending rows free to claim at `now`: unclaimed or their claim lapsed; with the `live`
/// claimants known, also those claimed by a claimant no longer live (`claimant` counts as
/// live); not of the destinations in `excluding`.
fn claimable(
    now: DateTime<Utc>,
    live: Option<Vec<String>>,
    claimant: Option<&str>,
    excluding: &[String],
) -> Condition {
    let mut unclaimed = Condition::any()
        .add(Column::ClaimedUntil.is_null())
        .add(Column::ClaimedUntil.lt(now));
    if let Some(mut live) = live {
        live.extend(claimant.map(str::to_owned));
        let mut orphaned = Condition::all().add(Column::ClaimedBy.is_not_null());
        if !live.is_empty() {
            orphaned = orphaned.add(Column::ClaimedBy.is_not_in(live));
        }
        unclaimed = unclaimed.add(orphaned);
    }
    let mut free = Condition::all()
        .add(Column::Status.eq(OutboxStatus::Pending.as_str()))
        .add(unclaimed);
    if !excluding.is_empty() {
        free = free.add(Column::DestinationId.is_not_in(excluding.iter().cloned()));
    }
    free
}

/// Claimants whose lease runs now, on the database's clock.
async fn live_claimants<C: ConnectionTrait>(db: &C) -> Result<Vec<String>, StoreError> {
    let backend = db.get_database_backend();
    let sql = format!(
        "SELECT claimant_id FROM outbox_claimants WHERE lease_until > {}",
        db_now(backend)
    );
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String>("", "claimant_id"))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

/// Marks the rows `ids` sent at `now` on `db`, 500 ids per statement.
/// [`Outbox::replay`] inside a transaction.
async fn replay_rows<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let now = micros(now);
    let mut changed = 0;
    for chunk in ids.chunks(INSERT_CHUNK) {
        let dead = Entity::find()
            .filter(Column::Id.is_in(chunk.iter().map(String::as_str)))
            .filter(Column::Status.eq(OutboxStatus::Dead.as_str()))
            .all(db)
            .await?;
        let mut undone: BTreeMap<CounterKey, i64> = BTreeMap::new();
        for row in &dead {
            let key = CounterKey::with_branch(
                &row.journey_id,
                &row.step_key,
                CounterKind::DeadLettered,
                &row.destination_id,
            );
            let key = match row.dead_at {
                Some(at) => key.at(at),
                None => key,
            };
            *undone.entry(key).or_default() -= 1;
        }
        if dead.is_empty() {
            continue;
        }
        upsert_counters(db, &undone, 0).await?;
        let result = Entity::update_many()
            .col_expr(Column::Status, Expr::value(OutboxStatus::Pending.as_str()))
            .col_expr(Column::Attempts, Expr::value(0))
            .col_expr(Column::NextAttemptAt, Expr::value(now))
            .col_expr(Column::ClaimedUntil, Expr::value(None::<DateTime<Utc>>))
            .col_expr(Column::ClaimedBy, Expr::value(None::<String>))
            .col_expr(Column::DeadAt, Expr::value(None::<DateTime<Utc>>))
            // The retry budget runs from `created_at`: a replay queues the send afresh.
            .col_expr(Column::CreatedAt, Expr::value(now))
            .filter(Column::Id.is_in(dead.iter().map(|row| row.id.as_str())))
            .filter(Column::Status.eq(OutboxStatus::Dead.as_str()))
            .exec(db)
            .await?;
        changed += result.rows_affected;
    }
    Ok(changed)
}

/// [`Outbox::record`] inside a transaction.
async fn record_marks<'m, C: ConnectionTrait>(
    db: &C,
    marks: &'m [OutboxMark],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let looked_up = sends_of_unnamed(db, marks).await?;
    let send_of = |mark: &'m OutboxMark| mark.send().or_else(|| looked_up.get(mark.id()));
    let mut delivered: BTreeMap<&SendOf, Vec<&str>> = BTreeMap::new();
    for mark in marks {
        if let (OutboxMark::Sent { id, .. }, Some(send)) = (mark, send_of(mark)) {
            delivered.entry(send).or_default().push(id);
        }
    }
    let mut counts: BTreeMap<CounterKey, i64> = BTreeMap::new();
    let mut count = |send: &SendOf, kind, n: u64| {
        let key =
            CounterKey::with_branch(&send.journey_id, &send.step_key, kind, &send.destination_id);
        *counts.entry(key.at(now)).or_default() += i64::try_from(n).unwrap_or(i64::MAX);
    };
    let mut changed = 0;
    for (send, ids) in delivered {
        let n = exec_sent(db, &ids, now).await?;
        count(send, CounterKind::Delivered, n);
        changed += n;
    }
    for mark in marks {
        let (update, dead) = match mark {
            OutboxMark::Sent { .. } => continue,
            OutboxMark::Retry {
                attempts,
                next_attempt_at,
                last_error,
                ..
            } => (retry_update(*attempts, *next_attempt_at, last_error), false),
            OutboxMark::Dead {
                attempts,
                last_error,
                ..
            } => (dead_update(*attempts, last_error, now), true),
        };
        let n = update
            .filter(Column::Id.eq(mark.id()))
            .filter(Column::Status.eq(OutboxStatus::Pending.as_str()))
            .exec(db)
            .await?
            .rows_affected;
        if let Some(send) = send_of(mark) {
            count(send, CounterKind::DeliveryFailed, n);
            if dead {
                count(send, CounterKind::DeadLettered, n);
            }
        }
        changed += n;
    }
    upsert_counters(db, &counts, 0).await?;
    Ok(changed)
}

/// The sends of the marks that do not name theirs, read from their rows (plain reads, no
/// locks); missing rows are left out.
async fn sends_of_unnamed<C: ConnectionTrait>(
    db: &C,
    marks: &[OutboxMark],
) -> Result<HashMap<String, SendOf>, StoreError> {
    let unnamed: Vec<&str> = marks
        .iter()
        .filter(|mark| mark.send().is_none())
        .map(OutboxMark::id)
        .collect();
    let mut sends = HashMap::with_capacity(unnamed.len());
    for chunk in unnamed.chunks(INSERT_CHUNK) {
        let rows = Entity::find()
            .select_only()
            .columns([
                Column::Id,
                Column::JourneyId,
                Column::StepKey,
                Column::DestinationId,
            ])
            .filter(Column::Id.is_in(chunk.iter().copied()))
            .into_tuple::<(String, String, String, String)>()
            .all(db)
            .await?;
        for (id, journey_id, step_key, destination_id) in rows {
            let send = SendOf {
                journey_id,
                step_key,
                destination_id,
            };
            sends.insert(id, send);
        }
    }
    Ok(sends)
}

/// Marks the rows `ids` not yet delivered as delivered at `now`, 500 ids per statement;
/// returns how many changed.
async fn exec_sent<C: ConnectionTrait>(
    db: &C,
    ids: &[&str],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut changed = 0;
    for chunk in ids.chunks(INSERT_CHUNK) {
        changed += sent_update(now)
            .filter(Column::Id.is_in(chunk.iter().copied()))
            .filter(Column::Status.ne(OutboxStatus::Sent.as_str()))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(changed)
}

/// Delivered at `now`, claim cleared; the caller adds the row filter.
fn sent_update(now: DateTime<Utc>) -> UpdateMany<Entity> {
    Entity::update_many()
        .col_expr(Column::Status, Expr::value(OutboxStatus::Sent.as_str()))
        .col_expr(Column::SentAt, Expr::value(Some(micros(now))))
        .col_expr(Column::ClaimedUntil, Expr::value(None::<DateTime<Utc>>))
        .col_expr(Column::ClaimedBy, Expr::value(None::<String>))
}

/// Still pending, due again at `next_attempt_at`, claim cleared; the caller adds the row filter.
fn retry_update(
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
) -> UpdateMany<Entity> {
    Entity::update_many()
        .col_expr(Column::Attempts, Expr::value(attempts))
        .col_expr(Column::NextAttemptAt, Expr::value(micros(next_attempt_at)))
        .col_expr(Column::LastError, Expr::value(Some(last_error.to_owned())))
        .col_expr(Column::ClaimedUntil, Expr::value(None::<DateTime<Utc>>))
        .col_expr(Column::ClaimedBy, Expr::value(None::<String>))
}

/// Dead-lettered at `now`, claim cleared; the caller adds the row filter.
fn dead_update(attempts: i32, last_error: &str, now: DateTime<Utc>) -> UpdateMany<Entity> {
    Entity::update_many()
        .col_expr(Column::Status, Expr::value(OutboxStatus::Dead.as_str()))
        .col_expr(Column::Attempts, Expr::value(attempts))
        .col_expr(Column::LastError, Expr::value(Some(last_error.to_owned())))
        .col_expr(Column::DeadAt, Expr::value(Some(micros(now))))
        .col_expr(Column::ClaimedUntil, Expr::value(None::<DateTime<Utc>>))
        .col_expr(Column::ClaimedBy, Expr::value(None::<String>))
}

/// The row for `record`, unclaimed.
pub(crate) fn to_active_model(record: &OutboxRecord) -> outbox::ActiveModel {
    outbox::ActiveModel {
        id: Set(record.id.clone()),
        instance_id: Set(record.instance_id.clone()),
        profile_id: Set(record.profile_id.clone()),
        journey_id: Set(record.journey_id.clone()),
        step_key: Set(record.step_key.clone()),
        destination_id: Set(record.destination_id.clone()),
        message_id: Set(record.message_id.clone()),
        method: Set(record.method.clone()),
        path: Set(record.path.clone()),
        payload: Set(record.payload.clone()),
        status: Set(record.status.as_str().to_owned()),
        attempts: Set(record.attempts),
        next_attempt_at: Set(micros(record.next_attempt_at)),
        last_error: Set(record.last_error.clone()),
        created_at: Set(micros(record.created_at)),
        claimed_until: Set(None),
        claimed_by: Set(None),
        traceparent: Set(record.traceparent.clone()),
        sent_at: Set(record.sent_at.map(micros)),
        dead_at: Set(record.dead_at.map(micros)),
    }
}

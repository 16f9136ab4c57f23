//! Repositories: one module per aggregate, each a thin borrowed view over the connection that
//! converts between sea-orm models and the public record types.

mod audiences;
mod batches;
mod catalog;
mod destinations;
pub(crate) mod identities;
mod instances;
mod journeys;
mod outbox;
mod partitions;
mod profiles;
mod sources;
mod timers;
mod watermarks;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, SqlErr,
    TransactionTrait,
};

use crate::error::StoreError;

pub use audiences::{AudienceRecord, Audiences};
pub use batches::{
    Batches, BranchCounts, COUNTER_SHARDS, Changes, CounterKey, CounterKind, DeliveryHour,
    HourStats, JourneyStats, ProfileDeletion, ProfileState, SendCounts, StatsRange, StepCounts,
    Tombstone, hour_start,
};
pub use catalog::{Catalog, CatalogEventRecord};
pub use destinations::{
    DestinationKind, DestinationRecord, Destinations, FunctionSettings, WebhookSettings,
};
pub use identities::{
    Identities, IdentityLink, IdentityRecord, IdentityRefusal, ProfileMerge, RefusalRecord,
};
pub use instances::{
    InstanceDetail, InstanceFilter, InstanceRecord, InstanceState, Instances, TimelineEntry,
    TimelineRecord, TransitionEntry,
};
pub use journeys::{JourneyChanges, JourneyRecord, JourneyState, Journeys};
pub use outbox::{Outbox, OutboxMark, OutboxRecord, OutboxStatus, SendOf};
pub(crate) use partitions::fence;
pub use partitions::{Held, NodeRecord, PartitionRecord, Partitions};
pub use profiles::{ProfileRecord, Profiles};
pub use sources::{SourceRecord, Sources, hash_write_key};
pub use timers::{TimerRecord, TimerStats, Timers};
pub use watermarks::Watermarks;

/// Rows per multi-row `INSERT`, well below the placeholder limits of both backends.
pub(crate) const INSERT_CHUNK: usize = 500;

/// Most rows per statement of [`sized_chunks`]: the largest power of two within
/// [`INSERT_CHUNK`].
const SIZED_CHUNK: usize = 256;

/// Below this many rows, [`sized_chunks`] writes what is left in one statement.
const SIZED_TAIL: usize = 8;

/// `rows` cut for multi-row writes whose statement texts repeat: runs of a power-of-two length
/// (8 to 256 rows), longest first, then the rest (under 8 rows) in one run. A table's inserts
/// then use about a dozen texts, which the driver keeps prepared, instead of a new text (and a
/// prepare) for every row count a batch happens to have.
pub(crate) fn sized_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = match rest.len() {
            n if n < SIZED_TAIL => n,
            n => 1 << n.min(SIZED_CHUNK).ilog2(),
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// `ids` for an `IN (…)` list, its length rounded up to a power of two (at least 8) by
/// repeating the last id: reads whose lists vary in length with every batch then share a few
/// statement texts, which the driver keeps prepared, instead of preparing a new one each time.
pub(crate) fn padded<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    let mut list = ids.to_vec();
    if let Some(&last) = ids.last() {
        list.resize(ids.len().next_power_of_two().max(8), last);
    }
    list
}

/// How a purge deletes: at most `chunk` rows (instances, outbox rows, dedupe keys) per
/// transaction, and after each chunk a rest of `rest` times as long as the chunk took. Resting
/// as long as the chunk took (`rest` 1) leaves the store to the event path at least half of the
/// time while a minute's worth of finished rows goes; back to back (`rest` 0), large deletes held
/// every commit up. The caller (housekeeping) picks the pace; tests purge unpaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePace {
    /// Rows per delete transaction (at least 1).
    pub chunk: usize,
    /// Rest after each chunk, as a multiple of the chunk's own duration.
    pub rest: u32,
}

impl PurgePace {
    /// Chunks of 1,000, back to back: for tests and one-off runs on an idle store.
    pub const UNPACED: Self = Self {
        chunk: 1000,
        rest: 0,
    };

    pub(crate) fn limit(self) -> u64 {
        self.chunk.max(1) as u64
    }

    /// After a chunk that began at `started` and found `found` rows: `false` when it was the
    /// last (fewer rows than the limit), otherwise rests as this pace says and returns `true`.
    /// The loop of every paced purge ([`PurgePace::drain`], the counter shards' fold).
    pub(crate) async fn go_on(self, started: std::time::Instant, found: usize) -> bool {
        if (found as u64) < self.limit() {
            return false;
        }
        if self.rest > 0 {
            tokio::time::sleep(started.elapsed() * self.rest).await;
        }
        true
    }

    /// Runs a purge at this pace: `select(limit)` reads the ids of up to `limit` rows due,
    /// `delete(txn, ids)` deletes them in `txn` (READ COMMITTED on MySQL, so the batches
    /// inserting next to the purged rows neither wait for it nor deadlock with it) and returns
    /// what it counts; the transaction is then committed, or rolled back on an error. Chunk
    /// after chunk, with a rest after each, until one finds fewer rows than the limit. Returns
    /// the sum of the counts; chunks deleted before an error stay deleted.
    pub(crate) async fn drain<S, SF, D>(
        self,
        db: &DatabaseConnection,
        mut select: S,
        mut delete: D,
    ) -> Result<u64, StoreError>
    where
        S: FnMut(u64) -> SF,
        SF: Future<Output = Result<Vec<String>, DbErr>>,
        D: for<'t> FnMut(&'t DatabaseTransaction, Vec<String>) -> PurgeChunk<'t>,
    {
        let mut purged = 0;
        loop {
            let started = std::time::Instant::now();
            let ids = select(self.limit()).await?;
            let found = ids.len();
            if found == 0 {
                return Ok(purged);
            }
            let txn = begin_read_committed(db).await?;
            let result = delete(&txn, ids).await.map_err(StoreError::from);
            purged += finish(txn, result).await?;
            if !self.go_on(started, found).await {
                return Ok(purged);
            }
        }
    }
}

/// One chunk's deletes in a purge's transaction ([`PurgePace::drain`]), counting what they
/// removed.
pub(crate) type PurgeChunk<'t> =
    std::pin::Pin<Box<dyn Future<Output = Result<u64, DbErr>> + Send + 't>>;

impl Default for PurgePace {
    /// Chunks of 250 rows, each followed by a rest as long as it took.
    fn default() -> Self {
        Self {
            chunk: 250,
            rest: 1,
        }
    }
}

/// Timestamps are stored with microsecond precision (MySQL `DATETIME(6)`); truncating before
/// writing makes a record read back equal to the one written, on both backends.
pub(crate) fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Commits `txn` when `result` is `Ok`, rolls it back otherwise, and returns `result`.
///
/// The rollback is explicit (not left to `Drop`) so that the connection is clean before the
/// next caller gets it; with SQLite's single pooled connection that caller is everyone.
pub(crate) async fn finish<T>(
    txn: DatabaseTransaction,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(err) => {
            rollback(txn).await;
            Err(err)
        }
    }
}

/// Rolls `txn` back; a failure is only logged, as the caller is already reporting an error.
pub(crate) async fn rollback(txn: DatabaseTransaction) {
    if let Err(err) = txn.rollback().await {
        tracing::warn!(error = %err, "rollback failed");
    }
}

/// Begins a transaction for claiming rows with `FOR UPDATE SKIP LOCKED`, or for updating rows
/// that others claim and mark at the same time (the delivery marks).
///
/// On MySQL it runs at `READ COMMITTED`: no gap locks (which would block concurrent inserts of
/// new timers and sends into the scanned range) and locks on scanned rows that do not match are
/// released at once. At `REPEATABLE READ`, an `UPDATE … WHERE id IN (…)` that the optimizer runs
/// as a scan keeps every scanned row locked until it commits: a claim then skips due rows it
/// does not change, or deadlocks with it. SQLite has one writer anyway.
pub(crate) async fn begin_read_committed(
    db: &DatabaseConnection,
) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DbBackend::MySql {
        db.begin_with_config(Some(IsolationLevel::ReadCommitted), None)
            .await
    } else {
        db.begin().await
    }
}

/// Maps a write error inside a runtime transaction: a unique-key violation becomes a
/// [`StoreError::Conflict`] naming `what` collided.
pub(crate) fn conflict_on_unique(what: &str, err: DbErr) -> StoreError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) => {
            StoreError::Conflict(format!("{what}: {detail}"))
        }
        _ => StoreError::from(err),
    }
}

/// Quotes an identifier for raw SQL on `backend`.
pub(crate) fn quoted(backend: DbBackend, ident: &str) -> String {
    match backend {
        DbBackend::MySql => format!("`{ident}`"),
        _ => format!("\"{ident}\""),
    }
}

/// `?, ?, ...` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{padded, sized_chunks};

    #[test]
    fn writes_are_cut_into_runs_of_a_few_lengths_in_order() {
        let lengths = |n: usize| -> Vec<usize> {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = sized_chunks(&rows).collect();
            assert_eq!(chunks.concat(), rows, "every row once, in order");
            chunks.iter().map(|c| c.len()).collect()
        };
        assert!(lengths(0).is_empty());
        assert_eq!(lengths(5), [5]);
        assert_eq!(lengths(8), [8]);
        assert_eq!(lengths(250), [128, 64, 32, 16, 8, 2]);
        assert_eq!(lengths(700), [256, 256, 128, 32, 16, 8, 4]);
    }

    #[test]
    fn in_lists_are_padded_to_a_few_lengths_with_the_same_ids() {
        assert!(padded(&[]).is_empty());
        assert_eq!(padded(&["a"]), ["a"; 8]);
        let ids: Vec<String> = (0..130).map(|i| i.to_string()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let list = padded(&ids);
        assert_eq!(list.len(), 256);
        assert_eq!(&list[..130], &ids[..]);
        assert!(list[130..].iter().all(|id| *id == "129"));
    }
}

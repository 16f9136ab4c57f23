//! Journey counters and [`Batches::journey_stats`](super::Batches::journey_stats).
//!
//! Counters (`journey_counters` table, one row per key and UTC hour) hold what must survive
//! purges: how often each step was reached, completed, exited or failed at, each branch taken,
//! each send queued and delivered, each exit made by reason, each entry made or skipped. The
//! engine sums them per batch and [`upsert`] adds one row per key in the batch's transaction;
//! the outbox counts deliveries as it marks them (`Outbox::record`). The statistics read
//! them, plus the active instances (waiting, always as of now).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult, Statement,
};

use crate::error::StoreError;
use crate::migration::BRANCH_LEN;
use crate::repo::instances::InstanceState;
use crate::repo::partitions::Held;
use crate::repo::{
    INSERT_CHUNK, PurgePace, begin_read_committed, finish, placeholders, sized_chunks,
};

use super::{BranchCounts, DeliveryHour, HourStats, JourneyStats, SendCounts, StepCounts};

/// What a counter counts. Stored by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CounterKind {
    /// Entries into the journey, at its start step.
    Entered,
    /// Instances that reached the step.
    Step,
    /// Times the step's branch (`CounterKey::branch`) was taken; an empty branch is a data
    /// split's "everyone else".
    Branch,
    /// Times a hold-until's maximum duration passed (its timeout branch was taken).
    TimedOut,
    /// Sends queued by the step (or exit send).
    Send,
    /// Instances that left the step onward, or completed the journey at it.
    Completed,
    /// Instances that exited the journey while at the step.
    Exited,
    /// Exits by reason (`CounterKey::branch`: `exit_rule:<index>`, `journey_archived`,
    /// `operator`, `lifetime_reached`; the step key is empty).
    ExitReason,
    /// Instances that failed while at the step.
    Failed,
    /// Entries not made, by skip reason (`CounterKey::branch`; the step key is empty).
    Skipped,
    /// Deliveries made by the send step (`CounterKey::branch`: the destination id).
    Delivered,
    /// Failed delivery attempts of the send step (`CounterKey::branch`: the destination id).
    DeliveryFailed,
    /// Sends of the step given up after their retry budget (`CounterKey::branch`: the
    /// destination id).
    DeadLettered,
}

impl CounterKind {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entered => "entered",
            Self::Step => "step",
            Self::Branch => "branch",
            Self::TimedOut => "timed_out",
            Self::Send => "send",
            Self::Completed => "completed",
            Self::Exited => "exited",
            Self::ExitReason => "exit_reason",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Delivered => "delivered",
            Self::DeliveryFailed => "delivery_failed",
            Self::DeadLettered => "dead_lettered",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "entered" => Self::Entered,
            "step" => Self::Step,
            "branch" => Self::Branch,
            "timed_out" => Self::TimedOut,
            "send" => Self::Send,
            "completed" => Self::Completed,
            "exited" => Self::Exited,
            "exit_reason" => Self::ExitReason,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            "delivered" => Self::Delivered,
            "delivery_failed" => Self::DeliveryFailed,
            "dead_lettered" => Self::DeadLettered,
            _ => return None,
        })
    }
}

/// The start of the UTC hour holding `at`, in Unix seconds: the `hour` of a counter.
#[must_use]
pub fn hour_start(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3600) * 3600
}

/// The key of one counter row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey {
    pub journey_id: String,
    /// The start of the hour counted in ([`hour_start`]); 0 for counts older than hourly
    /// counting.
    pub hour: i64,
    /// The step; empty for [`CounterKind::Skipped`] and [`CounterKind::ExitReason`].
    pub step_key: String,
    pub kind: CounterKind,
    /// The branch name of a [`CounterKind::Branch`] counter, the reason of a
    /// [`CounterKind::Skipped`] or [`CounterKind::ExitReason`] one; empty otherwise. Stored
    /// cut to 128 characters.
    pub branch: String,
}

impl CounterKey {
    /// A counter of `kind` at `step_key` with no branch, in hour 0 (see [`CounterKey::at`]).
    #[must_use]
    pub fn new(journey_id: &str, step_key: &str, kind: CounterKind) -> Self {
        Self {
            journey_id: journey_id.to_owned(),
            hour: 0,
            step_key: step_key.to_owned(),
            kind,
            branch: String::new(),
        }
    }

    /// A counter of `kind` at `step_key` for `branch`.
    #[must_use]
    pub fn with_branch(journey_id: &str, step_key: &str, kind: CounterKind, branch: &str) -> Self {
        Self {
            branch: branch.to_owned(),
            ..Self::new(journey_id, step_key, kind)
        }
    }

    /// The same counter in the hour of `at`.
    #[must_use]
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.hour = hour_start(at);
        self
    }
}

/// Shards of a counter (and of an event catalog entry): each key has up to this many rows per
/// hour, one per shard, which readers add up. A batch writes the shard of its first fenced
/// partition (`partition % COUNTER_SHARDS`), so the lanes of a node (`partition % lanes`, with
/// `lanes` dividing 16) never queue on each other's counter rows; unfenced writes (tests, the
/// delivery's counts) use shard 0. [`fold_shards`] merges past hours back into shard 0.
pub const COUNTER_SHARDS: u32 = 16;

/// The shard a batch fenced over `held` writes its counters and catalog rows in.
pub(crate) fn shard_of(held: &[Held]) -> i16 {
    held.first().map_or(0, |h| {
        i16::try_from(h.partition % COUNTER_SHARDS).unwrap_or(0)
    })
}

/// Moves the counts of shards other than 0 in hours before `before_hour` into shard 0, in
/// transactions of at most `pace.chunk` rows at `pace`; returns how many rows were folded.
///
/// Each chunk locks the rows it reads (`FOR UPDATE` on MySQL; SQLite has one writer), adds
/// their sums to shard 0 and deletes exactly those rows, so an increment committed meanwhile
/// is never lost: it is in a row the chunk did not read, folded by a later run.
pub(super) async fn fold_shards(
    db: &DatabaseConnection,
    before_hour: i64,
    pace: PurgePace,
) -> Result<u64, StoreError> {
    let backend = db.get_database_backend();
    let lock = if backend == DbBackend::MySql {
        " FOR UPDATE"
    } else {
        ""
    };
    let mut folded = 0;
    loop {
        let started = std::time::Instant::now();
        let txn = begin_read_committed(db).await?;
        let result = fold_chunk(&txn, backend, before_hour, pace.limit(), lock).await;
        let found = finish(txn, result).await?;
        folded += found as u64;
        if !pace.go_on(started, found).await {
            return Ok(folded);
        }
    }
}

/// One chunk of [`fold_shards`] in `txn`; returns how many shard rows it folded.
async fn fold_chunk(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    before_hour: i64,
    limit: u64,
    lock: &str,
) -> Result<usize, StoreError> {
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT journey_id, hour, step_key, kind, branch, shard, n FROM journey_counters \
                 WHERE hour < ? AND shard > 0 \
                 ORDER BY journey_id, hour, step_key, kind, branch, shard LIMIT {limit}{lock}"
            ),
            [before_hour.into()],
        ))
        .await?;
    let mut sums: BTreeMap<CounterKey, i64> = BTreeMap::new();
    let mut keys: Vec<sea_orm::Value> = Vec::with_capacity(rows.len() * 6);
    for row in &rows {
        let journey_id: String = get(row, "journey_id")?;
        let hour: i64 = get(row, "hour")?;
        let step_key: String = get(row, "step_key")?;
        let kind: String = get(row, "kind")?;
        let branch: String = get(row, "branch")?;
        let shard: i16 = get(row, "shard")?;
        let n: i64 = get(row, "n")?;
        let Some(parsed) = CounterKind::parse(&kind) else {
            return Err(StoreError::Internal(format!(
                "unknown counter kind {kind:?}"
            )));
        };
        let mut key = CounterKey::with_branch(&journey_id, &step_key, parsed, &branch);
        key.hour = hour;
        *sums.entry(key).or_default() += n;
        keys.extend([
            journey_id.into(),
            hour.into(),
            step_key.into(),
            kind.into(),
            branch.into(),
            shard.into(),
        ]);
    }
    upsert(txn, &sums, 0).await?;
    for chunk in keys.chunks(6 * INSERT_CHUNK) {
        let tuples = vec![format!("({})", placeholders(6)); chunk.len() / 6].join(", ");
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "DELETE FROM journey_counters \
                 WHERE (journey_id, hour, step_key, kind, branch, shard) IN ({tuples})"
            ),
            chunk.to_vec(),
        ))
        .await?;
    }
    Ok(rows.len())
}

/// The stored form of a branch name: at most `BRANCH_LEN` characters.
fn stored_branch(branch: &str) -> &str {
    match branch.char_indices().nth(BRANCH_LEN as usize) {
        Some((cut, _)) => &branch[..cut],
        None => branch,
    }
}

/// The upsert tail adding to an existing counter row.
fn on_conflict(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => " ON DUPLICATE KEY UPDATE n = n + VALUES(n)",
        _ => {
            " ON CONFLICT (journey_id, hour, step_key, kind, branch, shard) \
             DO UPDATE SET n = journey_counters.n + excluded.n"
        }
    }
}

/// Adds `counters` to the stored counts in the rows of `shard` (see [`COUNTER_SHARDS`]): one
/// multi-row upsert per 500 keys, in key order (so concurrent batches lock the rows in the same
/// order). Zero increments are skipped.
pub(crate) async fn upsert<C: ConnectionTrait>(
    db: &C,
    counters: &BTreeMap<CounterKey, i64>,
    shard: i16,
) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    // Keys that differ only past the stored branch length add up into one row (a statement
    // must not name a row twice).
    let mut rows: BTreeMap<(&str, i64, &str, &str, &str), i64> = BTreeMap::new();
    for (key, n) in counters.iter().filter(|(_, n)| **n != 0) {
        *rows
            .entry((
                key.journey_id.as_str(),
                key.hour,
                key.step_key.as_str(),
                key.kind.as_str(),
                stored_branch(&key.branch),
            ))
            .or_default() += n;
    }
    let rows: Vec<_> = rows.into_iter().collect();
    for chunk in sized_chunks(&rows) {
        let mut sql = String::from(
            "INSERT INTO journey_counters (journey_id, hour, step_key, kind, branch, shard, n) \
             VALUES ",
        );
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 7);
        for (i, ((journey, hour, step, kind, branch), n)) in chunk.iter().enumerate() {
            let _ = write!(
                sql,
                "{}({})",
                if i > 0 { ", " } else { "" },
                placeholders(7)
            );
            values.extend([
                (*journey).into(),
                (*hour).into(),
                (*step).into(),
                (*kind).into(),
                (*branch).into(),
                shard.into(),
                (*n).into(),
            ]);
        }
        sql.push_str(on_conflict(backend));
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// A time range of statistics: the hours that start at or after `start` (rounded down to its
/// hour) and before `end` (rounded up). Unset bounds are open; counts older than hourly
/// counting (hour 0) are in a range only when `start` is unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsRange {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl StatsRange {
    /// The SQL condition on `hour` and its values.
    fn condition(&self) -> (String, Vec<sea_orm::Value>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        if let Some(start) = self.start {
            sql.push_str(" AND hour >= ?");
            values.push(hour_start(start).into());
        }
        if let Some(end) = self.end {
            // Hours starting before `end`: the hour holding `end` too, unless `end` is its
            // very start.
            sql.push_str(" AND hour < ?");
            values.push(end.timestamp().into());
        }
        (sql, values)
    }
}

/// Computes the statistics of `journey_id` over `range`, with a bucket per hour when `hourly`.
pub(super) async fn journey_stats<C: ConnectionTrait>(
    db: &C,
    journey_id: &str,
    range: &StatsRange,
    hourly: bool,
) -> Result<JourneyStats, StoreError> {
    let backend = db.get_database_backend();
    let (condition, mut values) = range.condition();
    values.insert(0, journey_id.into());
    let counters = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT hour, step_key, kind, branch, n FROM journey_counters \
                 WHERE journey_id = ?{condition}"
            ),
            values,
        ))
        .await?;
    let waiting = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT current_step AS step_key, COUNT(*) AS n FROM instances \
                 WHERE journey_id = ? AND state = '{active}' AND current_step IS NOT NULL \
                 GROUP BY current_step",
                active = InstanceState::Active.as_str(),
            ),
            [journey_id.into()],
        ))
        .await?;

    let mut total = Gathered::default();
    let mut hours: BTreeMap<i64, Gathered> = BTreeMap::new();
    for row in &counters {
        let counter = Counter::read(row)?;
        total.add(&counter);
        if hourly {
            hours.entry(counter.hour).or_default().add(&counter);
        }
    }
    for row in &waiting {
        let key: String = get(row, "step_key")?;
        total.entry(key).waiting += get::<i64>(row, "n")?;
    }
    let mut stats = total.finish();
    stats.hours = hours
        .into_iter()
        .map(|(hour, gathered)| HourStats {
            start: DateTime::from_timestamp(hour, 0).unwrap_or_default(),
            stats: gathered.finish(),
        })
        .collect();
    Ok(stats)
}

/// Delivery counts of `destination_id` over `range`, one bucket per hour with any (hour 0:
/// counts older than hourly counting), earliest first.
pub(super) async fn destination_stats<C: ConnectionTrait>(
    db: &C,
    destination_id: &str,
    range: &StatsRange,
) -> Result<Vec<DeliveryHour>, StoreError> {
    let backend = db.get_database_backend();
    let (condition, range_values) = range.condition();
    let mut values: Vec<sea_orm::Value> = vec![destination_id.into()];
    values.extend(range_values);
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT hour, kind, CAST(SUM(n) {int}) AS n FROM journey_counters \
                 WHERE branch = ? AND kind IN ('{delivered}', '{failed}', '{dead}'){condition} \
                 GROUP BY hour, kind",
                int = signed(backend),
                delivered = CounterKind::Delivered.as_str(),
                failed = CounterKind::DeliveryFailed.as_str(),
                dead = CounterKind::DeadLettered.as_str(),
            ),
            values,
        ))
        .await?;
    let mut hours: BTreeMap<i64, DeliveryHour> = BTreeMap::new();
    for row in &rows {
        let hour: i64 = get(row, "hour")?;
        let kind: String = get(row, "kind")?;
        let n: i64 = get(row, "n")?;
        let bucket = hours.entry(hour).or_insert_with(|| DeliveryHour {
            start: DateTime::from_timestamp(hour, 0).unwrap_or_default(),
            ..DeliveryHour::default()
        });
        match CounterKind::parse(&kind) {
            Some(CounterKind::Delivered) => bucket.sent += n,
            Some(CounterKind::DeliveryFailed) => bucket.failed += n,
            Some(CounterKind::DeadLettered) => bucket.dead_lettered += n,
            _ => {}
        }
    }
    Ok(hours.into_values().collect())
}

/// The integer type a `CAST` names: `SIGNED` on MySQL, `INTEGER` on SQLite.
fn signed(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "AS SIGNED",
        _ => "AS INTEGER",
    }
}

/// One counter row as read.
struct Counter {
    hour: i64,
    step_key: String,
    kind: Option<CounterKind>,
    branch: String,
    n: i64,
}

impl Counter {
    fn read(row: &QueryResult) -> Result<Self, StoreError> {
        Ok(Self {
            hour: get(row, "hour")?,
            step_key: get(row, "step_key")?,
            kind: CounterKind::parse(&get::<String>(row, "kind")?),
            branch: get(row, "branch")?,
            n: get(row, "n")?,
        })
    }
}

/// Statistics gathered from counter rows, before the waiting counts.
#[derive(Default)]
struct Gathered {
    steps: BTreeMap<String, StepCounts>,
    branches: BTreeMap<(String, String, bool), i64>,
    sends: BTreeMap<String, SendCounts>,
    entries: i64,
    skipped: BTreeMap<String, i64>,
    exits: BTreeMap<String, i64>,
}

impl Gathered {
    fn entry(&mut self, key: String) -> &mut StepCounts {
        self.steps.entry(key.clone()).or_insert_with(|| StepCounts {
            step_key: key,
            ..StepCounts::default()
        })
    }

    fn send(&mut self, key: &str) -> &mut SendCounts {
        self.sends
            .entry(key.to_owned())
            .or_insert_with(|| SendCounts {
                step_key: key.to_owned(),
                ..SendCounts::default()
            })
    }

    fn add(&mut self, c: &Counter) {
        let n = c.n;
        match c.kind {
            Some(CounterKind::Entered) => self.entries += n,
            Some(CounterKind::Step) => self.entry(c.step_key.clone()).entered += n,
            Some(CounterKind::Completed) => self.entry(c.step_key.clone()).completed += n,
            Some(CounterKind::Exited) => self.entry(c.step_key.clone()).exited += n,
            Some(CounterKind::Failed) => self.entry(c.step_key.clone()).failed += n,
            Some(CounterKind::Branch) => {
                *self
                    .branches
                    .entry((c.step_key.clone(), c.branch.clone(), false))
                    .or_default() += n;
            }
            Some(CounterKind::TimedOut) => {
                *self
                    .branches
                    .entry((c.step_key.clone(), String::new(), true))
                    .or_default() += n;
            }
            Some(CounterKind::Skipped) => *self.skipped.entry(c.branch.clone()).or_default() += n,
            Some(CounterKind::ExitReason) => {
                *self.exits.entry(c.branch.clone()).or_default() += n;
            }
            Some(CounterKind::Delivered) => self.send(&c.step_key).sent += n,
            Some(CounterKind::DeliveryFailed) => self.send(&c.step_key).failed += n,
            Some(CounterKind::DeadLettered) => self.send(&c.step_key).dead_lettered += n,
            // Queued sends are not part of the statistics (deliveries are); unknown kinds come
            // from a newer version.
            Some(CounterKind::Send) | None => {}
        }
    }

    fn finish(self) -> JourneyStats {
        JourneyStats {
            steps: self.steps.into_values().collect(),
            sends: self.sends.into_values().collect(),
            branches: self
                .branches
                .into_iter()
                .map(|((step_key, branch_name, timed_out), taken)| BranchCounts {
                    everyone_else: !timed_out && branch_name.is_empty(),
                    timed_out,
                    step_key,
                    branch_name,
                    taken,
                })
                .collect(),
            entries: self.entries,
            entries_skipped: self.skipped,
            exits: self.exits,
            hours: Vec::new(),
        }
    }
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T, StoreError> {
    row.try_get("", column)
        .map_err(|e| StoreError::Internal(format!("journey stats column {column}: {e}")))
}

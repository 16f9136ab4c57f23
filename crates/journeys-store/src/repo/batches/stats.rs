//! Journey counters and [`Batches::journey_stats`](super::Batches::journey_stats).
//!
//! Counters (`counters` table) hold what must survive purges: how often each step was reached,
//! each branch taken, each send queued, each exit made, each entry made or skipped. The engine
//! sums them per batch and [`upsert`] adds one row per key in the batch's transaction. The
//! statistics read them, plus the active instances (waiting) and the outbox (delivery), which
//! purging finished instances does not touch.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};

use crate::error::StoreError;
use crate::migration::BRANCH_LEN;
use crate::repo::instances::InstanceState;
use crate::repo::outbox::OutboxStatus;
use crate::repo::{INSERT_CHUNK, placeholders};

use super::{BranchCounts, JourneyStats, SendCounts, StepCounts};

/// What a counter counts. Stored by name; the names of the timeline kinds they mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CounterKind {
    /// Entries into the journey, at its start step.
    Entered,
    /// Instances that reached the step.
    Step,
    /// Times the step's branch (`CounterKey::branch`) was taken.
    Branch,
    /// Sends queued by the step (or exit send).
    Send,
    /// Instances that exited the journey while at the step.
    Exited,
    /// Entries not made, by skip reason (`CounterKey::branch`; the step key is empty).
    Skipped,
}

impl CounterKind {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entered => "entered",
            Self::Step => "step",
            Self::Branch => "branch",
            Self::Send => "send",
            Self::Exited => "exited",
            Self::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "entered" => Self::Entered,
            "step" => Self::Step,
            "branch" => Self::Branch,
            "send" => Self::Send,
            "exited" => Self::Exited,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

/// The key of one counter row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey {
    pub journey_id: String,
    /// The step; empty for [`CounterKind::Skipped`].
    pub step_key: String,
    pub kind: CounterKind,
    /// The branch name of a [`CounterKind::Branch`] counter, the reason of a
    /// [`CounterKind::Skipped`] one; empty otherwise. Stored cut to 128 characters.
    pub branch: String,
}

impl CounterKey {
    /// A counter of `kind` at `step_key` with no branch.
    #[must_use]
    pub fn new(journey_id: &str, step_key: &str, kind: CounterKind) -> Self {
        Self {
            journey_id: journey_id.to_owned(),
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
}

/// The stored form of a branch name: at most `BRANCH_LEN` characters.
fn stored_branch(branch: &str) -> &str {
    match branch.char_indices().nth(BRANCH_LEN as usize) {
        Some((cut, _)) => &branch[..cut],
        None => branch,
    }
}

/// Adds `counters` to the stored counts: one multi-row upsert per 500 keys, in key order (so
/// concurrent batches lock the rows in the same order). Zero increments are skipped.
pub(super) async fn upsert<C: ConnectionTrait>(
    db: &C,
    counters: &BTreeMap<CounterKey, i64>,
) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    // Keys that differ only past the stored branch length add up into one row (a statement
    // must not name a row twice).
    let mut rows: BTreeMap<(&str, &str, &str, &str), i64> = BTreeMap::new();
    for (key, n) in counters.iter().filter(|(_, n)| **n != 0) {
        *rows
            .entry((
                key.journey_id.as_str(),
                key.step_key.as_str(),
                key.kind.as_str(),
                stored_branch(&key.branch),
            ))
            .or_default() += n;
    }
    let rows: Vec<_> = rows.into_iter().collect();
    let on_conflict = match backend {
        DbBackend::MySql => " ON DUPLICATE KEY UPDATE n = n + VALUES(n)",
        _ => {
            " ON CONFLICT (journey_id, step_key, kind, branch) \
             DO UPDATE SET n = counters.n + excluded.n"
        }
    };
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut sql =
            String::from("INSERT INTO counters (journey_id, step_key, kind, branch, n) VALUES ");
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 5);
        for (i, ((journey, step, kind, branch), n)) in chunk.iter().enumerate() {
            let _ = write!(
                sql,
                "{}({})",
                if i > 0 { ", " } else { "" },
                placeholders(5)
            );
            values.extend([
                (*journey).into(),
                (*step).into(),
                (*kind).into(),
                (*branch).into(),
                (*n).into(),
            ]);
        }
        sql.push_str(on_conflict);
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// Computes the statistics of `journey_id`.
pub(super) async fn journey_stats<C: ConnectionTrait>(
    db: &C,
    journey_id: &str,
) -> Result<JourneyStats, StoreError> {
    let backend = db.get_database_backend();
    let query = |sql: String| {
        let stmt = Statement::from_sql_and_values(backend, sql, [journey_id.into()]);
        db.query_all_raw(stmt)
    };
    let counters =
        query("SELECT step_key, kind, branch, n FROM counters WHERE journey_id = ?".to_owned())
            .await?;
    let waiting = query(format!(
        "SELECT current_step AS step_key, COUNT(*) AS n FROM instances \
         WHERE journey_id = ? AND state = '{active}' AND current_step IS NOT NULL \
         GROUP BY current_step",
        active = InstanceState::Active.as_str(),
    ))
    .await?;
    let sends = query(format!(
        "SELECT step_key, \
         COUNT(CASE WHEN status = '{sent}' THEN 1 END) AS sent, \
         CAST(COALESCE(SUM(attempts), 0) AS SIGNED) AS failed, \
         COUNT(CASE WHEN status = '{dead}' THEN 1 END) AS dead \
         FROM outbox WHERE journey_id = ? GROUP BY step_key",
        sent = OutboxStatus::Sent.as_str(),
        dead = OutboxStatus::Dead.as_str(),
    ))
    .await?;

    let mut stats = from_counters(&counters)?;
    for row in &waiting {
        let key: String = get(row, "step_key")?;
        stats.entry(key).waiting += get::<i64>(row, "n")?;
    }
    let mut send_counts = sends
        .iter()
        .map(|row| {
            Ok(SendCounts {
                step_key: get(row, "step_key")?,
                sent: get(row, "sent")?,
                failed: get(row, "failed")?,
                dead_lettered: get(row, "dead")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    send_counts.sort_by(|a, b| a.step_key.cmp(&b.step_key));
    Ok(stats.finish(send_counts))
}

/// Statistics gathered from the counter rows, before the waiting and delivery counts.
#[derive(Default)]
struct Gathered {
    steps: BTreeMap<String, StepCounts>,
    branches: Vec<BranchCounts>,
    entries: i64,
    skipped: BTreeMap<String, i64>,
}

impl Gathered {
    fn entry(&mut self, key: String) -> &mut StepCounts {
        entry(&mut self.steps, key)
    }

    fn finish(mut self, sends: Vec<SendCounts>) -> JourneyStats {
        for counts in self.steps.values_mut() {
            counts.completed = (counts.entered - counts.waiting - counts.exited).max(0);
        }
        self.branches
            .sort_by(|a, b| (&a.step_key, &a.branch_name).cmp(&(&b.step_key, &b.branch_name)));
        JourneyStats {
            steps: self.steps.into_values().collect(),
            sends,
            branches: self.branches,
            entries: self.entries,
            entries_skipped: self.skipped,
        }
    }
}

fn from_counters(rows: &[QueryResult]) -> Result<Gathered, StoreError> {
    let mut out = Gathered::default();
    for row in rows {
        let step_key: String = get(row, "step_key")?;
        let kind: String = get(row, "kind")?;
        let branch: String = get(row, "branch")?;
        let n: i64 = get(row, "n")?;
        match CounterKind::parse(&kind) {
            Some(CounterKind::Entered) => out.entries += n,
            Some(CounterKind::Step) => out.entry(step_key).entered += n,
            Some(CounterKind::Exited) => out.entry(step_key).exited += n,
            Some(CounterKind::Branch) => out.branches.push(BranchCounts {
                step_key,
                branch_name: branch,
                taken: n,
            }),
            Some(CounterKind::Skipped) => *out.skipped.entry(branch).or_default() += n,
            // Queued sends are not part of the statistics (delivery counts come from the
            // outbox); unknown kinds come from a newer version.
            Some(CounterKind::Send) | None => {}
        }
    }
    Ok(out)
}

fn entry(steps: &mut BTreeMap<String, StepCounts>, key: String) -> &mut StepCounts {
    steps.entry(key.clone()).or_insert_with(|| StepCounts {
        step_key: key,
        ..StepCounts::default()
    })
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T, StoreError> {
    row.try_get("", column)
        .map_err(|e| StoreError::Internal(format!("journey stats column {column}: {e}")))
}

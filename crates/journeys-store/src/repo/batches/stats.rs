//! [`Batches::journey_stats`](super::Batches::journey_stats): grouped counts over the
//! timeline, the instances and the outbox of one journey.
//!
//! Timeline kinds and the branch detail path come from the core that writes the rows
//! ([`TimelineKind`], [`BRANCH_DETAIL_PATH`]), so the queries follow any change there.

use std::collections::BTreeMap;

use journeys_core::machine::{BRANCH_DETAIL_PATH, TimelineKind};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};

use crate::error::StoreError;
use crate::repo::instances::InstanceState;
use crate::repo::outbox::OutboxStatus;

use super::{BranchCounts, JourneyStats, SendCounts, StepCounts};

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
    // Timeline rows carry no journey; their instance does (same profile, so the join stays
    // within one shard).
    let entered = query(format!(
        "SELECT t.step_key AS step_key, COUNT(*) AS n FROM timeline t \
         JOIN instances i ON i.id = t.instance_id \
         WHERE i.journey_id = ? AND t.kind = '{step}' \
         GROUP BY t.step_key",
        step = TimelineKind::Step.as_str(),
    ))
    .await?;
    let at_step = query(format!(
        "SELECT current_step AS step_key, state, COUNT(*) AS n FROM instances \
         WHERE journey_id = ? AND state IN ('{active}', '{exited}') \
         AND current_step IS NOT NULL \
         GROUP BY current_step, state",
        active = InstanceState::Active.as_str(),
        exited = InstanceState::Exited.as_str(),
    ))
    .await?;
    // The branch name sits in the timeline row's JSON detail; each dialect extracts it as text.
    let branch = match backend {
        DbBackend::MySql => format!("JSON_UNQUOTE(JSON_EXTRACT(t.detail, '{BRANCH_DETAIL_PATH}'))"),
        _ => format!("CAST(json_extract(t.detail, '{BRANCH_DETAIL_PATH}') AS TEXT)"),
    };
    let branches = query(format!(
        "SELECT t.step_key AS step_key, {branch} AS branch, COUNT(*) AS n FROM timeline t \
         JOIN instances i ON i.id = t.instance_id \
         WHERE i.journey_id = ? AND t.kind = '{kind}' AND {branch} IS NOT NULL \
         GROUP BY t.step_key, {branch}",
        kind = TimelineKind::Branch.as_str(),
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

    let steps = step_counts(&entered, &at_step)?;

    let mut branch_counts = branches
        .iter()
        .map(|row| {
            Ok(BranchCounts {
                step_key: get(row, "step_key")?,
                branch_name: get(row, "branch")?,
                taken: get(row, "n")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    branch_counts.sort_by(|a, b| (&a.step_key, &a.branch_name).cmp(&(&b.step_key, &b.branch_name)));

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

    Ok(JourneyStats {
        steps: steps.into_values().collect(),
        sends: send_counts,
        branches: branch_counts,
    })
}

/// Per step: entered (timeline), waiting and exited there (instances), and the rest completed.
fn step_counts(
    entered: &[QueryResult],
    at_step: &[QueryResult],
) -> Result<BTreeMap<String, StepCounts>, StoreError> {
    let mut steps: BTreeMap<String, StepCounts> = BTreeMap::new();
    for row in entered {
        let key: String = get(row, "step_key")?;
        entry(&mut steps, key).entered += get::<i64>(row, "n")?;
    }
    for row in at_step {
        let key: String = get(row, "step_key")?;
        let state: String = get(row, "state")?;
        let n: i64 = get(row, "n")?;
        let counts = entry(&mut steps, key);
        if state == InstanceState::Active.as_str() {
            counts.waiting += n;
        } else {
            counts.exited += n;
        }
    }
    for counts in steps.values_mut() {
        counts.completed = (counts.entered - counts.waiting - counts.exited).max(0);
    }
    Ok(steps)
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

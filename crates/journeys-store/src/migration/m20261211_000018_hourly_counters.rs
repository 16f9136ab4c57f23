//! Journey counters by the hour, and delivery counters.
//!
//! `journey_counters` `(journey_id, hour, step_key, kind, branch) -> n` replaces `counters`:
//! the same keys plus `hour`, the start of the UTC hour the counted thing happened in (Unix
//! seconds), so statistics can be asked for a time range. It also holds what the statistics
//! used to recount from other tables: steps completed, instances failed, hold timeouts, exits
//! by reason, and deliveries (sent, failed attempts, dead-lettered; `branch` is then the
//! destination id), so that every figure survives purges.
//!
//! Counts made before this migration have no hour: they are copied with `hour = 0` (in every
//! total, in no time range), together with what the old statistics derived for them: completed
//! per step (`entered - waiting - exited` as of now) and delivery counts from the outbox rows
//! still held (at the hour they were sent or dead-lettered).
//!
//! Re-runnable: the table and index are created only when missing; the copy runs in one
//! transaction while `journey_counters` is empty; `counters` is dropped after.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, TransactionTrait};
use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{BRANCH_LEN, STEP_KEY_LEN, TAG_LEN, create_index, create_table, id, string};
use crate::repo::CounterKind;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(
            manager,
            Table::create()
                .table(JourneyCounters::Table)
                .col(id(JourneyCounters::JourneyId))
                .col(
                    ColumnDef::new(JourneyCounters::Hour)
                        .big_integer()
                        .not_null(),
                )
                .col(string(JourneyCounters::StepKey, STEP_KEY_LEN))
                .col(string(JourneyCounters::Kind, TAG_LEN))
                .col(string(JourneyCounters::Branch, BRANCH_LEN))
                .col(ColumnDef::new(JourneyCounters::N).big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(JourneyCounters::JourneyId)
                        .col(JourneyCounters::Hour)
                        .col(JourneyCounters::StepKey)
                        .col(JourneyCounters::Kind)
                        .col(JourneyCounters::Branch),
                )
                .to_owned(),
        )
        .await?;
        // Destination statistics: delivery counters by destination (`branch`).
        create_index(
            manager,
            "journey_counters",
            "idx_journey_counters_branch",
            Index::create()
                .table(JourneyCounters::Table)
                .col(JourneyCounters::Branch)
                .col(JourneyCounters::Kind)
                .col(JourneyCounters::Hour)
                .to_owned(),
        )
        .await?;
        if manager.has_table("counters").await? {
            copy_old_counters(manager).await?;
            manager
                .get_connection()
                .execute_unprepared("DROP TABLE counters")
                .await?;
        }
        Ok(())
    }
}

type Key = (String, String, &'static str, String);

/// Copies `counters` (and what the old statistics derived from other tables) into an empty
/// `journey_counters`, at hour 0, in one transaction.
async fn copy_old_counters(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    let txn = manager.get_connection().begin().await?;
    let any = txn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM journey_counters",
        ))
        .await?;
    if any.map(|row| row.try_get::<i64>("", "n")).transpose()? > Some(0) {
        return Ok(());
    }
    let mut rows = old_counts(&txn, backend).await?;
    add_deliveries(&txn, backend, &mut rows).await?;
    for ((hour, (journey, step, kind, branch)), n) in rows {
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO journey_counters (journey_id, hour, step_key, kind, branch, n) \
             VALUES (?, ?, ?, ?, ?, ?)",
            [
                journey.into(),
                hour.into(),
                step.into(),
                kind.into(),
                branch.into(),
                n.into(),
            ],
        ))
        .await?;
    }
    txn.commit().await
}

/// The rows of `counters`, at hour 0, with the completions per step the old statistics
/// derived (`entered - waiting - exited`).
async fn old_counts(
    txn: &DatabaseTransaction,
    backend: DbBackend,
) -> Result<BTreeMap<(i64, Key), i64>, DbErr> {
    let mut rows: BTreeMap<(i64, Key), i64> = BTreeMap::new();
    let mut steps: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in txn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT journey_id, step_key, kind, branch, n FROM counters",
        ))
        .await?
    {
        let journey: String = row.try_get("", "journey_id")?;
        let step: String = row.try_get("", "step_key")?;
        let kind: String = row.try_get("", "kind")?;
        let branch: String = row.try_get("", "branch")?;
        let n: i64 = row.try_get("", "n")?;
        let Some(kind) = CounterKind::parse(&kind) else {
            continue;
        };
        match kind {
            CounterKind::Step => *steps.entry((journey.clone(), step.clone())).or_default() += n,
            CounterKind::Exited => *steps.entry((journey.clone(), step.clone())).or_default() -= n,
            _ => {}
        }
        *rows
            .entry((0, (journey, step, kind.as_str(), branch)))
            .or_default() += n;
    }
    for row in txn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT journey_id, current_step, COUNT(*) AS n FROM instances \
             WHERE state = 'ACTIVE' AND current_step IS NOT NULL \
             GROUP BY journey_id, current_step",
        ))
        .await?
    {
        let key = (
            row.try_get::<String>("", "journey_id")?,
            row.try_get::<String>("", "current_step")?,
        );
        *steps.entry(key).or_default() -= row.try_get::<i64>("", "n")?;
    }
    for ((journey, step), n) in steps {
        if n > 0 {
            rows.insert(
                (
                    0,
                    (
                        journey,
                        step,
                        CounterKind::Completed.as_str(),
                        String::new(),
                    ),
                ),
                n,
            );
        }
    }
    Ok(rows)
}

/// Adds the delivery counts of the outbox rows still held: sent and dead-lettered at the hour
/// they were, failed attempts at hour 0.
async fn add_deliveries(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    rows: &mut BTreeMap<(i64, Key), i64>,
) -> Result<(), DbErr> {
    let hour_of = |column: &str| match backend {
        DbBackend::MySql => {
            format!("CAST(FLOOR(UNIX_TIMESTAMP({column}) / 3600) * 3600 AS SIGNED)")
        }
        _ => format!("CAST(strftime('%s', {column}) AS INTEGER) / 3600 * 3600"),
    };
    let outbox = format!(
        "SELECT journey_id, step_key, destination_id, status, attempts, \
         {sent} AS sent_hour, {dead} AS dead_hour FROM outbox \
         WHERE status IN ('SENT', 'DEAD') OR attempts > 0",
        sent = hour_of("sent_at"),
        dead = hour_of("dead_at"),
    );
    for row in txn
        .query_all_raw(Statement::from_string(backend, outbox))
        .await?
    {
        let journey: String = row.try_get("", "journey_id")?;
        let step: String = row.try_get("", "step_key")?;
        let destination: String = row.try_get("", "destination_id")?;
        let status: String = row.try_get("", "status")?;
        let attempts: i32 = row.try_get("", "attempts")?;
        let sent_hour: Option<i64> = row.try_get("", "sent_hour")?;
        let dead_hour: Option<i64> = row.try_get("", "dead_hour")?;
        let key = |kind: CounterKind| {
            (
                journey.clone(),
                step.clone(),
                kind.as_str(),
                destination.clone(),
            )
        };
        // `attempts` counts the failed attempts (a delivery does not add to it).
        let failed = attempts;
        if status == "SENT" {
            *rows
                .entry((sent_hour.unwrap_or(0), key(CounterKind::Delivered)))
                .or_default() += 1;
        }
        if status == "DEAD" {
            *rows
                .entry((dead_hour.unwrap_or(0), key(CounterKind::DeadLettered)))
                .or_default() += 1;
        }
        if failed > 0 {
            *rows
                .entry((0, key(CounterKind::DeliveryFailed)))
                .or_default() += i64::from(failed);
        }
    }
    Ok(())
}

#[derive(DeriveIden)]
enum JourneyCounters {
    Table,
    JourneyId,
    Hour,
    StepKey,
    Kind,
    Branch,
    N,
}

//! Journey counters that survive purges, and the columns and indexes of the compact timeline.
//!
//! - `counters` `(journey_id, step_key, kind, branch) -> n`: how often each step was reached,
//!   each branch taken, each send queued, each exit made (see `CounterKind`). The engine adds
//!   one upsert per key per batch; journey statistics read them instead of recounting timeline
//!   rows, so purging finished instances and their timelines no longer changes the figures.
//!   Existing deployments are backfilled once from the timeline and instances they still hold.
//! - `timeline.journey_id`: set only on the row that stands for an instance never written to
//!   `instances` (one that started and ended within one batch); NULL elsewhere. Indexed with
//!   the instance id so `ListInstances` of a journey pages through such instances in id order.
//! - `timeline.at` index: the purge of those rows past retention.
//!
//! Re-runnable like the others: the table, column and indexes are created only when missing,
//! and the backfill runs only while `counters` is empty, in one statement.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use journeys_core::machine::BRANCH_DETAIL_PATH;

use super::{
    BRANCH_LEN, ID_LEN, STEP_KEY_LEN, TAG_LEN, create_index, create_table, id, string, string_null,
};
use crate::repo::CounterKind;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(
            manager,
            Table::create()
                .table(Counters::Table)
                .col(id(Counters::JourneyId))
                .col(string(Counters::StepKey, STEP_KEY_LEN))
                .col(string(Counters::Kind, TAG_LEN))
                .col(string(Counters::Branch, BRANCH_LEN))
                .col(ColumnDef::new(Counters::N).big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Counters::JourneyId)
                        .col(Counters::StepKey)
                        .col(Counters::Kind)
                        .col(Counters::Branch),
                )
                .to_owned(),
        )
        .await?;

        if !manager.has_column("timeline", "journey_id").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Timeline::Table)
                        .add_column(string_null(Timeline::JourneyId, ID_LEN))
                        .to_owned(),
                )
                .await?;
        }
        create_index(
            manager,
            "timeline",
            "idx_timeline_journey",
            Index::create()
                .table(Timeline::Table)
                .col(Timeline::JourneyId)
                .col(Timeline::InstanceId)
                .to_owned(),
        )
        .await?;
        create_index(
            manager,
            "timeline",
            "idx_timeline_at",
            Index::create()
                .table(Timeline::Table)
                .col(Timeline::At)
                .to_owned(),
        )
        .await?;
        backfill(manager).await
    }
}

/// Counts what the timeline and the instances still hold into an empty `counters`, as the
/// statistics counted them before (one statement, so an interruption leaves it empty).
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let any = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM counters",
        ))
        .await?;
    let n: i64 = match any {
        Some(row) => row.try_get("", "n")?,
        None => 0,
    };
    if n > 0 {
        return Ok(());
    }
    let branch = match backend {
        DbBackend::MySql => format!("JSON_UNQUOTE(JSON_EXTRACT(t.detail, '{BRANCH_DETAIL_PATH}'))"),
        _ => format!("CAST(json_extract(t.detail, '{BRANCH_DETAIL_PATH}') AS TEXT)"),
    };
    let branch_key = format!("SUBSTR({branch}, 1, {BRANCH_LEN})");
    let by_kind = |kind: CounterKind| {
        format!(
            "SELECT i.journey_id, t.step_key, '{k}', '', COUNT(*) FROM timeline t \
             JOIN instances i ON i.id = t.instance_id WHERE t.kind = '{k}' \
             GROUP BY i.journey_id, t.step_key",
            k = kind.as_str()
        )
    };
    let sql = format!(
        "INSERT INTO counters (journey_id, step_key, kind, branch, n) \
         {entered} UNION ALL {step} UNION ALL {send} UNION ALL \
         SELECT i.journey_id, t.step_key, '{branch_kind}', {branch_key}, COUNT(*) FROM timeline t \
         JOIN instances i ON i.id = t.instance_id \
         WHERE t.kind = '{branch_kind}' AND {branch} IS NOT NULL \
         GROUP BY i.journey_id, t.step_key, {branch_key} UNION ALL \
         SELECT journey_id, current_step, '{exited}', '', COUNT(*) FROM instances \
         WHERE state = 'EXITED' AND current_step IS NOT NULL GROUP BY journey_id, current_step",
        entered = by_kind(CounterKind::Entered),
        step = by_kind(CounterKind::Step),
        send = by_kind(CounterKind::Send),
        branch_kind = CounterKind::Branch.as_str(),
        exited = CounterKind::Exited.as_str(),
    );
    db.execute_unprepared(&sql).await?;
    Ok(())
}

#[derive(DeriveIden)]
enum Counters {
    Table,
    JourneyId,
    StepKey,
    Kind,
    Branch,
    N,
}

#[derive(DeriveIden)]
enum Timeline {
    Table,
    JourneyId,
    InstanceId,
    At,
}

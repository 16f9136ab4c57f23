//! Sharded hot rows: `journey_counters` and `event_catalog` get a `shard` column in their
//! primary key.
//!
//! Every batch of every lane adds to the same few counter rows (its journeys' steps, this hour)
//! and the same catalog rows (its event names). With one row per key, the lanes' transactions
//! queued on those row locks until the holder committed, so their commits went one after
//! another, and a slow commit (a flush, a purge) stalled every lane. A batch now writes the
//! shard of its first profile partition (`partition % 16`, distinct for the lanes of a node),
//! and readers add the shards up. Housekeeping folds the shards of past hours' counters into
//! shard 0, so the rows the statistics read stay one per key and hour.
//!
//! Each table is rebuilt (new table, rows copied into shard 0, old dropped, new renamed), which
//! works alike on both stores; SQLite cannot change a primary key in place. Re-runnable (see
//! `sharded`).

use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{
    BRANCH_LEN, KEY_LEN, STEP_KEY_LEN, TAG_LEN, create_index, create_table, id, string,
    timestamp_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        shard_counters(manager).await?;
        shard_catalog(manager).await
    }
}

async fn shard_counters(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    if !sharded(manager, "journey_counters", "journey_counters_sharded").await? {
        create_table(
            manager,
            Table::create()
                .table(JourneyCountersSharded::Table)
                .col(id(JourneyCountersSharded::JourneyId))
                .col(
                    ColumnDef::new(JourneyCountersSharded::Hour)
                        .big_integer()
                        .not_null(),
                )
                .col(string(JourneyCountersSharded::StepKey, STEP_KEY_LEN))
                .col(string(JourneyCountersSharded::Kind, TAG_LEN))
                .col(string(JourneyCountersSharded::Branch, BRANCH_LEN))
                .col(shard(JourneyCountersSharded::Shard))
                .col(
                    ColumnDef::new(JourneyCountersSharded::N)
                        .big_integer()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(JourneyCountersSharded::JourneyId)
                        .col(JourneyCountersSharded::Hour)
                        .col(JourneyCountersSharded::StepKey)
                        .col(JourneyCountersSharded::Kind)
                        .col(JourneyCountersSharded::Branch)
                        .col(JourneyCountersSharded::Shard),
                )
                .to_owned(),
        )
        .await?;
        replace(
            manager,
            "journey_counters",
            "journey_counters_sharded",
            "journey_id, hour, step_key, kind, branch, n",
        )
        .await?;
    }
    // Outside the rebuild: a run interrupted after the rename finds the index missing.
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
    Ok(())
}

async fn shard_catalog(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    if sharded(manager, "event_catalog", "event_catalog_sharded").await? {
        return Ok(());
    }
    create_table(
        manager,
        Table::create()
            .table(EventCatalogSharded::Table)
            .col(string(EventCatalogSharded::Name, KEY_LEN))
            .col(shard(EventCatalogSharded::Shard))
            .col(timestamp_null(backend, EventCatalogSharded::FirstSeen))
            .col(timestamp_null(backend, EventCatalogSharded::LastSeen))
            .col(
                ColumnDef::new(EventCatalogSharded::Count)
                    .big_integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(EventCatalogSharded::Registered)
                    .boolean()
                    .not_null(),
            )
            .primary_key(
                Index::create()
                    .col(EventCatalogSharded::Name)
                    .col(EventCatalogSharded::Shard),
            )
            .to_owned(),
    )
    .await?;
    replace(
        manager,
        "event_catalog",
        "event_catalog_sharded",
        "name, first_seen, last_seen, count, registered",
    )
    .await?;
    Ok(())
}

/// `shard SMALLINT NOT NULL DEFAULT 0`.
fn shard<T: sea_orm_migration::sea_query::IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column)
        .small_integer()
        .not_null()
        .default(0)
        .to_owned()
}

/// Whether `table` is sharded already. A run interrupted after dropping `table` is finished
/// here (`new` renamed); one interrupted earlier leaves a partial `new`, dropped here so the
/// copy starts again.
async fn sharded(manager: &SchemaManager<'_>, table: &str, new: &str) -> Result<bool, DbErr> {
    let db = manager.get_connection();
    if !manager.has_table(table).await? && manager.has_table(new).await? {
        db.execute_unprepared(&format!("ALTER TABLE {new} RENAME TO {table}"))
            .await?;
    }
    if manager.has_column(table, "shard").await? {
        return Ok(true);
    }
    db.execute_unprepared(&format!("DROP TABLE IF EXISTS {new}"))
        .await?;
    Ok(false)
}

/// Copies `columns` of every row of `old` into `new` (shard 0), drops `old` and renames `new`
/// to `old`.
async fn replace(
    manager: &SchemaManager<'_>,
    old: &str,
    new: &str,
    columns: &str,
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    db.execute_unprepared(&format!(
        "INSERT INTO {new} ({columns}, shard) SELECT {columns}, 0 FROM {old}"
    ))
    .await?;
    db.execute_unprepared(&format!("DROP TABLE {old}")).await?;
    db.execute_unprepared(&format!("ALTER TABLE {new} RENAME TO {old}"))
        .await?;
    Ok(())
}

#[derive(DeriveIden)]
enum JourneyCountersSharded {
    Table,
    JourneyId,
    Hour,
    StepKey,
    Kind,
    Branch,
    Shard,
    N,
}

#[derive(DeriveIden)]
enum JourneyCounters {
    Table,
    Branch,
    Kind,
    Hour,
}

#[derive(DeriveIden)]
enum EventCatalogSharded {
    Table,
    Name,
    Shard,
    FirstSeen,
    LastSeen,
    Count,
    Registered,
}

//! `timers.partition_id`: the profile partition of each timer (SCALE-OUT.md §3, §5), so an
//! owner claims only the timers of the partitions it holds (`partition_id IN (…)`, by the
//! `(partition_id, due_at)` index). Timers written before this migration have none and may be
//! claimed by any node; the engine hands them to their partition's owner.
//!
//! Re-runnable: the column and the index are added only when missing.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::create_index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("timers", "partition_id").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Timers::Table)
                        .add_column(ColumnDef::new(Timers::PartitionId).integer().null())
                        .to_owned(),
                )
                .await?;
        }
        create_index(
            manager,
            "timers",
            "idx_timers_partition_due",
            Index::create()
                .table(Timers::Table)
                .col(Timers::PartitionId)
                .col(Timers::DueAt)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden)]
enum Timers {
    Table,
    PartitionId,
    DueAt,
}

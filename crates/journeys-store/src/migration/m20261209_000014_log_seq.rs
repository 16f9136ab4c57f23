//! `partition_state.log_seq`: where an owner reading the NATS partition log resumes (the stream
//! sequence of the last entry it committed), apart from `last_seq`, which counts commits. Kept
//! apart so that a store that ran without the log (its `last_seq` counting thousands of commits)
//! can start using one: its owners then read the new stream from the start instead of skipping
//! as many entries as they had made commits.
//!
//! Re-runnable: the column is added only when missing.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("partition_state", "log_seq").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(PartitionState::Table)
                    .add_column(
                        ColumnDef::new(PartitionState::LogSeq)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum PartitionState {
    Table,
    LogSeq,
}

//! `partition_nodes.lease_until`: the lease moves from each partition row to the node. An owner
//! renews one row per round (its own) instead of every partition it holds, and the renewal no
//! longer writes the `partition_state` rows that every batch commit locks for its epoch fence:
//! before, a renewal of all of a node's partitions waited behind every lane's open commit and
//! the lanes' next fences queued behind it. A partition is held while its `owner`'s node lease
//! has not run out (times in microseconds on the database's clock, like the others).
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
        if manager.has_column("partition_nodes", "lease_until").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(PartitionNodes::Table)
                    .add_column(
                        ColumnDef::new(PartitionNodes::LeaseUntil)
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
enum PartitionNodes {
    Table,
    LeaseUntil,
}

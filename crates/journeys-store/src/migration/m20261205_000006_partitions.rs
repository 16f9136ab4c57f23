//! `partition_state` and `partition_nodes` (SCALE-OUT.md §1): one row per profile partition
//! with its owner, epoch, lease and commit sequence; one heartbeat row per node that may own
//! partitions. Times are microseconds since the Unix epoch read from the database's clock
//! (never a host clock), so leases compare on one clock whichever node wrote them.
//!
//! The column is `partition_id`, not `partition`: `PARTITION` is a reserved word in MySQL.
//!
//! Idempotent like the others (`IF NOT EXISTS`).

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{create_table, string};

/// Node ids: host names, pod names or UUIDs.
const NODE_ID_LEN: u32 = 128;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(
            manager,
            Table::create()
                .table(PartitionState::Table)
                .col(
                    ColumnDef::new(PartitionState::PartitionId)
                        .integer()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(PartitionState::Owner)
                        .string_len(NODE_ID_LEN)
                        .null(),
                )
                .col(counter(PartitionState::Epoch))
                .col(counter(PartitionState::LeaseUntil))
                .col(counter(PartitionState::LastSeq))
                .col(counter(PartitionState::CommittedAt))
                .to_owned(),
        )
        .await?;
        create_table(
            manager,
            Table::create()
                .table(PartitionNodes::Table)
                .col(string(PartitionNodes::NodeId, NODE_ID_LEN).primary_key())
                .col(counter(PartitionNodes::HeartbeatAt))
                .to_owned(),
        )
        .await
    }
}

/// `bigint not null default 0`.
fn counter<T: sea_orm_migration::sea_query::IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

#[derive(DeriveIden)]
enum PartitionState {
    Table,
    PartitionId,
    Owner,
    Epoch,
    LeaseUntil,
    LastSeq,
    CommittedAt,
}

#[derive(DeriveIden)]
enum PartitionNodes {
    Table,
    NodeId,
    HeartbeatAt,
}

//! `outbox.claimed_by` and `outbox_claimants`: an outbox claim names the dispatcher that made
//! it, and each running dispatcher keeps a short lease (microseconds on the database's clock,
//! like the partition leases). A claim whose claimant's lease ran out, or whose claimant row is
//! gone, can be taken again at once instead of after the claim's own (minutes-long) lease: a
//! killed process's queued sends go out within seconds.
//!
//! Re-runnable: the column is added only when missing, the table `IF NOT EXISTS`.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{ID_LEN, create_table, id, string};

/// Node ids, as in `partition_nodes`.
const NODE_ID_LEN: u32 = 128;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("outbox", "claimed_by").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .add_column(ColumnDef::new(Outbox::ClaimedBy).string_len(ID_LEN).null())
                        .to_owned(),
                )
                .await?;
        }
        create_table(
            manager,
            Table::create()
                .table(OutboxClaimants::Table)
                .col(id(OutboxClaimants::ClaimantId).primary_key())
                .col(string(OutboxClaimants::NodeId, NODE_ID_LEN))
                .col(
                    ColumnDef::new(OutboxClaimants::LeaseUntil)
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
enum Outbox {
    Table,
    ClaimedBy,
}

#[derive(DeriveIden)]
enum OutboxClaimants {
    Table,
    ClaimantId,
    NodeId,
    LeaseUntil,
}

//! `watermarks`: one heartbeat row per data-plane replica with its fairness watermark (the
//! receive time of its oldest uncommitted event, or now when idle). The scheduler takes the
//! minimum over rows whose heartbeat is recent (SPEC §7, hold-until fairness across processes).
//!
//! Idempotent like the others (`IF NOT EXISTS`).

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::Table;
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{create_table, string, timestamp};

/// Replica ids are UUIDs (36 characters); room for other schemes.
const REPLICA_ID_LEN: u32 = 64;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    #[allow(clippy::too_many_lines)] // a shipped migration is never edited (see the module docs)
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_database_backend();
        create_table(
            manager,
            Table::create()
                .table(Watermarks::Table)
                .col(string(Watermarks::ReplicaId, REPLICA_ID_LEN).primary_key())
                .col(timestamp(db, Watermarks::Watermark))
                .col(timestamp(db, Watermarks::HeartbeatAt))
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden)]
enum Watermarks {
    Table,
    ReplicaId,
    Watermark,
    HeartbeatAt,
}

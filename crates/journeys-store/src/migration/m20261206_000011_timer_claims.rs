//! `idx_timers_claim_due` on `timers (claimed_until, due_at)`: a claim reads the free timers
//! (`claimed_until IS NULL`) in due order straight from this index, then the few whose claim
//! lapsed, instead of scanning the due-time index through every timer claimed and not yet
//! fired (see `Timers::claim_due_in`).
//!
//! Re-runnable: the index is created only when missing.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::Index;
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::create_index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_index(
            manager,
            "timers",
            "idx_timers_claim_due",
            Index::create()
                .table(Timers::Table)
                .col(Timers::ClaimedUntil)
                .col(Timers::DueAt)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden)]
enum Timers {
    Table,
    ClaimedUntil,
    DueAt,
}

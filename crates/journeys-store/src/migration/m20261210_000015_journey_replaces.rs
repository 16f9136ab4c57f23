//! `journeys.replaces` and `journeys.replace_excludes_active`: a journey published to replace
//! another names it (the replaced one was archived in the same transaction), and whether a
//! profile with an instance still active in the replaced journey is kept from entering.
//!
//! Re-runnable: each column is added only when missing.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{ID_LEN, string_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("journeys", "replaces").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Journeys::Table)
                        .add_column(string_null(Journeys::Replaces, ID_LEN))
                        .to_owned(),
                )
                .await?;
        }
        if !manager
            .has_column("journeys", "replace_excludes_active")
            .await?
        {
            manager
                .alter_table(
                    Table::alter()
                        .table(Journeys::Table)
                        .add_column(
                            ColumnDef::new(Journeys::ReplaceExcludesActive)
                                .boolean()
                                .not_null()
                                .default(false),
                        )
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Journeys {
    Table,
    Replaces,
    ReplaceExcludesActive,
}

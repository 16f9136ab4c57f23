//! Profile deletion (`ProfileService/DeleteProfile`):
//!
//! - `profiles.deleted_at` and `profiles.suppressed`: a deleted profile's row stays as its
//!   tombstone, with no traits. Events sent before the deletion (in flight when it ran) are
//!   dropped; with `suppressed`, every later event of the id too.
//! - `idx_outbox_profile` and `idx_timeline_profile`: the deletion removes the profile's sends
//!   and timeline rows by profile, without scanning (and locking) those tables.
//!
//! Re-runnable: each column and index is added only when missing.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{create_index, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        if !manager.has_column("profiles", "deleted_at").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Profiles::Table)
                        .add_column(timestamp_null(backend, Profiles::DeletedAt))
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_column("profiles", "suppressed").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Profiles::Table)
                        .add_column(
                            ColumnDef::new(Profiles::Suppressed)
                                .boolean()
                                .not_null()
                                .default(false),
                        )
                        .to_owned(),
                )
                .await?;
        }
        create_index(
            manager,
            "outbox",
            "idx_outbox_profile",
            Index::create()
                .table(Outbox::Table)
                .col(Outbox::ProfileId)
                .to_owned(),
        )
        .await?;
        create_index(
            manager,
            "timeline",
            "idx_timeline_profile",
            Index::create()
                .table(Timeline::Table)
                .col(Timeline::ProfileId)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden)]
enum Profiles {
    Table,
    DeletedAt,
    Suppressed,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    ProfileId,
}

#[derive(DeriveIden)]
enum Timeline {
    Table,
    ProfileId,
}

//! `instances.unique_value` becomes unbounded text. It held 191 characters (an indexed key's
//! width), but the column is not indexed (lookups go through `active_key`, which hashes values
//! that do not fit) and the longest value admitted is an operator setting: 500 characters by
//! default, as Segment allows. On MySQL/MariaDB a longer value failed the commit; SQLite does
//! not enforce `varchar` lengths, so nothing changes there.
//!
//! Re-runnable: `MODIFY` to the same type changes nothing. The column keeps the table's exact
//! (NO PAD binary) collation.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::DeriveMigrationName;
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::exact_collation;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        let collation = exact_collation(manager).await?;
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "ALTER TABLE `instances` MODIFY `unique_value` TEXT \
                 CHARACTER SET utf8mb4 COLLATE {collation} NULL"
            ))
            .await?;
        Ok(())
    }
}

//! Exact comparison of text on MySQL and MariaDB: every table moves from `utf8mb4_bin` (a PAD
//! SPACE collation, which compares `"u1"` and `"u1 "` as equal) to the server's NO PAD binary
//! collation, so that ids, keys and message ids compare exactly as they do in Rust and on
//! SQLite. Without it an `identify` for `"u1 "` replaced the traits of `u1`, and a `messageId`
//! with a trailing space collided with the one without.
//!
//! Re-runnable: converting a table that already has the collation changes nothing.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
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
        let db = manager.get_connection();
        let tables = db
            .query_all_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT table_name AS name FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' \
                 AND table_name <> 'seaql_migrations'",
            ))
            .await?;
        for row in tables {
            let table: String = row.try_get("", "name")?;
            db.execute_unprepared(&format!(
                "ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}"
            ))
            .await?;
        }
        Ok(())
    }
}

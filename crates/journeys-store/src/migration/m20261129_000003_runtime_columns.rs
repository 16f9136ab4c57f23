//! Columns and indexes the runtime's write, claim and housekeeping queries need: delivery
//! details and claim leases on `outbox`, the active-instance key and age limit on `instances`,
//! the journey on `timers`.
//!
//! Idempotent like the others: each column and index is added only when missing, so a
//! migration interrupted halfway (MySQL cannot roll back DDL) completes on the next start.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, IntoIden, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{KEY_LEN, create_index, id, string, string_null, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    #[allow(clippy::too_many_lines)] // a shipped migration is never edited (see the module docs)
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_database_backend();

        // outbox. Columns added to existing rows need a default on SQLite; MySQL refuses a
        // literal default on TEXT, and fills existing rows with '' by itself.
        let mut path = ColumnDef::new(Outbox::Path);
        path.text().not_null();
        if db == DbBackend::Sqlite {
            path.default("");
        }
        add_column(
            manager,
            Outbox::Table,
            "outbox",
            "method",
            string(Outbox::Method, 16).default("POST").to_owned(),
        )
        .await?;
        add_column(manager, Outbox::Table, "outbox", "path", path).await?;
        add_column(
            manager,
            Outbox::Table,
            "outbox",
            "claimed_until",
            timestamp_null(db, Outbox::ClaimedUntil),
        )
        .await?;
        add_column(
            manager,
            Outbox::Table,
            "outbox",
            "traceparent",
            string_null(Outbox::Traceparent, 64),
        )
        .await?;
        add_column(
            manager,
            Outbox::Table,
            "outbox",
            "sent_at",
            timestamp_null(db, Outbox::SentAt),
        )
        .await?;
        add_column(
            manager,
            Outbox::Table,
            "outbox",
            "dead_at",
            timestamp_null(db, Outbox::DeadAt),
        )
        .await?;
        // Claiming due rows (created by migration 000002; kept here in case it is missing).
        create_index(
            manager,
            "outbox",
            "idx_outbox_status_next",
            Index::create()
                .table(Outbox::Table)
                .col(Outbox::Status)
                .col(Outbox::NextAttemptAt)
                .to_owned(),
        )
        .await?;
        // Journey statistics: sends of one journey by step.
        create_index(
            manager,
            "outbox",
            "idx_outbox_journey_step",
            Index::create()
                .table(Outbox::Table)
                .col(Outbox::JourneyId)
                .col(Outbox::StepKey)
                .to_owned(),
        )
        .await?;

        // instances
        add_column(
            manager,
            Instances::Table,
            "instances",
            "active_key",
            string_null(Instances::ActiveKey, KEY_LEN),
        )
        .await?;
        add_column(
            manager,
            Instances::Table,
            "instances",
            "expires_at",
            timestamp_null(db, Instances::ExpiresAt),
        )
        .await?;
        // Nullable in the schema (a column added to existing rows cannot portably be NOT NULL);
        // rows that predate it get entered_at + 365 days, in each backend's timestamp format.
        let backfill = match db {
            DbBackend::MySql => {
                "UPDATE instances SET expires_at = DATE_ADD(entered_at, INTERVAL 365 DAY) \
                 WHERE expires_at IS NULL"
            }
            _ => {
                "UPDATE instances SET expires_at = \
                 strftime('%Y-%m-%dT%H:%M:%f+00:00', entered_at, '+365 days') \
                 WHERE expires_at IS NULL"
            }
        };
        manager
            .get_connection()
            .execute_unprepared(backfill)
            .await?;
        // NULLs do not collide, so only active instances of re-entry journeys take part.
        create_index(
            manager,
            "instances",
            "uq_instances_active_key",
            Index::create()
                .unique()
                .table(Instances::Table)
                .col(Instances::ActiveKey)
                .to_owned(),
        )
        .await?;
        // Purging finished instances.
        create_index(
            manager,
            "instances",
            "idx_instances_state_ended",
            Index::create()
                .table(Instances::Table)
                .col(Instances::State)
                .col(Instances::EndedAt)
                .to_owned(),
        )
        .await?;
        // Ending instances past their age limit.
        create_index(
            manager,
            "instances",
            "idx_instances_state_expires",
            Index::create()
                .table(Instances::Table)
                .col(Instances::State)
                .col(Instances::ExpiresAt)
                .to_owned(),
        )
        .await?;
        // Journey statistics and archive-with-exit: instances of one journey by state and step.
        create_index(
            manager,
            "instances",
            "idx_instances_journey_state",
            Index::create()
                .table(Instances::Table)
                .col(Instances::JourneyId)
                .col(Instances::State)
                .col(Instances::CurrentStep)
                .to_owned(),
        )
        .await?;

        // timers
        add_column(
            manager,
            Timers::Table,
            "timers",
            "journey_id",
            id(Timers::JourneyId).default("").to_owned(),
        )
        .await?;
        create_index(
            manager,
            "timers",
            "idx_timers_due_at",
            Index::create()
                .table(Timers::Table)
                .col(Timers::DueAt)
                .to_owned(),
        )
        .await?;

        // dedupe (created by migration 000002; kept here in case it is missing)
        create_index(
            manager,
            "dedupe",
            "idx_dedupe_seen_at",
            Index::create()
                .table(Dedupe::Table)
                .col(Dedupe::SeenAt)
                .to_owned(),
        )
        .await?;

        // enter_once: loading a profile's entries (the primary key leads with the journey).
        create_index(
            manager,
            "enter_once",
            "idx_enter_once_profile",
            Index::create()
                .table(EnterOnce::Table)
                .col(EnterOnce::ProfileId)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// Adds `column` to `table` unless a column named `name` exists. One column per statement:
/// SQLite's `ALTER TABLE` adds only one at a time.
async fn add_column<T: IntoIden>(
    manager: &SchemaManager<'_>,
    table: T,
    table_name: &str,
    name: &str,
    mut column: ColumnDef,
) -> Result<(), DbErr> {
    if manager.has_column(table_name, name).await? {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(table)
                .add_column(&mut column)
                .to_owned(),
        )
        .await
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    JourneyId,
    StepKey,
    Status,
    NextAttemptAt,
    Method,
    Path,
    ClaimedUntil,
    Traceparent,
    SentAt,
    DeadAt,
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    JourneyId,
    State,
    CurrentStep,
    EndedAt,
    ActiveKey,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Timers {
    Table,
    DueAt,
    JourneyId,
}

#[derive(DeriveIden)]
enum Dedupe {
    Table,
    SeenAt,
}

#[derive(DeriveIden)]
enum EnterOnce {
    Table,
    ProfileId,
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, SubsecRound, Utc};
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    use sea_orm_migration::MigratorTrait;
    use serde_json::json;

    use crate::migration::Migrator;
    use crate::store::Store;

    /// Instances written before this migration get `expires_at` = `entered_at` + 365 days, in
    /// a format the store reads back and compares correctly.
    #[tokio::test]
    async fn backfills_expiry_of_existing_instances() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        Migrator::up(store.connection(), Some(2)).await.unwrap();
        // Milliseconds, never .000: the backfill prints three fraction digits, and a time
        // without a fraction is written without them, so the two would not compare as text.
        let entered = Utc::now().trunc_subsecs(0) + Duration::milliseconds(123);
        store
            .connection()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO instances (id, journey_id, journey_revision, profile_id, state, \
                 context, state_blob, passes, version, entered_at, updated_at) \
                 VALUES ('i1', 'j1', 1, 'u1', 'ACTIVE', '{}', '{}', 0, 1, ?, ?)",
                [entered.into(), entered.into()],
            ))
            .await
            .unwrap();
        store.migrate().await.unwrap();

        let expires = entered + Duration::days(365);
        let detail = store.instances().get("i1").await.unwrap();
        assert_eq!(detail.instance.expires_at, expires);
        assert_eq!(detail.instance.active_key, None);
        let runtime = store.batches();
        assert!(
            runtime
                .expired_active_instances(expires - Duration::milliseconds(1), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            runtime.expired_active_instances(expires, 10).await.unwrap()[0].id,
            "i1"
        );
        assert_eq!(detail.instance.context, json!({}));
    }
}

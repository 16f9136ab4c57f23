//! Runtime tables: journey instances and everything that hangs off them (timeline, timers,
//! outbox), plus entry bookkeeping and ingestion dedupe.
//!
//! Every per-profile table carries `profile_id` so the schema can be sharded by profile.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{
    KEY_LEN, STEP_KEY_LEN, TAG_LEN, create_index, create_table, id, json, string, string_null,
    timestamp, timestamp_null,
};

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
                .table(Instances::Table)
                .col(id(Instances::Id).primary_key())
                .col(id(Instances::JourneyId))
                .col(
                    ColumnDef::new(Instances::JourneyRevision)
                        .big_integer()
                        .not_null(),
                )
                .col(string(Instances::ProfileId, KEY_LEN))
                .col(string_null(Instances::UniqueValue, KEY_LEN))
                .col(string(Instances::State, TAG_LEN))
                .col(string_null(Instances::CurrentStep, STEP_KEY_LEN))
                .col(string_null(Instances::WaitingEvent, KEY_LEN))
                .col(json(Instances::Context))
                .col(json(Instances::StateBlob))
                .col(ColumnDef::new(Instances::Passes).integer().not_null())
                .col(ColumnDef::new(Instances::Version).big_integer().not_null())
                .col(timestamp(db, Instances::EnteredAt))
                .col(timestamp(db, Instances::UpdatedAt))
                .col(timestamp_null(db, Instances::EndedAt))
                .to_owned(),
        )
        .await?;
        // Hold-until matching: the waiting instances of one profile for one event name.
        create_index(
            manager,
            "instances",
            "idx_instances_waiting",
            Index::create()
                .table(Instances::Table)
                .col(Instances::JourneyId)
                .col(Instances::ProfileId)
                .col(Instances::WaitingEvent)
                .to_owned(),
        )
        .await?;
        // Per-profile limits and exit rules: the active instances of one profile.
        create_index(
            manager,
            "instances",
            "idx_instances_profile_state",
            Index::create()
                .table(Instances::Table)
                .col(Instances::ProfileId)
                .col(Instances::State)
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Timeline::Table)
                .col(
                    ColumnDef::new(Timeline::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(id(Timeline::InstanceId))
                .col(string(Timeline::ProfileId, KEY_LEN))
                .col(timestamp(db, Timeline::At))
                .col(string(Timeline::StepKey, STEP_KEY_LEN))
                .col(string(Timeline::Kind, TAG_LEN))
                .col(string(Timeline::Cause, KEY_LEN))
                .col(json(Timeline::Detail))
                .to_owned(),
        )
        .await?;
        create_index(
            manager,
            "timeline",
            "idx_timeline_instance",
            Index::create()
                .table(Timeline::Table)
                .col(Timeline::InstanceId)
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(EnterOnce::Table)
                .col(id(EnterOnce::JourneyId))
                .col(string(EnterOnce::ProfileId, KEY_LEN))
                .col(timestamp(db, EnterOnce::EnteredAt))
                .primary_key(
                    Index::create()
                        .name("pk_enter_once")
                        .col(EnterOnce::JourneyId)
                        .col(EnterOnce::ProfileId),
                )
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Timers::Table)
                .col(id(Timers::Id).primary_key())
                .col(id(Timers::InstanceId))
                .col(string(Timers::ProfileId, KEY_LEN))
                .col(timestamp(db, Timers::DueAt))
                .col(string(Timers::Kind, TAG_LEN))
                .col(string(Timers::StepKey, STEP_KEY_LEN))
                .col(timestamp_null(db, Timers::ClaimedUntil))
                .to_owned(),
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
        // Cancelling an instance's timers (exit, branch taken) reads by instance.
        create_index(
            manager,
            "timers",
            "idx_timers_instance",
            Index::create()
                .table(Timers::Table)
                .col(Timers::InstanceId)
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Outbox::Table)
                .col(id(Outbox::Id).primary_key())
                .col(id(Outbox::InstanceId))
                .col(string(Outbox::ProfileId, KEY_LEN))
                .col(id(Outbox::JourneyId))
                .col(string(Outbox::StepKey, STEP_KEY_LEN))
                .col(id(Outbox::DestinationId))
                .col(string(Outbox::MessageId, KEY_LEN))
                .col(json(Outbox::Payload))
                .col(string(Outbox::Status, TAG_LEN))
                .col(ColumnDef::new(Outbox::Attempts).integer().not_null())
                .col(timestamp(db, Outbox::NextAttemptAt))
                .col(ColumnDef::new(Outbox::LastError).text().null())
                .col(timestamp(db, Outbox::CreatedAt))
                .to_owned(),
        )
        .await?;
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

        create_table(
            manager,
            Table::create()
                .table(Dedupe::Table)
                .col(string(Dedupe::MessageId, KEY_LEN).primary_key())
                .col(timestamp(db, Dedupe::SeenAt))
                .to_owned(),
        )
        .await?;
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
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    JourneyId,
    JourneyRevision,
    ProfileId,
    UniqueValue,
    State,
    CurrentStep,
    WaitingEvent,
    Context,
    StateBlob,
    Passes,
    Version,
    EnteredAt,
    UpdatedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum Timeline {
    Table,
    Id,
    InstanceId,
    ProfileId,
    At,
    StepKey,
    Kind,
    Cause,
    Detail,
}

#[derive(DeriveIden)]
enum EnterOnce {
    Table,
    JourneyId,
    ProfileId,
    EnteredAt,
}

#[derive(DeriveIden)]
enum Timers {
    Table,
    Id,
    InstanceId,
    ProfileId,
    DueAt,
    Kind,
    StepKey,
    ClaimedUntil,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    InstanceId,
    ProfileId,
    JourneyId,
    StepKey,
    DestinationId,
    MessageId,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Dedupe {
    Table,
    MessageId,
    SeenAt,
}

//! Catalog tables: what operators configure (journeys, destinations, sources, audiences) and what
//! ingestion learns (profiles, the event catalog).

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{
    KEY_LEN, TAG_LEN, create_index, create_table, id, json, string, text, timestamp, timestamp_null,
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
                .table(Journeys::Table)
                .col(id(Journeys::Id).primary_key())
                .col(string(Journeys::Name, KEY_LEN))
                .col(text(Journeys::Description))
                .col(string(Journeys::State, TAG_LEN))
                .col(ColumnDef::new(Journeys::Revision).big_integer().not_null())
                .col(json(Journeys::Definition))
                .col(timestamp(db, Journeys::CreatedAt))
                .col(timestamp(db, Journeys::UpdatedAt))
                .col(timestamp_null(db, Journeys::PublishedAt))
                .col(timestamp_null(db, Journeys::ArchivedAt))
                .index(
                    Index::create()
                        .unique()
                        .name("uq_journeys_name")
                        .col(Journeys::Name),
                )
                .to_owned(),
        )
        .await?;
        create_index(
            manager,
            "journeys",
            "idx_journeys_state",
            Index::create()
                .table(Journeys::Table)
                .col(Journeys::State)
                .col(Journeys::Id)
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Destinations::Table)
                .col(id(Destinations::Id).primary_key())
                .col(string(Destinations::Name, KEY_LEN))
                .col(string(Destinations::Kind, TAG_LEN))
                .col(json(Destinations::Settings))
                .col(timestamp(db, Destinations::CreatedAt))
                .col(timestamp(db, Destinations::UpdatedAt))
                .index(
                    Index::create()
                        .unique()
                        .name("uq_destinations_name")
                        .col(Destinations::Name),
                )
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Sources::Table)
                .col(id(Sources::Id).primary_key())
                .col(string(Sources::Name, KEY_LEN))
                .col(ColumnDef::new(Sources::KeyHash).char_len(64).not_null())
                .col(string(Sources::KeyPrefix, 16))
                .col(timestamp(db, Sources::CreatedAt))
                .col(timestamp_null(db, Sources::RevokedAt))
                .index(
                    Index::create()
                        .unique()
                        .name("uq_sources_key_hash")
                        .col(Sources::KeyHash),
                )
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Audiences::Table)
                .col(string(Audiences::Key, KEY_LEN).primary_key())
                .col(string(Audiences::Name, KEY_LEN))
                .col(ColumnDef::new(Audiences::Active).boolean().not_null())
                .col(timestamp(db, Audiences::CreatedAt))
                .col(timestamp_null(db, Audiences::ArchivedAt))
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(AudienceMembers::Table)
                .col(string(AudienceMembers::AudienceKey, KEY_LEN))
                .col(string(AudienceMembers::UserId, KEY_LEN))
                .col(timestamp(db, AudienceMembers::AddedAt))
                .primary_key(
                    Index::create()
                        .name("pk_audience_members")
                        .col(AudienceMembers::AudienceKey)
                        .col(AudienceMembers::UserId),
                )
                .to_owned(),
        )
        .await?;
        // `audiences_of(user)` reads by user; the primary key serves reads by audience.
        create_index(
            manager,
            "audience_members",
            "idx_audience_members_user",
            Index::create()
                .table(AudienceMembers::Table)
                .col(AudienceMembers::UserId)
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Profiles::Table)
                .col(string(Profiles::UserId, KEY_LEN).primary_key())
                .col(json(Profiles::Traits))
                .col(timestamp(db, Profiles::CreatedAt))
                .col(timestamp(db, Profiles::UpdatedAt))
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(EventCatalog::Table)
                .col(string(EventCatalog::Name, KEY_LEN).primary_key())
                .col(timestamp_null(db, EventCatalog::FirstSeen))
                .col(timestamp_null(db, EventCatalog::LastSeen))
                .col(ColumnDef::new(EventCatalog::Count).big_integer().not_null())
                .col(
                    ColumnDef::new(EventCatalog::Registered)
                        .boolean()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Journeys {
    Table,
    Id,
    Name,
    Description,
    State,
    Revision,
    Definition,
    CreatedAt,
    UpdatedAt,
    PublishedAt,
    ArchivedAt,
}

#[derive(DeriveIden)]
enum Destinations {
    Table,
    Id,
    Name,
    Kind,
    Settings,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Sources {
    Table,
    Id,
    Name,
    KeyHash,
    KeyPrefix,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Audiences {
    Table,
    Key,
    Name,
    Active,
    CreatedAt,
    ArchivedAt,
}

#[derive(DeriveIden)]
enum AudienceMembers {
    Table,
    AudienceKey,
    UserId,
    AddedAt,
}

#[derive(DeriveIden)]
enum Profiles {
    Table,
    UserId,
    Traits,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum EventCatalog {
    Table,
    Name,
    FirstSeen,
    LastSeen,
    Count,
    Registered,
}

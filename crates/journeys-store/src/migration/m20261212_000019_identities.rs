//! Identity resolution: a profile is a set of linked identities.
//!
//! - `identities` `(identity PK, profile_id, linked_at, merged_at)`: an id (an `anonymousId`,
//!   or the `previousId` of an `alias`) linked to the profile it now belongs to. The row is the
//!   redirect: events and timers still reaching the id go to `profile_id`. `merged_at` is null
//!   while the linked profile's state (traits, memberships, enter-once records, instances and
//!   their timers) waits to be moved into `profile_id` by the owner of that profile's partition:
//!   a row with `merged_at` null is the durable pending merge.
//! - `identity_refusals` `(identity, refused_profile_id) -> profile_id, refused_at, refusals`:
//!   links that were not made because the id already belongs to another profile (visible in
//!   `GetProfile` of either profile).
//!
//! Re-runnable: each table and index is created only when missing.

use sea_orm_migration::prelude::{DeriveIden, DeriveMigrationName};
use sea_orm_migration::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{DbErr, MigrationTrait, SchemaManager};

use super::{KEY_LEN, create_index, create_table, string, timestamp, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        create_table(
            manager,
            Table::create()
                .table(Identities::Table)
                .col(string(Identities::Identity, KEY_LEN).primary_key())
                .col(string(Identities::ProfileId, KEY_LEN))
                .col(timestamp(backend, Identities::LinkedAt))
                .col(timestamp_null(backend, Identities::MergedAt))
                .to_owned(),
        )
        .await?;
        create_index(
            manager,
            "identities",
            "idx_identities_profile",
            Index::create()
                .table(Identities::Table)
                .col(Identities::ProfileId)
                .to_owned(),
        )
        .await?;
        create_table(
            manager,
            Table::create()
                .table(IdentityRefusals::Table)
                .col(string(IdentityRefusals::Identity, KEY_LEN))
                .col(string(IdentityRefusals::RefusedProfileId, KEY_LEN))
                .col(string(IdentityRefusals::ProfileId, KEY_LEN))
                .col(timestamp(backend, IdentityRefusals::RefusedAt))
                .col(
                    ColumnDef::new(IdentityRefusals::Refusals)
                        .big_integer()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(IdentityRefusals::Identity)
                        .col(IdentityRefusals::RefusedProfileId),
                )
                .to_owned(),
        )
        .await?;
        create_index(
            manager,
            "identity_refusals",
            "idx_identity_refusals_refused",
            Index::create()
                .table(IdentityRefusals::Table)
                .col(IdentityRefusals::RefusedProfileId)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden)]
enum Identities {
    Table,
    Identity,
    ProfileId,
    LinkedAt,
    MergedAt,
}

#[derive(DeriveIden)]
enum IdentityRefusals {
    Table,
    Identity,
    RefusedProfileId,
    ProfileId,
    RefusedAt,
    Refusals,
}

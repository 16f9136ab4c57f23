//! Schema migrations, applied in file-name order by [`Migrator`].
//!
//! Rules for new migrations: never edit a migration that has shipped; add a new
//! `mYYYYMMDD_NNNNNN_<what>.rs`. Statements are written to be re-runnable (`IF NOT EXISTS`,
//! index existence checks) because MySQL cannot roll back DDL: a migration that failed halfway
//! must succeed when run again.

mod m20261129_000001_create_catalog_tables;
mod m20261129_000002_create_runtime_tables;
mod m20261129_000003_runtime_columns;
mod m20261129_000004_watermarks;
mod m20261204_000005_exact_collation;
mod m20261205_000006_partitions;
mod m20261205_000007_counters;
mod m20261205_000009_timer_partitions;
mod m20261206_000010_node_leases;
mod m20261206_000011_timer_claims;
mod m20261207_000012_outbox_claimants;
mod m20261208_000013_unique_value_text;
mod m20261209_000014_log_seq;
mod m20261210_000015_journey_replaces;
mod m20261210_000016_profile_deletion;
mod m20261211_000018_hourly_counters;
mod m20261212_000019_identities;
mod m20261213_000020_counter_shards;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::sea_query::{
    Alias, ColumnDef, IndexCreateStatement, IntoIden, TableCreateStatement,
};
use sea_orm_migration::{DbErr, MigrationTrait, MigratorTrait, SchemaManager};

/// All migrations of the journeys schema.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_catalog_tables::Migration),
            Box::new(m20261129_000002_create_runtime_tables::Migration),
            Box::new(m20261129_000003_runtime_columns::Migration),
            Box::new(m20261129_000004_watermarks::Migration),
            Box::new(m20261204_000005_exact_collation::Migration),
            Box::new(m20261205_000006_partitions::Migration),
            Box::new(m20261205_000009_timer_partitions::Migration),
            Box::new(m20261205_000007_counters::Migration),
            Box::new(m20261206_000010_node_leases::Migration),
            Box::new(m20261206_000011_timer_claims::Migration),
            Box::new(m20261207_000012_outbox_claimants::Migration),
            Box::new(m20261208_000013_unique_value_text::Migration),
            Box::new(m20261209_000014_log_seq::Migration),
            Box::new(m20261210_000015_journey_replaces::Migration),
            Box::new(m20261210_000016_profile_deletion::Migration),
            Box::new(m20261211_000018_hourly_counters::Migration),
            Box::new(m20261212_000019_identities::Migration),
            Box::new(m20261213_000020_counter_shards::Migration),
        ]
    }
}

/// Length of the text ids (`UUIDv7` in hyphenated form).
pub(crate) const ID_LEN: u32 = 36;
/// Longest indexable key: 191 `utf8mb4` characters fit MySQL's 767-byte index prefix limit
/// (published as [`crate::MAX_KEY_CHARS`]).
pub(crate) const KEY_LEN: u32 = 191;
/// Step keys are `[a-z0-9_]{1,64}`.
pub(crate) const STEP_KEY_LEN: u32 = 64;
/// Branch names as counter keys hold them; longer names are cut (see `CounterKey::branch`).
pub(crate) const BRANCH_LEN: u32 = 128;
/// Short enum-like strings (`state`, `kind`, `status`).
pub(crate) const TAG_LEN: u32 = 32;

/// Creates `table` unless it exists, with the table options every table shares.
///
/// On MySQL, tables use the server's NO PAD binary collation ([`exact_collation`]) so that
/// names and keys compare byte-wise, exactly as on SQLite and in Rust; the server's default
/// (case-insensitive) collation would make `Signup` and `signup` collide, and `utf8mb4_bin`
/// (PAD SPACE) would make `u1` and `u1 ` collide.
pub(crate) async fn create_table(
    manager: &SchemaManager<'_>,
    mut table: TableCreateStatement,
) -> Result<(), DbErr> {
    table.if_not_exists();
    if manager.get_database_backend() == DbBackend::MySql {
        table
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate(exact_collation(manager).await?);
    }
    manager.create_table(table).await
}

/// The binary `utf8mb4` collation that compares trailing spaces: `utf8mb4_nopad_bin` on MariaDB,
/// `utf8mb4_0900_bin` on MySQL 8 (both NO PAD).
pub(crate) async fn exact_collation(manager: &SchemaManager<'_>) -> Result<&'static str, DbErr> {
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT VERSION() AS version",
        ))
        .await?;
    let version: String = match row {
        Some(row) => row.try_get("", "version")?,
        None => String::new(),
    };
    Ok(if version.to_ascii_lowercase().contains("mariadb") {
        "utf8mb4_nopad_bin"
    } else {
        "utf8mb4_0900_bin"
    })
}

/// Creates a (non-unique) index unless one of that name exists.
///
/// MySQL 8 has no `CREATE INDEX IF NOT EXISTS`, so existence is checked first.
pub(crate) async fn create_index(
    manager: &SchemaManager<'_>,
    table: &str,
    name: &str,
    mut index: IndexCreateStatement,
) -> Result<(), DbErr> {
    if manager.has_index(table, name).await? {
        return Ok(());
    }
    index.name(name);
    manager.create_index(index).await
}

/// Text id column (`UUIDv7`), not null.
pub(crate) fn id<T: IntoIden>(column: T) -> ColumnDef {
    string(column, ID_LEN)
}

/// `varchar(len)`, not null.
pub(crate) fn string<T: IntoIden>(column: T, len: u32) -> ColumnDef {
    ColumnDef::new(column).string_len(len).not_null().to_owned()
}

/// `varchar(len)`, nullable.
pub(crate) fn string_null<T: IntoIden>(column: T, len: u32) -> ColumnDef {
    ColumnDef::new(column).string_len(len).null().to_owned()
}

/// Unbounded text, not null.
pub(crate) fn text<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).text().not_null().to_owned()
}

/// JSON document, not null: `json` on MySQL (`LONGTEXT` + check on MariaDB), text on SQLite.
pub(crate) fn json<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).json().not_null().to_owned()
}

/// UTC timestamp with microseconds, not null.
pub(crate) fn timestamp<T: IntoIden>(backend: DbBackend, column: T) -> ColumnDef {
    let mut def = timestamp_type(backend, column);
    def.not_null();
    def
}

/// UTC timestamp with microseconds, nullable.
pub(crate) fn timestamp_null<T: IntoIden>(backend: DbBackend, column: T) -> ColumnDef {
    let mut def = timestamp_type(backend, column);
    def.null();
    def
}

/// `DATETIME(6)` on MySQL: microsecond precision, no 2038 limit and no session time-zone
/// conversion (values are always UTC). SQLite stores RFC 3339 text.
fn timestamp_type<T: IntoIden>(backend: DbBackend, column: T) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    if backend == DbBackend::MySql {
        def.custom(Alias::new("datetime(6)"));
    } else {
        def.timestamp_with_time_zone();
    }
    def
}

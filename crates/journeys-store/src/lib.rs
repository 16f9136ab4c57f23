//! Relational store for journeys: migrations, entities and repositories over SQLite and
//! MySQL/MariaDB behind one API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), journeys_store::StoreError> {
//! let store = journeys_store::Store::connect("sqlite::memory:").await?;
//! store.migrate().await?;
//! let names = store.catalog().contains_all(&["Order Completed".to_owned()]).await?;
//! # let _ = names; Ok(()) }
//! ```
//!
//! Records are plain structs; sea-orm models stay private. Timestamps are UTC with microsecond
//! precision (finer parts are truncated on write). Ids are `UUIDv7` text from [`new_id`].

mod entity;
mod error;
mod migration;
mod page;
mod repo;
mod scratch;
mod store;

pub use error::StoreError;
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page};
pub use repo::{
    AudienceRecord, Audiences, Batches, BranchCounts, COUNTER_SHARDS, Catalog, CatalogEventRecord,
    Changes, CounterKey, CounterKind, DeliveryHour, DestinationKind, DestinationRecord,
    Destinations, FunctionSettings, Held, HourStats, Identities, IdentityLink, IdentityRecord,
    IdentityRefusal, InstanceDetail, InstanceFilter, InstanceRecord, InstanceState, Instances,
    JourneyChanges, JourneyRecord, JourneyState, JourneyStats, Journeys, NodeRecord, Outbox,
    OutboxMark, OutboxRecord, OutboxStatus, PartitionRecord, Partitions, ProfileDeletion,
    ProfileMerge, ProfileRecord, ProfileState, Profiles, PurgePace, RefusalRecord, SendCounts,
    SendOf, SourceRecord, Sources, StatsRange, StepCounts, TimelineEntry, TimelineRecord,
    TimerRecord, TimerStats, Timers, Tombstone, TransitionEntry, Watermarks, WebhookSettings,
    hash_write_key, hour_start,
};
pub use scratch::{create_database, database_url, drop_database, remove_sqlite_files};
pub use store::{Backend, MIGRATE_LOCK_TIMEOUT, Store};

/// Longest id, key or event name the store can index: 191 `utf8mb4` characters fit MySQL's
/// 767-byte index prefix limit. Every edge that accepts such a value checks it against this.
pub const MAX_KEY_CHARS: usize = migration::KEY_LEN as usize;

/// A new time-ordered id (`UUIDv7`, hyphenated, 36 characters). Keyset paging by id therefore
/// lists rows in creation order.
#[must_use]
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

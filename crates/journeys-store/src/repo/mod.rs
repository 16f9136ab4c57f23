//! Repositories: one module per aggregate, each a thin borrowed view over the connection that
//! converts between sea-orm models and the public record types.

mod audiences;
mod catalog;
mod destinations;
mod instances;
mod journeys;
mod outbox;
mod profiles;
mod runtime;
mod sources;
mod timers;

use chrono::{DateTime, SubsecRound, Utc};

pub use audiences::{AudienceRecord, Audiences};
pub use catalog::{Catalog, CatalogEventRecord};
pub use destinations::{DestinationKind, DestinationRecord, Destinations};
pub use instances::{
    InstanceDetail, InstanceFilter, InstanceRecord, InstanceState, Instances, TimelineEntry,
    TimelineRecord,
};
pub use journeys::{JourneyChanges, JourneyRecord, JourneyState, Journeys};
pub use outbox::{Outbox, OutboxRecord, OutboxStatus};
pub use profiles::{ProfileRecord, Profiles};
pub use runtime::{
    BranchCounts, Changes, JourneyStats, ProfileState, Runtime, SendCounts, StepCounts,
};
pub use sources::{SourceRecord, Sources};
pub use timers::{TimerRecord, TimerStats, Timers};

/// Rows per multi-row `INSERT`, well below the placeholder limits of both backends.
pub(crate) const INSERT_CHUNK: usize = 500;

/// Timestamps are stored with microsecond precision (MySQL `DATETIME(6)`); truncating before
/// writing makes a record read back equal to the one written, on both backends.
pub(crate) fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

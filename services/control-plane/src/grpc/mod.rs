//! The tonic adapters: one per `journeys.v1` control-plane service, each converting requests
//! into calls on a domain service of [`crate::api`] and results into responses. No rule lives
//! here; `?` maps every [`crate::error::ServiceError`] through its one `Status` conversion.

mod audiences;
mod catalog;
mod cluster;
mod destinations;
mod instances;
mod journeys;
mod profiles;
mod simulate;
mod sources;
mod stats;

use tonic::{Response, Status};

use crate::fields::page_size;

pub use audiences::AudienceGrpc;
pub use catalog::CatalogGrpc;
pub use cluster::ClusterGrpc;
pub use destinations::DestinationGrpc;
pub use instances::InstanceGrpc;
pub use journeys::JourneyGrpc;
pub use profiles::ProfileGrpc;
pub use sources::SourceGrpc;

/// What a handler returns.
type Reply<T> = std::result::Result<Response<T>, Status>;

/// A count for an `int32` field, saturating.
fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

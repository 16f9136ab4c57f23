//! The control plane's domain services, one per area: lifecycle rules and store calls on
//! domain types (records, definitions, core events). They know nothing of gRPC; the adapters
//! in the crate's `grpc` module convert requests to calls on them and results to responses.
//!
//! Named `…Api` to stay apart from the store's repositories (`JourneyApi` beside
//! `journeys_store::Journeys`).

pub mod audiences;
pub mod catalog;
pub mod cluster;
pub mod destinations;
pub mod functions;
pub mod instances;
pub mod journeys;
pub mod profiles;
pub mod simulate;
pub mod sources;

pub use audiences::AudienceApi;
pub use catalog::CatalogApi;
pub use cluster::{ClusterApi, LogTails};
pub use destinations::DestinationApi;
pub use instances::InstanceApi;
pub use journeys::JourneyApi;
pub use profiles::ProfileApi;
pub use simulate::{SimulateApi, SimulationLimits};
pub use sources::SourceApi;

//! The `journeys.v1` gRPC contracts: prost messages, tonic clients and servers,
//! and the encoded file descriptor set that servers register for reflection.
//!
//! The `.proto` files under `proto/journeys/v1/` are the source of truth; the
//! code here is generated from them at build time. Domain types live elsewhere
//! and are converted at the service edge.

/// Generated messages, enums, clients (`*_client`) and servers (`*_server`)
/// of the `journeys.v1` package.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    reason = "generated code"
)]
pub mod v1 {
    tonic::include_proto!("journeys.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of every `journeys.v1` file and
/// the well-known types they import, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/journeys_descriptor.bin"));

/// Fully qualified names of every service in the contract, for health
/// reporting and for listing what a process serves.
pub const SERVICE_NAMES: &[&str] = &[
    "journeys.v1.JourneyService",
    "journeys.v1.DestinationService",
    "journeys.v1.AudienceService",
    "journeys.v1.SourceService",
    "journeys.v1.CatalogService",
    "journeys.v1.ProfileService",
    "journeys.v1.InstanceService",
    "journeys.v1.IngestService",
    "journeys.v1.SchedulerService",
];

//! The `journeys.v1` gRPC contracts: prost messages, tonic clients and servers,
//! and the encoded file descriptor set that servers register for reflection.
//!
//! The `.proto` files under `proto/journeys/v1/` are the source of truth; the
//! code here is generated from them at build time. Domain types live in
//! `journeys-core`; [`convert`] is the one place that converts between the two.

pub mod codec;
pub mod convert;

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
    v1::journey_service_server::SERVICE_NAME,
    v1::destination_service_server::SERVICE_NAME,
    v1::audience_service_server::SERVICE_NAME,
    v1::source_service_server::SERVICE_NAME,
    v1::catalog_service_server::SERVICE_NAME,
    v1::profile_service_server::SERVICE_NAME,
    v1::instance_service_server::SERVICE_NAME,
    v1::ingest_service_server::SERVICE_NAME,
    v1::scheduler_service_server::SERVICE_NAME,
    v1::cluster_service_server::SERVICE_NAME,
];

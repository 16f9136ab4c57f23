//! Plumbing shared by the Journeys services: configuration loading, telemetry, graceful
//! shutdown, serving gRPC with health and reflection and HTTP with the same settings, admin
//! authentication, and the mapping of errors to gRPC statuses.
//!
//! A Journeys process does, in order: [`config::load`], [`telemetry::init`],
//! [`auth::check_bind`], then [`grpc::GrpcServer::serve`] (and [`http::serve`]) with
//! [`shutdown::Shutdown::wait`] as the shutdown future; the composition root
//! (`journeys::node`) is where that order is written.

pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod shutdown;
pub mod telemetry;

pub use journeys_telemetry::{metrics, trace_context};

pub use auth::{AdminAuth, check_bind};
pub use config::{Config, ConfigArgs, ConfigError, LogFormat, Service};
pub use error::{ApiError, FieldViolation};
pub use shutdown::Shutdown;
pub use telemetry::TelemetryGuard;

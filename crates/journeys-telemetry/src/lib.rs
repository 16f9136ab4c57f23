//! What the Journeys libraries record telemetry into, without the service glue: the process's
//! metrics registry ([`metrics`]) and W3C `traceparent` propagation ([`trace_context`]).
//!
//! Split from `journeys-runtime` so that the engine and the delivery dispatcher depend on these
//! two modules only, not on configuration loading, health, reflection or the OTLP exporter.
//! `journeys-runtime` installs the exporter (`telemetry::init`) and re-exports both modules for
//! the services.

pub mod metrics;
pub mod trace_context;

//! [`Error`]: why a node could not start or stopped with an error — the one start-up error of
//! every Journeys process.

use std::net::SocketAddr;

use journeys_runtime::config::ConfigError;
use journeys_runtime::grpc::ServeError;
use journeys_runtime::telemetry::TelemetryError;
use journeys_scheduler::JobSchedulerError;
use journeys_store::StoreError;

/// Why a node could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not load, or is unsafe (a non-loopback bind without an admin
    /// token).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Logging or the OTLP exporter could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// A configured address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// The node serves HTTP (the data plane's Segment API, the demo sink) but was given no
    /// HTTP listener.
    #[error("the {0} needs an HTTP listener")]
    NoHttpListener(&'static str),
    /// The store is unreachable or its migrations failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The housekeeping schedule is invalid or the job scheduler failed to start.
    #[error("housekeeping jobs: {0}")]
    Housekeeping(#[from] JobSchedulerError),
    /// The NATS partition log (`nats_url`) is unreachable or its stream unusable.
    #[error("partition log: {0}")]
    Log(#[from] journeys_engine::LogError),
    /// A listener is unusable or a server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

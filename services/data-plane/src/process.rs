//! The data plane as its own process (`journeys-data-plane`): the evaluator engine as the event
//! sink, the outbox dispatcher woken by the engine's commits, and both ingestion servers.
//!
//! Timers are not fired here: a `journeys-scheduler` (any number of replicas) does that over
//! the same store. Journeys published through a control plane elsewhere reach this process
//! through the engine's published-journey cache, which polls the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use journeys_delivery::{DeliveryConfig, Dispatcher};
use journeys_engine::{Engine, EngineConfig};
use journeys_runtime::auth::check_bind;
use journeys_runtime::config::{Config, ConfigError};
use journeys_runtime::shutdown::Shutdown;
use journeys_store::{Store, StoreError};
use tokio::net::TcpListener;

use crate::DataPlane;

/// Why the data-plane process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// An unsafe configuration (a non-loopback bind without an admin token).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store is unreachable or its migrations failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A listener could not be inspected.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// One of the servers failed.
    #[error(transparent)]
    Serve(#[from] crate::Error),
}

/// Connects to the configured store, runs pending migrations and serves ingestion until
/// `shutdown` completes: gRPC (`IngestService`, health, reflection) on `grpc_listener`, the
/// Segment-compatible HTTP API on `http_listener`.
///
/// Shutdown order keeps every acknowledgement honest: the servers stop taking requests and
/// finish the ones in flight (whose events the engine still commits), then the engine drains
/// its lanes, then the dispatcher stops (waiting briefly for deliveries in flight). Sends
/// committed during the drain stay in the outbox for the next dispatcher to deliver.
///
/// Like every Journeys server, it refuses a non-loopback gRPC address without an admin token
/// ([`check_bind`]), so that no deployment exposes a Journeys port before it configured one.
///
/// # Errors
/// An unsafe bind, an unreachable store, a failed migration or a transport error.
pub async fn serve(
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    check_bind(&grpc_listener.local_addr()?, &config.admin_token)?;
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;

    let engine = Engine::start(
        store.clone(),
        EngineConfig {
            dedupe_window: Duration::from_secs(config.dedupe_window_secs),
            ..EngineConfig::default()
        },
    );
    // The dispatcher outlives the servers and the engine's drain: it stops on its own switch.
    let delivery_stop = Shutdown::new();
    let dispatcher = Dispatcher::new(store.clone(), DeliveryConfig::default());
    let waker = dispatcher.waker();
    engine.set_on_commit(Arc::new(move || waker.wake()));
    let delivery = tokio::spawn(dispatcher.run(delivery_stop.wait()));

    tracing::info!(
        grpc = %grpc_listener.local_addr()?,
        http = %http_listener.local_addr()?,
        backend = ?store.backend(),
        "engine and dispatcher started; starting the ingestion servers"
    );
    let served = DataPlane::new(engine.clone(), store)
        .serve(grpc_listener, http_listener, shutdown)
        .await;

    engine.shutdown().await;
    delivery_stop.trigger();
    if let Err(error) = delivery.await {
        tracing::error!(%error, "outbox dispatcher ended abnormally");
    }
    served?;
    Ok(())
}

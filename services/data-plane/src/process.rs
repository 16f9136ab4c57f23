//! The data plane as its own process (`journeys-data-plane`): the evaluator engine as the event
//! sink, the outbox dispatcher woken by the engine's commits, and both ingestion servers.
//!
//! Each process also publishes its fairness watermark (the receive time of its oldest event not
//! yet committed, or now when idle) as a heartbeat row in the store, every
//! [`WATERMARK_HEARTBEAT`], under a replica id drawn at start; the schedulers take the lowest
//! live watermark before firing a hold-until timeout (SPEC §7). The row is a lease: removed on
//! graceful shutdown, and ignored by the schedulers once it stops being refreshed (killed
//! process). `journeys dev` has no heartbeat: its scheduler reads the engine directly.
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
use tokio::task::JoinHandle;

use crate::DataPlane;

/// How often a stand-alone data plane writes its fairness watermark to the store.
pub const WATERMARK_HEARTBEAT: Duration = Duration::from_millis(50);

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
    // Beats until the engine has drained, so that events still being committed keep holding
    // hold-until timeouts back.
    let heartbeat_stop = Shutdown::new();
    let heartbeat = start_heartbeat(store.clone(), engine.clone(), heartbeat_stop.clone()).await;

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
    heartbeat_stop.trigger();
    if let Err(error) = heartbeat.await {
        tracing::error!(%error, "watermark heartbeat ended abnormally");
    }
    delivery_stop.trigger();
    if let Err(error) = delivery.await {
        tracing::error!(%error, "outbox dispatcher ended abnormally");
    }
    served?;
    Ok(())
}

/// Writes `engine`'s watermark under a fresh replica id now (before the servers take events)
/// and then every [`WATERMARK_HEARTBEAT`] until `stop` is triggered, then removes the row. A
/// failed write is logged and retried on the next beat; a replica that cannot beat for the
/// schedulers' lease drops out of their minimum.
async fn start_heartbeat(store: Store, engine: Engine, stop: Shutdown) -> JoinHandle<()> {
    let replica_id = uuid::Uuid::new_v4().to_string();
    let mut failing = false;
    if let Err(error) = store
        .watermarks()
        .beat(&replica_id, engine.watermark(), chrono::Utc::now())
        .await
    {
        failing = true;
        tracing::warn!(%error, "could not publish the fairness watermark");
    }
    tokio::spawn(async move {
        tracing::debug!(%replica_id, "publishing the fairness watermark");
        let mut ticker = tokio::time::interval(WATERMARK_HEARTBEAT);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the first beat was written above.
        ticker.tick().await;
        let stopped = stop.wait();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => break,
                _ = ticker.tick() => {}
            }
            let watermark = engine.watermark();
            match store
                .watermarks()
                .beat(&replica_id, watermark, chrono::Utc::now())
                .await
            {
                Ok(()) => failing = false,
                // Logged once per outage, not on every beat.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "could not publish the fairness watermark");
                }
                Err(_) => {}
            }
        }
        if let Err(error) = store.watermarks().remove(&replica_id).await {
            tracing::warn!(%error, "could not remove the fairness-watermark heartbeat");
        }
    })
}

//! The Journeys scheduler: durable timers (delays and hold-until timeouts) fired on time by any
//! number of replicas, exactly once each, and the housekeeping jobs that keep the store bounded.
//!
//! - [`TimerLoop`] claims timers due within a short horizon (leased, `SKIP LOCKED` on
//!   MySQL/MariaDB), keeps them in memory ordered by due time and fires each at its due time
//!   through the engine, which commits the transition and deletes the timer in one
//!   transaction. Hold-until timeouts also wait for the fairness watermark
//!   ([`WatermarkSource`]; across processes [`StoreWatermark`], the data-plane replicas'
//!   heartbeats in the store).
//! - [`Housekeeping`] purges expired dedupe keys and finished instances past retention, and
//!   ends instances past their maximum lifetime, on a tokio-cron-scheduler schedule.
//! - `journeys.v1.SchedulerService` reports the queue and the lateness of fired timers.
//!
//! [`serve`] runs all of it as the `journeys-scheduler` process (with its own engine and an
//! outbox dispatcher so that sends produced by timers go out at once); [`Scheduler`] gives the
//! same pieces to `journeys dev`, which runs them on the engine the data plane uses.

mod api;
mod config;
mod housekeeping;
mod lateness;
mod queue;
mod scheduler;
mod timer_loop;
mod watermark;

use std::future::Future;

use journeys_delivery::{DeliveryConfig, Dispatcher};
use journeys_engine::{Engine, EngineConfig};
use journeys_runtime::auth::check_bind;
use journeys_runtime::config::{Config, ConfigError};
use journeys_runtime::grpc::ServeError;
use journeys_runtime::shutdown::Shutdown;
use journeys_store::{Store, StoreError};
use tokio::net::TcpListener;

pub use config::{
    DEFAULT_HOUSEKEEPING_SCHEDULE, DEFAULT_INSTANCE_RETENTION, HousekeepingConfig, SchedulerConfig,
};
pub use housekeeping::{ExpireError, Housekeeping, HousekeepingReport};
pub use lateness::LatenessHistogram;
pub use scheduler::Scheduler;
pub use timer_loop::{TimerLoop, TimerLoopStats};
pub use watermark::{
    FnWatermark, StoreWatermark, WATERMARK_LEASE, WATERMARK_REFRESH, WallClock, WatermarkSource,
};

/// Fully qualified names of the services the scheduler serves.
pub const SERVICE_NAMES: &[&str] = &["journeys.v1.SchedulerService"];

/// Why the scheduler could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("housekeeping jobs: {0}")]
    Housekeeping(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Connects to the configured store, runs pending migrations and runs the scheduler process on
/// `listener` until `shutdown` completes: an engine to apply timers, an outbox dispatcher woken
/// by the engine's commits, the timer loop, the housekeeping jobs and the gRPC service.
///
/// # Errors
/// An unsafe bind (non-loopback without an admin token), an unreachable store, a failed
/// migration, a bad housekeeping schedule or a transport error.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let scheduler_config = SchedulerConfig::from_config(&config);
    serve_with(config, scheduler_config, listener, shutdown).await
}

/// [`serve`] with explicit scheduler settings (retention, schedule, claim tuning).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    config: Config,
    scheduler_config: SchedulerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(ServeError::from)?;
    check_bind(&addr, &config.admin_token)?;
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;

    let stop = Shutdown::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.trigger();
    });

    let engine = Engine::start(
        store.clone(),
        EngineConfig {
            dedupe_window: std::time::Duration::from_secs(config.dedupe_window_secs),
            ..EngineConfig::default()
        },
    );
    let dispatcher = Dispatcher::new(store.clone(), DeliveryConfig::default());
    let waker = dispatcher.waker();
    engine.set_on_commit(std::sync::Arc::new(move || waker.wake()));
    let dispatcher = tokio::spawn(dispatcher.run(stop.wait()));

    // Hold-until fairness across processes: the data-plane replicas' heartbeats in the store.
    let (watermark, watermark_task) =
        StoreWatermark::start(store.clone(), engine.clone(), stop.wait()).await;
    let scheduler =
        match Scheduler::start(store.clone(), engine.clone(), watermark, scheduler_config).await {
            Ok(scheduler) => scheduler,
            Err(error) => {
                stop.trigger();
                engine.shutdown().await;
                let _ = dispatcher.await;
                let _ = watermark_task.await;
                return Err(error.into());
            }
        };
    let served = journeys_runtime::grpc::serve(
        listener,
        scheduler.grpc_routes(config.admin_token.clone()),
        SERVICE_NAMES,
        &[journeys_proto::FILE_DESCRIPTOR_SET],
        stop.wait(),
    )
    .await;

    // The server may also have stopped on its own (a transport error): stop everything.
    stop.trigger();
    scheduler.shutdown().await;
    engine.shutdown().await;
    if let Err(error) = watermark_task.await {
        tracing::error!(%error, "watermark refresh ended abnormally");
    }
    if let Err(error) = dispatcher.await {
        tracing::error!(%error, "outbox dispatcher ended abnormally");
    }
    if let Err(error) = store.close().await {
        tracing::warn!(%error, "closing the store failed");
    }
    served?;
    Ok(())
}

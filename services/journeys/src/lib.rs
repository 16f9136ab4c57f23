//! `journeys dev`: every service in one process — control plane, data plane (gRPC ingestion and
//! the Segment-compatible HTTP API), scheduler and outbox dispatcher — over one store (embedded
//! SQLite by default). [`run_dev`] is what the command runs; tests call it on `127.0.0.1:0`.

pub mod sink;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use journeys_control_plane::Deps;
use journeys_data_plane::DataPlane;
use journeys_delivery::{DeliveryConfig, Dispatcher};
use journeys_engine::{Engine, EngineConfig};
use journeys_runtime::auth::check_bind;
use journeys_runtime::config::{Config, ConfigError};
use journeys_runtime::grpc::{GrpcServer, ServeError};
use journeys_runtime::shutdown::Shutdown;
use journeys_scheduler::{Scheduler, SchedulerConfig};
use journeys_store::{Store, StoreError};
use tokio::net::TcpListener;
use tonic::service::Routes;

/// The gRPC services `journeys dev` serves besides the control plane's
/// ([`journeys_control_plane::SERVICE_NAMES`]), all on one port.
pub const EXTRA_SERVICE_NAMES: &[&str] =
    &["journeys.v1.IngestService", "journeys.v1.SchedulerService"];

/// Why `journeys dev` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs every service until `shutdown` completes: gRPC on `grpc_listener`, the
/// Segment-compatible HTTP API on `http_listener`.
///
/// # Errors
/// An unsafe bind (non-loopback without an admin token), an unreachable store, a failed
/// migration or a transport error.
pub async fn run_dev(
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    check_bind(&grpc_listener.local_addr()?, &config.admin_token)?;
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
            dedupe_window: Duration::from_secs(config.dedupe_window_secs),
            ..EngineConfig::default()
        },
    );
    let dispatcher = Dispatcher::new(store.clone(), DeliveryConfig::default());
    let waker = dispatcher.waker();
    engine.set_on_commit(Arc::new(move || waker.wake()));
    let delivery = tokio::spawn(dispatcher.clone().run(stop.wait()));

    // One process: the engine's own watermark is the only one there is.
    let scheduler = Scheduler::start(
        store.clone(),
        engine.clone(),
        engine.clone(),
        SchedulerConfig::from_config(&config),
    )
    .await
    .map_err(|e| Error::Scheduler(e.to_string()))?;

    let deps = Deps {
        store: store.clone(),
        engine: engine.clone(),
        delivery: dispatcher,
    };
    let plane = DataPlane::new(engine.clone(), store.clone());
    let mut builder = Routes::builder();
    journeys_control_plane::add_services(&mut builder, &deps, &config);
    builder.add_service(plane.ingest_service());
    scheduler.add_services(&mut builder, config.admin_token.clone());

    let mut grpc =
        GrpcServer::new(builder.routes()).descriptor_set(journeys_proto::FILE_DESCRIPTOR_SET);
    for name in journeys_control_plane::SERVICE_NAMES
        .iter()
        .chain(EXTRA_SERVICE_NAMES)
    {
        grpc = grpc.service(name);
    }
    let http = axum::serve(http_listener, plane.http_router().merge(sink::router()))
        .with_graceful_shutdown(stop.wait());
    tracing::info!(
        grpc = %config.grpc_addr,
        http = %config.http_addr,
        backend = ?store.backend(),
        "journeys dev ready"
    );
    let (grpc_result, http_result) =
        tokio::join!(grpc.serve(grpc_listener, stop.wait()), async { http.await });

    stop.trigger();
    scheduler.shutdown().await;
    engine.shutdown().await;
    let _ = delivery.await;
    grpc_result?;
    http_result?;
    Ok(())
}

//! The Journeys control plane: journey CRUD, validation and publishing, destinations,
//! audiences, sources, the event catalog, profiles and instances, over gRPC.
//!
//! The rules live in domain services ([`api`]: `JourneyApi`, `DestinationApi`, …), which work
//! on store records and core types; the tonic adapters (`grpc`) only convert. Every failure is
//! a [`ServiceError`], mapped to a `Status` in one place ([`error`]).
//!
//! [`serve`] runs it as a process would; [`routes`] gives the services alone so that
//! `journeys dev` can serve them beside the other planes in one process.

pub mod api;
pub mod convert;
pub mod error;
mod fields;
mod grpc;
mod references;

use std::future::Future;

use journeys_core::validate::ValidationOptions;
use journeys_delivery::{DeliveryConfig, Dispatcher};
use journeys_engine::{Engine, EngineConfig};
use journeys_proto::v1::audience_service_server::AudienceServiceServer;
use journeys_proto::v1::catalog_service_server::CatalogServiceServer;
use journeys_proto::v1::destination_service_server::DestinationServiceServer;
use journeys_proto::v1::instance_service_server::InstanceServiceServer;
use journeys_proto::v1::journey_service_server::JourneyServiceServer;
use journeys_proto::v1::profile_service_server::ProfileServiceServer;
use journeys_proto::v1::source_service_server::SourceServiceServer;
use journeys_runtime::auth::{AdminAuth, check_bind};
use journeys_runtime::config::{Config, ConfigError};
use journeys_runtime::grpc::ServeError;
use journeys_store::{Store, StoreError};
use tokio::net::TcpListener;
use tonic::service::{Routes, RoutesBuilder};

pub use error::ServiceError;
pub use journeys_store::{WebhookSettings, hash_write_key};

/// Fully qualified names of the services the control plane serves.
pub const SERVICE_NAMES: &[&str] = &[
    "journeys.v1.JourneyService",
    "journeys.v1.DestinationService",
    "journeys.v1.AudienceService",
    "journeys.v1.SourceService",
    "journeys.v1.CatalogService",
    "journeys.v1.ProfileService",
    "journeys.v1.InstanceService",
];

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// What the control plane works with besides configuration.
#[derive(Clone)]
pub struct Deps {
    pub store: Store,
    /// Applies operator exits (`ExitInstance`, archive in exit mode) through the same state
    /// machine and transaction shape as events and timers.
    pub engine: Engine,
    /// Delivers `SendTestEvent` requests (no outbox, no retries) and is woken by
    /// `ReplayDeadLetters`.
    pub delivery: Dispatcher,
}

impl Deps {
    /// Deps of a stand-alone control plane: its own engine (for operator exits) and a
    /// dispatcher used only for test sends (the data plane's dispatcher delivers the outbox).
    pub fn standalone(store: Store) -> Self {
        Self {
            engine: Engine::start(store.clone(), EngineConfig::default()),
            delivery: Dispatcher::new(store.clone(), DeliveryConfig::default()),
            store,
        }
    }
}

/// The control-plane services, each behind the admin-token check.
pub fn routes(deps: &Deps, config: &Config) -> Routes {
    let mut builder = Routes::builder();
    add_services(&mut builder, deps, config);
    builder.routes()
}

/// Adds the control-plane services to `builder` (for a process that serves more than the
/// control plane on one port, like `journeys dev`).
pub fn add_services(builder: &mut RoutesBuilder, deps: &Deps, config: &Config) {
    let store = &deps.store;
    let auth = AdminAuth::new(config.admin_token.clone());
    let validation = ValidationOptions {
        allow_short_durations: config.allow_short_durations,
        ..ValidationOptions::default()
    };
    let journeys = api::JourneyApi::new(store.clone(), deps.engine.clone(), validation);
    let simulate = api::SimulateApi::new(deps.delivery.clone());
    let destinations = api::DestinationApi::new(store.clone(), deps.delivery.waker());
    builder
        .add_service(JourneyServiceServer::with_interceptor(
            grpc::JourneyGrpc::new(journeys, simulate),
            auth.clone(),
        ))
        .add_service(DestinationServiceServer::with_interceptor(
            grpc::DestinationGrpc::new(destinations),
            auth.clone(),
        ))
        .add_service(AudienceServiceServer::with_interceptor(
            grpc::AudienceGrpc::new(api::AudienceApi::new(store.clone())),
            auth.clone(),
        ))
        .add_service(SourceServiceServer::with_interceptor(
            grpc::SourceGrpc::new(api::SourceApi::new(store.clone())),
            auth.clone(),
        ))
        .add_service(CatalogServiceServer::with_interceptor(
            grpc::CatalogGrpc::new(api::CatalogApi::new(store.clone())),
            auth.clone(),
        ))
        .add_service(ProfileServiceServer::with_interceptor(
            grpc::ProfileGrpc::new(api::ProfileApi::new(store.clone())),
            auth.clone(),
        ))
        .add_service(InstanceServiceServer::with_interceptor(
            grpc::InstanceGrpc::new(api::InstanceApi::new(store.clone(), deps.engine.clone())),
            auth,
        ));
}

/// Connects to the configured store, runs pending migrations and serves the control plane on
/// `listener` until `shutdown` completes.
///
/// # Errors
/// An unsafe bind (non-loopback without an admin token), an unreachable store, a failed
/// migration or a transport error.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    check_bind(
        &listener.local_addr().map_err(ServeError::from)?,
        &config.admin_token,
    )?;
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    let deps = Deps::standalone(store);
    let routes = routes(&deps, &config);
    let served = journeys_runtime::grpc::serve(
        listener,
        routes,
        SERVICE_NAMES,
        &[journeys_proto::FILE_DESCRIPTOR_SET],
        shutdown,
    )
    .await;
    deps.engine.shutdown().await;
    served?;
    Ok(())
}

//! The Journeys control plane: journey CRUD, validation and publishing, destinations,
//! audiences, sources, the event catalog, profiles and instances, and the cluster's nodes and
//! partitions, over gRPC.
//!
//! The rules live in domain services ([`api`]: `JourneyApi`, `DestinationApi`, …), which work
//! on store records and core types; the tonic adapters (`grpc`) only convert. Every failure is
//! a [`ServiceError`], mapped to a `Status` in one place ([`error`]).
//!
//! [`add_services`] mounts the services on a gRPC server; the composition root
//! (`journeys::node`) serves them, alone (`journeys-control-plane`) or beside the other roles
//! (`journeys dev`, `journeys serve`), over the store and engine it built ([`Deps`]).

pub mod api;
pub mod convert;
pub mod error;
mod fields;
mod grpc;
mod references;

use std::time::Duration;

use journeys_core::machine::InstanceLimits;
use journeys_core::validate::{Limits, ValidationOptions};
use journeys_delivery::Dispatcher;
use journeys_engine::Engine;
use journeys_proto::v1::audience_service_server::AudienceServiceServer;
use journeys_proto::v1::catalog_service_server::CatalogServiceServer;
use journeys_proto::v1::cluster_service_server::ClusterServiceServer;
use journeys_proto::v1::destination_service_server::DestinationServiceServer;
use journeys_proto::v1::instance_service_server::InstanceServiceServer;
use journeys_proto::v1::journey_service_server::JourneyServiceServer;
use journeys_proto::v1::profile_service_server::ProfileServiceServer;
use journeys_proto::v1::source_service_server::SourceServiceServer;
use journeys_runtime::auth::AdminAuth;
use journeys_runtime::config::Config;
use journeys_store::Store;
use tonic::service::RoutesBuilder;

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
    "journeys.v1.ClusterService",
];

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
    /// The partition log's tails, when the nodes share a NATS log: `ListNodes` then shows
    /// each partition's lag.
    pub log_tails: Option<std::sync::Arc<dyn api::LogTails>>,
}

/// Adds the control-plane services to `builder`, each behind the admin-token check.
pub fn add_services(builder: &mut RoutesBuilder, deps: &Deps, config: &Config) {
    let store = &deps.store;
    let auth = AdminAuth::new(config.admin_token.clone());
    let journeys = api::JourneyApi::new(
        store.clone(),
        deps.engine.clone(),
        validation_options(config),
    );
    let simulate = api::SimulateApi::new(deps.delivery.clone(), simulation_limits(config));
    let destinations = api::DestinationApi::new(store.clone(), deps.delivery.clone());
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
            grpc::AudienceGrpc::new(api::AudienceApi::new(store.clone(), deps.engine.clone())),
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
            grpc::ProfileGrpc::new(api::ProfileApi::new(store.clone(), deps.engine.clone())),
            auth.clone(),
        ))
        .add_service(InstanceServiceServer::with_interceptor(
            grpc::InstanceGrpc::new(api::InstanceApi::new(store.clone(), deps.engine.clone())),
            auth.clone(),
        ))
        .add_service(ClusterServiceServer::with_interceptor(
            grpc::ClusterGrpc::new(match &deps.log_tails {
                Some(tails) => api::ClusterApi::new(store.clone()).with_log_tails(tails.clone()),
                None => api::ClusterApi::new(store.clone()),
            }),
            auth,
        ));
}

/// How journeys are validated under `config`: the configured delay and hold bounds, and
/// second-scale durations when allowed.
#[must_use]
pub fn validation_options(config: &Config) -> ValidationOptions {
    ValidationOptions {
        allow_short_durations: config.allow_short_durations,
        limits: Limits {
            min_delay: Duration::from_secs(config.min_delay_secs),
            max_delay: Duration::from_secs(config.max_delay_secs),
            min_hold: Duration::from_secs(config.min_hold_secs),
            max_hold: Duration::from_secs(config.max_hold_secs),
            ..Limits::default()
        },
    }
}

/// What `SimulateJourney` applies as the engine does under `config`.
#[must_use]
pub fn simulation_limits(config: &Config) -> api::SimulationLimits {
    api::SimulationLimits {
        instances: InstanceLimits {
            max_return_to_start_passes: config.max_return_to_start_passes,
            max_unique_value_chars: config.max_unique_value_chars,
        },
        dedupe_window: Duration::from_secs(config.dedupe_window_secs),
    }
}

#[cfg(test)]
mod tests {
    use journeys_runtime::config::Service;

    use super::*;

    #[test]
    fn the_default_settings_validate_as_the_core_defaults() {
        let config = Config::defaults_for(Service::ControlPlane);
        assert_eq!(validation_options(&config), ValidationOptions::default());
        assert_eq!(
            simulation_limits(&config).instances,
            InstanceLimits::DEFAULT
        );
        assert_eq!(
            simulation_limits(&config).dedupe_window,
            journeys_core::profile::DEDUPE_WINDOW
        );
    }

    #[test]
    fn configured_bounds_reach_validation() {
        let mut config = Config::defaults_for(Service::ControlPlane);
        config.min_delay_secs = 120;
        config.max_delay_secs = 3_600;
        config.min_hold_secs = 600;
        config.max_hold_secs = 7_200;
        config.allow_short_durations = true;
        let options = validation_options(&config);
        assert!(options.allow_short_durations);
        assert_eq!(options.limits.min_delay, Duration::from_secs(120));
        assert_eq!(options.limits.max_delay, Duration::from_secs(3_600));
        assert_eq!(options.limits.min_hold, Duration::from_secs(600));
        assert_eq!(options.limits.max_hold, Duration::from_secs(7_200));
    }
}

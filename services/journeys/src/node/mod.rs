//! The composition root: [`Node`] starts any set of [`Role`]s over one store, and is the only
//! place that wires them. `journeys dev` (every role, the demo sink), `journeys serve --roles …`
//! and the three service binaries (`journeys-control-plane`, `journeys-data-plane`,
//! `journeys-scheduler`) are thin mains over it, and the tests and the load generator's
//! `--embedded` mode start the same thing on `127.0.0.1:0`.
//!
//! It lives in the `journeys` package because it depends on every service library; the service
//! binaries live here too, since a binary of a service package could not depend on this one
//! without a cycle.
//!
//! **Start-up**: check the bind (non-loopback needs an admin token) → connect the store and
//! migrate → the outbox dispatcher (delivery role; a control plane also keeps one for test
//! sends) → the engine, given the dispatcher's wake-up at construction → the fairness watermark
//! → the scheduler → the servers: one gRPC port with health and reflection for every role's
//! services, and one HTTP port (the Segment API, the demo sink, and the web console when the
//! node has the control-plane role as well), both through the shared
//! server settings of `journeys_runtime` (`TCP_NODELAY`, bounded drain).
//!
//! **Fairness watermark**: with both the data plane and the scheduler in this process, the
//! scheduler reads the engine directly; a data plane without a scheduler beats its watermark
//! into the store ([`journeys_data_plane::Heartbeat`]); a scheduler without a data plane reads
//! the live heartbeats ([`journeys_scheduler::StoreWatermark`]).
//!
//! **Shutdown**, in one order whatever the roles: stop accepting and drain ingest (the servers
//! stop taking calls and finish those in flight, whose events the engine still commits) →
//! drain the engine (its lanes commit what they hold) → stop timers (the scheduler releases
//! unfired claims; the watermark stops beating once nothing is left uncommitted) → drain
//! delivery (sends in flight finish; the rest stay in the outbox for the next dispatcher) →
//! close the store.

mod error;
mod roles;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use journeys_control_plane::Deps;
use journeys_data_plane::{DataPlane, Heartbeat, WriteKeys};

use journeys_delivery::function::FunctionLimits;
use journeys_delivery::{AddressPolicy, DeliveryConfig, Dispatcher, RetryPolicy};
use journeys_engine::{
    Engine, EngineConfig, FrontConfig, InstanceLimits, LogConfig, LogFront, OnCommit, OwnerConfig,
    PartitionLog, TraitLimits,
};
use journeys_runtime::auth::check_bind;
use journeys_runtime::config::{Config, ConfigError};
use journeys_runtime::grpc::{GrpcServer, ServeError};
use journeys_runtime::shutdown::Shutdown;
use journeys_scheduler::{Scheduler, SchedulerConfig, StoreWatermark, WatermarkSource};
use journeys_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;

pub use error::Error;
pub use roles::{Role, Roles};

/// What one process runs: its configuration, its roles and their settings. Build it, bind its
/// listeners ([`Node::bind`], or [`Listeners::new`] with your own), then [`Node::serve`].
#[derive(Debug, Clone)]
pub struct Node {
    config: Config,
    roles: Roles,
    scheduler: SchedulerConfig,
    demo_sink: bool,
}

impl Node {
    /// A node running `roles` with `config`; the scheduler (if any) with the defaults and the
    /// configured dedupe window.
    #[must_use]
    pub fn new(config: Config, roles: Roles) -> Node {
        Node {
            scheduler: SchedulerConfig::from_config(&config),
            config,
            roles,
            demo_sink: false,
        }
    }

    /// `journeys dev`: every role, plus the demo webhook sink on the HTTP port.
    #[must_use]
    pub fn dev(config: Config) -> Node {
        Node::new(config, Roles::ALL).with_demo_sink()
    }

    /// Runs the scheduler role with `scheduler` (retention, schedule, claim tuning).
    #[must_use]
    pub fn with_scheduler_config(mut self, scheduler: SchedulerConfig) -> Node {
        self.scheduler = scheduler;
        self
    }

    /// Serves the demo webhook sink ([`crate::sink`]) on the HTTP port.
    #[must_use]
    pub fn with_demo_sink(mut self) -> Node {
        self.demo_sink = true;
        self
    }

    /// The configuration the node runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The roles the node runs.
    #[must_use]
    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// Whether the node serves HTTP, and so needs an HTTP listener.
    #[must_use]
    pub fn serves_http(&self) -> bool {
        self.roles.contains(Role::DataPlane) || self.demo_sink
    }

    /// Binds the configured gRPC address, and the HTTP address when the node serves HTTP.
    ///
    /// # Errors
    /// [`Error::Bind`] naming the address that cannot be listened on.
    pub async fn bind(&self) -> Result<Listeners, Error> {
        let grpc = bind(self.config.grpc_addr).await?;
        let http = if self.serves_http() {
            Some(bind(self.config.http_addr).await?)
        } else {
            None
        };
        Ok(Listeners { grpc, http })
    }

    /// Starts the roles and serves until `shutdown` completes (or a server fails), then stops
    /// everything in the order the module documentation gives.
    ///
    /// # Errors
    /// An unsafe bind (non-loopback without an admin token), a missing HTTP listener, an
    /// unreachable store, a failed migration, a bad housekeeping schedule or a server failure.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        self.config.check()?;
        let grpc_addr = listeners.grpc.local_addr().map_err(ServeError::from)?;
        check_bind(&grpc_addr, &self.config.admin_token)?;
        let http = if self.serves_http() {
            let needed_by = if self.roles.contains(Role::DataPlane) {
                Role::DataPlane.name()
            } else {
                "demo sink"
            };
            let http = listeners.http.ok_or(Error::NoHttpListener(needed_by))?;
            if self.demo_sink {
                // The demo sink shows every delivery it received: like the admin API, it is
                // for loopback unless an admin token says the deployment is deliberate.
                check_bind(
                    &http.local_addr().map_err(ServeError::from)?,
                    &self.config.admin_token,
                )?;
            }
            Some(http)
        } else {
            None
        };
        let delivery = self.delivery_config()?;
        let store = Store::connect(&self.config.database_url).await?;
        if let Err(error) = store.migrate().await {
            close(store).await;
            return Err(error.into());
        }
        let running = match Running::start(&self, &store, delivery).await {
            Ok(running) => running,
            Err((error, started)) => {
                started.stop().await;
                close(store).await;
                return Err(error);
            }
        };
        tracing::info!(
            roles = %self.roles,
            grpc = %grpc_addr,
            http = ?http.as_ref().and_then(|l| l.local_addr().ok()),
            backend = ?store.backend(),
            "journeys node started"
        );
        let served = running
            .serve(&self, &store, listeners.grpc, http, shutdown)
            .await;
        running.stop().await;
        close(store).await;
        served
    }

    /// The delivery's settings for this node: the configured retry budget and backoff and
    /// share of one destination, sending only where the configured address policy allows
    /// (`destination_allow`), under this node's id.
    fn delivery_config(&self) -> Result<DeliveryConfig, Error> {
        let address_policy = AddressPolicy::new(&self.config.destination_allow)
            .map_err(|e| ConfigError::Invalid(format!("destination_allow: {e}")))?;
        Ok(DeliveryConfig {
            address_policy,
            node_id: self.node_id(),
            retry: retry_policy(&self.config),
            max_in_flight_per_destination: self.config.max_sends_in_flight_per_destination,
            functions: function_limits(&self.config),
            ..DeliveryConfig::default()
        })
    }

    /// This node's id: the configured one, else the host name.
    fn node_id(&self) -> String {
        self.config
            .node_id
            .clone()
            .unwrap_or_else(journeys_engine::default_node_id)
    }

    /// The engine's settings for this node.
    ///
    /// A node running the data plane is a partition owner: it applies the partitions it holds
    /// and keeps their profiles in memory. The memory is authoritative only when every writer
    /// of profiles runs here (control plane and scheduler too, as in `journeys dev` and
    /// `journeys serve`); beside stand-alone control-plane or scheduler processes, which write
    /// instances through their own engines, it reads profiles from the store every batch.
    fn engine_config(&self) -> EngineConfig {
        let owner = self.roles.contains(Role::DataPlane).then(|| {
            let all_writers =
                self.roles.contains(Role::ControlPlane) && self.roles.contains(Role::Scheduler);
            OwnerConfig {
                node_id: self.node_id(),
                profile_cache: if all_writers {
                    self.config.profile_cache_size
                } else {
                    0
                },
                ..OwnerConfig::default()
            }
        });
        let config = &self.config;
        EngineConfig {
            dedupe_window: Duration::from_secs(config.dedupe_window_secs),
            max_active_instances_per_profile: config.max_active_instances_per_profile,
            max_events_per_profile_per_sec: config.max_events_per_profile_per_sec,
            max_catalog_events: config.max_catalog_events,
            instance_limits: InstanceLimits {
                max_return_to_start_passes: config.max_return_to_start_passes,
                max_unique_value_chars: config.max_unique_value_chars,
            },
            max_instance_lifetime: Duration::from_secs(
                config.max_instance_lifetime_days.saturating_mul(86_400),
            ),
            partitions: self.config.partitions,
            trait_limits: TraitLimits {
                max_count: self.config.max_profile_traits,
                max_bytes: self.config.max_profile_traits_bytes,
            },
            owner,
            ..EngineConfig::default()
        }
    }
}

/// The listeners a node serves on: gRPC always, HTTP when it serves HTTP
/// ([`Node::serves_http`]).
#[derive(Debug)]
pub struct Listeners {
    grpc: TcpListener,
    http: Option<TcpListener>,
}

impl Listeners {
    /// Listeners bound by the caller (tests bind `127.0.0.1:0` and read the ports first).
    #[must_use]
    pub fn new(grpc: TcpListener, http: Option<TcpListener>) -> Listeners {
        Listeners { grpc, http }
    }

    /// The gRPC address.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The HTTP address, when there is an HTTP listener.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn http_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.http.as_ref().map(TcpListener::local_addr).transpose()
    }
}

/// What a node started, each part present only when a role needs it. Stopped by
/// [`Running::stop`] in the one shutdown order.
#[derive(Default)]
struct Running {
    /// Needed by the control plane, the data plane and the scheduler.
    engine: Option<Engine>,
    /// The delivery role's dispatcher, or the control plane's for test sends (not run then).
    dispatcher: Option<Dispatcher>,
    /// The running dispatcher (delivery role) and its own stop switch: it outlives the
    /// servers and the engine's drain.
    delivery: Option<(Shutdown, JoinHandle<()>)>,
    /// The data plane's watermark in the store (data plane without a scheduler, or any data
    /// plane publishing into the NATS log).
    heartbeat: Option<Heartbeat>,
    /// The data plane's event sink when the node shares a NATS log with others: it publishes
    /// events into their partitions, and the partitions' owners apply them.
    front: Option<LogFront>,
    /// The NATS partition log, when configured and this node runs the data plane.
    log: Option<PartitionLog>,
    /// The refresh of the replicas' watermarks (scheduler without a data plane).
    store_watermark: Option<(Shutdown, JoinHandle<()>)>,
    scheduler: Option<Scheduler>,
}

impl Running {
    /// Starts the parts `node`'s roles need, in start-up order. On failure, returns what was
    /// started so far for the caller to stop.
    async fn start(
        node: &Node,
        store: &Store,
        delivery: DeliveryConfig,
    ) -> Result<Running, (Error, Running)> {
        let roles = node.roles;
        let mut running = Running::default();
        if roles.contains(Role::Delivery) || roles.contains(Role::ControlPlane) {
            running.dispatcher = Some(Dispatcher::new(store.clone(), delivery));
        }
        let mut on_commit: Option<OnCommit> = None;
        if let (true, Some(dispatcher)) = (roles.contains(Role::Delivery), &running.dispatcher) {
            let waker = dispatcher.waker();
            on_commit = Some(Arc::new(move || waker.wake()));
            let stop = Shutdown::new();
            let task = tokio::spawn(dispatcher.clone().run(stop.wait()));
            running.delivery = Some((stop, task));
        }
        let needs_engine = [Role::ControlPlane, Role::DataPlane, Role::Scheduler]
            .into_iter()
            .any(|role| roles.contains(role));
        if !needs_engine {
            return Ok(running);
        }
        let data_plane = roles.contains(Role::DataPlane);
        // With a NATS log, every engine role uses it: the data plane publishes events and owns
        // partitions, the scheduler publishes due timers and the control plane operator exits,
        // all applied by the partitions' owners.
        let log = match &node.config.nats_url {
            Some(url) => {
                let connected = PartitionLog::connect_with(
                    url,
                    LogConfig::new(node.config.nats_stream.clone(), node.config.partitions),
                )
                .await;
                match connected {
                    Ok(log) => Some(log),
                    Err(error) => return Err((Error::Log(error), running)),
                }
            }
            None => None,
        };
        let config = node.engine_config();
        let engine = match (&log, data_plane) {
            (Some(log), true) => {
                Engine::start_logged(store.clone(), config, on_commit, log.clone())
            }
            _ => Engine::start(store.clone(), config, on_commit),
        };
        running.engine = Some(engine.clone());
        running.log.clone_from(&log);
        if let Some(log) = log {
            let front_config = FrontConfig::new(node.config.partitions);
            match LogFront::start(log, store.clone(), front_config).await {
                Ok(front) => {
                    engine.route_through_log(front.clone());
                    running.front = Some(front);
                }
                Err(error) => return Err((Error::Log(error), running)),
            }
        }

        if let (Some(front), true) = (&running.front, data_plane) {
            // Every front beats: a hold-until timeout waits for events any of them received.
            let front = front.clone();
            running.heartbeat =
                Some(Heartbeat::start(store.clone(), move || front.watermark()).await);
        } else if data_plane && !roles.contains(Role::Scheduler) {
            // Before the servers take events, so no event escapes the schedulers' minimum.
            let engine = engine.clone();
            running.heartbeat =
                Some(Heartbeat::start(store.clone(), move || engine.watermark()).await);
        }
        if roles.contains(Role::Scheduler) {
            let watermark: Arc<dyn WatermarkSource> = if data_plane && running.front.is_none() {
                // One process: the engine's own watermark is exact.
                Arc::new(engine.clone())
            } else {
                let stop = Shutdown::new();
                let (watermark, task) =
                    StoreWatermark::start(store.clone(), engine.clone(), stop.wait()).await;
                running.store_watermark = Some((stop, task));
                Arc::new(watermark)
            };
            match Scheduler::start(store.clone(), engine, watermark, node.scheduler.clone()).await {
                Ok(scheduler) => running.scheduler = Some(scheduler),
                Err(error) => return Err((error.into(), running)),
            }
        }
        Ok(running)
    }

    /// Serves every role's gRPC services on `grpc` and the HTTP routes on `http` until
    /// `shutdown` completes or either server fails (which stops the other).
    async fn serve(
        &self,
        node: &Node,
        store: &Store,
        grpc: TcpListener,
        http: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let roles = node.roles;
        let admin_token = &node.config.admin_token;
        let mut routes = Routes::builder();
        let mut names: Vec<&str> = Vec::new();
        if let (true, Some(engine), Some(dispatcher)) = (
            roles.contains(Role::ControlPlane),
            &self.engine,
            &self.dispatcher,
        ) {
            let deps = Deps {
                store: store.clone(),
                engine: engine.clone(),
                delivery: dispatcher.clone(),
                log_tails: self
                    .log
                    .clone()
                    .map(|log| Arc::new(log) as Arc<dyn journeys_control_plane::api::LogTails>),
            };
            journeys_control_plane::add_services(&mut routes, &deps, &node.config);
            names.extend(journeys_control_plane::SERVICE_NAMES);
        }
        let mut router = axum::Router::new();
        if let (true, Some(front)) = (roles.contains(Role::DataPlane), &self.front) {
            let plane = DataPlane::with_write_keys(front.clone(), write_keys(store, &node.config));
            routes.add_service(plane.ingest_service());
            names.push(journeys_data_plane::SERVICE_NAME);
            router = router.merge(plane.http_router());
        } else if let (true, Some(engine)) = (roles.contains(Role::DataPlane), &self.engine) {
            let plane = DataPlane::with_write_keys(engine.clone(), write_keys(store, &node.config));
            routes.add_service(plane.ingest_service());
            names.push(journeys_data_plane::SERVICE_NAME);
            router = router.merge(plane.http_router());
        }
        if let Some(scheduler) = &self.scheduler {
            scheduler.add_services(&mut routes, admin_token.clone());
            names.extend(journeys_scheduler::SERVICE_NAMES);
        }
        if node.demo_sink {
            router = router.merge(crate::sink::router(admin_token.clone()));
        }
        if roles.contains(Role::ControlPlane) && http.is_some() {
            // The web console, a client of this node's own gRPC API.
            let grpc_addr = grpc.local_addr().map_err(ServeError::from)?;
            router = router.merge(crate::console::router(grpc_addr, admin_token.clone()));
        }
        let mut server =
            GrpcServer::new(routes.routes()).descriptor_set(journeys_proto::FILE_DESCRIPTOR_SET);
        for name in names {
            server = server.service(name);
        }

        let stop = Shutdown::new();
        let grpc = async {
            let served = server.serve(grpc, stop.wait()).await;
            stop.trigger();
            served
        };
        let http = async {
            let Some(http) = http else {
                return Ok(());
            };
            let served = journeys_runtime::http::serve(http, router, stop.wait()).await;
            stop.trigger();
            served
        };
        let signal = async {
            tokio::select! {
                () = shutdown => tracing::info!("journeys node shutting down"),
                () = stop.wait() => tracing::warn!("a server stopped; shutting the node down"),
            }
            stop.trigger();
        };
        let (grpc, http, ()) = tokio::join!(grpc, http, signal);
        grpc?;
        http?;
        Ok(())
    }

    /// Stops what runs, in the one shutdown order (the servers have stopped already): drain the
    /// engine → stop timers and the watermark → drain delivery.
    async fn stop(self) {
        if let Some(front) = &self.front {
            front.stop();
        }
        if let Some(engine) = &self.engine {
            engine.shutdown().await;
        }
        if let Some(scheduler) = self.scheduler {
            scheduler.shutdown().await;
        }
        if let Some((stop, task)) = self.store_watermark {
            stop.trigger();
            if let Err(error) = task.await {
                tracing::error!(%error, "watermark refresh ended abnormally");
            }
        }
        if let Some(heartbeat) = self.heartbeat {
            heartbeat.stop().await;
        }
        if let Some((stop, task)) = self.delivery {
            stop.trigger();
            if let Err(error) = task.await {
                tracing::error!(%error, "outbox dispatcher ended abnormally");
            }
        }
    }
}

/// The retry policy of `config`: its budget and backoff; the backoff grows as documented
/// ([`RetryPolicy::default`]'s factor).
fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(config.retry_backoff_base_ms),
        max_delay: Duration::from_secs(config.retry_backoff_max_secs),
        budget: Duration::from_secs(config.retry_budget_secs),
        max_retry_after: Duration::from_secs(config.retry_after_max_secs),
        ..RetryPolicy::default()
    }
}

/// Binds `addr`, naming it in the error.
async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Closes the store's connections: the last step of every shutdown.
async fn close(store: Store) {
    if let Err(error) = store.close().await {
        tracing::warn!(%error, "closing the store failed");
    }
}

/// The configured limits of destination functions (`function_*` settings).
fn function_limits(config: &Config) -> FunctionLimits {
    let defaults = FunctionLimits::default();
    FunctionLimits {
        workers: match config.function_workers {
            0 => defaults.workers,
            n => n,
        },
        cpu_time: Duration::from_millis(config.function_cpu_ms),
        memory_bytes: config.function_memory_mb.saturating_mul(1024 * 1024),
        ..defaults
    }
}

/// The data plane's write-key resolver over `store`, caching as many keys as configured.
fn write_keys(store: &Store, config: &Config) -> WriteKeys {
    WriteKeys::with_capacity(
        store.clone(),
        journeys_data_plane::auth::DEFAULT_KEY_TTL,
        journeys_data_plane::auth::DEFAULT_NEGATIVE_KEY_TTL,
        config.write_key_cache_size,
    )
}

#[cfg(test)]
mod tests {
    use journeys_runtime::config::Service;
    use journeys_scheduler::SchedulerConfig;

    use super::*;

    /// The settings' defaults are the defaults of the crates that apply them: a node
    /// configured with nothing behaves as each crate documents.
    #[test]
    fn default_settings_are_the_crates_defaults() {
        let config = Config::defaults_for(Service::Node);
        let node = Node::new(config.clone(), Roles::ALL);
        let engine = node.engine_config();
        let defaults = EngineConfig::default();
        assert_eq!(engine.dedupe_window, defaults.dedupe_window);
        assert_eq!(
            engine.max_active_instances_per_profile,
            defaults.max_active_instances_per_profile
        );
        assert_eq!(
            engine.max_events_per_profile_per_sec,
            defaults.max_events_per_profile_per_sec
        );
        assert_eq!(engine.instance_limits, InstanceLimits::DEFAULT);
        assert_eq!(engine.max_instance_lifetime, defaults.max_instance_lifetime);
        assert_eq!(engine.trait_limits, defaults.trait_limits);
        assert_eq!(
            engine.owner.map(|owner| owner.profile_cache),
            Some(OwnerConfig::default().profile_cache)
        );
        assert_eq!(retry_policy(&config), RetryPolicy::default());
        assert_eq!(
            SchedulerConfig::from_config(&config),
            SchedulerConfig::default()
        );
    }

    #[test]
    fn settings_reach_the_engine_and_delivery() {
        let mut config = Config::defaults_for(Service::Node);
        config.max_active_instances_per_profile = 3;
        config.max_events_per_profile_per_sec = 2;
        config.max_return_to_start_passes = 4;
        config.max_unique_value_chars = 10;
        config.max_instance_lifetime_days = 30;
        config.retry_budget_secs = 60;
        config.retry_backoff_base_ms = 20;
        config.retry_backoff_max_secs = 2;
        config.retry_after_max_secs = 5;
        config.profile_cache_size = 7;
        let node = Node::new(config.clone(), Roles::ALL);
        let engine = node.engine_config();
        assert_eq!(engine.owner.map(|owner| owner.profile_cache), Some(7));
        // A data plane beside stand-alone writers keeps no profile: its memory would not be
        // authoritative.
        let alone = Node::new(config, Roles::of_service(Service::DataPlane)).engine_config();
        assert_eq!(alone.owner.map(|owner| owner.profile_cache), Some(0));
        assert_eq!(engine.max_active_instances_per_profile, 3);
        assert_eq!(engine.max_events_per_profile_per_sec, 2);
        assert_eq!(
            engine.instance_limits,
            InstanceLimits {
                max_return_to_start_passes: 4,
                max_unique_value_chars: 10,
            }
        );
        assert_eq!(
            engine.max_instance_lifetime,
            Duration::from_secs(30 * 86_400)
        );
        let retry = node.delivery_config().expect("valid").retry;
        assert_eq!(retry.budget, Duration::from_secs(60));
        assert_eq!(retry.base_delay, Duration::from_millis(20));
        assert_eq!(retry.max_delay, Duration::from_secs(2));
        assert_eq!(retry.max_retry_after, Duration::from_secs(5));
    }
}

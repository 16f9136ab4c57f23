//! Harness for the end-to-end tests: starts real services on `127.0.0.1:0` against a fresh
//! database per test and hands out real gRPC clients.
//!
//! Every test body runs once per backend through [`journeys_testkit::each_backend`] (SQLite
//! always, MariaDB when `JOURNEYS_TEST_MYSQL_URL` is set). The webhook sink and `eventually`
//! are the test kit's.

use std::net::SocketAddr;
use std::path::PathBuf;

use journeys::{Node, Role, Roles};
use journeys_proto::v1::audience_service_client::AudienceServiceClient;
use journeys_proto::v1::catalog_service_client::CatalogServiceClient;
use journeys_proto::v1::destination_service_client::DestinationServiceClient;
use journeys_proto::v1::instance_service_client::InstanceServiceClient;
use journeys_proto::v1::journey_service_client::JourneyServiceClient;
use journeys_proto::v1::profile_service_client::ProfileServiceClient;
use journeys_proto::v1::source_service_client::SourceServiceClient;
use journeys_runtime::config::{Config, DEV_DESTINATION_ALLOW, Service};
use journeys_runtime::shutdown::Shutdown;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A control plane running in this process: a node with the control-plane role.
pub struct ControlPlane {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), journeys::Error>>,
}

/// The destination allow-list of tests whose webhook sinks listen on loopback (what
/// `journeys dev` allows by default).
#[must_use]
pub fn loopback() -> Vec<String> {
    DEV_DESTINATION_ALLOW
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// How to start a control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub admin_token: Option<String>,
    pub allow_short_durations: bool,
    /// The destination allow-list; `None` allows loopback, where test sinks listen.
    pub destination_allow: Option<Vec<String>>,
}

impl ControlPlane {
    /// Starts a control plane on `127.0.0.1:0` over the database at `database_url`.
    pub async fn start(database_url: &str, options: Options) -> anyhow::Result<Self> {
        let mut config = Config::defaults_for(Service::ControlPlane);
        config.database_url = database_url.to_owned();
        config.admin_token = options.admin_token;
        config.allow_short_durations = options.allow_short_durations;
        config.grpc_addr = "127.0.0.1:0".parse()?;
        // Test sends go to sinks on loopback unless a test says otherwise.
        config.destination_allow = options.destination_allow.unwrap_or_else(loopback);
        let node = Node::new(config, Roles::of(&[Role::ControlPlane]));
        let listeners = node.bind().await?;
        let addr = listeners.grpc_addr()?;
        let shutdown = Shutdown::new();
        let task = tokio::spawn(node.serve(listeners, shutdown.wait()));
        let cp = Self {
            addr,
            shutdown,
            task,
        };
        cp.wait_ready().await?;
        Ok(cp)
    }

    /// Waits until health reports SERVING (migrations done, listening).
    async fn wait_ready(&self) -> anyhow::Result<()> {
        stack::wait_serving(self.addr, || self.task.is_finished()).await
    }

    /// A channel to this control plane.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    /// Clients for every control-plane service on one channel.
    pub async fn clients(&self) -> anyhow::Result<Clients> {
        Ok(Clients::new(self.channel().await?))
    }

    /// Triggers a graceful shutdown and waits for the server to stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.task.await??;
        Ok(())
    }
}

/// One client per control-plane service.
pub struct Clients {
    pub journeys: JourneyServiceClient<Channel>,
    pub destinations: DestinationServiceClient<Channel>,
    pub audiences: AudienceServiceClient<Channel>,
    pub sources: SourceServiceClient<Channel>,
    pub catalog: CatalogServiceClient<Channel>,
    pub profiles: ProfileServiceClient<Channel>,
    pub instances: InstanceServiceClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        Self {
            journeys: JourneyServiceClient::new(channel.clone()),
            destinations: DestinationServiceClient::new(channel.clone()),
            audiences: AudienceServiceClient::new(channel.clone()),
            sources: SourceServiceClient::new(channel.clone()),
            catalog: CatalogServiceClient::new(channel.clone()),
            profiles: ProfileServiceClient::new(channel.clone()),
            instances: InstanceServiceClient::new(channel),
        }
    }
}

/// The repository root (for `examples/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// An example definition from `examples/`, decoded from its grpcurl JSON into a request.
pub fn example(name: &str) -> anyhow::Result<journeys_proto::v1::CreateJourneyRequest> {
    let text = std::fs::read_to_string(repo_root().join("examples").join(name))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    journey_request_from_json(&json)
}

/// Builds a `CreateJourneyRequest` from grpcurl-style JSON (the proto3 JSON mapping), using
/// the descriptor set so that the test reads exactly what grpcurl would send.
pub fn journey_request_from_json(
    json: &serde_json::Value,
) -> anyhow::Result<journeys_proto::v1::CreateJourneyRequest> {
    json_codec::decode(json, "journeys.v1.CreateJourneyRequest")
}

mod json_codec;

/// Decodes grpcurl-style JSON (the proto3 JSON mapping) as the message `full_name`, e.g.
/// `journeys.v1.CreateDestinationRequest`, through the descriptor set.
pub fn request_from_json<T: prost::Message + Default>(
    json: &serde_json::Value,
    full_name: &str,
) -> anyhow::Result<T> {
    json_codec::decode(json, full_name)
}

pub mod http;
pub mod ingest;
pub mod stack;

pub use stack::{Stack, StackClients, StackOptions};

/// Runs `body` once per configured backend with a fresh database URL, removing the database
/// afterwards. The backend's name is attached to any failure.
pub async fn on_each_backend<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use anyhow::Context;
    journeys_testkit::each_backend(async |db| {
        body(db.url().to_owned())
            .await
            .with_context(|| format!("on {:?}", db.backend()))
    })
    .await
}

//! The whole product in this process: `journeys dev`'s node (control plane, data plane,
//! scheduler and outbox dispatcher over one store) on `127.0.0.1:0`, with clients for every
//! service and helpers for the set-up most tests share (a source, a webhook destination,
//! catalog events, an audience, a published journey).

use std::net::SocketAddr;
use std::time::Duration;

use journeys::{Listeners, Node};
use journeys_proto::v1 as pb;
use journeys_proto::v1::audience_service_client::AudienceServiceClient;
use journeys_proto::v1::catalog_service_client::CatalogServiceClient;
use journeys_proto::v1::cluster_service_client::ClusterServiceClient;
use journeys_proto::v1::destination_service_client::DestinationServiceClient;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use journeys_proto::v1::instance_service_client::InstanceServiceClient;
use journeys_proto::v1::journey_service_client::JourneyServiceClient;
use journeys_proto::v1::profile_service_client::ProfileServiceClient;
use journeys_proto::v1::scheduler_service_client::SchedulerServiceClient;
use journeys_proto::v1::source_service_client::SourceServiceClient;
use journeys_runtime::config::{Config, Service};
use journeys_runtime::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::http::HttpClient;
use crate::journey_request_from_json;

/// How long after a publish or archive a data plane in another process is documented to act
/// on it (its published-journey cache polls the store), plus a margin for a busy CI machine.
pub const JOURNEY_CACHE_REFRESH: Duration = Duration::from_millis(1300);

/// How to start a [`Stack`].
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    /// Allow second-scale delays and holds (`JOURNEYS_ALLOW_SHORT_DURATIONS`).
    pub allow_short_durations: bool,
    /// Bearer token required on control-plane and scheduler calls.
    pub admin_token: Option<String>,
    /// The node's id in partition ownership (`JOURNEYS_NODE_ID`); the host name when unset.
    pub node_id: Option<String>,
    /// Changes the configuration before the node starts (operator limits and the like), as
    /// a config file, the environment or flags would.
    pub configure: Option<fn(&mut Config)>,
}

/// `journeys dev` running in this process on ephemeral ports.
pub struct Stack {
    grpc: SocketAddr,
    http: SocketAddr,
    admin_token: Option<String>,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), journeys::Error>>,
}

impl Stack {
    /// Starts every service over the database at `database_url` and waits until gRPC health
    /// reports SERVING.
    pub async fn start(database_url: &str, options: StackOptions) -> anyhow::Result<Stack> {
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await?;
        let http_listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut config = Config::defaults_for(Service::Dev);
        config.database_url = database_url.to_owned();
        config.grpc_addr = grpc_listener.local_addr()?;
        config.http_addr = http_listener.local_addr()?;
        config.admin_token.clone_from(&options.admin_token);
        config.allow_short_durations = options.allow_short_durations;
        config.node_id.clone_from(&options.node_id);
        if let Some(configure) = options.configure {
            configure(&mut config);
        }
        let shutdown = Shutdown::new();
        let stack = Stack {
            grpc: config.grpc_addr,
            http: config.http_addr,
            admin_token: options.admin_token,
            task: tokio::spawn(Node::dev(config).serve(
                Listeners::new(grpc_listener, Some(http_listener)),
                shutdown.wait(),
            )),
            shutdown,
        };
        wait_serving(stack.grpc, || stack.task.is_finished()).await?;
        Ok(stack)
    }

    /// The gRPC address (every service).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// Base URL of the Segment-compatible HTTP API, e.g. `http://127.0.0.1:41234`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// An HTTP client for the Segment-compatible API.
    pub fn http(&self) -> HttpClient {
        HttpClient::new(self.http_base())
    }

    /// Clients for every service on one channel; control-plane and scheduler calls carry the
    /// admin token when the stack has one.
    pub async fn clients(&self) -> anyhow::Result<StackClients> {
        StackClients::connect(self.grpc, self.admin_token.as_deref()).await
    }

    /// Triggers a graceful shutdown and waits for every service to stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .map_err(|_| anyhow::anyhow!("journeys dev did not stop within 30 s"))???;
        Ok(())
    }
}

/// Waits until `grpc.health.v1.Health/Check` on `addr` reports SERVING; fails at once when
/// `exited()` says the server is gone, and after 30 s otherwise.
pub async fn wait_serving(
    addr: SocketAddr,
    mut exited: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            let mut health = HealthClient::new(channel);
            if let Ok(reply) = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                && reply.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return Ok(());
            }
        }
        if exited() {
            anyhow::bail!("the server on {addr} exited during start-up");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the server on {addr} did not report SERVING within 30 s")
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// A bearer for `token` (none for `None`).
    pub fn new(token: Option<&str>) -> anyhow::Result<Bearer> {
        Ok(Bearer(
            token
                .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
                .transpose()?,
        ))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry the admin token.
pub type AdminChannel = InterceptedService<Channel, Bearer>;

/// One client per service of a [`Stack`]. Cheap to clone (one shared channel).
#[derive(Clone)]
pub struct StackClients {
    pub journeys: JourneyServiceClient<AdminChannel>,
    pub destinations: DestinationServiceClient<AdminChannel>,
    pub audiences: AudienceServiceClient<AdminChannel>,
    pub sources: SourceServiceClient<AdminChannel>,
    pub catalog: CatalogServiceClient<AdminChannel>,
    pub profiles: ProfileServiceClient<AdminChannel>,
    pub instances: InstanceServiceClient<AdminChannel>,
    pub scheduler: SchedulerServiceClient<AdminChannel>,
    pub cluster: ClusterServiceClient<AdminChannel>,
    /// Ingestion; calls carry a write key instead (see [`crate::ingest::keyed`]).
    pub ingest: IngestServiceClient<Channel>,
}

impl StackClients {
    /// Connects to the server at `addr`, sending `admin_token` on admin calls.
    pub async fn connect(addr: SocketAddr, admin_token: Option<&str>) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let bearer = Bearer::new(admin_token)?;
        let admin = || InterceptedService::new(channel.clone(), bearer.clone());
        Ok(StackClients {
            journeys: JourneyServiceClient::new(admin()),
            destinations: DestinationServiceClient::new(admin()),
            audiences: AudienceServiceClient::new(admin()),
            sources: SourceServiceClient::new(admin()),
            catalog: CatalogServiceClient::new(admin()),
            profiles: ProfileServiceClient::new(admin()),
            instances: InstanceServiceClient::new(admin()),
            scheduler: SchedulerServiceClient::new(admin()),
            cluster: ClusterServiceClient::new(admin()),
            ingest: IngestServiceClient::new(channel.clone()),
        })
    }

    /// Creates a source and returns its write key.
    pub async fn create_source(&mut self, name: &str) -> anyhow::Result<String> {
        Ok(self
            .sources
            .create_source(pb::CreateSourceRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner()
            .write_key)
    }

    /// Creates the webhook destination `id` delivering to `url`, signed with `secret` when
    /// given.
    pub async fn webhook(
        &mut self,
        id: &str,
        url: &str,
        secret: Option<&str>,
    ) -> anyhow::Result<pb::Destination> {
        Ok(self
            .destinations
            .create_destination(pb::CreateDestinationRequest {
                destination: Some(pb::Destination {
                    id: id.to_owned(),
                    name: format!("Webhook {id}"),
                    webhook: Some(pb::WebhookSettings {
                        url: url.to_owned(),
                        signing_secret: secret.unwrap_or_default().to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner())
    }

    /// Registers event names in the catalog, so journeys using them can be published before
    /// any such event arrived.
    pub async fn register_events(&mut self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            self.catalog
                .register_event(pb::RegisterEventRequest {
                    name: (*name).to_owned(),
                })
                .await?;
        }
        Ok(())
    }

    /// Creates the audience `key` with `members`.
    pub async fn audience(&mut self, key: &str, members: &[&str]) -> anyhow::Result<()> {
        self.audiences
            .create_audience(pb::CreateAudienceRequest {
                key: key.to_owned(),
                name: format!("Audience {key}"),
            })
            .await?;
        if !members.is_empty() {
            self.audiences
                .add_members(pb::AddMembersRequest {
                    key: key.to_owned(),
                    user_ids: members.iter().map(|m| (*m).to_owned()).collect(),
                })
                .await?;
        }
        Ok(())
    }

    /// Creates a journey from grpcurl-style JSON (`{"journey": {...}}`) and publishes it. In
    /// `journeys dev` the data plane sees it as soon as this returns; a data plane in another
    /// process sees it within [`JOURNEY_CACHE_REFRESH`].
    pub async fn publish(&mut self, json: &serde_json::Value) -> anyhow::Result<pb::Journey> {
        let created = self
            .journeys
            .create_journey(journey_request_from_json(json)?)
            .await?
            .into_inner();
        Ok(self
            .journeys
            .publish_journey(pb::PublishJourneyRequest {
                id: created.id,
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// Instances of `journey_id` (and of `user_id` when not empty), any state.
    pub async fn instances_of(
        &mut self,
        journey_id: &str,
        user_id: &str,
    ) -> anyhow::Result<Vec<pb::Instance>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .instances
                .list_instances(pb::ListInstancesRequest {
                    journey_id: journey_id.to_owned(),
                    user_id: user_id.to_owned(),
                    page_size: 500,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            all.extend(page.instances);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// An instance with its timeline.
    pub async fn instance(&mut self, id: &str) -> anyhow::Result<pb::Instance> {
        Ok(self
            .instances
            .get_instance(pb::GetInstanceRequest { id: id.to_owned() })
            .await?
            .into_inner())
    }

    /// Every dead letter of `destination_id`.
    pub async fn dead_letters(
        &mut self,
        destination_id: &str,
    ) -> anyhow::Result<Vec<pb::DeadLetter>> {
        Ok(self
            .destinations
            .list_dead_letters(pb::ListDeadLettersRequest {
                destination_id: destination_id.to_owned(),
                page_size: 500,
                ..Default::default()
            })
            .await?
            .into_inner()
            .dead_letters)
    }

    /// The stats of a journey.
    pub async fn stats(&mut self, journey_id: &str) -> anyhow::Result<pb::GetJourneyStatsResponse> {
        Ok(self
            .journeys
            .get_journey_stats(pb::GetJourneyStatsRequest {
                id: journey_id.to_owned(),
                ..pb::GetJourneyStatsRequest::default()
            })
            .await?
            .into_inner())
    }
}

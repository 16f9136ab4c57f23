//! The connection every command shares: where the API is (`--addr`, `JOURNEYS_ADDR`), the
//! admin token (`--token`, `JOURNEYS_ADMIN_TOKEN`) and the output format (`-o`), and the
//! generated `journeys.v1` clients over one channel.

use std::time::Duration;

use journeys_proto::v1::audience_service_client::AudienceServiceClient;
use journeys_proto::v1::catalog_service_client::CatalogServiceClient;
use journeys_proto::v1::destination_service_client::DestinationServiceClient;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use journeys_proto::v1::instance_service_client::InstanceServiceClient;
use journeys_proto::v1::journey_service_client::JourneyServiceClient;
use journeys_proto::v1::profile_service_client::ProfileServiceClient;
use journeys_proto::v1::source_service_client::SourceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::error::{Error, Result};
use super::output::Format;

/// How long connecting may take before the command fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags every `journeys <noun> <verb>` takes, before or after the verb.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Address of the Journeys gRPC API (`journeys dev`, a control plane; for `events send`, a
    /// data plane)
    #[arg(
        long,
        global = true,
        env = "JOURNEYS_ADDR",
        value_name = "URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,

    /// Admin token, sent as `authorization: Bearer <token>` (servers without one accept
    /// loopback callers only)
    #[arg(
        long,
        global = true,
        env = "JOURNEYS_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Output format: aligned columns for people, or the API's messages as JSON (the proto3
    /// JSON mapping, as grpcurl prints them) or YAML
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = Format::Table
    )]
    pub output: Format,
}

impl Global {
    /// `--addr` as a URL: a bare `host:port` means plaintext HTTP/2.
    pub fn url(&self) -> String {
        if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// A connected channel to `--addr`.
    pub async fn channel(&self) -> Result<Channel> {
        let url = self.url();
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::usage(format!("--addr {url:?} is not a URL: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT);
        endpoint.connect().await.map_err(|e| Error::Connect {
            addr: url,
            reason: error_chain(&e),
        })
    }

    /// The interceptor adding the admin token to every call.
    pub fn auth(&self) -> Result<Auth> {
        let bearer = match &self.token {
            None => None,
            Some(token) if token.is_empty() => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::usage("--token holds characters a header cannot carry"))?,
            ),
        };
        Ok(Auth { bearer })
    }

    /// The control-plane clients over one connection.
    pub async fn clients(&self) -> Result<Clients> {
        let auth = self.auth()?;
        let channel = self.channel().await?;
        let svc = || InterceptedService::new(channel.clone(), auth.clone());
        Ok(Clients {
            journeys: JourneyServiceClient::new(svc()),
            destinations: DestinationServiceClient::new(svc()),
            audiences: AudienceServiceClient::new(svc()),
            sources: SourceServiceClient::new(svc()),
            catalog: CatalogServiceClient::new(svc()),
            profiles: ProfileServiceClient::new(svc()),
            instances: InstanceServiceClient::new(svc()),
        })
    }

    /// The ingest client (authenticated by write key, not the admin token).
    pub async fn ingest(&self) -> Result<IngestServiceClient<Channel>> {
        Ok(IngestServiceClient::new(self.channel().await?))
    }
}

/// Adds `authorization: Bearer <token>` when a token is set.
#[derive(Debug, Clone)]
pub struct Auth {
    bearer: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// A client of one service, with the admin token.
pub type Svc = InterceptedService<Channel, Auth>;

/// One client per control-plane service.
pub struct Clients {
    pub journeys: JourneyServiceClient<Svc>,
    pub destinations: DestinationServiceClient<Svc>,
    pub audiences: AudienceServiceClient<Svc>,
    pub sources: SourceServiceClient<Svc>,
    pub catalog: CatalogServiceClient<Svc>,
    pub profiles: ProfileServiceClient<Svc>,
    pub instances: InstanceServiceClient<Svc>,
}

/// An error with its causes, `a: b: c` (transport errors say little at the top).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

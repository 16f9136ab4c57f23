//! What a grpcurl user relies on, checked with real clients: with no proto files at hand,
//! server reflection (v1alpha, which grpcurl 1.8 speaks, and v1) lists and describes every
//! control-plane service, and health reports SERVING.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use journeys_tests::{ControlPlane, Options, on_each_backend};
use prost::Message;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1 as refl_v1;
use tonic_reflection::pb::v1alpha as refl_v1alpha;

const EXPECTED: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "journeys.v1.AudienceService",
    "journeys.v1.CatalogService",
    "journeys.v1.ClusterService",
    "journeys.v1.DestinationService",
    "journeys.v1.InstanceService",
    "journeys.v1.JourneyService",
    "journeys.v1.ProfileService",
    "journeys.v1.SourceService",
];

async fn v1alpha(
    channel: tonic::transport::Channel,
    request: refl_v1alpha::server_reflection_request::MessageRequest,
) -> anyhow::Result<refl_v1alpha::server_reflection_response::MessageResponse> {
    let mut client = refl_v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = refl_v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await?
        .into_inner();
    let resp = stream
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no reflection response"))??;
    resp.message_response
        .ok_or_else(|| anyhow::anyhow!("empty reflection response"))
}

async fn v1(
    channel: tonic::transport::Channel,
    request: refl_v1::server_reflection_request::MessageRequest,
) -> anyhow::Result<refl_v1::server_reflection_response::MessageResponse> {
    let mut client = refl_v1::server_reflection_client::ServerReflectionClient::new(channel);
    let req = refl_v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await?
        .into_inner();
    let resp = stream
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no reflection response"))??;
    resp.message_response
        .ok_or_else(|| anyhow::anyhow!("empty reflection response"))
}

#[tokio::test]
async fn reflection_lists_and_describes_every_service_and_health_is_serving() -> anyhow::Result<()>
{
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let channel = cp.channel().await?;

        // list (v1alpha and v1): exactly the services this port serves.
        use refl_v1alpha::server_reflection_request::MessageRequest as A;
        use refl_v1alpha::server_reflection_response::MessageResponse as AR;
        let AR::ListServicesResponse(list) =
            v1alpha(channel.clone(), A::ListServices(String::new())).await?
        else {
            anyhow::bail!("unexpected v1alpha reply to list");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, EXPECTED);

        use refl_v1::server_reflection_request::MessageRequest as B;
        use refl_v1::server_reflection_response::MessageResponse as BR;
        let BR::ListServicesResponse(list) =
            v1(channel.clone(), B::ListServices(String::new())).await?
        else {
            anyhow::bail!("unexpected v1 reply to list");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, EXPECTED);

        // describe: every journeys service resolves to a file that defines it, with its RPCs.
        for service in EXPECTED.iter().filter(|s| s.starts_with("journeys.")) {
            let AR::FileDescriptorResponse(files) = v1alpha(
                channel.clone(),
                A::FileContainingSymbol((*service).to_owned()),
            )
            .await?
            else {
                anyhow::bail!("{service}: no file descriptor");
            };
            let short = service.trim_start_matches("journeys.v1.");
            let defined = files.file_descriptor_proto.iter().any(|bytes| {
                prost_types::FileDescriptorProto::decode(bytes.as_slice()).is_ok_and(|f| {
                    f.service
                        .iter()
                        .any(|s| s.name() == short && !s.method.is_empty())
                })
            });
            assert!(defined, "{service} is not described");
        }
        // A request message can be described too (grpcurl describe journeys.v1.Journey).
        let BR::FileDescriptorResponse(_) = v1(
            channel.clone(),
            B::FileContainingSymbol("journeys.v1.Journey".to_owned()),
        )
        .await?
        else {
            anyhow::bail!("journeys.v1.Journey is not described");
        };

        // health: overall and per service.
        let mut health = HealthClient::new(channel);
        for service in ["", "journeys.v1.JourneyService"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await?
                .into_inner()
                .status;
            assert_eq!(status, 1, "health of '{service}' is SERVING");
        }
        cp.stop().await
    })
    .await
}

//! A real server on 127.0.0.1:0: health, reflection v1 and v1alpha, admin auth on a service,
//! and health going NOT_SERVING before a graceful stop.

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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use journeys_runtime::grpc::GrpcServer;
use journeys_runtime::{AdminAuth, Shutdown};
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ADMIN_TOKEN: &str = "test-admin-token";

/// A stand-in for a Journeys service: answers every call with UNIMPLEMENTED, so a test can tell
/// "rejected by auth" (UNAUTHENTICATED) from "reached the service".
#[derive(Clone)]
struct Probe;

impl NamedService for Probe {
    const NAME: &'static str = "journeys.test.v1.Probe";
}

impl tower::Service<http::Request<tonic::body::Body>> for Probe {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::unimplemented("probe reached").into_http()))
    }
}

/// The descriptor reflection serves for [`Probe`].
fn probe_descriptor_set() -> Vec<u8> {
    use prost_types::{
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };

    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("journeys/test/v1/probe.proto".to_owned()),
            package: Some("journeys.test.v1".to_owned()),
            dependency: vec!["google/protobuf/empty.proto".to_owned()],
            service: vec![ServiceDescriptorProto {
                name: Some("Probe".to_owned()),
                method: vec![MethodDescriptorProto {
                    name: Some("Ping".to_owned()),
                    input_type: Some(".google.protobuf.Empty".to_owned()),
                    output_type: Some(".google.protobuf.Empty".to_owned()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto3".to_owned()),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

struct RunningServer {
    addr: SocketAddr,
    shutdown: Shutdown,
    handle: tokio::task::JoinHandle<Result<(), journeys_runtime::grpc::ServeError>>,
}

async fn start(drain_timeout: Duration) -> RunningServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = Shutdown::new();
    let wait = shutdown.wait();
    let routes = Routes::new(InterceptedService::new(
        Probe,
        AdminAuth::new(Some(ADMIN_TOKEN.to_owned())),
    ));
    let handle = tokio::spawn(async move {
        let descriptor_set = probe_descriptor_set();
        GrpcServer::new(routes)
            .service(Probe::NAME)
            .descriptor_set(&descriptor_set)
            .drain_timeout(drain_timeout)
            .serve(listener, wait)
            .await
    });
    RunningServer {
        addr,
        shutdown,
        handle,
    }
}

async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

async fn health_status(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

async fn list_services_v1(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1 reflection call")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1 response")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1 reflection response: {other:?}"),
    }
}

async fn list_services_v1alpha(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1alpha reflection call")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1alpha response")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1alpha reflection response: {other:?}"),
    }
}

/// Describes `symbol` over v1alpha (what `grpcurl describe` does) and returns the file names.
async fn describe_v1alpha(channel: Channel, symbol: &str) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("describe call")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("describe response")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                prost_types::FileDescriptorProto::decode(bytes.as_slice())
                    .expect("file descriptor")
                    .name()
                    .to_owned()
            })
            .collect(),
        other => panic!("unexpected describe response: {other:?}"),
    }
}

async fn ping(channel: Channel, token: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("client ready");
    let mut request = Request::new(());
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata value"),
        );
    }
    grpc.unary::<(), (), _>(
        request,
        http::uri::PathAndQuery::from_static("/journeys.test.v1.Probe/Ping"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("the probe never answers OK")
}

#[tokio::test]
async fn serves_health_reflection_and_auth_then_drains_on_shutdown() {
    let server = start(Duration::from_secs(2)).await;
    let channel = connect(server.addr).await;

    // Health: the server and each listed service are SERVING; others are unknown.
    assert_eq!(
        health_status(channel.clone(), "").await.expect("check"),
        ServingStatus::Serving
    );
    assert_eq!(
        health_status(channel.clone(), Probe::NAME)
            .await
            .expect("check"),
        ServingStatus::Serving
    );
    let unknown = health_status(channel.clone(), "journeys.v1.Nope")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    // Reflection: both versions list the service, health and both reflection services.
    for services in [
        list_services_v1(channel.clone()).await,
        list_services_v1alpha(channel.clone()).await,
    ] {
        for expected in [
            Probe::NAME,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
    let files = describe_v1alpha(channel.clone(), "journeys.test.v1.Probe").await;
    assert!(
        files.contains(&"journeys/test/v1/probe.proto".to_owned()),
        "{files:?}"
    );

    // Admin auth on the service; health and reflection above needed no token.
    let status = ping(channel.clone(), None).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().starts_with("missing bearer token"),
        "{}",
        status.message()
    );
    let status = ping(channel.clone(), Some("wrong")).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "invalid bearer token");
    let status = ping(channel.clone(), Some(ADMIN_TOKEN)).await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Shutdown: a watcher sees NOT_SERVING before the server stops, and the open watch stream
    // cannot hold the server past its drain timeout.
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("watch message")
        .expect("first status");
    assert_eq!(first.status(), ServingStatus::Serving);

    server.shutdown.trigger();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("status change in time")
        .expect("watch message")
        .expect("second status");
    assert_eq!(next.status(), ServingStatus::NotServing);

    let result = tokio::time::timeout(Duration::from_secs(10), server.handle)
        .await
        .expect("server stops within the drain timeout")
        .expect("server task");
    assert!(result.is_ok(), "{result:?}");

    // The port no longer accepts connections.
    let reconnect = Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(reconnect.is_err(), "server still accepts connections");
}

#[tokio::test]
async fn an_idle_server_stops_promptly() {
    let server = start(Duration::from_secs(60)).await;
    let channel = connect(server.addr).await;
    assert_eq!(
        health_status(channel.clone(), "").await.expect("check"),
        ServingStatus::Serving
    );
    drop(channel);

    server.shutdown.trigger();
    let result = tokio::time::timeout(Duration::from_secs(10), server.handle)
        .await
        .expect("idle server stops long before its 60 s drain timeout")
        .expect("server task");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_bad_descriptor_set_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let result = journeys_runtime::grpc::serve(
        listener,
        Routes::new(Probe),
        &[Probe::NAME],
        &[b"\x0a\x05not a descriptor"],
        std::future::pending(),
    )
    .await;
    let err = result.expect_err("must fail");
    assert!(err.to_string().starts_with("server reflection"), "{err}");
}

/// One HTTP/2 frame as read off the wire: its type, flags and payload.
struct Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// The next frame, or `None` once the server closed the connection.
async fn read_frame(tcp: &mut tokio::net::TcpStream) -> Option<Frame> {
    use tokio::io::AsyncReadExt as _;
    let mut head = [0_u8; 9];
    tcp.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0_u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        payload,
    })
}

/// A client that opens an HTTP/2 connection and then goes silent (a parked or dead peer): the
/// server announces its stream limit, pings it once the connection is idle, and closes it when
/// the ping goes unanswered, within the keep-alive interval and timeout.
#[tokio::test]
async fn a_grpc_connection_gets_a_stream_limit_and_is_closed_when_its_peer_goes_silent() {
    use journeys_runtime::grpc::{
        GRPC_KEEPALIVE_INTERVAL, GRPC_KEEPALIVE_TIMEOUT, GRPC_MAX_CONCURRENT_STREAMS,
    };
    use tokio::io::AsyncWriteExt as _;

    let server = start(Duration::from_secs(1)).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The client preface and an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();

    let settings = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut tcp))
        .await
        .expect("the server's settings in time")
        .expect("a frame");
    assert_eq!((settings.kind, settings.flags), (SETTINGS, 0));
    let streams = settings.payload.chunks_exact(6).find_map(|setting| {
        (u16::from_be_bytes([setting[0], setting[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    });
    assert_eq!(streams, Some(GRPC_MAX_CONCURRENT_STREAMS));
    // Acknowledge the settings, then answer nothing more.
    tcp.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();

    let bound = GRPC_KEEPALIVE_INTERVAL + GRPC_KEEPALIVE_TIMEOUT + Duration::from_secs(10);
    let mut pinged = None;
    let closed = tokio::time::timeout(bound, async {
        while let Some(frame) = read_frame(&mut tcp).await {
            if frame.kind == PING && frame.flags & 0x1 == 0 && pinged.is_none() {
                pinged = Some(opened.elapsed());
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {bound:?}"
    );
    let pinged = pinged.expect("a keep-alive ping before the close");
    assert!(
        pinged >= GRPC_KEEPALIVE_INTERVAL - Duration::from_secs(1),
        "pinged after {pinged:?}"
    );
    let closed_after = opened.elapsed();
    assert!(
        closed_after >= pinged + GRPC_KEEPALIVE_TIMEOUT - Duration::from_secs(1),
        "closed {closed_after:?} after opening, pinged at {pinged:?}"
    );

    // The server itself is fine.
    let channel = connect(server.addr).await;
    assert_eq!(
        health_status(channel, "").await.expect("check"),
        ServingStatus::Serving
    );
    server.shutdown.trigger();
}

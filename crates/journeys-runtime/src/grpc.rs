//! Serving a set of tonic services the way every Journeys process does: with
//! `grpc.health.v1.Health`, server reflection in both `grpc.reflection.v1` and
//! `grpc.reflection.v1alpha` (grpcurl 1.8 speaks only v1alpha), a tracing span per request, and
//! a graceful drain bounded in time.
//!
//! Health follows the server's life: every listed service and the whole server (`""`) report
//! `NOT_SERVING` until the listener is handed to tonic, `SERVING` while it accepts calls, and
//! `NOT_SERVING` again as soon as shutdown starts, before connections are drained, so load
//! balancers stop sending work first.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::trace_context;

/// How long in-flight calls and open streams get to finish after shutdown starts. Long-lived
/// streams (health watches, ingest streams) would otherwise hold the process forever.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC or HTTP server ([`crate::http::serve`]) could not start or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A descriptor set passed for reflection does not decode.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The listener is unusable.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The transport failed.
    #[error("gRPC server on {addr}: {source}")]
    Transport {
        /// The listening address.
        addr: SocketAddr,
        /// The transport's error.
        source: tonic::transport::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// The listening address.
        addr: SocketAddr,
        /// The server's error.
        source: std::io::Error,
    },
}

/// Serves `routes` plus health and reflection on `listener` until `shutdown` completes, then
/// drains for at most [`DEFAULT_DRAIN_TIMEOUT`].
///
/// `service_names` are the fully qualified names health reports on (e.g.
/// `journeys.v1.JourneyService`); `descriptor_sets` are the encoded `FileDescriptorSet`s that
/// describe them for reflection (health's and reflection's own are added here).
///
/// # Errors
///
/// See [`ServeError`].
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_names: &[&str],
    descriptor_sets: &[&[u8]],
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut server = GrpcServer::new(routes);
    for name in service_names {
        server = server.service(name);
    }
    for set in descriptor_sets {
        server = server.descriptor_set(set);
    }
    server.serve(listener, shutdown).await
}

/// How often an idle gRPC connection is pinged; one that does not answer within
/// [`GRPC_KEEPALIVE_TIMEOUT`] is closed.
pub const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keep-alive ping may go unanswered.
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent streams (calls) on one gRPC connection.
pub const GRPC_MAX_CONCURRENT_STREAMS: u32 = 256;

/// Builder form of [`serve`], for callers that need a different drain timeout or want the
/// [`HealthReporter`] (e.g. to report a dependency going down).
#[derive(Debug)]
pub struct GrpcServer<'a> {
    routes: Routes,
    service_names: Vec<String>,
    descriptor_sets: Vec<&'a [u8]>,
    drain_timeout: Duration,
    health: HealthReporter,
}

impl<'a> GrpcServer<'a> {
    /// A server for `routes` (build them with `Routes::new(svc).add_service(svc2)`).
    #[must_use]
    pub fn new(routes: Routes) -> GrpcServer<'a> {
        GrpcServer {
            routes,
            service_names: Vec::new(),
            descriptor_sets: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            health: HealthReporter::new(),
        }
    }

    /// Reports health for the fully qualified service `name`.
    #[must_use]
    pub fn service(mut self, name: &str) -> GrpcServer<'a> {
        self.service_names.push(name.to_owned());
        self
    }

    /// Adds an encoded `FileDescriptorSet` to reflection.
    #[must_use]
    pub fn descriptor_set(mut self, encoded: &'a [u8]) -> GrpcServer<'a> {
        self.descriptor_sets.push(encoded);
        self
    }

    /// Bounds the graceful drain; after it `serve` returns even if streams are still open.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> GrpcServer<'a> {
        self.drain_timeout = timeout;
        self
    }

    /// The health reporter this server serves; statuses set on it are visible to clients.
    #[must_use]
    pub fn health_reporter(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves until `shutdown` completes, then drains; see [`serve`].
    ///
    /// # Errors
    ///
    /// See [`ServeError`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr()?;
        let GrpcServer {
            routes,
            service_names,
            descriptor_sets,
            drain_timeout,
            health,
        } = self;
        let mut health_names = service_names;
        health_names.push(String::new());
        set_status(&health, &health_names, ServingStatus::NotServing).await;

        let routes = with_health_and_reflection(routes, &health, &health_names, &descriptor_sets)?;

        // `TcpIncoming` rather than a bare `TcpListenerStream`: it sets TCP_NODELAY, without
        // which small unary calls can wait for delayed ACKs (tens of milliseconds).
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

        let (drain_started, drain_started_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = {
            let health = health.clone();
            let health_names = health_names.clone();
            async move {
                shutdown.await;
                set_status(&health, &health_names, ServingStatus::NotServing).await;
                tracing::info!(%addr, "gRPC server draining");
                let _ = drain_started.send(());
            }
        };
        // Limits against parked or abusive clients: dead connections are found by HTTP/2
        // pings, one connection cannot open unbounded streams, and a stalled stream times out
        // its keep-alive like any other.
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(GRPC_MAX_CONCURRENT_STREAMS))
            .tcp_nodelay(true)
            .trace_fn(trace_context::grpc_request_span)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal);
        let mut server = std::pin::pin!(server);

        set_status(&health, &health_names, ServingStatus::Serving).await;
        tracing::info!(%addr, services = ?&health_names[..health_names.len() - 1], "gRPC server listening");

        let transport_error = |source| ServeError::Transport { addr, source };
        tokio::select! {
            // Biased so a finished server is never polled again by the drain below: the drain
            // notice and the server's end can arrive in the same wake-up.
            biased;
            result = &mut server => return result.map_err(transport_error),
            _ = drain_started_rx => {}
        }
        match tokio::time::timeout(drain_timeout, &mut server).await {
            Ok(result) => {
                tracing::info!(%addr, "gRPC server stopped");
                result.map_err(transport_error)
            }
            Err(_) => {
                tracing::warn!(
                    %addr,
                    timeout = ?drain_timeout,
                    "gRPC connections still open after the drain timeout; stopping without waiting for them"
                );
                Ok(())
            }
        }
    }
}

/// Adds health and both reflection versions to `routes`. Reflection advertises exactly the
/// services this port serves (health and itself included), so `grpcurl list` does not show
/// services that merely share a descriptor set with them.
fn with_health_and_reflection(
    routes: Routes,
    health: &HealthReporter,
    service_names: &[String],
    descriptor_sets: &[&[u8]],
) -> Result<Routes, ServeError> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for set in descriptor_sets {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        let served = service_names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty());
        for name in served.chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]) {
            builder = builder.with_service_name(name);
        }
        builder
    };
    let reflection_v1 = builder().build_v1()?;
    let reflection_v1alpha = builder().build_v1alpha()?;
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health.clone()),
    );
    Ok(routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

async fn set_status(health: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        health.set_service_status(name, status).await;
    }
}

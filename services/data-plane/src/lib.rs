//! The Journeys data plane: event ingestion over gRPC (`journeys.v1.IngestService`) and the
//! Segment-compatible HTTP API, authenticated by source write keys, handing validated events to
//! an [`EventSink`] (the engine) and answering each client only after the sink acknowledged.
//!
//! A process runs it through the composition root (`journeys::node`), which mounts
//! [`DataPlane::ingest_service`] and [`DataPlane::http_router`] beside the other roles and, when
//! no scheduler runs in the same process, beats the fairness watermark ([`heartbeat`]).
//! [`DataPlane::serve`] (or [`serve_with`]) serves the edge alone over any sink, with the same
//! server settings, for tests of the edge.
//!
//! Limits (SPEC.md section 8): [`MAX_EVENT_BYTES`] per event, [`MAX_REQUEST_BYTES`] per HTTP
//! request after decompression, [`MAX_BATCH_EVENTS`] events per batch.

mod acks;
pub mod auth;
mod convert;
mod draft;
mod error;
mod grpc;
pub mod heartbeat;
mod http;
mod segment;

use std::future::Future;

use journeys_engine::EventSink;
use journeys_proto::v1::ingest_service_server::IngestServiceServer;
use journeys_runtime::grpc::{GrpcServer, ServeError};
use journeys_store::Store;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use acks::{INTERNAL, RATE_LIMITED, UNAVAILABLE};
pub use auth::{AuthError, WriteKeys, hash_write_key};
pub use draft::MAX_ID_CHARS;
pub use error::{ErrorCode, EventError};
pub use grpc::{IngestApi, MAX_IN_FLIGHT};
pub use heartbeat::{Heartbeat, WATERMARK_HEARTBEAT};

/// Fully qualified name of the gRPC service the data plane serves.
pub const SERVICE_NAME: &str = "journeys.v1.IngestService";

/// Largest accepted event: 32 KB (Segment's limit), as JSON on HTTP, encoded on gRPC.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;

/// Largest accepted HTTP request body, after gzip decompression: 500 KB.
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;

/// Most events in one batch (HTTP `/v1/batch`, gRPC batches).
pub const MAX_BATCH_EVENTS: usize = 2500;

/// `Retry-After` (seconds) when an event was rate limited: the per-profile limit is per second.
pub const RATE_LIMITED_RETRY_AFTER_SECS: u64 = 1;

/// `Retry-After` (seconds) when the engine or the store cannot take events right now.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// The ingestion front ends over one sink and one write-key cache. Cheap to clone.
///
/// Ordering contract with the sink: on a gRPC stream, the `submit` futures of successive
/// requests are created and first polled in request order, possibly before earlier ones
/// completed (pipelining). A sink that keeps per-profile order should therefore take its place
/// in line synchronously on the first poll (e.g. by sending to its lane channels), before any
/// `.await` that could let a later request overtake.
pub struct DataPlane<S> {
    sink: S,
    keys: WriteKeys,
}

impl<S: Clone> Clone for DataPlane<S> {
    fn clone(&self) -> Self {
        DataPlane {
            sink: self.sink.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl<S: EventSink> DataPlane<S> {
    /// Events go to `sink`; write keys are resolved through `store` with the default cache
    /// lifetimes.
    #[must_use]
    pub fn new(sink: S, store: Store) -> DataPlane<S> {
        DataPlane::with_write_keys(sink, WriteKeys::new(store))
    }

    /// Like [`DataPlane::new`] with a write-key resolver of your own (e.g. other cache
    /// lifetimes).
    #[must_use]
    pub fn with_write_keys(sink: S, keys: WriteKeys) -> DataPlane<S> {
        DataPlane { sink, keys }
    }

    /// Where validated events go.
    #[must_use]
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The write-key resolver.
    #[must_use]
    pub fn write_keys(&self) -> &WriteKeys {
        &self.keys
    }

    /// The Segment-compatible HTTP API; see [`http_router`].
    pub fn http_router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// `IngestService` alone (without health and reflection); see [`grpc_routes`].
    #[must_use]
    pub fn grpc_routes(&self) -> Routes {
        Routes::new(self.ingest_service())
    }

    /// The tonic service, for adding to a `Routes` built elsewhere (`journeys dev`).
    #[must_use]
    pub fn ingest_service(&self) -> IngestServiceServer<IngestApi<S>> {
        IngestServiceServer::new(IngestApi::new(self.clone()))
    }

    /// Serves gRPC (`IngestService` with health and reflection) on `grpc_listener` and the
    /// HTTP API on `http_listener` until `shutdown` completes, then drains both (each for at
    /// most about ten seconds).
    ///
    /// # Errors
    /// A listener or transport failure of either server; the other is stopped then.
    pub async fn serve(
        self,
        grpc_listener: TcpListener,
        http_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                // An error means the sender is gone, which also means stop.
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        let grpc = GrpcServer::new(self.grpc_routes())
            .service(SERVICE_NAME)
            .descriptor_set(journeys_proto::FILE_DESCRIPTOR_SET)
            .serve(grpc_listener, stopped());
        let http = journeys_runtime::http::serve(http_listener, self.http_router(), stopped());
        let signal = async move {
            shutdown.await;
            tracing::info!("data plane shutting down");
            let _ = stop.send(true);
            Ok::<(), ServeError>(())
        };
        tokio::try_join!(grpc, http, signal)?;
        Ok(())
    }
}

/// The Segment-compatible HTTP API over `plane`: `POST /v1/track`, `/v1/identify`, `/v1/page`,
/// `/v1/screen`, `/v1/group`, `/v1/alias`, `/v1/batch` (and analytics.js's `/v1/t`, `/v1/i`,
/// `/v1/p`, `/v1/s`, `/v1/g`, `/v1/a`, `/v1/b`), and `GET /health`.
pub fn http_router<S: EventSink>(plane: &DataPlane<S>) -> axum::Router {
    plane.http_router()
}

/// `journeys.v1.IngestService` over `plane`, without health and reflection (the server that
/// mounts it adds those, naming [`SERVICE_NAME`]).
#[must_use]
pub fn grpc_routes<S: EventSink>(plane: &DataPlane<S>) -> Routes {
    plane.grpc_routes()
}

/// Serves the data plane over `sink`, resolving write keys through `store`, on the two
/// listeners until `shutdown` completes; see [`DataPlane::serve`].
///
/// # Errors
/// See [`DataPlane::serve`].
pub async fn serve_with<S: EventSink>(
    sink: S,
    store: Store,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    DataPlane::new(sink, store)
        .serve(grpc_listener, http_listener, shutdown)
        .await
}

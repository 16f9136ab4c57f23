//! `journeys.v1.IngestService`: the bidirectional `Ingest` stream and the unary `Track`,
//! `Identify` and `Batch` calls, over any [`EventSink`].
//!
//! The stream pipelines: requests are read, validated and handed to the sink as they arrive,
//! without waiting for earlier requests' acks, while responses go out in request order (one
//! response per request, holding that request's acks). At most [`MAX_IN_FLIGHT`] requests
//! await their acks at once; past that the stream stops reading, which pushes back on the
//! client through HTTP/2 flow control.
//!
//! An event that fails validation is acknowledged `REJECTED` with its reason; the other events
//! of its request go through. A missing or bad write key fails the call with `UNAUTHENTICATED`.
//!
//! Calls are traced by the server's per-request span (`journeys_runtime::grpc`), which continues
//! a `traceparent` sent in the metadata; the engine continues that span. Refusals made here,
//! before the engine, are counted in `journeys_events_total` (rejected, by code); a failed
//! authentication counts once per call.

use std::future::Future;
use std::pin::Pin;

use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use journeys_core::model::{EventType, Timestamp};
use journeys_engine::{Ack, EventSink};
use journeys_proto::v1 as pb;
use journeys_proto::v1::ingest_request::Payload;
use journeys_proto::v1::ingest_service_server::IngestService;
use journeys_runtime::metrics;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::DataPlane;
use crate::MAX_BATCH_EVENTS;
use crate::acks::{self, Item};
use crate::auth::{AuthError, write_key_from_headers};
use crate::convert::{ack_to_proto, event_from_proto};
use crate::error::{ErrorCode, EventError};

/// Requests of one stream whose acks are awaited at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// The tonic `IngestService` implementation; a thin adapter over [`DataPlane`].
pub struct IngestApi<S> {
    plane: DataPlane<S>,
}

impl<S: EventSink> IngestApi<S> {
    pub(crate) fn new(plane: DataPlane<S>) -> IngestApi<S> {
        IngestApi { plane }
    }

    /// The write key of a call and its source's id, checked against the store (through the
    /// cache).
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<(String, String), Status> {
        let resolved = match write_key_from_headers(metadata.as_ref()) {
            Some(key) => match self.plane.write_keys().resolve(&key).await {
                Ok(source) => Ok((key, source.id.clone())),
                Err(err) => Err(err),
            },
            None => Err(AuthError::Missing),
        };
        resolved.map_err(|err| {
            refused(err.code(), 1);
            Status::from(&err)
        })
    }

    async fn unary(
        &self,
        request: Request<pb::Event>,
        kind: EventType,
    ) -> Result<Response<pb::Ack>, Status> {
        let (_, source) = self.authenticate(request.metadata()).await?;
        let mut event = event_from_proto(request.into_inner(), Some(kind), "", chrono::Utc::now())
            .map_err(|error| {
                refused(error.code.as_str(), 1);
                Status::from(error)
            })?;
        event.source_id = Some(source);
        let message_id = event.message_id.clone();
        let ack = acks::submit(self.plane.sink(), vec![event])
            .await
            .pop()
            .unwrap_or_else(|| Ack::rejected(message_id, acks::INTERNAL, "internal error"));
        Ok(Response::new(ack_to_proto(ack)))
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<pb::IngestResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: EventSink> IngestService for IngestApi<S> {
    type IngestStream = ReceiverStream<Result<pb::IngestResponse, Status>>;

    async fn ingest(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let (key, source) = self.authenticate(request.metadata()).await?;
        let (responses, rx) = mpsc::channel(MAX_IN_FLIGHT);
        let pump = pump(
            self.plane.clone(),
            key,
            source,
            request.into_inner(),
            responses,
        );
        tokio::spawn(pump.in_current_span());
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn track(&self, request: Request<pb::Event>) -> Result<Response<pb::Ack>, Status> {
        self.unary(request, EventType::Track).await
    }

    async fn identify(&self, request: Request<pb::Event>) -> Result<Response<pb::Ack>, Status> {
        self.unary(request, EventType::Identify).await
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let (_, source) = self.authenticate(request.metadata()).await?;
        let events = request.into_inner().events;
        if events.len() > MAX_BATCH_EVENTS {
            let error = too_many_events("events", events.len());
            refused(error.code.as_str(), events.len());
            return Err(Status::from(error));
        }
        let now = chrono::Utc::now();
        let items = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| item(event, &format!("events[{i}]."), now, &source))
            .collect();
        let results = acks::submit_items(self.plane.sink(), items)
            .await
            .into_iter()
            .map(ack_to_proto)
            .collect();
        Ok(Response::new(pb::BatchResponse { results }))
    }
}

/// Reads `inbound` until it ends, handing each request to the sink at once, and sends the
/// responses in request order. Stops early when the client goes away or the write key stops
/// resolving (the stream then ends with that status after the earlier responses).
async fn pump<S: EventSink>(
    plane: DataPlane<S>,
    key: String,
    source: String,
    mut inbound: Streaming<pb::IngestRequest>,
    responses: mpsc::Sender<Result<pb::IngestResponse, Status>>,
) {
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut reading = true;
    // Requests read so far, to name the one that could not be read.
    let mut read: usize = 0;
    loop {
        tokio::select! {
            // Responses first: they free in-flight slots and reach the client sooner.
            biased;
            Some(response) = pending.next(), if !pending.is_empty() => {
                let failed = response.is_err();
                if responses.send(response).await.is_err() || failed {
                    return;
                }
            }
            next = inbound.next(), if reading && pending.len() < MAX_IN_FLIGHT => match next {
                Some(Ok(request)) => {
                    read += 1;
                    // Checked per request (a cache hit, normally) so that revoking a source
                    // also stops its open streams within the cache lifetime.
                    if let Err(err) = plane.write_keys().resolve(&key).await {
                        refused(err.code(), 1);
                        let status = Status::from(&err);
                        pending.push_back(Box::pin(async move { Err(status) }));
                        reading = false;
                        continue;
                    }
                    let items = request_items(request, chrono::Utc::now(), &source);
                    let sink = plane.sink().clone();
                    // Created (and so first polled) in request order: the sink sees requests
                    // in the order they arrived.
                    pending.push_back(Box::pin(async move {
                        let acks = acks::submit_items(&sink, items).await;
                        Ok(pb::IngestResponse {
                            acks: acks.into_iter().map(ack_to_proto).collect(),
                        })
                    }));
                }
                Some(Err(status)) => {
                    // A message that could not be read (undecodable, over the size limit, nested
                    // too deep) ends the stream with an error after the earlier responses, so
                    // the client knows that it and everything after it was not taken. When
                    // the client went away, nobody reads it.
                    tracing::debug!(%status, "ingest stream read failed");
                    let status = unreadable_request(read + 1, &status);
                    pending.push_back(Box::pin(async move { Err(status) }));
                    reading = false;
                }
                None => reading = false,
            },
            else => return,
        }
        if !reading && pending.is_empty() {
            return;
        }
    }
}

/// The events of one stream request; a batch over the limit has every event refused.
fn request_items(request: pb::IngestRequest, now: Timestamp, source: &str) -> Vec<Item> {
    match request.payload {
        None => Vec::new(),
        Some(Payload::Event(event)) => vec![item(event, "event.", now, source)],
        Some(Payload::Batch(batch)) => {
            let count = batch.events.len();
            if count > MAX_BATCH_EVENTS {
                let error = too_many_events("batch.events", count);
                refused(error.code.as_str(), count);
                return batch
                    .events
                    .into_iter()
                    .map(|event| Err((event.message_id, error.clone())))
                    .collect();
            }
            batch
                .events
                .into_iter()
                .enumerate()
                .map(|(i, event)| item(event, &format!("batch.events[{i}]."), now, source))
                .collect()
        }
    }
}

/// One event of a request, stamped with the `source` it came through (which scopes its
/// dedupe key), or why it was refused.
fn item(event: pb::Event, prefix: &str, now: Timestamp, source: &str) -> Item {
    let message_id = event.message_id.clone();
    match event_from_proto(event, None, prefix, now) {
        Ok(mut event) => {
            event.source_id = Some(source.to_owned());
            Ok(event)
        }
        Err(error) => {
            refused(error.code.as_str(), 1);
            Err((message_id, error))
        }
    }
}

/// Counts `n` events (or calls) refused here with `code`.
fn refused(code: &str, n: usize) {
    metrics::metrics()
        .events
        .add(&["rejected", code], u64::try_from(n).unwrap_or(u64::MAX));
}

fn too_many_events(field: &str, count: usize) -> EventError {
    EventError::new(
        ErrorCode::TooManyEvents,
        field,
        format!("holds {count} events; at most {MAX_BATCH_EVENTS} are accepted per request"),
    )
}

/// The status ending a stream whose `number`th request (1-based) could not be read.
fn unreadable_request(number: usize, cause: &Status) -> Status {
    let code = match cause.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        tonic::Code::Cancelled => tonic::Code::Cancelled,
        _ => tonic::Code::InvalidArgument,
    };
    refused("unreadable_request", 1);
    Status::new(
        code,
        format!(
            "request {number} of the stream could not be read ({}); it and the requests after \
             it were not processed, the earlier ones were answered",
            cause.message()
        ),
    )
}

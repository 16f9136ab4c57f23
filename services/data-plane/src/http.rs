//! The Segment-compatible HTTP API (SPEC.md section 8): `POST /v1/{track,identify,page,screen,
//! group,alias,batch}` (and analytics.js's one-letter aliases), plus `GET /health` and
//! `GET /metrics` (the process's [`journeys_runtime::metrics`] in the Prometheus text format).
//!
//! A request that carries a W3C `traceparent` header is traced as part of the caller's trace;
//! its events' evaluation and deliveries follow in the same trace.
//!
//! A request is all or nothing at the edge: it is read (gzip-decoded, size-limited),
//! authenticated, parsed and validated completely before any event reaches the sink, so a 400
//! or 401 means nothing of it was stored. A write key in the headers is checked before the body
//! is read; one in the body (`writeKey`) before the body is parsed: the body is only scanned up
//! to that key. Statuses: 200 `{"success": true}` when every event was
//! accepted or was a duplicate; 400 for bad input; 401 for a missing, unknown or revoked write
//! key; 429 / 503 with `Retry-After` when the engine asks the client to come back (events it
//! did accept are deduplicated by `messageId` when the request is resent).

use std::io::Read as _;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use journeys_core::model::{Event, EventType};
use journeys_engine::EventSink;
use journeys_runtime::{metrics, trace_context};
use serde_json::json;
use tracing::Instrument as _;

use crate::DataPlane;
use crate::acks::{self, Outcome};
use crate::auth::{AuthError, write_key_from_headers};
use crate::error::{ErrorCode, EventError};
use crate::segment::{Body, Endpoint};
use crate::{MAX_REQUEST_BYTES, RATE_LIMITED_RETRY_AFTER_SECS, UNAVAILABLE_RETRY_AFTER_SECS};

/// The HTTP API over `plane`.
pub(crate) fn router<S: EventSink>(plane: DataPlane<S>) -> Router {
    let mut router = Router::new();
    for (long, short, endpoint) in [
        ("track", "t", Endpoint::Single(EventType::Track)),
        ("identify", "i", Endpoint::Single(EventType::Identify)),
        ("page", "p", Endpoint::Single(EventType::Page)),
        ("screen", "s", Endpoint::Single(EventType::Screen)),
        ("group", "g", Endpoint::Single(EventType::Group)),
        ("alias", "a", Endpoint::Single(EventType::Alias)),
        ("batch", "b", Endpoint::Batch),
    ] {
        router = router
            .route(&format!("/v1/{long}"), ingest_route::<S>(endpoint))
            .route(&format!("/v1/{short}"), ingest_route::<S>(endpoint));
    }
    router
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(prometheus_metrics))
        .fallback(not_found)
        .with_state(plane)
}

fn ingest_route<S: EventSink>(endpoint: Endpoint) -> MethodRouter<DataPlane<S>> {
    post(
        move |State(plane): State<DataPlane<S>>, uri: Uri, headers: HeaderMap, body: HttpBody| {
            let span = tracing::info_span!(
                "http.request",
                otel.name = uri.path(),
                otel.kind = "server",
                http.method = "POST",
                http.status_code = tracing::field::Empty,
            );
            trace_context::set_parent_from_headers(&span, &headers);
            async move {
                let response = match ingest(&plane, endpoint, &headers, body).await {
                    Ok(()) => (StatusCode::OK, Json(json!({"success": true}))).into_response(),
                    Err(reply) => reply.into_response(),
                };
                tracing::Span::current().record("http.status_code", response.status().as_u16());
                response
            }
            .instrument(span)
        },
    )
}

async fn ingest<S: EventSink>(
    plane: &DataPlane<S>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: HttpBody,
) -> Result<(), Reply> {
    let events = match read_events(plane, endpoint, headers, body).await {
        Ok(events) => events,
        Err(reply) => {
            // Refused before reaching the engine (which counts what it gets): counted here,
            // once per request.
            metrics::metrics().events.add(&["rejected", &reply.code], 1);
            return Err(reply);
        }
    };
    let acks = acks::submit(plane.sink(), events).await;
    match acks::outcome(&acks) {
        Outcome::Stored => Ok(()),
        Outcome::RateLimited(message) => {
            Err(
                Reply::new(StatusCode::TOO_MANY_REQUESTS, acks::RATE_LIMITED, message)
                    .retry_after(RATE_LIMITED_RETRY_AFTER_SECS),
            )
        }
        Outcome::Unavailable(message) => {
            Err(
                Reply::new(StatusCode::SERVICE_UNAVAILABLE, acks::UNAVAILABLE, message)
                    .retry_after(UNAVAILABLE_RETRY_AFTER_SECS),
            )
        }
        Outcome::Overloaded(message) => Err(Reply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            journeys_engine::OVERLOADED,
            message,
        )
        .retry_after(RATE_LIMITED_RETRY_AFTER_SECS)),
        Outcome::Internal => Err(Reply::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            acks::INTERNAL,
            "internal error",
        )),
        Outcome::Refused { code, message } => {
            Err(Reply::new(StatusCode::BAD_REQUEST, code, message))
        }
    }
}

/// Reads, authenticates and validates a request: its events, or the reply refusing all of it.
async fn read_events<S: EventSink>(
    plane: &DataPlane<S>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: HttpBody,
) -> Result<Vec<Event>, Reply> {
    // A key in the headers is checked before the body is read: a bad key costs no upload.
    let header_key = write_key_from_headers(headers);
    let mut source = None;
    if let Some(key) = &header_key {
        source = Some(plane.write_keys().resolve(key).await?);
    }
    let bytes = read_body(headers, body).await?;
    let source = match source {
        Some(source) => source,
        None => {
            // Only the body's top-level `writeKey` is read before the key is checked: an
            // unauthenticated body is scanned up to that key, never parsed into a document.
            let key = Body::peek_write_key(&bytes)?.ok_or(AuthError::Missing)?;
            plane.write_keys().resolve(&key).await?
        }
    };
    let body = Body::parse(&bytes)?;
    let mut events = body.into_events(endpoint, chrono::Utc::now())?;
    // The source scopes each event's dedupe key.
    for event in &mut events {
        event.source_id = Some(source.id.clone());
    }
    Ok(events)
}

/// `GET /metrics`: every series of the process, in the Prometheus text format.
async fn prometheus_metrics() -> Response {
    (
        [(header::CONTENT_TYPE, metrics::PROMETHEUS_CONTENT_TYPE)],
        metrics::render_prometheus(),
    )
        .into_response()
}

/// The body, gzip-decoded when `Content-Encoding` says so, at most [`MAX_REQUEST_BYTES`] both
/// on the wire and decoded (a small gzip body can inflate to gigabytes: decoding stops at the
/// limit).
async fn read_body(headers: &HeaderMap, body: HttpBody) -> Result<Bytes, EventError> {
    let gzip = match headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(value) => {
            let value = value.to_str().unwrap_or_default().trim();
            if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
                true
            } else if value.is_empty() || value.eq_ignore_ascii_case("identity") {
                false
            } else {
                return Err(EventError::new(
                    ErrorCode::UnsupportedEncoding,
                    "",
                    format!("Content-Encoding '{value}' is not supported; use gzip or none"),
                ));
            }
        }
    };
    let timeout = journeys_runtime::http::HttpLimits::default().body_read_timeout;
    let collected = tokio::time::timeout(timeout, Limited::new(body, MAX_REQUEST_BYTES).collect())
        .await
        .map_err(|_| {
            EventError::new(
                ErrorCode::UnreadableBody,
                "",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs()
                ),
            )
        })?;
    let raw = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => return Err(request_too_large()),
        Err(err) => {
            tracing::debug!(error = %err, "could not read a request body");
            return Err(EventError::new(
                ErrorCode::UnreadableBody,
                "",
                "the request body could not be read",
            ));
        }
    };
    if !gzip {
        return Ok(raw);
    }
    gunzip(&raw)
}

/// `raw` gzip-decoded (one or more members), at most [`MAX_REQUEST_BYTES`] decoded: decoding
/// stops past the limit.
pub(crate) fn gunzip(raw: &[u8]) -> Result<Bytes, EventError> {
    let mut decoded = Vec::with_capacity(raw.len().saturating_mul(4).min(MAX_REQUEST_BYTES));
    let limit = u64::try_from(MAX_REQUEST_BYTES).unwrap_or(u64::MAX) + 1;
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit)
        .read_to_end(&mut decoded)
        .map_err(|err| {
            EventError::new(
                ErrorCode::InvalidGzip,
                "",
                format!("Content-Encoding is gzip but the body does not decompress: {err}"),
            )
        })?;
    if decoded.len() > MAX_REQUEST_BYTES {
        return Err(request_too_large());
    }
    Ok(decoded.into())
}

fn request_too_large() -> EventError {
    EventError::new(
        ErrorCode::RequestTooLarge,
        "",
        format!("the request body exceeds {MAX_REQUEST_BYTES} bytes (after decompression)"),
    )
}

async fn not_found(method: Method, uri: Uri) -> Reply {
    Reply::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

/// An error response: `{"code": ..., "message": ...}`, maybe with `Retry-After`.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl Reply {
    fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Reply {
        Reply {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry_after(mut self, seconds: u64) -> Reply {
        self.retry_after = Some(seconds);
        self
    }
}

impl From<EventError> for Reply {
    fn from(error: EventError) -> Reply {
        let status = match error.code {
            ErrorCode::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Reply::new(status, error.code.as_str(), error.message())
    }
}

impl From<AuthError> for Reply {
    fn from(error: AuthError) -> Reply {
        match error {
            AuthError::Missing | AuthError::Invalid => {
                Reply::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string())
            }
            AuthError::Unavailable => Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                error.code(),
                error.to_string(),
            )
            .retry_after(UNAVAILABLE_RETRY_AFTER_SECS),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

//! W3C trace context (`traceparent`) across process boundaries: incoming gRPC requests, outgoing
//! gRPC metadata, and string maps stored with a row (the outbox), so that one trace covers
//! ingest → evaluation → delivery.
//!
//! Uses the global propagator that `telemetry::init` installs; without it these are no-ops.

use std::collections::HashMap;

use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span opened for each gRPC request (pass to tonic's `Server::trace_fn`), continuing the
/// caller's trace when the request carries `traceparent`.
pub fn grpc_request_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = path,
    );
    let parent =
        global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
    // Fails only when no OpenTelemetry layer is installed, when there is nothing to continue.
    let _ = span.set_parent(parent);
    span
}

/// Adds the current span's context to outgoing gRPC metadata.
pub fn inject_metadata(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// The current span's context as a string map, to be stored with work that continues later
/// (an outbox row) and resumed with [`set_parent_from_map`].
#[must_use]
pub fn current_context_map() -> HashMap<String, String> {
    let context = tracing::Span::current().context();
    let mut map = HashMap::new();
    global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut map);
    });
    map
}

/// Makes `span` a child of the context stored by [`current_context_map`]; call before entering
/// the span.
pub fn set_parent_from_map(span: &tracing::Span, map: &HashMap<String, String>) {
    let parent = global::get_text_map_propagator(|p| p.extract(map));
    let _ = span.set_parent(parent);
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` with an OpenTelemetry layer (no exporter) as this thread's subscriber.
    fn with_otel_layer(f: impl FnOnce()) {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn a_stored_context_continues_the_same_trace() {
        with_otel_layer(|| {
            let stored = HashMap::from([("traceparent".to_owned(), TRACEPARENT.to_owned())]);
            let span = tracing::info_span!("delivery");
            set_parent_from_map(&span, &stored);
            let resumed = span.in_scope(current_context_map);
            let traceparent = resumed.get("traceparent").expect("traceparent stored");
            assert!(traceparent.contains(TRACE_ID), "{traceparent}");
            assert!(
                !traceparent.contains("00f067aa0ba902b7"),
                "a child span has its own id"
            );
        });
    }

    #[test]
    fn a_grpc_request_continues_the_callers_trace_into_outgoing_metadata() {
        with_otel_layer(|| {
            let request = http::Request::builder()
                .uri("/journeys.v1.IngestService/Track")
                .header("traceparent", TRACEPARENT)
                .body(())
                .expect("request");
            let span = grpc_request_span(&request);
            let mut metadata = MetadataMap::new();
            span.in_scope(|| inject_metadata(&mut metadata));
            let traceparent = metadata
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .expect("traceparent sent");
            assert!(traceparent.contains(TRACE_ID), "{traceparent}");
        });
    }
}

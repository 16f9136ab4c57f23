//! W3C trace context (`traceparent`) across process boundaries: incoming gRPC requests, outgoing
//! gRPC metadata, and string maps stored with a row (the outbox), so that one trace covers
//! ingest → evaluation → delivery.
//!
//! Uses the global propagator that `telemetry::init` installs; without it these are no-ops.
//! The `traceparent` string helpers ([`current_traceparent`], [`span_traceparent`],
//! [`set_parent_traceparent`]) speak W3C TraceContext directly: they carry one context through
//! the engine and the outbox row, and cost one subscriber lookup when nothing is exported.

use std::collections::HashMap;

use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
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

/// Makes `span` continue the trace of an incoming HTTP request that carries `traceparent`
/// (call before entering the span); without the header, `span` stays a root (or the current
/// span's child).
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
        let _ = span.set_parent(parent);
    }
}

/// The current span's context as a W3C `traceparent` value, when it belongs to a trace: an
/// OpenTelemetry layer is installed and the span is recorded by it. `None` otherwise, which is
/// what every process that exports nothing gets, cheaply.
#[must_use]
pub fn current_traceparent() -> Option<String> {
    span_traceparent(&tracing::Span::current())
}

/// `span`'s context as a W3C `traceparent` value; see [`current_traceparent`].
#[must_use]
pub fn span_traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the context in `traceparent` (a W3C `traceparent` value, e.g. from
/// an outbox row); call before entering the span. An unreadable value leaves `span` as it was.
pub fn set_parent_traceparent(span: &tracing::Span, traceparent: &str) {
    let parent = TraceContextPropagator::new().extract(&Traceparent(traceparent));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
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

/// A carrier holding one `traceparent` value.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
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
    fn traceparent_strings_chain_parent_to_child() {
        with_otel_layer(|| {
            let span = tracing::info_span!("evaluate");
            set_parent_traceparent(&span, TRACEPARENT);
            let own = span_traceparent(&span).expect("a recorded span has a traceparent");
            assert!(own.starts_with(&format!("00-{TRACE_ID}-")), "{own}");
            assert!(own.ends_with("-01"), "sampled: {own}");
            assert!(!own.contains("00f067aa0ba902b7"), "its own span id: {own}");

            let child = tracing::info_span!("deliver");
            set_parent_traceparent(&child, &own);
            let grandchild = span_traceparent(&child).expect("traceparent");
            assert!(grandchild.contains(TRACE_ID), "{grandchild}");

            let garbage = tracing::info_span!("root");
            set_parent_traceparent(&garbage, "not a traceparent");
            let root = span_traceparent(&garbage).expect("traceparent");
            assert!(!root.contains(TRACE_ID), "a new trace: {root}");

            let request = http::Request::builder()
                .header("traceparent", TRACEPARENT)
                .body(())
                .expect("request");
            let server = tracing::info_span!("http.request");
            set_parent_from_headers(&server, request.headers());
            let continued = server.in_scope(current_traceparent).expect("traceparent");
            assert!(continued.contains(TRACE_ID), "{continued}");
        });
    }

    #[test]
    fn without_an_opentelemetry_layer_there_is_no_traceparent() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("evaluate");
            set_parent_traceparent(&span, TRACEPARENT);
            assert_eq!(span.in_scope(current_traceparent), None);
        });
        assert_eq!(current_traceparent(), None);
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

//! One trace from ingest to webhook, proven against an OTLP receiver running in this test.
//!
//! Telemetry is process-wide (one `tracing` subscriber, one tracer provider), so this binary
//! holds a single test: it exports to an in-process OTLP/gRPC trace collector, runs
//! `journeys dev` with a real webhook sink, and checks, on every backend:
//!
//! - an event sent over HTTP with a `traceparent` header, and one sent over gRPC with
//!   `traceparent` metadata: the ingest span continues the caller's span, the engine's
//!   `engine.evaluate` span is its child, the `webhook.deliver` span is the evaluation's child,
//!   and the webhook request carries a `traceparent` of that trace whose parent is the delivery
//!   span;
//! - a send made by a timer: the delivery descends, through the timer's evaluation, from the
//!   scheduler's `scheduler.fire` span, and the webhook carries that trace;
//! - the metrics reach the same collector over OTLP.

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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use journeys_proto::v1 as pb;
use journeys_runtime::config::{Config, Service};
use journeys_runtime::telemetry::{self, TelemetryGuard};
use journeys_testkit::{Received, Sink, eventually};
use journeys_tests::http::basic_auth;
use journeys_tests::ingest::{keyed, track};
use journeys_tests::{Stack, StackOptions, on_each_backend};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How long deliveries and their spans may take to show up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One exported span, reduced to what the assertions need.
#[derive(Debug, Clone)]
struct SpanRecord {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// The in-process OTLP collector: keeps every span it is sent and the names of the metrics.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    metrics: Arc<Mutex<BTreeSet<String>>>,
}

impl Collector {
    fn spans(&self) -> Vec<SpanRecord> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn metric_names(&self) -> BTreeSet<String> {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut kept = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                kept.extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut kept = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            let value = match kv.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => s.clone(),
                                AnyValue::IntValue(i) => i.to_string(),
                                AnyValue::BoolValue(b) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            Some((kv.key.clone(), value))
                        })
                        .collect();
                    kept.push(SpanRecord {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        attributes,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the collector on `127.0.0.1:0`; returns it and its endpoint URL.
async fn start_collector() -> anyhow::Result<(Collector, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let collector = Collector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Ok((collector, endpoint))
}

/// `(trace id, span id)` of a W3C `traceparent` value.
fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = value.split('-').collect();
    match parts.as_slice() {
        ["00", trace, span, _flags] if trace.len() == 32 && span.len() == 16 => {
            Some(((*trace).to_owned(), (*span).to_owned()))
        }
        _ => None,
    }
}

/// A fresh trace id (32 hex digits) and a caller span id (16), unique per call.
fn caller_context(salt: u64) -> (String, String) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (
        format!("{:016x}{:016x}", salt | 1 << 60, nanos as u64),
        format!("{:016x}", (nanos as u64) ^ 0x5eed),
    )
}

/// The webhook request made for `user`.
fn webhook_of<'a>(received: &'a [Received], user: &str) -> Option<&'a Received> {
    received.iter().find(|r| r.str_field("user") == user)
}

/// The chain a webhook request's `traceparent` names, walked up through the exported spans:
/// delivery span, then its parents, up to the root or the first parent not exported (a caller's
/// span), each as `(name, span)`.
fn chain_of(spans: &[SpanRecord], webhook: &Received) -> Option<Vec<SpanRecord>> {
    let (trace, parent) = parse_traceparent(webhook.header("traceparent").unwrap_or_default())?;
    let mut chain = Vec::new();
    let mut next = parent;
    while let Some(span) = spans
        .iter()
        .find(|s| s.trace_id == trace && s.span_id == next)
    {
        chain.push(span.clone());
        if span.parent_span_id.is_empty() {
            break;
        }
        next.clone_from(&span.parent_span_id);
    }
    Some(chain)
}

fn names(chain: &[SpanRecord]) -> Vec<&str> {
    chain.iter().map(|s| s.name.as_str()).collect()
}

/// Waits until `done` holds for the exported spans, flushing the exporter between looks.
async fn spans_until(
    guard: &TelemetryGuard,
    collector: &Collector,
    what: &str,
    done: impl Fn(&[SpanRecord]) -> bool,
) -> anyhow::Result<Vec<SpanRecord>> {
    Ok(eventually(what, TIMEOUT, || {
        guard.force_flush();
        let spans = collector.spans();
        let found = done(&spans).then_some(spans);
        async move { found }
    })
    .await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_runs_from_ingest_and_from_timers_to_the_webhook() -> anyhow::Result<()> {
    let (collector, endpoint) = start_collector().await?;
    let mut config = Config::defaults_for(Service::Dev);
    config.otlp_endpoint = Some(endpoint);
    let guard = telemetry::init(&config, "journeys-dev")?;
    assert!(guard.is_exporting());

    let run = std::sync::atomic::AtomicU64::new(0);
    let (guard, collector, run) = (&guard, &collector, &run);
    on_each_backend(|url| async move {
        let salt = run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sink = Sink::start().await;
        let stack = Stack::start(
            &url,
            StackOptions {
                allow_short_durations: true,
                ..StackOptions::default()
            },
        )
        .await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("traced").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["order_placed", "signed_up"]).await?;
        c.publish(&json!({"journey": {
            "id": "orders",
            "name": "Forward orders",
            "entry": {"event": "order_placed"},
            "entry_rule": "ENTER_ONCE",
            "start_step": "forward",
            "steps": [{"key": "forward", "name": "Forward", "send": {
                "destination_id": "hook",
                "action": {"path": "/orders"},
                "mapping": {"user": {"@path": "$.userId"}}
            }}]
        }}))
        .await?;
        c.publish(&json!({"journey": {
            "id": "welcome",
            "name": "Welcome after a second",
            "entry": {"event": "signed_up"},
            "entry_rule": "ENTER_ONCE",
            "start_step": "wait",
            "steps": [
                {"key": "wait", "name": "Wait", "delay": {"duration": "1s", "next": "hello"}},
                {"key": "hello", "name": "Hello", "send": {
                    "destination_id": "hook",
                    "action": {"path": "/welcome"},
                    "mapping": {"user": {"@path": "$.userId"}}
                }}
            ]
        }}))
        .await?;

        // Over HTTP, with the caller's trace context in a header.
        let (http_trace, http_caller) = caller_context(salt * 4);
        let reply = stack
            .http()
            .post(
                "/v1/track",
                &[
                    (
                        axum::http::header::CONTENT_TYPE,
                        "application/json".to_owned(),
                    ),
                    (axum::http::header::AUTHORIZATION, basic_auth(&key)),
                    (
                        axum::http::HeaderName::from_static("traceparent"),
                        format!("00-{http_trace}-{http_caller}-01"),
                    ),
                ],
                serde_json::to_vec(&json!({
                    "type": "track", "event": "order_placed",
                    "userId": "u-http", "messageId": "m-http"
                }))?,
            )
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);

        // Over gRPC, with the caller's trace context in the metadata.
        let (grpc_trace, grpc_caller) = caller_context(salt * 4 + 1);
        let mut request = keyed(track("u-grpc", "order_placed", "m-grpc", &json!({})), &key)?;
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{grpc_trace}-{grpc_caller}-01").parse()?,
        );
        let ack = c.ingest.track(request).await?.into_inner();
        assert_eq!(ack.status, pb::AckStatus::Accepted as i32, "{ack:?}");

        // A send made by a timer, a second after its event.
        let request = keyed(track("u-timer", "signed_up", "m-timer", &json!({})), &key)?;
        let ack = c.ingest.track(request).await?.into_inner();
        assert_eq!(ack.status, pb::AckStatus::Accepted as i32, "{ack:?}");

        let received = sink.wait_for(3, TIMEOUT).await;
        let by_http = webhook_of(&received, "u-http").expect("the HTTP event's webhook");
        let by_grpc = webhook_of(&received, "u-grpc").expect("the gRPC event's webhook");
        let by_timer = webhook_of(&received, "u-timer").expect("the timer's webhook");
        assert_eq!(by_timer.path, "/welcome");

        // Each webhook names its trace and, as parent, an exported delivery span.
        for (webhook, trace) in [(by_http, Some(&http_trace)), (by_grpc, Some(&grpc_trace))] {
            let (got, _) = parse_traceparent(webhook.header("traceparent").unwrap_or_default())
                .unwrap_or_else(|| panic!("no traceparent on {webhook:?}"));
            assert_eq!(
                Some(&got),
                trace,
                "the webhook continues the caller's trace"
            );
        }
        let complete = |chain: Option<Vec<SpanRecord>>, root: &str| {
            chain.is_some_and(|c| c.last().is_some_and(|s| s.name == root))
        };
        let spans = spans_until(guard, collector, "the spans of all three sends", |spans| {
            complete(chain_of(spans, by_http), "/v1/track")
                && complete(chain_of(spans, by_grpc), "/journeys.v1.IngestService/Track")
                && complete(chain_of(spans, by_timer), "scheduler.fire")
        })
        .await?;

        // Ingest → evaluation → delivery → webhook, for each transport; the ingest span is
        // the child of the caller's span.
        for (webhook, ingest, caller, message_id) in [
            (by_http, "/v1/track", &http_caller, "m-http"),
            (
                by_grpc,
                "/journeys.v1.IngestService/Track",
                &grpc_caller,
                "m-grpc",
            ),
        ] {
            let chain = chain_of(&spans, webhook).expect("a traceparent");
            assert_eq!(
                names(&chain),
                ["webhook.deliver", "engine.evaluate", ingest],
                "{chain:#?}"
            );
            let (deliver, evaluate, ingested) = (&chain[0], &chain[1], &chain[2]);
            assert_eq!(&ingested.parent_span_id, caller, "{ingested:?}");
            assert_eq!(
                evaluate.attributes.get("item").map(String::as_str),
                Some("event")
            );
            assert_eq!(
                evaluate.attributes.get("message_id").map(String::as_str),
                Some(message_id)
            );
            assert_eq!(
                deliver.attributes.get("outcome").map(String::as_str),
                Some("sent"),
                "{deliver:?}"
            );
            assert_eq!(
                deliver
                    .attributes
                    .get("http.status_code")
                    .map(String::as_str),
                Some("200")
            );
        }

        // Timer firing → the timer's evaluation → delivery → webhook, in the firing's trace.
        let chain = chain_of(&spans, by_timer).expect("a traceparent");
        assert_eq!(
            names(&chain),
            ["webhook.deliver", "engine.evaluate", "scheduler.fire"],
            "{chain:#?}"
        );
        assert_eq!(
            chain[1].attributes.get("item").map(String::as_str),
            Some("timer")
        );
        assert!(
            chain[2].parent_span_id.is_empty(),
            "the firing starts its trace"
        );

        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await?;

    // The same series as `/metrics`, over OTLP (names without `_total`).
    guard.force_flush();
    let exported = collector.metric_names();
    for name in [
        "journeys_events",
        "journeys_entries",
        "journeys_sends_queued",
        "journeys_timers_fired",
        "journeys_timer_lateness_seconds",
        "journeys_deliveries",
        "journeys_delivery_duration_seconds",
        "journeys_engine_batch_duration_seconds",
        "journeys_engine_commit_duration_seconds",
    ] {
        assert!(exported.contains(name), "{name} not exported: {exported:?}");
    }
    Ok(())
}

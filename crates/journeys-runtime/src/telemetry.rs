//! Logging and tracing set-up: `tracing` to stdout (text or JSON) and, when an OTLP endpoint is
//! configured, traces and metrics exported over OTLP/gRPC (the metrics of
//! [`crate::metrics`], from `journeys-telemetry`).
//!
//! The W3C TraceContext propagator is installed globally either way, so `traceparent` headers
//! pass through a process even when it exports nothing (see [`crate::trace_context`]).

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};

/// Log filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info";

/// Targets whose spans are never exported: the exporter's own gRPC client runs on them, and
/// exporting its spans would feed the exporter with its own work.
const NOT_EXPORTED_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
];

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG: invalid filter '{value}': {message}")]
    Filter {
        /// The value of `RUST_LOG`.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The OTLP exporter rejected the endpoint or its settings.
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: cannot export {signal} to '{endpoint}': {source}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's error.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Keeps the OpenTelemetry providers alive; dropping it flushes and shuts them down, so hold it
/// in `main` until the servers have stopped.
#[must_use = "dropping the guard shuts telemetry export down at once"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether spans and metrics are exported over OTLP.
    #[must_use]
    pub fn is_exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Exports the spans ended and the metrics recorded so far now, rather than at the next
    /// batch or interval. Blocks until the exporters answered; on a multi-threaded Tokio runtime
    /// it lets the runtime move this worker's other tasks elsewhere first.
    pub fn force_flush(&self) {
        let flush = || {
            if let Some(Err(error)) = self.tracer_provider.as_ref().map(|p| p.force_flush()) {
                tracing::warn!(%error, "flushing traces failed");
            }
            if let Some(Err(error)) = self.meter_provider.as_ref().map(|p| p.force_flush()) {
                tracing::warn!(%error, "flushing metrics failed");
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(flush),
            _ => flush(),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let tracer_provider = self.tracer_provider.take();
        let meter_provider = self.meter_provider.take();
        if tracer_provider.is_none() && meter_provider.is_none() {
            return;
        }
        let flush = move || {
            if let Some(Err(error)) = tracer_provider.map(|p| p.shutdown()) {
                eprintln!("flushing traces on shutdown failed: {error}");
            }
            if let Some(Err(error)) = meter_provider.map(|p| p.shutdown()) {
                eprintln!("flushing metrics on shutdown failed: {error}");
            }
        };
        // The exporters' gRPC client runs on the Tokio runtime, so a flush that blocks a runtime
        // worker must let the runtime move that worker's tasks elsewhere first.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(flush),
            _ => flush(),
        }
    }
}

/// Installs the global `tracing` subscriber (filter from `RUST_LOG`, default `info`; format from
/// `config.log_format`) and, when `config.otlp_endpoint` is set, OTLP trace and metric export
/// under `service_name` (unless `OTEL_SERVICE_NAME` names the service).
///
/// Safe to call more than once in a process (tests): the first subscriber stays, later calls
/// only refresh the global providers. With an OTLP endpoint it must run inside a Tokio runtime,
/// which the gRPC exporter uses.
///
/// # Errors
///
/// An invalid `RUST_LOG`, or an OTLP endpoint the exporter rejects.
pub fn init(config: &Config, service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = env_filter(std::env::var("RUST_LOG").ok())?;
    let fmt_layer = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };

    let mut guard = TelemetryGuard::default();
    let otel_layer = match config.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            let resource = resource(service_name);
            let tracer_provider = tracer_provider(endpoint, resource.clone())?;
            let meter_provider = meter_provider(endpoint, resource)?;
            global::set_tracer_provider(tracer_provider.clone());
            global::set_meter_provider(meter_provider.clone());
            journeys_telemetry::metrics::export_to(&meter_provider);
            let tracer = tracer_provider.tracer(service_name.to_owned());
            guard.tracer_provider = Some(tracer_provider);
            guard.meter_provider = Some(meter_provider);
            let exported = tracing_subscriber::filter::filter_fn(|metadata| {
                let target = metadata.target();
                !NOT_EXPORTED_TARGETS.iter().any(|prefix| {
                    target
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
                })
            });
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(exported),
            )
        }
        None => None,
    };

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    if installed.is_err() {
        // Another subscriber (an earlier call, a test harness) is in place; keep it.
        tracing::debug!("tracing subscriber already installed; keeping it");
    }
    if let Some(endpoint) = config.otlp_endpoint.as_deref() {
        tracing::info!(
            endpoint,
            service_name,
            "exporting traces and metrics over OTLP"
        );
    }
    Ok(guard)
}

fn env_filter(rust_log: Option<String>) -> Result<EnvFilter, TelemetryError> {
    match rust_log.filter(|v| !v.trim().is_empty()) {
        Some(value) => EnvFilter::builder()
            .parse(&value)
            .map_err(|e| TelemetryError::Filter {
                message: e.to_string(),
                value,
            }),
        None => Ok(EnvFilter::new(DEFAULT_FILTER)),
    }
}

/// The resource describing this process. `Resource::builder` already reads
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; the operator's name wins over ours.
fn resource(service_name: &str) -> Resource {
    let builder = Resource::builder();
    let named_by_operator = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty());
    if named_by_operator {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_owned()).build()
    }
}

fn tracer_provider(
    endpoint: &str,
    resource: Resource,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            signal: "traces",
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

fn meter_provider(endpoint: &str, resource: Resource) -> Result<SdkMeterProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            signal: "metrics",
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Service;

    #[test]
    fn a_bad_rust_log_is_reported_with_its_value() {
        let err = env_filter(Some("info,=[".to_owned())).expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("RUST_LOG: invalid filter 'info,=['"),
            "{err}"
        );
        assert!(env_filter(None).is_ok());
        assert!(env_filter(Some(" ".to_owned())).is_ok());
        assert!(env_filter(Some("journeys=debug,info".to_owned())).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn init_twice_is_fine_and_exports_when_an_endpoint_is_set() {
        let mut config = Config::defaults_for(Service::Dev);
        let first = init(&config, "journeys-test").expect("first init");
        assert!(!first.is_exporting());

        // Nothing listens there: building the exporter connects lazily, and shutting it down
        // must not hang or fail the caller.
        config.otlp_endpoint = Some("http://127.0.0.1:9".to_owned());
        config.log_format = LogFormat::Json;
        let second = init(&config, "journeys-test").expect("second init");
        assert!(second.is_exporting());
        tracing::info_span!("a span").in_scope(|| tracing::info!("an event"));
        drop(second);
        drop(first);
    }

    #[tokio::test]
    async fn a_malformed_endpoint_is_an_error() {
        let mut config = Config::defaults_for(Service::Dev);
        config.otlp_endpoint = Some("not a url".to_owned());
        let err = init(&config, "journeys-test").expect_err("must fail");
        assert!(err.to_string().contains("not a url"), "{err}");
    }
}

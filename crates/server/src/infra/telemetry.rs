//! Process-wide telemetry: logs to stderr, OpenTelemetry traces exported over OTLP/gRPC, W3C trace
//! context on gRPC calls and HTTP API requests, and the Prometheus registry behind `/metrics`.
//!
//! Logs are JSON lines, or human-readable text in development. Traces are exported only when an
//! OTLP endpoint is configured; export runs on the SDK's own thread through a bounded queue, so an
//! unreachable collector never slows a request: spans are dropped when the queue is full, and the
//! failure is logged once (see [`QuietExporter`]).

use std::{
    io::IsTerminal,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::{
    KeyValue,
    propagation::Extractor,
    trace::{TracerProvider as _, noop::NoopTextMapPropagator},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler as SdkSampler, SdkTracerProvider, SpanData,
        SpanExporter,
    },
};
use tonic::codegen::http;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::infra::config::{Config, RootSampler, Sampler, TelemetryConfig};
use jetway_core::telemetry::{SPAN_TARGET, metrics as names};

/// Most finished spans waiting for export; beyond this they are dropped rather than slow anything.
const EXPORT_QUEUE: usize = 4096;
/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(500);
/// Publish latency buckets, in seconds: 100 µs to 2.5 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Request/reply latency buckets, in seconds: 100 µs to a minute (requests wait up to
/// `REQUEST_MAX_TIMEOUT`).
const REQUEST_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 10.0, 30.0,
    60.0,
];

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter is not valid `EnvFilter` syntax (the config already checks `RUST_LOG`).
    #[error("invalid log filter {filter:?}: {source}")]
    InvalidFilter {
        /// The rejected filter.
        filter: String,
        /// The parser's explanation.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was already installed.
    #[error("logging is already initialised: {0}")]
    AlreadyInitialized(#[from] tracing_subscriber::util::TryInitError),
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes what is left.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber (logs, and traces when an endpoint is set), the W3C
    /// propagator and the metrics registry. Call once, inside the Tokio runtime: the OTLP channel is
    /// created on it.
    pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
        metrics_handle();
        // Logs leave out the per-event messaging spans; they are for traces only.
        let log_filter = format!("{},{SPAN_TARGET}=off", config.log_filter);
        let log_filter = EnvFilter::builder().parse(&log_filter).map_err(|source| {
            TelemetryError::InvalidFilter {
                filter: config.log_filter.clone(),
                source,
            }
        })?;
        let logs = if config.development {
            tracing_subscriber::fmt::layer()
                .compact()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .boxed()
        } else {
            // Flattened events put the message and fields at the top level, which is what log
            // pipelines index.
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed()
        };
        let provider = config
            .telemetry
            .export_endpoint()
            .map(|endpoint| tracer_provider(&config.telemetry, endpoint))
            .transpose()?;
        let traces = provider.as_ref().map(|provider| {
            let tracer = provider.tracer("jetway-server");
            // Only Jetway's spans become OpenTelemetry spans: RPCs and messaging.
            let spans = tracing_subscriber::filter::Targets::new()
                .with_target(SPAN_TARGET, tracing::Level::INFO);
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(spans)
        });
        if provider.is_some() {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        } else {
            // Without export nothing is recorded, and trace context passes through untouched.
            opentelemetry::global::set_text_map_propagator(NoopTextMapPropagator::new());
        }
        let registry = tracing_subscriber::registry().with(logs.with_filter(log_filter));
        // Without export the trace layer is left out rather than added as `None`: an absent
        // `Option` layer declares interest in every span, so each event's messaging span would
        // be built and entered only to be thrown away.
        match traces {
            Some(traces) => registry.with(traces).try_init()?,
            None => registry.try_init()?,
        }
        if let Some(endpoint) = config.telemetry.export_endpoint() {
            tracing::info!(%endpoint, service = %config.telemetry.service_name, "exporting traces over OTLP");
        }
        Ok(Telemetry { provider })
    }

    /// Exports the spans still queued, waiting at most half a second.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks the calling thread until the export thread is done.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(err)) = flushed {
            tracing::warn!(%err, "flushing traces at shutdown failed");
        }
    }
}

fn tracer_provider(
    config: &TelemetryConfig,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let processor = BatchSpanProcessor::builder(QuietExporter::new(exporter))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(EXPORT_QUEUE)
                .build(),
        )
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(config.sampler))
        .with_resource(resource)
        .build())
}

fn sampler(config: Sampler) -> SdkSampler {
    let root = match config.root {
        RootSampler::AlwaysOn => SdkSampler::AlwaysOn,
        RootSampler::AlwaysOff => SdkSampler::AlwaysOff,
        RootSampler::Ratio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
    };
    if config.parent_based {
        SdkSampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

/// An exporter that logs the first failure and the recovery, not every failed batch: with a collector
/// down, the SDK would otherwise log an error every few seconds.
#[derive(Debug)]
pub struct QuietExporter<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> QuietExporter<E> {
    /// Wraps `inner`.
    pub fn new(inner: E) -> Self {
        QuietExporter {
            inner,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for QuietExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self.inner.export(batch).await {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("exporting traces again");
                }
            }
            Err(err) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%err, "cannot export traces; dropping them until the collector answers");
                }
            }
        }
        // The failure is reported above; the SDK would log it again on every batch.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The process-wide Prometheus registry, installed on first use (tests start many servers in one
/// process, and the `metrics` recorder can be set only once).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        #[expect(
            clippy::expect_used,
            reason = "the builder fails only for an empty bucket list, and ours are not"
        )]
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(names::PUBLISH_DURATION.to_owned()),
                &LATENCY_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    jetway_core::requests::metrics::REQUEST_DURATION.to_owned(),
                ),
                &REQUEST_BUCKETS,
            )
            .expect("the bucket list is not empty")
            // HTTP API calls include requests, which wait as long as gRPC's do.
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    crate::http::observe::REQUEST_DURATION.to_owned(),
                ),
                &REQUEST_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        handle
    })
}

/// The server span of one gRPC call, child of the caller's W3C context in the request headers.
pub fn grpc_span(request: &http::Request<()>) -> Span {
    let span = call_span(request.uri().path());
    continue_remote_trace(&span, request.headers());
    span
}

/// Makes `span`, a server span, the child of the caller's W3C trace context in `headers`, if they
/// carry one. The gRPC and the HTTP API's server spans both start here.
pub fn continue_remote_trace(span: &Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        adopt(span, &Headers(headers));
    }
}

/// The server span of one request that a stream call carries (RequestStream), as a unary call's
/// span to the same work would be: a child of the W3C context the request itself carries, since
/// one stream carries the requests of many traces.
pub fn stream_item_span(path: &str, parent: &str, state: Option<&str>) -> Span {
    let span = call_span(path);
    adopt(&span, &ItemContext { parent, state });
    span
}

/// The server span of a call to `path` (`/package.Service/Method`), without a parent yet.
fn call_span(path: &str) -> Span {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    tracing::info_span!(
        target: SPAN_TARGET,
        "grpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

/// Makes `span` a child of the W3C context `carrier` holds.
fn adopt(span: &Span, carrier: &dyn Extractor) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    // Fails only when no OpenTelemetry layer is installed; then the span is not recorded.
    span.set_parent(parent).ok();
}

/// The W3C context one request of a stream carries.
struct ItemContext<'a> {
    parent: &'a str,
    state: Option<&'a str>,
}

impl Extractor for ItemContext<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.parent),
            "tracestate" => self.state,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// W3C headers read from an HTTP request.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;

    /// An exporter whose collector is down until `up` is set.
    #[derive(Debug, Default)]
    struct Collector {
        up: AtomicBool,
    }

    impl SpanExporter for Collector {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.up.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(OTelSdkError::InternalFailure("connection refused".into()))
            }
        }
    }

    #[tokio::test]
    async fn a_failing_collector_is_reported_once_and_never_fails_the_batch() {
        let exporter = QuietExporter::new(Collector::default());
        assert!(exporter.export(Vec::new()).await.is_ok());
        assert!(
            exporter.failing.load(Ordering::Relaxed),
            "the first failure is noted"
        );
        assert!(exporter.export(Vec::new()).await.is_ok());
        exporter.inner.up.store(true, Ordering::Relaxed);
        assert!(exporter.export(Vec::new()).await.is_ok());
        assert!(
            !exporter.failing.load(Ordering::Relaxed),
            "the recovery is noted"
        );
    }

    #[test]
    fn samplers_follow_the_configuration() {
        let ratio = sampler(Sampler {
            parent_based: false,
            root: RootSampler::Ratio(0.5),
        });
        assert!(matches!(ratio, SdkSampler::TraceIdRatioBased(r) if r == 0.5));
        let parent = sampler(Sampler {
            parent_based: true,
            root: RootSampler::AlwaysOff,
        });
        assert!(matches!(parent, SdkSampler::ParentBased(_)));
    }
}

//! Logs go to stderr (stdout is kept for command output such as new keys); with
//! `--otlp-endpoint`, each call's server span is exported over OTLP, as the child of
//! the caller's W3C `traceparent`.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Target of the one span per call (`api::instrumented`): the only thing exported.
pub const CALL_SPAN_TARGET: &str = "kraiter_contacts::rpc";

/// Whether spans are exported: read once per call, so that without `--otlp-endpoint`
/// nothing else of tracing's export runs (no layer, no header parsing).
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// `RUST_LOG` overrides the default level (`info`).
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_writer(std::io::stderr)
        .with_ansi(ansi());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

fn ansi() -> bool {
    // Colours only on a terminal; pipes and files get plain text.
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Longest the exit waits for the last spans to be exported.
const SHUTDOWN_EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `init_serve` set up; `shutdown` exports the spans still queued.
#[must_use = "call `shutdown` on exit, or queued spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for `{endpoint}`")]
pub struct ExportError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Logging as `init`, and with an `otlp_endpoint` (`http://collector:4317`) an OTLP
/// exporter of call spans. Must run inside the Tokio runtime (the exporter's channel
/// lives on it).
pub fn init_serve(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, ExportError> {
    let Some(endpoint) = otlp_endpoint else {
        init(format);
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| ExportError {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
    }
    // The batch processor's queue is bounded (spans past it are dropped, not held) and
    // exports from a thread of its own. The default sampler follows the caller's
    // sampled flag and samples calls that arrive without one.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        // Only the call span: events (and the fields a store error may log) stay in
        // the logs, never in a span.
        .with_filter(
            tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target() == CALL_SPAN_TARGET
            })
            .with_max_level_hint(tracing::Level::DEBUG),
        );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi());
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(env_filter()).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(env_filter())
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok()
    {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry {
        provider: Some(provider),
    })
}

impl Telemetry {
    /// Exports what is queued and stops the exporter (on SIGTERM, after the drain).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        EXPORTING.store(false, Ordering::Relaxed);
        // Blocks until the last export is answered, or for at most the bound (a
        // collector that is down must not hold the exit for long).
        let result = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(SHUTDOWN_EXPORT_TIMEOUT)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "span export did not finish"),
            Err(err) => tracing::warn!(error = %err, "span export did not finish"),
        }
    }
}

/// The path of a call (`/package.Service/Method`), put in the request's extensions by
/// the edge layer while spans are exported.
#[derive(Debug, Clone)]
pub(crate) struct RpcPath(pub String);

/// Names `span` as the server span of the call at `path`, the child of the caller's
/// `traceparent` (a call without one starts a trace).
pub(crate) fn start_call_span(
    span: &tracing::Span,
    metadata: &MetadataMap,
    path: Option<&RpcPath>,
) {
    let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
    let _ = span.set_parent(parent);
    span.record("otel.kind", "server");
    span.record("rpc.system", "grpc");
    if let Some(RpcPath(path)) = path {
        let name = path.trim_start_matches('/');
        span.record("otel.name", name);
        if let Some((service, _)) = name.split_once('/') {
            span.record("rpc.service", service);
        }
    }
}

/// Records a call's outcome on its span: the gRPC code, and an error status for the
/// codes that are the server's failure rather than the caller's (OpenTelemetry's
/// conventions for gRPC servers).
pub(crate) fn end_call_span(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
    use tonic::Code::*;
    if matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Reads the trace context headers (`traceparent`, `tracestate`) from gRPC metadata.
struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

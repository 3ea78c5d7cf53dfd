//! Traces and logs: what every process of Merchant Monitor installs before it starts work.
//!
//! - [`init`] installs the log output (text or JSON lines on stderr, filtered by `MM_LOG`) and,
//!   when `[telemetry] otlp_endpoint` is set, an OpenTelemetry layer that exports the spans of
//!   the `tracing` instrumentation over OTLP (HTTP/protobuf or gRPC), sampled parent-based.
//!   Without an endpoint no OpenTelemetry layer exists at all: spans cost what `tracing` costs.
//! - [`context`] reads and writes W3C trace context (`traceparent`, `tracestate`) on HTTP
//!   headers, gRPC metadata and Kafka record headers, so a consumer's span continues the
//!   producer's trace.
//! - [`level`] lets one request raise the log level of its own spans (`X-Log-Level: debug`).
//! - [`json`] writes JSON log lines that carry `trace_id` and `span_id` inside a span.
//!
//! Span fields meant as numbers are recorded as `i64`: the OpenTelemetry layer exports unsigned
//! values as text.

pub mod context;
pub mod json;
pub mod level;
mod settings;

pub use settings::{OtlpProtocol, RawTelemetry, TelemetrySettings};

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Whether spans are exported (set once by [`init`]): code that would do extra work only for
/// an exported span (reading trace headers of consumed records) asks this first.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, with `trace_id`/`span_id` inside a traced span.
    Json,
}

/// The default log filter when `MM_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// The installed telemetry; [`Telemetry::shutdown`] sends the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "exporting the last spans failed");
        }
    }
}

/// Installs logging and, when `settings` has an endpoint, span export. With an endpoint it must
/// run inside a Tokio runtime (the exporter's task runs there).
pub fn init(settings: &TelemetrySettings, format: LogFormat) -> anyhow::Result<Telemetry> {
    let env = tracing_subscriber::EnvFilter::try_from_env("MM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    // A line is written when `MM_LOG` allows it, or when it is inside a request that asked for
    // more (`X-Log-Level`).
    let lines = level::lines(env, settings.otlp_endpoint.is_some());
    let json = json::JsonLines::new();
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(lines)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json.clone())
            .with_filter(lines)
            .boxed(),
    };
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => Some(provider(settings, endpoint)?),
        None => None,
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("merchant-monitor"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(
                tracing_subscriber::filter::FilterFn::new(
                    exported as fn(&tracing::Metadata<'_>) -> bool,
                )
                .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
            )
    });
    let subscriber = tracing_subscriber::registry()
        .with(spans)
        .with(
            level::Requests
                .with_filter(tracing_subscriber::filter::filter_fn(level::declares_level)),
        )
        .with(output);
    let dispatch = tracing::Dispatch::new(subscriber);
    json.attach(&dispatch);
    dispatch
        .try_init()
        .context("installing the log and trace subscriber")?;
    if let Some(endpoint) = &settings.otlp_endpoint {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            endpoint,
            protocol = settings.otlp_protocol.as_str(),
            sampling_ratio = settings.sampling_ratio,
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { provider })
}

/// What the OpenTelemetry layer sees: spans at `info` and above, and warnings and errors inside
/// them (as span events).
fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    if metadata.is_span() {
        *metadata.level() <= tracing::Level::INFO
    } else {
        *metadata.level() <= tracing::Level::WARN
    }
}

fn provider(settings: &TelemetrySettings, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match settings.otlp_protocol {
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
    }
    .with_context(|| format!("building the OTLP exporter for {endpoint}"))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(resource)
        .build())
}

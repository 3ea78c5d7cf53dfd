//! Spans through the OpenTelemetry layer, exported to memory: parents across a remote hop,
//! the context handed on, links, and the ids in JSON log lines.

use std::io::Write;
use std::sync::{Arc, Mutex};

use mm_trace::context::{self, TraceHeaders};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lines").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `work` under a subscriber that exports to memory and logs JSON lines; returns the
/// finished spans and the lines.
fn traced(work: impl FnOnce()) -> (Vec<SpanData>, Vec<serde_json::Value>) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let lines = Lines::default();
    let writer = lines.clone();
    let json = mm_trace::json::JsonLines::new();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(json.clone()),
        );
    let dispatch = tracing::Dispatch::new(subscriber);
    json.attach(&dispatch);
    tracing::dispatcher::with_default(&dispatch, work);
    provider.force_flush().expect("flushed");
    let spans = exporter.get_finished_spans().expect("spans");
    let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("text");
    let lines = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    (spans, lines)
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name}: {spans:?}"))
}

fn caller() -> TraceHeaders {
    TraceHeaders {
        traceparent: format!("00-{TRACE}-{CALLER_SPAN}-01"),
        tracestate: Some("vendor=7".into()),
    }
}

#[test]
fn a_server_span_continues_the_callers_trace_and_hands_on_its_own_context() {
    let mut handed_on = None;
    let (spans, _) = traced(|| {
        let server = tracing::info_span!("server", otel.name = "POST /v1/things");
        context::continue_from(&server, &caller());
        server.in_scope(|| {
            let producer = tracing::info_span!("publish", otel.name = "things publish");
            handed_on = context::outgoing(&producer, None);
        });
    });
    let server = named(&spans, "POST /v1/things");
    let producer = named(&spans, "things publish");
    assert_eq!(server.span_context.trace_id().to_string(), TRACE);
    assert_eq!(server.parent_span_id.to_string(), CALLER_SPAN);
    assert_eq!(producer.span_context.trace_id().to_string(), TRACE);
    assert_eq!(producer.parent_span_id, server.span_context.span_id());
    let handed_on = handed_on.expect("a context to hand on");
    assert_eq!(handed_on.trace_id(), TRACE);
    assert_eq!(
        handed_on.span_id(),
        producer.span_context.span_id().to_string()
    );
    assert_eq!(handed_on.tracestate.as_deref(), Some("vendor=7"));
}

#[test]
fn a_consumer_span_continues_the_context_a_record_carried() {
    let mut carried = None;
    let (spans, _) = traced(|| {
        let producer = tracing::info_span!("producer");
        carried = context::outgoing(&producer, None);
        drop(producer);
        let consumer = tracing::info_span!("consumer");
        context::continue_from(&consumer, carried.as_ref().expect("carried"));
    });
    let producer = named(&spans, "producer");
    let consumer = named(&spans, "consumer");
    assert_eq!(
        consumer.span_context.trace_id(),
        producer.span_context.trace_id()
    );
    assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
}

#[test]
fn follows_from_becomes_a_link() {
    let (spans, _) = traced(|| {
        let request = tracing::info_span!("request");
        let group = tracing::info_span!(parent: None, "group commit");
        group.follows_from(&request);
    });
    let request = named(&spans, "request");
    let group = named(&spans, "group commit");
    assert_ne!(
        group.span_context.trace_id(),
        request.span_context.trace_id()
    );
    assert!(
        group
            .links
            .iter()
            .any(|link| link.span_context.span_id() == request.span_context.span_id()),
        "{:?}",
        group.links
    );
}

#[test]
fn json_lines_inside_a_span_carry_its_trace_and_span_ids() {
    let (spans, lines) = traced(|| {
        tracing::info!("before any span");
        let server = tracing::info_span!("server", route = "/v1/things");
        context::continue_from(&server, &caller());
        server.in_scope(|| tracing::warn!(code = 7, "inside"));
    });
    let server = named(&spans, "server");
    let outside = &lines[0];
    assert_eq!(outside["fields"]["message"], "before any span");
    assert!(outside.get("trace_id").is_none(), "{outside}");
    let inside = &lines[1];
    assert_eq!(inside["fields"]["message"], "inside");
    assert_eq!(inside["fields"]["code"], 7);
    assert_eq!(inside["level"], "WARN");
    assert_eq!(inside["span"]["name"], "server");
    assert_eq!(inside["span"]["route"], "/v1/things");
    assert_eq!(inside["trace_id"], TRACE);
    assert_eq!(inside["span_id"], server.span_context.span_id().to_string());
}

#[test]
fn a_span_that_sampling_left_out_hands_on_nothing() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let mut handed_on = Some(caller());
    tracing::subscriber::with_default(subscriber, || {
        let producer = tracing::info_span!("publish");
        handed_on = context::outgoing(&producer, Some(&caller()));
    });
    assert_eq!(handed_on, None);
    provider.force_flush().expect("flushed");
    assert!(exporter.get_finished_spans().expect("spans").is_empty());
}

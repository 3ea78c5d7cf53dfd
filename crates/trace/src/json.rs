//! JSON log lines: `timestamp`, `level`, `target`, `fields`, the innermost `span` (its name and
//! fields) and, inside an exported span, `trace_id` and `span_id`, so a log line leads to its
//! trace and back.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `--log-json`. It finds a span's trace ids through the dispatcher it
/// is [attached](JsonLines::attach) to: while an event is being written the thread's current
/// dispatcher cannot be asked.
#[derive(Debug, Clone, Default)]
pub struct JsonLines {
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonLines {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the formatter the dispatcher it writes for.
    pub fn attach(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        cx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::with_capacity(8);
        let mut timestamp = String::with_capacity(32);
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::from(timestamp));
        line.insert("level".into(), Value::from(metadata.level().as_str()));
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        line.insert("fields".into(), Value::Object(fields));
        line.insert("target".into(), Value::from(metadata.target()));
        let span = event
            .parent()
            .and_then(|id| cx.span(id))
            .or_else(|| cx.lookup_current());
        if let Some(span) = span {
            let mut described = Map::with_capacity(4);
            described.insert("name".into(), Value::from(span.name()));
            if let Some(formatted) = span.extensions().get::<FormattedFields<N>>()
                && let Ok(Value::Object(span_fields)) =
                    serde_json::from_str::<Value>(formatted.as_str())
            {
                described.extend(span_fields);
            }
            line.insert("span".into(), Value::Object(described));
            let dispatch = self.dispatch.get().and_then(WeakDispatch::upgrade);
            let ids = dispatch.and_then(|dispatch| {
                span.scope().find_map(|outer| {
                    let context = tracing_opentelemetry::get_otel_context(&outer.id(), &dispatch)?;
                    let span_context = context.span().span_context().clone();
                    span_context.is_valid().then_some(span_context)
                })
            });
            if let Some(ids) = ids {
                line.insert("trace_id".into(), Value::from(ids.trace_id().to_string()));
                line.insert("span_id".into(), Value::from(ids.span_id().to_string()));
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

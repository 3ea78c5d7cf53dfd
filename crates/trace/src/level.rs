//! Per-request log levels: a span declared with a `log_level` field (the HTTP request span,
//! from `X-Log-Level`; the gRPC call span, from the `log_level` metadata) raises the level of
//! the log lines written inside it and its children, and nowhere else.
//!
//! [`Requests`] notes the level on the span when it is created; [`Forced`] is the filter that
//! lets a line through when a span around it asked for it. While no such span is open the
//! filter disables nothing it would not: it tells `tracing` so per callsite (`Interest::never`)
//! and through its level hint, and the interest cache is rebuilt when the first raised span
//! opens and when the last one closes. A disabled `debug!` stays a level comparison.

use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The span field that carries a requested level.
pub const FIELD: &str = "log_level";

/// Spans open with a raised level, in the whole process.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The level a span asked for.
#[derive(Debug, Clone, Copy)]
struct Raised(LevelFilter);

/// Reads a requested level: `error`, `warn`, `info`, `debug` or `trace` (any case).
pub fn parse(text: &str) -> Result<LevelFilter, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::ERROR),
        "warn" => Ok(LevelFilter::WARN),
        "info" => Ok(LevelFilter::INFO),
        "debug" => Ok(LevelFilter::DEBUG),
        "trace" => Ok(LevelFilter::TRACE),
        _ => Err(format!(
            "{text:?} is not a log level (error, warn, info, debug or trace)"
        )),
    }
}

/// Whether a span's declaration has a `log_level` field (what [`Requests`] looks at).
pub fn declares_level(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.fields().field(FIELD).is_some()
}

/// The filter of spans that declare a level: request spans are `info` or above, so the hint
/// keeps `debug!` and `trace!` callsites out of it.
pub fn declaring() -> tracing_subscriber::filter::FilterFn<fn(&Metadata<'_>) -> bool> {
    tracing_subscriber::filter::FilterFn::new(declares_level as fn(&Metadata<'_>) -> bool)
        .with_max_level_hint(LevelFilter::INFO)
}

/// Notes the level asked for on the spans that declare one.
#[derive(Debug)]
pub struct Requests;

struct LevelVisitor(Option<LevelFilter>);

impl Visit for LevelVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == FIELD {
            self.0 = parse(value).ok();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == FIELD {
            self.0 = parse(format!("{value:?}").trim_matches('"')).ok();
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Requests {
    fn on_new_span(&self, attributes: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        let mut visitor = LevelVisitor(None);
        attributes.record(&mut visitor);
        if let (Some(level), Some(span)) = (visitor.0, cx.span(id)) {
            span.extensions_mut().insert(Raised(level));
            if OPEN.fetch_add(1, Ordering::AcqRel) == 0 {
                // Callsites disabled until now may be enabled inside this span.
                tracing::callsite::rebuild_interest_cache();
            }
        }
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        let raised = cx
            .span(&id)
            .is_some_and(|span| span.extensions().get::<Raised>().is_some());
        if raised && OPEN.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::callsite::rebuild_interest_cache();
        }
    }
}

/// The filter of the log output: what `base` (`MM_LOG`) lets through, what a raised span around
/// it asks for, and the spans that may raise it (so they are seen whatever `base` says). Other
/// spans only with `spans` (when they are exported, so log lines name them and their ids);
/// otherwise `tracing` builds none of them.
pub fn lines<S: Subscriber + for<'a> LookupSpan<'a>>(
    base: tracing_subscriber::EnvFilter,
    spans: bool,
) -> impl Filter<S> {
    use tracing_subscriber::filter::FilterExt as _;
    let kinds = tracing_subscriber::filter::filter_fn(move |metadata| spans || metadata.is_event());
    base.and(kinds).or(Forced).or(declaring())
}

/// Lets a span or event through when a span around it raised the level enough.
#[derive(Debug)]
pub struct Forced;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for Forced {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if OPEN.load(Ordering::Acquire) == 0 {
            return false;
        }
        let Some(current) = cx.lookup_current() else {
            return false;
        };
        for span in current.scope() {
            if let Some(Raised(level)) = span.extensions().get::<Raised>() {
                return *level >= *metadata.level();
            }
        }
        false
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        if OPEN.load(Ordering::Acquire) == 0 {
            Interest::never()
        } else {
            // Whether a line is written depends on the spans around it, each time.
            Interest::sometimes()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        if OPEN.load(Ordering::Acquire) == 0 {
            Some(LevelFilter::OFF)
        } else {
            Some(LevelFilter::TRACE)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

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

    #[test]
    fn levels_parse_in_any_case_and_others_are_refused() {
        assert_eq!(parse("DEBUG"), Ok(LevelFilter::DEBUG));
        assert_eq!(parse(" trace "), Ok(LevelFilter::TRACE));
        assert!(parse("verbose").expect_err("refused").contains("verbose"));
    }

    #[test]
    fn a_request_span_raises_the_level_of_its_own_lines_only() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(Requests.with_filter(declaring()))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .with_ansi(false)
                    .with_filter(super::lines(
                        tracing_subscriber::EnvFilter::new("warn"),
                        false,
                    )),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("outside any request");
            tracing::info!("info outside any request, below the base level");
            let raised = tracing::info_span!("request", log_level = "debug");
            raised.in_scope(|| {
                tracing::debug!("inside the raised request");
                tracing::info_span!("child").in_scope(|| {
                    tracing::debug!("inside a child of the raised request");
                    tracing::trace!("trace inside the raised request");
                });
            });
            let plain = tracing::info_span!("request", log_level = tracing::field::Empty);
            plain.in_scope(|| tracing::debug!("inside a plain request"));
            drop(raised);
            tracing::debug!("after the raised request");
            tracing::warn!("warn as always");
        });
        let written = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("text");
        assert!(written.contains("inside the raised request"), "{written}");
        assert!(
            written.contains("inside a child of the raised request"),
            "{written}"
        );
        assert!(written.contains("warn as always"), "{written}");
        for absent in [
            "info outside any request, below the base level",
            "outside any request",
            "trace inside the raised request",
            "inside a plain request",
            "after the raised request",
        ] {
            assert!(!written.contains(absent), "{absent}: {written}");
        }
    }
}

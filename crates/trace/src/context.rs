//! W3C trace context between processes: read from HTTP headers and gRPC metadata, stored with
//! published events, carried in Kafka record headers.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (and Kafka record header) names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A trace context as it travels: `traceparent` (`00-<trace id>-<span id>-<flags>`) and
/// `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

struct Lookup<'a, F>(F, std::marker::PhantomData<&'a str>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl TraceHeaders {
    /// Reads a context through `get` (a header lookup by lower-case name); `None` when there
    /// is no `traceparent` or it is not a valid W3C one.
    pub fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let context =
            TraceContextPropagator::new().extract(&Lookup(&get, std::marker::PhantomData));
        let span = context.span();
        if !span.span_context().is_valid() {
            return None;
        }
        Some(Self {
            traceparent: get(TRACEPARENT)?.trim().to_owned(),
            tracestate: get(TRACESTATE)
                .map(str::trim)
                .filter(|state| !state.is_empty())
                .map(str::to_owned),
        })
    }

    /// From HTTP request headers.
    pub fn from_http(headers: &http::HeaderMap) -> Option<Self> {
        Self::read(|name| headers.get(name).and_then(|value| value.to_str().ok()))
    }

    /// The trace id, 32 hexadecimal digits.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The parent span id, 16 hexadecimal digits.
    pub fn span_id(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or_default()
    }

    /// The name/value pairs to send on.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|state| (TRACESTATE, state)))
    }

    fn context(&self) -> opentelemetry::Context {
        TraceContextPropagator::new().extract(&Lookup(
            |name: &str| match name {
                TRACEPARENT => Some(self.traceparent.as_str()),
                TRACESTATE => self.tracestate.as_deref(),
                _ => None,
            },
            std::marker::PhantomData,
        ))
    }
}

/// Makes `span` continue the trace of `incoming` (a remote parent). Without span export this
/// does nothing.
pub fn continue_from(span: &tracing::Span, incoming: &TraceHeaders) {
    // Fails only when the span was already started or is not exported; either way it keeps
    // its own parent.
    let _ = span.set_parent(incoming.context());
}

/// The context to hand on from inside `span`: its own when spans are exported, otherwise the
/// one it received (`fallback`), so a server without traces does not break its callers' chain.
///
/// A span that is exported but not sampled hands on nothing: no span of its trace is recorded,
/// so there is nothing to continue, and the ~80 bytes a context adds to every published event
/// are not paid for the traces sampling leaves out (its consumers decide for themselves).
pub fn outgoing(span: &tracing::Span, fallback: Option<&TraceHeaders>) -> Option<TraceHeaders> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return fallback.cloned();
    }
    if !span_context.is_sampled() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    Some(TraceHeaders {
        traceparent: carrier.remove(TRACEPARENT)?,
        tracestate: carrier.remove(TRACESTATE).filter(|state| !state.is_empty()),
    })
}

/// The trace id and span id of `span`, when it is exported (for log lines and answers).
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_with_its_state() {
        let read = TraceHeaders::read(|name| match name {
            "traceparent" => Some(PARENT),
            "tracestate" => Some("vendor=1"),
            _ => None,
        })
        .expect("valid");
        assert_eq!(read.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(read.span_id(), "00f067aa0ba902b7");
        assert_eq!(read.tracestate.as_deref(), Some("vendor=1"));
        assert_eq!(
            read.pairs().collect::<Vec<_>>(),
            vec![("traceparent", PARENT), ("tracestate", "vendor=1")]
        );
    }

    #[test]
    fn malformed_or_zero_contexts_are_not_read() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let read = TraceHeaders::read(|name| (name == "traceparent").then_some(bad));
            assert_eq!(read, None, "{bad:?}");
        }
    }

    #[test]
    fn without_span_export_the_received_context_is_handed_on() {
        let received = TraceHeaders {
            traceparent: PARENT.into(),
            tracestate: None,
        };
        let span = tracing::info_span!("no subscriber");
        assert_eq!(outgoing(&span, Some(&received)), Some(received));
        assert_eq!(outgoing(&span, None), None);
    }
}

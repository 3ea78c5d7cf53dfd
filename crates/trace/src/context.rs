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

/// Longest `tracestate` carried on (it is copied into every event of a batch).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// `00-<trace id>-<span id>-<flags>`: lower-case hexadecimal, neither id all zeros.
fn valid_traceparent(text: &str) -> bool {
    let bytes = text.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes[range.clone()]
            .iter()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
    };
    let zero = |range: std::ops::Range<usize>| bytes[range].iter().all(|byte| *byte == b'0');
    bytes.len() == 55
        && &bytes[..2] == b"00"
        && [2, 35, 52].iter().all(|at| bytes[*at] == b'-')
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && !zero(3..35)
        && !zero(36..52)
}

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
    /// is no `traceparent` or it is not a valid W3C one (`00-<32 hex>-<16 hex>-<2 hex>`, lower
    /// case, ids not all zero). A `tracestate` that is not valid or longer than
    /// [`MAX_TRACESTATE_BYTES`] is left out.
    pub fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let traceparent = get(TRACEPARENT)?.trim();
        if !valid_traceparent(traceparent) {
            return None;
        }
        let tracestate = get(TRACESTATE)
            .map(str::trim)
            .filter(|state| !state.is_empty() && state.len() <= MAX_TRACESTATE_BYTES)
            .filter(|state| state.parse::<opentelemetry::trace::TraceState>().is_ok())
            .map(str::to_owned);
        Some(Self {
            traceparent: traceparent.to_owned(),
            tracestate,
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
            "00-1-1-1",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        ] {
            let read = TraceHeaders::read(|name| (name == "traceparent").then_some(bad));
            assert_eq!(read, None, "{bad:?}");
        }
    }

    #[test]
    fn an_invalid_or_oversized_tracestate_is_left_out() {
        let long = format!("a={}", "x".repeat(MAX_TRACESTATE_BYTES));
        for state in ["not a state", long.as_str()] {
            let read = TraceHeaders::read(|name| match name {
                "traceparent" => Some(PARENT),
                "tracestate" => Some(state),
                _ => None,
            })
            .expect("the parent is valid");
            assert_eq!(read.tracestate, None, "{state:?}");
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

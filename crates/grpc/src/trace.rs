//! The server span of every gRPC call: continuing the caller's W3C `traceparent` metadata, at
//! the log level its `log_level` metadata asks for.

use std::task::{Context, Poll};

use mm_trace::context::TraceHeaders;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

/// The metadata that raises the log level of one call's spans.
pub const LOG_LEVEL: &str = "log_level";

/// Wraps a service so each call runs inside its span.
#[derive(Debug, Clone)]
pub struct Traced<S>(pub S);

impl<S, B> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = call_span(&request);
        self.0.call(request).instrument(span)
    }
}

fn call_span<B>(request: &http::Request<B>) -> tracing::Span {
    let headers = request.headers();
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    // An invalid level is refused by the interceptor, with the call's answer.
    let log_level = headers
        .get(LOG_LEVEL)
        .and_then(|value| value.to_str().ok())
        .filter(|value| mm_trace::level::parse(value).is_ok());
    // Without traces or a raised level the call has no span: nothing would use it.
    if log_level.is_none() && !mm_trace::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        log_level,
    );
    if let Some(incoming) = TraceHeaders::from_http(headers) {
        mm_trace::context::continue_from(&span, &incoming);
    }
    span
}

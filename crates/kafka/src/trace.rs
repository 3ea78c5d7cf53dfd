//! Trace context on Kafka records: the W3C `traceparent`/`tracestate` headers producers set,
//! and the consumer spans that continue a producer's trace.

use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};

use mm_trace::context::TraceHeaders;

/// `headers` with the W3C trace context `trace` added (`traceparent`, `tracestate`); as they
/// are without one.
pub fn with_context(headers: OwnedHeaders, trace: Option<&TraceHeaders>) -> OwnedHeaders {
    match trace {
        Some(trace) => trace.pairs().fold(headers, |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        }),
        None => headers,
    }
}

/// The trace context of a consumed record, from its headers.
pub fn record_context(message: &impl Message) -> Option<TraceHeaders> {
    let headers = message.headers()?;
    TraceHeaders::read(|name| {
        headers
            .iter()
            .find(|header| header.key == name)
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    })
}

/// The consumer spans of a stream of records: one per producer context (one published batch
/// or ingest request) among the last few seen, each continuing that trace. A span marks the
/// record's arrival (it covers no work). Records without a context, or consumed while spans
/// are not exported, cost nothing more.
#[derive(Debug, Default)]
pub struct ConsumerSpans {
    /// The `traceparent` values of the latest spans, newest last.
    recent: Vec<Vec<u8>>,
}

/// Contexts remembered: records of a few batches interleave across partitions.
const RECENT: usize = 8;

impl ConsumerSpans {
    /// Notes `message`, `operation` being `receive` (read for someone else) or `process`
    /// (handled here).
    pub fn note(&mut self, message: &impl Message, operation: &'static str) {
        if !mm_trace::exporting() {
            return;
        }
        let Some(headers) = message.headers() else {
            return;
        };
        let Some(raw) = headers
            .iter()
            .find(|header| header.key == mm_trace::context::TRACEPARENT)
            .and_then(|header| header.value)
        else {
            return;
        };
        if self.recent.iter().any(|seen| seen.as_slice() == raw) {
            return;
        }
        let Some(incoming) = record_context(message) else {
            return;
        };
        if self.recent.len() == RECENT {
            self.recent.remove(0);
        }
        self.recent.push(raw.to_vec());
        let topic = message.topic();
        let span = tracing::info_span!(
            "kafka.consume",
            otel.name = format!("{topic} {operation}"),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = operation,
            messaging.destination.name = topic,
            messaging.destination.partition.id = message.partition(),
            messaging.kafka.offset = message.offset(),
        );
        mm_trace::context::continue_from(&span, &incoming);
    }
}

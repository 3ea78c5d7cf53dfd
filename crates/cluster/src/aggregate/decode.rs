//! From a Kafka record of the aggregation topic to what the partition logic needs.

use std::sync::Arc;

use mm_kafka::header;
use mm_model::ApiCallRef;
use mm_model::mapping::{EventParser, TimeBounds};
use rdkafka::message::{Headers, Message};

use super::partition::{Decode, InputRecord, Rejected};
use mm_model::time::now_us;

/// Parses records with the configured mapping; the time bounds come from each record's own
/// timestamp, so a rebuild accepts exactly what the first pass accepted.
pub struct RecordDecoder {
    pub parser: Arc<EventParser>,
    pub retention_us: i64,
    pub max_skew_us: i64,
}

impl Decode for RecordDecoder {
    fn decode<'a>(&self, record: &InputRecord<'a>) -> Result<ApiCallRef<'a>, Rejected> {
        let reference_us = record
            .timestamp_ms
            .map_or_else(now_us, |ms| ms.saturating_mul(1000));
        let Some(payload) = record.payload else {
            return Err(Rejected {
                class: "invalid_json",
                message: "the record has no value".to_owned(),
            });
        };
        let bounds = TimeBounds::around(reference_us, self.retention_us, self.max_skew_us);
        self.parser
            .parse(payload, bounds)
            .map_err(|error| Rejected {
                class: error.reason.as_str(),
                message: error.message,
            })
    }
}

/// The partition logic's view of a consumed record.
pub fn input_record<'a>(message: &'a impl Message) -> InputRecord<'a> {
    InputRecord {
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        payload: message.payload(),
        source: source_of(message),
    }
}

/// The source partition and offset a repartitioned record carries.
fn source_of(message: &impl Message) -> Option<(i32, i64)> {
    let headers = message.headers()?;
    let mut partition = None;
    let mut offset = None;
    for header in headers.iter() {
        let text = header
            .value
            .and_then(|value| std::str::from_utf8(value).ok());
        match header.key {
            header::SOURCE_PARTITION => partition = text.and_then(|text| text.parse().ok()),
            header::SOURCE_OFFSET => offset = text.and_then(|text| text.parse().ok()),
            _ => {}
        }
    }
    Some((partition?, offset?))
}

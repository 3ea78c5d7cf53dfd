//! From a Kafka record to an API call, in one place for both consumers: the repartitioner
//! parses the input's JSON once and forwards the call in the store's compact binary event
//! encoding (header [`header::FORMAT`]); the aggregation consumer decodes that without parsing
//! JSON again, and parses JSON only when it reads producers' records directly
//! (`input_keyed`).

use std::sync::Arc;

use mm_kafka::header;
use mm_model::ApiCallRef;
use mm_model::mapping::{EventParser, TimeBounds};
use mm_model::time::now_us;
use mm_storage::codec::{self, Reader};
use rdkafka::message::{Headers, Message};

use crate::aggregate::partition::{Decode, InputRecord, Rejected};

/// Parses records with the configured mapping; the time bounds come from each record's own
/// timestamp, so a rebuild accepts exactly what the first pass accepted.
pub struct RecordDecoder {
    pub parser: Arc<EventParser>,
    pub retention_us: i64,
    pub max_skew_us: i64,
}

impl Decode for RecordDecoder {
    fn decode<'a>(&self, record: &InputRecord<'a>) -> Result<ApiCallRef<'a>, Rejected> {
        if record.binary {
            return decode_binary(record.payload.unwrap_or_default());
        }
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

/// A call in the binary event encoding, as the repartitioner forwards it.
fn decode_binary(payload: &[u8]) -> Result<ApiCallRef<'_>, Rejected> {
    let mut reader = Reader::new(payload);
    codec::decode_event(&mut reader)
        .ok()
        .filter(|_| reader.is_empty())
        .ok_or_else(|| Rejected {
            class: "invalid_value",
            message: format!("a {} record that does not decode", header::EVENT_V1),
        })
}

/// The value of a repartitioned record: the call in the binary event encoding.
pub fn encode_binary(call: &ApiCallRef<'_>) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(64 + call.merchant.len() + call.corr_id.len());
    codec::encode_event(call, &mut encoded);
    encoded
}

/// The partition logic's view of a consumed record; `repartitioned` says it comes from the
/// repartition topic, whose headers give its format and source position.
pub fn input_record<'a>(message: &'a impl Message, repartitioned: bool) -> InputRecord<'a> {
    let mut record = InputRecord {
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        payload: message.payload(),
        source: None,
        binary: false,
    };
    // Only the repartitioner's records carry the headers read here; producers' records are
    // JSON whatever headers they set (and not reading them saves a call per record).
    if !repartitioned {
        return record;
    }
    let Some(headers) = message.headers() else {
        return record;
    };
    let mut partition = None;
    let mut offset = None;
    for header in headers.iter() {
        let text = header
            .value
            .and_then(|value| std::str::from_utf8(value).ok());
        match header.key {
            header::SOURCE_PARTITION => partition = text.and_then(|text| text.parse().ok()),
            header::SOURCE_OFFSET => offset = text.and_then(|text| text.parse().ok()),
            header::FORMAT => record.binary = text == Some(header::EVENT_V1),
            _ => {}
        }
    }
    record.source = partition.zip(offset);
    record
}

#[cfg(test)]
mod tests {
    use mm_model::mapping::FieldMapping;

    use super::*;

    fn decoder() -> RecordDecoder {
        RecordDecoder {
            parser: Arc::new(EventParser::new(&FieldMapping::default(), false).expect("mapping")),
            retention_us: 30 * 86_400_000_000,
            max_skew_us: 300_000_000,
        }
    }

    fn record(payload: &[u8], binary: bool) -> InputRecord<'_> {
        InputRecord {
            offset: 7,
            timestamp_ms: Some(1_795_273_445_000),
            payload: Some(payload),
            source: None,
            binary,
        }
    }

    #[test]
    fn a_forwarded_call_decodes_to_what_the_json_parsed_to() {
        let json = br#"{"ts":1795273445000,"merchant":"M1","api":"/v1/payments","status":503,"latency_ms":12.5,"corr_id":"c1"}"#;
        let decoder = decoder();
        let parsed = decoder.decode(&record(json, false)).expect("valid JSON");
        let forwarded = encode_binary(&parsed);
        let decoded = decoder
            .decode(&record(&forwarded, true))
            .expect("a forwarded call");
        assert_eq!(decoded, parsed);
    }

    #[test]
    fn a_cut_or_padded_forwarded_call_is_rejected_not_misread() {
        let json = br#"{"ts":1795273445000,"merchant":"M1","api":"/v1/payments","status":200,"latency_ms":1,"corr_id":"c1"}"#;
        let decoder = decoder();
        let forwarded = encode_binary(&decoder.decode(&record(json, false)).expect("valid"));
        let cut = &forwarded[..forwarded.len() - 1];
        assert!(decoder.decode(&record(cut, true)).is_err());
        let mut padded = forwarded.clone();
        padded.push(0);
        assert!(decoder.decode(&record(&padded, true)).is_err());
        // JSON is not taken for the binary encoding, nor the other way round.
        assert!(decoder.decode(&record(json, true)).is_err());
        assert!(decoder.decode(&record(&forwarded, false)).is_err());
    }
}

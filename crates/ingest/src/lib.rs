//! Ingest: from an HTTP body to a durable-log batch and a per-record status
//! ([`process_body`]), and the durable append itself ([`Ingestor`]: the embedded WAL, or the
//! input topic in cluster mode with the `kafka` feature).
//!
//! A body is NDJSON (one JSON object per line) or one JSON array of objects, optionally
//! compressed (`Content-Encoding: gzip` or `zstd`). Every record is parsed and validated on
//! its own; a bad record is reported with its index, field and reason and never affects its
//! neighbours. Only a body that cannot be read at all (bad compression, an unparseable JSON
//! array, too large) fails whole.
//!
//! ```
//! use mm_ingest::{IngestLimits, process_body};
//! use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};
//! let parser = EventParser::new(&FieldMapping::default(), true).unwrap();
//! let body = b"{\"ts\":1795273445000,\"merchant\":\"M1\",\"api\":\"a\",\"status\":200,\"latency_ms\":3,\"corr_id\":\"c\"}\nnot json\n";
//! let processed = process_body(&parser, body, TimeBounds::UNBOUNDED, &IngestLimits::default()).unwrap();
//! assert_eq!(processed.accepted, 1);
//! assert_eq!(processed.rejected[0].index, 1);
//! ```

mod ingestor;

pub use ingestor::{IngestFailure, IngestReply, IngestSink, Ingestor};

use std::borrow::Cow;
use std::io::Read;

use mm_model::event::ApiCallRef;
use mm_model::mapping::{EventParser, RecordError, RejectReason, TimeBounds};
use mm_storage::{codec, wal};
use serde::Serialize;
use thiserror::Error;

/// Size limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest body after decompression.
    pub max_decoded_bytes: usize,
    /// Largest single record.
    pub max_record_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_decoded_bytes: 64 * 1024 * 1024,
            max_record_bytes: 256 * 1024,
        }
    }
}

/// Why a whole body was refused.
#[derive(Debug, Error)]
pub enum BodyError {
    #[error("unsupported content-encoding {0:?} (use gzip, zstd or identity)")]
    UnsupportedEncoding(String),
    #[error("body could not be decompressed as {encoding}: {detail}")]
    Decompress {
        encoding: &'static str,
        detail: String,
    },
    #[error("decompressed body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body is not a readable JSON array: {0}")]
    UnreadableArray(String),
}

/// One rejected record, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedRecord {
    /// 0-based position among the body's records (blank NDJSON lines are not records).
    pub index: usize,
    /// 1-based line of an NDJSON body.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = usize))]
    pub line: Option<usize>,
    /// The field at fault, as named in the record, when one is.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub field: Option<String>,
    /// Stable code.
    pub code: RejectReason,
    /// What is wrong, in words.
    pub reason: String,
}

/// A processed body.
#[derive(Debug)]
pub struct ProcessedBody {
    /// Accepted events encoded as one write-ahead-log batch (empty when none).
    pub payload: Vec<u8>,
    pub accepted: usize,
    pub rejected: Vec<RejectedRecord>,
    pub records: usize,
}

/// Decompresses `body` according to its `Content-Encoding`.
pub fn decode_body<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, BodyError> {
    let encoding = encoding
        .map(str::trim)
        .unwrap_or("identity")
        .to_ascii_lowercase();
    let mut decoded = Vec::new();
    let result = match encoding.as_str() {
        "" | "identity" => {
            return if body.len() > limit {
                Err(BodyError::TooLarge { limit })
            } else {
                Ok(Cow::Borrowed(body))
            };
        }
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut decoded)
            .map_err(|error| BodyError::Decompress {
                encoding: "gzip",
                detail: error.to_string(),
            }),
        "zstd" => zstd::stream::read::Decoder::new(body)
            .and_then(|decoder| decoder.take(limit as u64 + 1).read_to_end(&mut decoded))
            .map_err(|error| BodyError::Decompress {
                encoding: "zstd",
                detail: error.to_string(),
            }),
        other => return Err(BodyError::UnsupportedEncoding(other.to_owned())),
    };
    result?;
    if decoded.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(Cow::Owned(decoded))
}

fn rejected(index: usize, line: Option<usize>, error: RecordError) -> RejectedRecord {
    RejectedRecord {
        index,
        line,
        field: error.field,
        code: error.reason,
        reason: error.message,
    }
}

struct BatchBuilder {
    events: Vec<u8>,
    accepted: usize,
    rejected: Vec<RejectedRecord>,
    records: usize,
}

impl BatchBuilder {
    fn accept(&mut self, event: &ApiCallRef<'_>) {
        codec::encode_event(event, &mut self.events);
        self.accepted += 1;
    }

    fn finish(self) -> ProcessedBody {
        let mut payload = Vec::new();
        if self.accepted > 0 {
            payload.reserve(self.events.len() + 10);
            wal::begin_batch(self.accepted, &mut payload);
            payload.extend_from_slice(&self.events);
        }
        ProcessedBody {
            payload,
            accepted: self.accepted,
            rejected: self.rejected,
            records: self.records,
        }
    }
}

/// Parses and validates every record of a decoded body into one write-ahead-log batch.
pub fn process_body(
    parser: &EventParser,
    body: &[u8],
    bounds: TimeBounds,
    limits: &IngestLimits,
) -> Result<ProcessedBody, BodyError> {
    let mut builder = BatchBuilder {
        events: Vec::with_capacity(body.len() / 2),
        accepted: 0,
        rejected: Vec::new(),
        records: 0,
    };
    let (records, rejected) = for_each_record(parser, body, bounds, limits, |event, _| {
        builder.accept(event);
    })?;
    builder.records = records;
    builder.rejected = rejected;
    Ok(builder.finish())
}

/// Parses and validates every record of a decoded body (NDJSON, or a JSON array), calling
/// `accept` with each valid event and the record's own bytes. Returns the number of records
/// and the rejected ones.
pub fn for_each_record(
    parser: &EventParser,
    body: &[u8],
    bounds: TimeBounds,
    limits: &IngestLimits,
    mut accept: impl FnMut(&ApiCallRef<'_>, &[u8]),
) -> Result<(usize, Vec<RejectedRecord>), BodyError> {
    let mut rejections = Vec::new();
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        let records: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
            .map_err(|error| BodyError::UnreadableArray(error.to_string()))?;
        for (index, raw) in records.iter().enumerate() {
            let text = raw.get();
            if text.len() > limits.max_record_bytes {
                rejections.push(too_large(index, None, text.len(), limits));
                continue;
            }
            match parser.parse_str(text, bounds) {
                Ok(event) => accept(&event, text.as_bytes()),
                Err(error) => rejections.push(rejected(index, None, error)),
            }
        }
        return Ok((records.len(), rejections));
    }
    let mut index = 0;
    for (line_number, line) in body.split(|byte| *byte == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record_index = index;
        index += 1;
        if line.len() > limits.max_record_bytes {
            rejections.push(too_large(
                record_index,
                Some(line_number + 1),
                line.len(),
                limits,
            ));
            continue;
        }
        match parser.parse(line, bounds) {
            Ok(event) => accept(&event, line),
            Err(error) => rejections.push(rejected(record_index, Some(line_number + 1), error)),
        }
    }
    Ok((index, rejections))
}

fn too_large(
    index: usize,
    line: Option<usize>,
    size: usize,
    limits: &IngestLimits,
) -> RejectedRecord {
    RejectedRecord {
        index,
        line,
        field: None,
        code: RejectReason::RecordTooLarge,
        reason: format!(
            "record is {size} bytes; the limit is {}",
            limits.max_record_bytes
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_model::mapping::FieldMapping;

    const GOOD: &str = r#"{"ts":1795273445000,"merchant":"M1","api":"a","status":200,"latency_ms":3,"corr_id":"c"}"#;

    fn parser() -> EventParser {
        EventParser::new(&FieldMapping::default(), true).expect("compiles")
    }

    #[test]
    fn ndjson_reports_bad_lines_and_keeps_good_ones() {
        let body = format!("{GOOD}\n\n{{\"broken\n{GOOD}\r\n[1]\n");
        let processed = process_body(
            &parser(),
            body.as_bytes(),
            TimeBounds::UNBOUNDED,
            &IngestLimits::default(),
        )
        .expect("readable");
        assert_eq!(processed.records, 4);
        assert_eq!(processed.accepted, 2);
        let positions: Vec<(usize, Option<usize>, RejectReason)> = processed
            .rejected
            .iter()
            .map(|record| (record.index, record.line, record.code))
            .collect();
        assert_eq!(
            positions,
            vec![
                (1, Some(3), RejectReason::InvalidJson),
                (3, Some(5), RejectReason::NotAnObject)
            ]
        );
        let mut merchants = Vec::new();
        wal::decode_batch(&processed.payload, |event| {
            merchants.push(event.merchant.into_owned())
        })
        .expect("decodes");
        assert_eq!(merchants, vec!["M1", "M1"]);
    }

    #[test]
    fn arrays_report_by_element_index() {
        let body = format!("[{GOOD}, 5, {}]", GOOD.replace("\"M1\"", "\"\""));
        let processed = process_body(
            &parser(),
            body.as_bytes(),
            TimeBounds::UNBOUNDED,
            &IngestLimits::default(),
        )
        .expect("readable");
        assert_eq!(processed.accepted, 1);
        assert_eq!(processed.rejected.len(), 2);
        assert_eq!(processed.rejected[1].index, 2);
        assert_eq!(processed.rejected[1].field.as_deref(), Some("merchant"));
        assert!(matches!(
            process_body(
                &parser(),
                b"[{\"a\":1},",
                TimeBounds::UNBOUNDED,
                &IngestLimits::default()
            ),
            Err(BodyError::UnreadableArray(_))
        ));
    }

    #[test]
    fn oversized_records_are_refused_individually() {
        let limits = IngestLimits {
            max_record_bytes: 200,
            ..IngestLimits::default()
        };
        let big = GOOD.replace("\"c\"", &format!("\"{}\"", "z".repeat(300)));
        let body = format!("{big}\n{GOOD}\n");
        let processed = process_body(&parser(), body.as_bytes(), TimeBounds::UNBOUNDED, &limits)
            .expect("readable");
        assert_eq!(processed.accepted, 1);
        assert_eq!(processed.rejected[0].code, RejectReason::RecordTooLarge);
    }

    #[test]
    fn compressed_bodies_decode_within_limits() {
        use std::io::Write;
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(GOOD.as_bytes()).expect("compresses");
        let gzipped = gzip.finish().expect("compresses");
        assert_eq!(
            decode_body(Some("gzip"), &gzipped, 1 << 20)
                .expect("decodes")
                .as_ref(),
            GOOD.as_bytes()
        );
        let zstded = zstd::encode_all(GOOD.as_bytes(), 1).expect("compresses");
        assert_eq!(
            decode_body(Some("zstd"), &zstded, 1 << 20)
                .expect("decodes")
                .as_ref(),
            GOOD.as_bytes()
        );
        assert!(matches!(
            decode_body(Some("gzip"), &gzipped, 10),
            Err(BodyError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_body(Some("gzip"), b"not gzip", 1 << 20),
            Err(BodyError::Decompress { .. })
        ));
        assert!(matches!(
            decode_body(Some("br"), b"x", 1 << 20),
            Err(BodyError::UnsupportedEncoding(_))
        ));
    }
}

//! Ingest: from an HTTP body to a durable-log batch and a per-record status
//! ([`process_body`]), and the durable append itself ([`Ingestor`]: the embedded WAL, or the
//! input topic in cluster mode with the `kafka` feature).
//!
//! A body is NDJSON (one JSON object per line) or one JSON array of objects, optionally
//! compressed (`Content-Encoding: gzip` or `zstd`). Every record is parsed and validated on
//! its own; a bad record is reported with its index, field and reason and never affects its
//! neighbours. Only a body that cannot be read at all (bad compression, an unparseable JSON
//! array, too large) fails whole. The answer lists the first `max_reported_errors` rejected
//! records in full and counts all of them by code, so its size is bounded whatever the body.
//! Every buffer a body needs (decompressed, encoded) is reserved from the request memory
//! budget ([`mm_http::MemoryBudget`]) before it is allocated.
//!
//! ```
//! use mm_ingest::{IngestLimits, process_body};
//! use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};
//! let parser = EventParser::new(&FieldMapping::default(), true).unwrap();
//! let body = b"{\"ts\":1795273445000,\"merchant\":\"M1\",\"api\":\"a\",\"status\":200,\"latency_ms\":3,\"corr_id\":\"c\"}\nnot json\n";
//! let budget = mm_http::MemoryBudget::new(1 << 20);
//! let mut reservation = budget.reservation();
//! let limits = IngestLimits::default();
//! let processed =
//!     process_body(&parser, body, TimeBounds::UNBOUNDED, &limits, &mut reservation).unwrap();
//! assert_eq!(processed.accepted, 1);
//! assert_eq!(processed.rejected.listed[0].index, 1);
//! ```

mod ingestor;

pub use ingestor::{IngestAnswer, IngestFailure, IngestReply, IngestSink, Ingestor};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use mm_http::{BudgetExhausted, Reservation};
use mm_model::event::ApiCallRef;
use mm_model::lines::without_byte_order_mark;
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
    /// Rejected records listed in full in an answer; the rest are only counted.
    pub max_reported_errors: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_decoded_bytes: 64 * 1024 * 1024,
            max_record_bytes: 256 * 1024,
            max_reported_errors: 100,
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
    #[error(transparent)]
    Memory(#[from] BudgetExhausted),
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

/// The rejected records of a body: the first few in full, every one counted by code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    /// The first rejected records, in body order.
    pub listed: Vec<RejectedRecord>,
    /// Every rejected record, by code.
    pub by_code: BTreeMap<RejectReason, usize>,
    /// Every rejected record.
    pub total: usize,
    max_listed: usize,
}

impl Rejections {
    /// Lists at most `max_listed` records in full.
    pub fn new(max_listed: usize) -> Self {
        Self {
            max_listed,
            ..Self::default()
        }
    }

    /// Counts a rejected record; builds its full form only while the list has room.
    fn push(&mut self, code: RejectReason, record: impl FnOnce() -> RejectedRecord) {
        self.total += 1;
        *self.by_code.entry(code).or_default() += 1;
        if self.listed.len() < self.max_listed {
            self.listed.push(record());
        }
    }

    /// Rejected records counted but not listed.
    pub fn omitted(&self) -> usize {
        self.total - self.listed.len()
    }
}

/// A processed body.
#[derive(Debug)]
pub struct ProcessedBody {
    /// Accepted events encoded as one write-ahead-log batch (empty when none).
    pub payload: Vec<u8>,
    pub accepted: usize,
    pub rejected: Rejections,
    pub records: usize,
}

/// Makes room for `needed` bytes in `buffer`, growing it geometrically up to `ceiling` and
/// reserving what it allocates first.
fn ensure_capacity(
    buffer: &mut Vec<u8>,
    needed: usize,
    ceiling: usize,
    reservation: &mut Reservation,
) -> Result<(), BudgetExhausted> {
    if needed <= buffer.capacity() {
        return Ok(());
    }
    let target = needed.max((buffer.capacity() * 2).min(ceiling));
    reservation.grow(target - buffer.capacity())?;
    buffer.reserve_exact(target - buffer.len());
    Ok(())
}

/// Decompresses `body` according to its `Content-Encoding`, reserving the decompressed
/// buffer as it grows.
pub fn decode_body<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Cow<'a, [u8]>, BodyError> {
    let encoding = encoding
        .map(str::trim)
        .unwrap_or("identity")
        .to_ascii_lowercase();
    let (name, mut reader): (&'static str, Box<dyn Read + '_>) = match encoding.as_str() {
        "" | "identity" => {
            return if body.len() > limit {
                Err(BodyError::TooLarge { limit })
            } else {
                Ok(Cow::Borrowed(body))
            };
        }
        "gzip" | "x-gzip" => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(body))),
        "zstd" => (
            "zstd",
            Box::new(zstd::stream::read::Decoder::new(body).map_err(|error| {
                BodyError::Decompress {
                    encoding: "zstd",
                    detail: error.to_string(),
                }
            })?),
        ),
        other => return Err(BodyError::UnsupportedEncoding(other.to_owned())),
    };
    let mut decoded = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(BodyError::Decompress {
                    encoding: name,
                    detail: error.to_string(),
                });
            }
        };
        let needed = decoded.len() + read;
        if needed > limit {
            return Err(BodyError::TooLarge { limit });
        }
        ensure_capacity(&mut decoded, needed, limit, reservation)?;
        decoded.extend_from_slice(&chunk[..read]);
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
    /// Room for the batch header first, then the encoded events.
    events: Vec<u8>,
    accepted: usize,
}

impl BatchBuilder {
    fn accept(&mut self, event: &ApiCallRef<'_>) {
        codec::encode_event(event, &mut self.events);
        self.accepted += 1;
    }

    /// The batch payload: the header moved in front of the events, in place.
    fn finish(mut self) -> Vec<u8> {
        if self.accepted == 0 {
            return Vec::new();
        }
        let mut header = Vec::with_capacity(BATCH_HEADER_ROOM);
        wal::begin_batch(self.accepted, &mut header);
        self.events.splice(0..0, header);
        self.events
    }
}

/// Room a batch header needs: a version byte and a count varint.
const BATCH_HEADER_ROOM: usize = 11;

/// Parses and validates every record of a decoded body into one write-ahead-log batch.
///
/// An encoded event is never longer than its JSON record, so the batch needs at most the
/// body's length: that is reserved up front. The buffer starts at half of it (encoded batches
/// are usually smaller, and the batch stays in memory in the archive's hot tail until it is
/// flushed), growing once at most.
pub fn process_body(
    parser: &EventParser,
    body: &[u8],
    bounds: TimeBounds,
    limits: &IngestLimits,
    reservation: &mut Reservation,
) -> Result<ProcessedBody, BodyError> {
    let room = body.len() + 2 * BATCH_HEADER_ROOM;
    reservation.grow(room)?;
    let mut builder = BatchBuilder {
        events: Vec::with_capacity(body.len() / 2 + BATCH_HEADER_ROOM),
        accepted: 0,
    };
    let (records, rejected) = for_each_record(parser, body, bounds, limits, |event, _| {
        builder.accept(event);
    })?;
    if builder.events.capacity() > room {
        // Never expected (see above); kept honest if an encoding ever outgrows its record.
        reservation.grow(builder.events.capacity() - room)?;
    }
    let accepted = builder.accepted;
    Ok(ProcessedBody {
        payload: builder.finish(),
        accepted,
        rejected,
        records,
    })
}

/// Parses and validates every record of a decoded body (NDJSON, or a JSON array), calling
/// `accept` with each valid event and the record's own bytes. Returns the number of records
/// and the rejected ones. A UTF-8 byte order mark before the body or a line (files written
/// by Windows tools, and such files concatenated) is not part of the records.
pub fn for_each_record(
    parser: &EventParser,
    body: &[u8],
    bounds: TimeBounds,
    limits: &IngestLimits,
    mut accept: impl FnMut(&ApiCallRef<'_>, &[u8]),
) -> Result<(usize, Rejections), BodyError> {
    let mut rejections = Rejections::new(limits.max_reported_errors);
    let body = without_byte_order_mark(body);
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        let records: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
            .map_err(|error| BodyError::UnreadableArray(error.to_string()))?;
        for (index, raw) in records.iter().enumerate() {
            let text = raw.get();
            if text.len() > limits.max_record_bytes {
                rejections.push(RejectReason::RecordTooLarge, || {
                    too_large(index, None, text.len(), limits)
                });
                continue;
            }
            match parser.parse_str(text, bounds) {
                Ok(event) => accept(&event, text.as_bytes()),
                Err(error) => rejections.push(error.reason, || rejected(index, None, error)),
            }
        }
        return Ok((records.len(), rejections));
    }
    let mut index = 0;
    // Line ends found a vector at a time; the last line may lack its newline.
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    let mut start = 0;
    for (line_number, end) in ends.enumerate() {
        let line = &body[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = without_byte_order_mark(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record_index = index;
        index += 1;
        if line.len() > limits.max_record_bytes {
            rejections.push(RejectReason::RecordTooLarge, || {
                too_large(record_index, Some(line_number + 1), line.len(), limits)
            });
            continue;
        }
        match parser.parse(line, bounds) {
            Ok(event) => accept(&event, line),
            Err(error) => rejections.push(error.reason, || {
                rejected(record_index, Some(line_number + 1), error)
            }),
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

    fn budget() -> std::sync::Arc<mm_http::MemoryBudget> {
        mm_http::MemoryBudget::new(1 << 30)
    }

    #[test]
    fn ndjson_reports_bad_lines_and_keeps_good_ones() {
        let body = format!("{GOOD}\n\n{{\"broken\n{GOOD}\r\n[1]\n");
        let processed = process_body(
            &parser(),
            body.as_bytes(),
            TimeBounds::UNBOUNDED,
            &IngestLimits::default(),
            &mut budget().reservation(),
        )
        .expect("readable");
        assert_eq!(processed.records, 4);
        assert_eq!(processed.accepted, 2);
        let positions: Vec<(usize, Option<usize>, RejectReason)> = processed
            .rejected
            .listed
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

    /// `body` processed without time bounds, with the default limits.
    fn unbounded(body: &str) -> ProcessedBody {
        process_body(
            &parser(),
            body.as_bytes(),
            TimeBounds::UNBOUNDED,
            &IngestLimits::default(),
            &mut budget().reservation(),
        )
        .expect("readable")
    }

    #[test]
    fn byte_order_marks_before_the_body_and_its_lines_are_not_part_of_the_records() {
        let mark = "\u{FEFF}";
        for body in [
            format!("{mark}{GOOD}\n{GOOD}\n{mark}{GOOD}\r\n"),
            format!("{mark}[{GOOD}, {GOOD}, {GOOD}]"),
        ] {
            let processed = unbounded(&body);
            assert_eq!(
                (processed.records, processed.accepted),
                (3, 3),
                "{body:?}: {:?}",
                processed.rejected.listed
            );
        }
        // Inside a record it is the record's text.
        let body = format!("{}\n", GOOD.replace("\"M1\"", &format!("\"{mark}M1\"")));
        let processed = unbounded(&body);
        assert_eq!(processed.accepted, 1);
        let mut merchants = Vec::new();
        wal::decode_batch(&processed.payload, |event| {
            merchants.push(event.merchant.into_owned())
        })
        .expect("decodes");
        assert_eq!(merchants, vec![format!("{mark}M1")]);
    }

    #[test]
    fn arrays_report_by_element_index() {
        let body = format!("[{GOOD}, 5, {}]", GOOD.replace("\"M1\"", "\"\""));
        let processed = process_body(
            &parser(),
            body.as_bytes(),
            TimeBounds::UNBOUNDED,
            &IngestLimits::default(),
            &mut budget().reservation(),
        )
        .expect("readable");
        assert_eq!(processed.accepted, 1);
        assert_eq!(processed.rejected.total, 2);
        assert_eq!(processed.rejected.listed[1].index, 2);
        assert_eq!(
            processed.rejected.listed[1].field.as_deref(),
            Some("merchant")
        );
        assert!(matches!(
            process_body(
                &parser(),
                b"[{\"a\":1},",
                TimeBounds::UNBOUNDED,
                &IngestLimits::default(),
                &mut budget().reservation(),
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
        let processed = process_body(
            &parser(),
            body.as_bytes(),
            TimeBounds::UNBOUNDED,
            &limits,
            &mut budget().reservation(),
        )
        .expect("readable");
        assert_eq!(processed.accepted, 1);
        assert_eq!(
            processed.rejected.listed[0].code,
            RejectReason::RecordTooLarge
        );
    }

    #[test]
    fn compressed_bodies_decode_within_limits() {
        use std::io::Write;
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(GOOD.as_bytes()).expect("compresses");
        let gzipped = gzip.finish().expect("compresses");
        assert_eq!(
            decode_body(Some("gzip"), &gzipped, 1 << 20, &mut budget().reservation())
                .expect("decodes")
                .as_ref(),
            GOOD.as_bytes()
        );
        let zstded = zstd::encode_all(GOOD.as_bytes(), 1).expect("compresses");
        assert_eq!(
            decode_body(Some("zstd"), &zstded, 1 << 20, &mut budget().reservation())
                .expect("decodes")
                .as_ref(),
            GOOD.as_bytes()
        );
        assert!(matches!(
            decode_body(Some("gzip"), &gzipped, 10, &mut budget().reservation()),
            Err(BodyError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_body(
                Some("gzip"),
                b"not gzip",
                1 << 20,
                &mut budget().reservation()
            ),
            Err(BodyError::Decompress { .. })
        ));
        assert!(matches!(
            decode_body(Some("br"), b"x", 1 << 20, &mut budget().reservation()),
            Err(BodyError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn answers_list_the_first_rejects_and_count_every_one_by_code() {
        let limits = IngestLimits {
            max_reported_errors: 3,
            ..IngestLimits::default()
        };
        let mut body = String::new();
        for _ in 0..10 {
            body.push_str("x\n");
        }
        body.push_str(GOOD);
        body.push('\n');
        for _ in 0..5 {
            body.push_str("[1]\n");
        }
        let processed = process_body(
            &parser(),
            body.as_bytes(),
            TimeBounds::UNBOUNDED,
            &limits,
            &mut budget().reservation(),
        )
        .expect("readable");
        assert_eq!(processed.records, 16);
        assert_eq!(processed.accepted, 1);
        assert_eq!(processed.rejected.total, 15);
        assert_eq!(processed.rejected.omitted(), 12);
        let listed: Vec<usize> = processed
            .rejected
            .listed
            .iter()
            .map(|record| record.index)
            .collect();
        assert_eq!(listed, vec![0, 1, 2]);
        assert_eq!(
            processed.rejected.by_code,
            BTreeMap::from([
                (RejectReason::InvalidJson, 10),
                (RejectReason::NotAnObject, 5)
            ])
        );
    }

    #[test]
    fn decompression_and_the_batch_are_reserved_and_refused_beyond_the_budget() {
        use std::io::Write;
        let body: String = std::iter::repeat_n(format!("{GOOD}\n"), 2000).collect();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(body.as_bytes()).expect("compresses");
        let gzipped = gzip.finish().expect("compresses");
        let roomy = budget();
        let mut reservation = roomy.reservation();
        let decoded =
            decode_body(Some("gzip"), &gzipped, 1 << 24, &mut reservation).expect("decodes");
        assert_eq!(decoded.len(), body.len());
        assert!(
            reservation.bytes() >= body.len(),
            "the decompressed body is reserved"
        );
        let before_batch = reservation.bytes();
        let processed = process_body(
            &parser(),
            &decoded,
            TimeBounds::UNBOUNDED,
            &IngestLimits::default(),
            &mut reservation,
        )
        .expect("readable");
        assert_eq!(processed.accepted, 2000);
        assert!(processed.payload.capacity() <= reservation.bytes() - before_batch);
        drop(reservation);
        assert_eq!(roomy.used(), 0);
        // A budget smaller than the decompressed body refuses it, taking nothing.
        let tight = mm_http::MemoryBudget::new(body.len() / 2);
        assert!(matches!(
            decode_body(Some("gzip"), &gzipped, 1 << 24, &mut tight.reservation()),
            Err(BodyError::Memory(_))
        ));
        assert_eq!(tight.used(), 0);
    }
}

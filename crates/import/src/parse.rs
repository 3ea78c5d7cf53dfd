//! The parser threads' work: a chunk of whole lines into event columns, its rejected lines
//! with their reasons, and what the merging thread needs to place it in the file.

use mm_archive::{EventColumns, Rows};
use mm_ingest::{IngestLimits, for_each_record};
use mm_model::mapping::{EventParser, RejectReason, TimeBounds};

/// One parsed chunk.
pub(crate) struct Parsed {
    pub(crate) bytes: u64,
    /// Bytes of an unfinished last line left for a later import (after `bytes`).
    pub(crate) unfinished: u64,
    /// CRC-32 of the chunk.
    pub(crate) crc: u32,
    /// Line ends in the chunk.
    pub(crate) newlines: u64,
    pub(crate) events: EventColumns,
    pub(crate) accepted: u64,
    pub(crate) records: u64,
    /// (line within the chunk, code, report line without its file line number)
    pub(crate) rejected: Vec<(usize, String, serde_json::Value)>,
}

/// Input bytes per event a chunk's columns are first given room for (generated calls take
/// 200–400 bytes a line).
const BYTES_PER_ROW: usize = 256;

/// Parses a chunk (`last`: the input ends with it).
pub(crate) fn parse_chunk(
    parser: &EventParser,
    (chunk, last): (&[u8], bool),
    bounds: TimeBounds,
    limits: &IngestLimits,
    text_room: [usize; 3],
) -> Result<Parsed, String> {
    let mut events = EventColumns::with_capacity(chunk.len() / BYTES_PER_ROW);
    events.reserve_text(text_room);
    let (mut records, mut rejections) =
        for_each_record(parser, chunk, bounds, limits, |event, _| {
            events.push(event);
        })
        .map_err(|error| error.to_string())?;
    let newlines = memchr::memchr_iter(b'\n', chunk).count();
    // The input's last line without its newline and not JSON (or too long): a line still being
    // written (a log read while it grows). It is left for an import after the file has grown,
    // which reads it whole, rather than rejected now and its rest rejected then. A whole
    // record that fails a check is rejected as any other.
    let whole = chunk.len();
    let mut bytes = whole;
    if last
        && chunk.last().is_some_and(|byte| *byte != b'\n')
        && rejections.listed.last().is_some_and(|record| {
            record.line == Some(newlines + 1)
                && matches!(
                    record.code,
                    RejectReason::InvalidJson
                        | RejectReason::InvalidUtf8
                        | RejectReason::RecordTooLarge
                )
        })
    {
        rejections.listed.pop();
        records -= 1;
        bytes = memchr::memrchr(b'\n', chunk).map_or(0, |newline| newline + 1);
    }
    let chunk = &chunk[..bytes];
    let lines: Vec<&[u8]> = if rejections.listed.is_empty() {
        Vec::new()
    } else {
        chunk.split(|byte| *byte == b'\n').collect()
    };
    let rejected = rejections
        .listed
        .iter()
        .map(|record| {
            let line = record.line.unwrap_or(0);
            let text = lines
                .get(line.wrapping_sub(1))
                .map(|raw| {
                    String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(raw)).into_owned()
                })
                .unwrap_or_default();
            let code = serde_json::to_value(record.code)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default();
            let report = serde_json::json!({
                "field": record.field,
                "code": code,
                "reason": record.reason,
                "record": text,
            });
            (line, code, report)
        })
        .collect();
    Ok(Parsed {
        bytes: chunk.len() as u64,
        crc: crc32fast::hash(chunk),
        newlines: newlines as u64,
        unfinished: (whole - bytes) as u64,
        accepted: events.rows() as u64,
        events,
        records: records as u64,
        rejected,
    })
}

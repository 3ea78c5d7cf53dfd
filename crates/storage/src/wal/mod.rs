//! The write-ahead log: durable, ordered batches of accepted events, with group commit.
//!
//! # On-disk format
//!
//! A directory of segment files named `{first_lsn:020}.wal`. A segment is a sequence of
//! frames: `len: u32 LE` (payload bytes), `crc: u32 LE` (CRC-32 of the `lsn` bytes and the
//! payload), `lsn: u64 LE`, then the payload. LSNs start at 1 and increase by one per frame
//! across segments. A payload is one batch: version byte `1`, varint event count, then the
//! events in the [`crate::codec`] event encoding. A batch sent with an `Idempotency-Key` has
//! version byte `2` and, before the count, the [`RequestRecord`] of its request: key
//! (length-prefixed), fingerprint `u64 LE`, arrival time `i64 LE` (µs), answer status
//! `u16 LE` and answer body (length-prefixed). The record is durable exactly when the events
//! are, so a retry after a crash finds it.
//!
//! # Invariants
//!
//! - A frame is acknowledged (its append future resolves) only after `fdatasync` covered it.
//!   Appends that arrive while a sync is running are written and synced together (group
//!   commit), so one fsync serves many requests.
//! - Committed batches are handed to the consumer (the aggregator) in LSN order, after they
//!   are durable, so what the aggregator sees is exactly what a replay would see.
//! - On open, a torn or corrupt tail (short frame, bad length, CRC mismatch) ends the log: the
//!   segment is truncated at the last good frame and the loss is reported, never silently.
//!   Only unacknowledged data can be in a torn tail.
//! - Segments whose frames are all at or below the checkpointed LSN are deleted when the
//!   writer rolls to a new segment.

mod reader;
mod writer;

pub use reader::{ReplayReport, replay};
pub use writer::{AppendError, CommittedBatch, DurableObserver, Wal, WalConfig};

use crate::codec::{self, CodecError, Reader};
use mm_model::event::ApiCallRef;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
const BATCH_VERSION: u8 = 1;
const KEYED_BATCH_VERSION: u8 = 2;

/// What a keyed batch records of the request that sent it: enough to answer a retry of that
/// request with the first answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord<'a> {
    /// The client's `Idempotency-Key`, scoped to the client.
    pub key: &'a str,
    /// A fingerprint of the request body, to tell a retry from a different request.
    pub fingerprint: u64,
    /// When the request arrived (µs since the epoch).
    pub at_us: i64,
    /// The answer's status and body.
    pub status: u16,
    pub reply: &'a [u8],
}

/// Starts a batch payload for `count` events; append each with [`codec::encode_event`].
pub fn begin_batch(count: usize, out: &mut Vec<u8>) {
    out.push(BATCH_VERSION);
    codec::put_varint(out, count as u64);
}

/// Starts a batch payload for `count` events that records the request that sent them.
pub fn begin_keyed_batch(count: usize, request: &RequestRecord<'_>, out: &mut Vec<u8>) {
    out.push(KEYED_BATCH_VERSION);
    codec::put_bytes(out, request.key.as_bytes());
    out.extend_from_slice(&request.fingerprint.to_le_bytes());
    out.extend_from_slice(&request.at_us.to_le_bytes());
    out.extend_from_slice(&request.status.to_le_bytes());
    codec::put_bytes(out, request.reply);
    codec::put_varint(out, count as u64);
}

/// Reads a batch header: the request record of a keyed batch, then the event count.
fn read_header<'a>(
    reader: &mut Reader<'a>,
) -> Result<(Option<RequestRecord<'a>>, usize), CodecError> {
    let request = match reader.u8("batch version")? {
        BATCH_VERSION => None,
        KEYED_BATCH_VERSION => Some(RequestRecord {
            key: reader.str("request key")?,
            fingerprint: reader.u64_le("request fingerprint")?,
            at_us: reader.i64_le("request time")?,
            status: reader.u16_le("request status")?,
            reply: reader.bytes("request reply")?,
        }),
        _ => return Err(CodecError::Invalid("batch version")),
    };
    let count = usize::try_from(reader.varint("batch count")?)
        .map_err(|_| CodecError::Invalid("batch count"))?;
    Ok((request, count))
}

/// Turns a batch begun with [`begin_batch`] into one that records its request (in place).
pub fn key_batch(payload: &mut Vec<u8>, request: &RequestRecord<'_>) -> Result<(), CodecError> {
    let mut reader = Reader::new(payload);
    let (existing, count) = read_header(&mut reader)?;
    if existing.is_some() {
        return Err(CodecError::Invalid("batch already keyed"));
    }
    let old_header = reader.position();
    let mut header = Vec::with_capacity(32 + request.key.len() + request.reply.len());
    begin_keyed_batch(count, request, &mut header);
    payload.splice(0..old_header, header);
    Ok(())
}

/// The request record of a keyed batch; `None` for a batch sent without a key.
pub fn batch_request(payload: &[u8]) -> Result<Option<RequestRecord<'_>>, CodecError> {
    Ok(read_header(&mut Reader::new(payload))?.0)
}

/// Encodes a whole batch payload.
pub fn encode_batch<'a>(events: impl ExactSizeIterator<Item = &'a ApiCallRef<'a>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 96 + 8);
    begin_batch(events.len(), &mut out);
    for event in events {
        codec::encode_event(event, &mut out);
    }
    out
}

/// Number of events in a batch payload, read from its header.
pub fn batch_len(payload: &[u8]) -> Result<usize, CodecError> {
    Ok(read_header(&mut Reader::new(payload))?.1)
}

/// Calls `visit` for each event of a batch payload.
pub fn decode_batch<'a>(
    payload: &'a [u8],
    mut visit: impl FnMut(ApiCallRef<'a>),
) -> Result<usize, CodecError> {
    let mut reader = Reader::new(payload);
    let (_, count) = read_header(&mut reader)?;
    for _ in 0..count {
        visit(codec::decode_event(&mut reader)?);
    }
    if !reader.is_empty() {
        return Err(CodecError::Invalid("trailing bytes after batch"));
    }
    Ok(count)
}

fn frame_crc(lsn: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".wal")?.parse().ok()
}

/// Segment files of `dir`, sorted by first LSN.
fn list_segments(dir: &std::path::Path) -> std::io::Result<Vec<(u64, std::path::PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first_lsn) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((first_lsn, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod tests;

//! The write-ahead log: durable, ordered batches of accepted events, with group commit.
//!
//! # On-disk format
//!
//! A directory of segment files named `{first_lsn:020}.wal`. A segment is a sequence of
//! frames: `len: u32 LE` (payload bytes), `crc: u32 LE` (CRC-32 of the `lsn` bytes and the
//! payload), `lsn: u64 LE`, then the payload. LSNs start at 1 and increase by one per frame
//! across segments. A payload is one batch: version byte `1`, varint event count, then the
//! events in the [`crate::codec`] event encoding.
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

/// Starts a batch payload for `count` events; append each with [`codec::encode_event`].
pub fn begin_batch(count: usize, out: &mut Vec<u8>) {
    out.push(BATCH_VERSION);
    codec::put_varint(out, count as u64);
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
    let mut reader = Reader::new(payload);
    if reader.u8("batch version")? != BATCH_VERSION {
        return Err(CodecError::Invalid("batch version"));
    }
    Ok(reader.varint("batch count")? as usize)
}

/// Calls `visit` for each event of a batch payload.
pub fn decode_batch<'a>(
    payload: &'a [u8],
    mut visit: impl FnMut(ApiCallRef<'a>),
) -> Result<usize, CodecError> {
    let mut reader = Reader::new(payload);
    if reader.u8("batch version")? != BATCH_VERSION {
        return Err(CodecError::Invalid("batch version"));
    }
    let count = reader.varint("batch count")? as usize;
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

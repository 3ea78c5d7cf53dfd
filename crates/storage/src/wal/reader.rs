//! Reading the log back after a restart.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::Path;

use super::{FRAME_HEADER_BYTES, frame_crc, list_segments};
use crate::StorageError;

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Frames handed to the visitor (LSN above the checkpoint).
    pub replayed: u64,
    /// The highest LSN in the log (0 when empty).
    pub last_lsn: u64,
    /// Bytes cut off a torn or corrupt tail.
    pub truncated_bytes: u64,
}

/// Largest payload a frame may claim; anything larger is corruption.
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Reads every frame with LSN above `after_lsn`, in order, truncating a torn tail.
pub fn replay(
    dir: &Path,
    after_lsn: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), StorageError>,
) -> Result<ReplayReport, StorageError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| StorageError::io("create wal directory", dir, source))?;
    let segments =
        list_segments(dir).map_err(|source| StorageError::io("list wal segments", dir, source))?;
    let mut report = ReplayReport::default();
    let mut payload = Vec::new();
    let segment_count = segments.len();
    for (index, (first_lsn, path)) in segments.into_iter().enumerate() {
        let file = File::open(&path)
            .map_err(|source| StorageError::io("open wal segment", &path, source))?;
        let length = file
            .metadata()
            .map_err(|source| StorageError::io("stat wal segment", &path, source))?
            .len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        let mut expected_lsn = first_lsn;
        let mut good = true;
        while offset < length {
            let mut header = [0u8; FRAME_HEADER_BYTES];
            if length - offset < FRAME_HEADER_BYTES as u64 || input.read_exact(&mut header).is_err()
            {
                good = false;
                break;
            }
            let payload_len =
                u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let mut lsn_bytes = [0u8; 8];
            lsn_bytes.copy_from_slice(&header[8..16]);
            let lsn = u64::from_le_bytes(lsn_bytes);
            let frame_end = offset + (FRAME_HEADER_BYTES + payload_len) as u64;
            if payload_len > MAX_FRAME_BYTES || frame_end > length || lsn != expected_lsn {
                good = false;
                break;
            }
            payload.resize(payload_len, 0);
            if input.read_exact(&mut payload).is_err() || frame_crc(lsn, &payload) != crc {
                good = false;
                break;
            }
            if lsn > after_lsn {
                visit(lsn, &payload)?;
                report.replayed += 1;
            }
            report.last_lsn = lsn;
            expected_lsn += 1;
            offset = frame_end;
        }
        if good {
            continue;
        }
        report.truncated_bytes += length - offset;
        if index + 1 == segment_count {
            tracing::warn!(segment = %path.display(), offset, cut = length - offset, "wal tail is torn or corrupt; truncating it (unacknowledged data only)");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| {
                    StorageError::io("open wal segment for truncation", &path, source)
                })?;
            file.set_len(offset)
                .and_then(|()| file.sync_all())
                .map_err(|source| StorageError::io("truncate wal segment", &path, source))?;
        } else {
            // A corrupt frame inside an older segment: later segments cannot be trusted to
            // continue the sequence, so this is an error for the operator, not a silent skip.
            return Err(StorageError::Corrupt {
                what: "wal segment",
                path: path.clone(),
                detail: format!("bad frame at offset {offset} with later segments present"),
            });
        }
    }
    Ok(report)
}

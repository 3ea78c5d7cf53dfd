//! Durable storage for Merchant Monitor on one machine.
//!
//! - [`wal`]: the write-ahead log. Every accepted batch is appended, fsynced (group commit)
//!   and only then acknowledged and handed to the aggregator.
//! - [`rollups`]: the embedded rollup store (fjall): per-minute rollups of every
//!   (merchant, api) and merchant-wide series, a merchant ranking index, the set of open
//!   windows and the checkpoint, all written by one atomic batch per checkpoint.
//! - [`codec`]: the binary encodings both use.
//! - [`health`]: whether storage takes writes (a failed write is a state every writer leaves
//!   by itself), and [`ballast`]: reserved space given up when the disk fills.
//!
//! The exactly-once rule: a checkpoint commits, in one atomic fjall batch, the rollups changed
//! since the previous one together with the WAL position (LSN) they cover. After a crash the
//! open windows are loaded from the store and the WAL is replayed from that LSN, so each
//! acknowledged event is counted once.

pub mod ballast;
pub mod codec;
pub mod health;
pub mod idempotency;
pub mod rollups;
pub mod wal;

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors of the storage layer.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rollup store: {0}")]
    Store(#[from] fjall::Error),
    #[error("corrupt {what} {}: {detail}", path.display())]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the rollup store is being reopened after a failed write")]
    Reopening,
    #[error("{0} poisoned by a panicked writer")]
    Poisoned(&'static str),
    #[error("undecodable {what}: {source}")]
    Codec {
        what: &'static str,
        #[source]
        source: codec::CodecError,
    },
}

impl StorageError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// True when a write failed at the I/O level, after which fjall refuses every write until
    /// the database is opened again.
    pub(crate) fn breaks_store(&self) -> bool {
        matches!(
            self,
            StorageError::Store(fjall::Error::Io(_) | fjall::Error::Poisoned)
        )
    }

    /// True when the error says the filesystem is full (or the quota is reached).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => health::is_disk_full(source),
            StorageError::Store(fjall::Error::Io(source)) => health::is_disk_full(source),
            _ => false,
        }
    }
}

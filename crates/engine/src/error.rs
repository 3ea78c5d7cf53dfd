//! The engine's errors: each says which step failed and keeps its cause.

use std::path::PathBuf;

use mm_archive::ArchiveError;
use mm_storage::StorageError;

/// Why the embedded pipeline could not start, checkpoint, archive or stop.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The rollup store or the write-ahead log failed.
    #[error("{action}: {source}")]
    Storage {
        action: &'static str,
        #[source]
        source: StorageError,
    },
    /// The archive failed.
    #[error("{action}: {source}")]
    Archive {
        action: &'static str,
        #[source]
        source: ArchiveError,
    },
    /// A file or directory of the engine's own (data directory, activity file).
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An activity record could not be encoded.
    #[error("encoding activity record: {0}")]
    Encode(#[from] serde_json::Error),
    /// A pipeline thread could not start.
    #[error("spawning the {thread} thread: {source}")]
    Spawn {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A pipeline thread panicked; its panic message is in the log.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

impl EngineError {
    /// True when the error says the filesystem is full (or the quota is reached).
    pub fn is_disk_full(&self) -> bool {
        match self {
            EngineError::Storage { source, .. } => source.is_disk_full(),
            EngineError::Archive {
                source: ArchiveError::Io { source, .. },
                ..
            }
            | EngineError::Io { source, .. } => mm_storage::health::is_disk_full(source),
            _ => false,
        }
    }

    pub(crate) fn storage(action: &'static str) -> impl FnOnce(StorageError) -> Self {
        move |source| EngineError::Storage { action, source }
    }

    pub(crate) fn archive(action: &'static str) -> impl FnOnce(ArchiveError) -> Self {
        move |source| EngineError::Archive { action, source }
    }

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| EngineError::Io {
            action,
            path,
            source,
        }
    }
}

/// Results of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

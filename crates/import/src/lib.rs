//! `merchant-monitor import`: historical API-call logs into a data directory, as if they had
//! been ingested live.
//!
//! Each file (NDJSON, plain, gzip or zstd; or Parquet, whose rows become JSON objects of their
//! columns) is cut into line-aligned chunks that parser threads
//! (one per core) parse and validate exactly as `/v1/ingest` does (same field mapping, same
//! time bounds, same per-record errors), collecting the accepted events as columns
//! ([`mm_archive::EventColumns`]). One thread takes the chunks back in file order and adds every call to its
//! (merchant, api, minute) window and the merchant-wide one. Every [`UNIT_BYTES`] of input (at
//! the first chunk reaching a later minute, within half a unit: see `Unit::ends_here`) it
//! commits a unit: the events to archive segments (the manifest records how far the file is
//! archived), then the windows merged into the rollup store with the file's progress, in one
//! atomic batch, then the rejected lines to the file's rejection report.
//!
//! The files of one command go through one pipeline ([`Imports::import_files`], module
//! `pipeline`): a unit holds the chunks of as many files as make its size, each with its own
//! progress in the unit's store batch and archive manifest switch.
//!
//! An interrupted import (a crash, Ctrl-C) continues where it stopped: the archive and the
//! store each know how far they have the file, the import reads again from the smaller and
//! gives each only what it lacks, and the rejection report is cut back to the length the store
//! recorded. Nothing is counted or archived twice.
//!
//! A file is known by its first records ([`Source::id`]), so a copy of an imported file is
//! skipped and a file that grew since is continued with its new lines; one that does not begin
//! with exactly the bytes imported under its identity is refused (see [`FileProgress`]).
//!
//! The server must be stopped (the store's lock says so otherwise). Windows a server starting
//! now would still count into are written open, so the server restores them with these calls;
//! older ones are written final, added to what is stored.

mod pages;
mod parquet;
mod parse;
mod pipeline;
mod source;
mod unit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use mm_archive::{Archive, ArchiveConfig};
use mm_model::mapping::FieldMapping;
use mm_storage::rollups::{ImportMemo, RollupStore};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use parse::Parsed;
pub use source::Source;

/// Input bytes (decompressed) per committed unit by default: what an interruption can cost
/// again, and about what a unit holds in memory.
pub const UNIT_BYTES: u64 = 128 << 20;

/// Errors of an import.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the rollup store in {} (is a server running on this data directory?): {source}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: mm_storage::StorageError,
    },
    #[error("writing to the rollup store: {0}")]
    Write(#[source] mm_storage::StorageError),
    #[error("archive: {0}")]
    Archive(#[from] mm_archive::ArchiveError),
    #[error("field mapping: {0}")]
    Mapping(String),
    #[error("{}: {detail}", path.display())]
    Input { path: PathBuf, detail: String },
    /// What went wrong inside the pipeline (the caller names the file).
    #[error("{0}")]
    Pipeline(String),
    #[error("interrupted")]
    Interrupted,
}

impl ImportError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ImportError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// What an import needs to know: the server's settings that decide what is accepted.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub data_dir: PathBuf,
    pub mapping: FieldMapping,
    /// Events older than this (from now) are rejected, as by ingest.
    pub retention: Duration,
    /// Events further ahead than this are rejected, as by ingest.
    pub max_clock_skew: Duration,
    pub max_record_bytes: usize,
    /// The server's grace: windows a server starting now would still count into are written
    /// open.
    pub grace: Duration,
    /// Parser threads.
    pub threads: usize,
    /// Where the rejection reports go \[default: `<data dir>/import`\].
    pub report_dir: Option<PathBuf>,
    /// Input bytes per committed unit ([`UNIT_BYTES`]); an import that continues another
    /// may use another size (chunks, not units, decide where the store and the archive can
    /// have stopped).
    pub unit_bytes: u64,
}

/// How one file's import went (cumulative over interrupted runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProgress {
    pub path: String,
    /// Decompressed bytes imported.
    pub position: u64,
    /// Lines before `position`.
    pub lines: u64,
    /// Records (non-blank lines) read.
    pub records: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Rejected records by code.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Length of the rejection report.
    pub report_bytes: u64,
    /// Every line is imported.
    pub done: bool,
    /// CRC-32 of the (decompressed) bytes before `position`: a file continued is checked to
    /// begin with what was imported of it. Absent from imports of earlier versions.
    #[serde(default)]
    pub prefix_crc: Option<u32>,
    /// The file's size on disk and modification time when it was last imported: unchanged,
    /// a file imported whole is skipped without reading it.
    #[serde(default)]
    pub size_on_disk: Option<u64>,
    #[serde(default)]
    pub modified_ns: Option<u64>,
    /// The file's absolute path then (`path` is as it was named).
    #[serde(default)]
    pub canonical: Option<String>,
    /// Bytes of the file's last line, unfinished (no newline, not JSON), left for an import
    /// after the file has grown.
    #[serde(default)]
    pub unfinished: u64,
}

/// The outcome of one file.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    pub progress: FileProgress,
    /// The rejection report (one JSON object per rejected line, with its reason).
    pub report: PathBuf,
    /// Events imported by this run (not by earlier, interrupted ones).
    pub imported_now: u64,
    /// The file had been imported completely before.
    pub already_done: bool,
    pub elapsed: Duration,
}

/// The file of a command its import stopped at, and why.
#[derive(Debug, Error)]
#[error("{error}")]
pub struct FileError {
    /// Its index among the command's files.
    pub file: usize,
    #[source]
    pub error: ImportError,
}

/// What progress displays read while an import runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the command's files read from disk.
    pub read_on_disk: Arc<AtomicU64>,
    /// Bytes on disk of the command's files skipped without reading (imported whole before).
    pub skipped_on_disk: AtomicU64,
    /// Events accepted by this run so far.
    pub accepted: AtomicU64,
    /// Set to stop at the next unit (Ctrl-C): what is committed stays.
    pub stop: AtomicBool,
}

/// Imports `source` into the data directory; continues an earlier, interrupted import of it.
/// The files of one command go through one [`Imports`] instead.
pub fn import_file(
    source: &Source,
    options: &ImportOptions,
    store: &RollupStore,
    archive: &Archive,
    progress: &Progress,
) -> Result<FileOutcome, ImportError> {
    let mut imports = Imports::new(store)?;
    let outcome = imports.import_file(source, options, store, archive, progress);
    let finished = imports.finish(store);
    // The import's own error first (an interruption included).
    let outcome = outcome?;
    finished?;
    Ok(outcome)
}

/// The imports of one command (one process: the store's lock keeps other writers out), file
/// after file: what the store is known not to hold and the hour rollups held back carry over
/// from one file to the next, so files that share days (logs of several hosts, segments of
/// one hour) neither read keys an earlier file's day is known to lack nor write their hours
/// once each.
pub struct Imports {
    memo: ImportMemo,
    /// A unit's store write failed: the memo holds calls the store lacks.
    failed: bool,
}

impl Imports {
    pub fn new(store: &RollupStore) -> Result<Self, ImportError> {
        Ok(Self {
            memo: store.import_memo().map_err(ImportError::Write)?,
            failed: false,
        })
    }

    /// Imports `sources` in order, through one pipeline: units take the chunks of as many
    /// files as make their size, each file keeping its own progress (see [`import_file`]
    /// for what an import of a file does). `on_file` is given the outcome of each file, in
    /// the files' order, once the store and the archive both have its last unit. Stops at the first file that
    /// fails (or at a stop): the files before it and the units before that are committed.
    pub fn import_files(
        &mut self,
        sources: &[Source],
        options: &ImportOptions,
        (store, archive): (&RollupStore, &Archive),
        progress: &Progress,
        on_file: &mut (dyn FnMut(usize, FileOutcome) + Send),
    ) -> Result<(), FileError> {
        if self.failed {
            return Err(FileError {
                file: 0,
                error: ImportError::Pipeline(
                    "an earlier file's store write failed: the command stops there".into(),
                ),
            });
        }
        pipeline::import_files(
            sources,
            options,
            (store, archive),
            progress,
            (self, on_file),
        )
    }

    /// Imports `source` (see [`import_file`]).
    pub fn import_file(
        &mut self,
        source: &Source,
        options: &ImportOptions,
        store: &RollupStore,
        archive: &Archive,
        progress: &Progress,
    ) -> Result<FileOutcome, ImportError> {
        let mut outcome = None;
        self.import_files(
            std::slice::from_ref(source),
            options,
            (store, archive),
            progress,
            &mut |_, done| outcome = Some(done),
        )
        .map_err(|failed| failed.error)?;
        outcome.ok_or_else(|| ImportError::Pipeline("the import ended without its outcome".into()))
    }

    /// Writes the hour rollups held back whole: what the committed units (of every file, or
    /// those before a stop or an error) added to them. Not after a unit whose store write
    /// failed: the store's next open rebuilds the hours left pending from their minutes.
    pub fn finish(mut self, store: &RollupStore) -> Result<(), ImportError> {
        if self.failed {
            return Ok(());
        }
        store
            .finish_import(&mut self.memo)
            .map_err(ImportError::Write)
    }
}

/// What the store has of `source`, and the identity it has it under: the file's own, or the
/// one an earlier version gave it (so its import is continued, not counted again).
fn stored_progress(
    source: &Source,
    store: &RollupStore,
    archive: &Archive,
) -> Result<(String, FileProgress), ImportError> {
    let fresh = FileProgress {
        path: source.path.display().to_string(),
        ..FileProgress::default()
    };
    for id in candidate_ids(source) {
        if let Some(bytes) = store.import_progress(&id).map_err(ImportError::Write)? {
            let progress = serde_json::from_slice(&bytes).map_err(|error| ImportError::Input {
                path: source.path.clone(),
                detail: format!("unreadable import progress: {error}"),
            })?;
            return Ok((id, progress));
        }
        // Archived before the store had any of it (a crash between the two).
        if archive.imported(&id) > 0 {
            return Ok((id, fresh));
        }
    }
    Ok((source.id.clone(), fresh))
}

/// The identities under which the store or the archive may have `source`, in the order they
/// are looked up: its own, those earlier versions gave it, and those of its first bytes when
/// it was shorter.
pub(crate) fn candidate_ids(source: &Source) -> impl Iterator<Item = String> + '_ {
    // A file shorter than its fingerprint when it was imported is known by all it was then:
    // one beginning with those bytes is that file grown (and checked to begin with what was
    // imported of it, as any file continued).
    // (A Parquet file does not grow: an archive segment is known by its whole identity.)
    let shorter_than = match source.archive_segment {
        true => 0,
        false => source.head.len(),
    };
    let shorter = (1..shorter_than)
        .rev()
        .map(|length| source::identity(&source.head[..length]));
    [source.id.clone(), source.legacy_id.clone()]
        .into_iter()
        .chain(source.earlier_id.clone())
        .chain(shorter)
}

/// Opens the data directory's store and archive for an import.
pub fn open(data_dir: &Path) -> Result<(RollupStore, Archive), ImportError> {
    let store_dir = data_dir.join("store");
    let store = RollupStore::open(&store_dir).map_err(|source| ImportError::Store {
        path: store_dir,
        source,
    })?;
    let archive = Archive::open(&data_dir.join("archive"), ArchiveConfig::default())?;
    Ok((store, archive))
}

#[cfg(test)]
mod tests;

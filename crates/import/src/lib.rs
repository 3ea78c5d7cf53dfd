//! `merchant-monitor import`: historical API-call logs into a data directory, as if they had
//! been ingested live.
//!
//! Each file (NDJSON, plain, gzip or zstd; or Parquet, whose rows become JSON objects of their
//! columns) is cut into line-aligned chunks that parser threads
//! (one per core) parse and validate exactly as `/v1/ingest` does (same field mapping, same
//! time bounds, same per-record errors), collecting the accepted events as columns
//! ([`EventColumns`]). One thread takes the chunks back in file order and adds every call to its
//! (merchant, api, minute) window and the merchant-wide one. Every [`UNIT_BYTES`] of input (at
//! the first chunk reaching a later minute, within half a unit: see `Unit::ends_here`) it
//! commits a unit: the events to archive segments (the manifest records how far the file is
//! archived), then the windows merged into the rollup store with the file's progress, in one
//! atomic batch, then the rejected lines to the file's rejection report.
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
mod source;
mod unit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mm_archive::{Archive, ArchiveConfig, EventColumns};
use mm_ingest::IngestLimits;
use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};

use mm_model::time::{minute_of, now_us};
use mm_storage::rollups::{ImportMemo, RollupStore};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use parse::{Parsed, parse_chunk};
pub use source::Source;
use unit::{ArchiveUnit, Committer, Sealed, Unit};

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

/// What progress displays read while an import runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the current file read from disk.
    pub read_on_disk: Arc<AtomicU64>,
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

    /// Imports `source` (see [`import_file`]).
    pub fn import_file(
        &mut self,
        source: &Source,
        options: &ImportOptions,
        store: &RollupStore,
        archive: &Archive,
        progress: &Progress,
    ) -> Result<FileOutcome, ImportError> {
        if self.failed {
            return Err(ImportError::Pipeline(
                "an earlier file's store write failed: the command stops there".into(),
            ));
        }
        import_one(source, options, (store, archive), progress, self)
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

fn import_one(
    source: &Source,
    options: &ImportOptions,
    (store, archive): (&RollupStore, &Archive),
    progress: &Progress,
    imports: &mut Imports,
) -> Result<FileOutcome, ImportError> {
    let started = Instant::now();
    let _pages = pages::BasePages::new();
    let report_dir = options
        .report_dir
        .clone()
        .unwrap_or_else(|| options.data_dir.join("import"));
    std::fs::create_dir_all(&report_dir)
        .map_err(|error| ImportError::io("creating", &report_dir, error))?;
    let (id, stored) = stored_progress(source, store, archive)?;
    let id = id.as_str();
    // An archive segment imported (in part, or whole) by a version that read it otherwise
    // (under the identity its lines had then, or the one of its path, size and time) is read
    // as it was: the positions and checksum it recorded are of those lines.
    let earlier;
    let by_earlier = source.earlier_id.as_deref() == Some(id)
        || (source.archive_segment && id == source.legacy_id);
    let source = match by_earlier {
        true => {
            earlier = Source {
                as_earlier: true,
                ..source.clone()
            };
            &earlier
        }
        false => source,
    };
    // Named after the file as it was first imported (a copy continued adds to its report).
    let stem = Path::new(&stored.path).file_name().map_or_else(
        || "input".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let report = report_dir.join(format!("{stem}.{id}.rejected.ndjson"));
    // Imported whole, into the archive too (its last unit may have been cut short by a
    // crash after the store's), and the very file, unchanged since.
    let unchanged = stored.prefix_crc.is_none()
        || (stored.canonical.as_ref() == Some(&source.canonical)
            && stored.size_on_disk == Some(source.size)
            && stored.modified_ns == Some(source.modified_ns));
    if stored.done && unchanged && archive.imported(id) >= stored.position {
        return Ok(FileOutcome {
            progress: stored,
            report,
            imported_now: 0,
            already_done: true,
            elapsed: started.elapsed(),
        });
    }
    let archived = archive.imported(id);
    let start = stored.position.min(archived);
    progress.read_on_disk.store(0, Ordering::Relaxed);
    let mut input = source.open(progress.read_on_disk.clone())?;
    let shorter = || ImportError::Input {
        path: source.path.clone(),
        detail: format!(
            "shorter than the {} bytes imported from it before (as {}): a file cut or rewritten since is not continued",
            stored.position, stored.path
        ),
    };
    let read = |input: &mut Box<dyn std::io::Read + Send>, bytes| {
        source::skip(input, bytes)
            .map_err(|error| ImportError::io("reading", &source.path, error))?
            .ok_or_else(shorter)
    };
    let at_start = read(&mut input, start)?;
    // The file must begin with what was imported of it: another file that begins with the
    // same records, continued, would have those counted twice.
    if let Some(imported) = stored.prefix_crc {
        let crc = if start == stored.position {
            at_start.clone().finalize()
        } else {
            read(&mut source.open(Arc::default())?, stored.position)?.finalize()
        };
        if crc != imported {
            return Err(ImportError::Input {
                path: source.path.clone(),
                detail: format!(
                    "begins with the same records as {}, imported before, but differs within the {} bytes imported from it: not imported (the records they share would be counted twice)",
                    stored.path, stored.position
                ),
            });
        }
    }
    let was_done = (stored.done, stored.position);
    // Where the other of the store and the archive has the file: a chunk must end there, as
    // the unit it ended did, even if the file has grown past it since.
    let cut_at = Some(stored.position.max(archived) - start).filter(|bytes| *bytes > 0);
    // The report holds exactly the rejections of what the store has.
    let report_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&report)
        .map_err(|error| ImportError::io("opening", &report, error))?;
    report_file
        .set_len(stored.report_bytes)
        .map_err(|error| ImportError::io("truncating", &report, error))?;

    // An archive segment's columns are the event's fields by name.
    let mapping = match source.archive_segment && !source.as_earlier {
        true => FieldMapping::default(),
        false => options.mapping.clone(),
    };
    let parser = EventParser::new(&mapping, true)
        .map_err(|error| ImportError::Mapping(error.to_string()))?;
    let now = now_us();
    let bounds = TimeBounds::around(
        now,
        options.retention.as_micros() as i64,
        options.max_clock_skew.as_micros() as i64,
    );
    let open_from_minute = minute_of(now - options.grace.as_micros() as i64);
    let limits = IngestLimits {
        max_decoded_bytes: usize::MAX,
        max_record_bytes: options.max_record_bytes,
        max_reported_errors: usize::MAX,
    };
    let threads = options.threads.max(1);
    let (chunk_tx, chunk_rx) = sync_channel::<(usize, Vec<u8>, bool)>(threads * 2);
    // Held by the parsers only: once they are gone, the reader's sends fail and it stops.
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let (parsed_tx, parsed_rx) = sync_channel::<(usize, Result<Parsed, String>)>(threads * 2);

    let mut unit = Unit::new(&stored, start, archived, at_start);
    let mut committer = Committer {
        source,
        id,
        store,
        memo: &mut imports.memo,
        failed: &mut imports.failed,
        report_file,
        report_path: report.clone(),
        open_from_minute,
        progress: stored,
        timings: [Duration::ZERO; 1],
    };
    let read_whole = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| -> Result<u64, ImportError> {
        let read_whole = &read_whole;
        let reader = scope.spawn(move || {
            let mut index = 0;
            let mut taken = true;
            let read = source::chunks(&mut input, cut_at, |chunk, last| {
                taken = chunk_tx.send((index, chunk, last)).is_ok();
                index += 1;
                taken
            });
            // Before the chunks' channel closes (with this thread): the merging thread, which
            // sees it close last, reads it then.
            read_whole.store(read.is_ok() && taken, Ordering::Release);
            read
        });
        for _ in 0..threads {
            let (chunk_rx, parsed_tx, parser) = (chunk_rx.clone(), parsed_tx.clone(), &parser);
            scope.spawn(move || {
                // Text bytes per input byte of the chunk before: this chunk's text columns
                // get room for as much and a quarter.
                let mut text_share = [0.0f64; 3];
                loop {
                    let next = chunk_rx.lock().map(|receiver| receiver.recv());
                    let Ok(Ok((index, chunk, last))) = next else {
                        return;
                    };
                    let room = text_share.map(|share| (share * 1.25 * chunk.len() as f64) as usize);
                    let parsed = parse_chunk(parser, (&chunk, last), bounds, &limits, room);
                    if let Ok(parsed) = &parsed {
                        let bytes = parsed.events.text_bytes();
                        text_share = bytes.map(|bytes| bytes as f64 / chunk.len().max(1) as f64);
                    }
                    if parsed_tx.send((index, parsed)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(parsed_tx);
        drop(chunk_rx);
        // Units are committed while the next one is built: to the archive and to the store
        // by a thread each (each knows how far it has the file); one unit waits at most.
        let (sealed_tx, sealed_rx) = sync_channel::<Sealed>(1);
        let (archive_tx, archive_rx) = sync_channel::<ArchiveUnit>(1);
        let archiving = scope.spawn(move || {
            let started = Instant::now();
            for (end, chunks) in archive_rx {
                if end > archived {
                    let events = EventColumns::concat(&chunks);
                    archive.write_imported(&events, (id, end), threads)?;
                }
            }
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                "import: archive thread"
            );
            Ok::<(), ImportError>(())
        });
        let committing = scope.spawn(|| {
            for sealed in sealed_rx {
                committer.commit(sealed)?;
            }
            let [store] = committer.timings.map(|time| time.as_secs_f64());
            tracing::debug!(store, "import: seconds of the store thread");
            Ok::<(), ImportError>(())
        });
        let merged = merge(
            &parsed_rx,
            &mut unit,
            options.unit_bytes.max(1),
            (&sealed_tx, &archive_tx),
            (progress, read_whole),
        );
        drop(sealed_tx);
        drop(archive_tx);
        // Unblock the reader and the parsers before waiting for them.
        drop(parsed_rx);
        let archived = archiving.join();
        let committed = committing.join();
        let read = reader.join();
        let [windows] = unit.timings.map(|time| time.as_secs_f64());
        tracing::debug!(windows, "import: seconds of the merging thread");
        // A committer's error explains a merge that stopped because it was gone.
        for result in [archived, committed] {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(ImportError::Input {
                        path: source.path.clone(),
                        detail: "a committing thread panicked".into(),
                    });
                }
            }
        }
        let imported = merged?;
        match read {
            Ok(Ok(())) => Ok(imported),
            Ok(Err(error)) => Err(ImportError::io("reading", &source.path, error)),
            Err(_) => Err(ImportError::Input {
                path: source.path.clone(),
                detail: "the reader thread panicked".into(),
            }),
        }
    });
    let imported_now = outcome?;
    // Imported whole before, and nothing was added to it since.
    let already_done = was_done == (true, committer.progress.position);
    Ok(FileOutcome {
        progress: committer.progress,
        report,
        imported_now,
        already_done,
        elapsed: started.elapsed(),
    })
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
    for id in [source.id.clone(), source.legacy_id.clone()]
        .into_iter()
        .chain(source.earlier_id.clone())
        .chain(shorter)
    {
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

/// A committer that stopped has its error; this one only says so.
fn gone() -> ImportError {
    ImportError::Pipeline("a committing thread stopped".into())
}

/// Takes parsed chunks back in file order into units, handed to the committers; returns the
/// events accepted by this run.
fn merge(
    parsed_rx: &Receiver<(usize, Result<Parsed, String>)>,
    unit: &mut Unit,
    unit_bytes: u64,
    (sealed_tx, archive_tx): (&SyncSender<Sealed>, &SyncSender<ArchiveUnit>),
    (progress, read_whole): (&Progress, &AtomicBool),
) -> Result<u64, ImportError> {
    let send = |mut sealed: Sealed| -> Result<(), ImportError> {
        archive_tx
            .send((sealed.end, std::mem::take(&mut sealed.events)))
            .map_err(|_| gone())?;
        sealed_tx.send(sealed).map_err(|_| gone())
    };
    let mut waiting: BTreeMap<usize, Result<Parsed, String>> = BTreeMap::new();
    let mut next = 0;
    let mut imported = 0;
    for (index, parsed) in parsed_rx.iter() {
        waiting.insert(index, parsed);
        while let Some(parsed) = waiting.remove(&next) {
            next += 1;
            let parsed = parsed.map_err(|detail| {
                ImportError::Pipeline(format!("after line {}: {detail}", unit.lines))
            })?;
            imported += parsed.accepted;
            progress
                .accepted
                .fetch_add(parsed.accepted, Ordering::Relaxed);
            unit.add(parsed)?;
            if unit.ends_here(unit_bytes) {
                send(unit.seal(false))?;
                if progress.stop.load(Ordering::Acquire) {
                    return Err(ImportError::Interrupted);
                }
            }
        }
    }
    if !waiting.is_empty() {
        return Err(ImportError::Pipeline("a parser thread stopped".into()));
    }
    // The file is done only if it was read to its end: one whose reading failed (a truncated
    // gzip stream, an unreadable Parquet page) has what was read before committed, and is
    // continued from there by the next import (which meets the failure again, or the rest).
    send(unit.seal(read_whole.load(Ordering::Acquire)))?;
    Ok(imported)
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

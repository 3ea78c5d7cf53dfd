//! The files of one command through one pipeline: a reader thread reads them one after
//! another (each continued where the store and the archive have it), parser threads parse
//! their chunks, the merging thread (the caller's) builds units from them in order, and an
//! archive and a store thread commit each unit while the next one is built.
//!
//! A unit holds the chunks of as many files as make its size: the small files of a log
//! directory (a file per host and hour) commit as a large file does, each unit's windows
//! merged once and its events in the same segments, instead of every file paying a unit's
//! fixed costs and its last unit's commit alone. Each file keeps its own progress: the store
//! writes the records of all the files of a unit in the unit's batch, the archive their
//! positions in the unit's manifest switch.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use mm_archive::{Archive, EventColumns};
use mm_ingest::IngestLimits;
use mm_model::mapping::{EventParser, FieldMapping, TimeBounds};
use mm_model::time::{minute_of, now_us};
use mm_storage::rollups::RollupStore;

use crate::parse::{Parsed, parse_chunk};
use crate::unit::{ArchiveUnit, CommitFile, Committer, Part, Sealed, Unit};
use crate::{
    FileError, FileOutcome, ImportError, ImportOptions, Imports, Progress, Source, source,
    stored_progress,
};

/// What the reader sends, in order, through the parser threads to the merging thread.
enum Step<'s> {
    /// A file begins: its share of units, and what the committer keeps of it.
    Begin(Box<(Part, CommitFile<'s>)>),
    /// A chunk of the file begun last (`segment`: read with the archive's own mapping;
    /// `bounds`: the event times accepted, as when the file began).
    Chunk {
        file: usize,
        chunk: Vec<u8>,
        last: bool,
        segment: bool,
        bounds: TimeBounds,
    },
    /// A chunk, parsed.
    Parsed {
        file: usize,
        parsed: Box<Result<Parsed, String>>,
    },
    /// No more of the file comes: `whole` when it was read to its end.
    End { file: usize, whole: bool },
    /// A file imported whole before, skipped.
    Skipped(usize, FileOutcome),
    /// Commit what the unit holds now (a later file waits for it).
    Flush,
    /// The command stops at this file.
    Fail(usize, ImportError),
}

/// What the merging thread sends the committer, in order.
enum ToCommit<'s> {
    Begin(usize, Box<CommitFile<'s>>),
    Unit(Sealed),
    Skipped(usize, FileOutcome),
}

/// Which side has committed the last of a file.
const STORE: u8 = 1;
const ARCHIVE: u8 = 2;

/// The files the store and the archive have committed the last of (or that were skipped),
/// for a reader waiting on one of them; `stopped` once the pipeline ends.
#[derive(Default)]
struct Finished {
    state: Mutex<(BTreeMap<usize, u8>, bool)>,
    changed: Condvar,
}

impl Finished {
    fn mark(&self, file: usize, sides: u8) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state.0.entry(file).or_default() |= sides;
        self.changed.notify_all();
    }

    fn stop(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 = true;
        self.changed.notify_all();
    }

    fn all_done(done: &BTreeMap<usize, u8>, files: &[usize]) -> bool {
        files
            .iter()
            .all(|file| done.get(file) == Some(&(STORE | ARCHIVE)))
    }

    /// Whether both sides have the last of every one of `files` now.
    fn done(&self, files: &[usize]) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Self::all_done(&state.0, files)
    }

    /// Waits until both sides have the last of every one of `files`; false if the pipeline
    /// ended first.
    fn wait_for(&self, files: &[usize]) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if Self::all_done(&state.0, files) {
                return true;
            }
            if state.1 {
                return false;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Stops the pipeline's [`Finished`] when dropped: a thread that ends, by a panic too, never
/// leaves the reader waiting.
struct StopOnDrop<'a>(&'a Finished);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A file ready to be read: where to start, and its share of units.
struct Opened<'s> {
    part: Part,
    commit: CommitFile<'s>,
    input: Box<dyn std::io::Read + Send>,
    /// Where a chunk must end (see [`source::chunks`]).
    cut_at: Option<u64>,
    /// Read with the archive's own mapping.
    segment: bool,
}

enum Prepared<'s> {
    /// Imported whole before, and unchanged since.
    Skip(Box<FileOutcome>),
    Read(Box<Opened<'s>>),
}

/// Imports `sources` in order (see [`Imports::import_files`]).
pub(crate) fn import_files(
    sources: &[Source],
    options: &ImportOptions,
    (store, archive): (&RollupStore, &Archive),
    progress: &Progress,
    (imports, on_file): (&mut Imports, &mut (dyn FnMut(usize, FileOutcome) + Send)),
) -> Result<(), FileError> {
    let _pages = crate::pages::BasePages::new();
    let command = |error| FileError { file: 0, error };
    let report_dir = options
        .report_dir
        .clone()
        .unwrap_or_else(|| options.data_dir.join("import"));
    std::fs::create_dir_all(&report_dir)
        .map_err(|error| command(ImportError::io("creating", &report_dir, error)))?;
    let parser = EventParser::new(&options.mapping, true)
        .map_err(|error| command(ImportError::Mapping(error.to_string())))?;
    // An archive segment's columns are the event's fields by name.
    let segment_parser = EventParser::new(&FieldMapping::default(), true)
        .map_err(|error| command(ImportError::Mapping(error.to_string())))?;
    let now = now_us();
    let limits = IngestLimits {
        max_decoded_bytes: usize::MAX,
        max_record_bytes: options.max_record_bytes,
        max_reported_errors: usize::MAX,
    };
    let threads = options.threads.max(1);
    let (step_tx, step_rx) = sync_channel::<(usize, Step)>(threads * 2);
    // Held by the parsers only: once they are gone, the reader's sends fail and it stops.
    let step_rx = Arc::new(Mutex::new(step_rx));
    let (parsed_tx, parsed_rx) = sync_channel::<(usize, Step)>(threads * 2);
    let finished = Finished::default();
    let mut committer = Committer {
        store,
        memo: &mut imports.memo,
        failed: &mut imports.failed,
        open_from_minute: minute_of(now - options.grace.as_micros() as i64),
        files: BTreeMap::new(),
        timings: Default::default(),
    };
    let mut unit = Unit::default();
    let outcomes = Mutex::new(Outcomes {
        ready: BTreeMap::new(),
        next: 0,
        on_file,
    });
    let result = std::thread::scope(|scope| -> Result<(), FileError> {
        let (finished, outcomes) = (&finished, &outcomes);
        let report_dir = report_dir.as_path();
        let reader = scope.spawn(move || {
            let mut index = 0;
            read_files(
                sources,
                (store, archive),
                (report_dir, progress, options),
                finished,
                |step| {
                    let sent = step_tx.send((index, step)).is_ok();
                    index += 1;
                    sent
                },
            );
        });
        for _ in 0..threads {
            let (step_rx, parsed_tx) = (step_rx.clone(), parsed_tx.clone());
            let (parser, segment_parser, limits) = (&parser, &segment_parser, &limits);
            scope.spawn(move || {
                // Text bytes per input byte of the chunk before: this chunk's text columns
                // get room for as much and a quarter.
                let mut text_share = [0.0f64; 3];
                loop {
                    let next = step_rx.lock().map(|receiver| receiver.recv());
                    let Ok(Ok((index, step))) = next else {
                        return;
                    };
                    let step = match step {
                        Step::Chunk {
                            file,
                            chunk,
                            last,
                            segment,
                            bounds,
                        } => {
                            let parser = if segment { segment_parser } else { parser };
                            let room = text_share
                                .map(|share| (share * 1.25 * chunk.len() as f64) as usize);
                            // A panic is the chunk's error: its step is never missing (the
                            // merging thread would wait for it, and the reader with it).
                            let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                #[cfg(test)]
                                crate::tests::parser_fault();
                                parse_chunk(parser, (&chunk, last), bounds, limits, room)
                            }))
                            .unwrap_or_else(|_| Err("the parser panicked on this chunk".into()));
                            if let Ok(parsed) = &parsed {
                                let bytes = parsed.events.text_bytes();
                                text_share =
                                    bytes.map(|bytes| bytes as f64 / chunk.len().max(1) as f64);
                            }
                            Step::Parsed {
                                file,
                                parsed: Box::new(parsed),
                            }
                        }
                        other => other,
                    };
                    if parsed_tx.send((index, step)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(parsed_tx);
        drop(step_rx);
        // Units are committed while the next one is built: to the archive and to the store
        // by a thread each (each knows how far it has each file); one unit waits at most.
        let (commit_tx, commit_rx) = sync_channel::<ToCommit>(1);
        let (archive_tx, archive_rx) = sync_channel::<ArchiveUnit>(1);
        let archiving = scope.spawn(move || {
            let _stop = StopOnDrop(finished);
            let started = Instant::now();
            for unit in archive_rx {
                if !unit.positions.is_empty() {
                    let events = EventColumns::concat(&unit.events);
                    let named: Vec<(&str, u64)> = unit
                        .positions
                        .iter()
                        .map(|(_, id, end)| (id.as_str(), *end))
                        .collect();
                    #[cfg(test)]
                    crate::tests::slow_archive();
                    archive
                        .write_imported(&events, &named, threads)
                        .map_err(|error| FileError {
                            file: unit.positions.last().map_or(0, |(file, _, _)| *file),
                            error: error.into(),
                        })?;
                }
                for file in unit.ended {
                    finished.mark(file, ARCHIVE);
                }
                give(outcomes, finished);
            }
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                "import: archive thread"
            );
            Ok::<(), FileError>(())
        });
        let committing = scope.spawn(move || {
            let _stop = StopOnDrop(finished);
            let committed = commit_all(&mut committer, commit_rx, (finished, outcomes));
            let [store] = committer.timings.map(|time| time.as_secs_f64());
            tracing::debug!(store, "import: seconds of the store thread");
            committed
        });
        let stop = StopOnDrop(finished);
        let merged = merge(
            &parsed_rx,
            &mut unit,
            options.unit_bytes.max(1),
            (&commit_tx, &archive_tx),
            progress,
        );
        drop(commit_tx);
        drop(archive_tx);
        // Unblock the reader and the parsers before waiting for them.
        drop(parsed_rx);
        drop(stop);
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
                    return Err(command(ImportError::Pipeline(
                        "a committing thread panicked".into(),
                    )));
                }
            }
        }
        merged?;
        read.map_err(|_| command(ImportError::Pipeline("the reader thread panicked".into())))
    });
    // Given by now, unless the command stopped before both sides had them.
    give(&outcomes, &finished);
    result
}

/// The reader thread: each file prepared (skipped when imported whole), then read in chunks;
/// `send` returns false once the pipeline is gone, and the reading stops.
fn read_files<'s>(
    sources: &'s [Source],
    sides: (&RollupStore, &Archive),
    (report_dir, progress, options): (&Path, &Progress, &ImportOptions),
    finished: &Finished,
    mut send: impl FnMut(Step<'s>) -> bool,
) {
    // The identities the files begun are imported under, and the last file of each.
    let mut began: HashMap<String, usize> = HashMap::new();
    for (file, source) in sources.iter().enumerate() {
        // One the store or the archive may know under the identity of a file before it in
        // this command (a copy, the same file named twice) is looked up once both have that
        // file's last unit: it is then found imported, not counted again.
        let earlier: Vec<usize> = crate::candidate_ids(source)
            .filter_map(|id| began.get(&id).copied())
            .collect();
        if !earlier.is_empty()
            && !finished.done(&earlier)
            && (!send(Step::Flush) || !finished.wait_for(&earlier))
        {
            return;
        }
        let opened = match prepare(file, source, sides, report_dir, progress) {
            Ok(Prepared::Skip(outcome)) => {
                progress
                    .skipped_on_disk
                    .fetch_add(source.size, Ordering::Relaxed);
                if !send(Step::Skipped(file, *outcome)) {
                    return;
                }
                continue;
            }
            Ok(Prepared::Read(opened)) => opened,
            Err(error) => {
                send(Step::Fail(file, error));
                return;
            }
        };
        let Opened {
            part,
            commit,
            mut input,
            cut_at,
            segment,
        } = *opened;
        // Taken per file: the last files of a long command (a log still written to) are
        // checked against the clock as they are read.
        let bounds = TimeBounds::around(
            now_us(),
            options.retention.as_micros() as i64,
            options.max_clock_skew.as_micros() as i64,
        );
        began.insert(part.id.clone(), file);
        if !send(Step::Begin(Box::new((part, commit)))) {
            return;
        }
        let mut taken = true;
        let read = source::chunks(&mut input, cut_at, |chunk, last| {
            taken = send(Step::Chunk {
                file,
                chunk,
                last,
                segment,
                bounds,
            });
            taken
        });
        // A file whose reading fails midway (a cut gzip stream, an unreadable Parquet page)
        // has what was read committed and stays unfinished: the next import meets the
        // failure again, or the rest.
        if !taken
            || !send(Step::End {
                file,
                whole: read.is_ok(),
            })
        {
            return;
        }
        if let Err(error) = read {
            send(Step::Fail(
                file,
                ImportError::io("reading", &source.path, error),
            ));
            return;
        }
    }
}

/// What the store and the archive have of `source`: skipped when imported whole and
/// unchanged, or opened where the one that has less of it stopped.
fn prepare<'s>(
    file: usize,
    source: &'s Source,
    (store, archive): (&RollupStore, &Archive),
    report_dir: &Path,
    progress: &Progress,
) -> Result<Prepared<'s>, ImportError> {
    let started = Instant::now();
    let (id, stored) = stored_progress(source, store, archive)?;
    // An archive segment imported (in part, or whole) by a version that read it otherwise
    // (under the identity its lines had then, or the one of its path, size and time) is read
    // as it was: the positions and checksum it recorded are of those lines.
    let by_earlier = source.earlier_id.as_deref() == Some(id.as_str())
        || (source.archive_segment && id == source.legacy_id);
    let source: Cow<'s, Source> = match by_earlier {
        true => Cow::Owned(Source {
            as_earlier: true,
            ..source.clone()
        }),
        false => Cow::Borrowed(source),
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
    let archived = archive.imported(&id);
    if stored.done && unchanged && archived >= stored.position {
        return Ok(Prepared::Skip(Box::new(FileOutcome {
            progress: stored,
            report,
            imported_now: 0,
            already_done: true,
            elapsed: started.elapsed(),
        })));
    }
    let start = stored.position.min(archived);
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
    let segment = source.archive_segment && !source.as_earlier;
    let part = Part::new((file, id.clone()), &stored, (start, archived), at_start);
    let commit = CommitFile {
        source,
        id,
        report_file,
        report_path: report,
        accepted_before: stored.accepted,
        was_done: (stored.done, stored.position),
        progress: stored,
        started,
    };
    Ok(Prepared::Read(Box::new(Opened {
        part,
        commit,
        input,
        cut_at,
        segment,
    })))
}

/// Takes the steps back in order into units, handed to the committers.
fn merge<'s>(
    parsed_rx: &Receiver<(usize, Step<'s>)>,
    unit: &mut Unit,
    unit_bytes: u64,
    (commit_tx, archive_tx): (&SyncSender<ToCommit<'s>>, &SyncSender<ArchiveUnit>),
    progress: &Progress,
) -> Result<(), FileError> {
    // A committer that stopped has its error; this only says so.
    let gone = |file| FileError {
        file,
        error: ImportError::Pipeline("a committing thread stopped".into()),
    };
    let send = |unit: &mut Unit, file: usize| -> Result<(), FileError> {
        let Some((sealed, archive_unit)) = unit.seal() else {
            return Ok(());
        };
        archive_tx.send(archive_unit).map_err(|_| gone(file))?;
        commit_tx
            .send(ToCommit::Unit(sealed))
            .map_err(|_| gone(file))
    };
    let mut waiting: BTreeMap<usize, Step> = BTreeMap::new();
    let mut next = 0;
    // The file being read.
    let mut current = 0;
    for (index, step) in parsed_rx.iter() {
        waiting.insert(index, step);
        while let Some(step) = waiting.remove(&next) {
            next += 1;
            match step {
                Step::Begin(begin) => {
                    let (part, commit) = *begin;
                    current = part.file;
                    unit.begin(part);
                    commit_tx
                        .send(ToCommit::Begin(current, Box::new(commit)))
                        .map_err(|_| gone(current))?;
                }
                Step::Parsed { file, parsed } => {
                    let parsed = match *parsed {
                        Ok(parsed) => parsed,
                        Err(detail) => {
                            let lines = unit.lines();
                            // What came before is committed, as at a stop.
                            send(unit, file)?;
                            return Err(FileError {
                                file,
                                error: ImportError::Pipeline(format!(
                                    "after line {lines}: {detail}"
                                )),
                            });
                        }
                    };
                    progress
                        .accepted
                        .fetch_add(parsed.accepted, Ordering::Relaxed);
                    unit.add(parsed)
                        .map_err(|error| FileError { file, error })?;
                    if unit.ends_here(unit_bytes) {
                        send(unit, file)?;
                        if progress.stop.load(Ordering::Acquire) {
                            return Err(FileError {
                                file,
                                error: ImportError::Interrupted,
                            });
                        }
                    }
                }
                Step::End { file, whole } => unit.end_file(file, whole),
                Step::Skipped(file, outcome) => commit_tx
                    .send(ToCommit::Skipped(file, outcome))
                    .map_err(|_| gone(file))?,
                Step::Flush => send(unit, current)?,
                Step::Fail(file, error) => {
                    send(unit, file)?;
                    return Err(FileError { file, error });
                }
                Step::Chunk { file, .. } => {
                    return Err(FileError {
                        file,
                        error: ImportError::Pipeline("a chunk left unparsed".into()),
                    });
                }
            }
        }
    }
    if !waiting.is_empty() {
        return Err(FileError {
            file: current,
            error: ImportError::Pipeline("a parser thread stopped".into()),
        });
    }
    send(unit, current)
}

/// The outcomes known, waiting for those of the files before them; the next file to give;
/// and whom to give them to. Given by whichever of the store and the archive thread has a
/// file's last unit second.
struct Outcomes<'f> {
    ready: BTreeMap<usize, FileOutcome>,
    next: usize,
    on_file: &'f mut (dyn FnMut(usize, FileOutcome) + Send),
}

/// Gives the outcomes known in order, as long as both sides have the file's last unit.
fn give(outcomes: &Mutex<Outcomes<'_>>, finished: &Finished) {
    let mut outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    let Outcomes {
        ready,
        next,
        on_file,
    } = &mut *outcomes;
    while ready.contains_key(next) && finished.done(&[*next]) {
        if let Some(outcome) = ready.remove(next) {
            on_file(*next, outcome);
        }
        *next += 1;
    }
}

/// The store thread: each unit committed in order, each file's outcome given in the files'
/// order once the store and the archive have its last unit.
fn commit_all<'s>(
    committer: &mut Committer<'_, 's>,
    commit_rx: Receiver<ToCommit<'s>>,
    (finished, outcomes): (&Finished, &Mutex<Outcomes<'_>>),
) -> Result<(), FileError> {
    let known = |file, outcome| {
        let mut outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        outcomes.ready.insert(file, outcome);
    };
    for message in commit_rx {
        match message {
            ToCommit::Begin(file, commit) => committer.begin(file, *commit),
            ToCommit::Unit(sealed) => {
                for (file, outcome) in committer.commit(sealed)? {
                    known(file, outcome);
                    finished.mark(file, STORE);
                }
            }
            ToCommit::Skipped(file, outcome) => {
                known(file, outcome);
                finished.mark(file, STORE | ARCHIVE);
            }
        }
        give(outcomes, finished);
    }
    Ok(())
}

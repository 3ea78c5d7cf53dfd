//! The units of an import: built by the merging thread ([`Unit`]), sealed into a
//! [`Sealed`] unit, and written to the store by the [`Committer`] (the archive thread takes
//! its [`ArchiveUnit`] part).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mm_archive::{EventColumns, Rows};
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};
use mm_model::time::MICROS_PER_MINUTE;
use mm_storage::rollups::{ImportMemo, RollupStore};
use rustc_hash::FxHashMap;

use crate::{FileError, FileOutcome, FileProgress, ImportError, Parsed, Source};

/// A finished unit, for the archive thread: its events (per chunk), the position it brings
/// each of its files to in the archive (those the archive lacked some of: per file, its index
/// in the command, its identity and that position), and the files it holds the last of.
pub(crate) struct ArchiveUnit {
    pub(crate) positions: Vec<(usize, String, u64)>,
    pub(crate) events: Vec<EventColumns>,
    pub(crate) ended: Vec<usize>,
}

/// A file's share of a finished unit, for the committer.
pub(crate) struct SealedPart {
    /// The file's index in the command.
    pub(crate) file: usize,
    pub(crate) end: u64,
    /// Bytes of an unfinished last line after `end`, left for a later import.
    pub(crate) unfinished: u64,
    /// CRC-32 of the file's bytes before `end`.
    pub(crate) prefix_crc: u32,
    pub(crate) lines: u64,
    pub(crate) report: Vec<u8>,
    pub(crate) records: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected_by_code: BTreeMap<String, u64>,
    /// The file was read to its end: it is imported whole.
    pub(crate) last: bool,
    /// No more of the file comes in this run (read whole, or its reading failed).
    pub(crate) ended: bool,
}

/// A finished unit, for the committer: the windows of the calls of all its files.
pub(crate) struct Sealed {
    pub(crate) parts: Vec<SealedPart>,
    pub(crate) windows: Vec<(WindowKey, Rollup)>,
}

/// What the committer keeps of a file while its units are written.
pub(crate) struct CommitFile<'s> {
    pub(crate) source: std::borrow::Cow<'s, Source>,
    /// The identity the store has the file under.
    pub(crate) id: String,
    pub(crate) report_file: std::fs::File,
    pub(crate) report_path: PathBuf,
    /// What the store has.
    pub(crate) progress: FileProgress,
    /// Events the store had of the file when this run began.
    pub(crate) accepted_before: u64,
    /// Whether the file was imported whole when this run began, and to where.
    pub(crate) was_done: (bool, u64),
    /// When this run began with the file.
    pub(crate) started: Instant,
}

/// Writes units to the store in order: each file's report, then the windows with the
/// progress of every file of the unit, in one batch.
pub(crate) struct Committer<'a, 's> {
    pub(crate) store: &'a RollupStore,
    /// Which keys the store is known not to hold, and the hours held back (shared by the
    /// files of one command).
    pub(crate) memo: &'a mut ImportMemo,
    /// Set when a unit's store write failed: the memo then holds calls the store lacks.
    pub(crate) failed: &'a mut bool,
    pub(crate) open_from_minute: i64,
    /// The files being imported, by index in the command.
    pub(crate) files: BTreeMap<usize, CommitFile<'s>>,
    /// Seconds in the store.
    pub(crate) timings: [Duration; 1],
}

impl<'s> Committer<'_, 's> {
    pub(crate) fn begin(&mut self, file: usize, commit: CommitFile<'s>) {
        self.files.insert(file, commit);
    }

    /// Commits `sealed`; returns the outcomes of the files it imported the last of.
    pub(crate) fn commit(
        &mut self,
        sealed: Sealed,
    ) -> Result<Vec<(usize, FileOutcome)>, FileError> {
        let started = Instant::now();
        let last_file = sealed.parts.last().map_or(0, |part| part.file);
        let mut records = Vec::with_capacity(sealed.parts.len());
        for part in &sealed.parts {
            let fail = |error| FileError {
                file: part.file,
                error,
            };
            let Some(file) = self.files.get_mut(&part.file) else {
                return Err(fail(ImportError::Pipeline(
                    "a unit of a file that never began".into(),
                )));
            };
            if let Some(next) = file.next_progress(part) {
                file.report_file
                    .write_all(&part.report)
                    .and_then(|()| file.report_file.sync_data())
                    .map_err(|error| fail(ImportError::io("writing", &file.report_path, error)))?;
                let record = serde_json::to_vec(&next).map_err(|error| {
                    fail(ImportError::Input {
                        path: file.source.path.clone(),
                        detail: error.to_string(),
                    })
                })?;
                records.push((part.file, next, record));
            }
        }
        if !records.is_empty() || !sealed.windows.is_empty() {
            let keyed: Vec<(&str, &[u8])> = records
                .iter()
                .map(|(file, _, record)| (self.files[file].id.as_str(), record.as_slice()))
                .collect();
            // Failed until it returns: a write that panics leaves it so too.
            let failed_before = std::mem::replace(self.failed, true);
            let written = self.store.import(
                &sealed.windows,
                self.open_from_minute,
                &keyed,
                &mut *self.memo,
            );
            *self.failed = failed_before || written.is_err();
            written.map_err(|error| FileError {
                file: last_file,
                error: ImportError::Write(error),
            })?;
        }
        for (file, next, _) in records {
            if let Some(file) = self.files.get_mut(&file) {
                file.progress = next;
            }
        }
        let mut outcomes = Vec::new();
        for part in sealed.parts.iter().filter(|part| part.ended) {
            if let Some(file) = self.files.remove(&part.file)
                && part.last
            {
                outcomes.push((part.file, file.outcome()));
            }
        }
        self.timings[0] += started.elapsed();
        Ok(outcomes)
    }
}

impl CommitFile<'_> {
    /// The progress record after `part`, or `None` when the store has it already.
    fn next_progress(&self, part: &SealedPart) -> Option<FileProgress> {
        // The size and time of the file imported under its own name (a copy's would make the
        // file itself look changed).
        // (A file named as imported, or by another name of the same path.)
        let same_file = match &self.progress.canonical {
            Some(canonical) => *canonical == self.source.canonical,
            None => self.progress.path == self.source.path.display().to_string(),
        };
        let seen_as = match same_file {
            true => (Some(self.source.size), Some(self.source.modified_ns)),
            false => (self.progress.size_on_disk, self.progress.modified_ns),
        };
        let changed = seen_as != (self.progress.size_on_disk, self.progress.modified_ns);
        if part.end <= self.progress.position && !(part.last && (!self.progress.done || changed)) {
            return None;
        }
        let mut next = self.progress.clone();
        next.position = part.end;
        next.lines = part.lines;
        next.records += part.records;
        next.accepted += part.accepted;
        next.rejected += part.rejected_by_code.values().sum::<u64>();
        for (code, count) in &part.rejected_by_code {
            *next.rejected_by_code.entry(code.clone()).or_default() += count;
        }
        next.report_bytes += part.report.len() as u64;
        next.done = part.last;
        next.prefix_crc = Some(part.prefix_crc);
        next.unfinished = part.unfinished;
        (next.size_on_disk, next.modified_ns) = seen_as;
        if same_file {
            next.canonical = Some(self.source.canonical.clone());
        }
        Some(next)
    }

    fn outcome(self) -> FileOutcome {
        FileOutcome {
            imported_now: self.progress.accepted.saturating_sub(self.accepted_before),
            // Imported whole before, and nothing was added to it since.
            already_done: self.was_done == (true, self.progress.position),
            report: self.report_path,
            progress: self.progress,
            elapsed: self.started.elapsed(),
        }
    }
}

/// The ids `used` lists ranked by their names in byte order: per id its rank (0 for ids not
/// listed), and per rank its id.
fn ranks(names: &[Box<str>], used: impl Iterator<Item = u32>) -> (Vec<u32>, Vec<u32>) {
    let mut seen = vec![false; names.len()];
    let mut order: Vec<u32> = used
        .filter(|id| !std::mem::replace(&mut seen[*id as usize], true))
        .collect();
    order.sort_unstable_by(|left, right| names[*left as usize].cmp(&names[*right as usize]));
    let mut rank = vec![0; names.len()];
    for (position, id) in order.iter().enumerate() {
        rank[*id as usize] = position as u32;
    }
    (rank, order)
}

/// A file's share of the unit being built: where the file stands.
pub(crate) struct Part {
    /// The file's index in the command.
    pub(crate) file: usize,
    /// The identity the file is imported under.
    pub(crate) id: String,
    /// Where the store and the archive had the file when this run started: what lies before
    /// is not counted, or not archived, again.
    pub(crate) stored: u64,
    pub(crate) stored_lines: u64,
    pub(crate) archived: u64,
    pub(crate) end: u64,
    /// Where the unit before ended in the file (where this run began, before the first).
    pub(crate) sealed_at: u64,
    /// CRC-32 of the file's bytes before `end`.
    pub(crate) crc: crc32fast::Hasher,
    /// Lines before `end` (known from the store's position on).
    pub(crate) lines: u64,
    /// Bytes of the file's unfinished last line, left for a later import.
    pub(crate) unfinished: u64,
    pub(crate) report: Vec<u8>,
    pub(crate) records: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected_by_code: BTreeMap<String, u64>,
    /// No more of the file comes: `Some(true)` when it was read to its end.
    pub(crate) ended: Option<bool>,
}

impl Part {
    /// The file `file`, imported under `id`, read from `start` (whose bytes before have the
    /// CRC `before`), the store and the archive having it as `stored` and to `archived`.
    pub(crate) fn new(
        (file, id): (usize, String),
        stored: &FileProgress,
        (start, archived): (u64, u64),
        before: crc32fast::Hasher,
    ) -> Self {
        Self {
            file,
            id,
            stored: stored.position,
            stored_lines: stored.lines,
            archived,
            end: start,
            sealed_at: start,
            crc: before,
            lines: stored.lines,
            unfinished: 0,
            report: Vec::new(),
            records: 0,
            accepted: 0,
            rejected_by_code: BTreeMap::new(),
            ended: None,
        }
    }
}

/// The unit being built by the merging thread: the calls of one file or of several after
/// one another (a command's small files make units as large as one large file's).
#[derive(Default)]
pub(crate) struct Unit {
    /// The files of the unit, in order: all but the last have ended.
    pub(crate) parts: Vec<Part>,
    /// Input bytes of the unit, over its files.
    pub(crate) size: u64,
    pub(crate) merchants: Interner,
    pub(crate) apis: Interner,
    pub(crate) windows: FxHashMap<(u32, u32, i64), Rollup>,
    pub(crate) events: Vec<EventColumns>,
    /// The latest minute of the unit's events.
    pub(crate) latest_minute: Option<i64>,
    /// Once the unit holds its size: its latest minute then.
    pub(crate) full_at: Option<Option<i64>>,
    /// Seconds adding calls to windows.
    pub(crate) timings: [Duration; 1],
}

#[derive(Default)]
pub(crate) struct Interner {
    pub(crate) ids: FxHashMap<Box<str>, u32>,
    pub(crate) names: Vec<Box<str>>,
}

impl Interner {
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }
}

impl Unit {
    /// A file begins: its chunks come next.
    pub(crate) fn begin(&mut self, part: Part) {
        self.parts.push(part);
    }

    /// No more of `file` comes; `whole` when it was read to its end.
    pub(crate) fn end_file(&mut self, file: usize, whole: bool) {
        if let Some(part) = self.parts.iter_mut().find(|part| part.file == file) {
            part.ended = Some(whole);
        }
    }

    /// Lines of the file being read before the unit's end.
    pub(crate) fn lines(&self) -> u64 {
        self.parts.last().map_or(0, |part| part.lines)
    }

    /// Whether the unit ends with the chunk added last. It ends once it holds `unit_bytes`,
    /// but not in the middle of a minute when it can help it: it takes chunks on until one
    /// reaches a later minute than the unit had when it filled (half a unit more at most).
    /// A minute cut anywhere between two units has about half its windows written twice,
    /// the second time read back and merged; ended this way, a time-ordered file's units
    /// share only the windows of the calls in that last chunk's later minute (a chunk is a
    /// few seconds of a minute) and of calls logged out of order.
    pub(crate) fn ends_here(&mut self, unit_bytes: u64) -> bool {
        let size = self.size;
        if size < unit_bytes {
            return false;
        }
        if size >= unit_bytes.saturating_add(unit_bytes / 2) {
            return true;
        }
        match self.full_at {
            None => {
                self.full_at = Some(self.latest_minute);
                self.latest_minute.is_none()
            }
            Some(full) => self.latest_minute > full,
        }
    }

    pub(crate) fn add(&mut self, parsed: Parsed) -> Result<(), ImportError> {
        let started = Instant::now();
        let result = self.add_chunk(parsed);
        self.timings[0] += started.elapsed();
        result
    }

    pub(crate) fn add_chunk(&mut self, parsed: Parsed) -> Result<(), ImportError> {
        let Some(part) = self.parts.last_mut().filter(|part| part.ended.is_none()) else {
            return Err(ImportError::Pipeline(
                "a chunk outside the file being read".into(),
            ));
        };
        let chunk_start = part.end;
        if chunk_start == part.stored {
            // Line numbers are the store's from its position on (reports start there).
            part.lines = part.stored_lines;
        }
        part.end += parsed.bytes;
        self.size += parsed.bytes;
        part.unfinished = parsed.unfinished;
        part.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            parsed.crc,
            parsed.bytes,
        ));
        let chunk_latest = (0..parsed.events.rows())
            .map(|row| parsed.events.ts_us(row))
            .max()
            .map(|ts_us| ts_us.div_euclid(MICROS_PER_MINUTE));
        self.latest_minute = self.latest_minute.max(chunk_latest);
        let base_line = part.lines;
        part.lines += parsed.newlines;
        // Only what the store lacks is counted; only what the archive lacks is archived.
        let for_store = chunk_start >= part.stored;
        let for_archive = chunk_start >= part.archived;
        if for_store {
            part.records += parsed.records;
            part.accepted += parsed.accepted;
            for (line, code, mut report) in parsed.rejected {
                *part.rejected_by_code.entry(code).or_default() += 1;
                report["line"] = serde_json::json!(base_line as usize + line);
                serde_json::to_writer(&mut part.report, &report)
                    .map_err(|error| ImportError::Pipeline(error.to_string()))?;
                part.report.push(b'\n');
            }
            let events = &parsed.events;
            // Each distinct merchant and API of the chunk is looked up once.
            let series = events.series();
            let merchants: Vec<u32> = series
                .merchants
                .iter()
                .map(|name| self.merchants.id(name))
                .collect();
            let apis: Vec<u32> = series.apis.iter().map(|name| self.apis.id(name)).collect();
            for row in 0..events.rows() {
                let key = (
                    merchants[series.merchant_of[row] as usize],
                    apis[series.api_of[row] as usize],
                    events.ts_us(row).div_euclid(MICROS_PER_MINUTE),
                );
                self.windows
                    .entry(key)
                    .or_default()
                    .record(events.status(row), events.latency_ms(row));
            }
        }
        if for_archive && parsed.events.rows() > 0 {
            self.events.push(parsed.events);
        }
        Ok(())
    }

    /// Hands the unit over (windows keyed by name, in key order: the store writes them so),
    /// with its share for the archive, and starts the next one; `None` when the unit has no
    /// file.
    pub(crate) fn seal(&mut self) -> Option<(Sealed, ArchiveUnit)> {
        if self.parts.is_empty() {
            return None;
        }
        let mut merchant_wide: FxHashMap<(u32, i64), Rollup> = FxHashMap::default();
        for ((merchant, _, minute), rollup) in &self.windows {
            merchant_wide
                .entry((*merchant, *minute))
                .or_default()
                .merge(rollup);
        }
        // Sorted by the ranks of the names (the merchant-wide series, the empty API, first):
        // the order of the names, compared once each.
        let (merchant_rank, merchant_of) =
            ranks(&self.merchants.names, merchant_wide.keys().map(|key| key.0));
        let (api_rank, api_of) = ranks(&self.apis.names, self.windows.keys().map(|key| key.1));
        let mut ranked: Vec<((u32, u32, i64), Rollup)> =
            Vec::with_capacity(self.windows.len() + merchant_wide.len());
        ranked.extend(
            self.windows
                .drain()
                .map(|((merchant, api, minute), rollup)| {
                    let rank = (
                        merchant_rank[merchant as usize],
                        api_rank[api as usize] + 1,
                        minute,
                    );
                    (rank, rollup)
                }),
        );
        ranked.extend(
            merchant_wide
                .into_iter()
                .map(|((merchant, minute), rollup)| {
                    ((merchant_rank[merchant as usize], 0, minute), rollup)
                }),
        );
        ranked.sort_unstable_by_key(|(rank, _)| *rank);
        let windows: Vec<(WindowKey, Rollup)> = ranked
            .into_iter()
            .map(|((merchant, api, minute), rollup)| {
                let name = |names: &[Box<str>], of: &[u32], rank: u32| {
                    String::from(&*names[of[rank as usize] as usize])
                };
                let key = WindowKey {
                    merchant: name(&self.merchants.names, &merchant_of, merchant),
                    api: match api {
                        0 => MERCHANT_TOTAL_API.to_owned(),
                        api => name(&self.apis.names, &api_of, api - 1),
                    },
                    minute,
                };
                (key, rollup)
            })
            .collect();
        // Each file's share; those that go on stay in the next unit, from where it ends.
        let mut archive_positions = Vec::new();
        let mut parts = Vec::with_capacity(self.parts.len());
        for part in &mut self.parts {
            // Only a file this unit moves forward in the archive (not one it holds no new
            // chunk of, nor one the archive had this far already).
            if part.end > part.archived.max(part.sealed_at) {
                archive_positions.push((part.file, part.id.clone(), part.end));
            }
            part.sealed_at = part.end;
            parts.push(SealedPart {
                file: part.file,
                end: part.end,
                unfinished: part.unfinished,
                prefix_crc: part.crc.clone().finalize(),
                lines: part.lines,
                report: std::mem::take(&mut part.report),
                records: std::mem::take(&mut part.records),
                accepted: std::mem::take(&mut part.accepted),
                rejected_by_code: std::mem::take(&mut part.rejected_by_code),
                last: part.ended == Some(true),
                ended: part.ended.is_some(),
            });
        }
        self.parts.retain(|part| part.ended.is_none());
        let archive = ArchiveUnit {
            positions: archive_positions,
            events: std::mem::take(&mut self.events),
            ended: parts
                .iter()
                .filter(|part| part.ended)
                .map(|part| part.file)
                .collect(),
        };
        self.size = 0;
        (self.latest_minute, self.full_at) = (None, None);
        Some((Sealed { parts, windows }, archive))
    }
}

#[cfg(test)]
mod tests {
    use mm_testkit::calls;

    use super::*;

    /// A parsed chunk of `bytes` input bytes with a call in each of `minutes`.
    fn chunk(bytes: u64, minutes: &[i64]) -> Parsed {
        let mut events = EventColumns::with_capacity(minutes.len());
        for (mut call, minute) in calls(1, minutes.len(), 1, &["/a"], 0, 1)
            .into_iter()
            .zip(minutes)
        {
            call.ts_us = minute * MICROS_PER_MINUTE + 1;
            events.push(&call.as_ref());
        }
        Parsed {
            bytes,
            unfinished: 0,
            crc: 0,
            newlines: minutes.len() as u64,
            accepted: minutes.len() as u64,
            records: minutes.len() as u64,
            events,
            rejected: Vec::new(),
        }
    }

    /// Adds the chunks one by one; returns after which ones (1-based) the unit ended.
    fn ends(unit_bytes: u64, chunks: Vec<Parsed>) -> Vec<usize> {
        let mut unit = Unit::default();
        let part = Part::new(
            (0, "f".into()),
            &FileProgress::default(),
            (0, 0),
            crc32fast::Hasher::new(),
        );
        unit.begin(part);
        let mut ends = Vec::new();
        for (index, parsed) in chunks.into_iter().enumerate() {
            unit.add(parsed).expect("adds");
            if unit.ends_here(unit_bytes) {
                unit.seal();
                ends.push(index + 1);
            }
        }
        ends
    }

    #[test]
    fn a_full_unit_ends_at_the_first_chunk_reaching_a_later_minute_or_at_half_a_unit_more() {
        // Full at the second chunk (minute 6): the third stays in minute 6, the fourth
        // reaches minute 7. The next unit fills in minute 7 and never leaves it: it ends at
        // 150 bytes.
        let chunks = vec![
            chunk(60, &[5, 6]),
            chunk(40, &[6]),
            chunk(10, &[6, 5]),
            chunk(10, &[6, 7]),
            chunk(60, &[7]),
            chunk(60, &[7]),
            chunk(30, &[7]),
            chunk(10, &[7, 8]),
        ];
        assert_eq!(ends(100, chunks), vec![4, 7]);
        // Out of order: a later minute than the unit had when full, not than the chunk
        // before.
        let chunks = vec![
            chunk(100, &[9, 3]),
            chunk(10, &[4]),
            chunk(10, &[9]),
            chunk(10, &[10]),
        ];
        assert_eq!(ends(100, chunks), vec![4]);
        // A unit of rejected lines only has no minute to wait for.
        assert_eq!(ends(100, vec![chunk(50, &[]), chunk(50, &[])]), vec![2]);
    }
}

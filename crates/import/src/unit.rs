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

use crate::{FileProgress, ImportError, Parsed, Source};

/// A finished unit's end position and events (per chunk), for the archive thread.
pub(crate) type ArchiveUnit = (u64, Vec<EventColumns>);

/// A finished unit, for the committer.
pub(crate) struct Sealed {
    pub(crate) end: u64,
    /// Bytes of an unfinished last line after `end`, left for a later import.
    pub(crate) unfinished: u64,
    /// CRC-32 of the file's bytes before `end`.
    pub(crate) prefix_crc: u32,
    pub(crate) lines: u64,
    pub(crate) windows: Vec<(WindowKey, Rollup)>,
    pub(crate) events: Vec<EventColumns>,
    pub(crate) report: Vec<u8>,
    pub(crate) records: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected_by_code: BTreeMap<String, u64>,
    pub(crate) last: bool,
}

/// Writes units to the store in order: the report, then the windows with the file's progress.
pub(crate) struct Committer<'a> {
    pub(crate) source: &'a Source,
    /// The identity the store has the file under.
    pub(crate) id: &'a str,
    pub(crate) store: &'a RollupStore,
    /// Which keys the store is known not to hold, and the hours held back (shared by the
    /// files of one command).
    pub(crate) memo: &'a mut ImportMemo,
    /// Set when a unit's store write failed: the memo then holds calls the store lacks.
    pub(crate) failed: &'a mut bool,
    pub(crate) report_file: std::fs::File,
    pub(crate) report_path: PathBuf,
    pub(crate) open_from_minute: i64,
    /// What the store has.
    pub(crate) progress: FileProgress,
    /// Seconds in the store.
    pub(crate) timings: [Duration; 1],
}

impl Committer<'_> {
    pub(crate) fn commit(&mut self, sealed: Sealed) -> Result<(), ImportError> {
        let started = Instant::now();
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
        if sealed.end > self.progress.position || (sealed.last && (!self.progress.done || changed))
        {
            self.report_file
                .write_all(&sealed.report)
                .and_then(|()| self.report_file.sync_data())
                .map_err(|error| ImportError::io("writing", &self.report_path, error))?;
            let mut next = self.progress.clone();
            next.position = sealed.end;
            next.lines = sealed.lines;
            next.records += sealed.records;
            next.accepted += sealed.accepted;
            next.rejected += sealed.rejected_by_code.values().sum::<u64>();
            for (code, count) in sealed.rejected_by_code {
                *next.rejected_by_code.entry(code).or_default() += count;
            }
            next.report_bytes += sealed.report.len() as u64;
            next.done = sealed.last;
            next.prefix_crc = Some(sealed.prefix_crc);
            next.unfinished = sealed.unfinished;
            (next.size_on_disk, next.modified_ns) = seen_as;
            if same_file {
                next.canonical = Some(self.source.canonical.clone());
            }
            let record = serde_json::to_vec(&next).map_err(|error| ImportError::Input {
                path: self.source.path.clone(),
                detail: error.to_string(),
            })?;
            // Failed until it returns: a write that panics leaves it so too.
            let failed_before = std::mem::replace(self.failed, true);
            let written = self.store.import(
                &sealed.windows,
                self.open_from_minute,
                (self.id, &record),
                &mut *self.memo,
            );
            *self.failed = failed_before || written.is_err();
            written.map_err(ImportError::Write)?;
            self.progress = next;
        }
        self.timings[0] += started.elapsed();
        Ok(())
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

/// The unit being built by the merging thread.
pub(crate) struct Unit {
    /// Where the store and the archive had the file when this run started: what lies before
    /// is not counted, or not archived, again.
    pub(crate) stored: u64,
    pub(crate) stored_lines: u64,
    pub(crate) archived: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// CRC-32 of the file's bytes before `end`.
    pub(crate) crc: crc32fast::Hasher,
    /// Lines before `end` (known from the store's position on).
    pub(crate) lines: u64,
    /// Bytes of the file's unfinished last line, left for a later import.
    pub(crate) unfinished: u64,
    pub(crate) merchants: Interner,
    pub(crate) apis: Interner,
    pub(crate) windows: FxHashMap<(u32, u32, i64), Rollup>,
    pub(crate) events: Vec<EventColumns>,
    pub(crate) report: Vec<u8>,
    pub(crate) records: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected_by_code: BTreeMap<String, u64>,
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
    /// A unit from `start`, the file's bytes before it having the CRC `before`.
    pub(crate) fn new(
        stored: &FileProgress,
        start: u64,
        archived: u64,
        before: crc32fast::Hasher,
    ) -> Self {
        Self {
            stored: stored.position,
            stored_lines: stored.lines,
            archived,
            start,
            end: start,
            crc: before,
            unfinished: 0,
            lines: stored.lines,
            merchants: Interner::default(),
            apis: Interner::default(),
            windows: FxHashMap::default(),
            events: Vec::new(),
            report: Vec::new(),
            records: 0,
            accepted: 0,
            rejected_by_code: BTreeMap::new(),
            latest_minute: None,
            full_at: None,
            timings: [Duration::ZERO; 1],
        }
    }

    /// Whether the unit ends with the chunk added last. It ends once it holds `unit_bytes`,
    /// but not in the middle of a minute when it can help it: it takes chunks on until one
    /// reaches a later minute than the unit had when it filled (half a unit more at most).
    /// A minute cut anywhere between two units has about half its windows written twice,
    /// the second time read back and merged; ended this way, a time-ordered file's units
    /// share only the windows of the calls in that last chunk's later minute (a chunk is a
    /// few seconds of a minute) and of calls logged out of order.
    pub(crate) fn ends_here(&mut self, unit_bytes: u64) -> bool {
        let size = self.end - self.start;
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
        let chunk_start = self.end;
        if chunk_start == self.stored {
            // Line numbers are the store's from its position on (reports start there).
            self.lines = self.stored_lines;
        }
        self.end += parsed.bytes;
        self.unfinished = parsed.unfinished;
        self.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            parsed.crc,
            parsed.bytes,
        ));
        let chunk_latest = (0..parsed.events.rows())
            .map(|row| parsed.events.ts_us(row))
            .max()
            .map(|ts_us| ts_us.div_euclid(MICROS_PER_MINUTE));
        self.latest_minute = self.latest_minute.max(chunk_latest);
        let base_line = self.lines;
        self.lines += parsed.newlines;
        // Only what the store lacks is counted; only what the archive lacks is archived.
        let for_store = chunk_start >= self.stored;
        let for_archive = chunk_start >= self.archived;
        if for_store {
            self.records += parsed.records;
            self.accepted += parsed.accepted;
            for (line, code, mut report) in parsed.rejected {
                *self.rejected_by_code.entry(code).or_default() += 1;
                report["line"] = serde_json::json!(base_line as usize + line);
                serde_json::to_writer(&mut self.report, &report)
                    .map_err(|error| ImportError::Pipeline(error.to_string()))?;
                self.report.push(b'\n');
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

    /// Hands the unit over (windows keyed by name, in key order: the store writes them so)
    /// and starts the next one.
    pub(crate) fn seal(&mut self, last: bool) -> Sealed {
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
        let sealed = Sealed {
            end: self.end,
            unfinished: self.unfinished,
            prefix_crc: self.crc.clone().finalize(),
            lines: self.lines,
            windows,
            events: std::mem::take(&mut self.events),
            report: std::mem::take(&mut self.report),
            records: std::mem::take(&mut self.records),
            accepted: std::mem::take(&mut self.accepted),
            rejected_by_code: std::mem::take(&mut self.rejected_by_code),
            last,
        };
        self.start = self.end;
        (self.latest_minute, self.full_at) = (None, None);
        sealed
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
        let mut unit = Unit::new(&FileProgress::default(), 0, 0, crc32fast::Hasher::new());
        let mut ends = Vec::new();
        for (index, parsed) in chunks.into_iter().enumerate() {
            unit.add(parsed).expect("adds");
            if unit.ends_here(unit_bytes) {
                unit.seal(false);
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

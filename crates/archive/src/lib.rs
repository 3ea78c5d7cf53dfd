//! The raw event archive: every accepted event, findable by correlation id or by merchant and
//! time, readable by any Parquet reader.
//!
//! # Layout
//!
//! ```text
//! archive/
//!   MANIFEST.json                  the segments that exist, and the WAL position they cover
//!   2026-11-21T15/                 one directory per UTC hour
//!     seg-00000000000000000042.parquet
//! ```
//!
//! A segment holds events of one hour sorted by (merchant, ts); columns `ts` (timestamp µs,
//! UTC), `merchant`, `api`, `status`, `latency_ms`, `corr_id`, `partner`, `method`, `path`,
//! `host`, `region`, `attributes` (the unmapped fields as a JSON object). zstd compression,
//! dictionary encoding for the low-cardinality columns, row groups of 16,384 rows with a bloom
//! filter on `corr_id` each, pages of at most 4,096 rows with a page index (per-page min/max).
//! DuckDB, Spark and BigQuery read the directory as Parquet
//! (`read_parquet('archive/*/*.parquet')`).
//!
//! A lookup prunes hours by time, segments by their merchant and time range, row groups by
//! statistics and the bloom filter, and, given a merchant, pages by the merchant column's page
//! index; it then decodes the correlation id of the pages left, and the other columns only
//! where it matched. Footers, page indexes and bloom filters are kept in memory (loaded when a
//! segment is opened or written; bloom filters up to 256 MB, the oldest segments' dropped
//! first), so a warm lookup reads only the pages it decodes.
//!
//! Events not yet in a segment are held in memory (the hot tail) and searched there, so an
//! event is findable as soon as its ingest is acknowledged. The hot tail is bounded: past
//! [`ArchiveConfig::max_backlog_events`] the archive reports itself backlogged and ingest
//! refuses new batches until a flush has written it.
//!
//! # Guarantees
//!
//! - The manifest is the truth: a segment exists for readers only once the manifest that
//!   lists it has been written (temporary file, fsync, rename, directory fsync). Files not in
//!   the manifest are leftovers of an interrupted flush and are deleted on open.
//! - The manifest records the last WAL position (LSN) whose events are all in segments. After
//!   a crash the hot tail is rebuilt by replaying the WAL after that position, so no
//!   acknowledged event is lost and none is archived twice. The WAL keeps every frame the
//!   archive has not covered yet.
//! - A flush writes new segments first and switches the manifest after; readers see either
//!   the hot tail or the segments holding the same events, never both.

mod maintenance;
mod segment;

pub use segment::{
    EventColumns, HOUR_METADATA_KEY, MetadataCache, Optional, RowQuery, Rows, SegmentInfo, Series,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mm_model::ApiCall;
use mm_storage::wal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MANIFEST: &str = "MANIFEST.json";
/// How long a segment replaced by compaction stays on disk for lookups still reading it.
const RETIRED_GRACE: Duration = Duration::from_secs(30);

/// Errors of the archive.
#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(String),
    #[error("corrupt archive file {}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("undecodable wal batch {lsn}: {detail}")]
    Decode { lsn: u64, detail: String },
}

impl ArchiveError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ArchiveError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Flush policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// Flush once the hot tail holds this many events.
    pub flush_max_events: usize,
    /// Flush events older than this in the hot tail.
    pub flush_max_age: Duration,
    /// Events in memory (hot tail plus a flush in progress) beyond which the archive reports
    /// itself [`Archive::backlogged`], so that ingest refuses new batches until it catches up.
    pub max_backlog_events: usize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            flush_max_events: 500_000,
            flush_max_age: Duration::from_secs(60),
            max_backlog_events: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    /// Every WAL frame up to this LSN is in the segments below.
    archived_lsn: u64,
    segments: Vec<SegmentInfo>,
    /// Imported sources (not in the WAL): how far each one's events are in segments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    imports: BTreeMap<String, u64>,
}

/// Durable WAL batches not yet in a segment, kept as they were logged: appending is cheap
/// enough to happen before the ingest request is acknowledged.
#[derive(Debug, Default)]
struct HotTail {
    batches: Vec<Arc<Vec<u8>>>,
    events: usize,
    last_lsn: u64,
    oldest: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    manifest: Manifest,
    /// Events not yet in a segment.
    hot: HotTail,
    /// Batches being written to segments, still served from memory until the manifest lists
    /// the segments. Moving batches hot → taken → segments happens under one lock each time,
    /// so a reader finds every event exactly once.
    taken: Option<Arc<HotTail>>,
    /// Segments found corrupt and moved aside.
    quarantined: usize,
    /// Files replaced by compaction, deleted after [`RETIRED_GRACE`].
    retired: Vec<(Instant, PathBuf)>,
}

/// The archive.
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    config: ArchiveConfig,
    state: RwLock<State>,
    /// Serializes flushes.
    flush_lock: std::sync::Mutex<()>,
    /// Parsed footers of segments.
    metadata: MetadataCache,
}

fn hour_of(ts_us: i64) -> i64 {
    ts_us.div_euclid(MICROS_PER_HOUR)
}

/// `2026-11-21T15`: the directory of an hour.
fn hour_directory(hour: i64) -> String {
    let text = mm_model::time::format_rfc3339(hour * MICROS_PER_HOUR);
    text[..13].to_owned()
}

fn sync_directory(path: &Path) {
    if let Ok(directory) = std::fs::File::open(path) {
        let _ = directory.sync_all();
    }
}

fn poisoned() -> ArchiveError {
    ArchiveError::Parquet("archive lock poisoned by a panic".into())
}

impl Archive {
    /// Opens the archive in `dir`, removing leftovers of an interrupted flush.
    pub fn open(dir: &Path, config: ArchiveConfig) -> Result<Self, ArchiveError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| ArchiveError::io("create archive directory", dir, source))?;
        let manifest_path = dir.join(MANIFEST);
        let manifest: Manifest = match std::fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| ArchiveError::Corrupt {
                path: manifest_path.clone(),
                detail: error.to_string(),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(source) => return Err(ArchiveError::io("read manifest", &manifest_path, source)),
        };
        let archive = Self {
            dir: dir.to_owned(),
            config,
            state: RwLock::new(State {
                manifest,
                hot: HotTail::default(),
                taken: None,
                quarantined: 0,
                retired: Vec::new(),
            }),
            flush_lock: std::sync::Mutex::new(()),
            metadata: MetadataCache::default(),
        };
        archive.remove_orphans()?;
        archive.verify_segments()?;
        Ok(archive)
    }

    fn segment_path(&self, segment: &SegmentInfo) -> PathBuf {
        self.dir
            .join(hour_directory(segment.hour))
            .join(&segment.file)
    }

    /// Every WAL frame up to this LSN is in segments.
    pub fn archived_lsn(&self) -> u64 {
        self.state
            .read()
            .map(|state| state.manifest.archived_lsn)
            .unwrap_or(0)
    }

    /// Adds WAL frame `lsn` (a batch payload, see `mm_storage::wal`) to the hot tail.
    pub fn append(&self, lsn: u64, payload: Arc<Vec<u8>>) -> Result<(), ArchiveError> {
        let events = wal::batch_len(&payload).map_err(|source| ArchiveError::Decode {
            lsn,
            detail: source.to_string(),
        })?;
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let hot = &mut state.hot;
        hot.batches.push(payload);
        hot.events += events;
        hot.last_lsn = hot.last_lsn.max(lsn);
        if hot.oldest.is_none() {
            hot.oldest = Some(Instant::now());
        }
        Ok(())
    }

    /// Whether the hot tail is due for a flush.
    pub fn flush_due(&self) -> bool {
        self.state.read().is_ok_and(|state| {
            state.hot.events
                >= self
                    .config
                    .flush_max_events
                    .min(self.config.max_backlog_events)
                || state
                    .hot
                    .oldest
                    .is_some_and(|oldest| oldest.elapsed() >= self.config.flush_max_age)
        })
    }

    /// Whether more events wait in memory (hot tail plus a flush in progress) than
    /// [`ArchiveConfig::max_backlog_events`]: writing segments has fallen behind ingest.
    pub fn backlogged(&self) -> bool {
        self.state.read().is_ok_and(|state| {
            let taken = state.taken.as_ref().map_or(0, |taken| taken.events);
            state.hot.events + taken >= self.config.max_backlog_events
        })
    }

    /// Events waiting in memory.
    pub fn hot_events(&self) -> usize {
        self.state.read().map(|state| state.hot.events).unwrap_or(0)
    }

    /// Writes the hot tail to segments and switches the manifest. Returns the events written.
    #[tracing::instrument(name = "archive.flush", skip_all, fields(otel.name = "archive flush", events = tracing::field::Empty))]
    pub fn flush(&self) -> Result<usize, ArchiveError> {
        let _serial = self.flush_lock.lock().map_err(|_| poisoned())?;
        let taken = {
            let mut state = self.state.write().map_err(|_| poisoned())?;
            if state.hot.events == 0 {
                return Ok(0);
            }
            tracing::Span::current().record("events", state.hot.events as i64);
            let taken = Arc::new(std::mem::take(&mut state.hot));
            state.taken = Some(taken.clone());
            taken
        };
        // The batches stay readable as `taken` while they are decoded, sorted and written.
        let mut events = Vec::with_capacity(taken.events);
        for payload in &taken.batches {
            wal::decode_batch(payload, |event| events.push(event)).map_err(|source| {
                ArchiveError::Decode {
                    lsn: taken.last_lsn,
                    detail: source.to_string(),
                }
            })?;
        }
        // One thread: a flush runs beside ingest.
        let new_segments = self.write_segments(
            events.as_slice(),
            &format!("seg-{:020}.parquet", taken.last_lsn),
            1,
        )?;
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let mut manifest = state.manifest.clone();
        manifest.segments.extend(new_segments);
        manifest.archived_lsn = manifest.archived_lsn.max(taken.last_lsn);
        self.write_manifest(&manifest)?;
        state.manifest = manifest;
        state.taken = None;
        Ok(taken.events)
    }

    /// Writes `events` to one segment per hour, each called `file` in its hour's directory,
    /// each row group's columns encoded on `threads` threads; the manifest does not list them
    /// yet.
    fn write_segments<R: segment::Rows + Sync + ?Sized>(
        &self,
        events: &R,
        file: &str,
        threads: usize,
    ) -> Result<Vec<SegmentInfo>, ArchiveError> {
        let order = segment::segment_order(events);
        let mut new_segments = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let hour = hour_of(events.ts_us(order[start] as usize));
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|index| hour_of(events.ts_us(**index as usize)) == hour)
                    .count();
            let directory = self.dir.join(hour_directory(hour));
            std::fs::create_dir_all(&directory)
                .map_err(|source| ArchiveError::io("create hour directory", &directory, source))?;
            let path = directory.join(file);
            new_segments.push(segment::write(
                &path,
                hour,
                events,
                &order[start..end],
                threads,
            )?);
            sync_directory(&directory);
            start = end;
        }
        // Footers and bloom filters are ready before the first lookup reaches the segments.
        for segment in &new_segments {
            if let Err(error) = self.metadata.preload(&self.segment_path(segment)) {
                tracing::warn!(%error, "could not preload a new segment's footer");
            }
        }
        Ok(new_segments)
    }

    /// Writes imported events (they are not in the write-ahead log) to segments and, in the
    /// same manifest switch, records how far the import of each of their files has come
    /// (`positions`: per file, its identity and position; the events are of these files,
    /// before those positions). Each row group's columns are encoded on `threads` threads.
    /// Returns the events written.
    pub fn write_imported(
        &self,
        events: &EventColumns,
        positions: &[(&str, u64)],
        threads: usize,
    ) -> Result<usize, ArchiveError> {
        let Some((last_source, last_position)) = positions.last() else {
            return Err(ArchiveError::Parquet(
                "imported events without the position of their file".into(),
            ));
        };
        let _serial = self.flush_lock.lock().map_err(|_| poisoned())?;
        // Each file moves forward: events before a recorded position are archived already
        // (and a segment of that name may be listed).
        {
            let state = self.state.read().map_err(|_| poisoned())?;
            for (source, position) in positions {
                if let Some(archived) = state.manifest.imports.get(*source)
                    && *archived >= *position
                {
                    return Err(ArchiveError::Parquet(format!(
                        "import {source} is archived to {archived} already: refusing to archive it again to {position}"
                    )));
                }
            }
        }
        // Named after the last file's position: unique, since each write moves every file
        // it names forward (a name written again is a crash's leftover, not in the manifest).
        let new_segments = self.write_segments(
            events,
            &format!("imp-{last_source}-{last_position:020}.parquet"),
            threads,
        )?;
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let mut manifest = state.manifest.clone();
        manifest.segments.extend(new_segments);
        for (source, position) in positions {
            manifest.imports.insert((*source).to_owned(), *position);
        }
        self.write_manifest(&manifest)?;
        state.manifest = manifest;
        Ok(events.rows())
    }

    /// How far the import of `source` is in segments (0 when it never started).
    pub fn imported(&self, source: &str) -> u64 {
        self.state
            .read()
            .ok()
            .and_then(|state| state.manifest.imports.get(source).copied())
            .unwrap_or(0)
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), ArchiveError> {
        let path = self.dir.join(MANIFEST);
        let temporary = self.dir.join(format!("{MANIFEST}.tmp"));
        let bytes = serde_json::to_vec(manifest)
            .map_err(|error| ArchiveError::Parquet(error.to_string()))?;
        std::fs::write(&temporary, bytes)
            .map_err(|source| ArchiveError::io("write manifest", &temporary, source))?;
        std::fs::File::open(&temporary)
            .and_then(|file| file.sync_all())
            .map_err(|source| ArchiveError::io("fsync manifest", &temporary, source))?;
        std::fs::rename(&temporary, &path)
            .map_err(|source| ArchiveError::io("install manifest", &path, source))?;
        sync_directory(&self.dir);
        Ok(())
    }

    /// Events matching `query` from segments and memory, in no particular order.
    #[tracing::instrument(name = "archive.lookup", skip_all, fields(otel.name = "archive lookup"))]
    pub fn find(&self, query: &RowQuery<'_>) -> Result<Vec<ApiCall>, ArchiveError> {
        let mut found = Vec::new();
        self.scan(query, |event| found.push(event))?;
        Ok(found)
    }

    /// The `limit` oldest events a query matches, oldest first, and whether more matched:
    /// memory bounded by `limit` whatever the number of matches.
    #[tracing::instrument(name = "archive.lookup", skip_all, fields(otel.name = "archive lookup", limit = limit as i64))]
    pub fn find_oldest(
        &self,
        query: &RowQuery<'_>,
        limit: usize,
    ) -> Result<(Vec<ApiCall>, bool), ArchiveError> {
        struct ByTime(i64, u64, ApiCall);
        impl PartialEq for ByTime {
            fn eq(&self, other: &Self) -> bool {
                (self.0, self.1) == (other.0, other.1)
            }
        }
        impl Eq for ByTime {}
        impl PartialOrd for ByTime {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for ByTime {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                (self.0, self.1).cmp(&(other.0, other.1))
            }
        }
        // A max-heap of the oldest seen so far: the newest of them leaves first.
        let mut oldest = std::collections::BinaryHeap::with_capacity(limit + 1);
        let mut seen = 0u64;
        let mut more = false;
        self.scan(query, |event| {
            oldest.push(ByTime(event.ts_us, seen, event));
            seen += 1;
            if oldest.len() > limit {
                oldest.pop();
                more = true;
            }
        })?;
        let events = oldest
            .into_sorted_vec()
            .into_iter()
            .map(|ByTime(_, _, event)| event)
            .collect();
        Ok((events, more))
    }

    /// Calls `visit` with every event a query matches: the hot tail first, then the segments.
    fn scan(
        &self,
        query: &RowQuery<'_>,
        mut visit: impl FnMut(ApiCall),
    ) -> Result<(), ArchiveError> {
        let hours = hour_of(query.from_us)..=hour_of(query.to_us.saturating_sub(1));
        let segments: Vec<PathBuf> = {
            let state = self.state.read().map_err(|_| poisoned())?;
            let raw_batches = state
                .taken
                .iter()
                .flat_map(|taken| taken.batches.iter())
                .chain(state.hot.batches.iter());
            for payload in raw_batches {
                let decoded = wal::decode_batch(payload, |event| {
                    let hit = (query.from_us..query.to_us).contains(&event.ts_us)
                        && query.corr_id.is_none_or(|corr_id| event.corr_id == corr_id)
                        && query
                            .merchant
                            .is_none_or(|merchant| event.merchant == merchant);
                    if hit {
                        visit(event.into_owned());
                    }
                });
                decoded.map_err(|source| ArchiveError::Decode {
                    lsn: 0,
                    detail: source.to_string(),
                })?;
            }
            state
                .manifest
                .segments
                .iter()
                .filter(|segment| hours.contains(&segment.hour))
                .filter(|segment| {
                    segment.max_ts_us >= query.from_us && segment.min_ts_us < query.to_us
                })
                .filter(|segment| {
                    query.merchant.is_none_or(|merchant| {
                        segment.min_merchant.as_str() <= merchant
                            && merchant <= segment.max_merchant.as_str()
                    })
                })
                .map(|segment| {
                    self.dir
                        .join(hour_directory(segment.hour))
                        .join(&segment.file)
                })
                .collect()
        };
        for path in segments {
            match segment::read(&path, query, &self.metadata) {
                Ok(events) => events.into_iter().for_each(&mut visit),
                // One unreadable segment must not fail every lookup: report it and go on.
                Err(error) => {
                    tracing::error!(%error, segment = %path.display(), "archive segment unreadable; skipped")
                }
            }
        }
        Ok(())
    }
    /// Number of segments and their total bytes.
    pub fn size(&self) -> (usize, u64) {
        self.state
            .read()
            .map(|state| {
                (
                    state.manifest.segments.len(),
                    state
                        .manifest
                        .segments
                        .iter()
                        .map(|segment| segment.bytes)
                        .sum(),
                )
            })
            .unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests;

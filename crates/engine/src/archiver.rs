//! The archive thread: flushes the archive's hot tail (filled by the WAL writer before each
//! acknowledgement) to Parquet segments by size or age, and reports how far it got.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use mm_archive::Archive;
use mm_telemetry::Metrics;

use crate::error::{EngineError, Result};
use mm_storage::health::StorageHealth;

/// The WAL may delete frames at or below `floor`: the lower of what the checkpoint and the
/// archive cover. Each side stores its own position and recomputes the floor; a stale read
/// can only make the floor lower (keeping more WAL), never higher.
#[derive(Debug, Default)]
pub struct WalFloor {
    checkpointed: AtomicU64,
    archived: AtomicU64,
    pub floor: Arc<AtomicU64>,
}

impl WalFloor {
    pub fn new(checkpointed: u64, archived: u64) -> Self {
        let floor = Self {
            checkpointed: AtomicU64::new(checkpointed),
            archived: AtomicU64::new(archived),
            floor: Arc::new(AtomicU64::new(0)),
        };
        floor.recompute();
        floor
    }

    fn recompute(&self) {
        let lowest = self
            .checkpointed
            .load(Ordering::Acquire)
            .min(self.archived.load(Ordering::Acquire));
        self.floor.store(lowest, Ordering::Release);
    }

    pub fn checkpointed(&self, lsn: u64) {
        self.checkpointed.store(lsn, Ordering::Release);
        self.recompute();
    }

    pub fn archived(&self, lsn: u64) {
        self.archived.store(lsn, Ordering::Release);
        self.recompute();
    }
}

const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// An hour with this many segments is compacted into one...
const COMPACT_MIN_SEGMENTS: usize = 4;
/// ...unless it holds more rows than this (memory stays bounded while merging).
const COMPACT_MAX_ROWS: u64 = 5_000_000;

/// What the archive thread needs besides the archive.
pub struct ArchiverOptions {
    pub retention: Duration,
    pub max_bytes: Option<u64>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<StorageHealth>,
}

/// Flushes the archive when due and enforces retention until `stop_rx`'s sender is gone,
/// then flushes what is left. A flush that fails (a full disk) is a state reported to
/// storage health and tried again a second later: the events stay in the hot tail, and
/// ingest is refused meanwhile, so the tail does not grow.
pub fn run(
    archive: Arc<Archive>,
    stop_rx: Receiver<()>,
    floor: Arc<WalFloor>,
    options: ArchiverOptions,
) -> Result<()> {
    let metrics = &options.metrics;
    metrics
        .archive_quarantined_segments
        .set(archive.quarantined() as i64);
    let mut next_retention = Instant::now();
    let mut next_flush_try = Instant::now();
    loop {
        // Often enough that a flush starts soon after the hot tail reaches its size.
        match stop_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                match archive.flush() {
                    Ok(_) => floor.archived(archive.archived_lsn()),
                    // The write-ahead log keeps what the archive does not cover: the next
                    // start archives it.
                    Err(error) => tracing::warn!(
                        %error,
                        "the archive could not write its last events at shutdown; the write-ahead log keeps them and the next start archives them"
                    ),
                }
                return Ok(());
            }
        }
        if archive.flush_due() && Instant::now() >= next_flush_try {
            match archive.flush() {
                Ok(written) => {
                    tracing::debug!(
                        events = written,
                        lsn = archive.archived_lsn(),
                        "archive flushed"
                    );
                    floor.archived(archive.archived_lsn());
                    if options.health.report_recovered("archive") {
                        tracing::info!("the archive writes again");
                    }
                }
                Err(source) => {
                    let error = EngineError::Archive {
                        action: "flushing the archive",
                        source,
                    };
                    if options.health.report_failure(
                        "archive",
                        error.is_disk_full(),
                        error.to_string(),
                    ) {
                        tracing::error!(%error, "archive flush failed; the events stay in memory and the flush is tried again");
                    }
                    next_flush_try = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        if Instant::now() >= next_retention {
            let oldest_kept = mm_model::time::now_us() - options.retention.as_micros() as i64;
            // Neither is fatal: the next round tries again.
            match archive.enforce_retention(oldest_kept, options.max_bytes) {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(
                    segments = dropped,
                    "dropped archive segments past retention"
                ),
                Err(error) => tracing::warn!(%error, "archive retention failed"),
            }
            // Small segments of finished hours become one per hour.
            let current_hour = mm_model::time::now_us().div_euclid(3_600_000_000);
            match archive.compact(current_hour, COMPACT_MIN_SEGMENTS, COMPACT_MAX_ROWS) {
                Ok(0) => {}
                Ok(compacted) => tracing::info!(hours = compacted, "compacted archive hours"),
                Err(error) => tracing::warn!(%error, "archive compaction failed"),
            }
            next_retention = Instant::now() + RETENTION_INTERVAL;
        }
        metrics.archive_bytes.set(archive.size().1 as i64);
        metrics.archive_hot_events.set(archive.hot_events() as i64);
    }
}

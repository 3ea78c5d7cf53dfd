//! The embedded pipeline: rollup store, write-ahead log and the aggregator thread, wired
//! together and recovered on start.
//!
//! Start-up order is what makes recovery exact: open the store, load the checkpoint and the
//! open windows it covers, replay the WAL from the checkpoint's LSN through the same
//! aggregator code, checkpoint, and only then start the WAL writer (with LSNs continuing after
//! the last one on disk) and accept requests.

mod activity;
mod archiver;
mod error;
mod storage_watch;
mod worker;

pub use activity::{ActivityRecord, ActivitySinks};
pub use error::{EngineError, Result};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mm_archive::{Archive, ArchiveConfig};
use mm_storage::ballast::{Ballast, Fill};
use mm_storage::health::StorageHealth;
use mm_storage::idempotency::RequestRegistry;
use mm_storage::rollups::RollupStore;
use mm_storage::wal::{self, Wal, WalConfig};
use mm_telemetry::Metrics;
use mm_window::{Aggregator, WindowConfig};
use tokio::sync::broadcast;

use worker::Worker;

pub use mm_model::time::now_us;

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub data_dir: PathBuf,
    pub window: WindowConfig,
    pub checkpoint_interval: Duration,
    pub retention: Duration,
    pub wal_segment_bytes: u64,
    pub wal_queue_capacity: usize,
    pub activity_file: Option<PathBuf>,
    pub archive: ArchiveConfig,
    /// Largest archive size; the oldest segments go first beyond it.
    pub archive_max_bytes: Option<u64>,
    /// Space kept in reserve in the data directory and given up when the disk fills (0: none).
    pub ballast_bytes: u64,
    /// How long a request's `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
}

/// What start-up recovered.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub checkpoint_lsn: u64,
    pub open_windows: usize,
    pub replayed_batches: u64,
    pub replayed_events: u64,
    pub truncated_bytes: u64,
    pub archived_lsn: u64,
}

/// The running pipeline.
pub struct Pipeline {
    pub wal: Wal,
    pub store: Arc<RollupStore>,
    pub archive: Arc<Archive>,
    archive_thread: Option<JoinHandle<Result<()>>>,
    archive_stop: Option<std::sync::mpsc::Sender<()>>,
    pub activity: broadcast::Sender<Arc<ActivityRecord>>,
    pub recovery: Recovery,
    /// Whether storage takes writes; a failed write is a state the pipeline leaves by itself.
    pub health: Arc<StorageHealth>,
    /// Requests answered once (`Idempotency-Key`).
    pub requests: Arc<RequestRegistry>,
    healthy: Arc<AtomicBool>,
    worker: Option<JoinHandle<Result<()>>>,
    watch_thread: Option<JoinHandle<()>>,
    watch_stop: Option<std::sync::mpsc::Sender<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Pipeline")
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Opens storage, recovers, and starts the WAL writer and the aggregator thread.
    pub fn start(options: PipelineOptions, metrics: Arc<Metrics>) -> Result<Self> {
        std::fs::create_dir_all(&options.data_dir).map_err(EngineError::io(
            "creating data directory",
            &options.data_dir,
        ))?;
        let health = StorageHealth::new();
        let ballast = Ballast::new(&options.data_dir, options.ballast_bytes);
        match ballast.fill() {
            Ok(Fill::Filled) => {}
            Ok(Fill::NoRoom) => {
                health.report_failure(
                    "ballast",
                    true,
                    format!(
                        "no room for the {}-byte ballast and as much again",
                        options.ballast_bytes
                    ),
                );
                tracing::error!(
                    dir = %options.data_dir.display(),
                    "the disk is full at start: ingest is refused until space is freed"
                );
            }
            Err(error) => tracing::warn!(%error, "could not write the ballast"),
        }
        let store = Arc::new(
            RollupStore::open(&options.data_dir.join("store"))
                .map_err(EngineError::storage("opening the rollup store"))?,
        );
        let requests =
            RequestRegistry::new(store.clone(), options.idempotency_window.as_micros() as i64);
        let checkpoint = store
            .load_checkpoint()
            .map_err(EngineError::storage("reading the checkpoint"))?
            .unwrap_or_default();
        let start_wall = now_us();
        let mut aggregator = Aggregator::new(options.window);
        let open = store
            .load_open()
            .map_err(EngineError::storage("loading open windows"))?;
        let mut recovery = Recovery {
            checkpoint_lsn: checkpoint.lsn,
            open_windows: open.len(),
            ..Recovery::default()
        };
        for (key, rollup) in open {
            aggregator.restore_open(&key.merchant, &key.api, key.minute, rollup);
        }
        for (partition, max_event_us) in &checkpoint.partitions {
            aggregator.restore_clock(*partition, *max_event_us, start_wall);
        }
        aggregator.restore_watermark(checkpoint.watermark_us);

        let (activity_tx, _) = broadcast::channel(4096);
        let sinks = ActivitySinks::open(options.activity_file.as_deref(), activity_tx.clone())?;
        let archive = Arc::new(
            Archive::open(&options.data_dir.join("archive"), options.archive)
                .map_err(EngineError::archive("opening the archive"))?,
        );
        let archived_lsn = archive.archived_lsn();
        metrics
            .archive_quarantined_segments
            .set(archive.quarantined() as i64);
        recovery.archived_lsn = archived_lsn;
        let floor = Arc::new(archiver::WalFloor::new(checkpoint.lsn, archived_lsn));
        let checkpointed_lsn = Arc::new(AtomicU64::new(checkpoint.lsn));
        let healthy = Arc::new(AtomicBool::new(true));
        let mut worker = Worker::new(
            aggregator,
            store.clone(),
            sinks,
            metrics.clone(),
            checkpoint.lsn,
            checkpointed_lsn.clone(),
            options.checkpoint_interval,
            options.retention,
            health.clone(),
            requests.clone(),
        );

        let wal_dir = options.data_dir.join("wal");
        // One replay feeds both consumers, each from its own position.
        let replay_from = checkpoint.lsn.min(archived_lsn);
        let report = wal::replay(&wal_dir, replay_from, |lsn, payload| {
            if lsn > checkpoint.lsn {
                let events = worker.apply(lsn, payload, now_us()).map_err(|source| {
                    mm_storage::StorageError::Codec {
                        what: "wal batch",
                        source,
                    }
                })?;
                recovery.replayed_events += events as u64;
            }
            if lsn > archived_lsn {
                archive
                    .append(lsn, Arc::new(payload.to_vec()))
                    .map_err(|error| mm_storage::StorageError::Corrupt {
                        what: "wal batch for the archive",
                        path: wal_dir.clone(),
                        detail: error.to_string(),
                    })?;
            }
            Ok(())
        })
        .map_err(EngineError::storage("replaying the write-ahead log"))?;
        recovery.replayed_batches = report.replayed;
        recovery.truncated_bytes = report.truncated_bytes;
        worker.checkpoint(now_us())?;

        let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel(64);
        let mut wal_config = WalConfig::new(&wal_dir);
        wal_config.segment_bytes = options.wal_segment_bytes;
        wal_config.queue_capacity = options.wal_queue_capacity;
        wal_config.health = Some(health.clone());
        let sync_metrics = metrics.clone();
        let durable_archive = archive.clone();
        let durable_metrics = metrics.clone();
        wal_config.on_durable = Some(Arc::new(move |lsn, payload| {
            durable_metrics.wal_durable_lsn.set(lsn as i64);
            // Findable from the moment it is acknowledged: the hot tail gets it first.
            if let Err(error) = durable_archive.append(lsn, payload.clone()) {
                tracing::error!(%error, lsn, "archive refused a durable batch");
            }
        }));
        let size_metrics = metrics.clone();
        wal_config.on_size = Some(Arc::new(move |bytes| {
            size_metrics.wal_bytes.set(bytes as i64);
        }));
        wal_config.on_sync = Some(Arc::new(move |elapsed, batches| {
            sync_metrics
                .wal_fsync_seconds
                .observe(elapsed.as_secs_f64());
            sync_metrics.wal_group_batches.observe(batches as f64);
        }));
        let next_lsn = report.last_lsn.max(checkpoint.lsn) + 1;
        let wal = Wal::start(wal_config, next_lsn, committed_tx, floor.floor.clone())
            .map_err(EngineError::storage("starting the write-ahead log"))?;

        let (archive_stop_tx, archive_stop_rx) = std::sync::mpsc::channel::<()>();
        worker.report_to(floor.clone());
        let archive_healthy = healthy.clone();
        let archive_floor = floor.clone();
        let archive_for_thread = archive.clone();
        let archiver_options = archiver::ArchiverOptions {
            retention: options.retention,
            max_bytes: options.archive_max_bytes,
            metrics: metrics.clone(),
            health: health.clone(),
        };
        let archive_thread = std::thread::Builder::new()
            .name("mm-archive".into())
            .spawn(move || {
                let result = archiver::run(
                    archive_for_thread,
                    archive_stop_rx,
                    archive_floor,
                    archiver_options,
                );
                if let Err(error) = &result {
                    archive_healthy.store(false, Ordering::Release);
                    tracing::error!(%error, "archive stopped");
                }
                result
            })
            .map_err(|source| EngineError::Spawn {
                thread: "archive",
                source,
            })?;
        let worker_healthy = healthy.clone();
        let thread = std::thread::Builder::new()
            .name("mm-aggregator".into())
            .spawn(move || {
                let result = worker.run(committed_rx);
                if let Err(error) = &result {
                    worker_healthy.store(false, Ordering::Release);
                    tracing::error!(%error, "aggregator stopped");
                }
                result
            })
            .map_err(|source| EngineError::Spawn {
                thread: "aggregator",
                source,
            })?;
        let (watch_stop_tx, watch_stop_rx) = std::sync::mpsc::channel::<()>();
        let watch_health = health.clone();
        let settle = (options.checkpoint_interval * 3).max(Duration::from_secs(2));
        let watch_thread = std::thread::Builder::new()
            .name("mm-storage-watch".into())
            .spawn(move || storage_watch::run(watch_health, ballast, watch_stop_rx, settle))
            .map_err(|source| EngineError::Spawn {
                thread: "storage watch",
                source,
            })?;
        Ok(Self {
            wal,
            store,
            health,
            requests,
            watch_thread: Some(watch_thread),
            watch_stop: Some(watch_stop_tx),
            archive,
            archive_thread: Some(archive_thread),
            archive_stop: Some(archive_stop_tx),
            activity: activity_tx,
            recovery,
            healthy,
            worker: Some(thread),
        })
    }

    /// An in-process subscriber to the activity stream: every final and correction record
    /// from now on. A subscriber that falls more than 4096 records behind is told it lagged.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ActivityRecord>> {
        self.activity.subscribe()
    }

    /// False once the aggregator has failed.
    pub fn healthy(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Stops accepting appends, lets the aggregator drain and write a last checkpoint.
    /// Every other clone of [`Pipeline::wal`] must have been dropped first.
    pub fn shutdown(mut self) -> Result<()> {
        self.wal.shutdown();
        let aggregated = match self.worker.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| EngineError::Panicked("aggregator"))?,
            None => Ok(()),
        };
        // No more appends can arrive: let the archive write what it holds.
        drop(self.archive_stop.take());
        drop(self.watch_stop.take());
        if let Some(thread) = self.watch_thread.take() {
            thread
                .join()
                .map_err(|_| EngineError::Panicked("storage watch"))?;
        }
        let archived = match self.archive_thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| EngineError::Panicked("archive"))?,
            None => Ok(()),
        };
        aggregated.and(archived)
    }
}

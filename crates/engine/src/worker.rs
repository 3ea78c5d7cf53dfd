//! The aggregator thread: one loop over durable WAL batches and a checkpoint timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use mm_model::time::minute_of;
use mm_storage::codec::CodecError;
use mm_storage::rollups::{Checkpoint, CheckpointBatch, RollupStore};
use mm_storage::wal::{self, CommittedBatch};
use mm_telemetry::{KindLabel, Metrics};
use mm_window::{Aggregator, Call, Origin};

use super::activity::{ActivityRecord, ActivitySinks};
use super::archiver::WalFloor;
use super::now_us;
use crate::error::{EngineError, Result};
use mm_storage::health::StorageHealth;
use mm_storage::idempotency::RequestRegistry;
use mm_storage::rollups::StoredRequest;

const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

pub(super) struct Worker {
    aggregator: Aggregator,
    store: Arc<RollupStore>,
    sinks: ActivitySinks,
    metrics: Arc<Metrics>,
    applied_lsn: u64,
    checkpointed_lsn: Arc<AtomicU64>,
    checkpoint_interval: Duration,
    retention: Duration,
    reported_late: u64,
    reported_closed: u64,
    floor: Option<Arc<WalFloor>>,
    health: Arc<StorageHealth>,
    /// A checkpoint that could not be written, written again before the next round.
    retry: Option<CheckpointBatch>,
    /// Requests answered once (`Idempotency-Key`), and those recorded in WAL batches applied
    /// since the last checkpoint: the next one stores them.
    requests: Arc<RequestRegistry>,
    pending_requests: Vec<StoredRequest>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        aggregator: Aggregator,
        store: Arc<RollupStore>,
        sinks: ActivitySinks,
        metrics: Arc<Metrics>,
        applied_lsn: u64,
        checkpointed_lsn: Arc<AtomicU64>,
        checkpoint_interval: Duration,
        retention: Duration,
        health: Arc<StorageHealth>,
        requests: Arc<RequestRegistry>,
    ) -> Self {
        let stats = aggregator.stats();
        Self {
            aggregator,
            store,
            sinks,
            metrics,
            applied_lsn,
            checkpointed_lsn,
            checkpoint_interval,
            retention,
            reported_late: stats.late_events,
            reported_closed: stats.windows_closed,
            floor: None,
            health,
            retry: None,
            requests,
            pending_requests: Vec::new(),
        }
    }

    /// Reports checkpoint positions to the WAL floor.
    pub(super) fn report_to(&mut self, floor: Arc<WalFloor>) {
        self.floor = Some(floor);
    }

    /// Counts one durable batch; returns its number of events.
    pub(super) fn apply(
        &mut self,
        lsn: u64,
        payload: &[u8],
        now_wall_us: i64,
    ) -> Result<usize, CodecError> {
        if let Some(record) = wal::batch_request(payload)? {
            let stored = StoredRequest::from_record(&record);
            // Known again after a crash, before the checkpoint stores it.
            self.requests.answered(stored.clone(), lsn);
            self.pending_requests.push(stored);
        }
        let aggregator = &mut self.aggregator;
        let origin = Origin {
            partition: 0,
            position: lsn as i64,
        };
        let count = wal::decode_batch(payload, |event| {
            aggregator.ingest(origin, Call::from(&event), now_wall_us);
        })?;
        self.applied_lsn = lsn;
        self.aggregator.advance(now_wall_us);
        Ok(count)
    }

    /// Writes everything that changed since the last checkpoint, atomically with the WAL
    /// position it covers; emits the windows it makes final first (at-least-once).
    ///
    /// A checkpoint that cannot be written (a full disk) is kept and written again, before
    /// anything newer, at the next one: storage reports the failure and ingest is refused
    /// meanwhile, but the aggregator goes on counting what the log had acknowledged.
    pub(super) fn checkpoint(&mut self, now_wall_us: i64) -> Result<()> {
        if let Some(pending) = self.retry.take() {
            if let Err(error) = self.write(pending.clone()) {
                self.retry = Some(pending);
                self.report_failure(&error);
                return Ok(());
            }
            if self.health.report_recovered("checkpoint") {
                tracing::info!(
                    lsn = self.applied_lsn as i64,
                    "checkpoints are written again"
                );
            }
        }
        let round = self.aggregator.checkpoint(now_wall_us);
        self.report_gauges(now_wall_us);
        let covered = self.checkpointed_lsn.load(Ordering::Acquire);
        if round.is_empty() && covered == self.applied_lsn {
            return Ok(());
        }
        let span = tracing::info_span!(
            parent: None,
            "checkpoint",
            otel.name = "checkpoint",
            lsn = self.applied_lsn as i64,
            finals = round.finals.len() as i64,
            corrections = round.corrections.len() as i64,
            open = round.open.len() as i64,
        );
        let _entered = span.enter();
        let batch = CheckpointBatch {
            finals: round
                .finals
                .into_iter()
                .map(|window| (window.key, window.rollup))
                .collect(),
            corrections: round
                .corrections
                .into_iter()
                .map(|correction| (correction.key, correction.late))
                .collect(),
            open: round
                .open
                .into_iter()
                .map(|window| (window.key, window.rollup))
                .collect(),
            checkpoint: Checkpoint {
                lsn: self.applied_lsn,
                watermark_us: self.aggregator.watermark_us(),
                partitions: self.aggregator.partition_clocks(),
            },
            requests: std::mem::take(&mut self.pending_requests),
        };
        if let Err(error) = self.write(batch.clone()) {
            self.retry = Some(batch);
            self.report_failure(&error);
        }
        Ok(())
    }

    fn report_failure(&self, error: &EngineError) {
        if self
            .health
            .report_failure("checkpoint", error.is_disk_full(), error.to_string())
        {
            tracing::error!(%error, "checkpoint failed; kept and written again at the next one");
        }
    }

    /// A checkpoint that was still unwritten at shutdown: its events are in the write-ahead
    /// log, which the next start replays from the last checkpoint written.
    pub(super) fn unwritten(&self) -> bool {
        self.retry.is_some()
    }

    /// Prepares, emits and commits one checkpoint batch.
    fn write(&mut self, batch: CheckpointBatch) -> Result<()> {
        let lsn = batch.checkpoint.lsn;
        let started = Instant::now();
        let prepared = self
            .store
            .prepare(batch)
            .map_err(EngineError::storage("preparing checkpoint"))?;
        let mut records = Vec::with_capacity(prepared.finals.len() + prepared.corrected.len());
        let mut corrections_emitted = 0u64;
        for (key, rollup) in &prepared.finals {
            records.push(ActivityRecord::new(key, rollup, false));
        }
        for (key, rollup) in &prepared.corrected {
            records.push(ActivityRecord::new(key, rollup, true));
            corrections_emitted += 1;
        }
        let finals_emitted = records.len() as u64 - corrections_emitted;
        self.sinks.emit(&records)?;
        self.store
            .commit(prepared)
            .map_err(EngineError::storage("committing checkpoint"))?;
        self.metrics
            .store_write_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.window_corrections.inc_by(corrections_emitted);
        self.metrics
            .activity_records
            .get_or_create(&KindLabel { kind: "final" })
            .inc_by(finals_emitted);
        self.metrics
            .activity_records
            .get_or_create(&KindLabel { kind: "correction" })
            .inc_by(corrections_emitted);
        self.metrics.wal_checkpointed_lsn.set(lsn as i64);
        self.checkpointed_lsn.store(lsn, Ordering::Release);
        self.requests.checkpointed(lsn);
        if let Some(floor) = &self.floor {
            floor.checkpointed(lsn);
        }
        Ok(())
    }

    fn report_gauges(&mut self, now_wall_us: i64) {
        let stats = self.aggregator.stats();
        self.metrics
            .window_late_events
            .inc_by(stats.late_events - self.reported_late);
        self.metrics
            .window_closed
            .inc_by(stats.windows_closed - self.reported_closed);
        self.reported_late = stats.late_events;
        self.reported_closed = stats.windows_closed;
        self.metrics
            .window_open
            .set(self.aggregator.open_windows() as i64);
        let watermark = self.aggregator.watermark_us();
        if watermark > i64::MIN {
            self.metrics
                .window_watermark_delay_seconds
                .set((now_wall_us - watermark) as f64 / 1e6);
        }
    }

    fn housekeeping(&mut self, now_wall_us: i64) -> Result<()> {
        let retention_us = self.retention.as_micros() as i64;
        let oldest_kept = minute_of(now_wall_us - retention_us) - 1;
        // Not fatal: the next round tries again.
        match self.store.enforce_retention(oldest_kept) {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(days = dropped, "dropped rollups past retention"),
            Err(error) => tracing::warn!(%error, "enforcing rollup retention failed"),
        }
        match self
            .store
            .expire_requests(now_wall_us - self.requests.window_us())
        {
            Ok(0) => {}
            Ok(expired) => tracing::debug!(expired, "forgot requests past the idempotency window"),
            Err(error) => tracing::warn!(%error, "expiring idempotency keys failed"),
        }
        let removed = self.aggregator.compact_series();
        tracing::debug!(removed, "compacted idle series");
        Ok(())
    }

    /// Runs until the WAL writer is gone, then writes a last checkpoint.
    pub(super) fn run(&mut self, committed_rx: Receiver<CommittedBatch>) -> Result<()> {
        let mut next_checkpoint = Instant::now() + self.checkpoint_interval;
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
        loop {
            let timeout = next_checkpoint.saturating_duration_since(Instant::now());
            match committed_rx.recv_timeout(timeout) {
                Ok(batch) => {
                    self.apply(batch.lsn, &batch.payload, now_us())
                        .map_err(|source| mm_storage::StorageError::Codec {
                            what: "wal batch",
                            source,
                        })
                        .map_err(EngineError::storage("applying a durable batch"))?;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.checkpoint(now_us())?;
                    if self.unwritten() {
                        tracing::warn!(
                            lsn = self.applied_lsn as i64,
                            "the last checkpoint could not be written (see the error above); every acknowledged event is in the write-ahead log and the next start replays it"
                        );
                    } else {
                        tracing::info!(
                            lsn = self.applied_lsn as i64,
                            "aggregator drained and checkpointed"
                        );
                    }
                    return Ok(());
                }
            }
            if Instant::now() >= next_checkpoint {
                self.checkpoint(now_us())?;
                next_checkpoint = Instant::now() + self.checkpoint_interval;
            }
            if Instant::now() >= next_housekeeping {
                self.housekeeping(now_us())?;
                next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
            }
        }
    }
}

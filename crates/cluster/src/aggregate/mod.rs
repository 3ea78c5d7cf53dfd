//! The aggregation consumer: one window aggregator per owned partition of the aggregation
//! topic (records keyed by merchant), checkpointed into the checkpoint topic.
//!
//! - `mod.rs` (here): the consumer loop, one session per set of clients.
//! - [`partition`]: the pure per-partition logic (what each record does, a round's records,
//!   the checkpoint), tested against an in-memory log in `model_tests.rs`.
//! - `restore.rs`: a newly assigned partition, rebuilt from its last checkpoint.
//! - `checkpoint.rs`: a checkpoint of every owned partition, handed to the writer thread.
//!
//! A checkpoint, every `checkpoint_interval`:
//! 1. advances each partition's watermark and takes the windows it closed (final records,
//!    covering the partition up to the current position) and the late calls since the last
//!    checkpoint (correction records: the replicated rollup plus the late calls);
//! 2. produces them to the activity topic and waits until the broker has every one, with the
//!    dead letters;
//! 3. writes one [`PartitionCheckpoint`](mm_kafka::PartitionCheckpoint) per partition to the
//!    checkpoint topic (where to re-read from to rebuild the windows still open, and the
//!    watermark), and only then commits the group's offsets (for lag and tools).
//!
//! On assignment a partition is rebuilt from its checkpoint before its records are processed:
//! the records in `[replay, next)` are re-read and only those whose window the checkpoint's
//! watermark had not closed are counted again (the others are in the activity topic already).
//! Records after `next` are processed as new; a window's activity record says which offsets
//! it covers, so a call that a crashed owner had already emitted is recognised and not counted
//! twice. ARCHITECTURE.md has the whole argument.

mod checkpoint;
pub mod partition;
mod restore;

#[cfg(test)]
mod model_tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mm_kafka::{KafkaSettings, TrackedProducer};
use mm_model::mapping::EventParser;
use mm_model::rollup::{Rollup, WindowKey};
use mm_storage::StorageError;
use mm_storage::rollups::RollupStore;
use mm_telemetry::Metrics;
use mm_window::WindowConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};

use self::partition::{Outcome, PartitionState, Replica};
use super::group::{Change, ClusterStatus, GroupContext, Session, dead_letter};
use super::replica::{ReplicaProgress, partition_count};
use super::writer::{CheckpointWriter, Emitter};
use crate::decode::{RecordDecoder, input_record};
use crate::error::{ClusterError, Result};
use mm_kafka::guard::FetchGuard;
use mm_model::time::now_us;

/// Everything the aggregation consumer needs.
pub struct AggregateOptions {
    pub settings: KafkaSettings,
    pub window: WindowConfig,
    pub checkpoint_interval: Duration,
    pub retention_us: i64,
    pub max_skew_us: i64,
    pub parser: Arc<EventParser>,
    pub store: Arc<RollupStore>,
    pub progress: Arc<ReplicaProgress>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<ClusterStatus>,
    pub producer: Arc<TrackedProducer>,
    pub stop: Arc<AtomicBool>,
    pub client_id: String,
    /// This thread's number among the instance's aggregation threads (from 0).
    pub member: u32,
    /// What every aggregation thread of the instance last reported.
    pub members: Arc<Members>,
}

/// The open windows and watermark each aggregation thread of one instance last reported, so
/// that the gauges show the instance as a whole.
#[derive(Debug)]
pub struct Members {
    open: Vec<AtomicI64>,
    watermarks: Vec<AtomicI64>,
    /// Per aggregation partition, the furthest position any thread of this instance has
    /// processed up to (next offset), updated after every turn.
    positions: std::sync::Mutex<BTreeMap<i32, i64>>,
}

impl Members {
    pub fn new(count: usize) -> Self {
        Self {
            open: (0..count).map(|_| AtomicI64::new(0)).collect(),
            watermarks: (0..count).map(|_| AtomicI64::new(i64::MIN)).collect(),
            positions: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Records how far the partitions of a thread have been processed.
    fn advanced(&self, positions: impl Iterator<Item = (i32, i64)>) {
        if let Ok(mut furthest) = self.positions.lock() {
            for (partition, next) in positions {
                let entry = furthest.entry(partition).or_insert(next);
                *entry = (*entry).max(next);
            }
        }
    }

    /// Per partition, the furthest next offset any thread has processed up to.
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        self.positions
            .lock()
            .map(|positions| positions.clone())
            .unwrap_or_default()
    }

    /// Records `member`'s open windows and watermark (`i64::MIN`: none yet); returns the open
    /// windows of all and the lowest watermark of those that have one.
    pub fn report(&self, member: u32, open: i64, watermark: i64) -> (i64, Option<i64>) {
        let member = member as usize;
        self.open[member].store(open, Ordering::Relaxed);
        self.watermarks[member].store(watermark, Ordering::Relaxed);
        let open = self
            .open
            .iter()
            .map(|open| open.load(Ordering::Relaxed))
            .sum();
        let watermark = self
            .watermarks
            .iter()
            .map(|watermark| watermark.load(Ordering::Relaxed))
            .filter(|watermark| *watermark > i64::MIN)
            .min();
        (open, watermark)
    }
}

/// The replicated activity records, as the partition logic reads them.
impl Replica for RollupStore {
    fn covers(&self, key: &WindowKey) -> Result<Option<(i32, i64)>, StorageError> {
        RollupStore::covers(self, key)
    }

    fn replicated(&self, key: &WindowKey) -> Result<Option<(Rollup, i32, i64)>, StorageError> {
        RollupStore::replicated(self, key)
    }
}

/// Records an aggregation consumer processes at most between two checks of its writer, its
/// checkpoint clock and its quiet partitions.
const TURN_RECORDS: usize = 1024;

struct Worker {
    options: AggregateOptions,
    decoder: RecordDecoder,
    topic: String,
    group: String,
    repartitioned: bool,
    activity_partitions: u32,
    tasks: BTreeMap<i32, PartitionState>,
    /// The group consumer's guard against records it skips.
    guard: FetchGuard,
    reader: BaseConsumer,
    writer: CheckpointWriter,
    clock: WallClock,
    last_report: Instant,
    /// Spans continuing the traces of the records handled (when spans are exported).
    spans: mm_kafka::trace::ConsumerSpans,
}

/// The wall clock, read once per 256 calls (arrival times need no finer grain).
#[derive(Default)]
struct WallClock {
    now_us: i64,
    reads: u32,
}

impl WallClock {
    fn now_us(&mut self) -> i64 {
        if self.reads.is_multiple_of(256) {
            self.now_us = now_us();
        }
        self.reads = self.reads.wrapping_add(1);
        self.now_us
    }
}

/// Runs the aggregation consumer until `stop`, then checkpoints and leaves the group.
pub fn run(options: AggregateOptions) -> Result<()> {
    let settings = options.settings.clone();
    let topic = settings.aggregation_topic();
    let group = settings.aggregation_group();
    let reader = |options: &AggregateOptions| -> Result<BaseConsumer> {
        settings
            .reader(&format!("{}-rebuild", options.client_id))
            .create()
            .map_err(ClusterError::kafka("creating the rebuild reader"))
    };
    let first_reader = reader(&options)?;
    let activity_partitions = loop {
        match partition_count(&first_reader, &settings.activity_topic) {
            Ok(count) if count > 0 => break count as u32,
            _ if options.stop.load(Ordering::Acquire) => return Ok(()),
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    };
    let writer = CheckpointWriter::start(
        Emitter {
            producer: options.producer.clone(),
            activity_topic: settings.activity_topic.clone(),
            open_topic: settings.open_windows_topic(),
            activity_partitions,
        },
        settings.checkpoint_topic(),
    )?;
    let metrics_gaps = options.metrics.kafka_fetch_gaps.clone();
    let mut worker = Worker {
        repartitioned: !settings.input_keyed,
        decoder: RecordDecoder {
            parser: options.parser.clone(),
            retention_us: options.retention_us,
            max_skew_us: options.max_skew_us,
        },
        options,
        topic: topic.clone(),
        group: group.clone(),
        activity_partitions,
        tasks: BTreeMap::new(),
        guard: FetchGuard::new(&topic, settings.fetch_guard, metrics_gaps.clone()),
        reader: first_reader,
        writer,
        clock: WallClock::default(),
        last_report: Instant::now() - Duration::from_secs(60),
        spans: mm_kafka::trace::ConsumerSpans::default(),
    };
    loop {
        let consumer: BaseConsumer<GroupContext> = settings
            .group_consumer(&group, &worker.options.client_id)
            .create_with_context(GroupContext::new(&topic).before_revoke({
                // A partition leaves only once the checkpoints handed over are written: its
                // next owner must find the latest one.
                let outstanding = worker.writer.outstanding();
                move || outstanding.wait_idle()
            }))
            .map_err(ClusterError::kafka("creating the aggregation consumer"))?;
        consumer
            .subscribe(&[&topic])
            .map_err(ClusterError::kafka(format!("subscribing to {topic}")))?;
        tracing::info!(%topic, %group, "aggregation consumer started");
        match worker.session(&consumer)? {
            Session::Stopped => {
                // Graceful leave: everything counted so far is committed, then the
                // partitions go.
                consumer.unsubscribe();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && consumer.assignment().is_ok_and(|list| list.count() > 0)
                {
                    let _ = consumer.poll(Duration::from_millis(50));
                }
                tracing::info!("aggregation consumer left the group");
                return Ok(());
            }
            Session::BrokerLost => {
                // Start over with new clients, rebuilding every partition from its last
                // checkpoint as on any assignment.
                tracing::warn!("the broker did not take a checkpoint's records: reconnecting");
                worker.writer.wait_idle();
                while worker.writer.try_result().is_some() {}
                worker.writer.reset();
                worker.tasks.clear();
                worker.guard = FetchGuard::new(&topic, settings.fetch_guard, metrics_gaps.clone());
                drop(consumer);
                worker.reader = reader(&worker.options)?;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

impl Worker {
    /// Consumes and checkpoints until `stop` (after a last checkpoint), or until a checkpoint's
    /// records could not be delivered.
    fn session(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<Session> {
        let mut next_checkpoint = Instant::now() + self.options.checkpoint_interval;
        while !self.options.stop.load(Ordering::Acquire) {
            // What is fetched already is processed in one turn, the turn's other work (results
            // of written checkpoints, the clock, quiet partitions) done once after it.
            let mut wait = Duration::from_millis(50);
            for _ in 0..TURN_RECORDS {
                let polled = consumer.poll(wait);
                self.apply_changes(consumer)?;
                match polled {
                    Some(Ok(message)) => self.handle(consumer, &message)?,
                    Some(Err(KafkaError::PartitionEOF(_))) | None => break,
                    // librdkafka reconnects by itself; a checkpoint the broker does not take
                    // starts the session over.
                    Some(Err(error)) => {
                        tracing::warn!(%error, "aggregation consumer");
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
            self.options.members.advanced(
                self.tasks
                    .values()
                    .map(|state| (state.partition, state.next)),
            );
            if !self.collect(consumer, CommitMode::Async)? {
                return Ok(Session::BrokerLost);
            }
            if Instant::now() >= next_checkpoint {
                if !self.checkpoint(consumer)? {
                    return Ok(Session::BrokerLost);
                }
                next_checkpoint = Instant::now() + self.options.checkpoint_interval;
            }
            // A partition that made no progress since the last check.
            self.guard.check_quiet(
                consumer,
                self.tasks
                    .values()
                    .map(|state| (state.partition, state.next)),
            );
        }
        // A last checkpoint, written and committed before the partitions go.
        if self.checkpoint(consumer)? {
            self.writer.wait_idle();
            self.collect(consumer, CommitMode::Sync)?;
        }
        Ok(Session::Stopped)
    }

    fn apply_changes(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<()> {
        for change in consumer.context().take_changes() {
            match change {
                Change::Revoked(partitions) => {
                    for partition in partitions {
                        // Its next owner rebuilds it from the last checkpoint.
                        self.tasks.remove(&partition);
                        self.guard.forget(partition);
                    }
                }
                Change::Assigned(partitions) => self.restore(consumer, &partitions)?,
            }
        }
        Ok(())
    }

    fn handle(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        message: &BorrowedMessage<'_>,
    ) -> Result<()> {
        let partition = message.partition();
        let Some(state) = self.tasks.get_mut(&partition) else {
            return Ok(());
        };
        if !self
            .guard
            .admit(consumer, partition, state.next, message.offset())
        {
            return Ok(());
        }
        self.spans.note(message, "process");
        let now = self.clock.now_us();
        let outcome = state.process(
            &input_record(message, self.repartitioned),
            &self.decoder,
            &*self.options.store,
            now,
        )?;
        self.options.metrics.kafka_records_processed.inc();
        match outcome {
            Outcome::Dead(rejected) => {
                dead_letter(
                    &self.options.producer,
                    &self.options.settings,
                    &self.group,
                    message,
                    rejected.class,
                    &rejected.message,
                    &self.options.metrics,
                )
                .map_err(ClusterError::delivery("sending a dead letter"))?;
            }
            Outcome::Duplicate => {
                self.options.metrics.kafka_duplicates_skipped.inc();
            }
            Outcome::Late => {
                self.options.metrics.window_late_events.inc();
            }
            Outcome::Counted | Outcome::Rebuilt => {}
        }
        Ok(())
    }
}

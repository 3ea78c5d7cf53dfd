//! The aggregation consumer: one window aggregator per owned partition of the aggregation
//! topic (records keyed by merchant), checkpointed into the group's committed offsets.
//!
//! A checkpoint, every `checkpoint_interval`:
//! 1. advances each partition's watermark and takes the windows it closed (final records,
//!    covering the partition up to the current position) and the late calls since the last
//!    checkpoint (correction records: the replicated rollup plus the late calls);
//! 2. produces them to the activity topic and waits until the broker has every one, with the
//!    dead letters;
//! 3. commits, per partition, the next offset with a [`PartitionCheckpoint`] in its metadata:
//!    where to re-read from to rebuild the windows still open, and the watermark.
//!
//! On assignment a partition is rebuilt from its checkpoint before its records are processed:
//! the records in `[replay, committed)` are re-read and only those whose window the
//! checkpoint's watermark had not closed are counted again (the others are in the activity
//! topic already). Records after the committed offset are processed as new; a window's
//! activity record says which offsets it covers, so a call that a crashed owner had already
//! emitted is recognised and not counted twice. ARCHITECTURE.md has the whole argument.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mm_kafka::delivery::delivered_offsets;
use mm_kafka::{KafkaSettings, PartitionCheckpoint, TrackedProducer, header};
use mm_model::mapping::{EventParser, TimeBounds};
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};
use mm_model::time::minute_of;
use mm_storage::rollups::RollupStore;
use mm_telemetry::{KindLabel, Metrics};
use mm_window::{Aggregator, WindowConfig};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use super::group::{
    Change, ClusterStatus, Continuity, GroupContext, QUIET, Session, dead_letter, reread, unstick,
};
use super::replica::{ReplicaProgress, partition_count};
use super::writer::{CheckpointJob, CheckpointWriter, Emitter, JobResult, Outgoing};
use crate::pipeline::now_us;

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
}

/// The state of one owned partition.
struct Task {
    partition: i32,
    aggregator: Aggregator,
    /// Next offset to process.
    next: i64,
    /// Offsets below this are being rebuilt: calls of closed windows are already downstream.
    replay_until: i64,
    /// Per minute with open windows, the first offset counted in them.
    first_offset: BTreeMap<i64, i64>,
    /// Repartitioned input: per source partition, the highest source offset counted.
    sources: BTreeMap<i32, i64>,
    /// At each checkpoint offset, `sources` as it was there; the oldest still needed first.
    snapshots: VecDeque<(i64, BTreeMap<i32, i64>)>,
    /// Late calls not yet emitted, per window, with the last offset among them.
    pending: FxHashMap<WindowKey, (Rollup, i64)>,
    committed: Option<i64>,
    /// Guards against records the consumer skips.
    continuity: Continuity,
}

impl Task {
    fn new(partition: i32, window: WindowConfig) -> Self {
        Self {
            partition,
            aggregator: Aggregator::new(window),
            next: 0,
            replay_until: 0,
            first_offset: BTreeMap::new(),
            sources: BTreeMap::new(),
            snapshots: VecDeque::new(),
            pending: FxHashMap::default(),
            committed: None,
            continuity: Continuity::default(),
        }
    }

    /// The checkpoint for the current position; records the snapshot it refers to.
    fn checkpoint(&mut self) -> PartitionCheckpoint {
        self.snapshots.push_back((self.next, self.sources.clone()));
        let needed = self
            .first_offset
            .values()
            .copied()
            .min()
            .unwrap_or(self.next);
        // The latest snapshot at or before the first offset still needed.
        while self.snapshots.len() > 1 && self.snapshots[1].0 <= needed {
            self.snapshots.pop_front();
        }
        let (replay, sources) = self.snapshots.front().cloned().unwrap_or_default();
        PartitionCheckpoint {
            v: PartitionCheckpoint::VERSION,
            next: self.next,
            replay,
            watermark_us: self.aggregator.watermark_us(),
            max_event_us: self
                .aggregator
                .partition_clocks()
                .first()
                .map_or(i64::MIN, |(_, max)| *max),
            sources: sources.into_iter().collect(),
        }
    }
}

/// What became of one record.
enum Outcome {
    Counted,
    Late,
    Duplicate,
    /// Re-read while rebuilding, and already downstream.
    Rebuilt,
    Dead(&'static str, String),
}

struct Worker {
    options: AggregateOptions,
    topic: String,
    group: String,
    repartitioned: bool,
    activity_partitions: u32,
    tasks: BTreeMap<i32, Task>,
    reader: BaseConsumer,
    writer: CheckpointWriter,
    clock: std::cell::Cell<(i64, u32)>,
    last_report: Instant,
}

/// Runs the aggregation consumer until `stop`, then checkpoints and leaves the group.
pub fn run(options: AggregateOptions) -> anyhow::Result<()> {
    let settings = options.settings.clone();
    let topic = settings.aggregation_topic();
    let group = settings.aggregation_group();
    let reader = |options: &AggregateOptions| -> anyhow::Result<BaseConsumer> {
        settings
            .reader(&format!("{}-rebuild", options.client_id))
            .create()
            .context("creating the rebuild reader")
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
    let mut worker = Worker {
        repartitioned: !settings.input_keyed,
        options,
        topic: topic.clone(),
        group: group.clone(),
        activity_partitions,
        tasks: BTreeMap::new(),
        reader: first_reader,
        writer,
        clock: std::cell::Cell::new((0, 0)),
        last_report: Instant::now() - Duration::from_secs(60),
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
            .context("creating the aggregation consumer")?;
        consumer
            .subscribe(&[&topic])
            .with_context(|| format!("subscribing to {topic}"))?;
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
    fn session(&mut self, consumer: &BaseConsumer<GroupContext>) -> anyhow::Result<Session> {
        let mut next_checkpoint = Instant::now() + self.options.checkpoint_interval;
        let mut next_quiet_check = Instant::now() + QUIET;
        while !self.options.stop.load(Ordering::Acquire) {
            let polled = consumer.poll(Duration::from_millis(50));
            self.apply_changes(consumer)?;
            match polled {
                Some(Ok(message)) => self.handle(consumer, &message)?,
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                // librdkafka reconnects by itself; a checkpoint the broker does not take
                // starts the session over.
                Some(Err(error)) => tracing::warn!(%error, "aggregation consumer"),
            }
            if !self.collect(consumer, CommitMode::Async)? {
                return Ok(Session::BrokerLost);
            }
            if Instant::now() >= next_checkpoint {
                if !self.checkpoint(consumer)? {
                    return Ok(Session::BrokerLost);
                }
                next_checkpoint = Instant::now() + self.options.checkpoint_interval;
            }
            if Instant::now() >= next_quiet_check {
                // A partition that made no progress since the last check.
                for task in self.tasks.values_mut() {
                    if task.continuity.made_no_progress(task.next) {
                        unstick(
                            consumer,
                            &self.topic,
                            task.partition,
                            task.next,
                            &mut task.continuity,
                            &self.options.metrics,
                        );
                    }
                }
                next_quiet_check = Instant::now() + QUIET;
            }
        }
        // A last checkpoint, written and committed before the partitions go.
        if self.checkpoint(consumer)? {
            self.writer.wait_idle();
            self.collect(consumer, CommitMode::Sync)?;
        }
        Ok(Session::Stopped)
    }

    fn apply_changes(&mut self, consumer: &BaseConsumer<GroupContext>) -> anyhow::Result<()> {
        for change in consumer.context().take_changes() {
            match change {
                Change::Revoked(partitions) => {
                    for partition in partitions {
                        // Its next owner rebuilds it from the last checkpoint.
                        self.tasks.remove(&partition);
                    }
                }
                Change::Assigned(partitions) => self.restore(consumer, &partitions)?,
            }
        }
        Ok(())
    }

    /// Rebuilds `partitions` from their committed checkpoints.
    fn restore(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        partitions: &[i32],
    ) -> anyhow::Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        // Records an earlier owner emitted must be in the replica before late calls are
        // checked against it.
        let mut targets = BTreeMap::new();
        for partition in 0..self.activity_partitions as i32 {
            if let Ok((_, high)) = self.reader.fetch_watermarks(
                &self.options.settings.activity_topic,
                partition,
                Duration::from_secs(5),
            ) {
                targets.insert(partition, high);
            }
        }
        if !self.options.progress.wait_until_settled(
            &targets,
            Duration::from_secs(60),
            Duration::from_secs(2),
        ) {
            anyhow::bail!("the activity replica did not catch up within 60 s");
        }
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&self.topic, *partition);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .context("reading committed offsets")?;
        for partition in partitions.iter().copied() {
            let committed = committed
                .find_partition(&self.topic, partition)
                .and_then(|element| match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            let mut task = Task::new(partition, self.options.window);
            let now = now_us();
            match self.last_checkpoint(partition)? {
                Some(checkpoint) => {
                    tracing::debug!(
                        partition,
                        ?committed,
                        ?checkpoint,
                        "restoring from a checkpoint"
                    );
                    task.aggregator.restore_watermark(checkpoint.watermark_us);
                    task.aggregator
                        .restore_clock(0, checkpoint.max_event_us, now);
                    task.sources = checkpoint.sources.iter().copied().collect();
                    task.snapshots
                        .push_back((checkpoint.replay, task.sources.clone()));
                    task.next = checkpoint.replay;
                    task.replay_until = checkpoint.next;
                    task.committed = committed;
                    self.rebuild(&mut task)?;
                    task.next = checkpoint.next;
                    // The group's offset may trail the checkpoint (a commit that failed after
                    // the checkpoint was written): start reading where the checkpoint ends.
                    if committed != Some(checkpoint.next) {
                        let _ = consumer.seek(
                            &self.topic,
                            partition,
                            Offset::Offset(checkpoint.next),
                            Duration::from_secs(5),
                        );
                    }
                }
                None => {
                    if let Some(committed) = committed {
                        tracing::warn!(
                            partition,
                            committed,
                            "offset committed without a checkpoint: starting there with no open windows"
                        );
                        task.next = committed;
                        task.committed = Some(committed);
                    }
                    task.snapshots.push_back((task.next, BTreeMap::new()));
                }
            }
            tracing::info!(
                partition,
                next = task.next,
                open_windows = task.aggregator.open_windows(),
                "partition restored"
            );
            self.tasks.insert(partition, task);
        }
        Ok(())
    }

    /// The last record of the checkpoint topic's partition `partition`: the latest complete
    /// checkpoint of that aggregation partition.
    fn last_checkpoint(&self, partition: i32) -> anyhow::Result<Option<PartitionCheckpoint>> {
        let topic = self.options.settings.checkpoint_topic();
        let (low, high) = self
            .reader
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .with_context(|| format!("reading the end of {topic} partition {partition}"))?;
        if high <= low {
            return Ok(None);
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, Offset::Offset(high - 1))
            .context("positioning the checkpoint reader")?;
        self.reader
            .assign(&list)
            .context("assigning the checkpoint reader")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let found = loop {
            match self.reader.poll(Duration::from_millis(500)) {
                // Only this partition's last record: the reader is shared, and every
                // partition of the checkpoint topic has as many records as the others.
                Some(Ok(message))
                    if message.topic() == topic
                        && message.partition() == partition
                        && message.offset() == high - 1 =>
                {
                    let text = message
                        .payload()
                        .and_then(|payload| std::str::from_utf8(payload).ok())
                        .unwrap_or_default();
                    break PartitionCheckpoint::decode(text).with_context(|| {
                        format!("{topic} partition {partition} offset {}", high - 1)
                    })?;
                }
                Some(Ok(_)) | None => {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "reading the last checkpoint of partition {partition} timed out"
                    );
                }
                Some(Err(error)) => tracing::warn!(%error, "checkpoint reader"),
            }
        };
        self.reader
            .unassign()
            .context("releasing the checkpoint reader")?;
        Ok(found)
    }

    /// Re-reads `[task.next, task.replay_until)` into the task.
    fn rebuild(&self, task: &mut Task) -> anyhow::Result<()> {
        if task.next >= task.replay_until {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, task.partition, Offset::Offset(task.next))
            .context("positioning the rebuild reader")?;
        self.reader
            .assign(&list)
            .context("assigning the rebuild reader")?;
        let started = Instant::now();
        let mut replayed = 0u64;
        let mut continuity = Continuity::default();
        let mut heard = Instant::now();
        while task.next < task.replay_until {
            match self.reader.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    // Only this partition's records, in order, from where the rebuild stands.
                    if message.topic() != self.topic || message.partition() != task.partition {
                        continue;
                    }
                    heard = Instant::now();
                    if !continuity.admit(
                        &self.reader,
                        (&self.topic, task.partition),
                        task.next,
                        message.offset(),
                        &self.options.metrics,
                    ) {
                        continue;
                    }
                    if message.offset() >= task.replay_until {
                        break;
                    }
                    self.process(task, &message);
                    replayed += 1;
                }
                Some(Err(error)) => tracing::warn!(%error, "rebuild reader"),
                // Nothing comes: read again from before the expected offset, until a read from
                // before it finds nothing past it.
                None if heard.elapsed() >= Duration::from_secs(1) => {
                    heard = Instant::now();
                    match continuity.stalled(task.next) {
                        Some(to) => reread(
                            &self.reader,
                            &self.topic,
                            task.partition,
                            (task.next, None, to),
                            &self.options.metrics,
                        ),
                        None => {
                            tracing::warn!(
                                partition = task.partition,
                                from = task.next,
                                to = task.replay_until,
                                "records to rebuild open windows from are gone (retention): the windows lack them"
                            );
                            break;
                        }
                    }
                }
                None => {}
            }
        }
        self.reader
            .unassign()
            .context("releasing the rebuild reader")?;
        self.options.metrics.kafka_replayed_records.inc_by(replayed);
        tracing::info!(
            partition = task.partition,
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "open windows rebuilt"
        );
        Ok(())
    }

    fn handle(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        message: &BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        let partition = message.partition();
        // Taking the map out and putting it back is O(1); the task is processed in place.
        let mut tasks = std::mem::take(&mut self.tasks);
        let outcome = match tasks.get_mut(&partition) {
            Some(task) => task
                .continuity
                .admit(
                    consumer,
                    (&self.topic, partition),
                    task.next,
                    message.offset(),
                    &self.options.metrics,
                )
                .then(|| self.process(task, message)),
            None => None,
        };
        self.tasks = tasks;
        if let Some(outcome) = outcome {
            self.options
                .status
                .processed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match outcome {
                Outcome::Dead(class, reason) => {
                    dead_letter(
                        &self.options.producer,
                        &self.options.settings,
                        &self.group,
                        message,
                        class,
                        &reason,
                        &self.options.metrics,
                    )
                    .context("sending a dead letter")?;
                }
                Outcome::Duplicate => {
                    self.options.metrics.kafka_duplicates_skipped.inc();
                }
                Outcome::Late => {
                    self.options.metrics.window_late_events.inc();
                }
                Outcome::Counted | Outcome::Rebuilt => {}
            }
        }
        Ok(())
    }

    /// The wall clock, read once per 256 calls (arrival times need no finer grain).
    fn wall_clock(&self) -> i64 {
        let (mut now, count) = self.clock.get();
        if count.is_multiple_of(256) {
            now = now_us();
        }
        self.clock.set((now, count.wrapping_add(1)));
        now
    }

    fn process(&self, task: &mut Task, message: &impl Message) -> Outcome {
        let offset = message.offset();
        task.next = offset + 1;
        let rebuilding = offset < task.replay_until;
        if self.repartitioned
            && let Some((source_partition, source_offset)) = source_of(message)
        {
            if task
                .sources
                .get(&source_partition)
                .is_some_and(|seen| source_offset <= *seen)
            {
                tracing::trace!(
                    partition = task.partition,
                    offset,
                    source_partition,
                    source_offset,
                    "duplicate skipped"
                );
                return Outcome::Duplicate;
            }
            task.sources.insert(source_partition, source_offset);
        }
        // Bounds from the record's own timestamp, so a rebuild decides as the first pass did.
        let reference_us = message
            .timestamp()
            .to_millis()
            .map_or_else(now_us, |ms| ms.saturating_mul(1000));
        let bounds = TimeBounds {
            min_ts_us: reference_us.saturating_sub(self.options.retention_us),
            max_ts_us: reference_us.saturating_add(self.options.max_skew_us),
        };
        let Some(payload) = message.payload() else {
            return Outcome::Dead("invalid_json", "the record has no value".to_owned());
        };
        let call = match self.options.parser.parse(payload, bounds) {
            Ok(call) => call,
            Err(_) if rebuilding => return Outcome::Rebuilt,
            Err(error) => return Outcome::Dead(error.reason.as_str(), error.message),
        };
        let minute = minute_of(call.ts_us);
        if task.aggregator.is_closed(minute) {
            if rebuilding {
                return Outcome::Rebuilt;
            }
            for api in [call.api.as_ref(), MERCHANT_TOTAL_API] {
                let key = WindowKey {
                    merchant: call.merchant.to_string(),
                    api: api.to_owned(),
                    minute,
                };
                // Already in a record an earlier owner emitted?
                let covered = self.options.store.covers(&key).ok().flatten().is_some_and(
                    |(partition, covers)| partition == task.partition && offset <= covers,
                );
                if covered {
                    tracing::trace!(partition = task.partition, offset, merchant = %key.merchant, api = %key.api, minute, "late call already emitted");
                    continue;
                }
                let entry = task
                    .pending
                    .entry(key)
                    .or_insert_with(|| (Rollup::default(), offset));
                entry.0.record(call.status, call.latency_ms);
                entry.1 = offset;
            }
            tracing::trace!(partition = task.partition, offset, merchant = %call.merchant, minute, "late call pending");
            return Outcome::Late;
        }
        task.aggregator.ingest(
            0,
            call.ts_us,
            &call.merchant,
            &call.api,
            call.status,
            call.latency_ms,
            self.wall_clock(),
        );
        task.first_offset.entry(minute).or_insert(offset);
        Outcome::Counted
    }

    /// Takes the checkpoint writer's results: commits what a written checkpoint covers (for
    /// the partitions still owned) and counts what was emitted. `Ok(false)` when a job failed:
    /// the caller starts over from the last checkpoints.
    fn collect(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        mode: CommitMode,
    ) -> anyhow::Result<bool> {
        while let Some(result) = self.writer.try_result() {
            let (commit, finals, corrections) = match result {
                JobResult::Written {
                    commit,
                    finals,
                    corrections,
                } => (commit, finals, corrections),
                JobResult::Failed(error) => {
                    // Something sent since the last checkpoint may be missing downstream.
                    tracing::error!(%error, "activity or dead-letter delivery failed; rebuilding from the last checkpoint");
                    return Ok(false);
                }
                JobResult::Skipped => continue,
            };
            let metrics = &self.options.metrics;
            metrics.window_closed.inc_by(finals);
            metrics.window_corrections.inc_by(corrections);
            metrics
                .activity_records
                .get_or_create(&KindLabel { kind: "final" })
                .inc_by(finals);
            metrics
                .activity_records
                .get_or_create(&KindLabel { kind: "correction" })
                .inc_by(corrections);
            let mut list = TopicPartitionList::new();
            for (partition, next) in &commit {
                if self.tasks.contains_key(partition) {
                    list.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))
                        .context("building the commit")?;
                }
            }
            if list.count() == 0 {
                continue;
            }
            match consumer.commit(&list, mode) {
                Ok(()) => {
                    for (partition, next) in &commit {
                        if let Some(task) = self.tasks.get_mut(partition) {
                            task.committed = Some(*next);
                        }
                    }
                    metrics.kafka_checkpoints.inc();
                    self.report(consumer, now_us());
                }
                // Not fatal: the next checkpoint commits further, or a new owner rebuilds.
                Err(error) => tracing::warn!(%error, "committing a checkpoint"),
            }
        }
        Ok(true)
    }

    /// Prepares a checkpoint and hands it to the writer (see `writer.rs`). `Ok(false)` when
    /// the broker did not take what an earlier checkpoint covered: the caller starts over from
    /// the last checkpoints.
    fn checkpoint(&mut self, consumer: &BaseConsumer<GroupContext>) -> anyhow::Result<bool> {
        if !self.collect(consumer, CommitMode::Async)? {
            return Ok(false);
        }
        let now = now_us();
        let mut records: Vec<Outgoing> = Vec::new();
        for task in self.tasks.values_mut() {
            task.aggregator.advance(0, now);
            let position = task.next - 1;
            for closed in task.aggregator.take_closed() {
                records.push(Outgoing {
                    key: closed.key,
                    rollup: closed.rollup,
                    correction: false,
                    partition: task.partition,
                    covers: position,
                    open: false,
                });
            }
            let aggregator = &task.aggregator;
            task.first_offset
                .retain(|minute, _| !aggregator.is_closed(*minute));
        }
        let finals = records.len() as u64;
        let mut corrections_deferred = false;
        if self.tasks.values().any(|task| !task.pending.is_empty()) {
            // Corrections add to the replicated rollup: it must hold this instance's own
            // earlier records first, so every earlier checkpoint must be written.
            self.writer.wait_idle();
            if !self.collect(consumer, CommitMode::Async)? {
                return Ok(false);
            }
            let targets: BTreeMap<i32, i64> = delivered_offsets(
                &self.options.producer,
                &self.options.settings.activity_topic,
            )
            .into_iter()
            .map(|(partition, offset)| (partition, offset + 1))
            .collect();
            if self
                .options
                .progress
                .wait_for(&targets, Duration::from_secs(30))
            {
                for task in self.tasks.values_mut() {
                    for (key, (delta, covers)) in task.pending.drain() {
                        let mut total = match self.options.store.replicated(&key) {
                            Ok(Some((stored, partition, stored_covers)))
                                if partition == task.partition =>
                            {
                                if covers <= stored_covers {
                                    continue;
                                }
                                stored
                            }
                            Ok(_) => Rollup::default(),
                            Err(error) => {
                                return Err(anyhow::anyhow!(error))
                                    .context("reading a replicated rollup");
                            }
                        };
                        total.merge(&delta);
                        records.push(Outgoing {
                            key,
                            rollup: total,
                            correction: true,
                            partition: task.partition,
                            covers,
                            open: false,
                        });
                    }
                }
            } else {
                // Late calls still pending must not fall behind a checkpoint (a rebuild
                // would skip them): this round emits its finals but writes no checkpoint.
                tracing::warn!(
                    "the activity replica is behind; corrections and the checkpoint wait for the next round"
                );
                corrections_deferred = true;
            }
        }
        let corrections = records.len() as u64 - finals;
        // Snapshots of the windows still open that changed, for every instance's queries.
        for task in self.tasks.values_mut() {
            let covers = task.next - 1;
            let partition = task.partition;
            task.aggregator
                .drain_dirty(|merchant, api, minute, rollup| {
                    records.push(Outgoing {
                        key: WindowKey {
                            merchant: merchant.to_owned(),
                            api: api.to_owned(),
                            minute,
                        },
                        rollup: rollup.clone(),
                        correction: false,
                        partition,
                        covers,
                        open: true,
                    });
                });
        }
        let mut checkpoints = Vec::new();
        let mut commit = Vec::new();
        if !corrections_deferred {
            for task in self.tasks.values_mut() {
                let checkpoint = task.checkpoint();
                tracing::debug!(
                    partition = task.partition,
                    next = checkpoint.next,
                    replay = checkpoint.replay,
                    watermark_us = checkpoint.watermark_us,
                    "checkpoint prepared"
                );
                checkpoints.push((
                    task.partition,
                    checkpoint.encode().context("encoding a checkpoint")?,
                ));
                commit.push((task.partition, task.next));
            }
        }
        for record in records.iter().filter(|record| !record.open) {
            tracing::trace!(
                partition = record.partition,
                covers = record.covers,
                merchant = %record.key.merchant,
                api = %record.key.api,
                minute = record.key.minute,
                calls = record.rollup.calls,
                correction = record.correction,
                "activity record"
            );
        }
        self.writer.submit(CheckpointJob {
            records,
            checkpoints,
            commit,
            finals,
            corrections,
        })?;
        self.report(consumer, now);
        Ok(true)
    }

    /// Gauges and the consumer status (lag) after a checkpoint.
    fn report(&mut self, consumer: &BaseConsumer<GroupContext>, now: i64) {
        let metrics = &self.options.metrics;
        let open: usize = self
            .tasks
            .values()
            .map(|task| task.aggregator.open_windows())
            .sum();
        metrics.window_open.set(open as i64);
        if let Some(watermark) = self
            .tasks
            .values()
            .map(|task| task.aggregator.watermark_us())
            .filter(|watermark| *watermark > i64::MIN)
            .min()
        {
            metrics
                .window_watermark_delay_seconds
                .set((now - watermark) as f64 / 1e6);
        }
        // The partitions' ends need a round trip each: every few seconds is enough.
        let refresh_ends = self.last_report.elapsed() >= Duration::from_secs(3);
        if refresh_ends {
            self.last_report = Instant::now();
        }
        let positions = self
            .tasks
            .values()
            .map(|task| (task.partition, (task.next, task.committed)))
            .collect();
        self.options.status.report(
            super::ConsumerRole::Aggregate,
            &self.group,
            &self.topic,
            consumer,
            &positions,
            false,
            refresh_ends,
            metrics,
        );
    }
}

/// The source partition and offset a repartitioned record carries.
fn source_of(message: &impl Message) -> Option<(i32, i64)> {
    let headers = message.headers()?;
    let mut partition = None;
    let mut offset = None;
    for header in headers.iter() {
        let text = header
            .value
            .and_then(|value| std::str::from_utf8(value).ok());
        match header.key {
            header::SOURCE_PARTITION => partition = text.and_then(|text| text.parse().ok()),
            header::SOURCE_OFFSET => offset = text.and_then(|text| text.parse().ok()),
            _ => {}
        }
    }
    Some((partition?, offset?))
}

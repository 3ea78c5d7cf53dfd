//! The local replica of the activity topic: every instance reads every partition of the
//! activity topic (outside any group) into its own rollup store, so that any instance answers
//! any query. Records carry the rollup (sketch included) in a header and what they cover in
//! another; [`RollupStore::apply_replicated`] keeps, per window, the version covering most.
//! Positions are stored with the rollups in one atomic batch, so a restart resumes exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mm_kafka::{KafkaSettings, header};
use mm_model::rollup::WindowKey;
use mm_storage::codec;
use mm_storage::health::StorageHealth;
use mm_storage::rollups::{Replicated, RollupStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::broadcast;

use mm_kafka::guard::FetchGuard;
use mm_model::activity::ActivityRecord;
use mm_telemetry::Metrics;

use crate::error::{ClusterError, Result};

/// How far the replica has read: activity partition → next offset to apply.
#[derive(Debug, Default)]
pub struct ReplicaProgress {
    state: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Progress {
    positions: BTreeMap<i32, i64>,
    /// Times the replica found nothing more to read with nothing held back.
    idle: u64,
}

impl ReplicaProgress {
    fn advance(&self, updates: &BTreeMap<i32, i64>) {
        if let Ok(mut state) = self.state.lock() {
            for (partition, next) in updates {
                let entry = state.positions.entry(*partition).or_insert(0);
                *entry = (*entry).max(*next);
            }
        }
        self.changed.notify_all();
    }

    fn idle(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.idle += 1;
        }
        self.changed.notify_all();
    }

    /// [`ReplicaProgress::wait_for`], then, up to `settle`, until the replica has found nothing
    /// more to read: what the consumer was handed with the target records is applied too
    /// (a broker may report an end offset inside the last batch).
    pub fn wait_until_settled(
        &self,
        targets: &BTreeMap<i32, i64>,
        timeout: Duration,
        settle: Duration,
    ) -> bool {
        if !self.wait_for(targets, timeout) {
            return false;
        }
        let deadline = Instant::now() + settle;
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let seen = state.idle;
        while state.idle == seen {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => state = guard,
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits until every partition in `targets` has been applied up to (excluding) its target
    /// offset; `false` on timeout.
    pub fn wait_for(&self, targets: &BTreeMap<i32, i64>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        loop {
            let reached = targets.iter().all(|(partition, target)| {
                state.positions.get(partition).copied().unwrap_or(0) >= *target
            });
            if reached {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => state = guard,
                Err(_) => return false,
            }
        }
    }
}

/// Decodes an activity record (or, with `open`, an open-window snapshot) and its replication
/// headers.
pub fn decode(message: &impl Message, open: bool) -> Option<Replicated> {
    let headers = message.headers()?;
    let mut rollup = None;
    let mut covers = None;
    let mut window = None;
    for header in headers.iter() {
        match header.key {
            header::WINDOW => {
                window =
                    header
                        .value
                        .and_then(mm_kafka::decode_window)
                        .map(|(merchant, api, minute)| WindowKey {
                            merchant: merchant.to_owned(),
                            api: api.to_owned(),
                            minute,
                        })
            }
            header::ROLLUP => {
                rollup = header
                    .value
                    .and_then(|value| codec::decode_rollup(value).ok())
            }
            header::COVERS => {
                covers = header
                    .value
                    .and_then(|value| std::str::from_utf8(value).ok())
                    .and_then(|text| text.split_once(':'))
                    .and_then(|(partition, offset)| {
                        Some((partition.parse::<i32>().ok()?, offset.parse::<i64>().ok()?))
                    });
            }
            _ => {}
        }
    }
    let (rollup, _) = rollup?;
    let (partition, covers) = covers?;
    let key = match window {
        Some(key) => key,
        // Records written without the window header: the JSON value names the window.
        None => {
            let value: ActivityRecord = serde_json::from_slice(message.payload()?).ok()?;
            let minute = mm_model::time::parse_rfc3339(&value.window_start).ok()?
                / mm_model::time::MICROS_PER_MINUTE;
            WindowKey {
                merchant: value.merchant,
                api: value.api,
                minute,
            }
        }
    };
    Some(Replicated {
        key,
        rollup,
        partition,
        covers,
        open,
    })
}

/// Which topic a replica reads, and what it does besides storing.
pub struct ReplicaSource {
    pub topic: String,
    /// Open-window snapshots rather than activity records.
    pub open: bool,
    /// Progress to publish (the activity topic's, which corrections wait for).
    pub progress: Option<Arc<ReplicaProgress>>,
    /// Where server-sent-event subscribers listen (activity records only).
    pub activity: Option<broadcast::Sender<Arc<ActivityRecord>>>,
    pub metrics: Arc<Metrics>,
    /// Where the replica reports that its store cannot write (and that it can again).
    pub health: Arc<StorageHealth>,
}

/// How long the replica waits before reading again after its store refused a write.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Sleeps for `duration`, or less once `stop` is set.
fn wait(stop: &AtomicBool, duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the replica until `stop`; applies batches of at most `BATCH` records or 50 ms.
pub fn run(
    settings: KafkaSettings,
    source: ReplicaSource,
    store: Arc<RollupStore>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    const BATCH: usize = 5_000;
    let ReplicaSource {
        topic,
        open,
        progress,
        activity,
        metrics,
        health,
    } = source;
    let component = if open {
        "open-window replica"
    } else {
        "replica"
    };
    let progress = progress.unwrap_or_default();
    let mut consumer: BaseConsumer = settings
        .reader("merchant-monitor-replica")
        .create()
        .map_err(ClusterError::kafka(
            "creating the activity replica consumer",
        ))?;
    let partitions = loop {
        match partition_count(&consumer, &topic) {
            Ok(count) if count > 0 => break count,
            Ok(_) | Err(_) if stop.load(Ordering::Acquire) => return Ok(()),
            Ok(_) => tracing::info!(%topic, "waiting for the topic to exist"),
            Err(error) => tracing::warn!(%topic, %error, "reading topic metadata"),
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let stored = assign_from_store(&consumer, &store, &topic, partitions)?;
    progress.advance(&stored);
    // The next offset expected per partition, to notice records the consumer skips.
    let mut expected = stored;
    let mut guard = FetchGuard::new(
        &topic,
        settings.fetch_guard,
        metrics.kafka_fetch_gaps.clone(),
    );
    tracing::info!(%topic, partitions, "replica started");

    let mut batch: Vec<Replicated> = Vec::with_capacity(BATCH);
    let mut records: Vec<Arc<ActivityRecord>> = Vec::new();
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut batch_started = Instant::now();
    let mut reseek_at: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        // A client that lived through a broker restart may not see what the broker takes
        // afterwards: once nothing is held back, a new one reads on from what the store has
        // applied.
        if reseek_at.is_some_and(|at| Instant::now() >= at) && batch.is_empty() {
            reseek_at = None;
            consumer = settings
                .reader("merchant-monitor-replica")
                .create()
                .map_err(ClusterError::kafka(
                    "creating the activity replica consumer",
                ))?;
            expected = match assign_from_store(&consumer, &store, &topic, partitions) {
                Ok(expected) => expected,
                Err(ClusterError::Storage { source, .. }) => {
                    health.report_failure(component, source.is_disk_full(), source.to_string());
                    wait(&stop, STORE_RETRY);
                    reseek_at = Some(Instant::now());
                    continue;
                }
                Err(error) => return Err(error),
            };
            guard = FetchGuard::new(
                &topic,
                settings.fetch_guard,
                metrics.kafka_fetch_gaps.clone(),
            );
            tracing::info!(%topic, "replica reconnected after losing the broker");
        }
        guard.check_quiet(
            &consumer,
            expected.iter().map(|(partition, next)| (*partition, *next)),
        );
        let polled = consumer.poll(Duration::from_millis(20));
        let nothing_came = polled.is_none();
        match polled {
            Some(Ok(message)) => 'record: {
                let partition = message.partition();
                if let Some(next) = expected.get(&partition)
                    && !guard.admit(&consumer, partition, *next, message.offset())
                {
                    break 'record;
                }
                expected.insert(partition, message.offset() + 1);
                positions.insert(partition, message.offset() + 1);
                match decode(&message, open) {
                    Some(replicated) => batch.push(replicated),
                    None => tracing::warn!(
                        partition = message.partition(),
                        offset = message.offset(),
                        "skipping an activity record without replication headers"
                    ),
                }
                if let Some(activity) = &activity
                    && activity.receiver_count() > 0
                    && let Some(record) = message
                        .payload()
                        .and_then(|payload| serde_json::from_slice(payload).ok())
                {
                    records.push(Arc::new(record));
                }
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "activity replica consumer");
                if super::group::broker_lost(&error) {
                    reseek_at = Some(Instant::now() + Duration::from_secs(2));
                }
            }
            None => {}
        }
        let due = batch.len() >= BATCH
            || (!positions.is_empty() && batch_started.elapsed() >= Duration::from_millis(50));
        if due {
            let updates: Vec<(i32, i64)> = positions.iter().map(|(p, o)| (*p, *o)).collect();
            if let Err(error) = store.apply_replicated(std::mem::take(&mut batch), &topic, &updates)
            {
                // A state to leave, not an end: what was not applied is read again from the
                // topic, from the positions the store holds, once it takes writes again.
                if health.report_failure(component, error.is_disk_full(), error.to_string()) {
                    tracing::error!(%topic, %error, "the replica store cannot write; reading again from its positions once it can");
                }
                positions.clear();
                records.clear();
                wait(&stop, STORE_RETRY);
                reseek_at = Some(Instant::now());
                continue;
            }
            if health.report_recovered(component) {
                tracing::info!(%topic, "the replica store takes writes again");
            }
            progress.advance(&positions);
            positions.clear();
            caught_up(&consumer, &topic, &progress);
            if let Some(activity) = &activity {
                for record in records.drain(..) {
                    let _ = activity.send(record);
                }
            }
            batch_started = Instant::now();
        } else if positions.is_empty() {
            // Nothing held back: where the consumer stands is what the store has applied
            // (this moves past records the topic no longer has, or that never came).
            caught_up(&consumer, &topic, &progress);
            batch_started = Instant::now();
        }
        if nothing_came && positions.is_empty() {
            progress.idle();
        }
    }
    Ok(())
}

/// Assigns every partition of `topic`, each from the position the store has applied (from the
/// beginning when it has none); returns those positions.
fn assign_from_store(
    consumer: &BaseConsumer,
    store: &RollupStore,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>> {
    let applied = store
        .replica_positions(topic)
        .map_err(ClusterError::storage("reading replica positions"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let offset = applied
            .get(&partition)
            .map_or(Offset::Beginning, |next| Offset::Offset(*next));
        assignment
            .add_partition_offset(topic, partition, offset)
            .map_err(ClusterError::kafka("building the replica assignment"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(ClusterError::kafka(format!(
            "assigning the partitions of {topic}"
        )))?;
    Ok(applied)
}

/// With nothing held back, the consumer's positions are what the store has applied.
fn caught_up(consumer: &BaseConsumer, topic: &str, progress: &ReplicaProgress) {
    if let Ok(position) = consumer.position() {
        let reached: BTreeMap<i32, i64> = position
            .elements_for_topic(topic)
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(next) => Some((element.partition(), next)),
                _ => None,
            })
            .collect();
        progress.advance(&reached);
    }
}

/// Partitions of `topic`, 0 when it does not exist yet.
pub fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
) -> Result<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(ClusterError::kafka(format!("fetching metadata of {topic}")))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic && candidate.error().is_none())
        .map_or(0, |found| found.partitions().len() as i32))
}

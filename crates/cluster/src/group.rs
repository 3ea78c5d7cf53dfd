//! What the group consumers share: a context that records assignment changes for the
//! consuming thread, dead-letter producing, and the consumer status behind
//! `GET /v1/admin/consumers` and the lag metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mm_kafka::delivery::send_blocking;
use mm_kafka::{DeadLetter, KafkaSettings, TrackedProducer};
pub use mm_telemetry::consumers::{ClusterStatus, ConsumerRole, ConsumerStatus, PartitionStatus};
use mm_telemetry::{ErrorClassLabel, Metrics, PartitionLabel};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;

/// An assignment change, as the consuming thread learns of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Records rebalances of one topic for the thread that polls the consumer.
pub struct GroupContext {
    topic: String,
    changes: Mutex<Vec<Change>>,
    /// Whether `changes` may hold something: the consuming thread asks after every poll, and
    /// a flag is cheaper than the lock.
    changed: AtomicBool,
    /// Runs before partitions are given up.
    before_revoke: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for GroupContext {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GroupContext")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl GroupContext {
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            changes: Mutex::new(Vec::new()),
            changed: AtomicBool::new(false),
            before_revoke: None,
        }
    }

    /// Runs `hook` in the rebalance callback before any partition is given up.
    pub fn before_revoke(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.before_revoke = Some(Box::new(hook));
        self
    }

    /// Changes since the last call, in order.
    pub fn take_changes(&self) -> Vec<Change> {
        if !self.changed.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.changes
            .lock()
            .map(|mut changes| std::mem::take(&mut *changes))
            .unwrap_or_default()
    }

    fn partitions(&self, list: &rdkafka::TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.topic)
            .iter()
            .map(|element| element.partition())
            .collect()
    }

    fn push(&self, change: Change) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.push(change);
        }
        self.changed.store(true, Ordering::Release);
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            if let Some(hook) = &self.before_revoke {
                hook();
            }
            let partitions = self.partitions(list);
            tracing::info!(topic = %self.topic, ?partitions, "partitions revoked");
            self.push(Change::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.partitions(list);
                tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
                self.push(Change::Assigned(partitions));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(topic = %self.topic, %error, "rebalance error")
            }
        }
    }
}

/// Sends `message` to the dead-letter topic with its origin and reason.
pub fn dead_letter(
    producer: &TrackedProducer,
    settings: &KafkaSettings,
    group: &str,
    message: &impl Message,
    error_class: &'static str,
    error_message: &str,
    metrics: &Metrics,
) -> Result<(), mm_kafka::DeliveryError> {
    let letter = DeadLetter {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        group,
        error_class,
        error_message,
    };
    let mut headers = OwnedHeaders::new_with_capacity(7);
    for (name, value) in letter.headers() {
        headers = headers.insert(rdkafka::message::Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(&settings.dlq_topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    send_blocking(producer, record)?;
    metrics
        .kafka_dead_letters
        .get_or_create(&ErrorClassLabel { error_class })
        .inc();
    Ok(())
}

/// Publishes a consumer's position, lag and pause state to `status` as member `member` of its
/// role (and the lag metric); with
/// `refresh_ends`, asks the broker for each partition's end first (else the last known end is
/// used).
#[allow(clippy::too_many_arguments)]
pub fn report<C: ConsumerContext>(
    status: &ClusterStatus,
    (role, member): (ConsumerRole, u32),
    group: &str,
    topic: &str,
    consumer: &BaseConsumer<C>,
    positions: &BTreeMap<i32, (i64, Option<i64>)>,
    paused: bool,
    refresh_ends: bool,
    metrics: &Metrics,
) {
    let known_ends: BTreeMap<i32, i64> = status
        .consumer(role)
        .map(|previous| {
            previous
                .partitions
                .iter()
                .map(|partition| (partition.partition, partition.high_watermark))
                .collect()
        })
        .unwrap_or_default();
    let mut partitions = Vec::with_capacity(positions.len());
    for (partition, (position, committed)) in positions {
        let known = known_ends.get(partition).copied();
        let high = match known {
            Some(known) if !refresh_ends => known.max(*position),
            _ => consumer
                .fetch_watermarks(topic, *partition, Duration::from_millis(500))
                .map_or(*position, |(_, high)| high),
        };
        let lag = (high - position).max(0);
        metrics
            .kafka_consumer_lag
            .get_or_create(&PartitionLabel {
                group: group.to_owned(),
                topic: topic.to_owned(),
                partition: *partition,
            })
            .set(lag);
        partitions.push(PartitionStatus {
            partition: *partition,
            position: *position,
            committed: *committed,
            high_watermark: high,
            lag,
            paused,
        });
    }
    let previous = status.publish(
        member,
        ConsumerStatus {
            role,
            group: group.to_owned(),
            topic: topic.to_owned(),
            partitions,
        },
    );
    // Partitions no longer owned here (by any member of the role) keep no lag here.
    let owned: Vec<i32> = status
        .consumer(role)
        .map(|now| now.partitions.iter().map(|p| p.partition).collect())
        .unwrap_or_default();
    for gone in previous
        .iter()
        .flat_map(|previous| &previous.partitions)
        .filter(|old| !owned.contains(&old.partition))
    {
        metrics.kafka_consumer_lag.remove(&PartitionLabel {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition: gone.partition,
        });
    }
}

/// How a consumer session ended.
pub(super) enum Session {
    Stopped,
    BrokerLost,
}

/// Whether `error` says the connection to the brokers was lost.
pub(super) fn broker_lost(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode;
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
    )
}

//! What the group consumers share: a context that records assignment changes for the
//! consuming thread, dead-letter producing, and the consumer status behind
//! `GET /v1/admin/consumers` and the lag metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
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

/// What to do with a record, given the offset its partition's consumer expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The expected record: process it.
    Next,
    /// Before the expected one (a re-delivery after seeking back): drop it.
    Behind,
    /// Records were skipped: drop this one and seek to the offset given, then read on.
    Reread(i64),
    /// Reading went on from before the expected offset straight to this record: the offsets
    /// between hold no records (transaction markers, compaction). Process it.
    Gap,
}

/// Guards one partition's consumption against skipped records.
///
/// A record past the next offset expected means either that the offsets between hold no
/// records, or that the consumer was handed less than the log holds. The second happens
/// with brokers that answer a fetch starting inside a record batch with the next batch
/// (tansu 0.6 does) — after every seek, restart from a committed offset or rebalance that
/// lands inside a batch — and counting windows or committing input offsets past such a hole
/// would lose its records for good. So the consumer seeks back, further each time (the batch
/// start is not known), and drops what comes before the expected offset; the hole is taken
/// as real only when a read that started before it runs straight past it.
///
/// The same answer leaves a consumer with nothing at all when the batch it starts in is the
/// partition's last: a partition that makes no progress is read again the same way
/// ([`Continuity::stalled`]), until a read from before the expected offset comes back with
/// nothing past it.
#[derive(Debug, Default)]
pub struct Continuity {
    suspect: Option<Suspect>,
    /// The expected offset at the last periodic check for progress.
    checked: Option<i64>,
}

#[derive(Debug)]
struct Suspect {
    /// The offset expected when the hole showed.
    expected: i64,
    /// How far before it the last seek went.
    distance: i64,
    /// Whether a record before `expected` came since that seek.
    before: bool,
}

impl Continuity {
    /// How far before the expected offset the first seek goes.
    const FIRST_DISTANCE: i64 = 64;

    /// What to do with the record at `offset` when `expected` is due.
    pub fn check(&mut self, expected: i64, offset: i64) -> Position {
        if offset == expected {
            self.suspect = None;
            return Position::Next;
        }
        if offset < expected {
            if let Some(suspect) = &mut self.suspect
                && suspect.expected == expected
            {
                suspect.before = true;
            }
            return Position::Behind;
        }
        match &mut self.suspect {
            // Read straight across the hole, or nothing before it is left to read.
            Some(suspect)
                if suspect.expected == expected
                    && (suspect.before || suspect.distance >= expected) =>
            {
                self.suspect = None;
                Position::Gap
            }
            Some(suspect) if suspect.expected == expected => Position::Reread(suspect.further()),
            _ => Position::Reread(self.suspect_from(expected)),
        }
    }

    /// The partition made no progress at `expected`: where to read from again, or `None` when
    /// a read from before `expected` already found nothing past it (or there is nothing
    /// before it).
    pub fn stalled(&mut self, expected: i64) -> Option<i64> {
        match &mut self.suspect {
            Some(suspect) if suspect.expected == expected => {
                (!suspect.before && suspect.distance < expected).then(|| suspect.further())
            }
            _ => Some(self.suspect_from(expected)),
        }
    }

    /// [`Continuity::check`], acted on: `true` to process the record; seeks back itself when
    /// records were skipped.
    pub fn admit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        (topic, partition): (&str, i32),
        expected: i64,
        offset: i64,
        metrics: &Metrics,
    ) -> bool {
        match self.check(expected, offset) {
            Position::Next => true,
            Position::Gap => {
                tracing::info!(
                    topic,
                    partition,
                    from = expected,
                    to = offset,
                    "offsets without records"
                );
                true
            }
            Position::Behind => false,
            Position::Reread(to) => {
                reread(
                    consumer,
                    topic,
                    partition,
                    (expected, Some(offset), to),
                    metrics,
                );
                false
            }
        }
    }

    /// For a check every [`QUIET`]: whether the partition still expects what it expected at
    /// the last check.
    pub fn made_no_progress(&mut self, expected: i64) -> bool {
        self.checked.replace(expected) == Some(expected)
    }

    /// Starts suspecting a hole at `expected`; returns where to read from.
    fn suspect_from(&mut self, expected: i64) -> i64 {
        self.suspect = Some(Suspect {
            expected,
            distance: Self::FIRST_DISTANCE,
            before: false,
        });
        (expected - Self::FIRST_DISTANCE).max(0)
    }
}

impl Suspect {
    /// Twice as far back as the last seek; returns where to read from.
    fn further(&mut self) -> i64 {
        self.distance = self.distance.saturating_mul(2);
        self.before = false;
        (self.expected - self.distance).max(0)
    }
}

/// How often partitions are checked for making no progress.
pub const QUIET: Duration = Duration::from_secs(3);

/// For a partition that made no progress for [`QUIET`]: reads it again from before `expected`
/// (the broker's end offset cannot tell: the test broker reports the start of the last batch),
/// until a read from before it finds nothing past it.
pub fn unstick<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    expected: i64,
    continuity: &mut Continuity,
    metrics: &Metrics,
) {
    if let Some(to) = continuity.stalled(expected) {
        reread(consumer, topic, partition, (expected, None, to), metrics);
    }
}

/// Seeks `partition` to `to`, before `expected`, after [`Position::Reread`] (`handed`: the
/// record that came instead) or for a quiet partition.
pub fn reread<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    (expected, handed, to): (i64, Option<i64>, i64),
    metrics: &Metrics,
) {
    metrics.kafka_fetch_gaps.inc();
    tracing::debug!(
        topic,
        partition,
        expected,
        ?handed,
        to,
        "reading again from before the expected offset"
    );
    if let Err(error) = consumer.seek(
        topic,
        partition,
        rdkafka::Offset::Offset(to),
        Duration::from_secs(5),
    ) {
        // The next record past the hole asks again.
        tracing::warn!(topic, partition, %error, "seeking back");
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

/// Publishes a consumer's position, lag and pause state to `status` (and the lag metric); with
/// `refresh_ends`, asks the broker for each partition's end first (else the last known end is
/// used).
#[allow(clippy::too_many_arguments)]
pub fn report<C: ConsumerContext>(
    status: &ClusterStatus,
    role: ConsumerRole,
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
    let previous = status.publish(ConsumerStatus {
        role,
        group: group.to_owned(),
        topic: topic.to_owned(),
        partitions,
    });
    // Partitions no longer owned keep no lag here.
    for gone in previous
        .iter()
        .flat_map(|previous| &previous.partitions)
        .filter(|old| !positions.contains_key(&old.partition))
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

#[cfg(test)]
mod tests {
    use super::{Continuity, Position};

    #[test]
    fn records_in_order_are_processed_and_re_deliveries_dropped() {
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(5, 5), Position::Next);
        assert_eq!(continuity.check(6, 4), Position::Behind);
        assert_eq!(continuity.check(6, 6), Position::Next);
    }

    #[test]
    fn a_hole_is_read_again_from_further_back_until_the_expected_record_comes() {
        let mut continuity = Continuity::default();
        // Handed the next batch: seek back before the expected offset.
        assert_eq!(continuity.check(1000, 1300), Position::Reread(936));
        // The broker answers with the same batch again (the expected one starts earlier).
        assert_eq!(continuity.check(1000, 1300), Position::Reread(872));
        // Now the batch holding 1000 comes: what precedes 1000 is dropped.
        assert_eq!(continuity.check(1000, 900), Position::Behind);
        assert_eq!(continuity.check(1000, 999), Position::Behind);
        assert_eq!(continuity.check(1000, 1000), Position::Next);
        assert_eq!(continuity.check(1001, 1001), Position::Next);
    }

    #[test]
    fn a_hole_read_straight_across_is_real() {
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(50, 52), Position::Reread(0));
        assert_eq!(continuity.check(50, 49), Position::Behind);
        assert_eq!(continuity.check(50, 52), Position::Gap);
        // A new hole starts over.
        assert_eq!(continuity.check(53, 60), Position::Reread(0));
    }

    #[test]
    fn a_quiet_partition_is_read_again_until_a_read_from_before_finds_nothing_past() {
        let mut continuity = Continuity::default();
        assert_eq!(continuity.stalled(1000), Some(936));
        // Still nothing: further back.
        assert_eq!(continuity.stalled(1000), Some(872));
        // Records before 1000 came, then nothing: the broker has nothing readable past it.
        assert_eq!(continuity.check(1000, 990), Position::Behind);
        assert_eq!(continuity.stalled(1000), None);
        assert_eq!(continuity.stalled(1000), None);
        // The expected record after all (the batch holding it came).
        assert_eq!(continuity.check(1000, 1000), Position::Next);
        assert_eq!(continuity.stalled(1001), Some(937));
        // Nothing before offset 10 to read but offset 0 onwards, once.
        let mut continuity = Continuity::default();
        assert_eq!(continuity.stalled(10), Some(0));
        assert_eq!(continuity.stalled(10), None);
    }

    #[test]
    fn no_progress_means_the_same_expected_offset_at_two_checks_in_a_row() {
        let mut continuity = Continuity::default();
        assert!(!continuity.made_no_progress(10));
        assert!(continuity.made_no_progress(10));
        assert!(!continuity.made_no_progress(12));
        assert!(continuity.made_no_progress(12));
    }

    #[test]
    fn a_hole_at_the_start_of_the_log_is_real_once_there_is_nothing_before_it() {
        // Retention deleted everything before 500: the first record is 500.
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(10, 500), Position::Reread(0));
        assert_eq!(continuity.check(10, 500), Position::Gap);
        let mut continuity = Continuity::default();
        assert_eq!(continuity.check(0, 500), Position::Reread(0));
        assert_eq!(continuity.check(0, 500), Position::Gap);
    }
}

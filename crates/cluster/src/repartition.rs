//! The repartition consumer: reads the input topic in the user's group, sets aside what cannot
//! be parsed (dead-letter topic), and re-keys every other record by merchant account into the
//! internal repartition topic, partitioned with the Java client's murmur2 so that producers
//! that key by merchant the same way could write there directly.
//!
//! Each re-keyed record carries its source partition and offset in headers: after a crash the
//! input is re-read from the last commit and records are produced again, and the aggregation
//! consumer skips a record whose source offset it has already counted. Input offsets are
//! committed only after the broker has every record produced for them.
//!
//! Backpressure: when more than `max_in_flight` records wait for the broker, the consumer
//! pauses its partitions until half of them are delivered; nothing buffers without bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mm_kafka::delivery::{flush, send_blocking};
use mm_kafka::{KafkaSettings, TrackedProducer, header, partition_for};
use mm_model::mapping::EventParser;
use mm_telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::group::{Change, ClusterStatus, GroupContext, Session, dead_letter};
use super::replica::partition_count;
use crate::aggregate::partition::Decode;
use crate::decode::{RecordDecoder, encode_binary, input_record};
use crate::error::{ClusterError, Result};
use mm_kafka::guard::FetchGuard;

/// Everything the repartition consumer needs.
pub struct RepartitionOptions {
    pub settings: KafkaSettings,
    pub commit_interval: Duration,
    pub retention_us: i64,
    pub max_skew_us: i64,
    pub parser: Arc<EventParser>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<ClusterStatus>,
    pub producer: Arc<TrackedProducer>,
    pub stop: Arc<AtomicBool>,
    pub client_id: String,
}

/// Runs the repartition consumer until `stop`, then commits and leaves the group.
pub fn run(options: RepartitionOptions) -> Result<()> {
    let settings = &options.settings;
    let input = settings.input_topic.clone();
    let target = settings.repartition_topic();
    let group = settings.group_id.clone();
    loop {
        let consumer: BaseConsumer<GroupContext> = settings
            .group_consumer(&group, &options.client_id)
            .create_with_context(GroupContext::new(&input))
            .map_err(ClusterError::kafka("creating the repartition consumer"))?;
        let partitions = loop {
            match partition_count(&consumer, &target) {
                Ok(count) if count > 0 => break count as u32,
                _ if options.stop.load(Ordering::Acquire) => return Ok(()),
                _ => std::thread::sleep(Duration::from_secs(1)),
            }
        };
        consumer
            .subscribe(&[&input])
            .map_err(ClusterError::kafka(format!("subscribing to {input}")))?;
        tracing::info!(%input, %target, %group, "repartition consumer started");
        match session(&options, &consumer, &input, &target, &group, partitions)? {
            Session::Stopped => {
                consumer.unsubscribe();
                tracing::info!("repartition consumer left the group");
                return Ok(());
            }
            Session::BrokerLost => {
                // Records after the last commit are read again; the aggregation consumer
                // skips the ones it already counted.
                tracing::warn!("the broker did not take re-keyed records: reconnecting");
                drop(consumer);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn session(
    options: &RepartitionOptions,
    consumer: &BaseConsumer<GroupContext>,
    input: &str,
    target: &str,
    group: &str,
    partitions: u32,
) -> Result<Session> {
    let decoder = RecordDecoder {
        parser: options.parser.clone(),
        retention_us: options.retention_us,
        max_skew_us: options.max_skew_us,
    };
    // Next offset to commit per owned partition, and the last committed.
    let mut positions: BTreeMap<i32, (i64, Option<i64>)> = BTreeMap::new();
    let mut guard = FetchGuard::new(
        input,
        options.settings.fetch_guard,
        options.metrics.kafka_fetch_gaps.clone(),
    );
    let mut paused = false;
    let mut next_commit = Instant::now() + options.commit_interval;
    let producer = &options.producer;
    loop {
        let stopping = options.stop.load(Ordering::Acquire);
        if !stopping {
            let polled = consumer.poll(Duration::from_millis(50));
            for change in consumer.context().take_changes() {
                match change {
                    Change::Assigned(assigned) => {
                        // Where reading starts, so that a record past it is noticed.
                        let committed = committed_offsets(consumer, input, &assigned);
                        for partition in assigned {
                            let start = committed.get(&partition).copied();
                            positions.insert(partition, (start.unwrap_or(-1), start));
                            guard.forget(partition);
                        }
                        if paused {
                            set_paused(consumer, input, &positions, true);
                        }
                    }
                    Change::Revoked(revoked) => {
                        for partition in revoked {
                            positions.remove(&partition);
                            guard.forget(partition);
                        }
                    }
                }
            }
            match polled {
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let expected = positions.get(&partition).map_or(-1, |position| position.0);
                    // Until the first record, where the partition starts is not known.
                    if expected < 0 || guard.admit(consumer, partition, expected, message.offset())
                    {
                        forward(options, &decoder, (group, target, partitions), &message)?;
                        positions.entry(partition).or_insert((-1, None)).0 = message.offset() + 1;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(error)) => tracing::warn!(%error, "repartition consumer"),
            }
            // Backpressure on the broker's pace.
            let in_flight = producer.in_flight_count().max(0) as usize;
            let limit = options.status.max_in_flight().max(1);
            if !paused && in_flight > limit {
                paused = true;
                set_paused(consumer, input, &positions, true);
                options
                    .metrics
                    .kafka_paused_partitions
                    .set(positions.len() as i64);
            } else if paused && in_flight <= limit / 2 {
                paused = false;
                set_paused(consumer, input, &positions, false);
                options.metrics.kafka_paused_partitions.set(0);
            }
            // A partition that made no progress since the last check (paused ones wait).
            if !paused {
                guard.check_quiet(
                    consumer,
                    positions
                        .iter()
                        .filter(|(_, (next, _))| *next >= 0)
                        .map(|(partition, (next, _))| (*partition, *next)),
                );
            }
        }
        if stopping || Instant::now() >= next_commit {
            if !commit(consumer, input, producer, &mut positions)? {
                return Ok(Session::BrokerLost);
            }
            super::group::report(
                &options.status,
                (super::ConsumerRole::Repartition, 0),
                group,
                input,
                consumer,
                &positions
                    .iter()
                    .map(|(partition, (next, committed))| {
                        (*partition, ((*next).max(0), *committed))
                    })
                    .collect(),
                paused,
                true,
                &options.metrics,
            );
            next_commit = Instant::now() + options.commit_interval;
        }
        if stopping {
            return Ok(Session::Stopped);
        }
    }
}

/// The committed offsets of `partitions` of `topic`; none when they cannot be read (the
/// first record read then sets where the partition stands).
fn committed_offsets(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    partitions: &[i32],
) -> BTreeMap<i32, i64> {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    match consumer.committed_offsets(list, Duration::from_secs(10)) {
        Ok(committed) => committed
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "reading committed input offsets");
            BTreeMap::new()
        }
    }
}

fn set_paused(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    positions: &BTreeMap<i32, (i64, Option<i64>)>,
    pause: bool,
) {
    let mut list = TopicPartitionList::new();
    for partition in positions.keys() {
        list.add_partition(topic, *partition);
    }
    let result = if pause {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    match result {
        Ok(()) => tracing::debug!(pause, "backpressure"),
        Err(error) => tracing::warn!(%error, pause, "pausing or resuming partitions"),
    }
}

/// Commits what the broker has every re-keyed record for; `Ok(false)` when the broker did
/// not take them (the caller starts over from the last commit).
fn commit(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    producer: &TrackedProducer,
    positions: &mut BTreeMap<i32, (i64, Option<i64>)>,
) -> Result<bool> {
    let mut list = TopicPartitionList::new();
    for (partition, (next, committed)) in positions.iter() {
        if *next >= 0 && Some(*next) != *committed {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(ClusterError::kafka("building the commit"))?;
        }
    }
    if list.count() == 0 {
        return Ok(true);
    }
    if let Err(error) = flush(producer, Duration::from_secs(60)) {
        // Not committing re-reads the records from the last commit; the aggregation
        // consumer skips the ones it already has.
        tracing::error!(%error, "re-keyed records not delivered; the input is read again from the last commit");
        return Ok(false);
    }
    match consumer.commit(&list, CommitMode::Sync) {
        Ok(()) => {
            for element in list.elements() {
                if let (Some(entry), Offset::Offset(offset)) =
                    (positions.get_mut(&element.partition()), element.offset())
                {
                    entry.1 = Some(offset);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "committing input offsets"),
    }
    Ok(true)
}

fn forward(
    options: &RepartitionOptions,
    decoder: &RecordDecoder,
    (group, target, partitions): (&str, &str, u32),
    message: &BorrowedMessage<'_>,
) -> Result<()> {
    let call = match decoder.decode(&input_record(message, false)) {
        Ok(call) => call,
        Err(rejected) => {
            dead_letter(
                &options.producer,
                &options.settings,
                group,
                message,
                rejected.class,
                &rejected.message,
                &options.metrics,
            )
            .map_err(ClusterError::delivery("sending a dead letter"))?;
            return Ok(());
        }
    };
    // Parsed once: the aggregation consumer decodes this instead of parsing the JSON again.
    let payload = encode_binary(&call);
    let merchant = call.merchant.as_bytes();
    let source_partition = message.partition().to_string();
    let source_offset = message.offset().to_string();
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(rdkafka::message::Header {
            key: header::FORMAT,
            value: Some(header::EVENT_V1.as_bytes()),
        })
        .insert(rdkafka::message::Header {
            key: header::SOURCE_PARTITION,
            value: Some(source_partition.as_bytes()),
        })
        .insert(rdkafka::message::Header {
            key: header::SOURCE_OFFSET,
            value: Some(source_offset.as_bytes()),
        });
    // The producer's trace goes on with the re-keyed record (read only while spans are
    // exported: a header lookup per record otherwise saved).
    let trace = if mm_trace::exporting() {
        mm_kafka::trace::record_context(message)
    } else {
        None
    };
    let headers = mm_kafka::trace::with_context(headers, trace.as_ref());
    let mut record = BaseRecord::to(target)
        .key(merchant)
        .payload(payload.as_slice())
        .partition(partition_for(merchant, partitions))
        .headers(headers);
    if let Some(timestamp) = message.timestamp().to_millis() {
        record = record.timestamp(timestamp);
    }
    send_blocking(&options.producer, record)
        .map_err(ClusterError::delivery("producing a re-keyed record"))?;
    Ok(())
}

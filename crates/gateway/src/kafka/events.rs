//! The event log of cluster mode: one Kafka topic per event type.
//!
//! Each event is one record on the partition the gateway chose (so a Kafka producer keyed the
//! same way agrees): key = the partition key (`hash` strategy; none otherwise), value = the
//! event as the embedded log stores it (its fields, then the enriched metadata), headers =
//! the metadata again ([`mm_kafka::header`]'s `mm.eid`, `mm.event_type`, `mm.version`,
//! `mm.occurred_at`, `mm.received_at`, `mm.flow_id`), so consumers can route without parsing.
//! Offsets are the topic's offsets. An append is answered once every record is acknowledged
//! by all in-sync replicas (idempotent producer, `acks=all`); when a batch fails part way, the
//! records acknowledged before the failure stay on the topic (the batch is reported failed at
//! the `publishing` step, as Nakadi does: such events may have been published).
//!
//! Reads position a consumer by hand. Some brokers (the test broker, tansu 0.6) answer a fetch
//! that starts inside a record batch with the *next* batch, and report the start of a
//! partition's last batch as its end; a read therefore takes records only in unbroken offset
//! order and, when a record comes past the one expected, starts again further back (the same
//! remedy as the aggregation consumers' fetch guard, `mm_kafka::guard`). With
//! `kafka.fetch_guard = false` a read trusts the broker's end and returns at once there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mm_kafka::KafkaSettings;
use mm_kafka::header;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{create_topic, event_topic};
use crate::log::{BatchContext, LogError, Record, Stored};

/// How long an append may wait for room in the producer's queue before it is refused as busy.
const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Readers kept for reuse.
const POOLED_READERS: usize = 8;
/// How often followers look for events other instances published.
const FOLLOW_TICK: Duration = Duration::from_millis(200);
/// A read that gets nothing for this long has reached the end.
const READ_IDLE: Duration = Duration::from_millis(250);
/// A read returns what it has after this long.
const READ_LIMIT: Duration = Duration::from_secs(5);

fn storage(context: &str, error: impl std::fmt::Display) -> LogError {
    LogError::Storage(format!("{context}: {error}"))
}

/// The event topics of one deployment.
pub struct KafkaEvents {
    settings: KafkaSettings,
    producer: FutureProducer,
    readers: Mutex<Vec<BaseConsumer>>,
    /// Per (topic, partition): the broker's end at the last read that reached the end, and the
    /// offset after the last record then. While the broker's end stays, nothing was added, and
    /// a read from there returns at once instead of waiting out [`READ_IDLE`].
    ends: Mutex<HashMap<(String, i32), (i64, i64)>>,
    /// Topics known to exist.
    topics: tokio::sync::Mutex<HashSet<String>>,
    appended: Arc<tokio::sync::watch::Sender<u64>>,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl KafkaEvents {
    pub fn open(settings: &KafkaSettings) -> Result<Self, LogError> {
        let producer: FutureProducer = settings
            .producer("merchant-monitor-gateway")
            .create()
            .map_err(|error| storage("creating the gateway producer", error))?;
        let appended = Arc::new(tokio::sync::watch::Sender::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (appended, stop) = (appended.clone(), stop.clone());
            std::thread::Builder::new()
                .name("gateway-follow".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(FOLLOW_TICK);
                        appended.send_modify(|generation| *generation += 1);
                    }
                })
                .map_err(|error| storage("starting the follow ticker", error))?
        };
        Ok(Self {
            settings: settings.clone(),
            producer,
            readers: Mutex::new(Vec::new()),
            ends: Mutex::new(HashMap::new()),
            topics: tokio::sync::Mutex::new(HashSet::new()),
            appended,
            stop,
            ticker: Mutex::new(Some(ticker)),
        })
    }

    /// Creates the type's topic unless it is known to exist (or topics are the operator's to
    /// create: `create_topics_partitions = 0`).
    pub async fn ensure_topic(&self, event_type: &str, partitions: u32) -> Result<(), LogError> {
        let topic = event_topic(&self.settings, event_type);
        let mut known = self.topics.lock().await;
        if known.contains(&topic) {
            return Ok(());
        }
        if self.settings.create_topics_partitions > 0 {
            create_topic(&self.settings, &topic, partitions, &[]).await?;
        }
        known.insert(topic);
        Ok(())
    }

    pub async fn append(
        &self,
        event_type: &crate::EventType,
        records: Vec<Record>,
        context: &BatchContext,
    ) -> Result<Vec<u64>, LogError> {
        self.ensure_topic(&event_type.name, event_type.partitions)
            .await?;
        let topic = event_topic(&self.settings, &event_type.name);
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let headers = OwnedHeaders::new_with_capacity(6)
                .insert(text(header::EVENT_EID, &record.eid))
                .insert(text(header::EVENT_TYPE, &event_type.name))
                .insert(text(header::EVENT_VERSION, &context.version))
                .insert(text(header::EVENT_OCCURRED_AT, &record.occurred_at))
                .insert(text(header::EVENT_RECEIVED_AT, &context.received_at))
                .insert(text(header::EVENT_FLOW_ID, &context.flow_id));
            let headers = mm_kafka::trace::with_context(headers, context.trace.as_ref());
            let mut message = FutureRecord::to(&topic)
                .partition(record.partition as i32)
                .payload(record.bytes.as_slice())
                .headers(headers);
            if let Some(key) = &record.key {
                message = message.key(key.as_str());
            }
            deliveries.push(self.send(message).await?);
        }
        let mut offsets = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(delivered)) => offsets.push(delivered.offset as u64),
                Ok(Err((error, _))) => return Err(storage("publishing to Kafka", error)),
                Err(_) => return Err(LogError::Stopped),
            }
        }
        self.appended.send_modify(|generation| *generation += 1);
        Ok(offsets)
    }

    /// Queues one record, waiting a little while the producer's queue is full.
    async fn send<'a>(
        &self,
        mut message: FutureRecord<'a, str, [u8]>,
    ) -> Result<rdkafka::producer::DeliveryFuture, LogError> {
        let started = Instant::now();
        loop {
            match self.producer.send_result(message) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    if started.elapsed() > QUEUE_WAIT {
                        return Err(LogError::Busy);
                    }
                    message = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(storage("publishing to Kafka", error)),
            }
        }
    }

    /// Up to `limit` events of a partition from `offset` on, and the offset to read next.
    pub fn read(
        &self,
        event_type: &str,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<(Vec<Stored>, u64), LogError> {
        let topic = event_topic(&self.settings, event_type);
        let reader = self.reader()?;
        let slot = (topic, partition as i32);
        let Some((low, high)) = watermarks(&reader, &slot.0, slot.1)? else {
            return Ok((Vec::new(), offset));
        };
        let known_end = self
            .ends
            .lock()
            .ok()
            .and_then(|ends| ends.get(&slot).copied());
        if let Some((seen_high, end)) = known_end
            && seen_high == high
            && offset as i64 >= end
        {
            return Ok((Vec::new(), offset));
        }
        let result = read(
            &reader,
            &slot.0,
            slot.1,
            (low, high),
            offset as i64,
            limit,
            self.settings.fetch_guard,
        );
        if let Ok(mut readers) = self.readers.lock()
            && readers.len() < POOLED_READERS
        {
            readers.push(reader);
        }
        let (events, next, reached_end) = result?;
        if reached_end && let Ok(mut ends) = self.ends.lock() {
            ends.insert(slot, (high, next as i64));
        }
        Ok((events, next))
    }

    /// The next offset of a partition: past its last record.
    pub fn end(&self, event_type: &str, partition: u32) -> Result<u64, LogError> {
        let topic = event_topic(&self.settings, event_type);
        let reader = self.reader()?;
        let Some((_, high)) = watermarks(&reader, &topic, partition as i32)? else {
            return Ok(0);
        };
        if !self.settings.fetch_guard {
            return Ok(high as u64);
        }
        drop(reader);
        // The broker's end may be the start of the last batch: read that batch to its end.
        let mut next = high as u64;
        loop {
            let (events, after) = self.read(event_type, partition, next, 10_000)?;
            if events.is_empty() {
                return Ok(next.max(after));
            }
            next = after;
        }
    }

    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub fn close(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(ticker) = self.ticker.lock().ok().and_then(|mut ticker| ticker.take()) {
            let _ = ticker.join();
        }
    }

    fn reader(&self) -> Result<BaseConsumer, LogError> {
        if let Some(reader) = self
            .readers
            .lock()
            .ok()
            .and_then(|mut readers| readers.pop())
        {
            return Ok(reader);
        }
        self.settings
            .reader("merchant-monitor-gateway-reader")
            .create()
            .map_err(|error| storage("creating a reader", error))
    }
}

impl Drop for KafkaEvents {
    fn drop(&mut self) {
        self.close();
    }
}

fn text<'a>(key: &'a str, value: &'a String) -> Header<'a, &'a String> {
    Header {
        key,
        value: Some(value),
    }
}

/// The partition's (low, high) watermarks; `None` when the topic does not exist (nothing was
/// published to the type yet).
fn watermarks(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<Option<(i64, i64)>, LogError> {
    match reader.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
        Ok(marks) => Ok(Some(marks)),
        Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
        )) => Ok(None),
        Err(error) => Err(storage(
            &format!("reading the end of {topic}/{partition}"),
            error,
        )),
    }
}

/// Reads `[wanted, wanted + limit)` of one partition, in unbroken offset order, given the
/// broker's (low, high) watermarks.
fn read(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    (low, high): (i64, i64),
    wanted: i64,
    limit: usize,
    guarded: bool,
) -> Result<(Vec<Stored>, u64, bool), LogError> {
    let wanted = wanted.max(low);
    if limit == 0 {
        return Ok((Vec::new(), wanted as u64, false));
    }
    if !guarded && wanted >= high {
        return Ok((Vec::new(), wanted as u64, true));
    }
    // Begin where the broker will hand over the record wanted: at it, or (when it may lie in
    // the batch the broker calls the end) at that batch's start.
    let mut start = wanted.min(high).max(low);
    let mut back = 0i64;
    let mut events: Vec<Stored> = Vec::new();
    let mut next = wanted;
    let deadline = Instant::now() + READ_LIMIT;
    let mut reached_end = false;
    let mut received = mm_kafka::trace::ConsumerSpans::default();
    'seek: loop {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start))
            .and_then(|()| reader.assign(&assignment))
            .map_err(|error| storage("positioning a reader", error))?;
        let mut last_seen = Instant::now();
        while events.len() < limit && Instant::now() < deadline {
            let message = match reader.poll(Duration::from_millis(50)) {
                None => {
                    // Nothing more: done once the broker's end is passed (or nothing came).
                    if last_seen.elapsed() >= READ_IDLE || (next >= high && !events.is_empty()) {
                        reached_end = true;
                        break;
                    }
                    continue;
                }
                Some(Err(error)) => return Err(storage(&format!("reading {topic}"), error)),
                Some(Ok(message)) => message,
            };
            if message.topic() != topic || message.partition() != partition {
                continue; // left over from an earlier read
            }
            last_seen = Instant::now();
            let at = message.offset();
            if at < next {
                continue;
            }
            if at > next && guarded && start > low {
                // Records were skipped: start again further back.
                back = if back == 0 { 64 } else { back * 8 };
                start = (next - back).max(low);
                continue 'seek;
            }
            received.note(&message, "receive");
            events.push((at as u64, message.payload().unwrap_or_default().to_vec()));
            next = at + 1;
        }
        if events.is_empty() && guarded && start > low && next < high && Instant::now() < deadline {
            // Nothing at all although the broker has records from here: the read began inside
            // a batch the broker will not hand over; start again further back.
            back = if back == 0 { 64 } else { back * 8 };
            start = (next - back).max(low);
            reached_end = false;
            continue;
        }
        return Ok((events, next as u64, reached_end));
    }
}

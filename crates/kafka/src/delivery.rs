//! A producer that remembers what was delivered and what failed, so that a caller can say
//! "everything I sent is on the broker" before it commits anything that depends on it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

/// Delivery reports, tallied.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Highest delivered offset per (topic, partition).
    delivered: Mutex<BTreeMap<(String, i32), i64>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                if let Ok(mut delivered) = self.delivered.lock() {
                    let entry = delivered
                        .entry((message.topic().to_owned(), message.partition()))
                        .or_insert(-1);
                    *entry = (*entry).max(message.offset());
                }
            }
            Err((error, _)) => {
                self.failures.fetch_add(1, Ordering::AcqRel);
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(error.to_string());
                }
            }
        }
    }
}

/// A producer with a [`DeliveryTracker`].
pub type TrackedProducer = ThreadedProducer<DeliveryTracker>;

/// Why records may not be on the broker.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{count} record(s) could not be delivered: {last}")]
    Failed { count: u64, last: String },
    #[error("delivery did not finish in {0:?}")]
    Timeout(Duration),
    #[error("producing failed: {0}")]
    Produce(#[from] KafkaError),
}

/// Sends a record, waiting (never buffering without bound) while the producer's queue is full.
pub fn send_blocking(
    producer: &TrackedProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), DeliveryError> {
    let started = Instant::now();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                if started.elapsed() > Duration::from_secs(300) {
                    return Err(DeliveryError::Timeout(started.elapsed()));
                }
                record = returned;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((error, _)) => return Err(DeliveryError::Produce(error)),
        }
    }
}

/// Waits until every record sent so far is delivered; `Err` when any failed since the last
/// call (the failures are then forgotten: the caller starts over from its last commit).
pub fn flush(producer: &TrackedProducer, timeout: Duration) -> Result<(), DeliveryError> {
    producer
        .flush(timeout)
        .map_err(|_| DeliveryError::Timeout(timeout))?;
    let tracker = producer.context();
    let count = tracker.failures.swap(0, Ordering::AcqRel);
    if count > 0 {
        let last = tracker
            .last_error
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .unwrap_or_default();
        return Err(DeliveryError::Failed { count, last });
    }
    Ok(())
}

/// The highest delivered offset per partition of `topic`.
pub fn delivered_offsets(producer: &TrackedProducer, topic: &str) -> BTreeMap<i32, i64> {
    producer
        .context()
        .delivered
        .lock()
        .map(|delivered| {
            delivered
                .iter()
                .filter(|((name, _), _)| name == topic)
                .map(|((_, partition), offset)| (*partition, *offset))
                .collect()
        })
        .unwrap_or_default()
}

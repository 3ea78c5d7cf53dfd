//! A table every instance shares through a one-partition Kafka topic, the way Schema Registry
//! keeps `_schemas`: each instance reads the topic from the beginning and follows it, and
//! writes its changes to it. The registry ([`super::registry`]) and the subscriptions keep
//! their records in such tables.
//!
//! Records: key = `<name> <writer id>-<n>`, unique per record; value = JSON with a `revision`
//! (the entry's change count from 1) and whatever the owner stores. Several instances may
//! change one entry at the same moment; the log decides: in log order, a record applies only
//! when it is the next revision of its entry, so the first record of each revision wins on
//! every instance alike, and a writer that reads back a record of its own learns whether it
//! applied. The keys are unique so that compaction (the topic is `cleanup.policy=compact`)
//! can never keep a losing record in place of the winner.
//!
//! A reader thread follows the topic from its beginning. [`Table::sync`] waits until it has
//! caught up, so a change can be checked against the latest entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mm_kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::registry::Changed;

/// How long a change waits for the topic: its delivery, then reading it back.
const WAIT: Duration = Duration::from_secs(30);

/// The part of a value the table reads.
#[derive(serde::Deserialize)]
struct Head {
    #[serde(default)]
    revision: u64,
}

/// A shared table on a topic.
pub struct Table {
    topic: String,
    producer: FutureProducer,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Makes this instance's record keys unique.
    writer: String,
    written: AtomicU64,
}

struct Shared {
    tail: Mutex<Tail>,
    moved: Condvar,
}

#[derive(Default)]
struct Tail {
    /// The next offset the reader reads.
    position: i64,
    /// Polls that found nothing new: a sync waits for two that began after it.
    idle_polls: u64,
    /// The winning record of each entry: its revision and bytes.
    latest: BTreeMap<String, (u64, Vec<u8>)>,
    /// This writer's records read back: key → whether it applied.
    decided: HashMap<Vec<u8>, bool>,
    changed: Option<Changed>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tail> {
        self.tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn storage(context: &str, error: impl std::fmt::Display) -> String {
    format!("{context}: {error}")
}

impl Table {
    /// Starts following `topic` (which must exist) from its beginning.
    pub fn open(settings: &KafkaSettings, topic: &str) -> Result<Self, String> {
        let producer: FutureProducer = settings
            .producer("merchant-monitor-table")
            .create()
            .map_err(|error| storage("creating a table producer", error))?;
        let consumer: BaseConsumer = settings
            .reader("merchant-monitor-table")
            .create()
            .map_err(|error| storage("creating a table reader", error))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .and_then(|()| consumer.assign(&assignment))
            .map_err(|error| storage(&format!("assigning {topic}"), error))?;
        let shared = Arc::new(Shared {
            tail: Mutex::new(Tail::default()),
            moved: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let writer = format!("{:016x}", fastrand::u64(..));
        let reader = {
            let (shared, stop, writer) = (shared.clone(), stop.clone(), writer.clone());
            std::thread::Builder::new()
                .name("gateway-table".into())
                .spawn(move || follow(&consumer, &shared, &stop, &writer))
                .map_err(|error| storage("starting a table reader", error))?
        };
        Ok(Self {
            topic: topic.to_owned(),
            producer,
            shared,
            stop,
            reader: Mutex::new(Some(reader)),
            writer,
            written: AtomicU64::new(0),
        })
    }

    /// Waits until `done` holds for the tail, or [`WAIT`] passes.
    fn wait_for(
        &self,
        what: &str,
        mut done: impl FnMut(&mut Tail) -> bool,
    ) -> Result<MutexGuard<'_, Tail>, String> {
        let deadline = Instant::now() + WAIT;
        let mut tail = self.shared.lock();
        while !done(&mut tail) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "topic {}: {what} took longer than {WAIT:?}",
                    self.topic
                ));
            }
            tail = self
                .shared
                .moved
                .wait_timeout(tail, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Ok(tail)
    }
}

/// Reads the registry topic until stopped, applying each record in log order.
fn follow(consumer: &BaseConsumer, shared: &Shared, stop: &AtomicBool, writer: &str) {
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                shared.lock().idle_polls += 1;
                shared.moved.notify_all();
            }
            Some(Ok(message)) => {
                let mut tail = shared.lock();
                apply(
                    &mut tail,
                    message.key().unwrap_or_default(),
                    message.payload().unwrap_or_default(),
                    writer,
                );
                tail.position = tail.position.max(message.offset() + 1);
                drop(tail);
                shared.moved.notify_all();
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "reading a table topic");
            }
        }
    }
}

/// Applies one record: when it is the next revision of its entry it becomes the entry's record.
fn apply(tail: &mut Tail, key: &[u8], value: &[u8], writer: &str) {
    let name = name_of(key);
    let applied = match serde_json::from_slice::<Head>(value) {
        Ok(head) => {
            let current = tail
                .latest
                .get(name.as_ref())
                .map_or(0, |(revision, _)| *revision);
            let applies = head.revision == current + 1;
            if applies {
                if let Some(changed) = &tail.changed {
                    changed(value);
                }
                tail.latest
                    .insert(name.into_owned(), (head.revision, value.to_vec()));
            }
            applies
        }
        Err(error) => {
            tracing::warn!(%error, "an unreadable record in a table topic; skipped");
            false
        }
    };
    if is_own(key, writer) {
        tail.decided.insert(key.to_vec(), applied);
    }
}

/// The entry a key names: `<name> <writer>-<n>`.
fn name_of(key: &[u8]) -> std::borrow::Cow<'_, str> {
    match String::from_utf8_lossy(key) {
        std::borrow::Cow::Borrowed(text) => {
            std::borrow::Cow::Borrowed(text.rsplit_once(' ').map_or(text, |(name, _)| name))
        }
        std::borrow::Cow::Owned(text) => std::borrow::Cow::Owned(
            text.rsplit_once(' ')
                .map_or(text.as_str(), |(name, _)| name)
                .to_owned(),
        ),
    }
}

/// Whether `key` is one of `writer`'s: `<name> <writer>-<n>`.
fn is_own(key: &[u8], writer: &str) -> bool {
    let key = String::from_utf8_lossy(key);
    key.rsplit_once(' ')
        .and_then(|(_, suffix)| suffix.split_once('-'))
        .is_some_and(|(id, _)| id == writer)
}

impl Table {
    /// Every entry's record, once caught up; `changed` then hears of every record that
    /// applies later (this instance's own included).
    pub fn load(&self, changed: Changed) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.sync()?;
        let mut tail = self.shared.lock();
        tail.changed = Some(changed);
        Ok(tail
            .latest
            .iter()
            .map(|(name, (_, bytes))| (name.clone(), bytes.clone()))
            .collect())
    }

    /// An entry's record as this instance has read it so far.
    pub fn get(&self, name: &str) -> Option<(u64, Vec<u8>)> {
        self.shared.lock().latest.get(name).cloned()
    }

    /// Every entry's record as this instance has read it so far.
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.shared
            .lock()
            .latest
            .iter()
            .map(|(name, (_, bytes))| (name.clone(), bytes.clone()))
            .collect()
    }

    /// Writes a record of `name` (its `revision` the next one of the entry it was made from)
    /// and reads it back: `true` when it applied, `false` when another record of that revision
    /// came first.
    pub fn write(&self, name: &str, record: &[u8]) -> Result<bool, String> {
        let key = format!(
            "{name} {}-{}",
            self.writer,
            self.written.fetch_add(1, Ordering::AcqRel)
        )
        .into_bytes();
        let delivery = self
            .producer
            .send_result(FutureRecord::to(&self.topic).key(&key).payload(record))
            .map_err(|(error, _)| storage(&format!("writing {}", self.topic), error))?;
        match crate::block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(storage(&format!("writing {}", self.topic), error)),
            Err(_) => return Err(format!("the producer of {} stopped", self.topic)),
        }
        let mut tail = self.wait_for("reading a change back", |tail| {
            tail.decided.contains_key(&key)
        })?;
        Ok(tail.decided.remove(&key).unwrap_or(false))
    }

    /// Waits until every record written anywhere before the call has been read.
    pub fn sync(&self) -> Result<(), String> {
        let (_, end) = self
            .producer
            .client()
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
            .map_err(|error| storage(&format!("asking for the end of {}", self.topic), error))?;
        let since = self.shared.lock().idle_polls;
        // Two polls that began after the question and found nothing: whatever was written
        // before it has been read (the test broker may give the start of the last record batch
        // as the end, so the end alone is not enough).
        self.wait_for("catching up", |tail| {
            tail.position >= end && tail.idle_polls >= since + 2
        })
        .map(drop)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(reader) = self.reader.lock().ok().and_then(|mut reader| reader.take()) {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revision: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"revision": revision, "event_type": {}}))
            .expect("json")
    }

    #[test]
    fn the_first_record_of_each_revision_wins_and_a_writer_learns_whether_it_did() {
        let mut tail = Tail::default();
        apply(&mut tail, b"order.paid aaaa-0", &record(1), "aaaa");
        // Another instance checked against revision 0 too: its record comes second and loses.
        apply(&mut tail, b"order.paid bbbb-0", &record(1), "aaaa");
        apply(&mut tail, b"order.paid bbbb-1", &record(2), "aaaa");
        // A record that skips a revision does not apply either.
        apply(&mut tail, b"order.paid aaaa-1", &record(4), "aaaa");
        // Entries are apart: the first revision of another one applies.
        apply(&mut tail, b"order.shipped bbbb-2", &record(1), "aaaa");
        assert_eq!(tail.latest["order.paid"].0, 2);
        assert_eq!(tail.latest["order.shipped"].0, 1);
        assert_eq!(
            tail.decided.get(b"order.paid aaaa-0".as_slice()),
            Some(&true)
        );
        assert_eq!(
            tail.decided.get(b"order.paid aaaa-1".as_slice()),
            Some(&false)
        );
        // Only this writer's outcomes are remembered.
        assert_eq!(tail.decided.len(), 2);
    }

    #[test]
    fn a_key_names_its_entry_and_is_the_writers_only_with_its_id() {
        assert_eq!(name_of(b"order.paid 00ff-12"), "order.paid");
        assert!(is_own(b"order.paid 00ff-12", "00ff"));
        assert!(!is_own(b"order.paid 00fe-12", "00ff"));
        assert!(!is_own(b"order.paid", "00ff"));
    }
}

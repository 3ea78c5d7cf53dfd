//! The embedded event log: every event type's partitions in the gateway database.
//!
//! On-disk format (the `events` keyspace of the gateway database): key = type name, a zero
//! byte, the partition (u32, big-endian) and the offset (u64, big-endian) of the first event
//! of the value, so one partition's events are one contiguous, ordered key range; value =
//! the events one append put on that partition, consecutive: the byte 0x01, their count and
//! each one's length (u32, little-endian), then the events' JSON as published (with the
//! metadata the gateway added, their offsets aside). A value that starts with `{` is one
//! event (the format before runs). One value per append and partition rather than per event:
//! a key per event cost a tenth of the server's time while publishing (memtable inserts,
//! checksums, compactions).
//!
//! Appends go through one writer thread that commits whatever batches are waiting as one
//! atomic write and one fsync (group commit), then answers each: an append is answered only
//! once its events are durable, and a batch is all there or not at all after a crash. Offsets
//! are assigned by that thread in arrival order, so the events of one request keep their
//! order within each partition. The queue to the writer is bounded: when it is full, an append
//! is refused at once ([`LogError::Busy`]) rather than queued without limit.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use super::{LogError, Record, Stored};

/// Batches that may wait for the writer; beyond them appends are refused as busy.
const QUEUE: usize = 256;
/// Bytes the writer commits together at most.
const GROUP_BYTES: usize = 16 << 20;

struct Append {
    event_type: String,
    records: Vec<Record>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<u64>, LogError>>,
}

/// The log: appends through the writer thread, reads straight from the keyspace.
pub struct Embedded {
    database: fjall::Database,
    events: fjall::Keyspace,
    append_tx: Mutex<Option<SyncSender<Append>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Next offset of each (type, partition), shared with the writer for `end`.
    ends: Arc<Mutex<HashMap<(String, u32), u64>>>,
    /// Counts committed groups: readers that follow a partition wait for it to move.
    appended: Arc<tokio::sync::watch::Sender<u64>>,
}

fn key(event_type: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(event_type.len() + 13);
    key.extend_from_slice(event_type.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

fn partition_prefix(event_type: &str, partition: u32) -> Vec<u8> {
    let mut prefix = key(event_type, partition, 0);
    prefix.truncate(prefix.len() - 8);
    prefix
}

/// The first byte of a run of events.
const RUN: u8 = 0x01;

/// A run of consecutive events as one value.
fn encode(events: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = events.iter().map(Vec::len).sum();
    let mut value = Vec::with_capacity(5 + 4 * events.len() + total);
    value.push(RUN);
    value.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        value.extend_from_slice(&(event.len() as u32).to_le_bytes());
    }
    for event in events {
        value.extend_from_slice(event);
    }
    value
}

/// The events of a value, in offset order.
fn decode(value: &[u8]) -> Result<Vec<&[u8]>, LogError> {
    let Some(rest) = value.strip_prefix(&[RUN]) else {
        return Ok(vec![value]);
    };
    let corrupt = || LogError::Storage("a corrupt run of events in the event log".into());
    let (count, mut rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let count = u32::from_le_bytes(*count) as usize;
    let (lengths, mut bodies) = rest
        .split_at_checked(count.checked_mul(4).ok_or_else(corrupt)?)
        .ok_or_else(corrupt)?;
    rest = lengths;
    let mut events = Vec::with_capacity(count);
    while let Some((length, tail)) = rest.split_first_chunk::<4>() {
        rest = tail;
        let (event, more) = bodies
            .split_at_checked(u32::from_le_bytes(*length) as usize)
            .ok_or_else(corrupt)?;
        events.push(event);
        bodies = more;
    }
    Ok(events)
}

fn offset_of(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    if let Some(tail) = key.len().checked_sub(8).map(|start| &key[start..]) {
        bytes.copy_from_slice(tail);
    }
    u64::from_be_bytes(bytes)
}

fn storage(error: impl std::fmt::Display) -> LogError {
    LogError::Storage(error.to_string())
}

impl Embedded {
    /// Opens the log in `database` and starts its writer.
    pub fn open(database: &fjall::Database) -> Result<Self, LogError> {
        // Event bodies go to blob files beside the tree (key-value separation): compactions
        // then move keys only, not every event again. Uncompressed: lz4 took a tenth of the
        // server's time while publishing (`bench --only publish`, profiled).
        let events = database
            .keyspace("events", || {
                fjall::KeyspaceCreateOptions::default()
                    .max_memtable_size(64 << 20)
                    .with_kv_separation(Some(
                        fjall::KvSeparationOptions::default()
                            .separation_threshold(128)
                            .compression(fjall::CompressionType::None),
                    ))
            })
            .map_err(storage)?;
        let ends = Arc::new(Mutex::new(HashMap::new()));
        let appended = Arc::new(tokio::sync::watch::Sender::new(0));
        let (append_tx, append_rx) = sync_channel(QUEUE);
        let writer = {
            let (database, events, ends, appended) = (
                database.clone(),
                events.clone(),
                ends.clone(),
                appended.clone(),
            );
            std::thread::Builder::new()
                .name("gateway-log".into())
                .spawn(move || write_loop(&database, &events, &ends, &appended, &append_rx))
                .map_err(storage)?
        };
        Ok(Self {
            database: database.clone(),
            events,
            append_tx: Mutex::new(Some(append_tx)),
            writer: Mutex::new(Some(writer)),
            ends,
            appended,
        })
    }

    /// Appends `records` of `event_type`; resolves with their offsets once they are durable.
    pub fn append(
        &self,
        event_type: &str,
        records: Vec<Record>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<u64>, LogError>>, LogError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let append = Append {
            event_type: event_type.to_owned(),
            records,
            reply,
        };
        let sender = self.append_tx.lock().map_err(|_| LogError::Stopped)?;
        match sender.as_ref().map(|sender| sender.try_send(append)) {
            Some(Ok(())) => Ok(answer),
            Some(Err(TrySendError::Full(_))) => Err(LogError::Busy),
            Some(Err(TrySendError::Disconnected(_))) | None => Err(LogError::Stopped),
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
        let mut events = Vec::new();
        let mut next = offset;
        if limit == 0 {
            return Ok((events, next));
        }
        // The run holding `offset` starts at or before it; the runs after it follow.
        let holding = self
            .events
            .range(key(event_type, partition, 0)..=key(event_type, partition, offset))
            .next_back();
        let from = match holding {
            Some(guard) => offset_of(&guard.key().map_err(storage)?),
            None => offset,
        };
        let runs = self
            .events
            .range(key(event_type, partition, from)..=key(event_type, partition, u64::MAX));
        'runs: for guard in runs {
            let (key, value) = guard.into_inner().map_err(storage)?;
            let first = offset_of(&key);
            for (index, event) in decode(&value)?.into_iter().enumerate() {
                let at = first + index as u64;
                if at < next {
                    continue;
                }
                events.push((at, event.to_vec()));
                next = at + 1;
                if events.len() == limit {
                    break 'runs;
                }
            }
        }
        Ok((events, next))
    }

    /// Removes the events of a partition received before `cutoff_us` (their
    /// `metadata.received_at`), oldest first, stopping at the first newer one; the newest event
    /// always stays, so the partition's next offset is still known after a restart. Returns the
    /// events removed.
    pub fn expire(
        &self,
        event_type: &str,
        partition: u32,
        cutoff_us: i64,
    ) -> Result<u64, LogError> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            metadata: Received<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Received<'a> {
            received_at: &'a str,
        }
        let prefix = partition_prefix(event_type, partition);
        let Some(last) = self.events.prefix(&prefix).next_back() else {
            return Ok(0);
        };
        let last = last.key().map_err(storage)?;
        let mut expired = Vec::new();
        let mut count = 0;
        for guard in self.events.prefix(&prefix) {
            let (key, value) = guard.into_inner().map_err(storage)?;
            if key == last {
                break;
            }
            // The events of a run were received together: its last one stands for all.
            let events = decode(&value)?;
            let received = events
                .last()
                .and_then(|event| serde_json::from_slice::<Envelope<'_>>(event).ok())
                .and_then(|envelope| {
                    mm_model::time::parse_rfc3339(envelope.metadata.received_at).ok()
                });
            match received {
                Some(at) if at < cutoff_us => {
                    count += events.len() as u64;
                    expired.push(key);
                }
                _ => break,
            }
        }
        for chunk in expired.chunks(10_000) {
            let mut batch = self.database.batch();
            for key in chunk {
                batch.remove(&self.events, key.clone());
            }
            batch.commit().map_err(storage)?;
        }
        Ok(count)
    }

    /// The next offset of a partition (its number of events).
    pub fn end(&self, event_type: &str, partition: u32) -> Result<u64, LogError> {
        next_offset(&self.events, &self.ends, event_type, partition)
    }

    /// Changes whenever appended events become durable (and readable).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Stops the writer after what is queued.
    pub fn close(&self) {
        if let Ok(mut sender) = self.append_tx.lock() {
            sender.take();
        }
        if let Some(writer) = self.writer.lock().ok().and_then(|mut writer| writer.take()) {
            let _ = writer.join();
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.close();
    }
}

/// The next offset of a partition: remembered, or read from its last key once.
fn next_offset(
    events: &fjall::Keyspace,
    ends: &Mutex<HashMap<(String, u32), u64>>,
    event_type: &str,
    partition: u32,
) -> Result<u64, LogError> {
    let mut ends = ends.lock().map_err(|_| LogError::Stopped)?;
    if let Some(next) = ends.get(&(event_type.to_owned(), partition)) {
        return Ok(*next);
    }
    let next = match events
        .prefix(partition_prefix(event_type, partition))
        .next_back()
    {
        Some(guard) => {
            let (key, value) = guard.into_inner().map_err(storage)?;
            offset_of(&key) + decode(&value)?.len() as u64
        }
        None => 0,
    };
    ends.insert((event_type.to_owned(), partition), next);
    Ok(next)
}

fn write_loop(
    database: &fjall::Database,
    events: &fjall::Keyspace,
    ends: &Mutex<HashMap<(String, u32), u64>>,
    appended: &tokio::sync::watch::Sender<u64>,
    append_rx: &Receiver<Append>,
) {
    while let Ok(first) = append_rx.recv() {
        let mut group = vec![first];
        let mut bytes: usize = group[0]
            .records
            .iter()
            .map(|record| record.bytes.len())
            .sum();
        while bytes < GROUP_BYTES {
            let Ok(next) = append_rx.try_recv() else {
                break;
            };
            bytes += next
                .records
                .iter()
                .map(|record| record.bytes.len())
                .sum::<usize>();
            group.push(next);
        }
        let result = commit(database, events, ends, &mut group);
        if result.error.is_none() {
            appended.send_modify(|generation| *generation += 1);
        }
        for (append, offsets) in group.into_iter().zip(result.per_append) {
            let answer = match &result.error {
                Some(error) => Err(error.clone()),
                None => Ok(offsets),
            };
            let _ = append.reply.send(answer);
        }
    }
}

struct Committed {
    per_append: Vec<Vec<u64>>,
    error: Option<LogError>,
}

/// Writes a group as one atomic, fsynced batch; on failure the offsets are given back.
fn commit(
    database: &fjall::Database,
    events: &fjall::Keyspace,
    ends: &Mutex<HashMap<(String, u32), u64>>,
    group: &mut [Append],
) -> Committed {
    let mut batch = database.batch();
    let mut per_append = Vec::with_capacity(group.len());
    let mut assigned: HashMap<(String, u32), u64> = HashMap::new();
    let mut failure = None;
    for append in group.iter_mut() {
        let mut offsets = Vec::with_capacity(append.records.len());
        // This append's runs: (partition, first offset, events), in order of first appearance.
        let mut runs: Vec<(u32, u64, Vec<Vec<u8>>)> = Vec::new();
        for Record {
            partition, bytes, ..
        } in std::mem::take(&mut append.records)
        {
            let slot = (append.event_type.clone(), partition);
            let next = match assigned.get(&slot) {
                Some(next) => *next,
                None => match next_offset(events, ends, &append.event_type, partition) {
                    Ok(next) => next,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                },
            };
            match runs.iter_mut().find(|run| run.0 == partition) {
                Some(run) => run.2.push(bytes),
                None => runs.push((partition, next, vec![bytes])),
            }
            assigned.insert(slot, next + 1);
            offsets.push(next);
        }
        for (partition, first, run) in runs {
            batch.insert(
                events,
                key(&append.event_type, partition, first),
                encode(&run),
            );
        }
        per_append.push(offsets);
    }
    if failure.is_none()
        && let Err(error) = batch
            .durability(Some(fjall::PersistMode::SyncData))
            .commit()
    {
        failure = Some(storage(error));
    }
    if failure.is_none()
        && let Ok(mut ends) = ends.lock()
    {
        ends.extend(assigned);
    }
    per_append.resize(group.len(), Vec::new());
    Committed {
        per_append,
        error: failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: u32, number: u64) -> Record {
        Record {
            partition,
            key: None,
            eid: String::new(),
            occurred_at: String::new(),
            bytes: format!(
                r#"{{"n":{number},"metadata":{{"received_at":"2026-12-01T10:00:{:02}Z"}}}}"#,
                number % 60
            )
            .into_bytes(),
        }
    }

    fn append(log: &Embedded, records: Vec<Record>) -> Vec<u64> {
        crate::block_on(log.append("t", records).expect("queued"))
            .expect("answered")
            .expect("durable")
    }

    fn numbers(events: &[Stored]) -> Vec<(u64, u64)> {
        events
            .iter()
            .map(|(offset, bytes)| {
                let event: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
                (*offset, event["n"].as_u64().expect("n"))
            })
            .collect()
    }

    #[test]
    fn reads_start_inside_runs_and_cross_them_in_offset_order() {
        let dir = tempfile::tempdir().expect("a directory");
        let database = crate::registry::open_database(dir.path()).expect("database");
        let log = Embedded::open(&database).expect("log");
        // Two appends, each one run per partition, interleaved across partitions.
        let offsets = append(
            &log,
            vec![record(0, 1), record(1, 2), record(0, 3), record(0, 4)],
        );
        assert_eq!(offsets, [0, 0, 1, 2]);
        assert_eq!(append(&log, vec![record(0, 5), record(0, 6)]), [3, 4]);
        let (events, next) = log.read("t", 0, 2, 3).expect("read");
        assert_eq!(numbers(&events), [(2, 4), (3, 5), (4, 6)]);
        assert_eq!(next, 5);
        let (events, next) = log.read("t", 0, 1, 1).expect("read");
        assert_eq!((numbers(&events), next), (vec![(1, 3)], 2));
        let (events, next) = log.read("t", 0, 5, 10).expect("read");
        assert_eq!((events.len(), next), (0, 5));
        assert_eq!(numbers(&log.read("t", 1, 0, 10).expect("read").0), [(0, 2)]);
        // A value in the format before runs (one event) reads as a run of one.
        database
            .keyspace("events", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace")
            .insert(key("t", 0, 5), record(0, 7).bytes)
            .expect("inserted");
        assert_eq!(
            numbers(&log.read("t", 0, 4, 10).expect("read").0),
            [(4, 6), (5, 7)]
        );
        drop(log);
        // The end survives a restart: the last run's first offset and length.
        let log = Embedded::open(&database).expect("log again");
        assert_eq!(log.end("t", 0).expect("end"), 6);
        assert_eq!(append(&log, vec![record(0, 8)]), [6]);
    }

    #[test]
    fn expiry_removes_whole_runs_received_before_the_cutoff_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("a directory");
        let database = crate::registry::open_database(dir.path()).expect("database");
        let log = Embedded::open(&database).expect("log");
        append(&log, vec![record(0, 1), record(0, 2)]);
        append(&log, vec![record(0, 3)]);
        append(&log, vec![record(0, 50)]);
        let cutoff = mm_model::time::parse_rfc3339("2026-12-01T10:00:10Z").expect("time");
        assert_eq!(log.expire("t", 0, cutoff).expect("expired"), 3);
        assert_eq!(
            numbers(&log.read("t", 0, 0, 10).expect("read").0),
            [(3, 50)]
        );
        // The newest run stays even when it is old.
        assert_eq!(log.expire("t", 0, i64::MAX).expect("expired"), 0);
        assert_eq!(log.end("t", 0).expect("end"), 4);
    }
}

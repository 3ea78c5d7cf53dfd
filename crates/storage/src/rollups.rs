//! The embedded rollup store, on fjall.
//!
//! # Layout
//!
//! One pair of keyspaces per UTC day (`r{day}` and `i{day}`, day = minute / 1440), so
//! retention drops whole keyspaces instead of deleting keys one by one:
//!
//! - `r{day}`: `merchant 0x00 api 0x00 minute(8, sortable BE)` → rollup ([`crate::codec`]),
//!   flagged open or final. The merchant-wide series has the empty api, so its key is
//!   `merchant 0x00 0x00 minute` and sorts before every API of the merchant.
//! - `i{day}`: the ranking index. `'m' minute merchant` → totals of that merchant-minute, and
//!   `'h' hour merchant` → totals of that merchant-hour (the sum of its minutes, kept exact by
//!   adding the change of each minute entry as it is rewritten). And the hour rollups
//!   ([`hours`]): `'s' merchant 0x00 api 0x00 hour` → the merge of the hour's final minutes.
//!
//! And three global keyspaces: `open` (the keys of windows that are still open, for
//! recovery), `merchants` (lowercased name `0x00` name → last minute with calls, for
//! suggestions) and `meta` (the checkpoint: WAL position, watermark and partition clocks).
//!
//! # Invariants
//!
//! - One writer per deployment. On one machine only the aggregator thread writes, and every
//!   write is part of one checkpoint batch that also moves the checkpoint; the batch is atomic
//!   and synced before it is acknowledged. In cluster mode the replicas write
//!   ([`RollupStore::apply_replicated`], serialized by a lock), each batch together with the
//!   topic positions it brings the replica to, and per window the record that covers most wins.
//! - A window's stored rollup is final once its window closed; corrections are merged into it.
//! - Merchant names and API names hold no control characters, so `0x00` separates fields.

mod handle;
mod hours;
mod memo;
mod ranking;
mod read;
mod replica;
mod requests;
mod write;

pub use handle::RollupStore;
pub use hours::Series;
pub use memo::ImportMemo;
pub use ranking::{Counts, MerchantCounts, Totals};
pub use replica::Replicated;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::RwLock;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use mm_model::rollup::{Rollup, WindowKey};
use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::codec;
use ranking::{MemoryRanking, MinuteChange};
pub use requests::StoredRequest;

const MINUTES_PER_DAY: i64 = 1440;
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// Prefix of the `meta` keys holding import progress.
const IMPORT_PREFIX: &str = "import:";

/// How a group of windows is written: open (with its open-window marker), final (clearing the
/// marker), or final and never stored before (no marker to clear).
#[derive(Debug, Clone, Copy)]
enum Group {
    Open,
    Final,
    FinalNeverOpen,
}

/// The WAL position and window clocks a checkpoint covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every WAL frame up to this LSN is reflected in the store.
    pub lsn: u64,
    /// The aggregator's watermark (µs).
    pub watermark_us: i64,
    /// Largest event time per input partition (µs).
    pub partitions: Vec<(u32, i64)>,
}

/// Everything one checkpoint changes.
#[derive(Debug, Clone, Default)]
pub struct CheckpointBatch {
    /// Windows that closed, with their final rollups.
    pub finals: Vec<(WindowKey, Rollup)>,
    /// Late calls per closed window, to be added to the stored final rollups.
    pub corrections: Vec<(WindowKey, Rollup)>,
    /// Open windows that changed, written as provisional rollups.
    pub open: Vec<(WindowKey, Rollup)>,
    /// The position this batch brings the store to.
    pub checkpoint: Checkpoint,
    /// Requests answered (`Idempotency-Key`) in the WAL batches this checkpoint covers.
    pub requests: Vec<StoredRequest>,
}

/// A checkpoint ready to commit, and the records it will make final: emit these downstream
/// before committing (at-least-once), then call [`RollupStore::commit`].
pub struct PreparedCheckpoint {
    batch: fjall::OwnedWriteBatch,
    /// Final rollups of windows that closed (late calls of this same batch folded in).
    pub finals: Vec<(WindowKey, Rollup)>,
    /// Corrected final rollups of windows that had closed before this batch.
    pub corrected: Vec<(WindowKey, Rollup)>,
    /// What the batch changes in memory once it has committed.
    applied: Applied,
}

/// What a batch of window writes changes in memory: the ranking's minute changes, and the
/// windows it opens and closes (the set of open windows, see [`Store::open_keys`]).
#[derive(Debug, Default)]
struct Applied {
    ranking: Vec<MinuteChange>,
    opened: Vec<Vec<u8>>,
    closed: Vec<Vec<u8>>,
}

impl std::fmt::Debug for PreparedCheckpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PreparedCheckpoint")
            .field("finals", &self.finals.len())
            .field("corrected", &self.corrected.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Day {
    rollups: Keyspace,
    index: Keyspace,
}

/// One open fjall database with its keyspaces.
struct Store {
    db: Database,
    meta: Keyspace,
    open: Keyspace,
    merchants: Keyspace,
    requests: Keyspace,
    requests_by_time: Keyspace,
    days: RwLock<BTreeMap<i64, Day>>,
    /// The merchant ranking in memory, built from the index on disk.
    ranking: RwLock<MemoryRanking>,
    /// Serializes [`RollupStore::apply_replicated`] (a read-check-write per window).
    replica_lock: std::sync::Mutex<()>,
    /// The store keys of the windows stored open, in memory: what the `open` keyspace holds,
    /// which its tombstones make slow to scan. While a batch commits it is a superset (keys a
    /// batch opens are added before it commits, keys it closes removed after), so a reader
    /// that takes a snapshot while holding it finds every window open in that snapshot.
    open_keys: RwLock<BTreeSet<Box<[u8]>>>,
}

/// An `i64` as 8 bytes whose byte order is its numeric order.
pub fn sortable(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsortable(bytes: &[u8]) -> Option<i64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(array) ^ (1 << 63)) as i64)
}

fn series_prefix(merchant: &str, api: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(merchant.len() + api.len() + 10);
    key.extend_from_slice(merchant.as_bytes());
    key.push(0);
    key.extend_from_slice(api.as_bytes());
    key.push(0);
    key
}

/// The store key of a window.
pub fn rollup_key(key: &WindowKey) -> Vec<u8> {
    let mut bytes = series_prefix(&key.merchant, &key.api);
    bytes.extend_from_slice(&sortable(key.minute));
    bytes
}

/// Splits a store key into (merchant, api, minute).
fn split_rollup_key(bytes: &[u8]) -> Option<(&str, &str, i64)> {
    let (head, minute) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    let head = head.strip_suffix(&[0])?;
    let separator = head.iter().position(|byte| *byte == 0)?;
    let merchant = std::str::from_utf8(&head[..separator]).ok()?;
    let api = std::str::from_utf8(&head[separator + 1..]).ok()?;
    Some((merchant, api, unsortable(minute)?))
}

/// Key of the merchant-name index: the lowercased name (for prefix search ignoring case),
/// `0x00`, the name as ingested. Value: the last minute with calls.
fn merchant_name_key(merchant: &str) -> Vec<u8> {
    let mut key = merchant.to_lowercase().into_bytes();
    key.push(0);
    key.extend_from_slice(merchant.as_bytes());
    key
}

fn day_of(minute: i64) -> i64 {
    minute.div_euclid(MINUTES_PER_DAY)
}

fn decode_error(what: &'static str) -> impl FnOnce(codec::CodecError) -> StorageError {
    move |source| StorageError::Codec { what, source }
}

impl Store {
    fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StorageError::io("create store directory", dir, source))?;
        let db = Database::builder(dir)
            .cache_size(256 * 1024 * 1024)
            .open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let open = db.keyspace("open", KeyspaceCreateOptions::default)?;
        let merchants = db.keyspace("merchants", KeyspaceCreateOptions::default)?;
        let requests = db.keyspace("requests", KeyspaceCreateOptions::default)?;
        let requests_by_time = db.keyspace("requests-by-time", KeyspaceCreateOptions::default)?;
        let mut days = BTreeMap::new();
        for name in db.list_keyspace_names() {
            let Some(day) = name
                .strip_prefix('r')
                .and_then(|day| day.parse::<i64>().ok())
            else {
                continue;
            };
            let rollups = db.keyspace(&name, KeyspaceCreateOptions::default)?;
            let index = db.keyspace(&format!("i{day}"), KeyspaceCreateOptions::default)?;
            days.insert(day, Day { rollups, index });
        }
        let ranking = Self::load_ranking(&days)?;
        let mut open_keys = BTreeSet::new();
        for guard in open.iter() {
            open_keys.insert(guard.key()?.to_vec().into_boxed_slice());
        }
        let store = Self {
            db,
            meta,
            open,
            merchants,
            requests,
            requests_by_time,
            days: RwLock::new(days),
            ranking: RwLock::new(ranking),
            replica_lock: std::sync::Mutex::new(()),
            open_keys: RwLock::new(open_keys),
        };
        store.build_hours_if_missing()?;
        store.rebuild_pending_hours()?;
        Ok(store)
    }

    fn day(&self, day: i64) -> Option<Day> {
        self.days.read().ok()?.get(&day).cloned()
    }

    fn day_numbers(&self) -> Result<Vec<i64>, StorageError> {
        self.days
            .read()
            .map(|days| days.keys().copied().collect())
            .map_err(|_| StorageError::Poisoned("store days"))
    }

    /// The handles of `day`, through `held` (the day of the write before, kept in it): a run
    /// of writes of one day looks it up once.
    fn day_through(&self, held: &mut Option<(i64, Day)>, day: i64) -> Result<Day, StorageError> {
        match held {
            Some((number, handles)) if *number == day => Ok(handles.clone()),
            _ => {
                let handles = self.day_or_create(day)?;
                *held = Some((day, handles.clone()));
                Ok(handles)
            }
        }
    }

    fn day_or_create(&self, day: i64) -> Result<Day, StorageError> {
        if let Some(existing) = self.day(day) {
            return Ok(existing);
        }
        let rollups = self
            .db
            .keyspace(&format!("r{day}"), KeyspaceCreateOptions::default)?;
        let index = self
            .db
            .keyspace(&format!("i{day}"), KeyspaceCreateOptions::default)?;
        let created = Day { rollups, index };
        if let Ok(mut days) = self.days.write() {
            days.insert(day, created.clone());
        }
        Ok(created)
    }

    fn days_between(&self, from_minute: i64, to_minute: i64) -> Vec<(i64, Day)> {
        let Ok(days) = self.days.read() else {
            return Vec::new();
        };
        days.range(day_of(from_minute)..=day_of(to_minute.saturating_sub(1)))
            .map(|(day, handles)| (*day, handles.clone()))
            .collect()
    }

    /// The last committed checkpoint, if any.
    pub fn load_checkpoint(&self) -> Result<Option<Checkpoint>, StorageError> {
        let Some(bytes) = self.meta.get(CHECKPOINT_KEY)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| StorageError::Corrupt {
                what: "checkpoint",
                path: self.meta.path().to_owned(),
                detail: error.to_string(),
            })
    }

    /// Every window that was open at the last checkpoint, with its rollup then.
    pub fn load_open(&self) -> Result<Vec<(WindowKey, Rollup)>, StorageError> {
        let mut windows = Vec::new();
        for guard in self.open.iter() {
            let key = guard.key()?;
            let Some((merchant, api, minute)) = split_rollup_key(&key) else {
                continue;
            };
            let Some(day) = self.day(day_of(minute)) else {
                continue;
            };
            let Some(value) = day.rollups.get(&key)? else {
                continue;
            };
            let (rollup, _) = codec::decode_rollup(&value).map_err(decode_error("open rollup"))?;
            windows.push((
                WindowKey {
                    merchant: merchant.to_owned(),
                    api: api.to_owned(),
                    minute,
                },
                rollup,
            ));
        }
        Ok(windows)
    }

    fn stored_rollup(&self, key: &WindowKey) -> Result<Option<Rollup>, StorageError> {
        let Some(day) = self.day(day_of(key.minute)) else {
            return Ok(None);
        };
        let Some(value) = day.rollups.get(rollup_key(key))? else {
            return Ok(None);
        };
        let (rollup, _) = codec::decode_rollup(&value).map_err(decode_error("stored rollup"))?;
        Ok(Some(rollup))
    }

    /// Drops every day whose minutes are all older than `oldest_kept_minute`; returns how many.
    pub fn enforce_retention(&self, oldest_kept_minute: i64) -> Result<usize, StorageError> {
        let expired: Vec<(i64, Day)> = match self.days.read() {
            Ok(days) => days
                .range(..day_of(oldest_kept_minute))
                .map(|(day, handles)| (*day, handles.clone()))
                .collect(),
            Err(_) => return Ok(0),
        };
        if !expired.is_empty() {
            let mut stale = self.db.batch();
            for guard in self.merchants.iter() {
                let (key, value) = guard.into_inner()?;
                if unsortable(&value).is_some_and(|minute| minute < oldest_kept_minute) {
                    stale.remove(&self.merchants, key);
                }
            }
            stale.commit()?;
        }
        if let Some((last, _)) = expired.last()
            && let Ok(mut ranking) = self.ranking.write()
        {
            ranking.drop_days_before(last + 1);
        }
        for (day, handles) in &expired {
            if let Ok(mut days) = self.days.write() {
                days.remove(day);
            }
            // Open-window markers of an expired day would point at nothing: drop them too.
            let mut markers = self.db.batch();
            for guard in self.open.iter() {
                let key = guard.key()?;
                if split_rollup_key(&key).is_some_and(|(_, _, minute)| day_of(minute) == *day) {
                    markers.remove(&self.open, key);
                }
            }
            markers.commit()?;
            if let Ok(mut open_keys) = self.open_keys.write() {
                open_keys.retain(|key| {
                    split_rollup_key(key).is_none_or(|(_, _, minute)| day_of(minute) != *day)
                });
            }
            self.db.delete_keyspace(handles.rollups.clone())?;
            self.db.delete_keyspace(handles.index.clone())?;
        }
        Ok(expired.len())
    }

    /// Approximate bytes on disk.
    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;

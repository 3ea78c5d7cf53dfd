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
//!   adding the change of each minute entry as it is rewritten).
//!
//! And three global keyspaces: `open` (the keys of windows that are still open, for
//! recovery), `merchants` (lowercased name `0x00` name → last minute with calls, for
//! suggestions) and `meta` (the checkpoint: WAL position, watermark and partition clocks).
//!
//! # Invariants
//!
//! - Only the aggregator thread writes, and every write is part of one checkpoint batch that
//!   also moves the checkpoint; the batch is atomic and synced before it is acknowledged.
//! - A window's stored rollup is final once its window closed; corrections are merged into it.
//! - Merchant names and API names hold no control characters, so `0x00` separates fields.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use mm_model::rollup::{ClassCounts, MERCHANT_TOTAL_API, Rollup, WindowKey};
use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::codec::{self, Reader, RollupState, RollupView};

const MINUTES_PER_DAY: i64 = 1440;
const CHECKPOINT_KEY: &[u8] = b"checkpoint";

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

/// A window rollup replicated from the activity topic: all calls of the window at offset
/// ≤ `covers` of aggregation partition `partition`.
#[derive(Debug, Clone, PartialEq)]
pub struct Replicated {
    pub key: WindowKey,
    pub rollup: Rollup,
    pub partition: i32,
    pub covers: i64,
    /// A provisional snapshot of a window still open (a final or correction otherwise).
    pub open: bool,
}

impl Replicated {
    /// Whether this record replaces one covering `offset` of `partition` (a snapshot of a
    /// window still open when `held_open`): it covers more of the same partition, or as much
    /// but it is the window's final record and the held one a snapshot (a partition that went
    /// idle closes its windows without moving on, so the final covers what the last snapshot
    /// did), or it comes from another partition (the topic was re-partitioned; the newest
    /// record wins).
    pub fn supersedes(&self, partition: i32, offset: i64, held_open: bool) -> bool {
        self.partition != partition
            || self.covers > offset
            || (self.covers == offset && held_open && !self.open)
    }
}

const REPLICA_POSITION_PREFIX: &str = "replica-position:";

fn covers_key(key: &WindowKey) -> Vec<u8> {
    let mut bytes = vec![b'k'];
    bytes.extend_from_slice(&rollup_key(key));
    bytes
}

/// Calls and class counts of a merchant over some minutes: what the ranking needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub classes: ClassCounts,
}

impl Totals {
    fn of(rollup: &Rollup) -> Self {
        Self {
            calls: rollup.calls,
            classes: rollup.classes(),
        }
    }

    fn fields(&self) -> [u64; 6] {
        let classes = &self.classes;
        [
            self.calls,
            classes.status_1xx,
            classes.status_2xx,
            classes.status_3xx,
            classes.status_4xx,
            classes.status_5xx,
        ]
    }

    fn from_fields(fields: [u64; 6]) -> Self {
        Self {
            calls: fields[0],
            classes: ClassCounts {
                status_1xx: fields[1],
                status_2xx: fields[2],
                status_3xx: fields[3],
                status_4xx: fields[4],
                status_5xx: fields[5],
            },
        }
    }

    /// Adds `other` field by field.
    pub fn add(&mut self, other: &Totals) {
        let sum: Vec<u64> = self
            .fields()
            .iter()
            .zip(other.fields())
            .map(|(left, right)| left + right)
            .collect();
        *self = Self::from_fields([sum[0], sum[1], sum[2], sum[3], sum[4], sum[5]]);
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12);
        for field in self.fields() {
            codec::put_varint(&mut out, field);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = Reader::new(bytes);
        let mut fields = [0u64; 6];
        for field in fields.iter_mut() {
            *field = reader
                .varint("totals")
                .map_err(|source| StorageError::Codec {
                    what: "ranking totals",
                    source,
                })?;
        }
        Ok(Self::from_fields(fields))
    }
}

/// Everything one checkpoint changes.
#[derive(Debug, Default)]
pub struct CheckpointBatch {
    /// Windows that closed, with their final rollups.
    pub finals: Vec<(WindowKey, Rollup)>,
    /// Late calls per closed window, to be added to the stored final rollups.
    pub corrections: Vec<(WindowKey, Rollup)>,
    /// Open windows that changed, written as provisional rollups.
    pub open: Vec<(WindowKey, Rollup)>,
    /// The position this batch brings the store to.
    pub checkpoint: Checkpoint,
}

/// A checkpoint ready to commit, and the records it will make final: emit these downstream
/// before committing (at-least-once), then call [`RollupStore::commit`].
pub struct PreparedCheckpoint {
    batch: fjall::OwnedWriteBatch,
    /// Final rollups of windows that closed (late calls of this same batch folded in).
    pub finals: Vec<(WindowKey, Rollup)>,
    /// Corrected final rollups of windows that had closed before this batch.
    pub corrected: Vec<(WindowKey, Rollup)>,
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

/// The store. Shared between the writer (aggregator) and readers (queries).
pub struct RollupStore {
    db: Database,
    meta: Keyspace,
    open: Keyspace,
    merchants: Keyspace,
    days: RwLock<BTreeMap<i64, Day>>,
    /// Serializes [`RollupStore::apply_replicated`] (a read-check-write per window).
    replica_lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for RollupStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RollupStore")
            .finish_non_exhaustive()
    }
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

fn index_key(tag: u8, time: i64, merchant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + merchant.len());
    key.push(tag);
    key.extend_from_slice(&sortable(time));
    key.extend_from_slice(merchant.as_bytes());
    key
}

fn day_of(minute: i64) -> i64 {
    minute.div_euclid(MINUTES_PER_DAY)
}

fn decode_error(what: &'static str) -> impl FnOnce(codec::CodecError) -> StorageError {
    move |source| StorageError::Codec { what, source }
}

impl RollupStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StorageError::io("create store directory", dir, source))?;
        let db = Database::builder(dir)
            .cache_size(256 * 1024 * 1024)
            .open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let open = db.keyspace("open", KeyspaceCreateOptions::default)?;
        let merchants = db.keyspace("merchants", KeyspaceCreateOptions::default)?;
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
        Ok(Self {
            db,
            meta,
            open,
            merchants,
            days: RwLock::new(days),
            replica_lock: std::sync::Mutex::new(()),
        })
    }

    fn day(&self, day: i64) -> Option<Day> {
        self.days.read().ok()?.get(&day).cloned()
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

    /// Whether the stored rollup of `key` is a provisional one of a window still open.
    pub fn is_open(&self, key: &WindowKey) -> Result<bool, StorageError> {
        let Some(day) = self.day(day_of(key.minute)) else {
            return Ok(false);
        };
        let Some(value) = day.rollups.get(rollup_key(key))? else {
            return Ok(false);
        };
        let (_, state) = codec::decode_rollup(&value).map_err(decode_error("stored rollup"))?;
        Ok(state == RollupState::Open)
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

    /// Builds the atomic batch for `batch`: merges corrections into the stored finals and
    /// brings the ranking index along.
    pub fn prepare(&self, batch: CheckpointBatch) -> Result<PreparedCheckpoint, StorageError> {
        let CheckpointBatch {
            mut finals,
            corrections,
            open,
            checkpoint,
        } = batch;
        let mut write = self.db.batch();
        let mut corrected = Vec::new();

        // Late calls for a window closing in this same batch go into its final record.
        let mut closing: BTreeMap<WindowKey, usize> = finals
            .iter()
            .enumerate()
            .map(|(position, (key, _))| (key.clone(), position))
            .collect();
        for (key, delta) in corrections {
            if let Some(position) = closing.get(&key) {
                finals[*position].1.merge(&delta);
                continue;
            }
            let mut total = self.stored_rollup(&key)?.unwrap_or_default();
            total.merge(&delta);
            corrected.push((key, total));
        }
        closing.clear();

        self.write_windows(
            &mut write,
            [
                (RollupState::Final, finals.as_slice()),
                (RollupState::Final, corrected.as_slice()),
                (RollupState::Open, open.as_slice()),
            ],
        )?;
        let checkpoint_bytes =
            serde_json::to_vec(&checkpoint).map_err(|error| StorageError::Corrupt {
                what: "checkpoint",
                path: self.meta.path().to_owned(),
                detail: error.to_string(),
            })?;
        write.insert(&self.meta, CHECKPOINT_KEY, checkpoint_bytes);
        Ok(PreparedCheckpoint {
            batch: write,
            finals,
            corrected,
        })
    }

    /// Applies rollups replicated from the activity topic (cluster mode) and the topic
    /// positions they bring the replica to, atomically.
    ///
    /// Each record says "every call of this window at aggregation offset ≤ `covers`", so for a
    /// window the record with the larger `covers` (from the same aggregation partition) holds
    /// everything the other does: it wins, and a record that covers no more than the stored
    /// one is skipped. Re-delivered and re-emitted records therefore never double-count.
    /// Returns how many records were written.
    ///
    /// `source` names the topic the positions belong to. Calls are serialized, so that
    /// replicas of several topics can share the store.
    pub fn apply_replicated(
        &self,
        records: Vec<Replicated>,
        source: &str,
        positions: &[(i32, i64)],
    ) -> Result<usize, StorageError> {
        let _serialized = self
            .replica_lock
            .lock()
            .map_err(|_| StorageError::Poisoned("replica lock"))?;
        // The latest version of each window in this batch.
        let mut latest: BTreeMap<WindowKey, Replicated> = BTreeMap::new();
        for record in records {
            match latest.get(&record.key) {
                Some(held) if !record.supersedes(held.partition, held.covers, held.open) => {}
                _ => {
                    latest.insert(record.key.clone(), record);
                }
            }
        }
        let mut windows = Vec::with_capacity(latest.len());
        let mut open_windows = Vec::new();
        let mut covers = Vec::with_capacity(latest.len());
        for (key, record) in latest {
            if let Some((partition, stored)) = self.covers(&key)?
                && !record.supersedes(partition, stored, self.open.contains_key(rollup_key(&key))?)
            {
                continue;
            }
            covers.push((key.clone(), record.partition, record.covers));
            if record.open {
                open_windows.push((key, record.rollup));
            } else {
                windows.push((key, record.rollup));
            }
        }
        let written = windows.len() + open_windows.len();
        let mut write = self.db.batch();
        self.write_windows(
            &mut write,
            [
                (RollupState::Final, windows.as_slice()),
                (RollupState::Open, open_windows.as_slice()),
            ],
        )?;
        for (key, partition, offset) in &covers {
            let day = self.day_or_create(day_of(key.minute))?;
            let mut value = Vec::with_capacity(12);
            value.extend_from_slice(&partition.to_be_bytes());
            value.extend_from_slice(&offset.to_be_bytes());
            write.insert(&day.index, covers_key(key), value);
        }
        for (partition, next) in positions {
            write.insert(
                &self.meta,
                format!("{REPLICA_POSITION_PREFIX}{source}:{partition}"),
                next.to_be_bytes(),
            );
        }
        write.commit()?;
        Ok(written)
    }

    /// The (aggregation partition, offset) a replicated window's stored rollup covers.
    pub fn covers(&self, key: &WindowKey) -> Result<Option<(i32, i64)>, StorageError> {
        let Some(day) = self.day(day_of(key.minute)) else {
            return Ok(None);
        };
        Ok(day.index.get(covers_key(key))?.and_then(|value| {
            let partition = i32::from_be_bytes(value.get(..4)?.try_into().ok()?);
            let offset = i64::from_be_bytes(value.get(4..12)?.try_into().ok()?);
            Some((partition, offset))
        }))
    }

    /// A replicated window's stored rollup and what it covers.
    pub fn replicated(&self, key: &WindowKey) -> Result<Option<(Rollup, i32, i64)>, StorageError> {
        let Some((partition, covers)) = self.covers(key)? else {
            return Ok(None);
        };
        Ok(self
            .stored_rollup(key)?
            .map(|rollup| (rollup, partition, covers)))
    }

    /// The positions of topic `source` the replica has applied: partition → next offset.
    pub fn replica_positions(&self, source: &str) -> Result<BTreeMap<i32, i64>, StorageError> {
        let mut positions = BTreeMap::new();
        let prefix = format!("{REPLICA_POSITION_PREFIX}{source}:");
        for guard in self.meta.prefix(&prefix) {
            let (key, value) = guard.into_inner()?;
            let partition = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|text| text.parse::<i32>().ok());
            let next = <[u8; 8]>::try_from(&value[..]).ok().map(i64::from_be_bytes);
            if let (Some(partition), Some(next)) = (partition, next) {
                positions.insert(partition, next);
            }
        }
        Ok(positions)
    }

    /// Writes windows with their index entries: the rollup, the open-window marker, the
    /// merchant-name index and the ranking index (exact minute and hour totals).
    fn write_windows<const N: usize>(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        groups: [(RollupState, &[(WindowKey, Rollup)]); N],
    ) -> Result<(), StorageError> {
        let mut hour_deltas: BTreeMap<(i64, i64, String), [i64; 6]> = BTreeMap::new();
        // The name index holds each merchant's latest minute written in this batch.
        let mut last_seen: BTreeMap<&str, i64> = BTreeMap::new();
        let mut value = Vec::with_capacity(256);
        for (state, windows) in groups {
            for (key, rollup) in windows {
                let day = self.day_or_create(day_of(key.minute))?;
                let store_key = rollup_key(key);
                value.clear();
                codec::encode_rollup(rollup, state, &mut value);
                write.insert(&day.rollups, store_key.clone(), value.as_slice());
                match state {
                    RollupState::Open => write.insert(&self.open, store_key, []),
                    RollupState::Final => write.remove(&self.open, store_key),
                }
                if key.api == MERCHANT_TOTAL_API {
                    let seen = last_seen.entry(key.merchant.as_str()).or_insert(key.minute);
                    *seen = (*seen).max(key.minute);
                    self.index_minute(write, &day, key, rollup, &mut hour_deltas)?;
                }
            }
        }
        for (merchant, minute) in last_seen {
            write.insert(
                &self.merchants,
                merchant_name_key(merchant),
                sortable(minute),
            );
        }
        for ((day, hour, merchant), delta) in hour_deltas {
            let Some(handles) = self.day(day) else {
                continue;
            };
            let hour_key = index_key(b'h', hour, &merchant);
            let previous = match handles.index.get(&hour_key)? {
                Some(bytes) => Totals::decode(&bytes)?,
                None => Totals::default(),
            };
            let mut fields = previous.fields();
            for (field, change) in fields.iter_mut().zip(delta) {
                *field = field.saturating_add_signed(change);
            }
            write.insert(
                &handles.index,
                hour_key,
                Totals::from_fields(fields).encode(),
            );
        }
        Ok(())
    }

    fn index_minute(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        day: &Day,
        key: &WindowKey,
        rollup: &Rollup,
        hour_deltas: &mut BTreeMap<(i64, i64, String), [i64; 6]>,
    ) -> Result<(), StorageError> {
        let minute_key = index_key(b'm', key.minute, &key.merchant);
        let previous = match day.index.get(&minute_key)? {
            Some(bytes) => Totals::decode(&bytes)?,
            None => Totals::default(),
        };
        let current = Totals::of(rollup);
        write.insert(&day.index, minute_key, current.encode());
        let delta = hour_deltas
            .entry((
                day_of(key.minute),
                key.minute.div_euclid(60),
                key.merchant.clone(),
            ))
            .or_default();
        for ((change, new), old) in delta
            .iter_mut()
            .zip(current.fields())
            .zip(previous.fields())
        {
            *change += new as i64 - old as i64;
        }
        Ok(())
    }

    /// Commits a prepared checkpoint atomically and durably.
    pub fn commit(&self, prepared: PreparedCheckpoint) -> Result<(), StorageError> {
        prepared
            .batch
            .durability(Some(PersistMode::SyncData))
            .commit()?;
        Ok(())
    }

    /// Visits the stored rollups of one series, minutes in `[from_minute, to_minute)`, in order.
    pub fn scan_series(
        &self,
        merchant: &str,
        api: &str,
        from_minute: i64,
        to_minute: i64,
        mut visit: impl FnMut(i64, &RollupView<'_>),
    ) -> Result<(), StorageError> {
        let prefix = series_prefix(merchant, api);
        let mut start = prefix.clone();
        start.extend_from_slice(&sortable(from_minute));
        let mut end = prefix;
        end.extend_from_slice(&sortable(to_minute));
        for (_, day) in self.days_between(from_minute, to_minute) {
            for guard in day.rollups.range(start.as_slice()..end.as_slice()) {
                let (key, value) = guard.into_inner()?;
                let minute = unsortable(&key[key.len() - 8..]).unwrap_or_default();
                let view = codec::view_rollup(&value).map_err(decode_error("stored rollup"))?;
                visit(minute, &view);
            }
        }
        Ok(())
    }

    /// Visits every stored rollup of a merchant's API series (not the merchant-wide one) with
    /// minutes in `[from_minute, to_minute)`.
    pub fn scan_merchant_apis(
        &self,
        merchant: &str,
        from_minute: i64,
        to_minute: i64,
        mut visit: impl FnMut(&str, i64, &RollupView<'_>),
    ) -> Result<(), StorageError> {
        let mut prefix = merchant.as_bytes().to_vec();
        prefix.push(0);
        for (_, day) in self.days_between(from_minute, to_minute) {
            for guard in day.rollups.prefix(&prefix) {
                let (key, value) = guard.into_inner()?;
                let Some((_, api, minute)) = split_rollup_key(&key) else {
                    continue;
                };
                if api == MERCHANT_TOTAL_API || minute < from_minute || minute >= to_minute {
                    continue;
                }
                let view = codec::view_rollup(&value).map_err(decode_error("stored rollup"))?;
                visit(api, minute, &view);
            }
        }
        Ok(())
    }

    /// Totals per merchant over `[from_minute, to_minute)`, from the ranking index: whole
    /// hours from the hour entries, the ragged ends from the minute entries.
    pub fn merchant_totals(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<BTreeMap<String, Totals>, StorageError> {
        let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
        if from_minute >= to_minute {
            return Ok(totals);
        }
        let first_full_hour = (from_minute + 59).div_euclid(60);
        let end_full_hour = to_minute.div_euclid(60);
        let mut spans: Vec<(u8, i64, i64)> = Vec::new();
        if first_full_hour < end_full_hour {
            spans.push((b'm', from_minute, first_full_hour * 60));
            spans.push((b'h', first_full_hour, end_full_hour));
            spans.push((b'm', end_full_hour * 60, to_minute));
        } else {
            spans.push((b'm', from_minute, to_minute));
        }
        for (tag, from, to) in spans {
            if from >= to {
                continue;
            }
            let (from_min, to_min) = if tag == b'h' {
                (from * 60, to * 60)
            } else {
                (from, to)
            };
            for (_, day) in self.days_between(from_min, to_min) {
                let start = index_key(tag, from, "");
                let end = index_key(tag, to, "");
                for guard in day.index.range(start.as_slice()..end.as_slice()) {
                    let (key, value) = guard.into_inner()?;
                    let Ok(merchant) = std::str::from_utf8(&key[9..]) else {
                        continue;
                    };
                    let entry = Totals::decode(&value)?;
                    match totals.get_mut(merchant) {
                        Some(existing) => existing.add(&entry),
                        None => {
                            totals.insert(merchant.to_owned(), entry);
                        }
                    }
                }
            }
        }
        Ok(totals)
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
            self.db.delete_keyspace(handles.rollups.clone())?;
            self.db.delete_keyspace(handles.index.clone())?;
        }
        Ok(expired.len())
    }

    /// The last minute with calls of a known merchant (exact name), or `None` for a merchant the
    /// store has never seen or whose data has aged out.
    pub fn merchant_last_seen(&self, merchant: &str) -> Result<Option<i64>, StorageError> {
        Ok(self
            .merchants
            .get(merchant_name_key(merchant))?
            .and_then(|value| unsortable(&value)))
    }

    /// Known merchants whose name starts with `prefix`, ignoring case, in name order.
    pub fn search_merchants(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        for guard in self.merchants.prefix(prefix.to_lowercase().as_bytes()) {
            let key = guard.key()?;
            let Some(name) = key
                .iter()
                .position(|byte| *byte == 0)
                .and_then(|separator| std::str::from_utf8(&key[separator + 1..]).ok())
            else {
                continue;
            };
            names.push(name.to_owned());
            if names.len() >= limit {
                break;
            }
        }
        Ok(names)
    }

    /// Approximate bytes on disk.
    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;

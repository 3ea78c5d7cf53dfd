//! The ranking index: per merchant, the totals of each minute and of each hour, kept exact as
//! windows are rewritten, and the merchant ranking read from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use mm_model::rollup::{ClassCounts, Rollup, WindowKey};

mod memory;

pub use memory::{Counts, MerchantCounts};
pub(super) use memory::{MemoryRanking, MinuteChange};

use super::memo::{Memo, Space, read_for_write};
use super::{Day, Store, day_of, sortable};
use crate::StorageError;
use crate::codec::{self, Reader};

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

    pub(super) fn fields(&self) -> [u64; 6] {
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

    pub(super) fn from_fields(fields: [u64; 6]) -> Self {
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

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12);
        for field in self.fields() {
            codec::put_varint(&mut out, field);
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
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

pub(super) fn index_key(tag: u8, time: i64, merchant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + merchant.len());
    key.push(tag);
    key.extend_from_slice(&sortable(time));
    key.extend_from_slice(merchant.as_bytes());
    key
}
/// Per (day, hour, merchant): how a batch changes the hour's totals.
pub(super) type HourDeltas = BTreeMap<(i64, i64, String), [i64; 6]>;

/// Index entries to write: day, key, value (the caller inserts them in key order, which the
/// memtable takes fastest).
pub(super) type IndexEntries = Vec<(i64, Vec<u8>, Vec<u8>)>;

impl Store {
    /// Indexes a merchant-wide window: its minute entry (added to `entries`), its change for
    /// the ranking in memory, and its hour's delta.
    pub(super) fn index_minute(
        &self,
        day: &Day,
        key: &WindowKey,
        rollup: &Rollup,
        (hour_deltas, changes, entries): (
            &mut HourDeltas,
            &mut Vec<MinuteChange>,
            &mut IndexEntries,
        ),
        memo: &mut Memo<'_>,
    ) -> Result<(), StorageError> {
        let minute_key = index_key(b'm', key.minute, &key.merchant);
        let stored = read_for_write(
            memo,
            day_of(key.minute),
            Space::Index,
            &day.index,
            &minute_key,
        )?;
        let previous = match stored {
            Some(bytes) => Totals::decode(&bytes)?,
            None => Totals::default(),
        };
        let current = Totals::of(rollup);
        entries.push((day_of(key.minute), minute_key, current.encode()));
        changes.push(MinuteChange {
            merchant: key.merchant.clone(),
            minute: key.minute,
            previous: Counts::of(&previous),
            current: Counts::of(&current),
        });
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

    /// Calls and server errors per merchant over `[from_minute, to_minute)` (merchants with
    /// none included), from the ranking in memory: whole days, whole hours, and the minutes at
    /// the ragged ends; minutes older than the memory's horizon are read from the index on disk.
    pub fn merchant_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MerchantCounts>, StorageError> {
        let mut sums = Vec::new();
        let memory = self
            .ranking
            .read()
            .map_err(|_| StorageError::Poisoned("ranking"))?;
        let missing = memory.sum(from_minute, to_minute, &mut sums);
        let mut counts: Vec<MerchantCounts> = sums
            .iter()
            .enumerate()
            .map(|(id, counts)| MerchantCounts {
                merchant: memory.name(id).clone(),
                counts: *counts,
            })
            .collect();
        drop(memory);
        let mut extra: BTreeMap<String, Counts> = BTreeMap::new();
        for (from, to) in missing {
            self.scan_minute_index(from, to, |merchant, totals| {
                let entry = extra.entry(merchant.to_owned()).or_default();
                entry.calls += totals.calls;
                entry.errors += totals.classes.status_5xx;
            })?;
        }
        if !extra.is_empty() {
            let position: BTreeMap<Arc<str>, usize> = counts
                .iter()
                .enumerate()
                .map(|(index, entry)| (entry.merchant.clone(), index))
                .collect();
            for (merchant, add) in extra {
                match position.get(merchant.as_str()) {
                    Some(index) => {
                        let entry = &mut counts[*index].counts;
                        entry.calls += add.calls;
                        entry.errors += add.errors;
                    }
                    None => counts.push(MerchantCounts {
                        merchant: Arc::from(merchant),
                        counts: add,
                    }),
                }
            }
        }
        Ok(counts)
    }

    /// Visits the minute entries of the index on disk in `[from_minute, to_minute)`.
    fn scan_minute_index(
        &self,
        from_minute: i64,
        to_minute: i64,
        mut visit: impl FnMut(&str, &Totals),
    ) -> Result<(), StorageError> {
        for (_, day) in self.days_between(from_minute, to_minute) {
            let start = index_key(b'm', from_minute, "");
            let end = index_key(b'm', to_minute, "");
            for guard in day.index.range(start.as_slice()..end.as_slice()) {
                let (key, value) = guard.into_inner()?;
                if let Ok(merchant) = std::str::from_utf8(&key[9..]) {
                    visit(merchant, &Totals::decode(&value)?);
                }
            }
        }
        Ok(())
    }

    /// Builds the ranking in memory from the index on disk: every hour entry, and the minute
    /// entries within the horizon of the newest one.
    pub(super) fn load_ranking(days: &BTreeMap<i64, Day>) -> Result<MemoryRanking, StorageError> {
        let mut memory = MemoryRanking::default();
        // The newest minute entry is in the newest day that has one.
        for day in days.values().rev() {
            let start = index_key(b'm', i64::MIN, "");
            let end = index_key(b'm', i64::MAX, "");
            if let Some(guard) = day
                .index
                .range(start.as_slice()..end.as_slice())
                .next_back()
            {
                let key = guard.key()?;
                if let Some(minute) = key.get(1..9).and_then(super::unsortable) {
                    memory.set_newest_minute(minute);
                    break;
                }
            }
        }
        let floor = memory.minute_floor();
        let entries = |day: &Day, tag: u8, visit: &mut dyn FnMut(&str, i64, Totals)| {
            for guard in day.index.prefix([tag]) {
                let (key, value) = guard.into_inner()?;
                if let (Some(time), Ok(merchant)) = (
                    key.get(1..9).and_then(super::unsortable),
                    std::str::from_utf8(key.get(9..).unwrap_or_default()),
                ) {
                    visit(merchant, time, Totals::decode(&value)?);
                }
            }
            Ok::<(), StorageError>(())
        };
        for (number, day) in days {
            entries(day, b'h', &mut |merchant, hour, totals| {
                memory.load_hour(merchant, hour, &totals)
            })?;
            if *number >= day_of(floor) {
                entries(day, b'm', &mut |merchant, minute, totals| {
                    memory.load_minute(merchant, minute, &totals)
                })?;
            }
        }
        Ok(memory)
    }
}

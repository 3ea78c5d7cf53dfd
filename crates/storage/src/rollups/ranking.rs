//! The ranking index: per merchant, the totals of each minute and of each hour, kept exact as
//! windows are rewritten, and the merchant ranking read from it.

use std::collections::BTreeMap;

use mm_model::rollup::{ClassCounts, Rollup, WindowKey};

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
impl Store {
    pub(super) fn index_minute(
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
}

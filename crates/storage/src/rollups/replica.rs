//! The replica side of the store (cluster mode): rollups replicated from the activity topic,
//! what each stored window covers, and the topic positions applied.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mm_model::rollup::{Rollup, WindowKey};

use super::hours::HourChange;
use super::write::WindowWrite;
use super::{Group, Store, day_of, decode_error, rollup_key};
use crate::StorageError;
use crate::codec::{self, RollupState};

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
impl Store {
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
        // How each window's final calls change, for its hour rollup: the final written at a
        // position of `windows` adds all its calls (`None`) or what it gained over the final
        // it replaced (`Some(None)`: not expressible as calls gained); the snapshot written at
        // a position of `open_windows` replaced a final.
        let mut final_growth: Vec<(usize, Option<Option<Rollup>>)> = Vec::new();
        let mut reopened: Vec<usize> = Vec::new();
        for (key, record) in latest {
            let mut stored_final = false;
            if let Some((partition, stored, held_final)) = self.covers_entry(&key)? {
                // Entries written before they recorded finality need the open-window marker.
                let held_open = match held_final {
                    Some(held_final) => !held_final,
                    None => self.open.contains_key(rollup_key(&key))?,
                };
                if !record.supersedes(partition, stored, held_open) {
                    continue;
                }
                stored_final = !held_open;
            }
            covers.push((key.clone(), record.partition, record.covers, !record.open));
            if record.open {
                if stored_final {
                    reopened.push(open_windows.len());
                }
                open_windows.push((key, record.rollup));
            } else {
                // A final replacing a final adds what it gained; otherwise all its calls.
                let growth = match stored_final {
                    true => self
                        .stored_rollup(&key)?
                        .map(|earlier| record.rollup.growth_since(&earlier)),
                    false => None,
                };
                final_growth.push((windows.len(), growth));
                windows.push((key, record.rollup));
            }
        }
        let written = windows.len() + open_windows.len();
        let mut write = self.db.batch();
        let applied = self.write_windows(
            &mut write,
            [
                (Group::Final, &WindowWrite::all(&windows)),
                (Group::Open, &WindowWrite::all(&open_windows)),
            ],
            None,
        )?;
        let hour_changes = final_growth
            .into_iter()
            .map(|(position, growth)| {
                let change = match growth {
                    None => HourChange::Add(Cow::Borrowed(&windows[position].1)),
                    Some(Some(calls)) => HourChange::Add(Cow::Owned(calls)),
                    Some(None) => HourChange::Unknown,
                };
                (&windows[position].0, change)
            })
            .chain(
                reopened
                    .into_iter()
                    .map(|position| (&open_windows[position].0, HourChange::Unknown)),
            )
            .collect();
        self.write_hours(&mut write, hour_changes, None)?;
        for (key, partition, offset, is_final) in &covers {
            let day = self.day_or_create(day_of(key.minute))?;
            let mut value = Vec::with_capacity(13);
            value.extend_from_slice(&partition.to_be_bytes());
            value.extend_from_slice(&offset.to_be_bytes());
            value.push(u8::from(*is_final));
            write.insert(&day.index, covers_key(key), value);
        }
        for (partition, next) in positions {
            write.insert(
                &self.meta,
                format!("{REPLICA_POSITION_PREFIX}{source}:{partition}"),
                next.to_be_bytes(),
            );
        }
        self.commit_batch(write, applied, None)?;
        Ok(written)
    }

    /// The (aggregation partition, offset) a replicated window's stored rollup covers.
    pub fn covers(&self, key: &WindowKey) -> Result<Option<(i32, i64)>, StorageError> {
        Ok(self
            .covers_entry(key)?
            .map(|(partition, offset, _)| (partition, offset)))
    }

    /// What a replicated window's stored rollup covers, and whether it is final (`None` for
    /// entries written before that was recorded).
    fn covers_entry(
        &self,
        key: &WindowKey,
    ) -> Result<Option<(i32, i64, Option<bool>)>, StorageError> {
        let Some(day) = self.day(day_of(key.minute)) else {
            return Ok(None);
        };
        Ok(day.index.get(covers_key(key))?.and_then(|value| {
            let partition = i32::from_be_bytes(value.get(..4)?.try_into().ok()?);
            let offset = i64::from_be_bytes(value.get(4..12)?.try_into().ok()?);
            Some((partition, offset, value.get(12).map(|flag| *flag == 1)))
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
}

//! An import's hour rollups, held back until the import has passed the hour.
//!
//! An import writes a file in units, and every unit of an hour touches most of the hour's
//! series: adding each unit to the stored hour rollups would read, merge and rewrite an
//! hour's rollups once a unit (a 2M-event file's import spent a sixth of its time there).
//! Instead, the first unit to touch a series-hour reads its stored rollup and marks it
//! *unknown* in its batch (exact: an unknown hour is read minute by minute); the stored
//! rollup plus the calls of every later unit are held in memory ([`HeldHours`]), and written
//! whole once, when a unit reaches a later hour, when too many are held, or when the import
//! ends ([`Store::release_import_hours`]).
//!
//! Each hour with held series is named in `meta` (`hour-pending:` and the hour) in the batch
//! that first holds it, and the name leaves in the batch that writes the hour's series whole.
//! An import that stops in between (a crash, a kill) leaves the marks of those hours, and the
//! next open of the store rebuilds their unknown series-hours from the final minutes
//! ([`Store::rebuild_pending_hours`]), so the hour rollups are whole again whichever runs
//! next: the import resumed, or a server.

use std::collections::{BTreeMap, BTreeSet};

use mm_model::rollup::{Rollup, WindowKey};
use rustc_hash::FxHashMap;

use super::{HOUR_TAG, HourChange, MINUTES_PER_HOUR, decode_hour, encode_hour, hour_of};
use crate::StorageError;
use crate::codec::{self, RollupState};
use crate::rollups::memo::{ImportMemo, Space, read_for_write};
use crate::rollups::{Day, Store, day_of, decode_error, sortable, split_rollup_key, unsortable};

/// The `meta` key prefix of an hour with series-hours an import marked unknown and has not
/// yet written whole.
pub(in crate::rollups) const PENDING_PREFIX: &[u8] = b"hour-pending:";
/// Series-hours held at most: past this, a unit writes every held one whole (each holds a
/// rollup with its latency sketch, a few hundred bytes).
const MAX_HELD: usize = 256 * 1024;

/// What an import holds back of the hour rollups it changes.
#[derive(Debug)]
pub(in crate::rollups) struct HeldHours {
    /// Per series-hour key: its hour, and its stored rollup plus the calls added since
    /// (`None`: unknown, left as stored).
    held: FxHashMap<Vec<u8>, (i64, Option<Rollup>)>,
    /// The hours of the held series-hours; each is marked pending in `meta`.
    pending: BTreeSet<i64>,
    /// Series-hours held at most.
    pub(in crate::rollups) max_held: usize,
}

impl Default for HeldHours {
    fn default() -> Self {
        Self {
            held: FxHashMap::default(),
            pending: BTreeSet::new(),
            max_held: MAX_HELD,
        }
    }
}

impl HeldHours {
    /// Lets every held hour go without writing it: for a store that was reopened, whose
    /// open rebuilt the pending hours from their minutes.
    pub(in crate::rollups) fn forget(&mut self) {
        self.held.clear();
        self.pending.clear();
    }
}

fn pending_key(hour: i64) -> Vec<u8> {
    let mut key = PENDING_PREFIX.to_vec();
    key.extend_from_slice(&sortable(hour));
    key
}

/// Adds a run of changes of one series-hour to its calls (`None`: unknown).
fn add_run(sum: &mut Option<Rollup>, run: &[(&WindowKey, HourChange<'_>)]) {
    for (_, change) in run {
        match (change, sum.as_mut()) {
            (HourChange::Add(calls), Some(total)) => total.merge(calls),
            (HourChange::Add(_), None) => {}
            (HourChange::Unknown, _) => *sum = None,
        }
    }
}

impl Store {
    /// Adds an import unit's hour changes to `write`: series-hours of hours before the
    /// latest one the unit changes are written whole (with what is held of them); the
    /// others are held, each marked unknown in the store the first time. Each window's calls
    /// are merged once, into the rollup its series-hour ends up as.
    pub(in crate::rollups) fn hold_hours(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        mut changes: Vec<(&WindowKey, HourChange<'_>)>,
        memo: &mut ImportMemo,
    ) -> Result<(), StorageError> {
        let Some(latest) = changes.iter().map(|(key, _)| hour_of(key.minute)).max() else {
            return Ok(());
        };
        // Each series-hour one run of changes (an import's come in key order).
        if !changes.is_sorted_by(|(left, _), (right, _)| left <= right) {
            changes.sort_by_key(|(key, _)| *key);
        }
        // Written whole in this batch: hours before the latest, or all when too many.
        let release_before = if memo.hours.held.len() + changes.len() > memo.hours.max_held {
            i64::MAX
        } else {
            latest
        };
        let mut day: Option<(i64, Day)> = None;
        let mut rest = changes.as_slice();
        while let Some(((first, _), _)) = rest.split_first() {
            let hour = hour_of(first.minute);
            let length = rest
                .iter()
                .position(|(key, _)| {
                    (key.merchant.as_str(), key.api.as_str(), hour_of(key.minute))
                        != (first.merchant.as_str(), first.api.as_str(), hour)
                })
                .unwrap_or(rest.len());
            let (run, next) = rest.split_at(length);
            rest = next;
            let key = super::hour_key(&first.merchant, &first.api, hour);
            let handles = self.day_through(&mut day, day_of(hour))?;
            if let Some((_, held)) = memo.hours.held.get_mut(&key) {
                add_run(held, run);
                if hour < release_before
                    && let Some((_, Some(sum))) = memo.hours.held.remove(&key)
                {
                    write.insert(&handles.index, key, encode_hour(&sum));
                }
                continue;
            }
            let stored = read_for_write(
                &mut Some(&mut *memo),
                day_of(hour),
                Space::Index,
                &handles.index,
                &key,
            )?;
            // Unknown stays unknown (and needs no mark).
            let mut sum = decode_hour(stored.as_deref())?;
            if hour >= release_before && sum.is_some() {
                write.insert(&handles.index, key.clone(), []);
            }
            add_run(&mut sum, run);
            if hour < release_before {
                match &sum {
                    Some(sum) => write.insert(&handles.index, key, encode_hour(sum)),
                    None => write.insert(&handles.index, key, []),
                }
            } else {
                if memo.hours.pending.insert(hour) {
                    write.insert(&self.meta, pending_key(hour), []);
                }
                memo.hours.held.insert(key, (hour, sum));
            }
        }
        self.release_held(write, memo, release_before)
    }

    /// Writes every held series-hour of an hour before `before` whole, and clears the pending
    /// mark of each hour left with none held.
    fn release_held(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        memo: &mut ImportMemo,
        before: i64,
    ) -> Result<(), StorageError> {
        let held = &mut memo.hours.held;
        let mut released: Vec<(Vec<u8>, i64, Option<Rollup>)> = held
            .extract_if(|_, (hour, _)| *hour < before)
            .map(|(key, (hour, sum))| (key, hour, sum))
            .collect();
        // By day, in key order: the memtable's inserts are cheapest so.
        released.sort_unstable_by(|left, right| {
            (day_of(left.1), &left.0).cmp(&(day_of(right.1), &right.0))
        });
        let mut day: Option<(i64, Day)> = None;
        for (key, hour, sum) in released {
            // An unknown one keeps its mark.
            if let Some(sum) = sum {
                let handles = self.day_through(&mut day, day_of(hour))?;
                write.insert(&handles.index, key, encode_hour(&sum));
            }
        }
        let still: BTreeSet<i64> = held.values().map(|(hour, _)| *hour).collect();
        let done: Vec<i64> = memo
            .hours
            .pending
            .iter()
            .copied()
            .filter(|hour| *hour < before && !still.contains(hour))
            .collect();
        for hour in done {
            memo.hours.pending.remove(&hour);
            write.remove(&self.meta, pending_key(hour));
        }
        Ok(())
    }

    /// Writes every hour rollup an import holds, whole, durably: what an import does when it
    /// ends or stops.
    pub(in crate::rollups) fn release_import_hours(
        &self,
        memo: &mut ImportMemo,
    ) -> Result<(), StorageError> {
        if memo.hours.pending.is_empty() {
            return Ok(());
        }
        let mut write = self.db.batch();
        self.release_held(&mut write, memo, i64::MAX)?;
        write
            .durability(Some(fjall::PersistMode::SyncData))
            .commit()?;
        Ok(())
    }

    /// Rebuilds, from their final minutes, the unknown series-hours of every hour an import
    /// left pending (it stopped before writing them whole), and clears the marks.
    pub(in crate::rollups) fn rebuild_pending_hours(&self) -> Result<(), StorageError> {
        let mut hours: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut marks = Vec::new();
        for guard in self.meta.prefix(PENDING_PREFIX) {
            let key = guard.key()?;
            if let Some(hour) = unsortable(&key[PENDING_PREFIX.len()..]) {
                hours.entry(day_of(hour)).or_default().push(hour);
            }
            marks.push(key.to_vec());
        }
        if marks.is_empty() {
            return Ok(());
        }
        tracing::info!(
            hours = marks.len(),
            "rebuilding the hour rollups an import left unfinished"
        );
        let mut write = self.db.batch();
        for (day, hours) in hours {
            let Some(handles) = self.day(day) else {
                continue;
            };
            self.rebuild_hours(&mut write, &handles, &hours)?;
        }
        for mark in marks {
            write.remove(&self.meta, mark);
        }
        write
            .durability(Some(fjall::PersistMode::SyncData))
            .commit()?;
        Ok(())
    }

    /// Rebuilds the unknown series-hours of `hours` (all of one day) from their final minutes.
    fn rebuild_hours(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        day: &Day,
        hours: &[i64],
    ) -> Result<(), StorageError> {
        let mut unknown = Vec::new();
        for guard in day.index.prefix([HOUR_TAG]) {
            let (key, value) = guard.into_inner()?;
            if !value.is_empty() {
                continue;
            }
            if let Some((_, _, hour)) = split_rollup_key(&key[1..])
                && hours.contains(&hour)
            {
                unknown.push(key.to_vec());
            }
        }
        for key in unknown {
            // The series prefix (`merchant 0x00 api 0x00`) and the hour.
            let (series, hour) = key[1..].split_at(key.len() - 9);
            let Some(hour) = unsortable(hour) else {
                continue;
            };
            let mut start = series.to_vec();
            start.extend_from_slice(&sortable(hour));
            let mut end = series.to_vec();
            end.extend_from_slice(&sortable(hour + MINUTES_PER_HOUR));
            let mut sum = Rollup::default();
            for guard in day.rollups.range(start..end) {
                let (_, bytes) = guard.into_inner()?;
                let view = codec::view_rollup(&bytes).map_err(decode_error("stored rollup"))?;
                if view.state == RollupState::Final && view.calls > 0 {
                    sum.merge(&view.to_rollup().map_err(decode_error("stored rollup"))?);
                }
            }
            debug_assert_eq!(hour_of(hour), hour);
            write.insert(&day.index, key, encode_hour(&sum));
        }
        Ok(())
    }
}

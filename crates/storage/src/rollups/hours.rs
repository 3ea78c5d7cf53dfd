//! Hour rollups: per series and UTC hour, the merge of the hour's closed minutes, so that a
//! query over hours or days reads one rollup per hour instead of sixty.
//!
//! # Layout and invariant
//!
//! In the day's index keyspace, `'s' merchant 0x00 api 0x00 hour(8, sortable BE)` → the merge
//! of every *final* minute rollup of that series and hour. Minutes still open are not in it: a
//! reader finds them in the store's set of open windows and adds their minute rollups. So the
//! calls of an hour are always its hour rollup plus its open minutes, read from one snapshot.
//! (The set is kept in memory because the `open` keyspace, where every closed window leaves a
//! tombstone, is slow to scan.)
//!
//! Each write that changes a final minute changes its hour in the same atomic batch by the
//! calls the minute gained: a window closing adds its whole rollup, a correction or an
//! imported addition adds just those calls, a replicated final replacing an earlier final
//! adds [`Rollup::growth_since`]. A change that cannot be expressed as calls gained (a final
//! minute replaced by one that does not hold it) marks the hour *unknown* (an empty value);
//! such an hour stays unknown and is read minute by minute, which is always exact.
//!
//! An import is the exception to "in the same batch": it holds its hours back and writes each
//! whole once it has passed it, marking them unknown meanwhile ([`held`]); an import that
//! stopped before that leaves them to be rebuilt when the store next opens.
//!
//! Stores written before hour rollups existed get them built once, when they are opened.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use fjall::{Readable, Slice, Snapshot};
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};

use super::memo::{Memo, Space, must_read, read_for_write};
use super::{
    Day, MINUTES_PER_DAY, Store, day_of, decode_error, rollup_key, series_prefix, sortable,
    split_rollup_key, unsortable,
};
use crate::StorageError;
use crate::codec::{self, RollupState, RollupView};

const MINUTES_PER_HOUR: i64 = 60;
/// The `meta` key saying every final minute is in its hour rollup (stores written before hour
/// rollups existed lack it until they are built).
const HOURS_BUILT_KEY: &[u8] = b"hour-rollups";
const HOUR_TAG: u8 = b's';

/// How a write changes the hour of one window.
pub(super) enum HourChange<'a> {
    /// The window's final calls grew by these.
    Add(Cow<'a, Rollup>),
    /// The window's final calls changed in a way not expressible as calls gained.
    Unknown,
}

/// Which series of a merchant a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series<'a> {
    /// One series: an API, or [`MERCHANT_TOTAL_API`] for the merchant-wide one.
    One(&'a str),
    /// Every API series of the merchant (not the merchant-wide one).
    EveryApi,
}

fn hour_of(minute: i64) -> i64 {
    minute.div_euclid(MINUTES_PER_HOUR) * MINUTES_PER_HOUR
}

fn hour_key(merchant: &str, api: &str, hour: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(merchant.len() + api.len() + 11);
    key.push(HOUR_TAG);
    key.extend_from_slice(&series_prefix(merchant, api));
    key.extend_from_slice(&sortable(hour));
    key
}

/// Per series-hour (its key), the hour and the calls the `changes` add to it (`None`: the
/// hour becomes unknown). Consecutive changes of one series-hour (an import's come in key
/// order) are summed before its entry is looked up.
fn sum_changes(
    changes: Vec<(&WindowKey, HourChange<'_>)>,
) -> BTreeMap<Vec<u8>, (i64, Option<Rollup>)> {
    let mut grown: BTreeMap<Vec<u8>, (i64, Option<Rollup>)> = BTreeMap::new();
    let settle =
        |grown: &mut BTreeMap<Vec<u8>, (i64, Option<Rollup>)>,
         (merchant, api, hour, gained): (&str, &str, i64, Option<Rollup>)| {
            let entry = match grown.entry(hour_key(merchant, api, hour)) {
                Entry::Vacant(vacant) => {
                    vacant.insert((hour, gained));
                    return;
                }
                Entry::Occupied(occupied) => occupied.into_mut(),
            };
            match (gained, &mut entry.1) {
                (Some(calls), Some(sum)) => sum.merge(&calls),
                (Some(_), None) => {}
                (None, slot) => *slot = None,
            }
        };
    let mut run: Option<(&str, &str, i64, Option<Rollup>)> = None;
    for (key, change) in changes {
        let hour = hour_of(key.minute);
        if let Some((merchant, api, run_hour, _)) = &run
            && (*merchant, *api, *run_hour) != (key.merchant.as_str(), key.api.as_str(), hour)
            && let Some(done) = run.take()
        {
            settle(&mut grown, done);
        }
        let (_, _, _, gained) =
            run.get_or_insert_with(|| (&key.merchant, &key.api, hour, Some(Rollup::default())));
        match (change, gained) {
            (HourChange::Add(calls), Some(sum)) => sum.merge(&calls),
            (HourChange::Add(_), None) => {}
            (HourChange::Unknown, slot) => *slot = None,
        }
    }
    if let Some(done) = run {
        settle(&mut grown, done);
    }
    grown
}

/// A stored hour rollup: `None` when the hour is unknown (an empty value), empty when absent.
fn decode_hour(stored: Option<&[u8]>) -> Result<Option<Rollup>, StorageError> {
    match stored {
        Some([]) => Ok(None),
        Some(bytes) => Ok(Some(
            codec::decode_rollup(bytes)
                .map_err(decode_error("hour rollup"))?
                .0,
        )),
        None => Ok(Some(Rollup::default())),
    }
}

fn encode_hour(sum: &Rollup) -> Vec<u8> {
    let mut value = Vec::with_capacity(256);
    codec::encode_rollup(sum, RollupState::Final, &mut value);
    value
}

/// What one scan found for a series-hour.
#[derive(Default)]
struct HourParts {
    /// The hour rollup; empty when the hour is unknown.
    hour: Option<Slice>,
    /// Minutes of the hour still open.
    open: Vec<i64>,
}

impl Store {
    /// Adds the hour changes of a batch of window writes to `write`: one read-modify-write per
    /// series-hour.
    pub(super) fn write_hours(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        changes: Vec<(&WindowKey, HourChange<'_>)>,
        mut memo: Memo<'_>,
    ) -> Result<(), StorageError> {
        let mut day: Option<(i64, Day)> = None;
        for (key, (hour, calls)) in sum_changes(changes) {
            let handles = self.day_through(&mut day, day_of(hour))?;
            self.add_to_hour(write, &mut memo, &handles, key, hour, calls)?;
        }
        Ok(())
    }

    /// Adds `calls` to the series-hour `key` as stored (`None`: marks it unknown).
    fn add_to_hour(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        memo: &mut Memo<'_>,
        handles: &Day,
        key: Vec<u8>,
        hour: i64,
        calls: Option<Rollup>,
    ) -> Result<(), StorageError> {
        let Some(calls) = calls else {
            // Written without a read, but remembered: a later read must find the mark.
            must_read(memo, day_of(hour), Space::Index, &key);
            write.insert(&handles.index, key, []);
            return Ok(());
        };
        let stored = read_for_write(memo, day_of(hour), Space::Index, &handles.index, &key)?;
        let Some(mut sum) = decode_hour(stored.as_deref())? else {
            // Unknown stays unknown.
            return Ok(());
        };
        sum.merge(&calls);
        write.insert(&handles.index, key, encode_hour(&sum));
        Ok(())
    }

    /// Builds the hour rollups of a store written before they existed, from its final minutes;
    /// does nothing when they are built. Each day's hours are written whole (not added to), so
    /// an interrupted build is simply done again at the next open.
    pub(super) fn build_hours_if_missing(&self) -> Result<(), StorageError> {
        if self.meta.get(HOURS_BUILT_KEY)?.is_some() {
            return Ok(());
        }
        let days: Vec<(i64, Day)> = match self.days.read() {
            Ok(days) => days
                .iter()
                .map(|(day, handles)| (*day, handles.clone()))
                .collect(),
            Err(_) => return Err(StorageError::Poisoned("store days")),
        };
        if !days.is_empty() {
            tracing::info!(
                days = days.len(),
                "building hour rollups for a store written before they existed (once)"
            );
        }
        let mut value = Vec::with_capacity(256);
        for (_, day) in days {
            let mut write = self.db.batch();
            let mut current: Option<(Vec<u8>, Rollup)> = None;
            let mut pending = 0usize;
            for guard in day.rollups.iter() {
                let (key, bytes) = guard.into_inner()?;
                let Some((merchant, api, minute)) = split_rollup_key(&key) else {
                    continue;
                };
                let view = codec::view_rollup(&bytes).map_err(decode_error("stored rollup"))?;
                if view.state != RollupState::Final || view.calls == 0 {
                    continue;
                }
                let rollup = view.to_rollup().map_err(decode_error("stored rollup"))?;
                let target = hour_key(merchant, api, hour_of(minute));
                match &mut current {
                    Some((held, sum)) if *held == target => sum.merge(&rollup),
                    _ => {
                        if let Some((held, sum)) = current.replace((target, rollup)) {
                            value.clear();
                            codec::encode_rollup(&sum, RollupState::Final, &mut value);
                            write.insert(&day.index, held, value.as_slice());
                            pending += 1;
                        }
                    }
                }
                if pending >= 50_000 {
                    std::mem::replace(&mut write, self.db.batch()).commit()?;
                    pending = 0;
                }
            }
            if let Some((held, sum)) = current {
                value.clear();
                codec::encode_rollup(&sum, RollupState::Final, &mut value);
                write.insert(&day.index, held, value.as_slice());
            }
            write.commit()?;
        }
        self.meta.insert(HOURS_BUILT_KEY, [1])?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// Visits the calls of `series` of `merchant` in `[from_minute, to_minute)`, all read from
    /// one snapshot: the minutes of a partial hour at either end one by one (at their minute),
    /// and each whole hour as its hour rollup plus its open minutes (all at the hour's first
    /// minute; an unknown hour's minutes one by one). Together the visited rollups hold every
    /// call of the range exactly once, so a caller bucketing by whole hours (or days) merges
    /// them into exact buckets. Pieces of one series come in time order.
    pub fn scan_hours(
        &self,
        merchant: &str,
        series: Series<'_>,
        from_minute: i64,
        to_minute: i64,
        mut visit: impl FnMut(&str, i64, &RollupView<'_>),
    ) -> Result<(), StorageError> {
        if from_minute >= to_minute {
            return Ok(());
        }
        let first_hour = hour_of(from_minute + MINUTES_PER_HOUR - 1);
        let end_hour = hour_of(to_minute).max(first_hour);
        let whole = first_hour..end_hour;
        let wanted = |api: &str| match series {
            Series::One(one) => api == one,
            Series::EveryApi => api != MERCHANT_TOTAL_API,
        };
        let mut prefix = merchant.as_bytes().to_vec();
        prefix.push(0);
        if let Series::One(api) = series {
            prefix.extend_from_slice(api.as_bytes());
            prefix.push(0);
        }
        // The snapshot is taken while the set of open windows cannot change, so every window
        // open in the snapshot is among the keys read with it (some may have closed since).
        let (snapshot, open) = {
            let open_keys = self
                .open_keys
                .read()
                .map_err(|_| StorageError::Poisoned("open windows"))?;
            let snapshot = self.db.snapshot();
            let open: Vec<(String, i64)> = open_keys
                .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
                .take_while(|key| key.starts_with(&prefix))
                .filter_map(|key| {
                    let (_, api, minute) = split_rollup_key(key)?;
                    (wanted(api) && (from_minute..to_minute).contains(&minute))
                        .then(|| (api.to_owned(), minute))
                })
                .collect();
            (snapshot, open)
        };

        // Every hour entry the range touches: the whole hours' rollups, and the APIs with final
        // calls in a partial hour (a final minute always has an entry for its hour).
        let mut parts: BTreeMap<(String, i64), HourParts> = BTreeMap::new();
        let mut partial_apis: BTreeSet<String> = BTreeSet::new();
        let mut hour_prefix = vec![HOUR_TAG];
        hour_prefix.extend_from_slice(&prefix);
        let touched = hour_of(from_minute)..to_minute;
        for (day_number, day) in self.days_between(touched.start, touched.end) {
            let from = touched.start.max(day_number * MINUTES_PER_DAY);
            let to = touched.end.min((day_number + 1) * MINUTES_PER_DAY);
            let entries = match series {
                Series::One(_) => {
                    let mut start = hour_prefix.clone();
                    start.extend_from_slice(&sortable(from));
                    let mut end = hour_prefix.clone();
                    end.extend_from_slice(&sortable(to));
                    snapshot.range(&day.index, start.as_slice()..end.as_slice())
                }
                Series::EveryApi => snapshot.prefix(&day.index, &hour_prefix),
            };
            for guard in entries {
                let (key, value) = guard.into_inner()?;
                let Some((_, api, hour)) = split_rollup_key(&key[1..]) else {
                    continue;
                };
                if !wanted(api) || !(from..to).contains(&hour) {
                    continue;
                }
                if whole.contains(&hour) {
                    parts.entry((api.to_owned(), hour)).or_default().hour = Some(value);
                } else if !partial_apis.contains(api) {
                    partial_apis.insert(api.to_owned());
                }
            }
        }
        for (api, minute) in open {
            if whole.contains(&minute) {
                let hour = hour_of(minute);
                parts.entry((api, hour)).or_default().open.push(minute);
            } else {
                partial_apis.insert(api);
            }
        }
        if let Series::One(api) = series {
            partial_apis = BTreeSet::from([api.to_owned()]);
        }

        // The partial hour at the start, the whole hours, the partial hour at the end.
        let head = from_minute..first_hour.min(to_minute);
        let tail = end_hour.max(head.end)..to_minute;
        self.visit_minutes(&snapshot, merchant, &partial_apis, head, &mut visit)?;
        let mut day: Option<(i64, Day)> = None;
        for ((api, hour), found) in parts {
            let handles = match &day {
                Some((number, handles)) if *number == day_of(hour) => handles.clone(),
                _ => {
                    let Some(handles) = self.day(day_of(hour)) else {
                        continue;
                    };
                    day = Some((day_of(hour), handles.clone()));
                    handles
                }
            };
            match &found.hour {
                Some(value) if value.is_empty() => {
                    scan_series_minutes(
                        &snapshot,
                        &handles,
                        merchant,
                        &api,
                        hour..hour + MINUTES_PER_HOUR,
                        &mut visit,
                    )?;
                    continue;
                }
                Some(value) => {
                    let view = codec::view_rollup(value).map_err(decode_error("hour rollup"))?;
                    visit(&api, hour, &view);
                }
                None => {}
            }
            for minute in found.open {
                let key = rollup_key(&WindowKey {
                    merchant: merchant.to_owned(),
                    api: api.clone(),
                    minute,
                });
                if let Some(value) = snapshot.get(&handles.rollups, key)? {
                    let view = codec::view_rollup(&value).map_err(decode_error("stored rollup"))?;
                    // A window that closed is in its hour rollup already.
                    if view.state == RollupState::Open {
                        visit(&api, hour, &view);
                    }
                }
            }
        }
        self.visit_minutes(&snapshot, merchant, &partial_apis, tail, &mut visit)
    }

    /// The minute rollups of each of `apis` in `minutes` (within one day).
    fn visit_minutes(
        &self,
        snapshot: &Snapshot,
        merchant: &str,
        apis: &BTreeSet<String>,
        minutes: std::ops::Range<i64>,
        visit: &mut impl FnMut(&str, i64, &RollupView<'_>),
    ) -> Result<(), StorageError> {
        if minutes.is_empty() {
            return Ok(());
        }
        let Some(day) = self.day(day_of(minutes.start)) else {
            return Ok(());
        };
        for api in apis {
            scan_series_minutes(snapshot, &day, merchant, api, minutes.clone(), visit)?;
        }
        Ok(())
    }
}

/// The minute rollups of one series in one day.
fn scan_series_minutes(
    snapshot: &Snapshot,
    day: &Day,
    merchant: &str,
    api: &str,
    minutes: std::ops::Range<i64>,
    visit: &mut impl FnMut(&str, i64, &RollupView<'_>),
) -> Result<(), StorageError> {
    let prefix = series_prefix(merchant, api);
    let mut start = prefix.clone();
    start.extend_from_slice(&sortable(minutes.start));
    let mut end = prefix;
    end.extend_from_slice(&sortable(minutes.end));
    for guard in snapshot.range(&day.rollups, start.as_slice()..end.as_slice()) {
        let (key, value) = guard.into_inner()?;
        let minute = unsortable(&key[key.len() - 8..]).unwrap_or_default();
        let view = codec::view_rollup(&value).map_err(decode_error("stored rollup"))?;
        visit(api, minute, &view);
    }
    Ok(())
}

mod held;

pub(super) use held::HeldHours;

#[cfg(test)]
mod tests;

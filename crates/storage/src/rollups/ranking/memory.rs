//! The merchant ranking in memory: calls and server errors per merchant for every day and hour
//! the store holds and for the minutes of the last [`MINUTE_HORIZON`], so that a ranking over
//! any range adds up at most a few hundred thousand small integers instead of reading the
//! index from disk.
//!
//! The ranking index on disk (`i{day}`: minute and hour entries) stays the source of truth:
//! this is loaded from it when the store opens and changed only after a checkpoint that
//! changes it has committed, by the same minute changes. Minutes older than the horizon are
//! read from disk (at most the ragged minutes at the start of an old range).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::Totals;

/// How far back from the newest minute written the minutes are kept in memory.
pub(crate) const MINUTE_HORIZON: i64 = 48 * 60;

/// Calls and server errors (5xx), what the ranking sorts by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub errors: u64,
}

impl Counts {
    pub(crate) fn of(totals: &Totals) -> Self {
        Self {
            calls: totals.calls,
            errors: totals.classes.status_5xx,
        }
    }
}

/// One merchant's counts over a range.
#[derive(Debug, Clone)]
pub struct MerchantCounts {
    pub merchant: Arc<str>,
    pub counts: Counts,
}

/// Per merchant id, its counts in one day, hour or minute. Sorted by id.
#[derive(Debug, Default, Clone)]
struct Bucket {
    entries: Vec<(u32, Counts)>,
}

impl Bucket {
    fn entry(&mut self, id: u32) -> &mut Counts {
        let position = match self.entries.binary_search_by_key(&id, |(entry, _)| *entry) {
            Ok(position) => position,
            Err(position) => {
                self.entries.insert(position, (id, Counts::default()));
                position
            }
        };
        &mut self.entries[position].1
    }

    fn add(&mut self, id: u32, calls: i64, errors: i64) {
        self.entry(id).add(calls, errors);
    }

    /// Applies `changes` in order, as many [`Bucket::entry`] calls would: the ids already
    /// held in place, the new ones merged in with one pass over the entries. Inserting them
    /// one by one moved the entries after each, which a batch with many merchants new to the
    /// bucket (an import's hour and day, every minute) paid for quadratically.
    fn apply_all(&mut self, changes: Vec<(u32, Change)>) {
        let mut new: Vec<(u32, Change)> = Vec::new();
        for (id, change) in changes {
            match self.entries.binary_search_by_key(&id, |(entry, _)| *entry) {
                Ok(position) => change.apply(&mut self.entries[position].1),
                Err(_) => new.push((id, change)),
            }
        }
        if new.is_empty() {
            return;
        }
        // Stable: the changes of one id stay in their order.
        new.sort_by_key(|(id, _)| *id);
        let mut added: Vec<(u32, Counts)> = Vec::new();
        for (id, change) in new {
            if added.last().is_none_or(|(last, _)| *last != id) {
                added.push((id, Counts::default()));
            }
            if let Some((_, counts)) = added.last_mut() {
                change.apply(counts);
            }
        }
        // Two sorted runs of distinct ids: the sort finds them and merges them in one pass.
        self.entries.extend(added);
        self.entries.sort_by_key(|(id, _)| *id);
    }

    fn add_into(&self, sums: &mut [Counts]) {
        for (id, counts) in &self.entries {
            let sum = &mut sums[*id as usize];
            sum.calls += counts.calls;
            sum.errors += counts.errors;
        }
    }
}

impl Counts {
    fn add(&mut self, calls: i64, errors: i64) {
        self.calls = self.calls.saturating_add_signed(calls);
        self.errors = self.errors.saturating_add_signed(errors);
    }
}

/// What a minute change does to a bucket's counts: an hour or a day adds the difference, a
/// minute takes the new totals.
#[derive(Debug, Clone, Copy)]
enum Change {
    Add { calls: i64, errors: i64 },
    Set(Counts),
}

impl Change {
    fn apply(self, counts: &mut Counts) {
        match self {
            Change::Add { calls, errors } => counts.add(calls, errors),
            Change::Set(totals) => *counts = totals,
        }
    }
}

/// A merchant-minute whose index entry a checkpoint rewrote: its totals before and after.
#[derive(Debug, Clone)]
pub(crate) struct MinuteChange {
    pub merchant: String,
    pub minute: i64,
    pub previous: Counts,
    pub current: Counts,
}

/// The in-memory ranking.
#[derive(Debug, Default)]
pub(crate) struct MemoryRanking {
    names: Vec<Arc<str>>,
    ids: FxHashMap<Arc<str>, u32>,
    days: BTreeMap<i64, Bucket>,
    hours: BTreeMap<i64, Bucket>,
    minutes: BTreeMap<i64, Bucket>,
    /// The newest minute written: minutes before `newest - MINUTE_HORIZON` are not kept.
    newest_minute: i64,
}

/// What [`MemoryRanking::sum`] could not answer from memory: minute ranges to read from disk.
pub(crate) type MissingMinutes = Vec<(i64, i64)>;

impl MemoryRanking {
    fn id(&mut self, merchant: &str) -> u32 {
        if let Some(id) = self.ids.get(merchant) {
            return *id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(merchant);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The first minute kept in memory.
    pub(crate) fn minute_floor(&self) -> i64 {
        self.newest_minute.saturating_sub(MINUTE_HORIZON)
    }

    /// Loads an hour entry of the index on disk (at open).
    pub(crate) fn load_hour(&mut self, merchant: &str, hour: i64, totals: &Totals) {
        let id = self.id(merchant);
        let counts = Counts::of(totals);
        *self.hours.entry(hour).or_default().entry(id) = counts;
        let day = self.days.entry(hour.div_euclid(24)).or_default();
        day.add(id, counts.calls as i64, counts.errors as i64);
    }

    /// Loads a minute entry of the index on disk (at open), if it is within the horizon of
    /// `newest_minute`.
    pub(crate) fn load_minute(&mut self, merchant: &str, minute: i64, totals: &Totals) {
        if minute < self.minute_floor() {
            return;
        }
        let id = self.id(merchant);
        *self.minutes.entry(minute).or_default().entry(id) = Counts::of(totals);
    }

    /// Sets the newest minute before loading (the last minute with an entry on disk).
    pub(crate) fn set_newest_minute(&mut self, minute: i64) {
        self.newest_minute = self.newest_minute.max(minute);
    }

    /// Applies the minute changes of a committed checkpoint (or import unit), grouped by the
    /// day, hour and minute they change, each group in one pass over its bucket.
    pub(crate) fn apply(&mut self, changes: &[MinuteChange]) {
        type Groups = FxHashMap<i64, Vec<(u32, Change)>>;
        let (mut days, mut hours, mut minutes) =
            (Groups::default(), Groups::default(), Groups::default());
        for change in changes {
            let id = self.id(&change.merchant);
            let add = Change::Add {
                calls: change.current.calls as i64 - change.previous.calls as i64,
                errors: change.current.errors as i64 - change.previous.errors as i64,
            };
            let hour = change.minute.div_euclid(60);
            hours.entry(hour).or_default().push((id, add));
            days.entry(hour.div_euclid(24)).or_default().push((id, add));
            minutes
                .entry(change.minute)
                .or_default()
                .push((id, Change::Set(change.current)));
            self.newest_minute = self.newest_minute.max(change.minute);
        }
        for (levels, groups) in [(&mut self.days, days), (&mut self.hours, hours)] {
            for (key, group) in groups {
                levels.entry(key).or_default().apply_all(group);
            }
        }
        // Minutes below the floor are not kept (the floor only rises within a batch, so this
        // keeps what checking each change against the floor of its time would have kept).
        let floor = self.minute_floor();
        for (minute, group) in minutes {
            if minute >= floor {
                self.minutes.entry(minute).or_default().apply_all(group);
            }
        }
        while self
            .minutes
            .first_key_value()
            .is_some_and(|(minute, _)| *minute < floor)
        {
            self.minutes.pop_first();
        }
    }

    /// Forgets every day before `first_kept_day` (retention dropped them on disk).
    pub(crate) fn drop_days_before(&mut self, first_kept_day: i64) {
        self.days = self.days.split_off(&first_kept_day);
        self.hours = self.hours.split_off(&(first_kept_day * 24));
        self.minutes = self.minutes.split_off(&(first_kept_day * 24 * 60));
    }

    /// Adds up every merchant's counts over `[from_minute, to_minute)` into `sums` (indexed by
    /// merchant id, grown to the number of merchants); returns the minute ranges older than
    /// the horizon, which the caller reads from disk.
    pub(crate) fn sum(
        &self,
        from_minute: i64,
        to_minute: i64,
        sums: &mut Vec<Counts>,
    ) -> MissingMinutes {
        sums.clear();
        sums.resize(self.names.len(), Counts::default());
        let mut missing = Vec::new();
        if from_minute >= to_minute {
            return missing;
        }
        let mut minutes = |from: i64, to: i64, missing: &mut MissingMinutes| {
            if from >= to {
                return;
            }
            let floor = self.minute_floor();
            if from < floor {
                missing.push((from, to.min(floor)));
            }
            if from.max(floor) < to {
                for (_, bucket) in self.minutes.range(from.max(floor)..to) {
                    bucket.add_into(sums);
                }
            }
        };
        // Whole days, whole hours around them, minutes at the ragged ends.
        let first_hour = (from_minute + 59).div_euclid(60);
        let end_hour = to_minute.div_euclid(60);
        if first_hour >= end_hour {
            minutes(from_minute, to_minute, &mut missing);
            return missing;
        }
        minutes(from_minute, first_hour * 60, &mut missing);
        minutes(end_hour * 60, to_minute, &mut missing);
        let first_day = (first_hour + 23).div_euclid(24);
        let end_day = end_hour.div_euclid(24);
        let hours = |from: i64, to: i64, sums: &mut Vec<Counts>| {
            for (_, bucket) in self.hours.range(from..to) {
                bucket.add_into(sums);
            }
        };
        if first_day >= end_day {
            hours(first_hour, end_hour, sums);
            return missing;
        }
        hours(first_hour, first_day * 24, sums);
        hours(end_day * 24, end_hour, sums);
        for (_, bucket) in self.days.range(first_day..end_day) {
            bucket.add_into(sums);
        }
        missing
    }

    /// The merchant of an id.
    pub(crate) fn name(&self, id: usize) -> &Arc<str> {
        &self.names[id]
    }

    /// The id of a merchant, if it was ever seen.
    #[cfg(test)]
    pub(crate) fn known(&self, merchant: &str) -> Option<u32> {
        self.ids.get(merchant).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(
        merchant: &str,
        minute: i64,
        previous: (u64, u64),
        current: (u64, u64),
    ) -> MinuteChange {
        MinuteChange {
            merchant: merchant.into(),
            minute,
            previous: Counts {
                calls: previous.0,
                errors: previous.1,
            },
            current: Counts {
                calls: current.0,
                errors: current.1,
            },
        }
    }

    /// A seeded sequence of pseudo-random numbers.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// Every level of the sum against a plain per-minute fold, over every range of a few days.
    #[test]
    fn sums_over_any_range_match_the_minutes() {
        let mut ranking = MemoryRanking::default();
        let mut truth: BTreeMap<(i64, &str), (u64, u64)> = BTreeMap::new();
        let merchants = ["a", "b", "c"];
        let start = 1_000 * 1440;
        let mut next = xorshift(7u64);
        // 47 hours of minutes over three days (within the horizon), some rewritten
        // (corrections), in time order.
        let (first, end) = (start - 60, start + 2760);
        for minute in (first..end).step_by(7) {
            for merchant in merchants {
                if next().is_multiple_of(3) {
                    continue;
                }
                let previous = truth.get(&(minute, merchant)).copied().unwrap_or_default();
                let current = (previous.0 + next() % 50 + 1, previous.1 + next() % 3);
                truth.insert((minute, merchant), current);
                ranking.apply(&[change(merchant, minute, previous, current)]);
                if next().is_multiple_of(5) {
                    let late = (current.0 + 2, current.1 + 1);
                    truth.insert((minute, merchant), late);
                    ranking.apply(&[change(merchant, minute, current, late)]);
                }
            }
        }
        assert_sums_match(&ranking, &truth, &merchants, (first, end));
    }

    /// Every merchant's sum over many ranges of `[first, end)` (and a little around it)
    /// against the fold of `truth`, each minute's last totals.
    fn assert_sums_match(
        ranking: &MemoryRanking,
        truth: &BTreeMap<(i64, &str), (u64, u64)>,
        merchants: &[&str],
        (first, end): (i64, i64),
    ) {
        let mut sums = Vec::new();
        let mut checked = 0;
        for from in (first - 30..end + 30).step_by(97) {
            for to in (from..end + 30).step_by(131) {
                let missing = ranking.sum(from, to, &mut sums);
                assert!(
                    missing.is_empty() || from < first,
                    "47 hours are within the horizon"
                );
                let mut wants: FxHashMap<&str, (u64, u64)> = FxHashMap::default();
                for ((_, name), counts) in truth.range((from, "")..(to, "")) {
                    let want = wants.entry(name).or_default();
                    *want = (want.0 + counts.0, want.1 + counts.1);
                }
                for merchant in merchants {
                    let want = wants.get(merchant).copied().unwrap_or_default();
                    let got = ranking.known(merchant).map_or((0, 0), |id| {
                        let counts = sums[id as usize];
                        (counts.calls, counts.errors)
                    });
                    assert_eq!(got, want, "{merchant} over [{from}, {to})");
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000);
    }

    /// Batches as an import commits them: many merchants, most new to the day, hour and
    /// minute they change (their ids interleaving with the ones held), some merchant-minute
    /// changed twice in one batch.
    #[test]
    fn a_batch_of_many_merchants_adds_up_as_its_changes_one_by_one() {
        let mut ranking = MemoryRanking::default();
        let mut truth: BTreeMap<(i64, &str), (u64, u64)> = BTreeMap::new();
        let names: Vec<String> = (0..400).map(|index| format!("m{index:03}")).collect();
        let merchants: Vec<&str> = names.iter().map(String::as_str).collect();
        let start = 1_000 * 1440;
        let (first, end) = (start - 60, start + 2760);
        let mut next = xorshift(11u64);
        for _batch in 0..6 {
            let mut batch = Vec::new();
            for _ in 0..1_500 {
                let merchant = merchants[(next() % 400) as usize];
                let minute = first + (next() % (end - first) as u64) as i64;
                let previous = truth.get(&(minute, merchant)).copied().unwrap_or_default();
                let current = (previous.0 + next() % 50 + 1, previous.1 + next() % 3);
                truth.insert((minute, merchant), current);
                batch.push(change(merchant, minute, previous, current));
            }
            ranking.apply(&batch);
        }
        assert!(
            ranking.known("m000").is_some() && ranking.known("m399").is_some(),
            "every merchant seen"
        );
        assert_sums_match(&ranking, &truth, &merchants, (first, end));
    }

    #[test]
    fn minutes_older_than_the_horizon_are_left_to_the_caller() {
        let mut ranking = MemoryRanking::default();
        let old = 5_000 * 1440 + 17;
        ranking.apply(&[change("a", old, (0, 0), (4, 1))]);
        ranking.apply(&[change("a", old + MINUTE_HORIZON + 600, (0, 0), (6, 0))]);
        let mut sums = Vec::new();
        // A range starting in the old minute's hour: its minutes are no longer in memory.
        let missing = ranking.sum(old, old + MINUTE_HORIZON + 601, &mut sums);
        assert_eq!(missing, vec![(old, (old / 60 + 1) * 60)]);
        assert_eq!(sums[0].calls, 6, "the old minute is for the caller to add");
        // Whole hours still count it.
        let hour_start = old / 60 * 60;
        ranking.sum(hour_start, old + MINUTE_HORIZON + 601, &mut sums);
        assert_eq!(sums[0].calls, 10);
    }

    #[test]
    fn retention_forgets_whole_days() {
        let mut ranking = MemoryRanking::default();
        ranking.apply(&[change("a", 10 * 1440 + 5, (0, 0), (3, 0))]);
        ranking.apply(&[change("a", 11 * 1440 + 5, (0, 0), (4, 0))]);
        ranking.drop_days_before(11);
        let mut sums = Vec::new();
        ranking.sum(9 * 1440, 13 * 1440, &mut sums);
        assert_eq!(sums[0].calls, 4);
    }
}

//! Rollups: what one (merchant, api, minute) window knows, and how rollups merge.
//!
//! Every field merges exactly: counts add, min and max take the extreme, the latency sum is
//! kept in integer microseconds so it adds without floating-point drift, and the sketch merges
//! bin by bin. Merging rollups in any order and grouping gives the same result, which is what
//! lets a time range of any length be answered from its minutes.

use crate::sketch::LatencySketch;

/// Identifies a window: one merchant, one API, one UTC minute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub merchant: String,
    /// The API name; [`MERCHANT_TOTAL_API`] for the merchant-wide total over all APIs.
    pub api: String,
    /// Minute number since the epoch (see [`crate::time::minute_of`]).
    pub minute: i64,
}

/// The `api` of a merchant-wide series, which sums all of the merchant's APIs. API names are
/// never empty, so it cannot collide with a real API.
pub const MERCHANT_TOTAL_API: &str = "";

/// Status code classes reported separately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCounts {
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
}

/// The aggregate of the calls of one window (or of a merge of windows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    /// Number of calls.
    pub calls: u64,
    /// Calls per exact status code, sorted by code.
    pub status: Vec<(u16, u64)>,
    /// Sum of latencies in whole microseconds (rounded per call).
    pub latency_sum_us: u64,
    /// Smallest latency in microseconds (0 when empty).
    pub latency_min_us: u64,
    /// Largest latency in microseconds (0 when empty).
    pub latency_max_us: u64,
    /// Latency distribution.
    pub sketch: LatencySketch,
}

/// Latency in whole microseconds, as rollups keep it.
pub fn latency_micros(latency_ms: f64) -> u64 {
    if latency_ms.is_nan() || latency_ms <= 0.0 {
        return 0;
    }
    (latency_ms * 1000.0).round() as u64
}

impl Rollup {
    /// Records one call.
    pub fn record(&mut self, status: u16, latency_ms: f64) {
        self.record_prepared(
            status,
            latency_micros(latency_ms),
            crate::sketch::bin_for(latency_ms),
        );
    }

    /// Records one call whose latency was already converted ([`latency_micros`]) and mapped
    /// to its sketch bin ([`crate::sketch::bin_for`]); lets a caller that counts one call into
    /// several rollups do that work once.
    pub fn record_prepared(&mut self, status: u16, latency_us: u64, bin: Option<i16>) {
        if self.calls == 0 {
            self.latency_min_us = latency_us;
            self.latency_max_us = latency_us;
        } else {
            self.latency_min_us = self.latency_min_us.min(latency_us);
            self.latency_max_us = self.latency_max_us.max(latency_us);
        }
        self.calls += 1;
        self.latency_sum_us += latency_us;
        self.count_status(status, 1);
        match bin {
            Some(bin) => self.sketch.add_to_bin(bin, 1),
            None => self.sketch.add_zero_count(1),
        }
    }

    fn count_status(&mut self, code: u16, count: u64) {
        // Few distinct codes per window: a linear scan beats any map.
        for entry in self.status.iter_mut() {
            if entry.0 == code {
                entry.1 += count;
                return;
            }
        }
        let position = self
            .status
            .partition_point(|(existing, _)| *existing < code);
        self.status.insert(position, (code, count));
    }

    /// Adds every call of `other` to this rollup.
    pub fn merge(&mut self, other: &Rollup) {
        if other.calls == 0 {
            return;
        }
        if self.calls == 0 {
            self.latency_min_us = other.latency_min_us;
            self.latency_max_us = other.latency_max_us;
        } else {
            self.latency_min_us = self.latency_min_us.min(other.latency_min_us);
            self.latency_max_us = self.latency_max_us.max(other.latency_max_us);
        }
        self.calls += other.calls;
        self.latency_sum_us += other.latency_sum_us;
        for (code, count) in &other.status {
            self.count_status(*code, *count);
        }
        self.sketch.merge(&other.sketch);
    }

    /// The calls this rollup holds beyond `earlier`, a previous version of the same window
    /// (the window only ever gains calls): calls, status counts, latency sum and sketch bins
    /// are the differences, and the latency extremes are this rollup's, so merging the growth
    /// into a sum that holds `earlier` gives the sum holding this rollup instead. `None` when
    /// `earlier` has a count this rollup does not (it is not an earlier version).
    pub fn growth_since(&self, earlier: &Rollup) -> Option<Rollup> {
        let calls = self.calls.checked_sub(earlier.calls)?;
        let latency_sum_us = self.latency_sum_us.checked_sub(earlier.latency_sum_us)?;
        let status = difference(&self.status, &earlier.status)?;
        let zero_count = self
            .sketch
            .zero_count()
            .checked_sub(earlier.sketch.zero_count())?;
        let now: Vec<(i16, u64)> = self.sketch.bins().collect();
        let before: Vec<(i16, u64)> = earlier.sketch.bins().collect();
        let bins = difference(&now, &before)?;
        if earlier.calls > 0
            && (self.latency_min_us > earlier.latency_min_us
                || self.latency_max_us < earlier.latency_max_us)
        {
            return None;
        }
        Some(Rollup {
            calls,
            status,
            latency_sum_us,
            latency_min_us: self.latency_min_us,
            latency_max_us: self.latency_max_us,
            sketch: LatencySketch::from_parts(zero_count, bins)?,
        })
    }

    /// Calls per status class.
    pub fn classes(&self) -> ClassCounts {
        let mut classes = ClassCounts::default();
        for (code, count) in &self.status {
            match code / 100 {
                1 => classes.status_1xx += count,
                2 => classes.status_2xx += count,
                3 => classes.status_3xx += count,
                4 => classes.status_4xx += count,
                _ => classes.status_5xx += count,
            }
        }
        classes
    }

    /// Share of calls that were server errors (5xx), 0 when there were no calls.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        self.classes().status_5xx as f64 / self.calls as f64
    }

    /// Latency at quantile `q` in milliseconds, clamped to the exact min and max.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let estimate = self.sketch.quantile(q)?;
        let min = self.latency_min_us as f64 / 1000.0;
        let max = self.latency_max_us as f64 / 1000.0;
        Some(estimate.clamp(min, max))
    }

    /// Largest latency in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.latency_max_us as f64 / 1000.0
    }

    /// Mean latency in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.latency_sum_us as f64 / self.calls as f64 / 1000.0)
    }
}

/// `now − before` per key of two sorted `(key, count)` lists, without the zero differences;
/// `None` when `before` has a key `now` lacks or a larger count.
fn difference<K: Ord + Copy>(now: &[(K, u64)], before: &[(K, u64)]) -> Option<Vec<(K, u64)>> {
    let mut out = Vec::with_capacity(now.len());
    let mut earlier = before.iter().peekable();
    for &(key, count) in now {
        let mut previous = 0;
        while let Some(&&(held, held_count)) = earlier.peek() {
            if held > key {
                break;
            }
            if held < key {
                return None;
            }
            previous = held_count;
            earlier.next();
        }
        let grown = count.checked_sub(previous)?;
        if grown > 0 {
            out.push((key, grown));
        }
    }
    earlier.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_merge_agree() {
        let calls = [
            (200, 12.5),
            (500, 300.0),
            (200, 0.2),
            (404, 45.0),
            (201, 7.125),
        ];
        let mut whole = Rollup::default();
        calls
            .iter()
            .for_each(|(status, latency)| whole.record(*status, *latency));

        let mut left = Rollup::default();
        let mut right = Rollup::default();
        calls[..2]
            .iter()
            .for_each(|(status, latency)| left.record(*status, *latency));
        calls[2..]
            .iter()
            .for_each(|(status, latency)| right.record(*status, *latency));
        right.merge(&left);
        assert_eq!(right, whole);

        assert_eq!(whole.calls, 5);
        assert_eq!(whole.status, vec![(200, 2), (201, 1), (404, 1), (500, 1)]);
        assert_eq!(whole.classes().status_2xx, 3);
        assert_eq!(whole.classes().status_5xx, 1);
        assert_eq!(whole.latency_min_us, 200);
        assert_eq!(whole.latency_max_us, 300_000);
        assert_eq!(
            whole.latency_sum_us,
            12_500 + 300_000 + 200 + 45_000 + 7_125
        );
        assert!((whole.error_rate() - 0.2).abs() < 1e-12);
        let p100 = whole.quantile_ms(1.0).expect("non-empty");
        assert!((p100 - 300.0).abs() <= 3.0, "p100 {p100} within 1% of 300");
    }

    #[test]
    fn merging_an_empty_rollup_changes_nothing() {
        let mut rollup = Rollup::default();
        rollup.record(200, 5.0);
        let before = rollup.clone();
        rollup.merge(&Rollup::default());
        assert_eq!(rollup, before);
        let mut empty = Rollup::default();
        empty.merge(&before);
        assert_eq!(empty, before);
    }

    #[test]
    fn the_growth_of_a_window_moves_a_sum_from_its_earlier_version_to_the_later() {
        let mut earlier = Rollup::default();
        for (status, latency) in [(200, 40.0), (200, 41.0), (503, 900.0), (200, 0.0)] {
            earlier.record(status, latency);
        }
        let mut later = earlier.clone();
        for (status, latency) in [(200, 3.0), (404, 40.0), (200, 5000.0), (200, 0.0)] {
            later.record(status, latency);
        }
        let mut other = Rollup::default();
        for (status, latency) in [(201, 7.0), (200, 40.0)] {
            other.record(status, latency);
        }
        let mut sum = other.clone();
        sum.merge(&earlier);
        let growth = later.growth_since(&earlier).expect("later holds earlier");
        assert_eq!(growth.calls, 4);
        sum.merge(&growth);
        let mut expected = other.clone();
        expected.merge(&later);
        assert_eq!(sum, expected);
        assert_eq!(later.growth_since(&later).map(|none| none.calls), Some(0));
        assert_eq!(
            earlier.growth_since(&later),
            None,
            "earlier does not hold later"
        );
        assert_eq!(later.growth_since(&other), None, "201 is not in later");
    }
}

//! A DDSketch of latencies with 1% relative accuracy and an exact, associative merge.
//!
//! Values are mapped to bins with the logarithmic mapping of the DDSketch paper (Masson, Rim
//! and Lee, VLDB 2019): bin `k` holds values in `(γ^(k-1), γ^k]` with `γ = (1+α)/(1-α)`, and a
//! bin is represented by `2γ^k/(γ+1)`, which is within `α` of every value in it. Counts are
//! exact integers, so merging two sketches is adding bin counts: merging is associative and
//! commutative, and the percentiles of any time range are the percentiles of the merged
//! minutes, never an average of percentiles.
//!
//! Bins live in a sorted sparse vector: one minute of one API usually fills a few dozen bins,
//! so the in-memory and stored forms stay small. Values below [`MIN_TRACKED_MS`] (one
//! microsecond) are counted in a zero bin and reported as `0`.

/// Relative accuracy of every quantile the sketch returns.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Smallest value given its own bin; smaller ones count as zero.
pub const MIN_TRACKED_MS: f64 = 0.001;

const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

fn ln_gamma() -> f64 {
    GAMMA.ln()
}

/// The bin index of a value `>= MIN_TRACKED_MS`.
pub fn bin_of(value_ms: f64) -> i16 {
    let key = (value_ms.ln() / ln_gamma()).ceil();
    key.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

/// The value a bin stands for: within `RELATIVE_ACCURACY` of every value in the bin.
pub fn bin_value(bin: i16) -> f64 {
    2.0 * (f64::from(bin) * ln_gamma()).exp() / (GAMMA + 1.0)
}

/// A latency sketch: a zero bin plus sparse `(bin, count)` pairs sorted by bin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySketch {
    zero_count: u64,
    bins: Vec<(i16, u64)>,
}

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a sketch from its parts (as stored); `bins` must be sorted by bin, unique.
    pub fn from_parts(zero_count: u64, bins: Vec<(i16, u64)>) -> Option<Self> {
        let sorted = bins.windows(2).all(|pair| pair[0].0 < pair[1].0);
        sorted.then_some(Self { zero_count, bins })
    }

    /// Count of values below [`MIN_TRACKED_MS`].
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// The non-empty bins, sorted by bin index.
    pub fn bins(&self) -> &[(i16, u64)] {
        &self.bins
    }

    /// Total number of values recorded.
    pub fn count(&self) -> u64 {
        self.zero_count + self.bins.iter().map(|(_, count)| count).sum::<u64>()
    }

    /// Records one value (milliseconds; negative or NaN values count as zero).
    pub fn add(&mut self, value_ms: f64) {
        if value_ms.is_nan() || value_ms < MIN_TRACKED_MS {
            self.zero_count += 1;
            return;
        }
        self.add_to_bin(bin_of(value_ms), 1);
    }

    /// Adds `count` values to `bin` (used when merging stored sketches).
    pub fn add_to_bin(&mut self, bin: i16, count: u64) {
        match self.bins.binary_search_by_key(&bin, |(key, _)| *key) {
            Ok(position) => self.bins[position].1 += count,
            Err(position) => self.bins.insert(position, (bin, count)),
        }
    }

    /// Adds `count` values to the zero bin.
    pub fn add_zero_count(&mut self, count: u64) {
        self.zero_count += count;
    }

    /// Adds every count of `other` to this sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        self.zero_count += other.zero_count;
        if other.bins.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.bins.extend_from_slice(&other.bins);
            return;
        }
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut left, mut right) = (0, 0);
        while left < self.bins.len() && right < other.bins.len() {
            let (left_bin, left_count) = self.bins[left];
            let (right_bin, right_count) = other.bins[right];
            match left_bin.cmp(&right_bin) {
                std::cmp::Ordering::Less => {
                    merged.push((left_bin, left_count));
                    left += 1;
                }
                std::cmp::Ordering::Greater => {
                    merged.push((right_bin, right_count));
                    right += 1;
                }
                std::cmp::Ordering::Equal => {
                    merged.push((left_bin, left_count + right_count));
                    left += 1;
                    right += 1;
                }
            }
        }
        merged.extend_from_slice(&self.bins[left..]);
        merged.extend_from_slice(&other.bins[right..]);
        self.bins = merged;
    }

    /// The value at quantile `q` (0..=1), within 1% of the true value of the item of rank
    /// `floor(q × (count − 1))`; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (total - 1) as f64).floor() as u64;
        let mut seen = self.zero_count;
        if seen > rank {
            return Some(0.0);
        }
        for (bin, count) in &self.bins {
            seen += count;
            if seen > rank {
                return Some(bin_value(*bin));
            }
        }
        self.bins.last().map(|(bin, _)| bin_value(*bin))
    }
}

/// Merges many sketches quickly: counts go into a dense array over the bin range that real
/// latencies use, and spill into a sparse sketch outside it.
#[derive(Debug, Clone)]
pub struct SketchAccumulator {
    zero_count: u64,
    dense: Vec<u64>,
    spill: LatencySketch,
}

/// Dense range: bins for 1 µs up to about 2.8 hours.
const DENSE_LOW: i16 = -180;
const DENSE_HIGH: i16 = 420;

impl Default for SketchAccumulator {
    fn default() -> Self {
        Self {
            zero_count: 0,
            dense: vec![0; (DENSE_HIGH - DENSE_LOW) as usize],
            spill: LatencySketch::new(),
        }
    }
}

impl SketchAccumulator {
    /// Adds the counts of `sketch`.
    pub fn add(&mut self, sketch: &LatencySketch) {
        self.zero_count += sketch.zero_count;
        for &(bin, count) in &sketch.bins {
            if (DENSE_LOW..DENSE_HIGH).contains(&bin) {
                self.dense[(bin - DENSE_LOW) as usize] += count;
            } else {
                self.spill.add_to_bin(bin, count);
            }
        }
    }

    /// Adds a sketch given as its stored parts, without building it first.
    pub fn add_parts(&mut self, zero_count: u64, bins: impl Iterator<Item = (i16, u64)>) {
        self.zero_count += zero_count;
        for (bin, count) in bins {
            if (DENSE_LOW..DENSE_HIGH).contains(&bin) {
                self.dense[(bin - DENSE_LOW) as usize] += count;
            } else {
                self.spill.add_to_bin(bin, count);
            }
        }
    }

    /// The merged sketch.
    pub fn finish(&self) -> LatencySketch {
        let mut bins: Vec<(i16, u64)> = self
            .spill
            .bins
            .iter()
            .copied()
            .chain(
                self.dense
                    .iter()
                    .enumerate()
                    .filter(|(_, count)| **count > 0)
                    .map(|(offset, count)| (offset as i16 + DENSE_LOW, *count)),
            )
            .collect();
        bins.sort_unstable_by_key(|(bin, _)| *bin);
        LatencySketch {
            zero_count: self.zero_count,
            bins,
        }
    }

    /// Clears the accumulator for reuse.
    pub fn reset(&mut self) {
        self.zero_count = 0;
        self.dense.iter_mut().for_each(|count| *count = 0);
        self.spill = LatencySketch::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = (q * (sorted.len() - 1) as f64).floor() as usize;
        sorted[rank]
    }

    fn within_bound(estimate: f64, truth: f64) -> bool {
        if truth < MIN_TRACKED_MS {
            return estimate == 0.0;
        }
        (estimate - truth).abs() <= RELATIVE_ACCURACY * truth * (1.0 + 1e-9)
    }

    proptest! {
        #[test]
        fn quantiles_are_within_relative_accuracy(
            values in prop::collection::vec(0.0f64..100_000.0, 1..400),
            q in 0.0f64..=1.0,
        ) {
            let mut sketch = LatencySketch::new();
            values.iter().for_each(|value| sketch.add(*value));
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let estimate = sketch.quantile(q).expect("non-empty sketch");
            let truth = exact_quantile(&sorted, q);
            prop_assert!(within_bound(estimate, truth), "q={q} estimate={estimate} truth={truth}");
        }

        #[test]
        fn merge_equals_adding_everything(
            left in prop::collection::vec(0.0f64..10_000.0, 0..200),
            right in prop::collection::vec(0.0f64..10_000.0, 0..200),
        ) {
            let mut left_sketch = LatencySketch::new();
            left.iter().for_each(|value| left_sketch.add(*value));
            let mut right_sketch = LatencySketch::new();
            right.iter().for_each(|value| right_sketch.add(*value));
            let mut all = LatencySketch::new();
            left.iter().chain(&right).for_each(|value| all.add(*value));

            let mut merged = left_sketch.clone();
            merged.merge(&right_sketch);
            prop_assert_eq!(&merged, &all);

            let mut accumulator = SketchAccumulator::default();
            accumulator.add(&left_sketch);
            accumulator.add(&right_sketch);
            prop_assert_eq!(accumulator.finish(), all);
        }
    }

    #[test]
    fn empty_sketch_has_no_quantile() {
        assert_eq!(LatencySketch::new().quantile(0.5), None);
    }

    #[test]
    fn extreme_values_spill_out_of_the_dense_range() {
        let mut sketch = LatencySketch::new();
        sketch.add(1e12);
        sketch.add(0.0);
        let mut accumulator = SketchAccumulator::default();
        accumulator.add(&sketch);
        assert_eq!(accumulator.finish(), sketch);
    }
}

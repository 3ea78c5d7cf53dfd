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

/// Bins at which a sketch switches from the sparse to the dense representation.
const SPARSE_LIMIT: usize = 24;

/// A latency sketch: a zero bin plus counted bins, sparse while it has few bins (one minute of
/// a quiet API), dense once it has many (a busy series), so adding stays O(1) where it matters
/// and small windows stay small.
#[derive(Debug, Clone)]
pub struct LatencySketch {
    zero_count: u64,
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    /// `(bin, count)` sorted by bin, unique.
    Sparse(Vec<(i16, u64)>),
    /// `counts[i]` is the count of bin `offset + i`.
    Dense { offset: i16, counts: Vec<u64> },
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self {
            zero_count: 0,
            store: Store::Sparse(Vec::new()),
        }
    }
}

impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        self.zero_count == other.zero_count && self.bins().eq(other.bins())
    }
}

impl Eq for LatencySketch {}

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a sketch from its parts (as stored); `bins` must be sorted by bin, unique.
    pub fn from_parts(zero_count: u64, bins: Vec<(i16, u64)>) -> Option<Self> {
        let sorted = bins.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !sorted {
            return None;
        }
        let mut sketch = Self {
            zero_count,
            store: Store::Sparse(bins),
        };
        sketch.densify_if_large();
        Some(sketch)
    }

    /// Count of values below [`MIN_TRACKED_MS`].
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// The non-empty bins in ascending order.
    pub fn bins(&self) -> impl Iterator<Item = (i16, u64)> + '_ {
        type Parts<'s> = (&'s [(i16, u64)], Option<(i16, &'s [u64])>);
        let (sparse, dense): Parts<'_> = match &self.store {
            Store::Sparse(bins) => (bins, None),
            Store::Dense { offset, counts } => (&[], Some((*offset, counts))),
        };
        let dense_bins = dense.into_iter().flat_map(|(offset, counts)| {
            counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(move |(index, count)| (offset + index as i16, *count))
        });
        sparse.iter().copied().chain(dense_bins)
    }

    /// Number of non-empty bins.
    pub fn bin_count(&self) -> usize {
        match &self.store {
            Store::Sparse(bins) => bins.len(),
            Store::Dense { counts, .. } => counts.iter().filter(|count| **count > 0).count(),
        }
    }

    /// Total number of values recorded.
    pub fn count(&self) -> u64 {
        self.zero_count + self.bins().map(|(_, count)| count).sum::<u64>()
    }

    /// Records one value (milliseconds; negative or NaN values count as zero).
    pub fn add(&mut self, value_ms: f64) {
        match bin_for(value_ms) {
            Some(bin) => self.add_to_bin(bin, 1),
            None => self.zero_count += 1,
        }
    }

    /// Adds `count` values to `bin` (used when merging stored sketches).
    pub fn add_to_bin(&mut self, bin: i16, count: u64) {
        match &mut self.store {
            Store::Dense { offset, counts } => {
                if bin < *offset {
                    let grow = (*offset - bin) as usize;
                    counts.splice(0..0, std::iter::repeat_n(0, grow));
                    *offset = bin;
                }
                let index = (bin - *offset) as usize;
                if index >= counts.len() {
                    counts.resize(index + 1, 0);
                }
                counts[index] += count;
            }
            Store::Sparse(bins) => {
                match bins.binary_search_by_key(&bin, |(key, _)| *key) {
                    Ok(position) => bins[position].1 += count,
                    Err(position) => bins.insert(position, (bin, count)),
                }
                self.densify_if_large();
            }
        }
    }

    fn densify_if_large(&mut self) {
        let Store::Sparse(bins) = &self.store else {
            return;
        };
        if bins.len() <= SPARSE_LIMIT {
            return;
        }
        let (Some(first), Some(last)) = (bins.first(), bins.last()) else {
            return;
        };
        let offset = first.0;
        let mut counts = vec![0u64; (last.0 - offset) as usize + 1];
        for (bin, count) in bins {
            counts[(bin - offset) as usize] += count;
        }
        self.store = Store::Dense { offset, counts };
    }

    /// Adds `count` values to the zero bin.
    pub fn add_zero_count(&mut self, count: u64) {
        self.zero_count += count;
    }

    /// Adds every count of `other` to this sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        self.zero_count += other.zero_count;
        for (bin, count) in other.bins() {
            self.add_to_bin(bin, count);
        }
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
        let mut last = None;
        for (bin, count) in self.bins() {
            seen += count;
            last = Some(bin);
            if seen > rank {
                return Some(bin_value(bin));
            }
        }
        last.map(bin_value)
    }
}

/// The bin of a value, or `None` for the zero bin.
pub fn bin_for(value_ms: f64) -> Option<i16> {
    if value_ms.is_nan() || value_ms < MIN_TRACKED_MS {
        None
    } else {
        Some(bin_of(value_ms))
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
        for (bin, count) in sketch.bins() {
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
            .bins()
            .chain(
                self.dense
                    .iter()
                    .enumerate()
                    .filter(|(_, count)| **count > 0)
                    .map(|(offset, count)| (offset as i16 + DENSE_LOW, *count)),
            )
            .collect();
        bins.sort_unstable_by_key(|(bin, _)| *bin);
        let mut sketch = LatencySketch {
            zero_count: self.zero_count,
            store: Store::Sparse(bins),
        };
        sketch.densify_if_large();
        sketch
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

//! Random draws beyond what `fastrand` offers: weighted choice, normal and exponential.

use fastrand::Rng;

/// Draws an index with probability proportional to its weight: the cumulative weights are
/// computed once, each draw is a binary search.
#[derive(Debug, Clone)]
pub(crate) struct WeightedIndex {
    cumulative: Vec<f64>,
}

impl WeightedIndex {
    /// `weights` must be non-empty, finite, non-negative, with a positive sum.
    pub fn new(weights: impl IntoIterator<Item = f64>) -> WeightedIndex {
        let mut total = 0.0;
        let cumulative: Vec<f64> = weights
            .into_iter()
            .map(|weight| {
                total += weight;
                total
            })
            .collect();
        assert!(
            total.is_finite() && total > 0.0,
            "weights must have a positive, finite sum"
        );
        WeightedIndex { cumulative }
    }

    /// Zipf law over `count` ranks: rank `k` (from 0) has weight `1 / (k + 1)^exponent`.
    pub fn zipf(count: usize, exponent: f64) -> WeightedIndex {
        WeightedIndex::new((1..=count).map(|rank| (rank as f64).powf(-exponent)))
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.f64() * total;
        // The first index whose cumulative weight exceeds the target; zero weights are never
        // picked. The `min` guards against rounding at the very top.
        let index = self
            .cumulative
            .partition_point(|&cumulative| cumulative <= target);
        index.min(self.cumulative.len() - 1)
    }
}

/// A standard normal draw (Box–Muller; the second value is dropped for simplicity).
pub(crate) fn standard_normal(rng: &mut Rng) -> f64 {
    // 1 - f64() lies in (0, 1], so the logarithm is finite.
    let radius = (-2.0 * (1.0 - rng.f64()).ln()).sqrt();
    let angle = std::f64::consts::TAU * rng.f64();
    radius * angle.cos()
}

/// An exponential draw with the given mean: the gap between events of a Poisson process.
pub(crate) fn exponential(mean: f64, rng: &mut Rng) -> f64 {
    -(1.0 - rng.f64()).ln() * mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_index_follows_its_weights() {
        let index = WeightedIndex::new([1.0, 0.0, 3.0]);
        let mut rng = Rng::with_seed(3);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[index.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((29_000..31_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn zipf_puts_rank_zero_first() {
        let index = WeightedIndex::zipf(1_000, 1.1);
        let mut rng = Rng::with_seed(4);
        let mut counts = vec![0u32; 1_000];
        for _ in 0..100_000 {
            counts[index.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
    }

    #[test]
    fn normal_and_exponential_have_the_right_moments() {
        let mut rng = Rng::with_seed(5);
        let draws = 100_000;
        let normals: Vec<f64> = (0..draws).map(|_| standard_normal(&mut rng)).collect();
        let mean = normals.iter().sum::<f64>() / draws as f64;
        let variance = normals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws as f64;
        assert!(
            mean.abs() < 0.02 && (variance - 1.0).abs() < 0.03,
            "{mean} {variance}"
        );
        let gaps = (0..draws).map(|_| exponential(50.0, &mut rng)).sum::<f64>();
        assert!((gaps / draws as f64 - 50.0).abs() < 1.0);
    }
}

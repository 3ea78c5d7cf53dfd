//! Settings of the traffic generator.

use mm_model::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND};

/// What to generate. Every field has a realistic default; override the few you care about
/// with struct update syntax: `TrafficConfig { seed: 7, ..TrafficConfig::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficConfig {
    /// Seed of every random choice: the same seed (and settings) gives a byte-identical dataset.
    pub seed: u64,
    /// Number of merchant accounts. Their volume follows a Zipf law, index 0 the busiest.
    /// Must be at least 1.
    pub merchants: usize,
    /// Event time of the first event, in microseconds since the Unix epoch.
    pub start_ts_us: i64,
    /// Mean event-time rate: event timestamps are a Poisson process with this many events per
    /// second of event time. Must be positive and finite.
    pub events_per_second: f64,
    /// Share of events (0.0 to 1.0) that arrive up to `max_lateness_us` after their event time.
    pub late_fraction: f64,
    /// Largest delay of a late event, in microseconds (inclusive).
    pub max_lateness_us: i64,
    /// Every other event arrives `uniform(0..jitter_us)` after its event time: the small
    /// disorder of many gateways writing one log.
    pub jitter_us: i64,
    /// Exponent of the Zipf law of merchant volume; larger means more skew. Must be finite and
    /// not negative (0.0 makes every merchant equally busy).
    pub zipf_exponent: f64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            seed: 42,
            merchants: 5_000,
            // 2026-11-21T15:00:00Z: a whole minute, so minute boundaries are easy to read.
            start_ts_us: 1_795_273_200 * MICROS_PER_SECOND,
            events_per_second: 20_000.0,
            late_fraction: 0.05,
            max_lateness_us: 5 * MICROS_PER_MINUTE,
            jitter_us: 2 * MICROS_PER_SECOND,
            zipf_exponent: 1.1,
        }
    }
}

impl TrafficConfig {
    /// Largest possible `arrival_us - ts_us` of any event.
    pub fn max_delay_us(&self) -> i64 {
        self.jitter_us.max(self.max_lateness_us).max(0)
    }

    /// Panics with a message naming the field when a setting cannot be honoured.
    pub(crate) fn assert_valid(&self) {
        assert!(
            self.merchants >= 1,
            "TrafficConfig::merchants must be at least 1"
        );
        assert!(
            u32::try_from(self.merchants).is_ok(),
            "TrafficConfig::merchants must fit in a u32"
        );
        assert!(
            self.events_per_second.is_finite() && self.events_per_second > 0.0,
            "TrafficConfig::events_per_second must be positive and finite"
        );
        assert!(
            (0.0..=1.0).contains(&self.late_fraction),
            "TrafficConfig::late_fraction must be between 0.0 and 1.0"
        );
        assert!(
            self.max_lateness_us >= 0 && self.jitter_us >= 0,
            "TrafficConfig::max_lateness_us and jitter_us must not be negative"
        );
        assert!(
            self.zipf_exponent.is_finite() && self.zipf_exponent >= 0.0,
            "TrafficConfig::zipf_exponent must be finite and not negative"
        );
    }
}

//! How calls turn out: the status mix, the latency profile, and error bursts.
//!
//! Outside bursts about 93% of calls succeed; the rest are the usual client errors (400, 401,
//! 402 declines on calls that move money, 404 on calls that address an object, 409, 422, 429)
//! and a 0.3% baseline of 5xx. A burst puts one (merchant, API) pair in trouble for a few
//! minutes of event time: 30–60% of its calls fail with 5xx and all of them are slower.

use fastrand::Rng;
use mm_model::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND};

use crate::catalog::ApiProfile;
use crate::sampling::{WeightedIndex, exponential, standard_normal};

/// Statuses and their chance per 100 000 calls, outside bursts; the rest succeed.
fn failure_weights(profile: &ApiProfile) -> [(u16, u32); 11] {
    [
        (500, 120),
        (502, 60),
        (503, 80),
        (504, 40),
        (429, 400),
        (400, 1_200),
        (401, 250),
        (402, if profile.can_decline { 2_500 } else { 0 }),
        (
            404,
            if profile.addresses_object() {
                1_500
            } else {
                80
            },
        ),
        (409, if profile.method == "POST" { 300 } else { 0 }),
        (422, 900),
    ]
}

/// Which 5xx a failing call in a burst gets, per 100: mostly an unavailable or timing-out
/// dependency.
const BURST_FAILURES: [(u16, u32); 4] = [(503, 40), (502, 25), (504, 20), (500, 15)];

/// The status of one call to `profile`, given the burst its (merchant, API) pair is in.
pub(crate) fn sample_status(profile: &ApiProfile, burst: Option<&Burst>, rng: &mut Rng) -> u16 {
    if let Some(burst) = burst
        && rng.f64() < burst.error_rate
    {
        let mut roll = rng.u32(..100);
        for (status, weight) in BURST_FAILURES {
            if roll < weight {
                return status;
            }
            roll -= weight;
        }
        return 503;
    }
    let mut roll = rng.u32(..100_000);
    for (status, weight) in failure_weights(profile) {
        if roll < weight {
            return status;
        }
        roll -= weight;
    }
    profile.success_status
}

/// The latency of one call in microseconds (at least 1).
pub(crate) fn sample_latency_us(
    profile: &ApiProfile,
    status: u16,
    burst: Option<&Burst>,
    rng: &mut Rng,
) -> u32 {
    let typical_ms = profile.median_ms * (profile.sigma * standard_normal(rng)).exp();
    let latency_ms = match status {
        // The rate limiter and load shedding answer before any work is done.
        429 => 0.8 + rng.f64() * 6.0,
        503 => 1.5 + rng.f64() * 25.0,
        // The gateway gave up waiting for an upstream.
        504 => 10_000.0 + rng.f64() * 20_000.0,
        // Validation fails before the call reaches a bank.
        400 | 401 | 404 | 409 | 422 => typical_ms * (0.15 + rng.f64() * 0.25),
        502 => typical_ms * 0.6,
        _ if rng.f64() < profile.tail_chance => typical_ms * (3.0 + rng.f64() * 7.0),
        _ => typical_ms,
    };
    let latency_ms = match burst {
        Some(burst) if !matches!(status, 429 | 504) => latency_ms * burst.latency_factor,
        _ => latency_ms,
    };
    (latency_ms * 1_000.0)
        .round()
        .clamp(1.0, f64::from(u32::MAX)) as u32
}

/// A (merchant, API) pair in trouble during `[start_us, end_us)` of event time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Burst {
    pub merchant: u32,
    pub api: u8,
    pub start_us: i64,
    pub end_us: i64,
    /// Chance that a call in the burst fails with 5xx.
    pub error_rate: f64,
    /// Factor on the latency of every call in the burst.
    pub latency_factor: f64,
}

/// How often bursts start and how long they last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BurstSettings {
    /// Mean event time between burst starts (a Poisson process).
    pub mean_interval_us: f64,
    pub min_duration_us: i64,
    pub max_duration_us: i64,
}

impl Default for BurstSettings {
    fn default() -> Self {
        BurstSettings {
            mean_interval_us: 90.0 * MICROS_PER_SECOND as f64,
            min_duration_us: 2 * MICROS_PER_MINUTE,
            max_duration_us: 6 * MICROS_PER_MINUTE,
        }
    }
}

/// The bursts active at the current event time, and when the next one starts.
#[derive(Debug)]
pub(crate) struct BurstSchedule {
    settings: BurstSettings,
    /// Which merchant a burst hits: busier merchants more often (they run more integrations
    /// and depend on more), but on a flatter law than traffic, or the busiest merchant would be
    /// in trouble most of the time.
    merchants: WeightedIndex,
    active: Vec<Burst>,
    next_start_us: i64,
    started: u64,
}

impl BurstSchedule {
    /// Bursts over `merchant_count` merchants whose traffic follows a Zipf law with
    /// `zipf_exponent`.
    pub fn new(
        settings: BurstSettings,
        merchant_count: usize,
        zipf_exponent: f64,
        start_ts_us: i64,
        rng: &mut Rng,
    ) -> BurstSchedule {
        BurstSchedule {
            settings,
            merchants: WeightedIndex::zipf(merchant_count, zipf_exponent / 2.0),
            active: Vec::new(),
            next_start_us: start_ts_us + exponential(settings.mean_interval_us, rng) as i64,
            started: 0,
        }
    }

    /// Moves to event time `ts_us` (never backwards): starts the bursts due by then, picking
    /// APIs by their traffic share, and drops the bursts that ended.
    pub fn advance(&mut self, ts_us: i64, apis: &WeightedIndex, rng: &mut Rng) {
        while self.next_start_us <= ts_us {
            let start_us = self.next_start_us;
            let duration_us =
                rng.i64(self.settings.min_duration_us..=self.settings.max_duration_us);
            let burst = Burst {
                merchant: self.merchants.sample(rng) as u32,
                api: apis.sample(rng) as u8,
                start_us,
                end_us: start_us + duration_us,
                error_rate: 0.3 + rng.f64() * 0.3,
                latency_factor: 1.5 + rng.f64() * 2.5,
            };
            // A pair already in trouble stays in its current burst.
            if self.find(burst.merchant, burst.api).is_none() {
                self.active.push(burst);
                self.started += 1;
            }
            // At least a microsecond apart, so the loop always ends.
            self.next_start_us += (exponential(self.settings.mean_interval_us, rng) as i64).max(1);
        }
        self.active.retain(|burst| burst.end_us > ts_us);
    }

    /// The active burst of this (merchant, API) pair, if any. A handful are active at a time,
    /// so a scan beats a map.
    pub fn find(&self, merchant: u32, api: u8) -> Option<&Burst> {
        self.active
            .iter()
            .find(|burst| burst.merchant == merchant && burst.api == api)
    }

    /// Number of bursts started so far.
    #[cfg(test)]
    pub fn started(&self) -> u64 {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::APIS;

    #[test]
    fn baseline_status_mix_is_realistic() {
        let mut rng = Rng::with_seed(9);
        let payments = &APIS[0];
        let calls = 200_000;
        let mut server_errors = 0;
        let mut successes = 0;
        let mut declines = 0;
        for _ in 0..calls {
            match sample_status(payments, None, &mut rng) {
                500..=599 => server_errors += 1,
                402 => declines += 1,
                201 => successes += 1,
                _ => {}
            }
        }
        let share = |count: u32| f64::from(count) / f64::from(calls);
        assert!((0.002..0.004).contains(&share(server_errors)));
        assert!((0.02..0.03).contains(&share(declines)));
        assert!((0.90..0.95).contains(&share(successes)));
    }

    #[test]
    fn bursts_fail_often_and_run_slow() {
        let mut rng = Rng::with_seed(10);
        let burst = Burst {
            merchant: 0,
            api: 0,
            start_us: 0,
            end_us: MICROS_PER_MINUTE,
            error_rate: 0.45,
            latency_factor: 2.0,
        };
        let calls = 20_000;
        let failures = (0..calls)
            .filter(|_| sample_status(&APIS[0], Some(&burst), &mut rng) >= 500)
            .count();
        assert!((0.42..0.49).contains(&(failures as f64 / calls as f64)));

        let median = |burst: Option<&Burst>, rng: &mut Rng| {
            let mut latencies: Vec<u32> = (0..10_001)
                .map(|_| sample_latency_us(&APIS[6], 201, burst, rng))
                .collect();
            latencies.sort_unstable();
            latencies[5_000]
        };
        let calm = median(None, &mut rng);
        let troubled = median(Some(&burst), &mut rng);
        // Tokens: 25 ms median, doubled in the burst.
        assert!((23_000..27_000).contains(&calm), "{calm}");
        assert!((46_000..54_000).contains(&troubled), "{troubled}");
    }

    #[test]
    fn apis_have_their_own_latency() {
        let mut rng = Rng::with_seed(11);
        let median_ms = |profile: &ApiProfile, rng: &mut Rng| {
            let mut latencies: Vec<u32> = (0..5_001)
                .map(|_| sample_latency_us(profile, profile.success_status, None, rng))
                .collect();
            latencies.sort_unstable();
            f64::from(latencies[2_500]) / 1_000.0
        };
        let tokens = median_ms(&APIS[6], &mut rng);
        let payments = median_ms(&APIS[0], &mut rng);
        let payouts = median_ms(&APIS[10], &mut rng);
        assert!(tokens < 30.0 && payments > 150.0 && payouts > 500.0);
    }

    #[test]
    fn schedule_starts_and_ends_bursts() {
        let mut rng = Rng::with_seed(12);
        let apis = WeightedIndex::new(APIS.iter().map(|profile| profile.share));
        let mut schedule = BurstSchedule::new(BurstSettings::default(), 100, 1.1, 0, &mut rng);
        let hour = 60 * MICROS_PER_MINUTE;
        let mut ts_us = 0;
        let mut most_active = 0;
        while ts_us < hour {
            schedule.advance(ts_us, &apis, &mut rng);
            assert!(
                schedule
                    .active
                    .iter()
                    .all(|burst| burst.start_us <= ts_us && ts_us < burst.end_us)
            );
            most_active = most_active.max(schedule.active.len());
            ts_us += MICROS_PER_SECOND;
        }
        // 40 an hour on average.
        assert!(
            (20..65).contains(&schedule.started()),
            "{}",
            schedule.started()
        );
        assert!((1..15).contains(&most_active), "{most_active}");
    }
}

//! The three rollup queries.

use std::collections::BTreeMap;
use std::sync::Arc;

use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup};
use mm_model::sketch::{LatencySketch, SketchAccumulator};
use mm_model::time::{self, MICROS_PER_MINUTE};
use mm_storage::codec::RollupView;
use mm_storage::rollups::{Counts, RollupStore, Series};
use serde::Serialize;

use crate::params::{ApiSort, MerchantSort, Period, Step};
use crate::{QueryError, round_ms};

/// Most buckets one activity answer may hold.
pub const MAX_BUCKETS: i64 = 20_000;

/// One bucket of a merchant's activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityBucket {
    /// Start of the bucket (UTC, aligned to the step).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub start: String,
    pub calls: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// 5xx share of calls.
    pub error_rate: f64,
    /// Median latency in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p50_ms: Option<f64>,
    /// 95th-percentile latency in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p95_ms: Option<f64>,
    /// 99th-percentile latency in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p99_ms: Option<f64>,
    /// Slowest call in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub max_ms: Option<f64>,
}

/// `GET /v1/merchants/{merchant}/activity`: a merchant's calls over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityResponse {
    pub merchant: String,
    /// The API asked for; absent for all of the merchant's calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub api: Option<String>,
    pub step: Step,
    /// Every bucket of the period, empty ones included.
    pub buckets: Vec<ActivityBucket>,
}

/// One API of a merchant over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiRow {
    pub api: String,
    pub calls: u64,
    /// Calls per exact status code (as a string key); codes that did not occur are absent.
    pub status: BTreeMap<String, u64>,
    /// 5xx share of calls.
    pub error_rate: f64,
    /// Median latency in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p50_ms: Option<f64>,
    /// 95th-percentile latency in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p95_ms: Option<f64>,
    /// 99th-percentile latency in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p99_ms: Option<f64>,
    /// Slowest call in milliseconds; null when there were no calls.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub max_ms: Option<f64>,
}

/// `GET /v1/merchants/{merchant}/apis`: every API a merchant called, one row each.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApisResponse {
    pub merchant: String,
    pub apis: Vec<ApiRow>,
}

/// One merchant of the ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MerchantRow {
    pub merchant: String,
    pub calls: u64,
    /// Server errors (5xx).
    pub errors: u64,
    /// 5xx share of calls.
    pub error_rate: f64,
}

/// `GET /v1/merchants`: the merchant ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MerchantsResponse {
    pub merchants: Vec<MerchantRow>,
}

/// Accumulates stored rollups into one merged rollup. The first one is kept as it is: a bucket
/// of one stored rollup (every bucket at a 1-minute step) is answered from it without the
/// accumulator, whose dense bins cost more than the rollup itself.
#[derive(Debug, Default)]
struct Merge {
    first: Option<Rollup>,
    calls: u64,
    status: BTreeMap<u16, u64>,
    latency_min_us: u64,
    latency_max_us: u64,
    latency_sum_us: u64,
    sketch: SketchAccumulator,
}

impl Merge {
    fn add(&mut self, view: &RollupView<'_>) {
        if view.calls == 0 {
            return;
        }
        if self.calls == 0
            && self.first.is_none()
            && let Ok(rollup) = view.to_rollup()
        {
            self.first = Some(rollup);
            return;
        }
        if let Some(first) = self.first.take() {
            self.add_rollup(&first);
        }
        self.add_view(view);
    }

    /// Adds a rollup kept whole (the first) to the accumulator.
    fn add_rollup(&mut self, rollup: &Rollup) {
        self.add_totals(
            rollup.calls,
            rollup.latency_min_us,
            rollup.latency_max_us,
            rollup.latency_sum_us,
        );
        for (code, count) in &rollup.status {
            *self.status.entry(*code).or_default() += count;
        }
        self.sketch
            .add_parts(rollup.sketch.zero_count(), rollup.sketch.bins());
    }

    fn add_view(&mut self, view: &RollupView<'_>) {
        self.add_totals(
            view.calls,
            view.latency_min_us,
            view.latency_max_us,
            view.latency_sum_us,
        );
        for (code, count) in view.status() {
            *self.status.entry(code).or_default() += count;
        }
        self.sketch.add_parts(view.zero_count, view.bins());
    }

    fn add_totals(&mut self, calls: u64, min_us: u64, max_us: u64, sum_us: u64) {
        if self.calls == 0 {
            self.latency_min_us = min_us;
            self.latency_max_us = max_us;
        } else {
            self.latency_min_us = self.latency_min_us.min(min_us);
            self.latency_max_us = self.latency_max_us.max(max_us);
        }
        self.calls += calls;
        self.latency_sum_us += sum_us;
    }

    fn finish(self) -> Rollup {
        if let Some(first) = self.first {
            return first;
        }
        Rollup {
            calls: self.calls,
            status: self
                .status
                .iter()
                .map(|(code, count)| (*code, *count))
                .collect(),
            latency_sum_us: self.latency_sum_us,
            latency_min_us: self.latency_min_us,
            latency_max_us: self.latency_max_us,
            sketch: if self.calls == 0 {
                LatencySketch::new()
            } else {
                self.sketch.finish()
            },
        }
    }
}

struct Percentiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

fn percentiles(rollup: &Rollup) -> Percentiles {
    let at = |q: f64| rollup.quantile_ms(q).map(round_ms);
    Percentiles {
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        max: (rollup.calls > 0).then(|| round_ms(rollup.max_ms())),
    }
}

fn bucket(start_minute: i64, rollup: &Rollup) -> ActivityBucket {
    let classes = rollup.classes();
    let latency = percentiles(rollup);
    ActivityBucket {
        start: time::format_rfc3339(start_minute * MICROS_PER_MINUTE),
        calls: rollup.calls,
        status_2xx: classes.status_2xx,
        status_3xx: classes.status_3xx,
        status_4xx: classes.status_4xx,
        status_5xx: classes.status_5xx,
        error_rate: rollup.error_rate(),
        p50_ms: latency.p50,
        p95_ms: latency.p95,
        p99_ms: latency.p99,
        max_ms: latency.max,
    }
}

/// A merchant's activity over `period` in buckets of `step`, for all APIs or one. Buckets are
/// aligned to UTC step boundaries and every bucket of the period is present.
pub fn activity(
    store: &RollupStore,
    merchant: &str,
    api: Option<&str>,
    period: Period,
    step: Step,
) -> Result<ActivityResponse, QueryError> {
    if api == Some(MERCHANT_TOTAL_API) {
        return Err(QueryError::InvalidParameter("api must not be empty".into()));
    }
    let step_minutes = step.minutes();
    let first_bucket = period.from_minute().div_euclid(step_minutes) * step_minutes;
    let end_minute = period.to_minute_exclusive();
    let bucket_count = (end_minute - first_bucket + step_minutes - 1) / step_minutes;
    if bucket_count > MAX_BUCKETS {
        return Err(QueryError::InvalidParameter(format!(
            "{bucket_count} buckets of {} are too many (at most {MAX_BUCKETS}); choose a larger step",
            step.as_str()
        )));
    }
    let series_api = api.unwrap_or(MERCHANT_TOTAL_API);
    let mut buckets = Vec::with_capacity(bucket_count as usize);
    let mut current: Option<(i64, Merge)> = None;
    let mut next_bucket = first_bucket;
    let flush =
        |start: i64, merge: Merge, buckets: &mut Vec<ActivityBucket>, next_bucket: &mut i64| {
            while *next_bucket < start {
                buckets.push(bucket(*next_bucket, &Rollup::default()));
                *next_bucket += step_minutes;
            }
            buckets.push(bucket(start, &merge.finish()));
            *next_bucket = start + step_minutes;
        };
    let mut add = |minute: i64, view: &RollupView<'_>| {
        let start = minute.div_euclid(step_minutes) * step_minutes;
        match &mut current {
            Some((bucket_start, merge)) if *bucket_start == start => merge.add(view),
            _ => {
                if let Some((bucket_start, merge)) = current.take() {
                    flush(bucket_start, merge, &mut buckets, &mut next_bucket);
                }
                let mut merge = Merge::default();
                merge.add(view);
                current = Some((start, merge));
            }
        }
    };
    let end = first_bucket + bucket_count * step_minutes;
    if step_minutes % 60 == 0 {
        // Buckets of whole hours: from the hour rollups.
        store.scan_hours(
            merchant,
            Series::One(series_api),
            first_bucket,
            end,
            |_, minute, view| add(minute, view),
        )?;
    } else {
        store.scan_series(merchant, series_api, first_bucket, end, add)?;
    }
    if let Some((bucket_start, merge)) = current.take() {
        flush(bucket_start, merge, &mut buckets, &mut next_bucket);
    }
    while (buckets.len() as i64) < bucket_count {
        buckets.push(bucket(next_bucket, &Rollup::default()));
        next_bucket += step_minutes;
    }
    Ok(ActivityResponse {
        merchant: merchant.to_owned(),
        api: api.map(str::to_owned),
        step,
        buckets,
    })
}

/// Every API a merchant called in `period`, with counts per status code and percentiles.
pub fn apis(
    store: &RollupStore,
    merchant: &str,
    period: Period,
    sort: ApiSort,
) -> Result<ApisResponse, QueryError> {
    let mut per_api: BTreeMap<String, Merge> = BTreeMap::new();
    store.scan_hours(
        merchant,
        Series::EveryApi,
        period.from_minute(),
        period.to_minute_exclusive(),
        |api, _, view| match per_api.get_mut(api) {
            Some(merge) => merge.add(view),
            None => {
                let mut merge = Merge::default();
                merge.add(view);
                per_api.insert(api.to_owned(), merge);
            }
        },
    )?;
    let mut rows: Vec<(ApiRow, f64, u64)> = per_api
        .into_iter()
        .map(|(api, merge)| {
            let rollup = merge.finish();
            let latency = percentiles(&rollup);
            let errors = rollup.classes().status_5xx;
            let row = ApiRow {
                api,
                calls: rollup.calls,
                status: rollup
                    .status
                    .iter()
                    .map(|(code, count)| (code.to_string(), *count))
                    .collect(),
                error_rate: rollup.error_rate(),
                p50_ms: latency.p50,
                p95_ms: latency.p95,
                p99_ms: latency.p99,
                max_ms: latency.max,
            };
            (row, latency.p99.unwrap_or(0.0), errors)
        })
        .collect();
    rows.sort_by(
        |(left, left_p99, left_errors), (right, right_p99, right_errors)| match sort {
            ApiSort::Calls => right
                .calls
                .cmp(&left.calls)
                .then_with(|| left.api.cmp(&right.api)),
            ApiSort::Errors => right_errors
                .cmp(left_errors)
                .then_with(|| left.api.cmp(&right.api)),
            ApiSort::ErrorRate => right
                .error_rate
                .total_cmp(&left.error_rate)
                .then_with(|| left.api.cmp(&right.api)),
            ApiSort::P99 => right_p99
                .total_cmp(left_p99)
                .then_with(|| left.api.cmp(&right.api)),
            ApiSort::Api => left.api.cmp(&right.api),
        },
    );
    Ok(ApisResponse {
        merchant: merchant.to_owned(),
        apis: rows.into_iter().map(|(row, _, _)| row).collect(),
    })
}

/// The top `limit` merchants of `period` by `sort`.
pub fn merchants(
    store: &RollupStore,
    period: Period,
    sort: MerchantSort,
    limit: usize,
) -> Result<MerchantsResponse, QueryError> {
    let counts = store.merchant_counts(period.from_minute(), period.to_minute_exclusive())?;
    let mut rows: Vec<(Counts, Arc<str>)> = counts
        .into_iter()
        .filter(|entry| entry.counts.calls > 0)
        .map(|entry| (entry.counts, entry.merchant))
        .collect();
    let order = |left: &(Counts, Arc<str>), right: &(Counts, Arc<str>)| {
        let rate = |counts: &Counts| counts.errors as f64 / counts.calls as f64;
        let order = match sort {
            MerchantSort::Calls => right.0.calls.cmp(&left.0.calls),
            MerchantSort::Errors => right.0.errors.cmp(&left.0.errors),
            MerchantSort::ErrorRate => rate(&right.0).total_cmp(&rate(&left.0)),
        };
        order.then_with(|| left.1.cmp(&right.1))
    };
    // Only the first `limit` need sorting.
    if rows.len() > limit && limit > 0 {
        rows.select_nth_unstable_by(limit - 1, order);
    }
    rows.truncate(limit);
    rows.sort_by(order);
    let rows: Vec<MerchantRow> = rows
        .into_iter()
        .map(|(counts, merchant)| MerchantRow {
            merchant: merchant.to_string(),
            calls: counts.calls,
            errors: counts.errors,
            error_rate: counts.errors as f64 / counts.calls as f64,
        })
        .collect();
    Ok(MerchantsResponse { merchants: rows })
}

#[cfg(test)]
mod tests;

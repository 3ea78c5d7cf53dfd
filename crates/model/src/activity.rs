//! The activity stream's record: one per closed (merchant, api, minute) window and one per
//! correction, merchant-wide windows (api `""`) included, the same in both deployments.
//!
//! # The dedupe key
//!
//! Every record of a window counts *all* of that window's calls up to some input position
//! (a final: up to where the watermark closed it; a correction: up to its latest late call).
//! So the records of one window are nested: each holds everything the ones with fewer calls
//! hold, and two records with the same number of calls hold the same calls. The dedupe key is
//! therefore `merchant|api|minute|calls`: identical content always has the identical key
//! (re-deliveries after a crash, a final re-derived by a new owner in cluster mode), different
//! content never does, and it is the same in both deployments for the same input. A consumer
//! keeps, per window, the record with the most calls.
//!
//! ```
//! use mm_model::activity::ActivityRecord;
//! use mm_model::rollup::{Rollup, WindowKey};
//! let key = WindowKey { merchant: "M1".into(), api: "/v1/payments".into(), minute: 29_000_000 };
//! let mut rollup = Rollup::default();
//! rollup.record(200, 12.0);
//! let record = ActivityRecord::new(&key, &rollup, false);
//! assert_eq!(record.dedupe_key, "M1|/v1/payments|29000000|1");
//! assert_eq!(record.window_start, "2025-02-19T21:20:00.000Z");
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rollup::{Rollup, WindowKey};
use crate::time::{self, MICROS_PER_MINUTE};

/// The dedupe key of the record of `key`'s window counting `calls` calls (see the module doc).
pub fn dedupe_key(key: &WindowKey, calls: u64) -> String {
    format!("{}|{}|{}|{calls}", key.merchant, key.api, key.minute)
}

/// One activity record: a window's rollup as the activity stream carries it, the same shape in
/// both deployments. `dedupe_key` is the same every time the same content is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityRecord {
    pub merchant: String,
    /// The API name; `""` for the merchant-wide window (all of the merchant's APIs).
    pub api: String,
    /// Start of the minute, RFC 3339.
    pub window_start: String,
    pub window_end: String,
    pub calls: u64,
    pub status: BTreeMap<String, u64>,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub error_rate: f64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// True when this record replaces an earlier one for the same window (late data).
    pub correction: bool,
    /// `merchant|api|minute|calls`: the same for the same content; per window, keep the
    /// record with the most calls.
    pub dedupe_key: String,
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

impl ActivityRecord {
    /// The record of `key`'s window with `rollup`; `correction` when it replaces an earlier
    /// record of the same window.
    pub fn new(key: &WindowKey, rollup: &Rollup, correction: bool) -> Self {
        let classes = rollup.classes();
        let start = key.minute * MICROS_PER_MINUTE;
        let quantile = |q: f64| round(rollup.quantile_ms(q).unwrap_or(0.0));
        let dedupe_key = dedupe_key(key, rollup.calls);
        Self {
            merchant: key.merchant.clone(),
            api: key.api.clone(),
            window_start: time::format_rfc3339(start),
            window_end: time::format_rfc3339(start + MICROS_PER_MINUTE),
            calls: rollup.calls,
            status: rollup
                .status
                .iter()
                .map(|(code, count)| (code.to_string(), *count))
                .collect(),
            status_2xx: classes.status_2xx,
            status_3xx: classes.status_3xx,
            status_4xx: classes.status_4xx,
            status_5xx: classes.status_5xx,
            error_rate: rollup.error_rate(),
            min_ms: round(rollup.latency_min_us as f64 / 1000.0),
            mean_ms: round(rollup.mean_ms().unwrap_or(0.0)),
            p50_ms: quantile(0.5),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
            max_ms: round(rollup.max_ms()),
            correction,
            dedupe_key,
        }
    }
}

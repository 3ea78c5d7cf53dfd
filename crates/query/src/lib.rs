//! Query planning over the rollup store: a merchant's activity over time, its per-API table,
//! and the ranking of merchants.
//!
//! Every answer is a merge of stored minute rollups: counts add, and latency percentiles come
//! from the merged DDSketch of the period (1% relative accuracy), never from averaging
//! percentiles. Minutes whose window is still open are included with what they hold so far.
//! The response types serialize to the JSON of the public API; their field names are the
//! contract.

mod activity;
mod params;

pub use activity::{
    ActivityBucket, ActivityResponse, ApiRow, ApisResponse, MerchantRow, MerchantsResponse,
    activity, apis, merchants,
};
pub use params::{
    ActivityParams, ApiSort, ApisParams, MerchantSort, MerchantsParams, Period, Step, TimeParam,
    parse_limit,
};

use thiserror::Error;

/// Why a query could not be answered.
#[derive(Debug, Error)]
pub enum QueryError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error(transparent)]
    Storage(#[from] mm_storage::StorageError),
}

/// Rounds a latency to microseconds for display.
fn round_ms(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

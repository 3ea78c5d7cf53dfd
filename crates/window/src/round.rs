//! What the aggregator takes and hands out: its settings, a call and where it comes from,
//! and a checkpoint round (windows closed, corrections, open windows that changed).

use mm_model::rollup::{Rollup, WindowKey};
use mm_model::time::MICROS_PER_MINUTE;

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// How far behind the largest event time the watermark trails, in µs.
    pub grace_us: i64,
    /// After this long without input a partition's watermark follows the wall clock, in µs.
    pub idle_timeout_us: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            grace_us: 3 * MICROS_PER_MINUTE,
            idle_timeout_us: 10_000_000,
        }
    }
}

/// A window and its rollup: final when the window has closed, provisional while it is open.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRollup {
    pub key: WindowKey,
    pub rollup: Rollup,
}

/// Where a call comes from: its input partition and its position in that input (the WAL
/// frame's LSN on one machine, the record's offset in cluster mode). Positions only grow
/// within a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub partition: u32,
    pub position: i64,
}

/// One API call, as far as windows are concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Call<'a> {
    /// Event time, µs since the epoch.
    pub ts_us: i64,
    pub merchant: &'a str,
    pub api: &'a str,
    pub status: u16,
    pub latency_ms: f64,
}

impl<'a> From<&'a mm_model::ApiCallRef<'_>> for Call<'a> {
    fn from(call: &'a mm_model::ApiCallRef<'_>) -> Self {
        Self {
            ts_us: call.ts_us,
            merchant: &call.merchant,
            api: &call.api,
            status: call.status,
            latency_ms: call.latency_ms,
        }
    }
}

/// Late calls of one closed window, collected since the last round.
#[derive(Debug, Clone, PartialEq)]
pub struct Correction {
    pub key: WindowKey,
    /// The late calls only: the corrected window is the stored final rollup merged with this.
    pub late: Rollup,
    /// The largest input position among the late calls.
    pub last_position: i64,
}

/// What one checkpoint round hands out: everything that changed since the previous round.
#[derive(Debug, Default)]
pub struct Round {
    /// Windows the watermark closed, each exactly once, merchant-wide ones included.
    pub finals: Vec<WindowRollup>,
    /// Late calls per closed window (merchant-wide ones included), sorted by window.
    pub corrections: Vec<Correction>,
    /// Open windows that changed, and the merchant-wide window of each such minute.
    pub open: Vec<WindowRollup>,
}

impl Round {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.finals.is_empty() && self.corrections.is_empty() && self.open.is_empty()
    }
}

/// What happened to one ingested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Counted in an open window.
    Open,
    /// Its window had closed: counted as a correction.
    Late,
}

/// Counters since the aggregator was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AggregatorStats {
    pub events: u64,
    pub late_events: u64,
    /// Windows closed, merchant-wide ones included.
    pub windows_closed: u64,
}

//! Event-time tumbling windows of one minute per (merchant, api), closed by a watermark.
//!
//! # Semantics
//!
//! - An event belongs to the window of its own timestamp's UTC minute, never its arrival time.
//! - Each input partition keeps the largest event time it has seen (never beyond the wall
//!   clock, so one producer with a fast clock cannot close everyone's windows). Its watermark
//!   is that time minus the grace period. When a partition has received nothing for the idle
//!   timeout, its watermark follows the wall clock instead (`now − grace`), so windows close
//!   even when traffic stops. The aggregator's watermark is the minimum over partitions, and
//!   never moves backwards.
//! - A window `[start, end)` closes, once, when the watermark reaches `end`: its final rollup
//!   is handed out in the next [`Round`]'s `finals`.
//! - An event whose window has already closed is late: it is never dropped, but collected as
//!   a [`Correction`] of that window, tagged with the largest input position among its late
//!   calls, that the caller merges into the stored final rollup and emits flagged as a
//!   correction.
//! - Besides each (merchant, api) window the aggregator yields a merchant-wide window (api
//!   [`MERCHANT_TOTAL_API`]) so merchant charts and rankings read one rollup per minute. It is
//!   the merge of the merchant's API windows of that minute, computed when a checkpoint or a
//!   close needs it rather than counted per event.
//!
//! The aggregator is pure: time is passed in, and it does no I/O. Both deployments checkpoint
//! the same way: [`Aggregator::checkpoint`] hands out one [`Round`] (windows closed, late
//! calls, open windows that changed), the caller persists or publishes it, and after a
//! restart restores the open windows ([`Aggregator::restore_open`]).
//!
//! ```
//! use mm_window::{Aggregator, Call, Origin, WindowConfig};
//! let minute = 60_000_000;
//! let mut aggregator = Aggregator::new(WindowConfig { grace_us: 3 * minute, idle_timeout_us: 10_000_000 });
//! let call = Call { ts_us: 10 * minute + 5, merchant: "M1", api: "/v1/payments", status: 200, latency_ms: 12.0 };
//! aggregator.ingest(Origin { partition: 0, position: 1 }, call, 10 * minute);
//! let round = aggregator.checkpoint(14 * minute + 1);
//! assert_eq!(round.finals.len(), 2); // the (M1, /v1/payments) window and M1's total
//! // A call for the closed minute is late: a correction, tagged with its position.
//! aggregator.ingest(Origin { partition: 0, position: 2 }, call, 14 * minute + 2);
//! let round = aggregator.checkpoint(14 * minute + 3);
//! assert_eq!(round.corrections.len(), 2);
//! assert_eq!(round.corrections[0].last_position, 2);
//! ```

mod aggregator;
mod round;

pub use aggregator::Aggregator;
pub use mm_model::rollup::MERCHANT_TOTAL_API;
pub use round::{
    AggregatorStats, Call, Correction, Disposition, Origin, Round, WindowConfig, WindowRollup,
};

#[cfg(test)]
mod tests;

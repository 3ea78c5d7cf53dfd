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
//!   is handed out through [`Aggregator::take_closed`].
//! - An event whose window has already closed is late: it is never dropped, but collected as
//!   a correction ([`Aggregator::take_corrections`]) that the caller merges into the stored
//!   final rollup and emits flagged as a correction.
//! - Besides each (merchant, api) window the aggregator yields a merchant-wide window (api
//!   [`MERCHANT_TOTAL_API`]) so merchant charts and rankings read one rollup per minute. It is
//!   the merge of the merchant's API windows of that minute, computed when a checkpoint or a
//!   close needs it rather than counted per event.
//!
//! The aggregator is pure: time is passed in, and it does no I/O. The caller persists the
//! windows that changed ([`Aggregator::drain_dirty`]) and restores them after a restart
//! ([`Aggregator::restore_open`]).
//!
//! ```
//! use mm_window::{Aggregator, WindowConfig};
//! let minute = 60_000_000;
//! let mut aggregator = Aggregator::new(WindowConfig { grace_us: 3 * minute, idle_timeout_us: 10_000_000 });
//! aggregator.ingest(0, 10 * minute + 5, "M1", "/v1/payments", 200, 12.0, 10 * minute);
//! aggregator.advance(0, 14 * minute + 1);
//! let closed = aggregator.take_closed();
//! assert_eq!(closed.len(), 2); // the (M1, /v1/payments) window and M1's total
//! ```

mod aggregator;

pub use aggregator::{Aggregator, AggregatorStats, ClosedWindow, Disposition, WindowConfig};
pub use mm_model::rollup::MERCHANT_TOTAL_API;

#[cfg(test)]
mod tests;

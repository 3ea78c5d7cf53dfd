//! The vocabulary of Merchant Monitor: API-call events, field mapping and parsing, windows,
//! rollups and the latency sketch. Pure: no I/O, no clocks, no threads.
//!
//! - [`activity`]: the activity stream's record and its dedupe key.
//! - [`event`]: the API-call event ([`ApiCall`], and [`ApiCallRef`] borrowing from its record).
//! - [`mapping`]: configurable JSON-pointer field mapping and the record parser.
//! - [`rollup`]: what a (merchant, api, minute) window holds, and its exact merge.
//! - [`sketch`]: the DDSketch behind every latency percentile.
//! - [`time`]: timestamps (µs since the epoch) and minutes.
//!
//! ```
//! use mm_model::rollup::Rollup;
//! let mut minute = Rollup::default();
//! minute.record(200, 12.0);
//! minute.record(500, 80.0);
//! assert_eq!(minute.calls, 2);
//! assert_eq!(minute.classes().status_5xx, 1);
//! ```

pub mod activity;
pub mod event;
pub mod lines;
pub mod mapping;
pub mod rollup;
pub mod sketch;
pub mod time;

pub use event::{ApiCall, ApiCallRef};
pub use rollup::{Rollup, WindowKey};

//! The HTTP edge: what every connection and request body goes through before a handler sees
//! it, so that no client, however slow or hostile, can hold the server's connections, ingest
//! places or memory.
//!
//! - [`serve`]: the accept loop, with a cap on open connections (503 and close beyond it), a
//!   header-read timeout and an idle keep-alive timeout per connection ([`conn`]), and a
//!   graceful shutdown.
//! - [`read_body`]: a request body read whole within a size limit, an idle timeout, a minimum
//!   rate and the [`MemoryBudget`] shared by every request in flight.
//! - [`RawHttpSettings`]: the `[http]` configuration section.
//!
//! ```
//! use mm_http::{MemoryBudget, RawHttpSettings};
//! let settings = RawHttpSettings::default().validate().unwrap();
//! let budget = MemoryBudget::new(settings.max_request_memory_bytes);
//! let mut reservation = budget.reservation();
//! reservation.grow(1024).unwrap();
//! assert_eq!(budget.used(), 1024);
//! drop(reservation);
//! assert_eq!(budget.used(), 0);
//! ```

mod body;
mod budget;
pub mod conn;
mod serve;
mod settings;

pub use body::{BodyReadError, read_body};
pub use budget::{BudgetExhausted, MemoryBudget, Reservation};
pub use serve::serve;
pub use settings::{BodyLimits, HttpSettings, RawHttpSettings, SettingsError};

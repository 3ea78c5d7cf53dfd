//! The request memory budget: one count of the bytes that requests in flight hold for their
//! bodies (as received and decompressed) and what is parsed from them.
//!
//! A request reserves before it allocates and gives back when it is done (the reservation is
//! dropped), so the memory requests make the server allocate stays under one configured bound
//! whatever they send; a request that would go beyond it is refused (503 with `Retry-After`)
//! instead of waiting while holding what it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes that requests in flight may hold together.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

/// The budget has no room for what a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("requests in flight hold the server's request memory bound ({limit} bytes); retry shortly")]
pub struct BudgetExhausted {
    pub limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The configured bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// An empty reservation that grows with [`Reservation::grow`].
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, bytes: usize) -> Result<(), BudgetExhausted> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| ())
            .map_err(|_| BudgetExhausted { limit: self.limit })
    }
}

/// Bytes one request holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Takes `bytes` more, or refuses without taking anything.
    pub fn grow(&mut self, bytes: usize) -> Result<(), BudgetExhausted> {
        self.budget.take(bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Gives back `bytes` of what this reservation holds (at most all of it).
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.budget.used.fetch_sub(bytes, Ordering::AcqRel);
        self.bytes -= bytes;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_under_the_limit_and_give_back_when_dropped() {
        let budget = MemoryBudget::new(100);
        let mut first = budget.reservation();
        first.grow(60).expect("room");
        let mut second = budget.reservation();
        assert_eq!(second.grow(50), Err(BudgetExhausted { limit: 100 }));
        assert_eq!(second.bytes(), 0, "a refused grow takes nothing");
        second.grow(40).expect("exactly the rest");
        assert_eq!(budget.used(), 100);
        first.shrink(10);
        assert_eq!(budget.used(), 90);
        drop(first);
        assert_eq!(budget.used(), 40);
        drop(second);
        assert_eq!(budget.used(), 0);
    }
}

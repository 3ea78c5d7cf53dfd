//! Reorders calls drawn in event-time order into arrival order.
//!
//! Two min-heaps keyed by `(arrival, sequence)`: one for calls delayed by the jitter only, one
//! for late calls. Both are valid on their own; the next call to release is the smaller of
//! their two tops. The split keeps the busy heap small (a couple of seconds of calls) while the
//! late heap, which can span minutes, is touched only by the few late calls. Queued calls are
//! 40 bytes, so sifting moves little memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::generator::PendingEvent;

/// A queued call, ordered by arrival, then by draw order (sequences are unique).
#[derive(Debug, Clone, Copy)]
struct Queued(PendingEvent);

impl Queued {
    fn key(&self) -> (i64, u64) {
        (self.0.arrival_us, self.0.sequence)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

#[derive(Debug, Default)]
pub(crate) struct ArrivalQueue {
    on_time: BinaryHeap<Reverse<Queued>>,
    late: BinaryHeap<Reverse<Queued>>,
}

impl ArrivalQueue {
    /// Queues `event`; `late` picks the heap (either is correct, the split is for speed).
    pub fn push(&mut self, event: PendingEvent, late: bool) {
        if late {
            self.late.push(Reverse(Queued(event)));
        } else {
            self.on_time.push(Reverse(Queued(event)));
        }
    }

    /// Removes and returns the call with the smallest `(arrival, sequence)` if it arrived at
    /// or before `ts_us`.
    pub fn pop_arrived_by(&mut self, ts_us: i64) -> Option<PendingEvent> {
        let on_time_first = match (self.on_time.peek(), self.late.peek()) {
            (Some(Reverse(on_time)), Some(Reverse(late))) => on_time < late,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let heap = if on_time_first {
            &mut self.on_time
        } else {
            &mut self.late
        };
        let Reverse(Queued(first)) = heap.peek().expect("the chosen heap has a top");
        if first.arrival_us > ts_us {
            return None;
        }
        heap.pop().map(|Reverse(Queued(event))| event)
    }

    /// Number of calls waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.on_time.len() + self.late.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(arrival_us: i64, sequence: u64) -> PendingEvent {
        PendingEvent {
            arrival_us,
            sequence,
            ts_us: 0,
            merchant: 0,
            latency_us: 1,
            status: 200,
            api: 0,
            late: false,
            in_burst: false,
        }
    }

    #[test]
    fn releases_by_arrival_then_sequence_across_both_heaps() {
        let mut queue = ArrivalQueue::default();
        queue.push(event(30, 0), true);
        queue.push(event(10, 1), false);
        queue.push(event(10, 2), true);
        queue.push(event(20, 3), false);
        assert_eq!(queue.pop_arrived_by(5).map(|e| e.sequence), None);
        let mut released = Vec::new();
        while let Some(next) = queue.pop_arrived_by(25) {
            released.push(next.sequence);
        }
        assert_eq!(released, [1, 2, 3]);
        queue.push(event(26, 4), false);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop_arrived_by(100).map(|e| e.sequence), Some(4));
        assert_eq!(queue.pop_arrived_by(100).map(|e| e.sequence), Some(0));
        assert_eq!(queue.pop_arrived_by(100).map(|e| e.sequence), None);
    }
}

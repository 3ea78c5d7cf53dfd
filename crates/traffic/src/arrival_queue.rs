//! Reorders calls drawn in event-time order into arrival order.
//!
//! Two min-heaps keyed by `(arrival, sequence)`: one for calls delayed by the jitter only, one
//! for late calls. Both are valid on their own; the next call to release is the smaller of
//! their two tops. The split keeps the busy heap small (a couple of seconds of calls) while the
//! late heap, which can span minutes, is touched only by the few late calls. Heap entries are
//! 24-byte keys; the calls themselves wait in a slab whose slots are reused, so sifting moves
//! little memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::generator::PendingEvent;

/// Heap key: ordered by arrival, then by draw order; `slot` never decides since sequences
/// are unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    arrival_us: i64,
    sequence: u64,
    slot: u32,
}

#[derive(Debug, Default)]
pub(crate) struct ArrivalQueue {
    on_time: BinaryHeap<Reverse<Key>>,
    late: BinaryHeap<Reverse<Key>>,
    slots: Vec<PendingEvent>,
    free_slots: Vec<u32>,
}

impl ArrivalQueue {
    /// Queues `event`; `late` picks the heap (either is correct, the split is for speed).
    pub fn push(&mut self, event: PendingEvent, late: bool) {
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = event;
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len())
                    .expect("fewer than 2^32 calls wait at once: that is hours of lateness");
                self.slots.push(event);
                slot
            }
        };
        let key = Key {
            arrival_us: event.arrival_us,
            sequence: event.sequence,
            slot,
        };
        if late {
            self.late.push(Reverse(key));
        } else {
            self.on_time.push(Reverse(key));
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
        let Reverse(key) = *heap.peek().expect("the chosen heap has a top");
        if key.arrival_us > ts_us {
            return None;
        }
        heap.pop();
        self.free_slots.push(key.slot);
        Some(self.slots[key.slot as usize])
    }

    /// Number of calls waiting.
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
            corr_id: 0,
            idempotency_key: None,
            object_id: 0,
            merchant: 0,
            latency_us: 1,
            status: 200,
            api: 0,
            host: 0,
            sdk: 0,
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
        // Freed slots are reused.
        queue.push(event(26, 4), false);
        assert_eq!(queue.slots.len(), 4);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop_arrived_by(100).map(|e| e.sequence), Some(4));
        assert_eq!(queue.pop_arrived_by(100).map(|e| e.sequence), Some(0));
        assert_eq!(queue.pop_arrived_by(100).map(|e| e.sequence), None);
    }
}

//! CLOCK (second chance): the eviction policy the `rwlock` and `sharded` backends had first,
//! kept selectable (`--eviction clock`) so that the adaptive policy can be compared with it.
//!
//! One queue in insertion order; an entry hit since the hand last passed it has a nonzero
//! [`super::Usage`]. The hand sweeps from the oldest insertion: a used entry is cleared and goes to the
//! back, an unused one is evicted. It is within a point of exact LRU on most workloads and has
//! no defence against scans or one-hit wonders.

use super::arena::{Arena, List, NodeId, Queue, NIL};
use super::Counters;

/// The policy's state.
#[derive(Debug)]
pub(crate) struct Clock<T> {
    arena: Arena<T>,
    queue: List,
    capacity: u64,
}

impl<T> Clock<T> {
    pub(crate) fn new(capacity: u64) -> Self {
        Clock {
            arena: Arena::default(),
            queue: List::default(),
            capacity,
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.queue.bytes
    }

    /// Makes room first, so that the newcomer is never its own victim (when every older entry
    /// is used, the hand would otherwise come round to it first).
    pub(crate) fn insert(
        &mut self,
        value: T,
        hash: u64,
        charge: u64,
        counters: &impl Counters<T>,
        out: &mut Vec<T>,
    ) -> NodeId {
        self.make_room(charge, counters, out);
        let index = self.arena.alloc(value, charge, hash);
        self.arena.push_back(&mut self.queue, Queue::Small, index);
        self.arena.id(index)
    }

    /// A replaced response goes to the back of the queue with its counter.
    pub(crate) fn update(
        &mut self,
        id: NodeId,
        charge: u64,
        counters: &impl Counters<T>,
        out: &mut Vec<T>,
    ) {
        let Some(index) = self.arena.resolve(id) else {
            return;
        };
        self.arena.unlink(&mut self.queue, index);
        self.make_room(charge, counters, out);
        self.arena.node_mut(index).charge = charge;
        self.arena.push_back(&mut self.queue, Queue::Small, index);
    }

    pub(crate) fn remove(&mut self, id: NodeId) -> Option<T> {
        let index = self.arena.resolve(id)?;
        self.arena.unlink(&mut self.queue, index);
        self.arena.free(index)
    }

    fn make_room(&mut self, charge: u64, counters: &impl Counters<T>, out: &mut Vec<T>) {
        while self.queue.bytes + charge > self.capacity {
            let hand = self.queue.head;
            if hand == NIL {
                break;
            }
            self.arena.unlink(&mut self.queue, hand);
            let used = self.arena.node(hand).value.as_ref();
            if used.is_some_and(|k| counters.take(k)) {
                self.arena.push_back(&mut self.queue, Queue::Small, hand);
            } else if let Some(value) = self.arena.free(hand) {
                out.push(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::evict::Usage;
    use std::collections::HashMap;

    #[test]
    fn a_used_entry_gets_a_second_chance_and_the_newcomer_is_never_the_victim() {
        let mut clock: Clock<&str> = Clock::new(3);
        let mut out = Vec::new();
        let mut counters: HashMap<&str, Usage> = HashMap::new();
        for name in ["a", "b", "c"] {
            clock.insert(name, 0, 1, &counters, &mut out);
            counters.insert(name, Usage::default());
        }
        counters["a"].touch();
        clock.insert("d", 0, 1, &counters, &mut out);
        counters.insert("d", Usage::default());
        assert_eq!(out, vec!["b"], "a was used, b is the oldest unused");
        // Every entry used: the sweep clears them all and takes the oldest, not the newcomer.
        out.clear();
        for u in counters.values() {
            u.touch();
        }
        clock.insert("e", 0, 1, &counters, &mut out);
        assert_eq!(out.len(), 1);
        assert_ne!(out[0], "e");
        assert_eq!(clock.bytes(), 3);
    }
}

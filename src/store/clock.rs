//! CLOCK (second-chance) eviction order shared by the `rwlock` and `sharded` backends.
//!
//! A hit only sets a reference bit, an atomic store that needs no exclusive lock, so the hot path
//! of both backends runs under a *read* lock. A strict LRU list would turn every hit into a write
//! and serialise readers; FIFO or random eviction would lose hit ratio for nothing. The hand sweeps
//! the queue from the oldest insertion: a referenced entry loses its bit and goes to the back, an
//! unreferenced one is evicted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Entry, Key};

/// A stored entry with its eviction bookkeeping.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) entry: Arc<Entry>,
    pub(crate) charge: u64,
    /// Generation of this insertion, so that stale queue positions left by a replacement or a
    /// removal are recognised and skipped.
    pub(crate) generation: u64,
    pub(crate) referenced: AtomicBool,
}

impl Slot {
    pub(crate) fn new(entry: Arc<Entry>, charge: u64, generation: u64) -> Self {
        Slot {
            entry,
            charge,
            generation,
            referenced: AtomicBool::new(false),
        }
    }

    /// Marks a hit. Relaxed is enough: the bit is a hint for eviction, not a synchronisation point.
    pub(crate) fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }

    /// Clears the bit, returning whether it was set: the "second chance".
    pub(crate) fn take_reference(&self) -> bool {
        self.referenced.swap(false, Ordering::Relaxed)
    }
}

/// What the hand decides about the position it points at.
pub(crate) enum Verdict {
    /// The key is gone or was replaced since it was queued: drop the position.
    Stale,
    /// Referenced since the last sweep: give it a second chance.
    SecondChance,
    /// Evicted; the sweep is done.
    Evicted,
}

/// Insertion order of the keys, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ClockQueue {
    queue: VecDeque<(Key, u64)>,
}

impl ClockQueue {
    pub(crate) fn push(&mut self, key: Key, generation: u64) {
        self.queue.push_back((key, generation));
    }

    /// Advances the hand until one entry is evicted or the queue is empty. `judge` looks the
    /// position up in the map, and evicts it there when its bit is clear. Returns false when
    /// nothing was left to evict.
    pub(crate) fn evict_one(&mut self, mut judge: impl FnMut(&Key, u64) -> Verdict) -> bool {
        // Every live position can be given a second chance at most once per sweep, so two passes
        // over the queue always find a victim if there is one.
        let mut budget = self.queue.len().saturating_mul(2) + 1;
        while let Some((key, generation)) = self.queue.pop_front() {
            match judge(&key, generation) {
                Verdict::Stale => {}
                Verdict::SecondChance => self.queue.push_back((key, generation)),
                Verdict::Evicted => return true,
            }
            budget -= 1;
            if budget == 0 {
                break;
            }
        }
        false
    }

    /// Drops stale positions once they outnumber the live entries, so that replacing the same
    /// keys over and over cannot grow the queue without bound.
    pub(crate) fn compact_if_needed(&mut self, live: usize, is_live: impl Fn(&Key, u64) -> bool) {
        if self.queue.len() > 2 * live + 64 {
            self.queue.retain(|(k, g)| is_live(k, *g));
        }
    }
}

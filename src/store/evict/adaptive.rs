//! S3-FIFO with an adaptive small queue: the default eviction policy of the `rwlock` and
//! `sharded` backends.
//!
//! S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP 2023) puts new
//! entries in a *small* FIFO queue and moves to the *main* FIFO queue only those hit while they
//! were there; most objects of real traffic are requested once and leave from the small queue
//! without ever disturbing the main one, which is what makes it resistant to scans and one-hit
//! wonders. The main queue is a FIFO with a 2-bit counter per entry: its oldest entry is
//! reinserted with its counter decremented while the counter is above zero, else evicted. A
//! *ghost* queue remembers (by key hash, no data) what left the small queue, and a miss on a
//! remembered key goes straight to the main queue.
//!
//! The published policy gives the small queue a fixed 10% of the capacity. That loses to plain
//! LRU where entries are re-read a while after their first use, later than a 10% queue keeps
//! them. So here, as ARC (Megiddo and Modha, FAST 2003) balances its two lists, the small
//! queue's share follows two ghost queues: a miss on a key the small queue evicted says the
//! small queue was too short, and grows it; a miss on a key the main queue evicted says the main
//! queue was, and shrinks it. Each step is one entry (the mean charge held), scaled by the
//! ratio of the two ghosts' sizes, so the rarer signal weighs more (ARC's rule).
//!
//! A hit is one relaxed atomic add on the entry's [`super::Usage`] in the store's map slot,
//! under a read lock; everything here runs under the store's write lock and reaches the
//! counters through [`Counters`].

use std::collections::{HashMap, VecDeque};

use super::arena::{Arena, List, NodeId, Queue, NIL};
use super::Counters;

/// The small queue's share of the capacity at the start. Larger than the published 10% on
/// purpose: the shrinking signal (misses on keys main evicted) comes quickly on skewed traffic,
/// while growing from 10% on recency-heavy traffic took most of a replay (measured with
/// `bench sim --workload reread`: 1.1 points below LRU from 10%, level with it from 60%, at no
/// cost beyond 0.2 points on Zipf, scan, shift or drift).
const INITIAL_SMALL_SHARE: f64 = 0.6;
/// The small queue never shrinks below this share, so that a new entry has a chance to be hit
/// once before it leaves (at 1%, drift lost 1.1 points to S3-FIFO's fixed 10%; at 3%, none).
const MIN_SMALL_SHARE: f64 = 0.03;

/// The policy's state.
#[derive(Debug)]
pub(crate) struct Adaptive<T> {
    arena: Arena<T>,
    small: List,
    main: List,
    /// Keys the small queue evicted.
    small_ghost: Ghost,
    /// Keys the main queue evicted.
    main_ghost: Ghost,
    capacity: u64,
    /// Bytes the small queue may hold before eviction takes from it rather than from main.
    small_target: u64,
}

impl<T> Adaptive<T> {
    /// An empty policy for `capacity` bytes.
    pub(crate) fn new(capacity: u64) -> Self {
        Adaptive {
            arena: Arena::default(),
            small: List::default(),
            main: List::default(),
            small_ghost: Ghost::new(capacity),
            main_ghost: Ghost::new(capacity),
            capacity,
            small_target: (capacity as f64 * INITIAL_SMALL_SHARE) as u64,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.small.bytes + self.main.bytes
    }

    /// Makes room for `charge` bytes, pushing the victims' values to `out`, and adds the new
    /// entry: to the main queue if a ghost remembers its key, else to the small queue. Making
    /// room first means the newcomer is never its own victim.
    pub(crate) fn insert(
        &mut self,
        value: T,
        hash: u64,
        charge: u64,
        counters: &impl Counters<T>,
        out: &mut Vec<T>,
    ) -> NodeId {
        // ARC's step is one entry. In bytes that is the mean charge of what is held, not the
        // charge of the key that missed: one large object must not move the target more than a
        // small one (with lognormal sizes, stepping by the missed charge cost up to 1.4 points
        // on flat Zipf).
        let step_bytes = match (self.small.len + self.main.len) as u64 {
            0 => charge,
            entries => self.bytes() / entries,
        };
        let queue = if self.small_ghost.take(hash) {
            // Had the small queue been longer, this would have been a hit there.
            let step = scaled(step_bytes, self.main_ghost.bytes, self.small_ghost.bytes);
            self.small_target = (self.small_target + step).min(self.capacity);
            Queue::Main
        } else if self.main_ghost.take(hash) {
            let step = scaled(step_bytes, self.small_ghost.bytes, self.main_ghost.bytes);
            let floor = (self.capacity as f64 * MIN_SMALL_SHARE) as u64;
            self.small_target = self.small_target.saturating_sub(step).max(floor);
            // It left main for lack of room, not for lack of use, so it is not proven popular
            // again: it starts over in the small queue.
            Queue::Small
        } else {
            Queue::Small
        };
        self.make_room(charge, counters, out);
        let index = self.arena.alloc(value, charge, hash);
        self.push(queue, index);
        self.arena.id(index)
    }

    /// The entry at `id` was replaced by one charged `charge`; it keeps its place. Evicts
    /// others if the new charge does not fit.
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
        let queue = self.arena.node(index).queue;
        self.unlink(index);
        self.make_room(charge, counters, out);
        self.arena.node_mut(index).charge = charge;
        self.push(queue, index);
    }

    /// Removes an entry (a purge, or a replacement too large to keep), returning its value.
    /// It is not remembered by a ghost: it did not leave for lack of room.
    pub(crate) fn remove(&mut self, id: NodeId) -> Option<T> {
        let index = self.arena.resolve(id)?;
        self.unlink(index);
        self.arena.free(index)
    }

    fn make_room(&mut self, charge: u64, counters: &impl Counters<T>, out: &mut Vec<T>) {
        while self.bytes() + charge > self.capacity {
            let from_small = self.main.head == NIL
                || (self.small.head != NIL && self.small.bytes >= self.small_target);
            let evicted = if from_small {
                self.evict_small(counters, out)
            } else {
                self.evict_main(counters, out)
            };
            if !evicted && self.bytes() == 0 {
                break;
            }
        }
    }

    /// Takes from the small queue: entries hit while there move to main; the first one that
    /// was not is evicted. Returns whether one was.
    fn evict_small(&mut self, counters: &impl Counters<T>, out: &mut Vec<T>) -> bool {
        let index = self.small.head;
        if index == NIL {
            return false;
        }
        self.unlink(index);
        let node = self.arena.node(index);
        if node.value.as_ref().is_some_and(|k| counters.take(k)) {
            // Its count starts again from zero in main.
            self.push(Queue::Main, index);
            // The caller decides again where to take from: main may now be the one over.
            return false;
        }
        self.small_ghost.push(node.hash, node.charge);
        if let Some(value) = self.arena.free(index) {
            out.push(value);
        }
        true
    }

    /// Takes from the main queue: an entry with uses left is reinserted with one fewer; the
    /// first without is evicted. Returns whether one was.
    fn evict_main(&mut self, counters: &impl Counters<T>, out: &mut Vec<T>) -> bool {
        while self.main.head != NIL {
            let index = self.main.head;
            self.unlink(index);
            let node = self.arena.node(index);
            if node.value.as_ref().is_some_and(|k| counters.decrement(k)) {
                self.push(Queue::Main, index);
                continue;
            }
            self.main_ghost.push(node.hash, node.charge);
            if let Some(value) = self.arena.free(index) {
                out.push(value);
            }
            return true;
        }
        false
    }

    fn unlink(&mut self, index: u32) {
        let list = match self.arena.node(index).queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
            Queue::Free => return,
        };
        self.arena.unlink(list, index);
    }

    fn push(&mut self, queue: Queue, index: u32) {
        let list = match queue {
            Queue::Small | Queue::Free => &mut self.small,
            Queue::Main => &mut self.main,
        };
        self.arena.push_back(list, queue, index);
    }

    /// The small queue's current share of the capacity (for tests).
    #[cfg(test)]
    pub(crate) fn small_share(&self) -> f64 {
        self.small_target as f64 / self.capacity.max(1) as f64
    }
}

/// `charge`, times `num / den` when that is above one: ARC's step.
fn scaled(charge: u64, num: u64, den: u64) -> u64 {
    if den == 0 || num <= den {
        charge
    } else {
        (charge as f64 * (num as f64 / den as f64)) as u64
    }
}

/// Key hashes of evicted entries, oldest first, bounded by the bytes the entries were charged
/// (as many as the cache could hold). About 50 bytes of memory per remembered key, not counted
/// in the store's capacity.
#[derive(Debug)]
struct Ghost {
    order: VecDeque<(u64, u64)>,
    /// Hash → (the stamp of its live position in `order`, its charge); a key evicted twice is
    /// counted once.
    live: HashMap<u64, (u64, u64), ahash::RandomState>,
    stamps: u64,
    bytes: u64,
    limit: u64,
}

impl Ghost {
    fn new(limit: u64) -> Self {
        Ghost {
            order: VecDeque::new(),
            // Fixed seeds: the keys are hashes already (from the store's random-keyed or seeded
            // hasher), and nothing iterates this map.
            live: HashMap::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4)),
            stamps: 0,
            bytes: 0,
            limit,
        }
    }

    fn push(&mut self, hash: u64, charge: u64) {
        self.take(hash);
        self.stamps += 1;
        self.order.push_back((hash, self.stamps));
        self.live.insert(hash, (self.stamps, charge));
        self.bytes += charge;
        while self.bytes > self.limit {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if let Some(&(live_stamp, old_charge)) = self.live.get(&old) {
                if live_stamp == stamp {
                    self.live.remove(&old);
                    self.bytes -= old_charge;
                }
            }
        }
        // Positions of keys that left early pile up in `order`; drop them once they are most.
        if self.order.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.order
                .retain(|(h, s)| live.get(h).is_some_and(|(l, _)| l == s));
        }
    }

    /// Forgets `hash`, returning whether it was remembered.
    fn take(&mut self, hash: u64) -> bool {
        match self.live.remove(&hash) {
            Some((_, charge)) => {
                self.bytes -= charge;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::{splitmix, ZipfRanks};
    use crate::store::evict::Usage;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Replays `requests` of unit-charged objects through the policy as a store drives it,
    /// checking the capacity after every insert; returns the hits.
    fn replay(policy: &mut Adaptive<u32>, requests: &[u32]) -> u64 {
        let mut counters: HashMap<u32, Usage> = HashMap::new();
        let mut hits = 0;
        let mut out = Vec::new();
        for &o in requests {
            if let Some(usage) = counters.get(&o) {
                usage.touch();
                hits += 1;
                continue;
            }
            policy.insert(o, splitmix(u64::from(o)), 1, &counters, &mut out);
            for victim in out.drain(..) {
                assert_ne!(victim, o, "the newcomer was its own victim");
                counters.remove(&victim);
            }
            counters.insert(o, Usage::default());
            assert!(policy.bytes() <= policy.capacity);
            assert_eq!(counters.len() as u64, policy.bytes());
        }
        hits
    }

    /// Exact LRU hits on unit objects, for comparison.
    fn lru_hits(requests: &[u32], capacity: usize) -> u64 {
        let mut order: VecDeque<u32> = VecDeque::new();
        let mut hits = 0;
        for &o in requests {
            if let Some(i) = order.iter().position(|&x| x == o) {
                order.remove(i);
                hits += 1;
            } else if order.len() == capacity {
                order.pop_front();
            }
            order.push_back(o);
        }
        hits
    }

    /// Each new key is read again `gap` requests after its first use, give or take.
    fn rereads(requests: usize, gap: u64, seed: u64) -> Vec<u32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut due: VecDeque<(u64, u32)> = VecDeque::new();
        let mut next = 0u32;
        let mut out = Vec::with_capacity(requests);
        for i in 0..requests as u64 {
            match due.front() {
                Some(&(when, key)) if when <= i => {
                    due.pop_front();
                    out.push(key);
                }
                _ => {
                    out.push(next);
                    due.push_back((i + gap + rng.random_range(0..gap / 4 + 1), next));
                    next += 1;
                }
            }
        }
        out
    }

    #[test]
    fn the_small_queue_grows_when_entries_are_reread_late() {
        // Re-reads come about 300 requests (150 new keys) after the first use: a 10% small
        // queue of a 200-entry cache (20 entries) has long evicted them, LRU still has them.
        let trace = rereads(40_000, 300, 1);
        let mut policy = Adaptive::new(200);
        let hits = replay(&mut policy, &trace);
        assert!(
            policy.small_share() > INITIAL_SMALL_SHARE,
            "{}",
            policy.small_share()
        );
        let lru = lru_hits(&trace, 200);
        assert!(hits >= lru, "adaptive {hits} < lru {lru}");
    }

    #[test]
    fn the_small_queue_shrinks_under_skewed_popularity() {
        let zipf = ZipfRanks::new(5_000, 1.0);
        let mut rng = StdRng::seed_from_u64(2);
        let trace: Vec<u32> = (0..100_000).map(|_| zipf.sample(&mut rng) as u32).collect();
        let mut policy = Adaptive::new(250);
        let hits = replay(&mut policy, &trace);
        assert!(policy.small_share() < 0.3, "{}", policy.small_share());
        // Frequency pays here: well above LRU.
        let lru = lru_hits(&trace, 250);
        assert!(hits as f64 > lru as f64 * 1.1, "adaptive {hits}, lru {lru}");
    }

    #[test]
    fn a_one_hit_wonder_flood_leaves_the_hot_entries_alone() {
        // Ten hot keys hit between every pair of one-time keys, in a 100-entry cache: once in
        // main, a hot key stays; the flood cycles through the small queue only.
        let mut trace = Vec::new();
        for i in 0..20_000u32 {
            trace.push(i % 10);
            trace.push(1_000 + i);
        }
        let mut policy = Adaptive::new(100);
        let hits = replay(&mut policy, &trace);
        assert!(hits >= 20_000 - 10, "{hits}");
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count() {
        let mut policy: Adaptive<u32> = Adaptive::new(1_000);
        let counters: HashMap<u32, Usage> = HashMap::new();
        let mut out = Vec::new();
        let a = policy.insert(1, 1, 300, &counters, &mut out);
        let b = policy.insert(2, 2, 300, &counters, &mut out);
        assert_eq!(policy.bytes(), 600);
        policy.update(a, 500, &counters, &mut out);
        assert_eq!(policy.bytes(), 800);
        assert!(out.is_empty());
        // Growing b past the room left evicts a (the only other entry), never b itself.
        policy.update(b, 600, &counters, &mut out);
        assert_eq!(out, vec![1]);
        assert_eq!(policy.bytes(), 600);
        assert_eq!(policy.remove(b), Some(2));
        assert_eq!(policy.remove(b), None, "a stale id names nothing");
        assert_eq!(policy.bytes(), 0);
    }
}

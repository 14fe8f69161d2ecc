//! Reference policies computed on the same trace as the backends: an exact byte-bounded LRU, and
//! Belady's farthest-next-use (OPT) with bypass.
//!
//! Both charge each object what the backends would ([`super::sim::Objects::charges`]) and count
//! bytes by body size, so their rows sit beside the backends' on equal terms.
//!
//! ## Which OPT
//! Belady's rule (evict the object whose next request is farthest away; an object never requested
//! again is farthest of all) is exactly optimal when every object has the same charge. The new
//! object is itself a candidate, so an object whose next use is farther than everything stored is
//! not admitted at all (bypass), which a cache may do and which only raises the hit count.
//! For variable sizes the exact optimum is NP-hard to compute; farthest-next-use is then a
//! heuristic reference, not a proven upper bound (it can lose to a policy that keeps many small
//! objects over one large one). Reports name it "Belady (farthest next use, with bypass)".

use std::collections::BTreeSet;

use super::sim::Counts;

/// The text reports use to say which OPT they computed.
pub const OPT_DESCRIPTION: &str = "Belady: evict farthest next use, new object included (bypass); exact OPT when all objects have the same charge, a heuristic reference for variable sizes";

/// Sentinel next-use index for "never requested again".
const NEVER: usize = usize::MAX;

/// For each request, the index of the next request for the same object, or [`NEVER`].
pub fn next_uses(requests: &[u32], objects: usize) -> Vec<usize> {
    let mut next = vec![NEVER; requests.len()];
    let mut seen = vec![NEVER; objects];
    for (i, &o) in requests.iter().enumerate().rev() {
        next[i] = seen[o as usize];
        seen[o as usize] = i;
    }
    next
}

/// Replays `requests` through an exact LRU bounded to `capacity` bytes of `charges`. An object
/// charged more than the capacity is never stored, as the backends do.
pub fn lru(requests: &[u32], charges: &[u64], sizes: &[u64], capacity: u64) -> Counts {
    const NIL: u32 = u32::MAX;
    let n = charges.len();
    // A doubly linked list threaded through arrays: head is most recent, tail least.
    let mut prev = vec![NIL; n];
    let mut next = vec![NIL; n];
    let mut cached = vec![false; n];
    let (mut head, mut tail) = (NIL, NIL);
    let mut used = 0u64;
    let mut counts = Counts::default();

    for &o in requests {
        let oi = o as usize;
        let hit = cached[oi];
        counts.record(hit, sizes[oi]);
        if hit {
            if head == o {
                continue;
            }
            // Unlink, then push at the head.
            let (p, nx) = (prev[oi], next[oi]);
            if p != NIL {
                next[p as usize] = nx;
            }
            if nx != NIL {
                prev[nx as usize] = p;
            } else {
                tail = p;
            }
        } else {
            if charges[oi] > capacity {
                continue;
            }
            cached[oi] = true;
            used += charges[oi];
        }
        prev[oi] = NIL;
        next[oi] = head;
        if head != NIL {
            prev[head as usize] = o;
        }
        head = o;
        if tail == NIL {
            tail = o;
        }
        while used > capacity {
            let victim = tail;
            let vi = victim as usize;
            tail = prev[vi];
            if tail != NIL {
                next[tail as usize] = NIL;
            } else {
                head = NIL;
            }
            cached[vi] = false;
            used -= charges[vi];
        }
    }
    counts.stored_bytes = used;
    counts
}

/// Replays `requests` through Belady's policy bounded to `capacity` bytes of `charges`; see the
/// module docs for which optimum this is.
///
/// O(log n) per request: the stored objects sit in an ordered set keyed by their next use, so
/// the farthest one is the set's last element.
pub fn belady(requests: &[u32], charges: &[u64], sizes: &[u64], capacity: u64) -> Counts {
    let next = next_uses(requests, charges.len());
    // Each stored object's key in `order`; `None` when not stored.
    let mut key: Vec<Option<usize>> = vec![None; charges.len()];
    let mut order: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut used = 0u64;
    let mut counts = Counts::default();

    for (i, &o) in requests.iter().enumerate() {
        let oi = o as usize;
        let hit = key[oi].is_some();
        counts.record(hit, sizes[oi]);
        if let Some(old) = key[oi] {
            order.remove(&(old, o));
        } else {
            if charges[oi] > capacity {
                continue;
            }
            used += charges[oi];
        }
        order.insert((next[i], o));
        key[oi] = Some(next[i]);
        // Farthest next use first; among objects never used again, the highest number first
        // (an arbitrary but fixed tie-break: which of them goes cannot change the hit count).
        while used > capacity {
            let (_, victim) = order
                .pop_last()
                .expect("over capacity means something is stored");
            key[victim as usize] = None;
            used -= charges[victim as usize];
        }
    }
    counts.stored_bytes = used;
    counts
}

/// Replays `requests` through SIEVE (Zhang et al., "SIEVE is Simpler than LRU", NSDI 2024)
/// bounded to `capacity` bytes of `charges`.
///
/// One FIFO queue and a visited bit per object: a hit only sets the bit. The hand walks from
/// the oldest object towards the newest, clearing set bits and evicting the first object whose
/// bit is clear; objects are never moved, and the hand keeps its place between evictions
/// (wrapping to the oldest when it passes the newest). New objects go in at the newest end,
/// after room has been made.
pub fn sieve(requests: &[u32], charges: &[u64], sizes: &[u64], capacity: u64) -> Counts {
    const NIL: u32 = u32::MAX;
    let n = charges.len();
    // `newer[o]` / `older[o]`: the neighbours of `o` in the queue.
    let mut newer = vec![NIL; n];
    let mut older = vec![NIL; n];
    let mut visited = vec![false; n];
    let mut cached = vec![false; n];
    let (mut newest, mut oldest, mut hand) = (NIL, NIL, NIL);
    let mut used = 0u64;
    let mut counts = Counts::default();

    for &o in requests {
        let oi = o as usize;
        let hit = cached[oi];
        counts.record(hit, sizes[oi]);
        if hit {
            visited[oi] = true;
            continue;
        }
        if charges[oi] > capacity {
            continue;
        }
        while used + charges[oi] > capacity {
            let mut h = if hand == NIL { oldest } else { hand };
            while visited[h as usize] {
                visited[h as usize] = false;
                h = newer[h as usize];
                if h == NIL {
                    h = oldest;
                }
            }
            let hi = h as usize;
            hand = newer[hi];
            if older[hi] != NIL {
                newer[older[hi] as usize] = newer[hi];
            } else {
                oldest = newer[hi];
            }
            if newer[hi] != NIL {
                older[newer[hi] as usize] = older[hi];
            } else {
                newest = older[hi];
            }
            cached[hi] = false;
            used -= charges[hi];
        }
        cached[oi] = true;
        visited[oi] = false;
        used += charges[oi];
        older[oi] = newest;
        newer[oi] = NIL;
        if newest != NIL {
            newer[newest as usize] = o;
        } else {
            oldest = o;
        }
        newest = o;
    }
    counts.stored_bytes = used;
    counts
}

/// The small queue's share of the capacity in [`s3fifo`].
pub const S3FIFO_SMALL_SHARE: f64 = 0.1;

/// Replays `requests` through S3-FIFO (Yang et al., "FIFO queues are all you need for cache
/// eviction", SOSP 2023) bounded to `capacity` bytes of `charges`.
///
/// A small FIFO (10% of the capacity) takes new objects; a main FIFO takes the rest; a ghost
/// FIFO remembers the objects evicted from the small queue, as many bytes of them as the main
/// queue may hold. Each object has a counter of its hits, capped at 3. Evicting from the small
/// queue moves its oldest object to the main queue if it was hit there, else drops it into the
/// ghost; evicting from the main queue reinserts its oldest object with its counter decremented
/// while the counter is above zero, else drops it. A miss on an object the ghost remembers
/// inserts it straight into the main queue. This is the version the paper evaluated (the
/// small queue's oldest object moves to main once it has been hit at all).
pub fn s3fifo(requests: &[u32], charges: &[u64], sizes: &[u64], capacity: u64) -> Counts {
    use std::collections::VecDeque;

    #[derive(Clone, Copy, PartialEq)]
    enum Place {
        Out,
        Small,
        Main,
    }
    let n = charges.len();
    let small_target = (capacity as f64 * S3FIFO_SMALL_SHARE) as u64;
    let ghost_target = capacity - small_target;
    let mut place = vec![Place::Out; n];
    let mut freq = vec![0u8; n];
    // The ghost: a FIFO of (object, stamp); an object is in the ghost while its stamp matches.
    let mut ghost_stamp: Vec<u64> = vec![0; n];
    let mut ghost: VecDeque<(u32, u64)> = VecDeque::new();
    let mut ghost_bytes = 0u64;
    let mut stamp = 0u64;
    let mut small: VecDeque<u32> = VecDeque::new();
    let mut main: VecDeque<u32> = VecDeque::new();
    let (mut small_bytes, mut main_bytes) = (0u64, 0u64);
    let mut counts = Counts::default();

    for &o in requests {
        let oi = o as usize;
        let hit = place[oi] != Place::Out;
        counts.record(hit, sizes[oi]);
        if hit {
            freq[oi] = (freq[oi] + 1).min(3);
            continue;
        }
        if charges[oi] > capacity {
            continue;
        }
        while small_bytes + main_bytes + charges[oi] > capacity {
            if (small_bytes >= small_target && !small.is_empty()) || main.is_empty() {
                // Evict from the small queue: promote what was hit, ghost the first that was not.
                while let Some(t) = small.pop_front() {
                    let ti = t as usize;
                    small_bytes -= charges[ti];
                    if freq[ti] > 0 {
                        freq[ti] = 0;
                        place[ti] = Place::Main;
                        main.push_back(t);
                        main_bytes += charges[ti];
                    } else {
                        place[ti] = Place::Out;
                        stamp += 1;
                        ghost_stamp[ti] = stamp;
                        ghost.push_back((t, stamp));
                        ghost_bytes += charges[ti];
                        while ghost_bytes > ghost_target {
                            let Some((g, s)) = ghost.pop_front() else {
                                break;
                            };
                            // A position whose object has left the ghost since was no
                            // longer counted.
                            if ghost_stamp[g as usize] == s {
                                ghost_stamp[g as usize] = 0;
                                ghost_bytes -= charges[g as usize];
                            }
                        }
                        break;
                    }
                }
            } else {
                // Evict from the main queue: reinsert while the counter lasts.
                while let Some(t) = main.pop_front() {
                    let ti = t as usize;
                    if freq[ti] > 0 {
                        freq[ti] -= 1;
                        main.push_back(t);
                    } else {
                        place[ti] = Place::Out;
                        main_bytes -= charges[ti];
                        break;
                    }
                }
            }
        }
        freq[oi] = 0;
        if ghost_stamp[oi] != 0 {
            ghost_stamp[oi] = 0;
            ghost_bytes -= charges[oi];
            place[oi] = Place::Main;
            main.push_back(o);
            main_bytes += charges[oi];
        } else {
            place[oi] = Place::Small;
            small.push_back(o);
            small_bytes += charges[oi];
        }
    }
    counts.stored_bytes = small_bytes + main_bytes;
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Maps letters to dense objects: "ABCA" → [0, 1, 2, 0].
    fn trace(s: &str) -> (Vec<u32>, usize) {
        let reqs: Vec<u32> = s.bytes().map(|b| u32::from(b - b'A')).collect();
        let n = reqs.iter().map(|&o| o as usize + 1).max().unwrap_or(0);
        (reqs, n)
    }

    fn unit(n: usize) -> Vec<u64> {
        vec![1; n]
    }

    #[test]
    fn next_use_indices() {
        let (r, n) = trace("ABAB");
        assert_eq!(next_uses(&r, n), vec![2, 3, NEVER, NEVER]);
    }

    /// The textbook trace 1 2 3 4 1 2 5 1 2 3 4 5 with three slots: LRU hits twice (the second
    /// 1 and 2 after 5), OPT hits five times; a margin of 3 hits in 12 requests.
    #[test]
    fn opt_beats_lru_by_the_known_margin() {
        let (r, n) = trace("ABCDABEABCDE");
        let lru = lru(&r, &unit(n), &unit(n), 3);
        let opt = belady(&r, &unit(n), &unit(n), 3);
        assert_eq!((lru.hits, lru.requests), (2, 12));
        assert_eq!((opt.hits, opt.requests), (5, 12));
        assert_eq!(opt.hits - lru.hits, 3);
    }

    #[test]
    fn lru_evicts_the_least_recent() {
        // Capacity 2: A B A C (evicts B, A was touched) then A hits, B misses.
        let (r, n) = trace("ABACAB");
        let c = lru(&r, &unit(n), &unit(n), 2);
        assert_eq!(c.hits, 2, "A at 2 and A at 4");
        // Byte hit ratio weighs by size: A is 10 bytes, B 1, C 1.
        let sizes = vec![10, 1, 1];
        let c = lru(&r, &unit(n), &sizes, 2);
        assert_eq!(c.hit_bytes, 20);
        assert_eq!(c.bytes, 10 * 3 + 1 + 1 + 1);
        assert!(c.stored_bytes <= 2);
    }

    #[test]
    fn opt_ties_between_never_used_again_objects() {
        // Capacity 2. At C, B and C are never used again (a tie) while A is: either of them may
        // go, A must stay, so the final A hits. LRU evicts A instead (the least recent).
        let (r, n) = trace("ABCA");
        assert_eq!(belady(&r, &unit(n), &unit(n), 2).hits, 1);
        assert_eq!(lru(&r, &unit(n), &unit(n), 2).hits, 0);
        // All-way tie: nothing is ever reused, nothing can hit.
        let (r, n) = trace("ABCDE");
        assert_eq!(belady(&r, &unit(n), &unit(n), 2).hits, 0);
    }

    #[test]
    fn opt_bypasses_an_object_needed_later_than_everything_stored() {
        // Capacity 2: A B C A B C B A. Both times C arrives, its next use is farther than A's
        // and B's, so it is not admitted; A and B then hit on every repeat: 4 hits. Always
        // admitting C would have cost a hit.
        let (r, n) = trace("ABCABCBA");
        assert_eq!(belady(&r, &unit(n), &unit(n), 2).hits, 4);
    }

    #[test]
    fn oversized_objects_are_never_stored() {
        let (r, n) = trace("AAAB");
        let charges = vec![5, 1];
        assert_eq!(belady(&r, &charges, &unit(n), 4).hits, 0);
        assert_eq!(lru(&r, &charges, &unit(n), 4).hits, 0);
        assert_eq!(lru(&r, &charges, &unit(n), 5).hits, 2);
    }

    #[test]
    fn variable_sizes_evict_until_it_fits() {
        // Capacity 10; A=6, B=3, C=5. A B: 9 stored. C: 14 > 10, farthest next use first:
        // next uses A@4, B@3, C@never → C is bypassed. B hits, A hits.
        let (r, _) = trace("ABCBA");
        let charges = vec![6, 3, 5];
        let c = belady(&r, &charges, &charges, 10);
        assert_eq!(c.hits, 2);
        assert_eq!(c.hit_bytes, 9);
        assert_eq!(c.stored_bytes, 9);
    }

    /// With equal charges Belady is the optimum, so no policy (here: exact LRU) may beat it, on
    /// any trace and any capacity.
    #[test]
    fn opt_is_never_below_lru_on_unit_sizes() {
        let mut rng = StdRng::seed_from_u64(9);
        for round in 0..200 {
            let n = rng.random_range(1..20usize);
            let len = rng.random_range(1..200usize);
            let r: Vec<u32> = (0..len).map(|_| rng.random_range(0..n as u32)).collect();
            let cap = rng.random_range(1..=n as u64);
            let l = lru(&r, &unit(n), &unit(n), cap);
            let o = belady(&r, &unit(n), &unit(n), cap);
            assert!(
                o.hits >= l.hits,
                "round {round}: opt {} < lru {}",
                o.hits,
                l.hits
            );
            // And with room for everything both hit on every repeat.
            let all = belady(&r, &unit(n), &unit(n), n as u64);
            let distinct = r.iter().collect::<std::collections::HashSet<_>>().len() as u64;
            assert_eq!(all.hits, len as u64 - distinct);
            assert_eq!(lru(&r, &unit(n), &unit(n), n as u64).hits, all.hits);
        }
    }

    #[test]
    fn sieve_keeps_its_hand_where_it_stopped() {
        // Capacity 3: A B C, A hit (visited). D: the hand clears A, evicts B, stops at C.
        // B: C is unvisited, evicted; the hand moves to D. E: D is unvisited, evicted, and A
        // survives to hit at the end. LRU evicts A at E (the least recent) and misses it.
        let (r, n) = trace("ABCADBEA");
        assert_eq!(sieve(&r, &unit(n), &unit(n), 3).hits, 2);
        assert_eq!(lru(&r, &unit(n), &unit(n), 3).hits, 1);
    }

    #[test]
    fn s3fifo_keeps_hot_objects_through_a_flood_of_one_time_objects() {
        // Capacity 10 (small queue 1): A and B are hit between one-time objects; after their
        // first promotion to main they hit every time. LRU with 10 slots also keeps them
        // (reuse distance 3), so the flood must be wider than the cache to tell them apart.
        let mut reqs = Vec::new();
        for i in 0..1_000u32 {
            reqs.extend([0, 1]);
            reqs.extend((0..12).map(|j| 2 + i * 12 + j));
        }
        let n = *reqs.iter().max().unwrap() as usize + 1;
        let s3 = s3fifo(&reqs, &unit(n), &unit(n), 10);
        let l = lru(&reqs, &unit(n), &unit(n), 10);
        assert!(s3.hits >= 2 * 1_000 - 4, "s3fifo {}", s3.hits);
        assert_eq!(l.hits, 0, "LRU loses both to the flood");
    }

    /// With equal charges no online policy can beat Belady, and with room for everything every
    /// policy hits every repeat.
    #[test]
    fn s3fifo_and_sieve_stay_under_opt_on_unit_sizes() {
        let mut rng = StdRng::seed_from_u64(12);
        for round in 0..200 {
            let n = rng.random_range(1..30usize);
            let len = rng.random_range(1..300usize);
            let r: Vec<u32> = (0..len).map(|_| rng.random_range(0..n as u32)).collect();
            let cap = rng.random_range(1..=n as u64);
            let o = belady(&r, &unit(n), &unit(n), cap).hits;
            for (name, c) in [
                ("s3fifo", s3fifo(&r, &unit(n), &unit(n), cap)),
                ("sieve", sieve(&r, &unit(n), &unit(n), cap)),
            ] {
                assert!(c.hits <= o, "round {round}: {name} {} > opt {o}", c.hits);
                assert!(c.stored_bytes <= cap);
            }
            let distinct = r.iter().collect::<std::collections::HashSet<_>>().len() as u64;
            let all = n as u64;
            assert_eq!(
                sieve(&r, &unit(n), &unit(n), all).hits,
                len as u64 - distinct
            );
            assert_eq!(
                s3fifo(&r, &unit(n), &unit(n), all).hits,
                len as u64 - distinct
            );
        }
    }
}

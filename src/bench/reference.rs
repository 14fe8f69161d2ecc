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
}

//! `bench sim`: a trace replayed straight through each [`Store`] backend, no sockets.
//!
//! Each request is a `get`; a hit is a `get` that returns an entry, and a miss is followed by an
//! `insert`, as the proxy does on a miss it may store. Entries are [`Entry::synthetic`] bodies
//! (a shared static buffer, so a million inserts allocate no bodies).

use std::sync::Arc;

use indicatif::ProgressBar;

use crate::store::{Backend, Entry, Eviction, Key, MokaPolicy, Store, ENTRY_OVERHEAD};

use super::trace::Trace;

/// Hits and bytes counted over one replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests replayed.
    pub requests: u64,
    /// Of those, served from the cache.
    pub hits: u64,
    /// Body bytes requested.
    pub bytes: u64,
    /// Of those, served from the cache.
    pub hit_bytes: u64,
    /// Bytes the cache held at the end, as it charges them.
    pub stored_bytes: u64,
}

impl Counts {
    /// Counts one request of `size` body bytes.
    pub fn record(&mut self, hit: bool, size: u64) {
        self.requests += 1;
        self.bytes += size;
        if hit {
            self.hits += 1;
            self.hit_bytes += size;
        }
    }

    /// Hits over requests; 0 for no requests.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.hits, self.requests)
    }

    /// Hit bytes over requested bytes; 0 for no requests.
    pub fn byte_hit_ratio(&self) -> f64 {
        ratio(self.hit_bytes, self.bytes)
    }
}

/// `num / den`, or 0 when `den` is 0.
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The key each object is stored under, and the bytes the store charges it.
///
/// The backends charge an entry `ENTRY_OVERHEAD + key + headers + body` ([`Entry::charge`]).
/// Synthetic entries have no headers, so to charge an object what the proxy would (its response
/// headers included), the replay pads the synthetic body by `header_bytes`. The charge the
/// references use is computed the same way, so backends, LRU and OPT all count the same bytes.
#[derive(Debug, Clone)]
pub struct Objects {
    /// The key of each object.
    pub keys: Vec<Key>,
    /// Bytes each object is charged.
    pub charges: Vec<u64>,
    /// Extra body bytes each synthetic entry carries in place of response headers.
    pub header_bytes: Vec<u64>,
}

impl Objects {
    /// Objects keyed `key(object, size)`, charged `ENTRY_OVERHEAD + key + headers(size) + size`.
    pub fn new(
        trace: &Trace,
        key: impl Fn(u32, u64) -> String,
        headers: impl Fn(u64) -> u64,
    ) -> Self {
        let mut keys = Vec::with_capacity(trace.objects());
        let mut charges = Vec::with_capacity(trace.objects());
        let mut header_bytes = Vec::with_capacity(trace.objects());
        for (o, &size) in trace.sizes.iter().enumerate() {
            let k = Key::new(key(o as u32, size));
            let h = headers(size);
            charges.push(ENTRY_OVERHEAD + k.len() as u64 + h + size);
            header_bytes.push(h);
            keys.push(k);
        }
        Objects {
            keys,
            charges,
            header_bytes,
        }
    }

    /// Charged bytes of every distinct object: the capacity that would never evict.
    pub fn working_set(&self) -> u64 {
        self.charges.iter().sum()
    }
}

/// Builds the store a replay runs through: the backend as it serves, with its hashers keyed by
/// `seed` ([`Backend::build_seeded`]) so that the same seed gives the same hits on every run
/// of the same binary.
pub fn build_store(
    backend: Backend,
    capacity: u64,
    eviction: Eviction,
    moka_policy: MokaPolicy,
    seed: u64,
) -> Arc<dyn Store> {
    backend.build_seeded(capacity, eviction, moka_policy, seed)
}

/// One request of a replay, for object `o`: a `get`, and on a miss an `insert` followed by
/// [`Store::settle`], so that the store's capacity holds at every step (moka would otherwise
/// keep up to 64 inserts readable beyond it until its next batch of maintenance, and a replay
/// would credit it with hits no cache of that size could have). Returns whether it hit.
pub fn request(store: &dyn Store, trace: &Trace, objects: &Objects, o: u32) -> bool {
    let oi = o as usize;
    let key = &objects.keys[oi];
    let hit = store.get(key).is_some();
    if !hit {
        let body = (trace.sizes[oi] + objects.header_bytes[oi]) as usize;
        store.insert(key.clone(), Arc::new(Entry::synthetic(body)));
        store.settle();
    }
    hit
}

/// Replays `trace` through `store`, one [`request`] at a time, ticking `progress` every few
/// thousand requests.
pub fn replay(
    store: &dyn Store,
    trace: &Trace,
    objects: &Objects,
    progress: &ProgressBar,
) -> Counts {
    const TICK: usize = 4096;
    let mut counts = Counts::default();
    for (i, &o) in trace.requests.iter().enumerate() {
        let hit = request(store, trace, objects, o);
        counts.record(hit, trace.sizes[o as usize]);
        if i % TICK == TICK - 1 {
            progress.inc(TICK as u64);
        }
    }
    progress.inc((trace.requests.len() % TICK) as u64);
    counts.stored_bytes = store.weighted_size();
    counts
}

/// What [`replay_spread`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpreadCounts {
    /// Every request: `hits` counts local and shared hits, `stored_bytes` sums the stores.
    pub counts: Counts,
    /// Of the hits, those the shared tier answered.
    pub shared_hits: u64,
}

/// Replays `trace` spread round-robin over `stores`, as `bench http --instances` sends it:
/// request `i` goes to `stores[i % stores.len()]`. With `shared`, the stores share a tier that
/// keeps every object once fetched (a Redis with room for all of them, nothing expiring): a
/// request its own store misses is a shared hit when any store fetched the object before, and
/// is then promoted into its store, as the proxy does; without, each store is on its own.
pub fn replay_spread(
    stores: &[Arc<dyn Store>],
    shared: bool,
    trace: &Trace,
    objects: &Objects,
) -> SpreadCounts {
    assert!(!stores.is_empty(), "replay_spread needs a store");
    let mut out = SpreadCounts::default();
    let mut in_tier = vec![false; trace.objects()];
    for (i, &o) in trace.requests.iter().enumerate() {
        let local = request(&*stores[i % stores.len()], trace, objects, o);
        let from_tier = !local && shared && in_tier[o as usize];
        in_tier[o as usize] = true;
        out.counts
            .record(local || from_tier, trace.sizes[o as usize]);
        if from_tier {
            out.shared_hits += 1;
        }
    }
    out.counts.stored_bytes = stores.iter().map(|s| s.weighted_size()).sum();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::reference;
    use crate::bench::spec::{SizeSpec, Workload};
    use crate::bench::workload::generate;

    fn plain_objects(trace: &Trace) -> Objects {
        Objects::new(trace, |o, _| format!("/obj/{o:06}"), |_| 0)
    }

    #[test]
    fn synthetic_entries_are_charged_what_objects_says() {
        let trace = Trace {
            requests: vec![0, 1],
            sizes: vec![100, 5000],
        };
        let objects = Objects::new(&trace, |o, s| format!("k{o}-{s}"), |s| s / 100);
        for o in 0..2 {
            let entry = Entry::synthetic((trace.sizes[o] + objects.header_bytes[o]) as usize);
            assert_eq!(entry.charge(&objects.keys[o]), objects.charges[o]);
        }
        assert_eq!(objects.working_set(), objects.charges.iter().sum::<u64>());
    }

    #[test]
    fn every_backend_stays_under_capacity_and_under_opt() {
        let trace = generate(
            Workload::Zipf { alpha: 0.9 },
            2000,
            20_000,
            SizeSpec::Fixed(512),
            3,
        );
        let objects = plain_objects(&trace);
        let capacity = objects.working_set() / 10;
        let opt = reference::belady(&trace.requests, &objects.charges, &trace.sizes, capacity);
        for backend in Backend::ALL {
            let store = build_store(
                backend,
                capacity,
                Eviction::Adaptive,
                MokaPolicy::Tinylfu,
                1,
            );
            let c = replay(&*store, &trace, &objects, &ProgressBar::hidden());
            assert_eq!(c.requests, 20_000);
            assert!(c.hits > 0, "{backend}");
            assert!(
                c.stored_bytes <= capacity,
                "{backend}: {} > {capacity}",
                c.stored_bytes
            );
            assert!(
                c.hits <= opt.hits,
                "{backend}: {} > opt {}",
                c.hits,
                opt.hits
            );
        }
    }

    #[test]
    fn a_cache_larger_than_the_working_set_misses_only_once_per_object() {
        let trace = generate(Workload::Uniform, 300, 3000, SizeSpec::Fixed(100), 1);
        let objects = plain_objects(&trace);
        let capacity = objects.working_set() * 2;
        for backend in Backend::ALL {
            let store = build_store(backend, capacity, Eviction::Adaptive, MokaPolicy::Lru, 1);
            let c = replay(&*store, &trace, &objects, &ProgressBar::hidden());
            assert_eq!(c.requests - c.hits, trace.objects() as u64, "{backend}");
        }
    }

    #[test]
    fn a_spread_replay_shares_what_any_store_fetched() {
        let trace = generate(
            Workload::Zipf { alpha: 1.0 },
            1000,
            20_000,
            SizeSpec::Fixed(100),
            2,
        );
        let objects = plain_objects(&trace);
        let capacity = objects.working_set() / 20;
        let stores = |n: usize| -> Vec<Arc<dyn Store>> {
            (0..n)
                .map(|_| {
                    build_store(
                        Backend::Rwlock,
                        capacity,
                        Eviction::Adaptive,
                        MokaPolicy::Lru,
                        1,
                    )
                })
                .collect()
        };
        // One store, no tier: the plain replay.
        let one = replay_spread(&stores(1), false, &trace, &objects);
        let plain = replay(&*stores(1)[0], &trace, &objects, &ProgressBar::hidden());
        assert_eq!(one.counts, plain);
        assert_eq!(one.shared_hits, 0);
        // With the tier, only an object's first request anywhere misses.
        let fleet = replay_spread(&stores(3), true, &trace, &objects);
        assert_eq!(
            fleet.counts.requests - fleet.counts.hits,
            trace.objects() as u64
        );
        assert!(fleet.shared_hits > 0);
        let isolated = replay_spread(&stores(3), false, &trace, &objects);
        assert_eq!(isolated.shared_hits, 0);
        assert!(isolated.counts.hits < fleet.counts.hits);
        assert!(isolated.counts.stored_bytes <= 3 * capacity);
    }
}

//! The `moka` backend: a concurrent cache with a byte weigher and W-TinyLFU admission.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;

use super::{Entry, Key, Store};

/// Which eviction policy moka runs.
///
/// TinyLFU admission wins on skewed, stable popularity; it can lose to plain LRU where the most
/// recent keys matter most (popularity that shifts), because a new key must prove itself more
/// popular than the victim before it is admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MokaPolicy {
    /// W-TinyLFU: frequency-based admission in front of a segmented LRU.
    #[default]
    Tinylfu,
    /// Plain LRU, no admission filter.
    Lru,
}

impl fmt::Display for MokaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MokaPolicy::Tinylfu => "tinylfu",
            MokaPolicy::Lru => "lru",
        })
    }
}

/// The error for a moka policy name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown moka policy {0:?}: expected tinylfu or lru")]
pub struct UnknownMokaPolicy(String);

impl FromStr for MokaPolicy {
    type Err = UnknownMokaPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tinylfu" | "w-tinylfu" => Ok(MokaPolicy::Tinylfu),
            "lru" => Ok(MokaPolicy::Lru),
            _ => Err(UnknownMokaPolicy(s.to_string())),
        }
    }
}

/// A store on `moka::sync::Cache`, weighted by [`Entry::charge`].
///
/// ## How far over capacity it can be
/// moka applies inserts and evictions in batches: an inserted entry is readable at once, but it
/// is counted, and others are evicted to make room for it, only when moka next runs its
/// maintenance, which it does on its own once 64 writes are pending (or 300 ms have passed),
/// with up to 384 writes queued when many threads insert at once. Left to itself it could
/// therefore hold 64 to 384 entries beyond its capacity, whatever their size.
///
/// The serving store leaves it at that: running maintenance from inserting threads, to keep
/// the overshoot smaller, made moka's byte count drift under concurrent inserts and removes of
/// the same keys. So what `get` can return exceeds the capacity by at most
/// [`MOKA_PENDING_WRITES`] entries with one thread inserting (more with many, up to moka's 384
/// queued writes), for at most 300 ms. [`Store::settle`] (what replays call after every insert)
/// brings it to none.
pub struct MokaStore {
    cache: moka::sync::Cache<Key, Arc<Entry>, ahash::RandomState>,
    capacity: u64,
    evictions: Arc<AtomicU64>,
}

/// Writes moka lets pend before it runs its maintenance by itself (one thread inserting): the
/// serving store's overshoot, in entries.
pub const MOKA_PENDING_WRITES: u64 = 64;

impl fmt::Debug for MokaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl MokaStore {
    /// An empty store that holds at most `capacity` bytes (see the type's docs for the bound
    /// between maintenance runs), for serving: moka's hasher, which also indexes its frequency
    /// sketch, takes random keys, since the keys come from clients (HashDoS).
    pub fn new(capacity: u64, policy: MokaPolicy) -> Self {
        Self::with_hasher(capacity, policy, ahash::RandomState::new())
    }

    /// An empty store like [`MokaStore::new`] whose hasher is keyed by `seed`, for replays:
    /// TinyLFU's admission reads a frequency sketch indexed by the key's hash, so only a fixed
    /// hasher makes two replays of one trace agree hit for hit (moka has no other randomness).
    /// Not for serving: with known hash keys a client could make its keys collide with popular
    /// ones in the sketch.
    pub fn with_seed(capacity: u64, policy: MokaPolicy, seed: u64) -> Self {
        Self::with_hasher(capacity, policy, super::seeded_hasher(seed))
    }

    fn with_hasher(capacity: u64, policy: MokaPolicy, hasher: ahash::RandomState) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
        // moka sizes TinyLFU's frequency sketch once, when the cache is first half full, for
        // `entry_count * weighted_size / max_capacity` entries: about a quarter of the entries
        // a full cache holds. moka 0.12 has no setting for the sketch's size
        // (`initial_capacity` sizes only its hash table), so that is left as moka does it.
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            // moka's weigher returns u32; an entry that large is refused by `insert` anyway
            // whenever the capacity is below 4 GiB, and saturating keeps the count honest above.
            .weigher(|k: &Key, v: &Arc<Entry>| u32::try_from(v.charge(k)).unwrap_or(u32::MAX))
            .eviction_policy(match policy {
                MokaPolicy::Tinylfu => EvictionPolicy::tiny_lfu(),
                MokaPolicy::Lru => EvictionPolicy::lru(),
            })
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(hasher);
        MokaStore {
            cache,
            capacity,
            evictions,
        }
    }

    /// Runs moka's pending maintenance until what it holds fits the capacity.
    fn run_maintenance(&self) {
        // Taken before the run: every write counted so far is in moka's queue already, so the
        // run applies it; writes counted after this point are left for the next check.
        self.cache.run_pending_tasks();
        // One run applies everything queued and evicts to fit, unless it stopped at moka's
        // 100 ms time limit for a run; a few more runs finish the job then.
        for _ in 0..8 {
            if self.cache.weighted_size() <= self.capacity {
                break;
            }
            self.cache.run_pending_tasks();
        }
    }
}

impl Store for MokaStore {
    fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    fn contains(&self, key: &Key) -> bool {
        // moka's `contains_key` records no read in its frequency sketch.
        self.cache.contains_key(key)
    }

    fn insert(&self, key: Key, entry: Arc<Entry>) {
        let charge = entry.charge(&key);
        if charge > self.capacity {
            self.cache.invalidate(&key);
            return;
        }
        // No maintenance here: run from inserting threads while others insert and remove the
        // same keys, it let moka's byte count drift from what it holds (1 run in 15 of the
        // conformance suite's `concurrent_use`). moka's own batching bounds the overshoot; see
        // the type's docs.
        self.cache.insert(key, entry);
    }

    fn remove(&self, key: &Key) -> Option<Arc<Entry>> {
        self.cache.remove(key)
    }

    fn keys_where(&self, pick: &dyn Fn(&Key) -> bool) -> Vec<Key> {
        // moka's iterator takes no lock that a hit needs.
        self.cache
            .iter()
            .filter(|(k, _)| pick(k))
            .map(|(k, _)| Key::clone(&k))
            .collect()
    }

    fn settle(&self) {
        self.run_maintenance();
    }

    fn weighted_size(&self) -> u64 {
        // moka applies writes and evictions in batches; settle them so the figure is current.
        self.run_maintenance();
        self.cache.weighted_size()
    }

    fn entry_count(&self) -> u64 {
        self.run_maintenance();
        self.cache.entry_count()
    }

    fn evictions(&self) -> u64 {
        self.run_maintenance();
        self.evictions.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "moka"
    }
}

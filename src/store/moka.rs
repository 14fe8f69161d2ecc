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
pub struct MokaStore {
    cache: moka::sync::Cache<Key, Arc<Entry>, ahash::RandomState>,
    capacity: u64,
    evictions: Arc<AtomicU64>,
}

impl fmt::Debug for MokaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl MokaStore {
    /// An empty store that holds at most `capacity` bytes.
    pub fn new(capacity: u64, policy: MokaPolicy) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
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
            .build_with_hasher(ahash::RandomState::new());
        MokaStore {
            cache,
            capacity,
            evictions,
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
        if entry.charge(&key) > self.capacity {
            self.cache.invalidate(&key);
            return;
        }
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

    fn weighted_size(&self) -> u64 {
        // moka applies writes and evictions in batches; settle them so the figure is current.
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    fn evictions(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.evictions.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "moka"
    }
}

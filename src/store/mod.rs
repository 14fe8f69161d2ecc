//! The in-memory store: one synchronous trait and the backends behind it.
//!
//! The trait is synchronous on purpose. A method that cannot `.await` cannot hold a lock while
//! the network is waited on, so the rule "no lock is held across upstream I/O" is enforced by the
//! type system rather than by review. A lookup takes a lock, clones an `Arc`, and lets go.

mod entry;
mod evict;
mod moka;
mod rwlock;
mod sharded;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use self::entry::{CachedResponse, Entry, Key, VariantMembers, ENTRY_OVERHEAD, FIELD_OVERHEAD};
pub use self::evict::{Eviction, UnknownEviction};
pub use self::moka::{MokaPolicy, MokaStore, MOKA_PENDING_WRITES};
pub use self::rwlock::RwLockStore;
pub use self::sharded::ShardedStore;

/// A bounded, evicting map from cache keys to shared entries.
///
/// Every implementation holds at most the number of bytes it was built with, counting each entry
/// by [`Entry::charge`], and evicts to stay under it. Implementations must be cheap to call from
/// many threads at once: a `get` is on the path of every hit.
pub trait Store: Send + Sync + 'static {
    /// Looks a key up, returning a clone of the shared entry (a pointer copy, never the body).
    fn get(&self, key: &Key) -> Option<Arc<Entry>>;
    /// True when `key` is stored. Unlike [`Store::get`], it is not a use: it leaves the
    /// eviction policy's view of the key untouched (the proxy asks it after an insert, to report
    /// only what was really stored).
    fn contains(&self, key: &Key) -> bool;
    /// Inserts or replaces an entry, evicting others if the store is over its capacity. An entry
    /// larger than the whole capacity is not stored.
    fn insert(&self, key: Key, entry: Arc<Entry>);
    /// Removes one key, returning what was stored there.
    fn remove(&self, key: &Key) -> Option<Arc<Entry>>;
    /// The keys `pick` selects, collected in one pass; used by prefix and full purges, which
    /// then remove them a batch at a time with [`Store::remove_many`]. It must not block hits
    /// for longer than the pass takes (a read lock, or shard by shard).
    fn keys_where(&self, pick: &dyn Fn(&Key) -> bool) -> Vec<Key>;
    /// Removes each of `keys` (a batch: callers keep batches small so that a write lock taken
    /// for one is short), returning how many were stored.
    fn remove_many(&self, keys: &[Key]) -> u64 {
        keys.iter().filter(|k| self.remove(k).is_some()).count() as u64
    }
    /// Applies pending maintenance; used by replays. A backend that defers its bookkeeping
    /// (moka applies inserts and evictions in batches, so an entry it has not yet accounted for
    /// is readable beyond its capacity) settles it here, so that after `settle` what `get` can
    /// return fits the capacity. A no-op for backends that evict inside `insert`. Replays call it
    /// after every insert; the serving path need not.
    fn settle(&self) {}
    /// Bytes held, as counted by [`Entry::charge`].
    fn weighted_size(&self) -> u64;
    /// Number of entries held.
    fn entry_count(&self) -> u64;
    /// Entries evicted for capacity since the store was built (not removals or replacements).
    fn evictions(&self) -> u64;
    /// A short name for reports and metrics.
    fn name(&self) -> &'static str;
}

/// The backends `cachet serve` and `cachet bench` can be started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `std::sync::RwLock<HashMap>` and one eviction policy ([`Eviction`]): the baseline.
    Rwlock,
    /// `dashmap` and one eviction policy behind a mutex.
    Sharded,
    /// `moka::sync::Cache` with a byte weigher.
    Moka,
}

impl Backend {
    /// All backends, in the order reports list them.
    pub const ALL: [Backend; 3] = [Backend::Rwlock, Backend::Sharded, Backend::Moka];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Rwlock => "rwlock",
            Backend::Sharded => "sharded",
            Backend::Moka => "moka",
        }
    }

    /// Builds a store of this kind bounded to `capacity` bytes, for serving: its hashers take
    /// random keys, since the keys it hashes come from clients (HashDoS). `eviction` is the
    /// policy of `rwlock` and `sharded`, `moka_policy` moka's.
    pub fn build(
        self,
        capacity: u64,
        eviction: Eviction,
        moka_policy: MokaPolicy,
    ) -> Arc<dyn Store> {
        match self {
            Backend::Rwlock => Arc::new(RwLockStore::new(capacity, eviction)),
            Backend::Sharded => Arc::new(ShardedStore::new(capacity, eviction)),
            Backend::Moka => Arc::new(MokaStore::new(capacity, moka_policy)),
        }
    }

    /// Builds a store like [`Backend::build`] whose hashers are keyed by `seed`, for replays:
    /// where a key's hash steers eviction (a frequency sketch) the same seed and trace then give
    /// the same hits on every run of the same binary. Not for serving: fixed hash keys let a
    /// client who knows them aim its keys at the sketch counters of popular entries.
    pub fn build_seeded(
        self,
        capacity: u64,
        eviction: Eviction,
        moka_policy: MokaPolicy,
        seed: u64,
    ) -> Arc<dyn Store> {
        match self {
            Backend::Rwlock => Arc::new(RwLockStore::with_seed(capacity, eviction, seed)),
            Backend::Sharded => Arc::new(ShardedStore::with_seed(capacity, eviction, seed)),
            Backend::Moka => Arc::new(MokaStore::with_seed(capacity, moka_policy, seed)),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fixed hash keys derived from `seed` (SplitMix64 steps), for the seeded builds of replays.
pub(crate) fn seeded_hasher(seed: u64) -> ahash::RandomState {
    let mut x = seed;
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    ahash::RandomState::with_seeds(next(), next(), next(), next())
}

/// The error for a backend name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown backend {0:?}: expected rwlock, sharded or moka")]
pub struct UnknownBackend(String);

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rwlock" => Ok(Backend::Rwlock),
            "sharded" | "dashmap" => Ok(Backend::Sharded),
            "moka" => Ok(Backend::Moka),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

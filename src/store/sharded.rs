//! The sharded backend: a `dashmap` for the map, one eviction policy behind a mutex.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use super::evict::{Counters, Eviction, NodeId, Policy, Usage};
use super::{Entry, Key, Store};

/// A `dashmap` store: a lookup read-locks one of many map shards and adds one to the entry's
/// usage counter (an atomic); inserts and removals take the policy's mutex and update the map
/// and the policy together.
///
/// One policy for the whole store, not one per shard: per-shard policies would each see a
/// fraction of the traffic, would split the byte budget (refusing an object larger than a
/// shard's share that the other backends keep), and would make a key's fate depend on which
/// shard its hash picked. Writers are the misses, which wait on the upstream anyway; readers
/// never take the mutex.
///
/// Lock order is always policy, then map shard; a reader holds one map shard only.
#[derive(Debug)]
pub struct ShardedStore {
    map: DashMap<Key, Slot, ahash::RandomState>,
    policy: Mutex<Policy<Key>>,
    /// Hashes keys for the policy's ghost queues.
    hasher: ahash::RandomState,
    /// The policy's byte count, mirrored after every change so that metrics need no lock.
    bytes: AtomicU64,
    capacity: u64,
    evictions: AtomicU64,
}

/// A stored entry, its node in the policy, and its hit counter: in the slot itself, so that a
/// hit writes to the cache line it has just read.
#[derive(Debug)]
struct Slot {
    entry: Arc<Entry>,
    node: NodeId,
    usage: Usage,
}

/// The policy's view of the counters: the map, by key (a map-shard read lock each, taken under
/// the policy's mutex: the lock order).
struct MapCounters<'a>(&'a DashMap<Key, Slot, ahash::RandomState>);

impl Counters<Key> for MapCounters<'_> {
    fn take(&self, key: &Key) -> bool {
        self.0.get(key).is_some_and(|s| s.usage.take())
    }

    fn decrement(&self, key: &Key) -> bool {
        self.0.get(key).is_some_and(|s| s.usage.decrement())
    }
}

impl ShardedStore {
    /// An empty store that holds at most `capacity` bytes and evicts by `eviction`, for
    /// serving. Its hashers take random keys: keys come from clients, and with known hash keys a
    /// client could pile its keys into one map shard (HashDoS).
    pub fn new(capacity: u64, eviction: Eviction) -> Self {
        Self::build(
            capacity,
            eviction,
            ahash::RandomState::new(),
            ahash::RandomState::new(),
        )
    }

    /// An empty store like [`ShardedStore::new`] whose hashers are keyed by `seed`, for
    /// replays: the same seed and trace then give the same hits. Not for serving (see
    /// [`ShardedStore::new`]).
    pub fn with_seed(capacity: u64, eviction: Eviction, seed: u64) -> Self {
        Self::build(
            capacity,
            eviction,
            super::seeded_hasher(!seed),
            super::seeded_hasher(seed),
        )
    }

    fn build(
        capacity: u64,
        eviction: Eviction,
        map_hasher: ahash::RandomState,
        hasher: ahash::RandomState,
    ) -> Self {
        let shards = (std::thread::available_parallelism().map_or(4, |n| n.get()) * 4)
            .next_power_of_two()
            .max(4);
        ShardedStore {
            map: DashMap::with_hasher_and_shard_amount(map_hasher, shards),
            policy: Mutex::new(Policy::new(eviction, capacity)),
            hasher,
            bytes: AtomicU64::new(0),
            capacity,
            evictions: AtomicU64::new(0),
        }
    }

    /// The policy. A std `Mutex`: it is held for map and list updates, never across an
    /// `.await`. A poisoned one is used as is (see `RwLockStore`).
    fn policy(&self) -> MutexGuard<'_, Policy<Key>> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for ShardedStore {
    fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let slot = self.map.get(key)?;
        slot.usage.touch();
        Some(Arc::clone(&slot.entry))
    }

    fn contains(&self, key: &Key) -> bool {
        self.map.contains_key(key)
    }

    fn insert(&self, key: Key, entry: Arc<Entry>) {
        let charge = entry.charge(&key);
        if charge > self.capacity {
            self.remove(&key);
            return;
        }
        let hash = self.hasher.hash_one(&key);
        let mut victims = Vec::new();
        let mut dropped = Vec::new();
        {
            let mut policy = self.policy();
            // Every map change happens under the policy's mutex, so the key cannot appear or
            // leave between this lookup and the insert below. The policy makes room while it
            // can still read every counter; then the map follows.
            let existing = self.map.get(&key).map(|slot| slot.node);
            match existing {
                Some(node) => {
                    policy.update(node, charge, &MapCounters(&self.map), &mut victims);
                    if let Some(mut slot) = self.map.get_mut(&key) {
                        dropped.push(std::mem::replace(&mut slot.entry, entry));
                    }
                }
                None => {
                    let counters = MapCounters(&self.map);
                    let node = policy.insert(key.clone(), hash, charge, &counters, &mut victims);
                    let usage = Usage::default();
                    self.map.insert(key, Slot { entry, node, usage });
                }
            }
            for victim in &victims {
                if let Some((_, slot)) = self.map.remove(victim) {
                    dropped.push(slot.entry);
                }
            }
            self.bytes.store(policy.bytes(), Ordering::Relaxed);
        }
        if !victims.is_empty() {
            self.evictions
                .fetch_add(victims.len() as u64, Ordering::Relaxed);
        }
    }

    fn remove(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut policy = self.policy();
        let (_, slot) = self.map.remove(key)?;
        policy.remove(slot.node);
        self.bytes.store(policy.bytes(), Ordering::Relaxed);
        Some(slot.entry)
    }

    fn keys_where(&self, pick: &dyn Fn(&Key) -> bool) -> Vec<Key> {
        // dashmap's iterator read-locks one shard at a time.
        self.map
            .iter()
            .filter(|e| pick(e.key()))
            .map(|e| e.key().clone())
            .collect()
    }

    fn remove_many(&self, keys: &[Key]) -> u64 {
        let mut dropped = Vec::with_capacity(keys.len());
        {
            let mut policy = self.policy();
            for key in keys {
                if let Some((_, slot)) = self.map.remove(key) {
                    policy.remove(slot.node);
                    dropped.push(slot.entry);
                }
            }
            self.bytes.store(policy.bytes(), Ordering::Relaxed);
        }
        dropped.len() as u64
    }

    fn weighted_size(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn entry_count(&self) -> u64 {
        self.map.len() as u64
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "sharded"
    }
}

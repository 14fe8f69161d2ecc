//! The baseline backend: one `std::sync::RwLock` around a `HashMap` and its eviction policy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::evict::{Counters, Eviction, NodeId, Policy, Usage};
use super::{Entry, Key, Store};

/// A `RwLock<HashMap>` store: a hit takes the read lock and adds one to the entry's usage
/// counter (an atomic); inserts, removals and evictions take the write lock and update the map
/// and the eviction policy together.
///
/// A std lock and not a tokio one: the critical sections are a hash lookup and a pointer copy,
/// never an `.await`, and a std lock is several times cheaper to take.
#[derive(Debug)]
pub struct RwLockStore {
    inner: RwLock<Inner>,
    /// Hashes keys for the policy's ghost queues.
    hasher: ahash::RandomState,
    capacity: u64,
    evictions: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    map: HashMap<Key, Slot, ahash::RandomState>,
    policy: Policy<Key>,
}

/// A stored entry, its node in the policy, and its hit counter: in the slot itself, so that a
/// hit writes to the cache line it has just read.
#[derive(Debug)]
struct Slot {
    entry: Arc<Entry>,
    node: NodeId,
    usage: Usage,
}

/// The policy's view of the counters: the map, by key.
struct MapCounters<'a>(&'a HashMap<Key, Slot, ahash::RandomState>);

impl Counters<Key> for MapCounters<'_> {
    fn take(&self, key: &Key) -> bool {
        self.0.get(key).is_some_and(|s| s.usage.take())
    }

    fn decrement(&self, key: &Key) -> bool {
        self.0.get(key).is_some_and(|s| s.usage.decrement())
    }
}

impl RwLockStore {
    /// An empty store that holds at most `capacity` bytes and evicts by `eviction`, for
    /// serving: its hashers take random keys, since the keys come from clients (HashDoS).
    pub fn new(capacity: u64, eviction: Eviction) -> Self {
        Self::build(capacity, eviction, ahash::RandomState::new())
    }

    /// An empty store like [`RwLockStore::new`] whose hashers are keyed by `seed`, for replays:
    /// the adaptive policy remembers evicted keys by their hash, so fixed hash keys make two
    /// replays of one trace agree hit for hit.
    pub fn with_seed(capacity: u64, eviction: Eviction, seed: u64) -> Self {
        Self::build(capacity, eviction, super::seeded_hasher(seed))
    }

    fn build(capacity: u64, eviction: Eviction, hasher: ahash::RandomState) -> Self {
        RwLockStore {
            inner: RwLock::new(Inner {
                map: HashMap::with_hasher(hasher.clone()),
                policy: Policy::new(eviction, capacity),
            }),
            hasher,
            capacity,
            evictions: AtomicU64::new(0),
        }
    }

    // A panic while the lock was held cannot leave the map and the policy out of step in a way
    // that matters (each update is a map operation and a policy operation on the same key,
    // and neither panics on valid input), so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for RwLockStore {
    fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let inner = self.read();
        let slot = inner.map.get(key)?;
        slot.usage.touch();
        Some(Arc::clone(&slot.entry))
    }

    fn contains(&self, key: &Key) -> bool {
        self.read().map.contains_key(key)
    }

    fn insert(&self, key: Key, entry: Arc<Entry>) {
        let charge = entry.charge(&key);
        if charge > self.capacity {
            // Larger than the whole store: keeping it would evict everything else. Drop any older
            // version so a lookup does not serve it after the origin replaced it.
            self.remove(&key);
            return;
        }
        let hash = self.hasher.hash_one(&key);
        let mut victims = Vec::new();
        // What leaves the map is dropped after the lock is released: freeing a large body is
        // not work the lock needs to cover.
        let mut dropped = Vec::new();
        {
            let mut inner = self.write();
            let Inner { map, policy } = &mut *inner;
            // The policy makes room while it can still read every counter, then the map
            // follows: the victims leave it and the new entry joins it.
            match map.get(&key).map(|slot| slot.node) {
                Some(node) => {
                    policy.update(node, charge, &MapCounters(map), &mut victims);
                    if let Some(slot) = map.get_mut(&key) {
                        dropped.push(std::mem::replace(&mut slot.entry, entry));
                    }
                }
                None => {
                    let node =
                        policy.insert(key.clone(), hash, charge, &MapCounters(map), &mut victims);
                    let usage = Usage::default();
                    map.insert(key, Slot { entry, node, usage });
                }
            }
            for victim in &victims {
                if let Some(slot) = map.remove(victim) {
                    dropped.push(slot.entry);
                }
            }
        }
        if !victims.is_empty() {
            self.evictions
                .fetch_add(victims.len() as u64, Ordering::Relaxed);
        }
    }

    fn remove(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut inner = self.write();
        let slot = inner.map.remove(key)?;
        inner.policy.remove(slot.node);
        Some(slot.entry)
    }

    fn keys_where(&self, pick: &dyn Fn(&Key) -> bool) -> Vec<Key> {
        // A read lock: hits go on while the keys are collected.
        self.read()
            .map
            .keys()
            .filter(|k| pick(k))
            .cloned()
            .collect()
    }

    fn remove_many(&self, keys: &[Key]) -> u64 {
        // One write lock per batch; the caller keeps batches short.
        let mut dropped = Vec::with_capacity(keys.len());
        {
            let mut inner = self.write();
            let Inner { map, policy } = &mut *inner;
            for key in keys {
                if let Some(slot) = map.remove(key) {
                    policy.remove(slot.node);
                    dropped.push(slot.entry);
                }
            }
        }
        dropped.len() as u64
    }

    fn weighted_size(&self) -> u64 {
        self.read().policy.bytes()
    }

    fn entry_count(&self) -> u64 {
        self.read().map.len() as u64
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "rwlock"
    }
}

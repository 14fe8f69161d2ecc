//! The baseline backend: one `std::sync::RwLock` around a `HashMap`, evicting by CLOCK.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::clock::{ClockQueue, Slot, Verdict};
use super::{Entry, Key, Store};

/// A `RwLock<HashMap>` store: hits take the read lock and set a reference bit; inserts and
/// evictions take the write lock.
///
/// A std lock and not a tokio one: the critical sections are a hash lookup and a pointer copy,
/// never an `.await`, and a std lock is several times cheaper to take.
#[derive(Debug)]
pub struct RwLockStore {
    inner: RwLock<Inner>,
    capacity: u64,
    evictions: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Slot, ahash::RandomState>,
    clock: ClockQueue,
    bytes: u64,
    next_generation: u64,
}

impl RwLockStore {
    /// An empty store that holds at most `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        RwLockStore {
            inner: RwLock::new(Inner::default()),
            capacity,
            evictions: AtomicU64::new(0),
        }
    }

    // A panic while the lock was held cannot leave the map half-updated in a way that matters
    // (every update is a single map operation plus counters), so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn evict_one(&mut self) -> bool {
        let Inner {
            map, clock, bytes, ..
        } = self;
        clock.evict_one(|key, generation| match map.get(key) {
            Some(slot) if slot.generation == generation => {
                if slot.take_reference() {
                    Verdict::SecondChance
                } else {
                    let slot = map.remove(key).expect("slot was just found");
                    *bytes -= slot.charge;
                    Verdict::Evicted
                }
            }
            _ => Verdict::Stale,
        })
    }

    fn compact(&mut self) {
        let Inner { map, clock, .. } = self;
        clock.compact_if_needed(map.len(), |k, g| {
            map.get(k).is_some_and(|s| s.generation == g)
        });
    }
}

impl Store for RwLockStore {
    fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let inner = self.read();
        let slot = inner.map.get(key)?;
        slot.touch();
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
        let mut evicted = 0;
        {
            let mut inner = self.write();
            let generation = inner.next_generation;
            inner.next_generation += 1;
            if let Some(old) = inner
                .map
                .insert(key.clone(), Slot::new(entry, charge, generation))
            {
                inner.bytes -= old.charge;
            }
            inner.bytes += charge;
            // Evict before the new entry is queued, so that it cannot be its own victim when
            // every older entry has its reference bit set.
            while inner.bytes > self.capacity && inner.evict_one() {
                evicted += 1;
            }
            inner.clock.push(key, generation);
            inner.compact();
        }
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    fn remove(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut inner = self.write();
        let slot = inner.map.remove(key)?;
        inner.bytes -= slot.charge;
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
        let mut inner = self.write();
        let mut removed = 0;
        for key in keys {
            if let Some(slot) = inner.map.remove(key) {
                inner.bytes -= slot.charge;
                removed += 1;
            }
        }
        inner.compact();
        removed
    }

    fn weighted_size(&self) -> u64 {
        self.read().bytes
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

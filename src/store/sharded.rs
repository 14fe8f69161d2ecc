//! The sharded backend: a `dashmap` for the map, and a CLOCK queue per eviction shard.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use super::clock::{ClockQueue, Slot, Verdict};
use super::{Entry, Key, Store};

/// A `dashmap` store: lookups lock one of many map shards for reading; eviction order is kept per
/// shard so that writers to different shards do not contend on one queue.
///
/// The byte budget is global (one atomic counter), not split per shard: a per-shard budget would
/// refuse an object larger than capacity / shards that the other backends would keep. An insert
/// evicts from its own shard first, and from the next ones only when its own is empty; keys are
/// spread evenly by hash, so the shards stay balanced.
#[derive(Debug)]
pub struct ShardedStore {
    map: DashMap<Key, Slot, ahash::RandomState>,
    queues: Box<[Mutex<ClockQueue>]>,
    hasher: ahash::RandomState,
    /// Signed because a concurrent remove may subtract an entry's charge a moment before its
    /// insert has added it; readers clamp at zero.
    bytes: AtomicI64,
    capacity: u64,
    next_generation: AtomicU64,
    evictions: AtomicU64,
}

impl ShardedStore {
    /// An empty store that holds at most `capacity` bytes, for serving.
    ///
    /// Its hashers take random keys, so the shard a key lands in differs from one store to the
    /// next: keys come from clients, and with known hash keys a client could aim its keys at one
    /// shard, making that shard's CLOCK queue evict the entries of everyone else (HashDoS).
    pub fn new(capacity: u64) -> Self {
        Self::with_hashers(
            capacity,
            ahash::RandomState::new(),
            ahash::RandomState::new(),
        )
    }

    /// An empty store like [`ShardedStore::new`] whose hashers are keyed by `seed`, for
    /// replays: which shard evicts which key depends on the hash, so only fixed keys make two
    /// replays of one trace agree hit for hit. Not for serving (see [`ShardedStore::new`]).
    ///
    /// The shard count still follows the machine's cores, as the serving store's does, so a
    /// replay on a machine with another core count may differ.
    pub fn with_seed(capacity: u64, seed: u64) -> Self {
        Self::with_hashers(
            capacity,
            super::seeded_hasher(seed),
            super::seeded_hasher(!seed),
        )
    }

    fn with_hashers(
        capacity: u64,
        map_hasher: ahash::RandomState,
        shard_hasher: ahash::RandomState,
    ) -> Self {
        let shards = (std::thread::available_parallelism().map_or(4, |n| n.get()) * 4)
            .next_power_of_two()
            .max(4);
        ShardedStore {
            map: DashMap::with_hasher_and_shard_amount(map_hasher, shards),
            queues: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: shard_hasher,
            bytes: AtomicI64::new(0),
            capacity,
            next_generation: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, key: &Key) -> usize {
        (self.hasher.hash_one(key) as usize) & (self.queues.len() - 1)
    }

    // A poisoned queue holds only keys and generations, which stay valid after any panic.
    fn queue(&self, shard: usize) -> MutexGuard<'_, ClockQueue> {
        self.queues[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn over_capacity(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) > self.capacity as i64
    }

    /// Lock order is always queue, then map shard: the insert path releases the map shard before it
    /// takes a queue, so the two can never wait on each other.
    fn judge(&self, key: &Key, generation: u64) -> Verdict {
        let referenced = match self.map.get(key) {
            Some(slot) if slot.generation == generation => slot.take_reference(),
            _ => return Verdict::Stale,
        };
        if referenced {
            return Verdict::SecondChance;
        }
        match self.map.remove_if(key, |_, s| s.generation == generation) {
            Some((_, slot)) => {
                self.bytes.fetch_sub(slot.charge as i64, Ordering::Relaxed);
                Verdict::Evicted
            }
            None => Verdict::Stale,
        }
    }
}

impl Store for ShardedStore {
    fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let slot = self.map.get(key)?;
        slot.touch();
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
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard_of(&key);
        if let Some(old) = self
            .map
            .insert(key.clone(), Slot::new(entry, charge, generation))
        {
            self.bytes.fetch_sub(old.charge as i64, Ordering::Relaxed);
        }
        self.bytes.fetch_add(charge as i64, Ordering::Relaxed);

        // Evict before the new entry is queued, so that it cannot be its own victim when every
        // older entry has its reference bit set: our own shard first, then the others, one lock
        // at a time.
        let mut evicted = 0;
        for i in 0..self.queues.len() {
            if !self.over_capacity() {
                break;
            }
            let mut queue = self.queue((shard + i) % self.queues.len());
            while self.over_capacity() && queue.evict_one(|k, g| self.judge(k, g)) {
                evicted += 1;
            }
        }
        let mut queue = self.queue(shard);
        queue.push(key, generation);
        // Concurrent inserts may have added bytes since the sweep; only then may the new entry go.
        while self.over_capacity() && queue.evict_one(|k, g| self.judge(k, g)) {
            evicted += 1;
        }
        let live = self.map.len() / self.queues.len() + 1;
        queue.compact_if_needed(live, |k, g| {
            self.map.get(k).is_some_and(|s| s.generation == g)
        });
        drop(queue);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    fn remove(&self, key: &Key) -> Option<Arc<Entry>> {
        let (_, slot) = self.map.remove(key)?;
        self.bytes.fetch_sub(slot.charge as i64, Ordering::Relaxed);
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

    fn weighted_size(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
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

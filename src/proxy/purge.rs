//! Invalidation: removing what is stored for a URL, a prefix or everything, and keeping fills
//! already on their way from bringing a purged response back.
//!
//! Every fill registers under its primary key (the URL's key) while it runs. A purge voids the
//! fills of the keys it removes, and only those: an unrelated purge never costs another URL its
//! fill. A fill stores, then checks whether it was voided, and removes what it stored if so. With
//! the purge voiding *before* it removes, one of the two always sees the other: either the
//! purge's removal comes after the insert, or the fill's check comes after the void.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::policy::vary;
use crate::store::{Entry, Key, Store};

/// Keys removed under one write lock (or one pass of removes) in a prefix or full purge: hits
/// wait at most for one batch.
const PURGE_BATCH: usize = 512;

type Fills = HashMap<Key, Vec<(u64, Arc<AtomicBool>)>, ahash::RandomState>;

/// The fills in flight, by primary key.
#[derive(Debug, Default)]
pub(super) struct FillRegistry {
    /// A std `Mutex`: held to register, unregister or void, never across an `.await`. It holds
    /// only fills in flight (bounded by the upstream's concurrency), so a void by predicate is
    /// a short pass.
    fills: Mutex<Fills>,
    next_id: AtomicU64,
}

/// One registered fill; unregisters itself when dropped.
#[derive(Debug)]
pub(super) struct FillTicket<'a> {
    registry: &'a FillRegistry,
    key: Key,
    id: u64,
    voided: Arc<AtomicBool>,
}

impl FillRegistry {
    fn lock(&self) -> MutexGuard<'_, Fills> {
        self.fills.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a fill of `primary` (or of one of its variants).
    pub(super) fn begin(&self, primary: &Key) -> FillTicket<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let voided = Arc::new(AtomicBool::new(false));
        self.lock()
            .entry(primary.clone())
            .or_default()
            .push((id, Arc::clone(&voided)));
        FillTicket {
            registry: self,
            key: primary.clone(),
            id,
            voided,
        }
    }

    /// Voids every fill whose primary key `doomed` picks.
    fn void_where(&self, doomed: &dyn Fn(&Key) -> bool) {
        for (key, fills) in self.lock().iter() {
            if doomed(key) {
                for (_, voided) in fills {
                    voided.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Voids the fills of one primary key.
    fn void(&self, primary: &Key) {
        if let Some(fills) = self.lock().get(primary) {
            for (_, voided) in fills {
                voided.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Fills in flight now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

impl FillTicket<'_> {
    /// True once a purge removed this fill's URL.
    pub(super) fn voided(&self) -> bool {
        self.voided.load(Ordering::SeqCst)
    }
}

impl Drop for FillTicket<'_> {
    fn drop(&mut self) {
        let mut fills = self.registry.lock();
        if let Some(list) = fills.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                fills.remove(&self.key);
            }
        }
    }
}

/// Removes one URL's entries: its response, or its variant index and the variants it recorded.
/// Costs O(its variants); only a URL with more variants than an index records is scanned for.
/// Returns the number of entries removed.
pub(super) fn remove_url(store: &dyn Store, primary: &Key) -> u64 {
    let Some(entry) = store.remove(primary) else {
        return 0;
    };
    let mut removed = 1;
    if let Entry::Variants { members, .. } = &*entry {
        let (keys, overflowed) = members.take();
        for batch in keys.chunks(PURGE_BATCH) {
            removed += store.remove_many(batch);
        }
        if overflowed {
            removed += remove_where(store, &|k: &Key| {
                vary::is_key_or_variant(k.as_str(), primary.as_str())
            });
        }
    }
    removed
}

/// Removes every entry whose key `doomed` picks: the keys are collected in one pass, then
/// removed a batch at a time, so that no lock a hit needs is held for the whole store.
pub(super) fn remove_where(store: &dyn Store, doomed: &dyn Fn(&Key) -> bool) -> u64 {
    let keys = store.keys_where(doomed);
    let mut removed = 0;
    for batch in keys.chunks(PURGE_BATCH) {
        removed += store.remove_many(batch);
        // std's RwLock does not queue fairly: a writer that re-locks at once can keep readers
        // (hits) waiting for the whole purge. Yielding between batches lets them in.
        std::thread::yield_now();
    }
    removed
}

/// Purges one URL: voids its fills, then removes its entries.
pub(super) fn purge_url(store: &dyn Store, fills: &FillRegistry, primary: &Key) -> u64 {
    fills.void(primary);
    remove_url(store, primary)
}

/// Purges every URL `doomed` picks (by primary key; a variant key starts with its URL's key, so
/// a prefix picks both): voids their fills, then removes their entries.
pub(super) fn purge_where(
    store: &dyn Store,
    fills: &FillRegistry,
    doomed: &dyn Fn(&Key) -> bool,
) -> u64 {
    fills.void_where(doomed);
    remove_where(store, doomed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Backend, Eviction, MokaPolicy, VariantMembers};

    #[test]
    fn a_purge_voids_only_the_fills_of_its_url() {
        let registry = FillRegistry::default();
        let a = registry.begin(&Key::from("http://h/a"));
        let b = registry.begin(&Key::from("http://h/b"));
        let store = Backend::Rwlock.build(1 << 20, Eviction::Adaptive, MokaPolicy::Tinylfu);
        purge_url(&*store, &registry, &Key::from("http://h/a"));
        assert!(a.voided());
        assert!(!b.voided(), "an unrelated purge must not void b's fill");
        purge_where(&*store, &registry, &|k| k.as_str().starts_with("http://h/"));
        assert!(b.voided());
        drop((a, b));
        assert_eq!(registry.len(), 0, "tickets unregister when dropped");
    }

    #[test]
    fn a_fill_begun_after_a_purge_is_not_voided_by_it() {
        let registry = FillRegistry::default();
        let store = Backend::Rwlock.build(1 << 20, Eviction::Adaptive, MokaPolicy::Tinylfu);
        purge_url(&*store, &registry, &Key::from("http://h/a"));
        let a = registry.begin(&Key::from("http://h/a"));
        assert!(!a.voided());
    }

    #[test]
    fn removing_a_url_removes_its_recorded_variants_and_nothing_else() {
        for backend in Backend::ALL {
            let store = backend.build(1 << 20, Eviction::Adaptive, MokaPolicy::Tinylfu);
            let members = VariantMembers::default();
            let primary = Key::from("http://h/a");
            for v in ["x", "y"] {
                let key = Key::new(format!("http://h/a\0{v}"));
                members.add(&key);
                store.insert(key, Arc::new(Entry::synthetic(8)));
            }
            store.insert(Key::from("http://h/ab"), Arc::new(Entry::synthetic(8)));
            store.insert(
                primary.clone(),
                Arc::new(Entry::Variants {
                    names: vec![http::header::ACCEPT],
                    id: 1,
                    members,
                }),
            );
            assert_eq!(remove_url(&*store, &primary), 3, "{backend}");
            assert!(store.get(&Key::from("http://h/a\0x")).is_none());
            assert!(store.get(&Key::from("http://h/ab")).is_some(), "{backend}");
            assert_eq!(remove_url(&*store, &primary), 0, "already gone");
        }
    }

    #[test]
    fn an_overflowed_index_is_purged_by_a_scan() {
        let store = Backend::Sharded.build(16 << 20, Eviction::Adaptive, MokaPolicy::Tinylfu);
        let members = VariantMembers::default();
        let n = VariantMembers::CAP + 10;
        for i in 0..n {
            let key = Key::new(format!("http://h/a\0{i}"));
            members.add(&key);
            store.insert(key, Arc::new(Entry::synthetic(8)));
        }
        let primary = Key::from("http://h/a");
        store.insert(
            primary.clone(),
            Arc::new(Entry::Variants {
                names: vec![http::header::ACCEPT],
                id: 1,
                members,
            }),
        );
        assert_eq!(remove_url(&*store, &primary), n as u64 + 1);
        assert_eq!(store.entry_count(), 0);
    }

    #[test]
    fn remove_where_removes_in_batches_what_it_picks() {
        for backend in Backend::ALL {
            let store = backend.build(64 << 20, Eviction::Adaptive, MokaPolicy::Tinylfu);
            for i in 0..(PURGE_BATCH * 3 + 7) {
                store.insert(
                    Key::new(format!("http://h/p/{i}")),
                    Arc::new(Entry::synthetic(8)),
                );
                store.insert(
                    Key::new(format!("http://h/q/{i}")),
                    Arc::new(Entry::synthetic(8)),
                );
            }
            let removed = remove_where(&*store, &|k| k.as_str().starts_with("http://h/p/"));
            assert_eq!(removed, (PURGE_BATCH * 3 + 7) as u64, "{backend}");
            assert_eq!(
                store.entry_count(),
                (PURGE_BATCH * 3 + 7) as u64,
                "{backend}"
            );
        }
    }
}

//! Eviction for the `rwlock` and `sharded` backends: which entry goes when the store is full.
//!
//! Both backends keep their map and one [`Policy`] side by side, updated together under the
//! store's write lock (rwlock) or the policy's mutex (sharded). A hit must not take that lock:
//! each map slot holds its entry's [`Usage`], a one-byte atomic counter beside the entry pointer,
//! and a hit only adds one to it under the map's read lock (no second allocation to reach, so no
//! second cache line). The policy reads and lowers the counters, through [`Counters`], when it
//! looks for a victim.
//!
//! Two policies ([`Eviction`]): S3-FIFO with an adaptive small queue (the default;
//! [`adaptive`]) and CLOCK ([`clock`]), kept for comparison.

mod adaptive;
mod arena;
mod clock;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use self::adaptive::Adaptive;
pub(crate) use self::arena::NodeId;
use self::clock::Clock;

/// How often an entry was hit since its policy last looked: 0 to [`Usage::MAX`].
#[derive(Debug, Default)]
pub(crate) struct Usage(AtomicU8);

impl Usage {
    /// Counts saturate here: two bits, as S3-FIFO uses.
    pub(crate) const MAX: u8 = 3;

    /// Records a hit. A relaxed load and, until the count saturates, a relaxed store: two
    /// threads hitting at once may count one hit, which only blurs a hint. Skipping the store
    /// once saturated keeps a hot entry's cache line shared between cores.
    pub(crate) fn touch(&self) {
        let n = self.0.load(Ordering::Relaxed);
        if n < Self::MAX {
            self.0.store(n + 1, Ordering::Relaxed);
        }
    }

    /// Clears the count, returning whether it was nonzero: CLOCK's second chance.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(0, Ordering::Relaxed) > 0
    }

    /// Lowers a nonzero count by one, returning whether it was nonzero: S3-FIFO's reinsertion.
    pub(crate) fn decrement(&self) -> bool {
        let n = self.0.load(Ordering::Relaxed);
        if n == 0 {
            return false;
        }
        self.0.store(n - 1, Ordering::Relaxed);
        true
    }
}

/// Where a policy finds the usage counters of its entries: the store's map, by key. The
/// policy calls it only under the store's lock, for entries it holds (all of which are in the
/// map); a key that is not there counts as unused.
pub(crate) trait Counters<T> {
    /// Clears the key's counter, returning whether it was nonzero.
    fn take(&self, key: &T) -> bool;
    /// Lowers a nonzero counter by one, returning whether it was nonzero.
    fn decrement(&self, key: &T) -> bool;
}

#[cfg(test)]
impl<T: std::hash::Hash + Eq> Counters<T> for std::collections::HashMap<T, Usage> {
    fn take(&self, key: &T) -> bool {
        self.get(key).is_some_and(Usage::take)
    }

    fn decrement(&self, key: &T) -> bool {
        self.get(key).is_some_and(Usage::decrement)
    }
}

/// The eviction policy of the `rwlock` and `sharded` backends (`--eviction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Eviction {
    /// S3-FIFO whose small queue grows and shrinks with the workload, as ARC balances its lists:
    /// scan- and one-hit-wonder-resistant like S3-FIFO, and as good as LRU where entries are
    /// re-read a while after their first use.
    #[default]
    Adaptive,
    /// CLOCK (second chance), an approximation of LRU with no admission filter.
    Clock,
}

impl Eviction {
    /// Both policies, in the order reports list them.
    pub const ALL: [Eviction; 2] = [Eviction::Adaptive, Eviction::Clock];
}

impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Eviction::Adaptive => "adaptive",
            Eviction::Clock => "clock",
        })
    }
}

/// The error for an eviction policy name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown eviction policy {0:?}: expected adaptive or clock")]
pub struct UnknownEviction(String);

impl FromStr for Eviction {
    type Err = UnknownEviction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "adaptive" => Ok(Eviction::Adaptive),
            "clock" => Ok(Eviction::Clock),
            _ => Err(UnknownEviction(s.to_string())),
        }
    }
}

/// One of the policies, behind one set of methods. Values (`T`, the stores' keys) come back out
/// of the methods that evict, so that the store can remove the victims from its map.
// One per store, behind its lock: the size of the smaller variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Policy<T> {
    Adaptive(Adaptive<T>),
    Clock(Clock<T>),
}

impl<T> Policy<T> {
    /// An empty policy of kind `eviction` for `capacity` bytes.
    pub(crate) fn new(eviction: Eviction, capacity: u64) -> Self {
        match eviction {
            Eviction::Adaptive => Policy::Adaptive(Adaptive::new(capacity)),
            Eviction::Clock => Policy::Clock(Clock::new(capacity)),
        }
    }

    /// Bytes held, as charged.
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Policy::Adaptive(p) => p.bytes(),
            Policy::Clock(p) => p.bytes(),
        }
    }

    /// Makes room for `charge` bytes (appending the victims' values to `out`; the caller removes
    /// them from its map), then adds a new entry, whose counter in `counters` must start at
    /// zero. `hash` is its key's hash (the adaptive policy's ghosts remember keys by it).
    pub(crate) fn insert(
        &mut self,
        value: T,
        hash: u64,
        charge: u64,
        counters: &impl Counters<T>,
        out: &mut Vec<T>,
    ) -> NodeId {
        match self {
            Policy::Adaptive(p) => p.insert(value, hash, charge, counters, out),
            Policy::Clock(p) => p.insert(value, hash, charge, counters, out),
        }
    }

    /// The entry at `id` was replaced by one charged `charge`; makes room for the difference.
    /// It keeps its place and its counter: a key whose response was replaced is as popular as
    /// it was.
    pub(crate) fn update(
        &mut self,
        id: NodeId,
        charge: u64,
        counters: &impl Counters<T>,
        out: &mut Vec<T>,
    ) {
        match self {
            Policy::Adaptive(p) => p.update(id, charge, counters, out),
            Policy::Clock(p) => p.update(id, charge, counters, out),
        }
    }

    /// Forgets `id` (a removal or a purge), returning its value.
    pub(crate) fn remove(&mut self, id: NodeId) -> Option<T> {
        match self {
            Policy::Adaptive(p) => p.remove(id),
            Policy::Clock(p) => p.remove(id),
        }
    }
}

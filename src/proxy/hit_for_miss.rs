//! Hit-for-miss: URLs whose last response could not be stored, remembered for a while so that
//! their requests are not coalesced.
//!
//! Coalescing makes the second request for a key wait for the first one's response. When that
//! response turns out not to be shareable (`no-store`, `private`, too large...), the wait was
//! for nothing and the waiters then go upstream one after the other. Followers are released as
//! soon as the leader's response head shows it, and the key is remembered here so that later
//! requests go upstream at once, in parallel, as Varnish's hit-for-miss objects do. A response
//! that is stored again clears the mark.

use std::time::Duration;

use crate::store::Key;

/// How long a URL is remembered as not storable: Varnish's default hit-for-miss lifetime.
pub(super) const REMEMBER_FOR: Duration = Duration::from_secs(120);

/// Keys remembered at most (moka bounds it, by its own eviction policy; a key forgotten early
/// only means its next requests are coalesced again).
const CAPACITY: u64 = 65_536;

/// The remembered keys. moka, not a map behind a lock: it is read on every miss and expires
/// entries by itself.
pub(super) struct HitForMiss {
    keys: moka::sync::Cache<Key, (), ahash::RandomState>,
}

impl HitForMiss {
    pub(super) fn new(remember_for: Duration) -> Self {
        HitForMiss {
            keys: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(remember_for)
                .build_with_hasher(ahash::RandomState::new()),
        }
    }

    /// True when the last response for `key` was not storable, within the memory's lifetime.
    pub(super) fn contains(&self, key: &Key) -> bool {
        self.keys.contains_key(key)
    }

    /// Remembers that `key`'s response could not be stored.
    pub(super) fn remember(&self, key: &Key) {
        self.keys.insert(key.clone(), ());
    }

    /// Forgets `key`: its response was stored.
    pub(super) fn forget(&self, key: &Key) {
        self.keys.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_expires() {
        let hfm = HitForMiss::new(Duration::from_millis(50));
        let key = Key::from("http://h/a");
        assert!(!hfm.contains(&key));
        hfm.remember(&key);
        assert!(hfm.contains(&key));
        hfm.forget(&key);
        assert!(!hfm.contains(&key));
        hfm.remember(&key);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!hfm.contains(&key), "expired after its lifetime");
    }
}

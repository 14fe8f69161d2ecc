//! Single-flight: concurrent misses for one key make one upstream request.
//!
//! The first caller for a key becomes the leader and gets a [`Leader`] guard; later callers get a
//! [`Follower`] that waits for the leader's outcome. The map of in-flight keys is locked only to
//! insert or remove an entry, never while anyone waits: followers wait on a `watch` channel they
//! cloned out of the map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Entry, Key};

/// What a leader hands its followers.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The response was stored; followers may serve it.
    Shared(Arc<Entry>),
    /// The response could not be shared (not storable, too large, failed): followers fetch for
    /// themselves.
    NotShared,
}

type Waiters = HashMap<Key, watch::Receiver<Option<Outcome>>, ahash::RandomState>;

/// The table of in-flight fetches.
#[derive(Debug, Clone, Default)]
pub struct Coalescer {
    inflight: Arc<Mutex<Waiters>>,
}

/// A caller's role for one key.
#[derive(Debug)]
pub enum Flight {
    /// Fetch, then call [`Leader::finish`].
    Leader(Leader),
    /// Wait with [`Follower::wait`].
    Follower(Follower),
}

impl Coalescer {
    /// A std `Mutex`, not a tokio one: it is held for one map operation and never across an
    /// `.await`, and a poisoned map (a panic mid-insert) still holds valid channels.
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight for `key`, as its leader if none is in the air.
    pub fn join(&self, key: &Key) -> Flight {
        let mut inflight = self.lock();
        if let Some(rx) = inflight.get(key) {
            return Flight::Follower(Follower { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.clone(), rx);
        Flight::Leader(Leader {
            coalescer: self.clone(),
            key: key.clone(),
            tx: Some(tx),
        })
    }

    /// Number of keys being fetched now.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

/// The right and duty to fetch a key. Dropping it without [`finish`](Leader::finish) (an error,
/// a panic) tells the followers to fetch for themselves, so none waits for nothing.
#[derive(Debug)]
pub struct Leader {
    coalescer: Coalescer,
    key: Key,
    tx: Option<watch::Sender<Option<Outcome>>>,
}

impl Leader {
    /// Publishes the outcome and leaves the table. Callers store a shareable entry *before* this,
    /// so a request arriving after the key leaves the table finds it in the store.
    pub fn finish(mut self, outcome: Outcome) {
        self.complete(outcome);
    }

    fn complete(&mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            self.coalescer.lock().remove(&self.key);
            // No receiver left is fine: nobody was waiting.
            let _ = tx.send(Some(outcome));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.complete(Outcome::NotShared);
    }
}

/// A caller waiting on another's fetch.
#[derive(Debug)]
pub struct Follower {
    rx: watch::Receiver<Option<Outcome>>,
}

impl Follower {
    /// Waits up to `timeout` for the leader. `None` when the leader could not share its response
    /// or took too long: the caller then goes upstream itself.
    pub async fn wait(mut self, timeout: Duration) -> Option<Arc<Entry>> {
        let waited = tokio::time::timeout(timeout, self.rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(outcome)) => match outcome.as_ref() {
                Some(Outcome::Shared(entry)) => Some(Arc::clone(entry)),
                _ => None,
            },
            // Timed out, or the leader vanished without a word.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_followers() {
        let c = Coalescer::default();
        let key = Key::from("k");
        let Flight::Leader(leader) = c.join(&key) else {
            panic!("first caller must lead")
        };
        let followers: Vec<_> = (0..10)
            .map(|_| match c.join(&key) {
                Flight::Follower(f) => tokio::spawn(f.wait(Duration::from_secs(5))),
                Flight::Leader(_) => panic!("second caller must follow"),
            })
            .collect();
        leader.finish(Outcome::Shared(Arc::new(Entry::synthetic(3))));
        for f in followers {
            assert!(f.await.unwrap().is_some());
        }
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn dropped_leader_releases_followers() {
        let c = Coalescer::default();
        let key = Key::from("k");
        let leader = c.join(&key);
        let Flight::Follower(f) = c.join(&key) else {
            panic!("second caller must follow")
        };
        drop(leader);
        assert!(f.wait(Duration::from_secs(5)).await.is_none());
        assert!(matches!(c.join(&key), Flight::Leader(_)));
    }

    #[tokio::test]
    async fn follower_times_out() {
        let c = Coalescer::default();
        let key = Key::from("k");
        let _leader = c.join(&key);
        let Flight::Follower(f) = c.join(&key) else {
            panic!("second caller must follow")
        };
        assert!(f.wait(Duration::from_millis(20)).await.is_none());
    }
}

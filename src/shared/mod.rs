//! The shared tier: a cache several instances share (Redis, Valkey or a Redis Cluster), behind
//! the local store.
//!
//! Lookup order is local store, then the shared tier, then the upstream. A shared hit is served
//! at once and promoted into the local store; a response fetched from the upstream is written to
//! the tier in the background, by one writer task fed through a bounded channel, never on a
//! client's path. Concurrent misses on several instances make one upstream request: the first
//! takes the URL's fill lock in the tier (`SET NX PX`), the others wait for its `filled` event
//! and read the entry from the tier. A purge removes the URL from the tier and is announced to
//! every instance, which removes it from its local store.
//!
//! The tier is never a single point of failure. Every call has a timeout (`--shared-timeout`);
//! failures in a row open a circuit breaker, after which no call is made (requests go on at
//! local speed) until a background probe finds the tier answering; faults are logged at most
//! once per probe interval and counted in `cachet_shared_*` metrics.

pub mod breaker;
pub mod codec;
pub mod redis;
pub mod tier;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use self::breaker::{Breaker, LogLimiter};
use self::tier::{Put, SharedTier, TierError, UrlRecord};
use crate::metrics;
use crate::policy::purge::PurgeTarget;
use crate::store::{CachedResponse, Entry, Key};

pub use self::redis::{RedisTarget, RedisTier};

/// How an instance uses the shared tier.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// Where the tier is.
    pub target: RedisTarget,
    /// Prepended to every key and to the event channel, so several fleets can share a Redis.
    pub prefix: String,
    /// The longest a lookup may take; past it the request goes on without the tier. Writes,
    /// purges and locks get [`SharedConfig::write_timeout`].
    pub timeout: Duration,
    /// Responses with larger bodies are not written to the tier.
    pub max_object_size: u64,
    /// How long an instance holds a URL's fill lock at most (its upstream fetch), and so how
    /// long other instances wait for its fill before fetching for themselves.
    pub lock_ttl: Duration,
    /// How often an open circuit breaker probes the tier, and how often a fault is logged.
    pub probe_interval: Duration,
    /// Failures in a row that open the circuit breaker.
    pub failures_to_open: u32,
}

impl SharedConfig {
    /// Defaults for the tier at `target`.
    pub fn new(target: RedisTarget) -> Self {
        SharedConfig {
            target,
            prefix: "cachet:".into(),
            timeout: Duration::from_millis(5),
            max_object_size: 1 << 20,
            lock_ttl: Duration::from_secs(10),
            probe_interval: Duration::from_secs(1),
            failures_to_open: 3,
        }
    }

    /// The timeout of calls off the client's path (writes, locks, purges, subscribing): they
    /// carry bodies or wait on a scan, and a client is not waiting on them, so they get more.
    pub fn write_timeout(&self) -> Duration {
        (self.timeout * 20).max(Duration::from_millis(100))
    }
}

/// Writes queued for the writer task at most; past it a write is dropped (and counted): the
/// tier is slower than the fills, and the local store has the entry anyway.
const WRITE_QUEUE: usize = 1024;
/// Purge events from other instances queued for the local store at most.
const EVENT_QUEUE: usize = 1024;
/// How often a request waiting on another instance's fill looks at the tier even without an
/// event (one may be lost while the subscription reconnects).
const FILL_POLL: Duration = Duration::from_millis(100);

/// An event every instance receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    /// The instance that published it (its own events are ignored).
    from: String,
    what: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum EventKind {
    /// Remove what the target picks from the local store.
    Purge(PurgeTarget),
    /// The fill of a URL ended: with its response in the tier (waiters read it there) or not
    /// (waiters fetch for themselves).
    Filled {
        /// The URL's key.
        url: String,
        /// Whether the fill was stored (and so written to the tier).
        stored: bool,
    },
}

/// A write for the writer task.
enum Write {
    Put {
        url: Key,
        entry: Arc<Entry>,
        /// The purge sequence when it was queued.
        seq: u64,
    },
    Forget {
        url: Key,
        field: Option<String>,
    },
    /// Releases a fill lock, then tells the waiters the fill is over.
    Unlock {
        url: Key,
        stored: bool,
    },
}

/// What a lookup found in the tier.
pub enum Found {
    /// A response record to decode.
    Response(Bytes),
    /// The URL varies on these (encoded) names; read the variant next.
    Names(Bytes),
    /// Nothing usable.
    Nothing,
}

/// What ended a wait for another instance's fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The fill stored its response: it is in the tier.
    Stored,
    /// The fill ended without a response to share: fetch for yourself.
    NotStored,
    /// No event within the poll interval: look at the tier (and the lock) again.
    Poll,
}

/// Requests of one instance waiting on one URL's fill elsewhere.
#[derive(Debug, Default)]
struct Waiters {
    notify: Notify,
    /// 0 until the fill's event: 1 stored, 2 not stored.
    ended: std::sync::atomic::AtomicU8,
    /// Requests waiting; changed under the map's lock only, so the last one out (and only it)
    /// removes the entry.
    waiting: std::sync::atomic::AtomicUsize,
}

/// One request's place among the waiters of a URL. Leaving is in `Drop`, so a request dropped
/// while it waits (its client left) still leaves, and the last one out removes the entry (if a
/// fill's event has not already taken it).
struct Waiting<'a> {
    shared: &'a Shared,
    url: &'a Key,
    waiters: Arc<Waiters>,
}

impl<'a> Waiting<'a> {
    fn enter(shared: &'a Shared, url: &'a Key) -> Self {
        let mut map = shared.waiters();
        let waiters = Arc::clone(map.entry(url.as_str().to_string()).or_default());
        waiters.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            shared,
            url,
            waiters,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut map = self.shared.waiters();
        if self.waiters.waiting.fetch_sub(1, Ordering::Relaxed) == 1
            && map
                .get(self.url.as_str())
                .is_some_and(|w| Arc::ptr_eq(w, &self.waiters))
        {
            map.remove(self.url.as_str());
        }
    }
}

/// Whether a call is on a client's path (its failures open the breaker) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Client,
    Background,
}

/// How long subscribing to the events may take, over every seed node of a cluster.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a purge's removal from the tier may take: a prefix purge scans, and an operator
/// (not a client request) waits on it.
const PURGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Purges remembered for dropping queued writes.
const RECENT_PURGES: usize = 256;
/// Write-queue slots kept for lock releases: a queue filled by writes must not delay the
/// release other instances wait on.
const UNLOCK_RESERVE: usize = 256;

impl Wake {
    fn from_state(state: u8) -> Wake {
        match state {
            1 => Wake::Stored,
            2 => Wake::NotStored,
            _ => Wake::Poll,
        }
    }
}

/// The result of asking for a URL's fill lock.
pub enum Lock {
    /// This instance fills the URL; dropping the lock releases it and wakes the waiters.
    Acquired(FillLock),
    /// Another instance is filling it.
    Busy,
    /// The tier did not answer: fetch without it.
    Unavailable,
}

/// The handle to the shared tier the proxy holds.
pub struct Shared {
    tier: Arc<dyn SharedTier>,
    config: SharedConfig,
    breaker: Breaker,
    log: LogLimiter,
    started: Instant,
    /// This instance's id: the value of the locks it takes and the sender of its events.
    id: String,
    writes: mpsc::Sender<Write>,
    /// Purges noted (a sequence number and the target), newest last: writes queued before one
    /// of them for a URL it picks are dropped. A std `Mutex`, held for a push or a scan of at
    /// most [`RECENT_PURGES`] entries, never across an `.await`.
    purges: Mutex<std::collections::VecDeque<(u64, PurgeTarget)>>,
    purge_seq: std::sync::atomic::AtomicU64,
    /// Requests waiting on another instance's fill, by URL. A std `Mutex`: held to add, take or
    /// look up one entry, never across an `.await`.
    waiters: Mutex<HashMap<String, Arc<Waiters>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("target", &self.config.target)
            .field("open", &self.breaker.is_open())
            .finish()
    }
}

impl Shared {
    /// Starts using `tier`: spawns the writer, the breaker's probe and the event subscriber,
    /// which end when `shutdown` is cancelled. Returns the handle and the purges other
    /// instances announce, for the proxy to apply to its local store.
    pub fn start(
        tier: Arc<dyn SharedTier>,
        config: SharedConfig,
        shutdown: CancellationToken,
    ) -> (Arc<Shared>, mpsc::Receiver<PurgeTarget>) {
        let (writes, write_rx) = mpsc::channel(WRITE_QUEUE);
        let (purges, purge_rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            tier,
            breaker: Breaker::new(config.failures_to_open),
            config,
            log: LogLimiter::default(),
            started: Instant::now(),
            id: format!("{:016x}", rand::random::<u64>()),
            writes,
            purges: Mutex::new(std::collections::VecDeque::new()),
            purge_seq: std::sync::atomic::AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
        });
        metrics::record_shared_up(true);
        tokio::spawn(writer(Arc::clone(&shared), write_rx, shutdown.clone()));
        tokio::spawn(probe(Arc::clone(&shared), shutdown.clone()));
        tokio::spawn(subscriber(Arc::clone(&shared), purges, shutdown));
        (shared, purge_rx)
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &SharedConfig {
        &self.config
    }

    /// True while the circuit breaker is open (the tier is skipped).
    pub fn is_open(&self) -> bool {
        self.breaker.is_open()
    }

    fn waiters(&self) -> MutexGuard<'_, HashMap<String, Arc<Waiters>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one call under the breaker and `timeout`; a failure is counted, logged (at most once
    /// per probe interval) and returned. Only calls on a client's path (`Path::Client`: lookups
    /// and locks) move the breaker: a Redis too slow for lookups must open it even while its
    /// slower writes succeed.
    async fn call<T>(
        &self,
        what: &'static str,
        path: Path,
        timeout: Duration,
        call: impl Future<Output = Result<T, TierError>>,
    ) -> Result<T, TierError> {
        if !self.breaker.allows() {
            return Err(TierError::Open);
        }
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(TierError::Timeout),
        };
        if matches!(
            (&result, path),
            (Ok(_) | Err(TierError::Refused(_)), Path::Client)
        ) {
            self.breaker.success();
        }
        match &result {
            Ok(_) => {}
            // An error reply (a full Redis refusing a write, say) comes from a tier that answers:
            // counted and logged, but it does not open the breaker, which is for a tier that
            // does not answer (lookups would still hit).
            Err(e @ TierError::Refused(_)) => {
                metrics::record_shared_error(e.kind());
                if self.log_allowed() {
                    tracing::warn!(error = %e, call = what, "shared tier refused a call");
                }
            }
            Err(e) => {
                metrics::record_shared_error(e.kind());
                let opened = path == Path::Client && self.breaker.failure();
                if opened {
                    metrics::record_shared_up(false);
                    tracing::warn!(error = %e, "shared tier failing: skipped until it answers again");
                } else if self.log_allowed() {
                    tracing::warn!(error = %e, call = what, "shared tier call failed");
                }
            }
        }
        result
    }

    fn log_allowed(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        self.log
            .allow(now, self.config.probe_interval.as_millis() as u64)
    }

    /// The URL's response or Vary names, if the tier answers in time.
    pub async fn lookup(&self, url: &Key) -> Found {
        let found = self
            .call(
                "lookup",
                Path::Client,
                self.config.timeout,
                self.tier.lookup(url.as_str()),
            )
            .await;
        match found {
            Ok(UrlRecord {
                response: Some(r), ..
            }) => Found::Response(r),
            Ok(UrlRecord { names: Some(n), .. }) => Found::Names(n),
            _ => Found::Nothing,
        }
    }

    /// One variant of the URL.
    pub async fn lookup_variant(&self, url: &Key, field: &str) -> Option<Bytes> {
        self.call(
            "lookup",
            Path::Client,
            self.config.timeout,
            self.tier.lookup_variant(url.as_str(), field),
        )
        .await
        .ok()
        .flatten()
    }

    /// Queues the write of a stored response (fetched from the upstream or refreshed by a 304)
    /// under its URL. Never waits: with the queue full the write is dropped.
    pub fn store(&self, url: &Key, entry: &Arc<Entry>) {
        let Some(response) = entry.response() else {
            return;
        };
        if response.body.len() as u64 > self.config.max_object_size {
            metrics::record_shared_write("too_large");
            return;
        }
        if ttl_of(response, SystemTime::now()).is_none() {
            metrics::record_shared_write("no_lifetime");
            return;
        }
        self.enqueue(Write::Put {
            url: url.clone(),
            entry: Arc::clone(entry),
            seq: self.purge_seq.load(Ordering::Acquire),
        });
    }

    /// Queues the removal of a record that could not be used (undecodable, another version,
    /// written for another key): it would only be read and refused again.
    pub fn forget(&self, url: &Key, field: Option<String>) {
        self.enqueue(Write::Forget {
            url: url.clone(),
            field,
        });
    }

    fn enqueue(&self, write: Write) {
        if self.breaker.is_open() {
            metrics::record_shared_write("skipped");
            return;
        }
        if self.writes.capacity() <= UNLOCK_RESERVE || self.writes.try_send(write).is_err() {
            metrics::record_shared_write("dropped");
        }
    }

    /// Asks for the URL's fill lock.
    pub async fn lock(self: &Arc<Self>, url: &Key) -> Lock {
        let taken = self
            .call(
                "lock",
                Path::Client,
                // A client waits on it, as on a lookup; twice the lookup's time, since a lock
                // that times out costs an extra upstream fetch rather than a miss.
                self.config.timeout * 2,
                self.tier
                    .try_lock(url.as_str(), &self.id, self.config.lock_ttl),
            )
            .await;
        match taken {
            Ok(true) => {
                metrics::record_shared_lock("acquired");
                Lock::Acquired(FillLock {
                    shared: Arc::clone(self),
                    url: url.clone(),
                    stored: AtomicBool::new(false),
                })
            }
            Ok(false) => {
                metrics::record_shared_lock("busy");
                Lock::Busy
            }
            Err(_) => Lock::Unavailable,
        }
    }

    /// Waits until another instance's fill of `url` ends, for at most `wait` and the poll
    /// interval, and says what ended the wait.
    pub async fn wait_for_fill(&self, url: &Key, wait: Duration) -> Wake {
        let waiting = Waiting::enter(self, url);
        let waiters = &waiting.waiters;
        let notified = waiters.notify.notified();
        tokio::pin!(notified);
        // Registered before the state is read, so an event between the two is not missed.
        notified.as_mut().enable();
        match waiters.ended.load(Ordering::Acquire) {
            0 => match tokio::time::timeout(wait.min(FILL_POLL), notified).await {
                Ok(()) => Wake::from_state(waiters.ended.load(Ordering::Acquire)),
                Err(_) => Wake::Poll,
            },
            state => Wake::from_state(state),
        }
    }

    /// Removes what `target` picks from the tier. Queued writes of URLs it picks are dropped
    /// (they were fetched before the purge); a one-URL purge leaves a tombstone in Redis that
    /// refuses writes of fills sent before it; a prefix or full purge is run a second time once
    /// writes already in flight have landed. Returns the URLs removed. [`Shared::announce`] then
    /// tells the other instances.
    pub async fn remove(self: &Arc<Self>, target: &PurgeTarget) -> Result<u64, TierError> {
        self.note_purge(target);
        let removed = self
            .call(
                "purge",
                Path::Background,
                PURGE_TIMEOUT,
                self.tier.remove(target),
            )
            .await;
        if target.single_key().is_none() {
            let shared = Arc::clone(self);
            let target = target.clone();
            let settle = self.config.write_timeout() + Duration::from_millis(100);
            tokio::spawn(async move {
                tokio::time::sleep(settle).await;
                let _ = shared
                    .call(
                        "purge",
                        Path::Background,
                        PURGE_TIMEOUT,
                        shared.tier.remove(&target),
                    )
                    .await;
            });
        }
        removed
    }

    /// Publishes `target` to the other instances, whatever became of the tier's part: their
    /// local stores do not depend on it.
    pub async fn announce(&self, target: &PurgeTarget) -> Result<(), TierError> {
        let event = self.event(EventKind::Purge(target.clone()));
        self.call(
            "publish",
            Path::Background,
            self.config.write_timeout(),
            self.tier.publish(event),
        )
        .await
    }

    /// Records a purge (made here or announced by another instance), so that writes queued
    /// before it for the URLs it picks are dropped.
    pub fn note_purge(&self, target: &PurgeTarget) {
        let mut recent = self.recent_purges();
        let seq = self.purge_seq.fetch_add(1, Ordering::AcqRel) + 1;
        if recent.len() == RECENT_PURGES {
            recent.pop_front();
        }
        recent.push_back((seq, target.clone()));
    }

    fn recent_purges(&self) -> MutexGuard<'_, std::collections::VecDeque<(u64, PurgeTarget)>> {
        self.purges.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when a purge noted after `seq` picks `url`, or when so many came since that the
    /// record of some is gone (the write is dropped then too, to be safe).
    fn purged_since(&self, seq: u64, url: &str) -> bool {
        if self.purge_seq.load(Ordering::Acquire) == seq {
            return false;
        }
        let recent = self.recent_purges();
        match recent.front() {
            Some((oldest, _)) if *oldest > seq + 1 => true,
            _ => recent
                .iter()
                .any(|(s, target)| *s > seq && target.picks(url)),
        }
    }

    /// Whether a stored response would be written to the tier (small enough, with time left
    /// to serve it): what the instances waiting on this one's fill are told when it ends.
    pub fn would_store(&self, entry: &Entry) -> bool {
        entry.response().is_some_and(|r| {
            r.body.len() as u64 <= self.config.max_object_size
                && ttl_of(r, SystemTime::now()).is_some()
        })
    }

    fn event(&self, what: EventKind) -> Bytes {
        let event = Event {
            from: self.id.clone(),
            what,
        };
        Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
    }

    fn wake(&self, url: &str, stored: bool) {
        // Taken out of the map: the next wait on this URL is for another fill.
        if let Some(waiters) = self.waiters().remove(url) {
            waiters
                .ended
                .store(if stored { 1 } else { 2 }, Ordering::Release);
            waiters.notify.notify_waiters();
        }
    }
}

/// The time a response is kept in the tier: what is left of its freshness lifetime plus the
/// longest stale window its directives allow (stale-while-revalidate, stale-if-error). `None`
/// when that is nothing: it could not be served from the tier.
pub fn ttl_of(response: &CachedResponse, now: SystemTime) -> Option<Duration> {
    let age = crate::policy::freshness::current_age(response.received(), now);
    let stale = response
        .cc
        .stale_while_revalidate
        .unwrap_or(0)
        .max(response.cc.stale_if_error.unwrap_or(0));
    let left = response.lifetime.saturating_add(stale).saturating_sub(age);
    (left > 0).then(|| Duration::from_secs(left))
}

/// The fill lock of one URL, held while this instance fetches it. Dropping it (the fill ended,
/// stored or not, or its task was cancelled) queues the release after the fill's own write, so
/// a waiter woken by it finds the entry in the tier.
pub struct FillLock {
    shared: Arc<Shared>,
    url: Key,
    stored: AtomicBool,
}

impl FillLock {
    /// Records whether the fill stored its response (and queued it for the tier), for the
    /// waiters' event.
    pub fn stored(&self, stored: bool) {
        self.stored.store(stored, Ordering::Relaxed);
    }

    /// [`Shared::would_store`].
    pub fn would_store(&self, entry: &Entry) -> bool {
        self.shared.would_store(entry)
    }
}

impl Drop for FillLock {
    fn drop(&mut self) {
        // Sent even with the breaker open: a lock left behind would make others wait its ttl.
        if self
            .shared
            .writes
            .try_send(Write::Unlock {
                url: self.url.clone(),
                stored: self.stored.load(Ordering::Relaxed),
            })
            .is_err()
        {
            metrics::record_shared_write("dropped");
        }
    }
}

/// How long the writer goes on at shutdown with what was queued before it.
const DRAIN_AT_SHUTDOWN: Duration = Duration::from_secs(2);

/// The writer task: applies queued writes one at a time, in order (a fill's write before its
/// unlock). At shutdown it writes what was queued, for at most [`DRAIN_AT_SHUTDOWN`].
async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Write>, shutdown: CancellationToken) {
    loop {
        let write = tokio::select! {
            biased;
            w = rx.recv() => match w { Some(w) => w, None => return },
            _ = shutdown.cancelled() => break,
        };
        apply(&shared, write).await;
    }
    rx.close();
    let drain = async {
        while let Some(write) = rx.recv().await {
            apply(&shared, write).await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AT_SHUTDOWN, drain).await;
}

/// Applies one write under the write timeout.
async fn apply(shared: &Shared, write: Write) {
    let timeout = shared.config.write_timeout();
    match write {
        Write::Put { url, entry, seq } => {
            let Some(response) = entry.response() else {
                return;
            };
            if shared.purged_since(seq, url.as_str()) {
                metrics::record_shared_write("purged");
                return;
            }
            let sent_ms = response
                .request_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let Some(ttl) = ttl_of(response, SystemTime::now()) else {
                return;
            };
            let record = codec::encode(url.as_str(), response);
            let put = if response.vary_values.is_empty() {
                Put::Response { record, sent_ms }
            } else {
                let names: Vec<http::HeaderName> = response
                    .vary_values
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect();
                Put::Variant {
                    names: codec::encode_names(&names),
                    field: codec::variant_field(&response.vary_values),
                    record,
                    sent_ms,
                }
            };
            let result = shared
                .call(
                    "write",
                    Path::Background,
                    timeout,
                    shared.tier.put(url.as_str(), put, ttl),
                )
                .await;
            metrics::record_shared_write(if result.is_ok() { "written" } else { "failed" });
        }
        Write::Forget { url, field } => {
            let _ = shared
                .call(
                    "forget",
                    Path::Background,
                    timeout,
                    shared.tier.forget(url.as_str(), field.as_deref()),
                )
                .await;
        }
        Write::Unlock { url, stored } => {
            // Past the breaker: the lock expires on its own if Redis is really gone, but a
            // breaker opened by slow lookups must not make others wait out the lock's ttl.
            let unlock = shared.tier.unlock(url.as_str(), &shared.id);
            let _ = tokio::time::timeout(timeout, unlock).await;
            let event = shared.event(EventKind::Filled {
                url: url.as_str().to_string(),
                stored,
            });
            let _ = tokio::time::timeout(timeout, shared.tier.publish(event)).await;
            // Waiters on this instance too (its own event may come later, or not at all).
            shared.wake(url.as_str(), stored);
        }
    }
}

/// While the breaker is open, pings the tier every probe interval and closes it on an answer.
async fn probe(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = shared.config.probe_interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !shared.breaker.is_open() {
            continue;
        }
        let timeout = shared.config.write_timeout();
        if let Ok(Ok(())) = tokio::time::timeout(timeout, shared.tier.ping()).await {
            if shared.breaker.close() {
                metrics::record_shared_up(true);
                tracing::info!("shared tier answering again");
            }
        }
    }
}

/// Receives every instance's events, resubscribing after a broken connection: purges go to the
/// proxy's local store, `filled` wakes the requests waiting on that URL.
async fn subscriber(
    shared: Arc<Shared>,
    purges: mpsc::Sender<PurgeTarget>,
    shutdown: CancellationToken,
) {
    let every = shared.config.probe_interval;
    loop {
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = tokio::time::timeout(SUBSCRIBE_TIMEOUT, shared.tier.subscribe()) => s,
        };
        match subscribed {
            Ok(Ok(mut events)) => loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = events.next() => m,
                };
                let Some(message) = message else { break };
                let Ok(event) = serde_json::from_slice::<Event>(&message) else {
                    metrics::record_shared_event("invalid");
                    continue;
                };
                match event.what {
                    EventKind::Filled { url, stored } => {
                        metrics::record_shared_event("filled");
                        shared.wake(&url, stored);
                    }
                    EventKind::Purge(_) if event.from == shared.id => {}
                    EventKind::Purge(target) => {
                        metrics::record_shared_event("purge");
                        shared.note_purge(&target);
                        if purges.try_send(target).is_err() {
                            tracing::warn!(
                                "purge events arrive faster than they are applied: one dropped"
                            );
                        }
                    }
                }
            },
            Ok(Err(e)) => {
                if shared.log_allowed() {
                    tracing::warn!(error = %e, "cannot subscribe to shared tier events");
                }
            }
            Err(_) => {
                if shared.log_allowed() {
                    tracing::warn!("subscribing to shared tier events timed out");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CacheControl;
    use http::{HeaderMap, StatusCode};

    fn response(lifetime: u64, cc: CacheControl, age_secs: u64) -> CachedResponse {
        let t = epoch_now() - Duration::from_secs(age_secs);
        CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            request_time: t,
            response_time: t,
            vary_values: Vec::new(),
            cc,
            lifetime,
            initial_age: 0,
        }
    }

    /// A whole second, so ages come out exact.
    fn epoch_now() -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn the_tier_keeps_a_response_for_what_is_left_of_its_lifetime_and_stale_windows() {
        let now = epoch_now();
        assert_eq!(
            ttl_of(&response(60, CacheControl::default(), 10), now),
            Some(Duration::from_secs(50))
        );
        let swr = CacheControl {
            stale_while_revalidate: Some(30),
            stale_if_error: Some(100),
            ..CacheControl::default()
        };
        assert_eq!(
            ttl_of(&response(60, swr.clone(), 0), now),
            Some(Duration::from_secs(160))
        );
        assert_eq!(ttl_of(&response(0, CacheControl::default(), 0), now), None);
        assert_eq!(
            ttl_of(&response(10, CacheControl::default(), 20), now),
            None,
            "already stale with no stale window"
        );
        assert_eq!(
            ttl_of(&response(10, swr, 20), now),
            Some(Duration::from_secs(90)),
            "lifetime 10 and a stale window of 100, 20 s old: 90 s left"
        );
    }

    #[test]
    fn events_round_trip_as_json() {
        let e = Event {
            from: "a".into(),
            what: EventKind::Purge(PurgeTarget::Prefix("/img/".into())),
        };
        let text = serde_json::to_vec(&e).unwrap();
        assert_eq!(serde_json::from_slice::<Event>(&text).unwrap(), e);
    }
}

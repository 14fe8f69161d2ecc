//! Counters, gauges and histograms, and their Prometheus text rendering.
//!
//! Two kinds of numbers are exported, for a reason:
//!
//! - Events (requests by cache result, upstream requests and their latency) are recorded through
//!   the `metrics` facade from wherever they happen. Recording is a no-op until
//!   [`install_prometheus`] installs the process-wide Prometheus recorder (the admin listener does),
//!   so library users and tests that do not ask for metrics pay nothing for them.
//! - Levels (open connections, requests in flight, store bytes, entries and evictions) belong to
//!   one server and one store. They are read from that server at scrape time by [`render`]
//!   rather than pushed into the global recorder, so that several servers in one process (tests,
//!   benchmarks) never overwrite each other's gauges, and a scrape always sees the current value.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::outcome::CacheResult;
use crate::store::Store;

/// Every cache result, in the order `/stats` and `/metrics` list them.
pub const ALL_RESULTS: [CacheResult; 8] = [
    CacheResult::Hit,
    CacheResult::SharedHit,
    CacheResult::Miss,
    CacheResult::Stale,
    CacheResult::Revalidated,
    CacheResult::Coalesced,
    CacheResult::Bypass,
    CacheResult::Error,
];

/// The position of a result in [`ALL_RESULTS`]. The match is exhaustive, so a new variant of
/// [`CacheResult`] fails to compile here until it is given a slot.
fn result_index(result: CacheResult) -> usize {
    match result {
        CacheResult::Hit => 0,
        CacheResult::SharedHit => 1,
        CacheResult::Miss => 2,
        CacheResult::Stale => 3,
        CacheResult::Revalidated => 4,
        CacheResult::Coalesced => 5,
        CacheResult::Bypass => 6,
        CacheResult::Error => 7,
    }
}

/// Counts one request by its result, and its time to response headers by result: a hit's
/// latency and a miss's are different distributions, and a dashboard needs them apart.
pub fn record_request(result: CacheResult, elapsed: Duration) {
    if let Some(hot) = HOT.get() {
        let i = result_index(result);
        hot.requests[i].increment(1);
        hot.durations[i].record(elapsed.as_secs_f64());
    }
}

/// A site's request counters (`cachet_site_requests_total{site, result}`), registered when the
/// site is built so that counting a request is an atomic add, not a key lookup. Built before
/// [`install_prometheus`], they count nothing.
#[derive(Debug)]
pub struct SiteSeries {
    requests: [metrics::Counter; ALL_RESULTS.len()],
}

impl SiteSeries {
    /// The series of the site called `site`.
    pub fn register(site: &str) -> Self {
        SiteSeries {
            requests: ALL_RESULTS.map(|r| {
                metrics::counter!("cachet_site_requests_total", "site" => site.to_string(), "result" => r.as_str())
            }),
        }
    }

    /// Counts one request of this site by its result.
    pub fn record(&self, result: CacheResult) {
        self.requests[result_index(result)].increment(1);
    }
}

/// The handles of the series every request updates, registered once when the recorder is
/// installed: the `counter!` macros build and hash a key on every call, which on the hit path
/// costs as much as the store lookup. Before [`install_prometheus`] there is nothing to record
/// into, and these calls do nothing.
struct HotSeries {
    requests: [metrics::Counter; ALL_RESULTS.len()],
    durations: [metrics::Histogram; ALL_RESULTS.len()],
    responses: [metrics::Counter; STATUS_CLASSES.len()],
    body_bytes: metrics::Counter,
}

static HOT: OnceLock<HotSeries> = OnceLock::new();

impl HotSeries {
    fn register() -> Self {
        HotSeries {
            requests: ALL_RESULTS
                .map(|r| metrics::counter!("cachet_requests_total", "result" => r.as_str())),
            durations: ALL_RESULTS.map(
                |r| metrics::histogram!("cachet_request_duration_seconds", "result" => r.as_str()),
            ),
            responses: STATUS_CLASSES
                .map(|class| metrics::counter!("cachet_responses_total", "class" => class)),
            body_bytes: metrics::counter!("cachet_response_body_bytes_total"),
        }
    }
}

/// The status classes responses are counted by.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counts one finished response by status class, and the body bytes it sent. Called when the
/// response is over (its body ended or was dropped), so bytes are what the client really got;
/// a request abandoned before its response existed counts as `4xx` (logged 499).
pub fn record_response(status: u16, body_bytes: u64) {
    let Some(hot) = HOT.get() else { return };
    let class = match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    };
    hot.responses[class].increment(1);
    hot.body_bytes.increment(body_bytes);
}

/// The kinds upstream failures are counted by (`UpstreamError::kind` without its prefix).
const UPSTREAM_ERROR_KINDS: [&str; 3] = ["unreachable", "timeout", "busy"];

/// Counts one failed upstream exchange by kind: `unreachable` (502), `timeout` (504), `busy`
/// (no exchange slot within the queue timeout, 503).
pub fn record_upstream_error(kind: &'static str) {
    metrics::counter!("cachet_upstream_errors_total", "kind" => kind).increment(1);
}

/// Counts one upstream exchange and its time to response headers.
pub fn record_upstream(elapsed: Duration) {
    metrics::counter!("cachet_upstream_requests_total").increment(1);
    metrics::histogram!("cachet_upstream_duration_seconds").record(elapsed.as_secs_f64());
}

/// Counts a background refresh dropped because the queue was full.
pub fn record_refresh_dropped() {
    metrics::counter!("cachet_refresh_dropped_total").increment(1);
}

/// Counts one lookup in the shared tier by what it gave: `hit` (served), `miss`, `refused` (a
/// record that failed to decode or was written for another key: deleted, not served) or
/// `stale` (found, but not fresh enough to serve without the upstream).
pub fn record_shared_lookup(result: &'static str) {
    metrics::counter!("cachet_shared_lookups_total", "result" => result).increment(1);
}

/// Counts one failed call to the shared tier by kind: `timeout`, `unreachable`, `refused` (an
/// error answer), `open` (not made: the circuit breaker is open).
pub fn record_shared_error(kind: &'static str) {
    metrics::counter!("cachet_shared_errors_total", "kind" => kind).increment(1);
}

/// Counts one write to the shared tier by what became of it: `written`, `failed`, `dropped`
/// (the write queue was full), `skipped` (the breaker is open), `too_large` (body over
/// `--shared-max-object-size`), `no_lifetime` (nothing left to serve it for).
pub fn record_shared_write(result: &'static str) {
    metrics::counter!("cachet_shared_writes_total", "result" => result).increment(1);
}

/// Counts one request for a URL's fill lock: `acquired` (this instance fetches) or `busy`
/// (another instance is fetching; this one waits for its fill).
pub fn record_shared_lock(result: &'static str) {
    metrics::counter!("cachet_shared_locks_total", "result" => result).increment(1);
}

/// Counts one event received from the other instances: `purge`, `filled`, `invalid`.
pub fn record_shared_event(kind: &'static str) {
    metrics::counter!("cachet_shared_events_total", "kind" => kind).increment(1);
}

/// Sets `cachet_shared_up`: 1 while the shared tier is used, 0 while its circuit breaker is
/// open.
pub fn record_shared_up(up: bool) {
    metrics::gauge!("cachet_shared_up").set(if up { 1.0 } else { 0.0 });
}

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    /// Another `metrics` recorder was installed in this process first (by a library user).
    #[error("another metrics recorder is already installed in this process")]
    RecorderTaken,
}

/// Latency buckets, in seconds: from a fast hit (sub-millisecond) to a slow upstream near the
/// default 30 s response timeout.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Installs the Prometheus recorder as the process-wide `metrics` recorder, once; later calls
/// return the same handle. A recorder can be installed only once per process, so every server
/// in the process shares it: event counters on `/metrics` are process-wide, while each server's
/// `/stats` keeps its own counts ([`RequestCounts`]).
pub fn install_prometheus() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("the bucket list is a non-empty constant")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|_| MetricsError::RecorderTaken)?;
            describe();
            let _ = HOT.set(HotSeries::register());
            Ok(handle)
        })
        .clone()
}

/// HELP texts, and every counter registered at zero so that a scrape before the first request
/// already lists each series (rate() over a series that appears late misses its first increase).
fn describe() {
    metrics::describe_counter!(
        "cachet_requests_total",
        "Client requests answered, by cache result."
    );
    metrics::describe_histogram!(
        "cachet_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from request to response headers in the proxy, by cache result."
    );
    metrics::describe_counter!(
        "cachet_site_requests_total",
        "Client requests answered, by site and cache result."
    );
    metrics::describe_counter!(
        "cachet_responses_total",
        "Responses finished, by status class (1xx..5xx)."
    );
    metrics::describe_counter!(
        "cachet_response_body_bytes_total",
        metrics::Unit::Bytes,
        "Response body bytes sent to clients."
    );
    metrics::describe_counter!(
        "cachet_upstream_errors_total",
        "Upstream exchanges that failed, by kind (unreachable, timeout, busy)."
    );
    metrics::describe_counter!(
        "cachet_upstream_requests_total",
        "Requests sent to the upstream."
    );
    metrics::describe_histogram!(
        "cachet_upstream_duration_seconds",
        metrics::Unit::Seconds,
        "Time from sending an upstream request to its response headers."
    );
    metrics::describe_counter!(
        "cachet_refresh_dropped_total",
        "Background refreshes dropped because the queue was full."
    );
    for result in ALL_RESULTS {
        metrics::counter!("cachet_requests_total", "result" => result.as_str()).increment(0);
    }
    metrics::counter!("cachet_upstream_requests_total").increment(0);
    for class in STATUS_CLASSES {
        metrics::counter!("cachet_responses_total", "class" => class).increment(0);
    }
    metrics::counter!("cachet_response_body_bytes_total").increment(0);
    for kind in UPSTREAM_ERROR_KINDS {
        metrics::counter!("cachet_upstream_errors_total", "kind" => kind).increment(0);
    }
    metrics::counter!("cachet_refresh_dropped_total").increment(0);
}

/// Renders `/metrics`: the process-wide recorder's events, then this server's levels.
pub fn render(handle: &PrometheusHandle, levels: &Levels) -> String {
    let mut out = handle.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let mut gauge = |name: &str, kind: &str, help: &str, value: i128| {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        "cachet_connections",
        "gauge",
        "Open client connections.",
        levels.connections.get().into(),
    );
    gauge(
        "cachet_requests_in_flight",
        "gauge",
        "Client requests being handled, response bodies included.",
        levels.in_flight.get().into(),
    );
    gauge(
        "cachet_store_bytes",
        "gauge",
        "Bytes held by the store (keys, headers and bodies).",
        levels.store.weighted_size().into(),
    );
    gauge(
        "cachet_store_entries",
        "gauge",
        "Entries held by the store.",
        levels.store.entry_count().into(),
    );
    gauge(
        "cachet_store_evictions_total",
        "counter",
        "Entries evicted for capacity since start.",
        levels.store.evictions().into(),
    );
    out
}

/// The per-server levels [`render`] reads at scrape time.
#[derive(Clone)]
pub struct Levels {
    /// Open client connections.
    pub connections: LiveGauge,
    /// Requests being handled.
    pub in_flight: LiveGauge,
    /// The store, for bytes, entries and evictions.
    pub store: Arc<dyn Store>,
}

/// Requests counted by cache result for one server, for `/stats`: unlike the process-wide
/// recorder, these belong to the server that answered.
#[derive(Debug)]
pub struct RequestCounts {
    counts: [AtomicU64; ALL_RESULTS.len()],
    started: Instant,
}

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts {
            counts: Default::default(),
            started: Instant::now(),
        }
    }
}

impl RequestCounts {
    /// Counts one answered request.
    pub fn count(&self, result: CacheResult) {
        self.counts[result_index(result)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests with this result so far.
    pub fn get(&self, result: CacheResult) -> u64 {
        self.counts[result_index(result)].load(Ordering::Relaxed)
    }

    /// Every request counted so far.
    pub fn total(&self) -> u64 {
        ALL_RESULTS.iter().map(|r| self.get(*r)).sum()
    }

    /// Share of cache lookups answered from the store without waiting for the upstream:
    /// `(hit + stale) / (hit + stale + shared_hit + miss + revalidated + coalesced)`. A
    /// shared hit waited on the shared tier, not the upstream, but is counted as a lookup the
    /// local store missed, so this stays the local store's own ratio. Bypassed requests
    /// (methods and requests that are never cached) and errors made no lookup, so they are left
    /// out. `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let served = self.get(CacheResult::Hit) + self.get(CacheResult::Stale);
        let lookups = served
            + self.get(CacheResult::SharedHit)
            + self.get(CacheResult::Miss)
            + self.get(CacheResult::Revalidated)
            + self.get(CacheResult::Coalesced);
        (lookups > 0).then(|| served as f64 / lookups as f64)
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A gauge that cannot go negative or leak: it is raised by creating a [`GaugeGuard`] and
/// lowered when the guard drops, whatever path (early return, error, panic, disconnect) ends the
/// guarded work.
#[derive(Debug, Clone)]
pub struct LiveGauge {
    value: Arc<AtomicI64>,
}

impl Default for LiveGauge {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveGauge {
    /// A gauge at zero.
    pub fn new() -> Self {
        LiveGauge {
            value: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Raises the gauge until the returned guard drops.
    pub fn enter(&self) -> GaugeGuard {
        self.value.fetch_add(1, Ordering::AcqRel);
        GaugeGuard {
            gauge: self.clone(),
        }
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Acquire)
    }
}

/// Lowers its [`LiveGauge`] on drop.
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: LiveGauge,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.value.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_guard_lowers_on_every_exit_path() {
        let gauge = LiveGauge::new();
        {
            let _a = gauge.enter();
            let _b = gauge.enter();
            assert_eq!(gauge.get(), 2);
        }
        assert_eq!(gauge.get(), 0);
        let g = gauge.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = g.enter();
            panic!("the guarded work fails");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(gauge.get(), 0, "a panic must not leak a count");
    }

    #[test]
    fn hit_ratio_counts_lookups_only() {
        let counts = RequestCounts::default();
        assert_eq!(counts.hit_ratio(), None);
        counts.count(CacheResult::Hit);
        counts.count(CacheResult::Hit);
        counts.count(CacheResult::Stale);
        counts.count(CacheResult::Miss);
        counts.count(CacheResult::Bypass);
        counts.count(CacheResult::Error);
        assert_eq!(counts.total(), 6);
        assert_eq!(counts.hit_ratio(), Some(0.75));
    }
}

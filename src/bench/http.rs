//! `bench http`: the workload driven over real HTTP, on loopback, through a proxy per backend in
//! front of the slow origin (or through a running proxy given with `--target`).
//!
//! A fixed number of workers each keep one request in flight, so at most that many connections
//! are open; every run is bounded by its request count and by a time limit. What the client saw
//! is read from each response's `Cache-Status` (RFC 9211).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::HOST;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use indicatif::ProgressBar;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::origin::{self, OriginConfig};
use crate::proxy::CACHE_STATUS;
use crate::shared::SharedConfig;
use crate::store::{Backend, Eviction, MokaPolicy, ENTRY_OVERHEAD};

use super::trace::Trace;

/// Something that stopped an http run.
#[derive(Debug, thiserror::Error)]
pub enum HttpBenchError {
    /// A loopback listener could not be bound.
    #[error("binding a loopback port for the {what}: {error}")]
    Bind {
        /// Origin or proxy.
        what: &'static str,
        /// What the OS said (in the message, so not also reported as a cause).
        error: std::io::Error,
    },
    /// The probe that measures what the proxy charges per response failed.
    #[error("probing the proxy's per-response charge: {0}")]
    Probe(String),
    /// The shared tier given with `--shared` did not answer.
    #[error("the shared tier at {target} did not answer PING: {reason}; start Redis there or pass --shared the URL of a running one")]
    SharedUnreachable {
        /// The `--shared` URL.
        target: String,
        /// What the client said.
        reason: String,
    },
    /// `--instances` below 2: there would be no fleet to compare.
    #[error("--instances {0}: a fleet needs at least 2 instances")]
    Instances(usize),
    /// A URL built from `--target` and an object path does not parse.
    #[error("invalid request URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// How hard and how long to drive.
#[derive(Debug, Clone, Copy)]
pub struct DriveOptions {
    /// Requests in flight at once, and so the most connections open.
    pub concurrency: usize,
    /// The run stops sending new requests after this long.
    pub time_limit: Duration,
    /// One request (headers and whole body) may take this long before it counts as an error.
    pub request_timeout: Duration,
}

/// What one response said about the cache, from its `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// `hit`: from the store.
    Hit,
    /// `hit; ...; detail=shared`: from the shared tier (another instance's fetch).
    SharedHit,
    /// `fwd=...; collapsed`: from another request's upstream fetch.
    Coalesced,
    /// `fwd=...`: this request went upstream.
    Miss,
    /// No `Cache-Status` member of ours: cannot tell.
    Unknown,
}

/// Classifies a `Cache-Status` value. Several caches may each add a member (RFC 9211: the last
/// is the one nearest the client); the last member named `cachet` is ours, or else the last one.
pub fn classify(cache_status: Option<&str>) -> Served {
    let Some(value) = cache_status else {
        return Served::Unknown;
    };
    let members: Vec<&str> = value.split(',').map(str::trim).collect();
    let ours = members
        .iter()
        .rev()
        .find(|m| m.split(';').next().map(str::trim) == Some("cachet"))
        .or(members.last());
    let Some(member) = ours else {
        return Served::Unknown;
    };
    let params: Vec<&str> = member.split(';').skip(1).map(str::trim).collect();
    let has = |p: &str| {
        params
            .iter()
            .any(|q| *q == p || q.starts_with(&format!("{p}=")))
    };
    if has("hit") && params.contains(&"detail=shared") {
        Served::SharedHit
    } else if has("hit") {
        Served::Hit
    } else if has("fwd") && has("collapsed") {
        Served::Coalesced
    } else if has("fwd") {
        Served::Miss
    } else {
        Served::Unknown
    }
}

/// What the client counted over one run.
#[derive(Debug, Clone, Default)]
pub struct ClientCounts {
    /// Requests sent and finished (answered, failed or timed out).
    pub requests: u64,
    /// `Cache-Status: hit`, from the local store or the shared tier.
    pub hits: u64,
    /// Of those, from the shared tier (`detail=shared`).
    pub shared_hits: u64,
    /// Collapsed into another request's fetch.
    pub coalesced: u64,
    /// Went upstream themselves.
    pub misses: u64,
    /// 2xx answers without a `Cache-Status` of ours.
    pub unknown: u64,
    /// Transport errors, timeouts and non-2xx answers.
    pub errors: u64,
    /// Body bytes of the answers the workload expected (2xx).
    pub bytes: u64,
    /// Of those, from hits.
    pub hit_bytes: u64,
}

impl ClientCounts {
    fn merge(&mut self, o: &ClientCounts) {
        self.requests += o.requests;
        self.hits += o.hits;
        self.shared_hits += o.shared_hits;
        self.coalesced += o.coalesced;
        self.misses += o.misses;
        self.unknown += o.unknown;
        self.errors += o.errors;
        self.bytes += o.bytes;
        self.hit_bytes += o.hit_bytes;
    }
}

/// The outcome of driving one proxy.
#[derive(Debug)]
pub struct Drive {
    /// Counts.
    pub counts: ClientCounts,
    /// Latency of each request in microseconds, request sent to last body byte.
    pub latency_us: Histogram<u64>,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Requests taken from the trace: always its first `sent` requests, all of them finished.
    pub sent: usize,
}

/// The path of object `o` of `size` bytes: the origin serves `size` bytes for it, so object
/// sizes follow the workload. Zero-padded to `width` digits so that every key of the run has
/// the same length (equal sizes then mean equal charges, and Belady is the exact optimum).
pub fn object_path(o: u32, size: u64, width: usize) -> String {
    format!("/obj/{o:0width$}?size={size}")
}

/// Digits of the largest object number in a trace of `objects` objects.
pub fn id_width(objects: usize) -> usize {
    objects.saturating_sub(1).max(1).to_string().len()
}

/// Digits of `n` in decimal: the length of a `Content-Length` value.
pub fn digits(n: u64) -> u64 {
    n.to_string().len() as u64
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client(concurrency: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build(connector)
}

/// Builds the request URI of every object against `base` (`http://host:port`, no trailing
/// slash).
pub fn object_uris(base: &str, trace: &Trace) -> Result<Vec<Uri>, HttpBenchError> {
    let width = id_width(trace.objects());
    trace
        .sizes
        .iter()
        .enumerate()
        .map(|(o, &size)| {
            let url = format!("{base}{}", object_path(o as u32, size, width));
            url.parse()
                .map_err(|e: http::uri::InvalidUri| HttpBenchError::Url {
                    url,
                    reason: e.to_string(),
                })
        })
        .collect()
}

async fn one_request(
    client: &HttpClient,
    uri: Uri,
    host: Option<&HeaderValue>,
) -> Result<(Served, u64, bool), String> {
    let mut req = Request::get(uri)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    // Without one, the client sends the URI's authority (the instance's own address).
    if let Some(host) = host {
        req.headers_mut().insert(HOST, host.clone());
    }
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let ok = resp.status().is_success();
    let served = classify(
        resp.headers()
            .get(CACHE_STATUS)
            .and_then(|v| v.to_str().ok()),
    );
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((served, body.to_bytes().len() as u64, ok))
}

/// Drives the trace's requests, in order, against the object URIs, `concurrency` at a time.
pub async fn drive(
    trace: Arc<Trace>,
    uris: Arc<Vec<Uri>>,
    options: DriveOptions,
    progress: &ProgressBar,
) -> Drive {
    let uris = Arc::new(vec![Arc::unwrap_or_clone(uris)]);
    drive_spread(trace, uris, None, options, progress).await
}

/// Drives the trace's requests, in order, `concurrency` at a time, spread round-robin over
/// several instances as a load balancer without affinity would: request `i` of the trace goes
/// to instance `i % instances.len()`, whose object URIs are `instances[i % n]`. With `host`,
/// every request carries that `Host` (so that every instance computes the same cache keys);
/// without, the URI's authority.
pub async fn drive_spread(
    trace: Arc<Trace>,
    instances: Arc<Vec<Vec<Uri>>>,
    host: Option<HeaderValue>,
    options: DriveOptions,
    progress: &ProgressBar,
) -> Drive {
    assert!(!instances.is_empty(), "drive_spread needs an instance");
    let client = client(options.concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + options.time_limit;
    let mut workers = Vec::with_capacity(options.concurrency);
    for _ in 0..options.concurrency.max(1) {
        let (client, next, trace, instances, host) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&trace),
            Arc::clone(&instances),
            host.clone(),
        );
        let progress = progress.clone();
        workers.push(tokio::spawn(async move {
            let mut counts = ClientCounts::default();
            let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds");
            loop {
                // The deadline is checked before taking an index, so every index taken is
                // finished: the requests done are always a prefix of the trace.
                if Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&o) = trace.requests.get(i) else {
                    break;
                };
                let uri = instances[i % instances.len()][o as usize].clone();
                let sent = Instant::now();
                let answer = tokio::time::timeout(
                    options.request_timeout,
                    one_request(&client, uri, host.as_ref()),
                )
                .await;
                hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                counts.requests += 1;
                match answer {
                    Ok(Ok((served, len, true))) => {
                        counts.bytes += len;
                        match served {
                            Served::Hit => {
                                counts.hits += 1;
                                counts.hit_bytes += len;
                            }
                            Served::SharedHit => {
                                counts.hits += 1;
                                counts.shared_hits += 1;
                                counts.hit_bytes += len;
                            }
                            Served::Coalesced => counts.coalesced += 1,
                            Served::Miss => counts.misses += 1,
                            Served::Unknown => counts.unknown += 1,
                        }
                    }
                    Ok(Ok((_, _, false))) | Ok(Err(_)) | Err(_) => counts.errors += 1,
                }
                progress.inc(1);
            }
            (counts, hist)
        }));
    }
    let mut counts = ClientCounts::default();
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds");
    for w in workers {
        // A worker only ends by returning; a panic in one is a bug worth surfacing.
        let (c, h) = w.await.expect("bench worker panicked");
        counts.merge(&c);
        latency_us.add(&h).expect("histograms share bounds");
    }
    let elapsed = started.elapsed();
    let sent = next.load(Ordering::Relaxed).min(trace.requests.len());
    debug_assert_eq!(sent as u64, counts.requests);
    Drive {
        counts,
        latency_us,
        elapsed,
        sent,
    }
}

/// A slow origin on a loopback port, stopped when dropped.
pub struct LocalOrigin {
    /// The running origin.
    pub origin: origin::Origin,
    token: CancellationToken,
}

impl Drop for LocalOrigin {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts the origin on `127.0.0.1:0`.
pub async fn start_origin(latency: Duration) -> Result<LocalOrigin, HttpBenchError> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|error| HttpBenchError::Bind {
                what: "origin",
                error,
            })?;
    let token = CancellationToken::new();
    let config = OriginConfig {
        latency,
        body_size: 4096,
        // Longer than any run, so nothing expires while it is measured.
        max_age: 86_400,
    };
    let origin = origin::serve(listener, config, token.clone())
        .await
        .map_err(|error| HttpBenchError::Bind {
            what: "origin",
            error,
        })?;
    Ok(LocalOrigin { origin, token })
}

/// Starts a proxy with `backend` at `capacity` bytes in front of `origin`.
///
/// Objects up to the whole capacity may be stored (`max_object_size` = capacity), as in the
/// replay where the store refuses only an entry larger than itself.
pub async fn start_proxy(
    origin: SocketAddr,
    backend: Backend,
    eviction: Eviction,
    moka_policy: MokaPolicy,
    capacity: u64,
) -> Result<crate::server::Running, HttpBenchError> {
    start_instance(origin, backend, eviction, moka_policy, capacity, None).await
}

/// [`start_proxy`], using the shared tier `shared` when given (an instance of a fleet).
pub async fn start_instance(
    origin: SocketAddr,
    backend: Backend,
    eviction: Eviction,
    moka_policy: MokaPolicy,
    capacity: u64,
    shared: Option<SharedConfig>,
) -> Result<crate::server::Running, HttpBenchError> {
    let upstream: Uri = format!("http://{origin}")
        .parse()
        .expect("a socket address makes a valid URI");
    let mut config = ServeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), upstream);
    config.backend = backend;
    config.eviction = eviction;
    config.moka_policy = moka_policy;
    config.capacity = capacity;
    config.proxy.max_object_size = capacity;
    config.shutdown_timeout = Duration::from_secs(5);
    config.shared = shared;
    crate::server::start(config)
        .await
        .map_err(|error| HttpBenchError::Bind {
            what: "proxy",
            error: std::io::Error::other(error),
        })
}

/// Measures the bytes the proxy charges a stored origin response beyond its key, body, and
/// `Content-Length` digits, by storing one and reading the store's size. The result is the same
/// for every object of a run (the origin's headers differ only in `Content-Length`), so the
/// replay can charge each synthetic entry exactly what the proxy charges the real one.
pub async fn probe_header_bytes(latency: Duration, size: u64) -> Result<u64, HttpBenchError> {
    let fail = |m: String| HttpBenchError::Probe(m);
    let origin = start_origin(latency).await?;
    let proxy = start_proxy(
        origin.origin.addr,
        Backend::Rwlock,
        Eviction::Clock,
        MokaPolicy::Lru,
        1 << 30,
    )
    .await?;
    let path = format!("/obj/probe?size={size}");
    let uri: Uri = format!("http://{}{path}", proxy.addr)
        .parse()
        .expect("a valid probe URI");
    let client = client(1);
    let result = async {
        let first = one_request(&client, uri.clone(), None)
            .await
            .map_err(fail)?;
        if first.0 != Served::Miss || !first.2 || first.1 != size {
            return Err(fail(format!("first probe answer was {first:?}")));
        }
        // The store is filled by the fetch's own task once the whole body is in; wait for it.
        let waited = Instant::now();
        while proxy.store().entry_count() == 0 {
            if waited.elapsed() > Duration::from_secs(5) {
                return Err(fail("the probe response was never stored".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = one_request(&client, uri, None).await.map_err(fail)?;
        if second.0 != Served::Hit {
            return Err(fail(format!(
                "second probe answer was {second:?}, not a hit"
            )));
        }
        let key = format!("http://{}{path}", proxy.addr);
        let charged = proxy.store().weighted_size();
        let known = ENTRY_OVERHEAD + key.len() as u64 + size + digits(size);
        charged.checked_sub(known).ok_or_else(|| {
            fail(format!(
                "the store charged {charged} bytes, less than {known}"
            ))
        })
    }
    .await;
    drop(client);
    proxy.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_classification() {
        assert_eq!(classify(Some("cachet; hit; ttl=3599")), Served::Hit);
        assert_eq!(
            classify(Some("cachet; hit; ttl=3599; detail=shared")),
            Served::SharedHit
        );
        assert_eq!(
            classify(Some("cachet; hit; ttl=3599; collapsed; detail=shared")),
            Served::SharedHit
        );
        // Another detail on a hit is a local hit.
        assert_eq!(
            classify(Some("cachet; hit; ttl=3599; detail=sharedx")),
            Served::Hit
        );
        assert_eq!(
            classify(Some("cachet; fwd=uri-miss; fwd-status=200; stored")),
            Served::Miss
        );
        assert_eq!(
            classify(Some(
                "cachet; fwd=uri-miss; fwd-status=200; ttl=3600; collapsed"
            )),
            Served::Coalesced
        );
        // Another cache nearer the origin said hit; ours (the last) forwarded.
        assert_eq!(
            classify(Some("origin-cache; hit, cachet; fwd=stale; fwd-status=304")),
            Served::Miss
        );
        assert_eq!(classify(Some("other; hit")), Served::Hit);
        assert_eq!(classify(Some("cachet")), Served::Unknown);
        assert_eq!(classify(None), Served::Unknown);
        // A parameter that merely starts with "hit" is not a hit.
        assert_eq!(classify(Some("cachet; hitch")), Served::Unknown);
    }

    #[test]
    fn paths_have_one_width_per_run() {
        assert_eq!(id_width(1), 1);
        assert_eq!(id_width(10), 1);
        assert_eq!(id_width(11), 2);
        assert_eq!(id_width(100_000), 5);
        assert_eq!(object_path(7, 4096, 5), "/obj/00007?size=4096");
        assert_eq!(digits(4096), 4);
    }

    #[tokio::test]
    async fn probe_measures_a_plausible_header_charge() {
        let h = probe_header_bytes(Duration::ZERO, 1000).await.unwrap();
        // Date, Content-Type, Cache-Control, Content-Length name, Via: about two hundred bytes.
        assert!((50..1000).contains(&h), "{h}");
    }
}

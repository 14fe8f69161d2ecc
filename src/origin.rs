//! `cachet origin`: a deliberately slow origin for demos, tests and benchmarks.
//!
//! Every response is deterministic for its path and parameters, so a test can check the bytes a
//! cache returns. Per-request query parameters override the defaults:
//!
//! | parameter | effect |
//! | --- | --- |
//! | `latency=50ms` | wait before the response headers |
//! | `size=1024` | body length in bytes (units allowed) |
//! | `cc=no-store` | the `Cache-Control` value (`cc=` alone sends none) |
//! | `status=404` | the response status |
//! | `etag=1` | send an `ETag`, and answer a matching `If-None-Match` with 304 |
//! | `lm=1` | send `Last-Modified` (one day ago), and answer `If-Modified-Since` with 304 |
//! | `vary=Accept-Encoding` | send `Vary` and echo the named request header into the body |
//! | `cookie=1` | send a `Set-Cookie` |
//! | `cookie304=1` | send a `Set-Cookie` on 304 answers only |
//! | `truncate=1` | announce the full length, send half the body, then drop the connection |
//! | `drip=100ms` | send the body in four parts with this pause before each of the last three |
//! | `version=N` | mixed into the body and ETag, so a test can change the "file" behind a URL |
//! | `expires=...` | send this `Expires` value |
//! | `location=/x` | send `Location` |
//! | `cdncc=max-age=60` | send this `CDN-Cache-Control` value |
//!
//! `GET /_origin/stats` answers `{"requests": N, "conditional": M}`, counting the requests that
//! reached the origin (stats calls excluded); `POST /_origin/reset` zeroes the counts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, DATE, ETAG, EXPIRES,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, SET_COOKIE, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{self, Body, BoxError};
use crate::units::{parse_duration, parse_size};

/// Defaults for every response, overridable per request.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Delay before the response headers.
    pub latency: Duration,
    /// Body length in bytes.
    pub body_size: u64,
    /// `max-age` in the default `Cache-Control: public, max-age=N`.
    pub max_age: u64,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            latency: Duration::from_millis(200),
            body_size: 4096,
            max_age: 3600,
        }
    }
}

/// Request counts, shared with whoever started the origin in-process.
#[derive(Debug, Default)]
pub struct OriginStats {
    requests: AtomicU64,
    conditional: AtomicU64,
    /// Requests being answered now (until their response head is built, latency included).
    in_flight: AtomicU64,
    /// The most `in_flight` has been.
    peak_in_flight: AtomicU64,
}

impl OriginStats {
    /// Requests that reached the origin, stats calls excluded.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Of those, requests carrying `If-None-Match` or `If-Modified-Since`.
    pub fn conditional(&self) -> u64 {
        self.conditional.load(Ordering::Relaxed)
    }

    /// The most requests the origin was answering at once: what a proxy's upstream bound and
    /// coalescing are measured by.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    /// Zeroes the counts.
    pub fn reset(&self) {
        self.peak_in_flight.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.conditional.store(0, Ordering::Relaxed);
    }
}

/// A running origin: its address and counts.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its request counts.
    pub stats: Arc<OriginStats>,
}

/// Serves the origin on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: OriginConfig,
    shutdown: CancellationToken,
) -> std::io::Result<Origin> {
    let addr = listener.local_addr()?;
    let stats = Arc::new(OriginStats::default());
    let origin = Origin {
        addr,
        stats: Arc::clone(&stats),
    };
    let config = Arc::new(config);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "origin accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let config = Arc::clone(&config);
            let stats = Arc::clone(&stats);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let config = Arc::clone(&config);
                    let stats = Arc::clone(&stats);
                    async move { Ok::<_, Infallible>(respond(req, &config, &stats).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(origin)
}

/// Binds `addr` and serves the origin there.
pub async fn bind(
    addr: SocketAddr,
    config: OriginConfig,
    shutdown: CancellationToken,
) -> std::io::Result<Origin> {
    serve(TcpListener::bind(addr).await?, config, shutdown).await
}

/// The request's query parameters, decoded as form data (`+` is a space).
fn query_params(req: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The deterministic body for a path and version: a byte pattern seeded by both.
pub fn body_for(path: &str, version: &str, size: usize) -> Bytes {
    let mut seed: u32 = 2166136261;
    for b in path.bytes().chain(version.bytes()) {
        seed = (seed ^ b as u32).wrapping_mul(16777619);
    }
    // xorshift: deterministic, and not all one byte, so truncation is visible. One period of it
    // is generated and then repeated: a 48 MiB body costs copies, not 48 million steps (which a
    // debug build on a loaded machine took seconds over). The period, a prime, lines up with no
    // buffer or range size a test uses.
    const PERIOD: usize = 65_521;
    let mut block = Vec::with_capacity(size.min(PERIOD));
    let mut x = seed | 1;
    for _ in 0..size.min(PERIOD) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        block.push(b'a' + (x % 26) as u8);
    }
    let mut body = Vec::with_capacity(size);
    while body.len() < size {
        let take = (size - body.len()).min(block.len());
        body.extend_from_slice(&block[..take]);
    }
    Bytes::from(body)
}

fn etag_for(path: &str, version: &str, size: usize) -> String {
    let mut h: u64 = 1469598103934665603;
    for b in path
        .bytes()
        .chain(version.bytes())
        .chain(size.to_le_bytes())
    {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    format!("\"{h:016x}\"")
}

async fn respond(
    req: Request<Incoming>,
    config: &OriginConfig,
    stats: &OriginStats,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/_origin/stats" {
        let body = format!(
            "{{\"requests\": {}, \"conditional\": {}}}",
            stats.requests(),
            stats.conditional()
        );
        return Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .header(CACHE_CONTROL, "no-store")
            .body(body::full(body))
            .expect("static response");
    }
    if path == "/_origin/reset" && req.method() == Method::POST {
        stats.reset();
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(CACHE_CONTROL, "no-store")
            .body(body::empty())
            .expect("static response");
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let conditional =
        req.headers().contains_key(IF_NONE_MATCH) || req.headers().contains_key(IF_MODIFIED_SINCE);
    if conditional {
        stats.conditional.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts the request out even when its connection is dropped mid-latency.
    struct Answering<'a>(&'a AtomicU64);
    impl Drop for Answering<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let now = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
    let answering = Answering(&stats.in_flight);
    let built = build(&req, config).await;
    drop(answering);
    match built {
        Ok(resp) => resp,
        Err(reason) => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(CACHE_CONTROL, "no-store")
            .body(body::full(format!("bad origin parameter: {reason}\n")))
            .expect("static response"),
    }
}

async fn build(req: &Request<Incoming>, config: &OriginConfig) -> Result<Response<Body>, String> {
    let q = query_params(req);
    let latency = match q.get("latency") {
        Some(v) => parse_duration(v).map_err(|e| e.to_string())?,
        None => config.latency,
    };
    let size = match q.get("size") {
        Some(v) => parse_size(v).map_err(|e| e.to_string())? as usize,
        None => config.body_size as usize,
    };
    let status = match q.get("status") {
        Some(v) => v
            .parse::<u16>()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| format!("status={v}"))?,
        None => StatusCode::OK,
    };
    let cache_control = match q.get("cc") {
        Some(v) => v.clone(),
        None => format!("public, max-age={}", config.max_age),
    };
    let version = q.get("version").cloned().unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let path = req.uri().path();
    let mut builder = Response::builder()
        .status(status)
        .header(DATE, httpdate::fmt_http_date(SystemTime::now()))
        .header(CONTENT_TYPE, "application/octet-stream");
    if !cache_control.is_empty() {
        builder = builder.header(CACHE_CONTROL, cache_control);
    }
    let etag = etag_for(path, &version, size);
    let mut not_modified = false;
    if q.contains_key("etag") {
        builder = builder.header(ETAG, &etag);
        if let Some(inm) = req
            .headers()
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
        {
            not_modified |= inm.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.trim_start_matches("W/") == etag
            });
        }
    }
    if q.contains_key("lm") {
        // Whole days back from now, so the value is stable within a test run.
        let day = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                (SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    / 86_400
                    - 1)
                    * 86_400,
            );
        let lm = httpdate::fmt_http_date(day);
        builder = builder.header(LAST_MODIFIED, &lm);
        if !req.headers().contains_key(IF_NONE_MATCH) {
            if let Some(ims) = req
                .headers()
                .get(IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
            {
                not_modified |= day <= ims;
            }
        }
    }
    if let Some(e) = q.get("expires") {
        builder = builder.header(EXPIRES, e);
    }
    if let Some(v) = q.get("cdncc") {
        builder = builder.header("cdn-cache-control", v);
    }
    if let Some(l) = q.get("location") {
        builder = builder.header(LOCATION, l);
    }
    if q.contains_key("cookie") {
        builder = builder.header(SET_COOKIE, "session=abc123; Path=/");
    }
    let mut body_bytes = body_for(path, &version, size);
    if let Some(vary) = q.get("vary") {
        builder = builder.header(VARY, vary);
        // Echo the varied-on request header into the body so variants differ visibly.
        let mut echoed = Vec::new();
        for name in vary.split(',') {
            let value = req
                .headers()
                .get(name.trim())
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            echoed.extend_from_slice(format!("{}={}\n", name.trim(), value).as_bytes());
        }
        echoed.extend_from_slice(&body_bytes);
        body_bytes = Bytes::from(echoed);
    }
    if not_modified && req.method() == Method::GET {
        if q.contains_key("cookie304") {
            builder = builder.header(SET_COOKIE, "session=refreshed; Path=/");
        }
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(body::empty())
            .map_err(|e| e.to_string());
    }
    let len = body_bytes.len();
    builder = builder.header(CONTENT_LENGTH, HeaderValue::from(len));
    if req.method() == Method::HEAD {
        return builder.body(body::empty()).map_err(|e| e.to_string());
    }
    if q.contains_key("truncate") {
        // Announce the whole length, send half, then fail the body: hyper drops the connection.
        let half = body_bytes.slice(..len / 2);
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(half)),
            Err("origin truncated the body on purpose".into()),
        ];
        let stream = futures_util::stream::iter(frames);
        return builder
            .body(StreamBody::new(stream).boxed())
            .map_err(|e| e.to_string());
    }
    if let Some(pause) = q.get("drip") {
        let pause = parse_duration(pause).map_err(|e| e.to_string())?;
        let quarter = len.div_ceil(4).max(1);
        let parts: Vec<Bytes> = (0..len)
            .step_by(quarter)
            .map(|start| body_bytes.slice(start..(start + quarter).min(len)))
            .collect();
        let stream = futures_util::stream::unfold((parts, 0usize), move |(parts, i)| async move {
            let part = parts.get(i)?.clone();
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            Some((Ok::<_, BoxError>(Frame::data(part)), (parts, i + 1)))
        });
        return builder
            .body(StreamBody::new(stream).boxed())
            .map_err(|e| e.to_string());
    }
    builder
        .body(body::full(body_bytes))
        .map_err(|e| e.to_string())
}

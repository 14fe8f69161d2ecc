//! The upstream client: pooled connections over TCP or TLS, one or more servers chosen
//! round-robin (a server that fails connections is skipped for a while), timeouts, and header
//! hygiene on the way out.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_LENGTH, COOKIE, EXPECT, HOST, TRANSFER_ENCODING, VIA};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::Body;
use crate::policy::headers::strip_hop_by_hop;
use crate::tls::TlsError;
pub use crate::tls::UpstreamTls;

/// Why an upstream exchange failed; each maps to the status the client is given.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made, or it broke before a response: 502. `detail` is the whole
    /// chain of causes as text, for the client's short error body and the log; the cause itself
    /// is kept as the error's source.
    #[error("upstream unreachable: {detail}")]
    Unreachable {
        /// The cause chain, joined with `: `.
        detail: String,
        /// What hyper reported.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No response headers within the response timeout, or no connection within the connect
    /// timeout: 504.
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
    /// Every one of the upstream's exchange slots stayed busy for the queue timeout: 503.
    #[error("upstream busy: {limit} exchanges in flight for {waited:?}")]
    Busy {
        /// The bound (`--upstream-max-concurrency`).
        limit: usize,
        /// How long the request waited for a slot.
        waited: Duration,
    },
}

impl UpstreamError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> http::StatusCode {
        match self {
            UpstreamError::Unreachable { .. } => http::StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Busy { .. } => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short name of the failure for `Cache-Status` details and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable { .. } => "upstream-unreachable",
            UpstreamError::Timeout(_) => "upstream-timeout",
            UpstreamError::Busy { .. } => "upstream-busy",
        }
    }
}

/// Where requests go and how long they may take.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// The upstream's servers (`http://host:port` or `https://host:port`), tried round-robin; a
    /// server's path, if any, is prefixed to every request path sent to it.
    pub servers: Vec<Uri>,
    /// The `Host` sent upstream instead of the request's effective authority (a site's
    /// `upstream_host`), for origins that answer to one internal name only.
    pub host: Option<String>,
    /// How `https://` servers are verified.
    pub tls: UpstreamTls,
    /// How long a server that refused or failed a connection is skipped before it is tried
    /// again (nginx's `fail_timeout`).
    pub fail_timeout: Duration,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed from sending the request to receiving the response headers.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Upstream exchanges in flight at once, fills and pass-throughs together; a fill whose
    /// client has gone still counts until it ends. One client must not be able to turn its
    /// requests into an unbounded number of upstream connections.
    pub max_concurrency: usize,
    /// How long a request waits for one of those slots before it is answered 503.
    pub queue_timeout: Duration,
}

impl UpstreamConfig {
    /// Settings with the defaults of `cachet serve` for one server.
    pub fn new(server: Uri) -> Self {
        UpstreamConfig {
            servers: vec![server],
            host: None,
            tls: UpstreamTls::default(),
            fail_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            max_concurrency: 256,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

/// Why an upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// A site with no server.
    #[error("no upstream server given")]
    NoServers,
    /// The TLS material for `https://` servers could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// One server of an upstream.
struct Server {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    /// Milliseconds after the upstream's epoch until which the server is skipped; 0 when it
    /// is in use. An atomic, so that choosing a server never takes a lock.
    down_until: AtomicU64,
}

/// A pooled HTTP/1.1 client for one upstream: one server or several, over plain TCP or TLS.
#[derive(Clone)]
pub struct Upstream {
    client: Client<Bounded<HttpsConnector<HttpConnector>>, Body>,
    servers: Arc<[Server]>,
    /// Round-robin position.
    next: Arc<AtomicUsize>,
    epoch: Instant,
    /// The authority a request without one (HTTP/1.0 without `Host`) is keyed and sent under.
    default_authority: crate::policy::authority::Authority,
    host: Option<HeaderValue>,
    /// One permit per exchange in flight; see [`UpstreamConfig::max_concurrency`].
    slots: Arc<Semaphore>,
    config: UpstreamConfig,
    /// The CA file's bytes when it was read, so that a reload can tell whether it changed.
    ca_pem: Option<Arc<[u8]>>,
}

/// The right to run one upstream exchange, held until its response body is done or dropped.
/// [`Upstream::send`] asks for one by reference, so no exchange can skip the bound.
#[derive(Debug)]
pub struct UpstreamPermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("servers", &self.config.servers)
            .finish()
    }
}

impl Upstream {
    /// Builds the client. The URLs were validated when the configuration was read; the TLS
    /// material is read here, so a bad CA file is an error before anything is served.
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        if config.servers.is_empty() {
            return Err(UpstreamSetupError::NoServers);
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        // The TLS connector below takes `https://` URIs; the plain one must let them through.
        http.enforce_http(false);
        let needs_roots = config
            .servers
            .iter()
            .any(|u| u.scheme() == Some(&Scheme::HTTPS));
        let tls = crate::tls::client_config(&config.tls, needs_roots)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        // With `upstream_host`, the servers are reached by address but answer to that name: it
        // is the name sent as SNI and the one their certificates are checked against.
        let tls_name = config
            .host
            .as_deref()
            .and_then(|h| ServerName::try_from(host_without_port(h).to_string()).ok());
        let builder = match tls_name {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = Bounded {
            inner: builder.enable_http1().wrap_connector(http),
            timeout: config.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(256)
            .build(connector);
        let servers: Vec<Server> = config
            .servers
            .iter()
            .map(|url| Server {
                scheme: url.scheme().cloned().unwrap_or(Scheme::HTTP),
                authority: url
                    .authority()
                    .cloned()
                    .unwrap_or_else(|| Authority::from_static("127.0.0.1")),
                base_path: url.path().trim_end_matches('/').to_string(),
                down_until: AtomicU64::new(0),
            })
            .collect();
        let first = &servers[0];
        let default_authority = crate::policy::authority::Authority::parse(
            config.host.as_deref().unwrap_or(first.authority.as_str()),
            first.scheme.as_str(),
        )
        .unwrap_or_else(|_| {
            crate::policy::authority::Authority::parse("localhost", "http")
                .expect("a valid literal")
        });
        let host = config
            .host
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok());
        let slots = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        let ca_pem = config
            .tls
            .ca_file
            .as_ref()
            .and_then(|path| std::fs::read(path).ok())
            .map(Arc::from);
        Ok(Upstream {
            client,
            servers: servers.into(),
            next: Arc::new(AtomicUsize::new(0)),
            epoch: Instant::now(),
            default_authority,
            host,
            slots,
            config,
            ca_pem,
        })
    }

    /// True when `other` is this same upstream (one pool, one set of slots), not a copy built
    /// from the same settings.
    pub fn is_same(&self, other: &Upstream) -> bool {
        Arc::ptr_eq(&self.slots, &other.slots)
    }

    /// True when this upstream is what `config` would build now: the same settings, and the
    /// same CA file contents. A reload then keeps it, with its pooled connections, its
    /// exchange slots and its servers' skip state.
    pub fn is_built_from(&self, config: &UpstreamConfig) -> bool {
        if self.config != *config {
            return false;
        }
        match &config.tls.ca_file {
            None => true,
            Some(path) => std::fs::read(path).ok().as_deref() == self.ca_pem.as_deref(),
        }
    }

    /// Waits (at most the queue timeout) for an exchange slot. Callers take it *before* they
    /// spawn anything: a client that leaves while waiting drops the wait and costs nothing
    /// upstream.
    pub async fn acquire(&self) -> Result<UpstreamPermit, UpstreamError> {
        let wait = self.config.queue_timeout;
        match tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(UpstreamPermit(permit)),
            // The semaphore is never closed; treat it like a full queue all the same.
            Ok(Err(_)) | Err(_) => {
                crate::metrics::record_upstream_error("busy");
                Err(UpstreamError::Busy {
                    limit: self.config.max_concurrency,
                    waited: wait,
                })
            }
        }
    }

    /// Exchange slots free now (for tests and stats).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// How long the upstream may take to answer, and to send each part of a body.
    pub fn response_timeout(&self) -> Duration {
        self.config.response_timeout
    }

    /// The authority of requests that name none (HTTP/1.0 without `Host`): the upstream's.
    pub fn default_authority(&self) -> &crate::policy::authority::Authority {
        &self.default_authority
    }

    /// The settings this upstream was built from.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// True while server `index` is being skipped after a failed connection.
    pub fn is_skipped(&self, index: usize) -> bool {
        self.servers
            .get(index)
            .is_some_and(|s| s.down_until.load(Ordering::Relaxed) > self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next server round-robin, passing over those being skipped and those in `tried`.
    /// When every candidate is being skipped, the one whose skip ends first is tried all the
    /// same: an upstream is never refused for want of a server that might answer. Atomics
    /// only: no lock, let alone across I/O.
    fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.servers.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let now = self.now_ms();
        let candidates = (0..n)
            .map(|i| (start + i) % n)
            .filter(|i| !tried.contains(i));
        let mut fallback: Option<(u64, usize)> = None;
        for i in candidates {
            let until = self.servers[i].down_until.load(Ordering::Relaxed);
            if until <= now {
                return Some(i);
            }
            if fallback.is_none_or(|(u, _)| until < u) {
                fallback = Some((until, i));
            }
        }
        fallback.map(|(_, i)| i)
    }

    fn mark_failed(&self, index: usize) {
        if self.servers.len() < 2 {
            // With one server there is nothing to skip to.
            return;
        }
        let until = self.now_ms() + self.config.fail_timeout.as_millis() as u64;
        let server = &self.servers[index];
        if server.down_until.swap(until, Ordering::Relaxed) == 0 {
            tracing::warn!(
                server = %server.authority,
                skipped_for = ?self.config.fail_timeout,
                "upstream server failed a connection; skipping it"
            );
        }
    }

    fn mark_answered(&self, index: usize) {
        let server = &self.servers[index];
        if server.down_until.load(Ordering::Relaxed) != 0
            && server.down_until.swap(0, Ordering::Relaxed) != 0
        {
            tracing::info!(server = %server.authority, "upstream server answers again");
        }
    }

    /// `request` aimed at server `index`: its scheme, authority and base path before the
    /// request's own path.
    fn aim(&self, index: usize, request: &mut Request<Body>) {
        let server = &self.servers[index];
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let target = if server.base_path.is_empty() {
            path.to_string()
        } else {
            format!("{}{}", server.base_path, path)
        };
        *request.uri_mut() = Uri::builder()
            .scheme(server.scheme.clone())
            .authority(server.authority.clone())
            .path_and_query(target)
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"));
    }

    /// Sends a request prepared by [`Upstream::prepare`] and waits for the response headers, within
    /// the response timeout. `_permit` is the slot the caller holds for the whole exchange.
    ///
    /// The server is chosen round-robin. A server that fails to connect is skipped for the
    /// fail timeout; a request without a body (nothing was consumed) is then sent to the next
    /// server, each server at most once. A request with a body is not retried: its body went
    /// with the first attempt.
    pub async fn send(
        &self,
        _permit: &UpstreamPermit,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let replay = http_body::Body::is_end_stream(request.body()).then(|| {
            (
                request.method().clone(),
                request.uri().clone(),
                request.headers().clone(),
            )
        });
        let mut tried: Vec<usize> = Vec::new();
        let mut request = Some(request);
        loop {
            let Some(index) = self.pick(&tried) else {
                unreachable!("pick returns a server while one is untried");
            };
            tried.push(index);
            let mut attempt = match request.take() {
                Some(r) => r,
                None => {
                    let (method, uri, headers) = replay.clone().expect("retried only with a copy");
                    let mut r = Request::new(crate::body::empty());
                    *r.method_mut() = method;
                    *r.uri_mut() = uri;
                    *r.headers_mut() = headers;
                    r
                }
            };
            self.aim(index, &mut attempt);
            let result = self.send_once(attempt).await;
            match &result {
                Ok(_) => self.mark_answered(index),
                Err((_, true)) => self.mark_failed(index),
                Err((_, false)) => {}
            }
            match result {
                Ok(resp) => return Ok(resp),
                Err((e, true)) if replay.is_some() && tried.len() < self.servers.len() => {
                    tracing::debug!(error = %e, "upstream connection failed; trying the next server");
                }
                Err((e, _)) => {
                    crate::metrics::record_upstream_error(match e {
                        UpstreamError::Unreachable { .. } => "unreachable",
                        UpstreamError::Timeout(_) => "timeout",
                        UpstreamError::Busy { .. } => "busy",
                    });
                    return Err(e);
                }
            }
        }
    }

    /// One attempt; the flag says whether the connection itself failed (so the server is to
    /// be skipped and the next one may be tried).
    async fn send_once(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, (UpstreamError, bool)> {
        let timeout = self.config.response_timeout;
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err((UpstreamError::Timeout(timeout), false)),
            Ok(Ok(resp)) => Ok(resp),
            // A connect that timed out is a timeout (504); anything else a broken upstream (502).
            // Classified by the io error kind in the cause chain, not by the message's words.
            Ok(Err(e)) if e.is_connect() && caused_by_timeout(&e) => {
                Err((UpstreamError::Timeout(self.config.connect_timeout), true))
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                Err((
                    UpstreamError::Unreachable {
                        detail: error_chain(&e),
                        source: e,
                    },
                    connect,
                ))
            }
        }
    }

    /// Turns a client's request into the one sent upstream: hop-by-hop fields removed, `Via`
    /// and `X-Forwarded-For` added, and `Host` set to the request's effective `authority`
    /// (whatever `Host` the client sent), so that name-based virtual hosts upstream are asked
    /// for exactly what the response will be keyed under; or to the site's `upstream_host`,
    /// the one name its origin answers to. [`Upstream::send`] aims the target at a server.
    ///
    /// The client's `Content-Length` and `Transfer-Encoding` are never forwarded: hyper frames
    /// the request from `body` itself (its exact size, or chunked), so the framing always
    /// describes the bytes actually sent. `Expect` goes too: the client's expectation was met by
    /// this hop.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &self,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        authority: &crate::policy::authority::Authority,
        version: Version,
        client: Option<SocketAddr>,
        body: Body,
    ) -> Request<Body> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let mut headers = headers.clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(CONTENT_LENGTH);
        headers.remove(TRANSFER_ENCODING);
        headers.remove(EXPECT);
        headers.remove(HOST);
        // HTTP/2 clients send each cookie as a field of its own; on HTTP/1.1 they are one field
        // joined with "; " (RFC 9113 8.2.3), which is what origins read.
        if headers.get_all(COOKIE).iter().nth(1).is_some() {
            let joined: Vec<u8> = headers
                .get_all(COOKIE)
                .iter()
                .map(|v| v.as_bytes())
                .collect::<Vec<_>>()
                .join(&b"; "[..]);
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(COOKIE, v);
            }
        }
        match &self.host {
            Some(host) => {
                headers.insert(HOST, host.clone());
            }
            None => {
                if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                    headers.insert(HOST, v);
                }
            }
        }
        add_via(&mut headers, version);
        if let Some(addr) = client {
            let ip = addr.ip().to_string();
            let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                headers.insert("x-forwarded-for", v);
            }
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        request
    }
}

/// The host of `host[:port]` or `[v6]:port`, without brackets or port.
fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// A connector whose whole connection set-up, TCP connect and TLS handshake together, is bounded
/// by the connect timeout. hyper-rustls bounds no handshake, and a server that accepts TCP and
/// then stalls the handshake must count as a failed connection (skipped, the request retried on
/// the next server), not as a slow response.
#[derive(Clone)]
struct Bounded<C> {
    inner: C,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for Bounded<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connection set-up (TCP and TLS) took over {timeout:?}"),
                )) as BoxError),
            }
        })
    }
}

/// Appends this hop to `Via` (RFC 9110 7.6.3).
pub fn add_via(headers: &mut HeaderMap, version: Version) {
    let protocol = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let hop = format!("{protocol} cachet");
    let value = match headers.get(VIA).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {hop}"),
        None => hop,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(VIA, v);
    }
}

/// A response body that holds the exchange's slot until it ends or is dropped (a client that
/// leaves drops it, and with it the upstream connection and the slot).
pub struct HeldBody<B> {
    body: B,
    permit: Option<UpstreamPermit>,
}

impl<B> HeldBody<B> {
    /// `body`, keeping `permit` for as long as it is read.
    pub fn new(body: B, permit: UpstreamPermit) -> Self {
        HeldBody {
            body,
            permit: Some(permit),
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // The exchange is over: free the slot now, not when hyper drops the body.
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// True when an `io::Error` of kind `TimedOut` is among `e`'s causes (hyper-util's connector
/// reports its connect timeout so).
fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as hyper-util wraps its connector's.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn hosts_lose_their_ports() {
        for (authority, host) in [
            ("origin.internal", "origin.internal"),
            ("origin.internal:8443", "origin.internal"),
            ("[::1]:8443", "::1"),
            ("[::1]", "::1"),
        ] {
            assert_eq!(host_without_port(authority), host);
        }
    }

    #[test]
    fn a_timeout_is_found_by_its_io_kind_anywhere_in_the_chain() {
        let rows = [
            (std::io::ErrorKind::TimedOut, "whatever it says", true),
            (std::io::ErrorKind::ConnectionRefused, "timed out", false),
            (std::io::ErrorKind::Other, "timeout", false),
        ];
        for (kind, text, want) in rows {
            let e = Wrapped(std::io::Error::new(kind, text));
            assert_eq!(caused_by_timeout(&e), want, "{kind:?} {text:?}");
            assert_eq!(error_chain(&e), format!("client error (Connect): {text}"));
        }
    }
}

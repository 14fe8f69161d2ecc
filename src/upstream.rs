//! The upstream client: pooled connections, timeouts, and header hygiene on the way out.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, VIA};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::Body;
use crate::policy::headers::strip_hop_by_hop;

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
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream's base URL (`http://host:port`); its path, if any, is prefixed to every
    /// request path.
    pub url: Uri,
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

/// A pooled HTTP/1.1 client for one upstream.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    /// The authority a request without one (HTTP/1.0 without `Host`) is keyed and sent under.
    default_authority: crate::policy::authority::Authority,
    /// One permit per exchange in flight; see [`UpstreamConfig::max_concurrency`].
    slots: Arc<Semaphore>,
    config: UpstreamConfig,
}

/// The right to run one upstream exchange, held until its response body is done or dropped.
/// [`Upstream::send`] asks for one by reference, so no exchange can skip the bound.
#[derive(Debug)]
pub struct UpstreamPermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.config.url)
            .finish()
    }
}

impl Upstream {
    /// Builds the client. The URL was validated when the configuration was read.
    pub fn new(config: UpstreamConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(256)
            .build(connector);
        let scheme = config.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = config
            .url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("127.0.0.1"));
        let base_path = config.url.path().trim_end_matches('/').to_string();
        let default_authority =
            crate::policy::authority::Authority::parse(authority.as_str(), scheme.as_str())
                .unwrap_or_else(|_| {
                    crate::policy::authority::Authority::parse("localhost", "http")
                        .expect("a valid literal")
                });
        let slots = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        Upstream {
            client,
            scheme,
            authority,
            base_path,
            default_authority,
            slots,
            config,
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

    /// The upstream's `host:port`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends a request prepared by [`Upstream::prepare`] and waits for the response headers, within
    /// the response timeout. `_permit` is the slot the caller holds for the whole exchange.
    pub async fn send(
        &self,
        _permit: &UpstreamPermit,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let timeout = self.config.response_timeout;
        let result = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Ok(resp)) => Ok(resp),
            // A connect that timed out is a timeout (504); anything else a broken upstream (502).
            // Classified by the io error kind in the cause chain, not by the message's words.
            Ok(Err(e)) if e.is_connect() && caused_by_timeout(&e) => {
                Err(UpstreamError::Timeout(self.config.connect_timeout))
            }
            Ok(Err(e)) => Err(UpstreamError::Unreachable {
                detail: error_chain(&e),
                source: e,
            }),
        };
        if let Err(e) = &result {
            crate::metrics::record_upstream_error(match e {
                UpstreamError::Unreachable { .. } => "unreachable",
                UpstreamError::Timeout(_) => "timeout",
                UpstreamError::Busy { .. } => "busy",
            });
        }
        result
    }

    /// Turns a client's request into the one sent upstream: the target rewritten to the upstream,
    /// hop-by-hop fields removed, `Via` and `X-Forwarded-For` added, and `Host` set to the
    /// request's effective `authority` (whatever `Host` the client sent), so that name-based
    /// virtual hosts upstream are asked for exactly what the response will be keyed under.
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
        let target = format!("{}{}", self.base_path, path);
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let mut headers = headers.clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(CONTENT_LENGTH);
        headers.remove(TRANSFER_ENCODING);
        headers.remove(EXPECT);
        headers.remove(HOST);
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(HOST, v);
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

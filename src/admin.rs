//! The admin listener: `/metrics`, `/health`, `/stats` and `/purge`, apart from client traffic.
//!
//! It runs on its own address (`--admin`) so that it can be kept off the public network, and it
//! stays up while the public listener drains at shutdown, answering `/health` with 503 so that a
//! load balancer stops sending traffic. With `--admin-token`, every route but `/health` requires
//! `Authorization: Bearer TOKEN`: health checkers (Docker's HEALTHCHECK, load balancers) rarely
//! carry credentials, and health reveals nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::body::{self, Body};
use crate::metrics::{Levels, RequestCounts, ALL_RESULTS};
use crate::policy::authority::Authority;
use crate::policy::key::cache_key;
pub use crate::policy::purge::PurgeTarget;
use crate::proxy::Proxy;
use crate::proxy::PurgeReport;

/// What the admin routes read and act on.
pub struct AdminState {
    /// The request path, for purges.
    pub proxy: Proxy,
    /// This server's requests by result, for `/stats`.
    pub counts: Arc<RequestCounts>,
    /// Connections, in-flight requests and the store, for `/metrics` and `/stats`.
    pub levels: Levels,
    /// Store capacity in bytes, for `/stats`.
    pub capacity: u64,
    /// Cancelled when the server starts draining; `/health` turns 503.
    pub draining: CancellationToken,
    /// The bearer token required on every route but `/health`.
    pub token: Option<String>,
    /// The process-wide Prometheus recorder, `None` when another recorder was installed first.
    pub prometheus: Option<PrometheusHandle>,
}

/// Serves the admin API on `listener` until `stop` is cancelled.
pub fn spawn(
    listener: TcpListener,
    state: Arc<AdminState>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Histogram samples are kept in buckets that the recorder folds in on upkeep; without a
        // periodic upkeep they would grow between scrapes.
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        loop {
            let (stream, _peer) = tokio::select! {
                _ = stop.cancelled() => break,
                _ = upkeep.tick() => {
                    if let Some(p) = &state.prometheus {
                        p.run_upkeep();
                    }
                    continue;
                }
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let state = Arc::clone(&state);
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "admin connection ended with an error");
                        }
                    }
                    // The admin listener outlives the drain, then goes; a scraper's keep-alive
                    // connection must not hold the process.
                    _ = stop.cancelled() => {}
                }
            });
        }
    })
}

/// Answers one admin request.
pub async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    let (allowed, method_ok) = match path {
        "/health" | "/metrics" | "/stats" => {
            ("GET, HEAD", method == Method::GET || method == Method::HEAD)
        }
        "/purge" => ("POST", method == Method::POST),
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found: the admin API has /health, /metrics, /stats and /purge\n",
            )
        }
    };
    if !method_ok {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} takes {allowed}\n"),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        return resp;
    }
    if path == "/health" {
        return if state.draining.is_cancelled() {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        } else {
            text(StatusCode::OK, "ok\n")
        };
    }
    if let Some(token) = &state.token {
        if !authorized(req.headers().get(AUTHORIZATION), token) {
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                "missing or wrong `Authorization: Bearer` token\n",
            );
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    match path {
        "/metrics" => metrics(state),
        "/stats" => json(StatusCode::OK, &stats(state)),
        _ => match parse_purge_query(req.uri().query().unwrap_or("")) {
            Ok(target) => {
                // A full URL is keyed as a request for it would be (its site's ignored query
                // parameters left out).
                let target = match target {
                    PurgeTarget::Url(url) if url.contains("://") => {
                        PurgeTarget::Url(state.proxy.site_key(&url))
                    }
                    other => other,
                };
                let report = state.proxy.purge(&target).await;
                tracing::info!(?target, purged = report.local, "purge from the admin API");
                let mut body = serde_json::json!({ "purged": report.local });
                if let Some(tier) = shared_report(&report) {
                    body["shared"] = tier;
                }
                json(StatusCode::OK, &body)
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        },
    }
}

fn metrics(state: &AdminState) -> Response<Body> {
    let text = match &state.prometheus {
        Some(handle) => crate::metrics::render(handle, &state.levels),
        None => {
            // Another recorder owns the facade; this server's levels are still ours to show.
            let empty = metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle();
            crate::metrics::render(&empty, &state.levels)
        }
    };
    let mut resp = Response::new(body::full(text));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The `/stats` document.
pub fn stats(state: &AdminState) -> serde_json::Value {
    let counts = &state.counts;
    let mut by_result = serde_json::Map::new();
    for r in ALL_RESULTS {
        by_result.insert(r.as_str().into(), counts.get(r).into());
    }
    let store = &state.levels.store;
    serde_json::json!({
        "backend": store.name(),
        "uptime_seconds": counts.uptime().as_secs_f64(),
        "draining": state.draining.is_cancelled(),
        "hit_ratio": counts.hit_ratio(),
        "requests": counts.total(),
        "results": by_result,
        "store": {
            "bytes": store.weighted_size(),
            "entries": store.entry_count(),
            "evictions": store.evictions(),
            "capacity_bytes": state.capacity,
        },
        "connections": state.levels.connections.get(),
        "in_flight": state.levels.in_flight.get(),
        "sites": sites_report(&state.proxy),
    })
}

/// Each site in service: its hosts, and each upstream server with whether it is being skipped
/// after a failed connection, so an operator can see which servers are out.
pub fn sites_report(proxy: &Proxy) -> serde_json::Value {
    let sites = proxy.sites();
    sites
        .all()
        .iter()
        .map(|site| {
            let upstream = site.upstream();
            let servers: Vec<serde_json::Value> = upstream
                .config()
                .servers
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    serde_json::json!({ "url": url.to_string(), "skipped": upstream.is_skipped(i) })
                })
                .collect();
            serde_json::json!({
                "name": &**site.name(),
                "hosts": site.config().hosts,
                "default": site.config().default,
                "servers": servers,
                "upstream_slots_free": upstream.free_slots(),
            })
        })
        .collect()
}

/// Compares the `Authorization` header with the token without stopping at the first differing
/// byte, so response timing does not reveal how much of a guess was right.
fn authorized(header: Option<&HeaderValue>, token: &str) -> bool {
    let Some(given) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A `/purge` query that does not say what to purge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeQueryError {
    /// None or more than one of `url`, `prefix`, `all`.
    #[error("give exactly one of url=..., prefix=... or all=1")]
    NotExactlyOne,
    /// `all` with a value other than 1 or true.
    #[error("all={0:?}: expected all=1")]
    BadAll(String),
    /// A value that is neither a path nor an http:// URL.
    #[error("{name}={value:?}: expected a path (/a/b) or an http:// URL (http://host/a/b)")]
    BadUrl {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 once decoded.
    #[error("{0:?} is not valid percent-encoded UTF-8")]
    BadEncoding(String),
    /// A parameter this route does not know.
    #[error("unknown parameter {0:?}: expected url, prefix or all")]
    Unknown(String),
}

/// Reads the query of `POST /purge`. Values are percent-decoded once, so a URL with its own
/// query is sent encoded (`url=http%3A%2F%2Fhost%2Fa%3Fb%3D1`, as `curl --data-urlencode` does).
pub fn parse_purge_query(query: &str) -> Result<PurgeTarget, PurgeQueryError> {
    let mut target = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        let next = match name {
            "url" => PurgeTarget::Url(check_url("url", value)?),
            "prefix" => PurgeTarget::Prefix(check_url("prefix", value)?),
            "all" => match value.as_str() {
                "1" | "true" => PurgeTarget::All,
                _ => return Err(PurgeQueryError::BadAll(value)),
            },
            other => return Err(PurgeQueryError::Unknown(other.to_string())),
        };
        if target.replace(next).is_some() {
            return Err(PurgeQueryError::NotExactlyOne);
        }
    }
    target.ok_or(PurgeQueryError::NotExactlyOne)
}

/// A path is kept as given; an absolute URL is turned into the cache key a request for it gets
/// (host lowercased, default port dropped), so that it matches what the store holds.
fn check_url(name: &'static str, value: String) -> Result<String, PurgeQueryError> {
    let bad = || PurgeQueryError::BadUrl {
        name,
        value: value.clone(),
    };
    if value.starts_with('/') {
        return Ok(value);
    }
    let uri: http::Uri = value.parse().map_err(|_| bad())?;
    // https:// names what the TLS listener stored.
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    let authority = Authority::parse(authority.as_str(), scheme).map_err(|_| bad())?;
    Ok(cache_key(scheme, &authority, &uri).as_str().to_string())
}

/// Percent-decodes a query value strictly: every `%` must start two hex digits, and the result
/// must be UTF-8 (a purge names a URL exactly, so a malformed one is refused, not guessed at).
/// `+` stays `+`: the value is a URL, not form data.
fn percent_decode(s: &str) -> Result<String, PurgeQueryError> {
    let bad = || PurgeQueryError::BadEncoding(s.to_string());
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(bad());
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| bad())
}

/// The `shared` member of a purge's answer: what the shared tier removed (it also told every
/// other instance), or why the purge did not reach it; `None` without a shared tier.
pub fn shared_report(report: &PurgeReport) -> Option<serde_json::Value> {
    report.shared.as_ref().map(|r| match r {
        Ok(urls) => serde_json::json!({ "purged_urls": urls }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    })
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(message.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(format!("{value}\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_query_takes_exactly_one_target() {
        assert_eq!(
            parse_purge_query("url=%2Fa%3Fb%3D1"),
            Ok(PurgeTarget::Url("/a?b=1".into()))
        );
        assert_eq!(
            parse_purge_query("url=http%3A%2F%2FExample.COM%3A80%2Fa"),
            Ok(PurgeTarget::Url("http://example.com/a".into()))
        );
        assert_eq!(
            parse_purge_query("prefix=/img/"),
            Ok(PurgeTarget::Prefix("/img/".into()))
        );
        assert_eq!(parse_purge_query("all=1"), Ok(PurgeTarget::All));
        assert_eq!(parse_purge_query(""), Err(PurgeQueryError::NotExactlyOne));
        assert_eq!(
            parse_purge_query("all=1&prefix=/a"),
            Err(PurgeQueryError::NotExactlyOne)
        );
        assert_eq!(
            parse_purge_query("all=yes"),
            Err(PurgeQueryError::BadAll("yes".into()))
        );
        assert!(matches!(
            parse_purge_query("url=ftp://x/a"),
            Err(PurgeQueryError::BadUrl { name: "url", .. })
        ));
        for bad in ["url=%zz", "url=%+f", "url=%2", "url=/a%", "url=%ff%fe"] {
            assert!(
                matches!(parse_purge_query(bad), Err(PurgeQueryError::BadEncoding(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_purge_query("url=/a+b%2Bc"),
            Ok(PurgeTarget::Url("/a+b+c".into())),
            "a URL, not form data: + stays +"
        );
        assert_eq!(
            parse_purge_query("url=https%3A%2F%2FShop.test%3A443%2Fa"),
            Ok(PurgeTarget::Url("https://shop.test/a".into()))
        );
        assert!(matches!(
            parse_purge_query("host=a"),
            Err(PurgeQueryError::Unknown(_))
        ));
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(authorized(Some(&h("Bearer s3cret")), "s3cret"));
        assert!(!authorized(Some(&h("Bearer s3cre")), "s3cret"));
        assert!(!authorized(Some(&h("Bearer s3cretx")), "s3cret"));
        assert!(!authorized(Some(&h("Basic s3cret")), "s3cret"));
        assert!(!authorized(None, "s3cret"));
    }
}

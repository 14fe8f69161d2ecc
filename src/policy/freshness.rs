//! Freshness lifetime, age, and the decision a lookup turns on (RFC 9111 sections 4.2 and 4.2.4,
//! RFC 5861).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::StatusCode;

use super::cache_control::{CacheControl, MaxStale, DELTA_SECONDS_MAX};
use crate::store::CachedResponse;

/// How heuristic freshness is computed for responses without an explicit lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Heuristics {
    /// Fraction of the time since `Last-Modified` that a response stays fresh (RFC 9111 4.2.2
    /// suggests 10%).
    pub fraction: f64,
    /// Upper bound on a heuristic lifetime.
    pub cap: Duration,
}

impl Default for Heuristics {
    fn default() -> Self {
        Heuristics {
            fraction: 0.1,
            cap: Duration::from_secs(86_400),
        }
    }
}

/// A freshness lifetime and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Seconds the response is fresh for, counted from its generation at the origin.
    pub seconds: u64,
    /// True when no explicit lifetime was given and the heuristic was used.
    pub heuristic: bool,
}

/// Status codes that are heuristically cacheable (RFC 9110 15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Parses an HTTP date in any of the three formats RFC 9110 5.6.7 requires recipients to accept.
pub fn http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// The first value of a date header, parsed; `None` when absent or invalid.
pub fn header_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(http_date)
}

/// True when the response states its freshness explicitly: `s-maxage`, `max-age` or `Expires`
/// (an invalid `Expires` counts: it states "already stale").
pub fn has_explicit_freshness(headers: &HeaderMap, cc: &CacheControl) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(EXPIRES)
}

/// The freshness lifetime of a response for a shared cache (RFC 9111 4.2.1), falling back on the
/// heuristic (4.2.2) when the status allows it or the response is `public`. `None` when neither
/// applies.
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    response_time: SystemTime,
    heuristics: &Heuristics,
) -> Option<Lifetime> {
    let explicit = |seconds| Lifetime {
        seconds,
        heuristic: false,
    };
    if let Some(s) = cc.s_maxage {
        return Some(explicit(s));
    }
    if let Some(s) = cc.max_age {
        return Some(explicit(s));
    }
    let date = header_date(headers, DATE).unwrap_or(response_time);
    if let Some(expires) = headers.get(EXPIRES) {
        // An invalid Expires, such as "0", means already expired.
        let seconds = expires
            .to_str()
            .ok()
            .and_then(http_date)
            .and_then(|e| e.duration_since(date).ok())
            .map_or(0, |d| d.as_secs().min(DELTA_SECONDS_MAX));
        return Some(explicit(seconds));
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return None;
    }
    let last_modified = header_date(headers, LAST_MODIFIED)?;
    let since = date.duration_since(last_modified).unwrap_or_default();
    let seconds = (since.as_secs_f64() * heuristics.fraction) as u64;
    Some(Lifetime {
        seconds: seconds.min(heuristics.cap.as_secs()),
        heuristic: true,
    })
}

/// The current age of a stored response at `now` (RFC 9111 4.2.3), in seconds.
pub fn current_age(response: &CachedResponse, now: SystemTime) -> u64 {
    let secs = |d: Result<Duration, _>| d.map_or(0, |d: Duration| d.as_secs());
    let date = header_date(&response.headers, DATE).unwrap_or(response.response_time);
    let apparent_age = secs(response.response_time.duration_since(date));
    let age_value = age_header(&response.headers).unwrap_or(0);
    let response_delay = secs(response.response_time.duration_since(response.request_time));
    let corrected_age_value = age_value.saturating_add(response_delay);
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = secs(now.duration_since(response.response_time));
    corrected_initial_age
        .saturating_add(resident_time)
        .min(DELTA_SECONDS_MAX)
}

/// The `Age` header value, if it is a valid delta-seconds (an invalid one is ignored).
pub fn age_header(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(AGE)?.to_str().ok()?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX)),
    )
}

/// What a lookup may do with a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it; `ttl` seconds of freshness remain (negative when the client accepted staleness
    /// with `max-stale`).
    Fresh {
        /// Remaining freshness in seconds.
        ttl: i64,
    },
    /// Serve it now and refresh it in the background (RFC 5861 `stale-while-revalidate`).
    StaleWhileRevalidate {
        /// How stale it is, as a negative ttl.
        ttl: i64,
    },
    /// Revalidate or refetch before serving. When the upstream fails, the stale response may be
    /// served if `stale_if_error` allows it.
    Revalidate {
        /// Remaining freshness (negative when stale; may be positive for `no-cache`).
        ttl: i64,
        /// True when `stale-if-error` (response or request) covers the current staleness.
        stale_if_error: bool,
    },
}

/// The inputs of [`decide`] that come from the stored response.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The stored response's parsed `Cache-Control`.
    pub cc: &'a CacheControl,
    /// Its freshness lifetime.
    pub lifetime: u64,
    /// Its current age.
    pub age: u64,
}

/// Decides whether a stored response may be served for a request (RFC 9111 4 and 4.2.4,
/// RFC 5861). `request_no_cache` is the result of
/// [`request_no_cache`](super::cache_control::request_no_cache).
pub fn decide(stored: Stored<'_>, request: &CacheControl, request_no_cache: bool) -> Decision {
    let ttl = stored.lifetime as i64 - stored.age as i64;
    let staleness = (-ttl).max(0) as u64;
    // Stale responses must not be served without revalidation by a shared cache when the
    // response says must-revalidate, proxy-revalidate or s-maxage (RFC 9111 5.2.2.2, 5.2.2.8,
    // 5.2.2.10); no-cache forbids serving without revalidation even when fresh (5.2.2.4).
    let no_stale =
        stored.cc.must_revalidate || stored.cc.proxy_revalidate || stored.cc.s_maxage.is_some();
    let stale_if_error = !no_stale
        && !stored.cc.no_cache_all()
        && [stored.cc.stale_if_error, request.stale_if_error]
            .iter()
            .flatten()
            .any(|window| staleness <= *window);
    let revalidate = Decision::Revalidate {
        ttl,
        stale_if_error,
    };
    if stored.cc.no_cache_all() || request_no_cache {
        return revalidate;
    }
    // Request max-age: the client will not accept a response older than this.
    if request.max_age.is_some_and(|max| stored.age > max) {
        return revalidate;
    }
    if ttl > 0 {
        // min-fresh: the client wants at least this much freshness left.
        if request.min_fresh.is_some_and(|min| (ttl as u64) < min) {
            return revalidate;
        }
        return Decision::Fresh { ttl };
    }
    if no_stale {
        return revalidate;
    }
    // max-stale: the client accepts this much staleness (RFC 9111 5.2.1.2).
    match request.max_stale {
        Some(MaxStale::Any) => return Decision::Fresh { ttl },
        Some(MaxStale::Seconds(n)) if staleness <= n => return Decision::Fresh { ttl },
        _ => {}
    }
    if stored
        .cc
        .stale_while_revalidate
        .is_some_and(|window| staleness <= window)
    {
        return Decision::StaleWhileRevalidate { ttl };
    }
    revalidate
}

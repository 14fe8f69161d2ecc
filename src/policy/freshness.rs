//! Freshness lifetime, age, and the decision a lookup turns on (RFC 9111 sections 4.2 and 4.2.4,
//! RFC 5861).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::StatusCode;

use super::cache_control::{CacheControl, MaxStale, DELTA_SECONDS_MAX};
use super::site_rules::DefaultLifetimes;

/// How freshness is assigned to responses without an explicit lifetime: the operator's default
/// lifetimes by status first, then the `Last-Modified` heuristic.
#[derive(Debug, Clone)]
pub struct Heuristics {
    /// Fraction of the time since `Last-Modified` that a response stays fresh (RFC 9111 4.2.2
    /// suggests 10%).
    pub fraction: f64,
    /// Upper bound on a heuristic lifetime.
    pub cap: Duration,
    /// Lifetimes a site gives responses of these statuses that state none (its `cache_valid`);
    /// they take the place of the heuristic, and make a response of a listed status storable
    /// without `Last-Modified`, as nginx's `proxy_cache_valid` does.
    pub by_status: DefaultLifetimes,
}

impl Default for Heuristics {
    fn default() -> Self {
        Heuristics {
            fraction: 0.1,
            cap: Duration::from_secs(86_400),
            by_status: DefaultLifetimes::default(),
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

/// Parses an HTTP date in any of the three formats RFC 9110 5.6.7 requires recipients to accept,
/// matching day names, month names and `GMT` case-insensitively (RFC 9111 4.2: a cache SHOULD).
pub fn http_date(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    httpdate::parse_http_date(value)
        .ok()
        .or_else(|| httpdate::parse_http_date(&canonical_case(value)).ok())
}

/// Writes every word of a date in the case the formats spell it: `Thu`, `Aug`, `Thursday`, and
/// `GMT`.
fn canonical_case(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else if let Some(first) = word.chars().next() {
            out.push(first.to_ascii_uppercase());
            out.push_str(&word[first.len_utf8()..].to_ascii_lowercase());
        }
        word.clear();
    };
    for c in value.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
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
    if headers.contains_key(EXPIRES) {
        // An invalid Expires, such as "0", means already expired (RFC 9111 5.3); so does a list
        // of dates, which is not a valid value for this singleton field.
        let seconds = expires_value(headers)
            .and_then(|e| e.duration_since(date).ok())
            .map_or(0, |d| d.as_secs().min(DELTA_SECONDS_MAX));
        return Some(explicit(seconds));
    }
    if let Some(seconds) = heuristics.by_status.lookup(status) {
        // The operator's lifetime for this status: configured, so not a heuristic.
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

/// The `Expires` date when the response carries exactly one valid one; `None` when it is absent,
/// repeated, or not an HTTP date.
pub fn expires_value(headers: &HeaderMap) -> Option<SystemTime> {
    let mut values = headers.get_all(EXPIRES).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().and_then(http_date)
}

/// What the age of a stored response is computed from: its header fields and when it was asked
/// for and received. A view, so that freshness needs nothing of the store's types.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The response's header fields (`Date`, `Age`).
    pub headers: &'a HeaderMap,
    /// When the request that fetched it was sent.
    pub request_time: SystemTime,
    /// When the response was received.
    pub response_time: SystemTime,
}

/// The current age of a stored response at `now` (RFC 9111 4.2.3), in seconds.
pub fn current_age(response: Received<'_>, now: SystemTime) -> u64 {
    age_at(initial_age(response), response.response_time, now)
}

/// The part of a response's age fixed when it was received (RFC 9111 4.2.3
/// `corrected_initial_age`): from its `Date` and `Age` and the request's round trip. A store
/// computes it once, when it keeps the response, so that a hit parses no date.
pub fn initial_age(response: Received<'_>) -> u64 {
    let secs = |d: Result<Duration, _>| d.map_or(0, |d: Duration| d.as_secs());
    let date = header_date(response.headers, DATE).unwrap_or(response.response_time);
    let apparent_age = secs(response.response_time.duration_since(date));
    let age_value = age_header(response.headers).unwrap_or(0);
    let response_delay = secs(response.response_time.duration_since(response.request_time));
    let corrected_age_value = age_value.saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// The age at `now` of a response received at `response_time` with `initial_age`
/// ([`initial_age`]): that plus the time it has been resident.
pub fn age_at(initial_age: u64, response_time: SystemTime, now: SystemTime) -> u64 {
    let resident_time = now.duration_since(response_time).map_or(0, |d| d.as_secs());
    initial_age
        .saturating_add(resident_time)
        .min(DELTA_SECONDS_MAX)
}

/// The `Age` header value, if it is a valid delta-seconds (RFC 9111 5.1): of a list, only the first
/// member counts; an invalid value is ignored.
pub fn age_header(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(AGE)?.to_str().ok()?;
    let v = text.split(',').next().unwrap_or_default().trim();
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
/// RFC 5861, RFC 8246). `request_no_cache` is the result of
/// [`request_no_cache`](super::cache_control::request_no_cache).
pub fn decide(stored: Stored<'_>, request: &CacheControl, request_no_cache: bool) -> Decision {
    let ttl = stored.lifetime as i64 - stored.age as i64;
    let staleness = (-ttl).max(0) as u64;
    // Stale responses must not be served without revalidation by a shared cache when the
    // response says must-revalidate, proxy-revalidate or s-maxage (RFC 9111 5.2.2.2, 5.2.2.8,
    // 5.2.2.10); no-cache forbids serving without revalidation even when fresh (5.2.2.4).
    let no_stale =
        stored.cc.must_revalidate || stored.cc.proxy_revalidate || stored.cc.s_maxage.is_some();
    // A request's stale-if-error states how much staleness this client accepts on an error, so
    // it bounds the response's (RFC 5861 4). A request's no-cache asks for a validated response:
    // the origin's stale-if-error does not override that, the request's own does.
    let window = match request.stale_if_error {
        Some(w) => Some(w),
        None if request_no_cache => None,
        None => stored.cc.stale_if_error,
    };
    let stale_if_error =
        !no_stale && !stored.cc.no_cache_all() && window.is_some_and(|w| staleness <= w);
    let revalidate = Decision::Revalidate {
        ttl,
        stale_if_error,
    };
    if stored.cc.no_cache_all() || request_no_cache {
        return revalidate;
    }
    // Request max-age: the client will not accept a response older than this. A fresh
    // `immutable` response will not change while fresh (RFC 8246 2), so the reload form
    // `max-age=0` gets it from the store; `no-cache` (a forced reload) still revalidates.
    let immutable_fresh = stored.cc.immutable && ttl > 0;
    if !immutable_fresh && request.max_age.is_some_and(|max| stored.age > max) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    /// Tue, 14 Nov 2023 22:13:20 GMT.
    const T: u64 = 1_700_000_000;

    fn at(offset: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs((T as i64 + offset) as u64)
    }

    fn date(offset: i64) -> String {
        httpdate::fmt_http_date(at(offset))
    }

    fn headers(fields: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn explicit(seconds: u64) -> Option<Lifetime> {
        Some(Lifetime {
            seconds,
            heuristic: false,
        })
    }

    fn heuristic(seconds: u64) -> Option<Lifetime> {
        Some(Lifetime {
            seconds,
            heuristic: true,
        })
    }

    /// Each row: the RFC rule, status, response fields, the freshness lifetime; the response
    /// arrived at `T`.
    #[test]
    fn dates_in_any_case() {
        // RFC 9110 5.6.7 formats; RFC 9111 4.2: names and GMT matched case-insensitively.
        let t = Some(at(0));
        let cases = [
            ("Tue, 14 Nov 2023 22:13:20 GMT", t),
            ("TUE, 14 NOV 2023 22:13:20 GMT", t),
            ("tue, 14 nov 2023 22:13:20 gmt", t),
            ("Tuesday, 14-Nov-23 22:13:20 GMT", t),
            ("TUESDAY, 14-nov-23 22:13:20 gmt", t),
            ("Tue Nov 14 22:13:20 2023", t),
            ("tue nov 14 22:13:20 2023", t),
            ("Tue, 14 Nov 2023 22:13:20 UTC", None),
            ("14 Nov 2023", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(http_date(text), expected, "{text:?}");
        }
    }

    #[test]
    fn lifetime_table() {
        const DAY: i64 = 86_400;
        type Row<'a> = (&'a str, u16, Vec<(&'a str, String)>, Option<Lifetime>);
        let rows: Vec<Row> = vec![
            (
                "9111 4.2.1 max-age",
                200,
                vec![("cache-control", s("max-age=60"))],
                explicit(60),
            ),
            (
                "9111 4.2.1 s-maxage wins over max-age for a shared cache",
                200,
                vec![("cache-control", s("max-age=60, s-maxage=5"))],
                explicit(5),
            ),
            (
                "9111 4.2.1 s-maxage wins over Expires",
                200,
                vec![
                    ("cache-control", s("s-maxage=5")),
                    ("date", date(0)),
                    ("expires", date(100)),
                ],
                explicit(5),
            ),
            (
                "9111 5.3 max-age overrides Expires",
                200,
                vec![
                    ("cache-control", s("max-age=60")),
                    ("date", date(0)),
                    ("expires", date(3600)),
                ],
                explicit(60),
            ),
            (
                "9111 4.2.1 quoted max-age",
                200,
                vec![("cache-control", s("max-age=\"90\""))],
                explicit(90),
            ),
            (
                "9111 4.2.1 invalid max-age: stale despite Expires",
                200,
                vec![
                    ("cache-control", s("max-age=abc")),
                    ("date", date(0)),
                    ("expires", date(3600)),
                ],
                explicit(0),
            ),
            (
                "9111 4.2.1 negative max-age: stale",
                200,
                vec![("cache-control", s("max-age=-1"))],
                explicit(0),
            ),
            (
                "9111 4.2.1 Expires minus Date (IMF-fixdate)",
                200,
                vec![("date", date(0)), ("expires", date(3600))],
                explicit(3600),
            ),
            (
                "9110 5.6.7 Expires in RFC 850 format",
                200,
                vec![
                    ("date", date(0)),
                    ("expires", s("Tuesday, 14-Nov-23 23:13:20 GMT")),
                ],
                explicit(3600),
            ),
            (
                "9110 5.6.7 Expires in asctime format",
                200,
                vec![
                    ("date", date(0)),
                    ("expires", s("Tue Nov 14 23:13:20 2023")),
                ],
                explicit(3600),
            ),
            (
                "9111 4.2.1 Expires before Date: stale",
                200,
                vec![("date", date(0)), ("expires", date(-60))],
                explicit(0),
            ),
            (
                "9111 5.3 Expires \"0\": already expired",
                200,
                vec![("expires", s("0"))],
                explicit(0),
            ),
            (
                "9111 5.3 Expires garbage: already expired",
                200,
                vec![("date", date(0)), ("expires", s("tomorrow"))],
                explicit(0),
            ),
            (
                "9111 5.3 Expires repeated: invalid, expired",
                200,
                vec![
                    ("date", date(0)),
                    ("expires", date(3600)),
                    ("expires", date(7200)),
                ],
                explicit(0),
            ),
            (
                "9111 5.3 invalid Expires blocks the heuristic",
                200,
                vec![("expires", s("-1")), ("last-modified", date(-10 * DAY))],
                explicit(0),
            ),
            (
                "9111 4.2.1 Date absent: response time stands in",
                200,
                vec![("expires", date(100))],
                explicit(100),
            ),
            (
                "9111 4.2.1 Date invalid: response time stands in",
                200,
                vec![("date", s("yesterday")), ("expires", date(100))],
                explicit(100),
            ),
            (
                "9111 4.2.2 heuristic 10% of Date - Last-Modified",
                200,
                vec![("date", date(0)), ("last-modified", date(-5 * DAY))],
                heuristic(43_200),
            ),
            (
                "9111 4.2.2 heuristic capped at one day",
                200,
                vec![("date", date(0)), ("last-modified", date(-20 * DAY))],
                heuristic(86_400),
            ),
            (
                "9111 4.2.2 heuristic without Date uses response time",
                200,
                vec![("last-modified", date(-1000))],
                heuristic(100),
            ),
            (
                "9111 4.2.2 Last-Modified after Date: zero",
                200,
                vec![("date", date(0)), ("last-modified", date(50))],
                heuristic(0),
            ),
            (
                "9111 4.2.2 no Last-Modified: no lifetime",
                200,
                vec![("date", date(0))],
                None,
            ),
            (
                "9111 4.2.2 invalid Last-Modified: no lifetime",
                200,
                vec![("last-modified", s("last week"))],
                None,
            ),
            (
                "9110 15.1 404 is heuristically cacheable",
                404,
                vec![("last-modified", date(-1000))],
                heuristic(100),
            ),
            (
                "9110 15.1 301 is heuristically cacheable",
                301,
                vec![("last-modified", date(-1000))],
                heuristic(100),
            ),
            (
                "9110 15.1 302 is not heuristically cacheable",
                302,
                vec![("last-modified", date(-1000))],
                None,
            ),
            (
                "9110 15.1 500 is not heuristically cacheable",
                500,
                vec![("last-modified", date(-1000))],
                None,
            ),
            (
                "9111 4.2.2 public allows the heuristic for 302",
                302,
                vec![
                    ("cache-control", s("public")),
                    ("last-modified", date(-1000)),
                ],
                heuristic(100),
            ),
            (
                "9111 4.2.1 302 with explicit max-age",
                302,
                vec![("cache-control", s("max-age=10"))],
                explicit(10),
            ),
            (
                "9111 4.2.2 no-cache does not give a lifetime",
                200,
                vec![("cache-control", s("no-cache"))],
                None,
            ),
        ];
        for (rule, status, fields, want) in rows {
            let h = headers(&fields);
            let cc = CacheControl::from_headers(&h);
            let got = freshness_lifetime(
                StatusCode::from_u16(status).unwrap(),
                &h,
                &cc,
                at(0),
                &Heuristics::default(),
            );
            assert_eq!(got, want, "{rule}");
        }
    }

    #[test]
    fn heuristic_settings() {
        // 9111 4.2.2: the fraction and the cap are the cache's to choose.
        let h = headers(&[("date", date(0)), ("last-modified", date(-1000))]);
        let cc = CacheControl::default();
        let custom = Heuristics {
            fraction: 0.5,
            cap: Duration::from_secs(300),
            ..Heuristics::default()
        };
        let got = freshness_lifetime(StatusCode::OK, &h, &cc, at(0), &custom);
        assert_eq!(got, heuristic(300));
    }

    #[test]
    fn a_default_lifetime_by_status_replaces_the_heuristic_but_not_explicit_freshness() {
        use crate::policy::site_rules::{DefaultLifetimes, StatusMatch};
        let rules = Heuristics {
            by_status: DefaultLifetimes::new(vec![
                (StatusMatch::Code(200), 600),
                (StatusMatch::Code(302), 30),
            ]),
            ..Heuristics::default()
        };
        let explicit = |seconds| {
            Some(Lifetime {
                seconds,
                heuristic: false,
            })
        };
        let rows = [
            ("no freshness, 200 listed", 200, vec![], explicit(600)),
            (
                "302 listed, not heuristically cacheable",
                302,
                vec![],
                explicit(30),
            ),
            (
                "Last-Modified: the operator's lifetime, not 10%",
                200,
                vec![("date", date(0)), ("last-modified", date(-100_000))],
                explicit(600),
            ),
            (
                "max-age wins",
                200,
                vec![("cache-control", s("max-age=5"))],
                explicit(5),
            ),
            (
                "s-maxage wins",
                302,
                vec![("cache-control", s("s-maxage=7"))],
                explicit(7),
            ),
            ("404 not listed, no heuristic", 404, vec![], None),
        ];
        for (rule, status, fields, want) in rows {
            let h = headers(&fields);
            let cc = CacheControl::from_headers(&h);
            let got = freshness_lifetime(
                StatusCode::from_u16(status).unwrap(),
                &h,
                &cc,
                at(0),
                &rules,
            );
            assert_eq!(got, want, "{rule}");
        }
    }

    /// Each row: status, whether RFC 9110 15.1 lists it as heuristically cacheable.
    #[test]
    fn heuristically_cacheable_table() {
        let rows = [
            (200, true),
            (203, true),
            (204, true),
            (206, true),
            (300, true),
            (301, true),
            (302, false),
            (303, false),
            (307, false),
            (308, true),
            (400, false),
            (404, true),
            (405, true),
            (410, true),
            (414, true),
            (451, false),
            (500, false),
            (501, true),
            (503, false),
        ];
        for (status, want) in rows {
            let got = heuristically_cacheable(StatusCode::from_u16(status).unwrap());
            assert_eq!(got, want, "9110 15.1: {status}");
        }
    }

    /// Each row: the RFC rule, response fields, request time, response time, now (offsets from
    /// `T`), the current age.
    #[test]
    fn current_age_table() {
        type Row<'a> = (&'a str, Vec<(&'a str, String)>, i64, i64, i64, u64);
        let rows: Vec<Row> = vec![
            ("9111 4.2.3 resident time only", vec![], 0, 0, 10, 10),
            (
                "9111 4.2.3 apparent age from Date",
                vec![("date", date(-5))],
                0,
                0,
                10,
                15,
            ),
            (
                "9111 4.2.3 Age plus response delay",
                vec![("date", date(0)), ("age", s("30"))],
                -2,
                0,
                10,
                42,
            ),
            (
                "9111 4.2.3 apparent age beats a smaller corrected Age",
                vec![("date", date(-20)), ("age", s("3"))],
                0,
                0,
                0,
                20,
            ),
            (
                "9111 4.2.3 response delay counts without Age",
                vec![("date", date(0))],
                -4,
                0,
                0,
                4,
            ),
            (
                "9111 4.2.3 Date in the future: apparent age 0",
                vec![("date", date(300))],
                0,
                0,
                5,
                5,
            ),
            (
                "9111 4.2.3 Date absent: apparent age 0",
                vec![("age", s("7"))],
                0,
                0,
                1,
                8,
            ),
            (
                "9111 4.2.3 Date invalid: apparent age 0",
                vec![("date", s("now"))],
                0,
                0,
                1,
                1,
            ),
            (
                "9111 5.1 invalid Age ignored",
                vec![("age", s("abc"))],
                0,
                0,
                1,
                1,
            ),
            (
                "9111 5.1 negative Age ignored",
                vec![("age", s("-5"))],
                0,
                0,
                1,
                1,
            ),
            (
                "9111 5.1 empty Age ignored",
                vec![("age", s(""))],
                0,
                0,
                1,
                1,
            ),
            (
                "9111 5.1 Age list: first member",
                vec![("age", s("10, 20"))],
                0,
                0,
                0,
                10,
            ),
            (
                "9111 5.1 Age with spaces",
                vec![("age", s(" 12 "))],
                0,
                0,
                0,
                12,
            ),
            (
                "9111 1.2.2 Age overflow clamps",
                vec![("age", s("99999999999999999999"))],
                0,
                0,
                0,
                DELTA_SECONDS_MAX,
            ),
            (
                "9111 4.2.3 clock before response time: resident 0",
                vec![],
                0,
                0,
                -10,
                0,
            ),
        ];
        for (rule, fields, req, resp, now, want) in rows {
            let h = headers(&fields);
            let r = Received {
                headers: &h,
                request_time: at(req),
                response_time: at(resp),
            };
            assert_eq!(current_age(r, at(now)), want, "{rule}");
        }
    }

    fn fresh(ttl: i64) -> Decision {
        Decision::Fresh { ttl }
    }

    fn revalidate(ttl: i64, stale_if_error: bool) -> Decision {
        Decision::Revalidate {
            ttl,
            stale_if_error,
        }
    }

    fn swr(ttl: i64) -> Decision {
        Decision::StaleWhileRevalidate { ttl }
    }

    /// Each row: the RFC rule, the stored response's Cache-Control, lifetime, age, the request's
    /// Cache-Control, whether the request is no-cache, the decision.
    #[test]
    fn decide_table() {
        let rows: Vec<(&str, &str, u64, u64, &str, bool, Decision)> = vec![
            (
                "9111 4.2 fresh",
                "max-age=100",
                100,
                10,
                "",
                false,
                fresh(90),
            ),
            (
                "9111 4.2 lifetime == age is stale",
                "max-age=100",
                100,
                100,
                "",
                false,
                revalidate(0, false),
            ),
            (
                "9111 4.2 stale",
                "max-age=100",
                100,
                150,
                "",
                false,
                revalidate(-50, false),
            ),
            (
                "9111 4.2.1 invalid max-age: stale at once",
                "max-age=abc",
                0,
                0,
                "",
                false,
                revalidate(0, false),
            ),
            (
                "9111 5.2.2.4 no-cache revalidates while fresh",
                "max-age=100, no-cache",
                100,
                1,
                "",
                false,
                revalidate(99, false),
            ),
            (
                "9111 5.2.2.4 no-cache with field names serves fresh",
                "max-age=100, no-cache=\"set-cookie\"",
                100,
                1,
                "",
                false,
                fresh(99),
            ),
            (
                "9111 5.2.1.4 request no-cache",
                "max-age=100",
                100,
                1,
                "",
                true,
                revalidate(99, false),
            ),
            (
                "9111 5.2.1.1 request max-age exceeded",
                "max-age=100",
                100,
                10,
                "max-age=5",
                false,
                revalidate(90, false),
            ),
            (
                "9111 5.2.1.1 request max-age equal to age is fine",
                "max-age=100",
                100,
                10,
                "max-age=10",
                false,
                fresh(90),
            ),
            (
                "9111 5.2.1.1 request max-age=0",
                "max-age=100",
                100,
                1,
                "max-age=0",
                false,
                revalidate(99, false),
            ),
            (
                "8246 2 immutable fresh ignores reload max-age=0",
                "max-age=100, immutable",
                100,
                1,
                "max-age=0",
                false,
                fresh(99),
            ),
            (
                "8246 2 immutable fresh still honours no-cache",
                "max-age=100, immutable",
                100,
                1,
                "",
                true,
                revalidate(99, false),
            ),
            (
                "8246 2 immutable stale: max-age applies",
                "max-age=100, immutable",
                100,
                150,
                "max-age=0, max-stale",
                false,
                revalidate(-50, false),
            ),
            (
                "9111 5.2.1.3 min-fresh not met",
                "max-age=100",
                100,
                60,
                "min-fresh=50",
                false,
                revalidate(40, false),
            ),
            (
                "9111 5.2.1.3 min-fresh met exactly",
                "max-age=100",
                100,
                60,
                "min-fresh=40",
                false,
                fresh(40),
            ),
            (
                "9111 5.2.1.2 max-stale without value",
                "max-age=100",
                100,
                150,
                "max-stale",
                false,
                fresh(-50),
            ),
            (
                "9111 5.2.1.2 max-stale=N covers",
                "max-age=100",
                100,
                105,
                "max-stale=10",
                false,
                fresh(-5),
            ),
            (
                "9111 5.2.1.2 max-stale=N too small",
                "max-age=100",
                100,
                120,
                "max-stale=10",
                false,
                revalidate(-20, false),
            ),
            (
                "9111 5.2.2.2 must-revalidate beats max-stale",
                "max-age=100, must-revalidate",
                100,
                150,
                "max-stale",
                false,
                revalidate(-50, false),
            ),
            (
                "9111 5.2.2.8 proxy-revalidate beats max-stale",
                "max-age=100, proxy-revalidate",
                100,
                150,
                "max-stale",
                false,
                revalidate(-50, false),
            ),
            (
                "9111 5.2.2.10 s-maxage beats max-stale",
                "s-maxage=100",
                100,
                150,
                "max-stale",
                false,
                revalidate(-50, false),
            ),
            (
                "5861 3 stale-while-revalidate within window",
                "max-age=100, stale-while-revalidate=30",
                100,
                110,
                "",
                false,
                swr(-10),
            ),
            (
                "5861 3 stale-while-revalidate at window edge",
                "max-age=100, stale-while-revalidate=30",
                100,
                130,
                "",
                false,
                swr(-30),
            ),
            (
                "5861 3 stale-while-revalidate past window",
                "max-age=100, stale-while-revalidate=30",
                100,
                131,
                "",
                false,
                revalidate(-31, false),
            ),
            (
                "9111 4.2.4 must-revalidate forbids stale-while-revalidate",
                "max-age=100, must-revalidate, stale-while-revalidate=30",
                100,
                110,
                "",
                false,
                revalidate(-10, false),
            ),
            (
                "9111 4.2.4 s-maxage forbids stale-while-revalidate",
                "s-maxage=100, stale-while-revalidate=30",
                100,
                110,
                "",
                false,
                revalidate(-10, false),
            ),
            (
                "9111 4.2.4 no-cache forbids stale-while-revalidate",
                "max-age=100, no-cache, stale-while-revalidate=30",
                100,
                110,
                "",
                false,
                revalidate(-10, false),
            ),
            (
                "9111 5.2.1.1 request max-age forbids stale-while-revalidate",
                "max-age=100, stale-while-revalidate=30",
                100,
                110,
                "max-age=50",
                false,
                revalidate(-10, false),
            ),
            (
                "5861 4 response stale-if-error within window",
                "max-age=100, stale-if-error=60",
                100,
                130,
                "",
                false,
                revalidate(-30, true),
            ),
            (
                "5861 4 response stale-if-error past window",
                "max-age=100, stale-if-error=60",
                100,
                170,
                "",
                false,
                revalidate(-70, false),
            ),
            (
                "5861 4 request stale-if-error",
                "max-age=100",
                100,
                130,
                "stale-if-error=60",
                false,
                revalidate(-30, true),
            ),
            (
                "5861 4 the request's window wins: wider",
                "max-age=100, stale-if-error=10",
                100,
                130,
                "stale-if-error=60",
                false,
                revalidate(-30, true),
            ),
            (
                "5861 4 the request's window wins: narrower",
                "max-age=100, stale-if-error=60",
                100,
                130,
                "stale-if-error=1",
                false,
                revalidate(-30, false),
            ),
            (
                "9111 4.2.4 must-revalidate forbids stale-if-error",
                "max-age=100, must-revalidate, stale-if-error=60",
                100,
                130,
                "",
                false,
                revalidate(-30, false),
            ),
            (
                "9111 4.2.4 proxy-revalidate forbids stale-if-error",
                "max-age=100, proxy-revalidate",
                100,
                130,
                "stale-if-error=60",
                false,
                revalidate(-30, false),
            ),
            (
                "9111 4.2.4 no-cache forbids stale-if-error",
                "max-age=100, no-cache",
                100,
                130,
                "stale-if-error=60",
                false,
                revalidate(-30, false),
            ),
            (
                "9111 5.2.1.4 request no-cache overrides response stale-if-error",
                "max-age=100, stale-if-error=60",
                100,
                130,
                "",
                true,
                revalidate(-30, false),
            ),
            (
                "5861 4 request no-cache with its own stale-if-error",
                "max-age=100",
                100,
                130,
                "no-cache, stale-if-error=60",
                true,
                revalidate(-30, true),
            ),
            (
                "5861 4 stale-if-error covers a fresh response being revalidated",
                "max-age=100, stale-if-error=0",
                100,
                10,
                "max-age=0",
                false,
                revalidate(90, true),
            ),
        ];
        for (rule, stored_cc, lifetime, age, req_cc, no_cache, want) in rows {
            let cc = CacheControl::parse(stored_cc);
            let req = CacheControl::parse(req_cc);
            let got = decide(
                Stored {
                    cc: &cc,
                    lifetime,
                    age,
                },
                &req,
                no_cache,
            );
            assert_eq!(got, want, "{rule}");
        }
    }

    /// Each row: the RFC rule, the Expires lines, the date read.
    #[test]
    fn expires_value_table() {
        let rows: Vec<(&str, Vec<&str>, Option<SystemTime>)> = vec![
            (
                "9110 5.6.7 IMF-fixdate",
                vec!["Tue, 14 Nov 2023 22:13:20 GMT"],
                Some(at(0)),
            ),
            (
                "9110 5.6.7 RFC 850",
                vec!["Tuesday, 14-Nov-23 22:13:20 GMT"],
                Some(at(0)),
            ),
            (
                "9110 5.6.7 asctime",
                vec!["Tue Nov 14 22:13:20 2023"],
                Some(at(0)),
            ),
            ("9111 5.3 \"0\"", vec!["0"], None),
            (
                "9111 5.3 two lines",
                vec![
                    "Tue, 14 Nov 2023 22:13:20 GMT",
                    "Tue, 14 Nov 2023 22:13:20 GMT",
                ],
                None,
            ),
            ("9111 5.3 absent", vec![], None),
        ];
        for (rule, lines, want) in rows {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(EXPIRES, HeaderValue::from_str(l).unwrap());
            }
            assert_eq!(expires_value(&h), want, "{rule}");
        }
    }
}

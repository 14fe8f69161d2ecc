//! `Cache-Control` parsing (RFC 9111 section 5.2), robust to what real traffic sends.
//!
//! Names are case-insensitive; values may be tokens or quoted strings; several header lines are
//! combined as one list (RFC 9110 5.3). When a directive repeats or conflicts, the most restrictive
//! reading wins: the smallest age, and an invalid age value counts as zero (RFC 9111 4.2.1: a cache
//! that finds an invalid freshness value treats the response as stale). Unknown extensions are
//! ignored.

use http::header::{HeaderMap, CACHE_CONTROL, PRAGMA};

/// The largest delta-seconds value kept; RFC 9111 1.2.2 says larger values are taken as this one.
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// A directive that may stand alone or name header fields (`no-cache`, `private`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldScope {
    /// The unqualified form: applies to the whole response.
    All,
    /// The qualified form: applies to the named fields only (lowercase names).
    Fields(Vec<String>),
}

impl FieldScope {
    fn merge(self, other: FieldScope) -> FieldScope {
        match (self, other) {
            (FieldScope::Fields(mut a), FieldScope::Fields(b)) => {
                a.extend(b);
                FieldScope::Fields(a)
            }
            _ => FieldScope::All,
        }
    }
}

/// `max-stale` in a request: any staleness, or up to N seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` with no value.
    Any,
    /// `max-stale=N`.
    Seconds(u64),
}

/// The parsed directives of one message's `Cache-Control` lines. Request and response directives
/// share the type; each side reads the fields that apply to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age` (both sides). An invalid value is stored as 0.
    pub max_age: Option<u64>,
    /// `s-maxage` (response).
    pub s_maxage: Option<u64>,
    /// `max-stale` (request).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh` (request).
    pub min_fresh: Option<u64>,
    /// `no-cache`, with or without field names.
    pub no_cache: Option<FieldScope>,
    /// `no-store`.
    pub no_store: bool,
    /// `private`, with or without field names (response).
    pub private: Option<FieldScope>,
    /// `public` (response).
    pub public: bool,
    /// `must-revalidate` (response).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (response).
    pub proxy_revalidate: bool,
    /// `must-understand` (response).
    pub must_understand: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `immutable` (RFC 8246, response).
    pub immutable: bool,
    /// `only-if-cached` (request).
    pub only_if_cached: bool,
    /// `stale-while-revalidate=N` (RFC 5861, response).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861, both sides).
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers` as one list. Lines that are not visible
    /// ASCII are skipped rather than guessed at.
    pub fn from_headers(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            if let Ok(text) = value.to_str() {
                cc.add_list(text);
            }
        }
        cc
    }

    /// Parses one header value.
    pub fn parse(text: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        cc.add_list(text);
        cc
    }

    /// True when the headers carry any `Cache-Control` line at all.
    pub fn present(headers: &HeaderMap) -> bool {
        headers.contains_key(CACHE_CONTROL)
    }

    fn add_list(&mut self, text: &str) {
        for (name, value) in split_directives(text) {
            self.add(&name, value.as_deref());
        }
    }

    fn add(&mut self, name: &str, value: Option<&str>) {
        match name {
            "max-age" => self.max_age = min_opt(self.max_age, delta_seconds(value)),
            "s-maxage" => self.s_maxage = min_opt(self.s_maxage, delta_seconds(value)),
            "min-fresh" => {
                // The larger demand is the more restrictive one for min-fresh.
                let v = delta_seconds(value);
                self.min_fresh = Some(self.min_fresh.map_or(v, |old| old.max(v)));
            }
            "max-stale" => {
                let v = match value {
                    None => MaxStale::Any,
                    Some(_) => MaxStale::Seconds(delta_seconds(value)),
                };
                self.max_stale = Some(match (self.max_stale, v) {
                    (Some(MaxStale::Seconds(a)), MaxStale::Seconds(b)) => {
                        MaxStale::Seconds(a.min(b))
                    }
                    (Some(MaxStale::Seconds(a)), MaxStale::Any) => MaxStale::Seconds(a),
                    (_, v) => v,
                });
            }
            "no-cache" => {
                let scope = field_scope(value);
                self.no_cache = Some(match self.no_cache.take() {
                    Some(old) => old.merge(scope),
                    None => scope,
                });
            }
            "private" => {
                let scope = field_scope(value);
                self.private = Some(match self.private.take() {
                    Some(old) => old.merge(scope),
                    None => scope,
                });
            }
            "no-store" => self.no_store = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "no-transform" => self.no_transform = true,
            "immutable" => self.immutable = true,
            "only-if-cached" => self.only_if_cached = true,
            "stale-while-revalidate" => {
                self.stale_while_revalidate =
                    min_opt(self.stale_while_revalidate, delta_seconds(value))
            }
            "stale-if-error" => {
                self.stale_if_error = min_opt(self.stale_if_error, delta_seconds(value))
            }
            _ => {}
        }
    }

    /// True when the unqualified `no-cache` is present.
    pub fn no_cache_all(&self) -> bool {
        matches!(self.no_cache, Some(FieldScope::All))
    }

    /// True when the unqualified `private` is present.
    pub fn private_all(&self) -> bool {
        matches!(self.private, Some(FieldScope::All))
    }
}

/// Whether a request asks the cache not to answer from storage without revalidating:
/// `Cache-Control: no-cache`, or `Pragma: no-cache` when there is no `Cache-Control` at all
/// (RFC 9111 5.4).
pub fn request_no_cache(headers: &HeaderMap, cc: &CacheControl) -> bool {
    if CacheControl::present(headers) {
        return cc.no_cache.is_some();
    }
    headers.get_all(PRAGMA).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
    })
}

fn min_opt(old: Option<u64>, new: u64) -> Option<u64> {
    Some(old.map_or(new, |o| o.min(new)))
}

/// Parses a delta-seconds value. Missing, negative, fractional or otherwise invalid values give 0,
/// the most restrictive reading; values beyond [`DELTA_SECONDS_MAX`] are clamped to it.
pub fn delta_seconds(value: Option<&str>) -> u64 {
    let Some(v) = value else { return 0 };
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    // All digits: only overflow can fail, and an overflowing value is "very large".
    v.parse::<u64>()
        .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX))
}

fn field_scope(value: Option<&str>) -> FieldScope {
    match value {
        None => FieldScope::All,
        Some(v) => {
            let fields: Vec<String> = v
                .split(',')
                .map(|f| f.trim().to_ascii_lowercase())
                .filter(|f| !f.is_empty())
                .collect();
            if fields.is_empty() {
                FieldScope::All
            } else {
                FieldScope::Fields(fields)
            }
        }
    }
}

/// Splits a directive list on commas outside quoted strings, lowercasing names and unquoting
/// values (`\x` escapes become `x`).
pub fn split_directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // name
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ',' || c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut value = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                v.push(e);
                            }
                        }
                        '"' => break,
                        c => v.push(c),
                    }
                }
                // Skip anything between the closing quote and the next comma.
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v = v.trim().to_string();
            }
            value = Some(v);
        }
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() {
            out.push((name, value));
        }
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    out
}

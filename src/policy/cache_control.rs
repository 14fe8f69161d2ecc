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
    /// Parses every `Cache-Control` line of `headers` as one list. Bytes outside ASCII (legal
    /// only inside quoted extension values) are read as U+FFFD, so the directives beside them
    /// still count: a `no-store` is never lost to an odd byte elsewhere on its line.
    pub fn from_headers(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            cc.add_list(&String::from_utf8_lossy(value.as_bytes()));
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
            // RFC 9111 5.2: `token [ "=" ( token / quoted-string ) ]`, no whitespace around the
            // `=`. A directive written with some is malformed, and its value is taken as empty:
            // the most restrictive reading (an age of 0, every field named).
            let spaced = name.ends_with([' ', '\t'])
                || chars.peek().is_some_and(|c| *c == ' ' || *c == '\t');
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
            value = Some(if spaced { String::new() } else { v });
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(cc: &[&str], pragma: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in cc {
            h.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        for v in pragma {
            h.append(PRAGMA, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn fields(names: &[&str]) -> Option<FieldScope> {
        Some(FieldScope::Fields(
            names.iter().map(|s| s.to_string()).collect(),
        ))
    }

    /// Each row: the RFC rule checked, the `Cache-Control` lines, the parsed result.
    #[test]
    fn parse_table() {
        let d = CacheControl::default;
        let rows: Vec<(&str, Vec<&str>, CacheControl)> = vec![
            (
                "9111 5.2.2.1 max-age token",
                vec!["max-age=60"],
                CacheControl {
                    max_age: Some(60),
                    ..d()
                },
            ),
            (
                "9111 5.2 quoted argument accepted",
                vec!["max-age=\"60\""],
                CacheControl {
                    max_age: Some(60),
                    ..d()
                },
            ),
            (
                "9111 5.2 names case-insensitive",
                vec!["Max-Age=60, NO-STORE"],
                CacheControl {
                    max_age: Some(60),
                    no_store: true,
                    ..d()
                },
            ),
            (
                "9111 5.2 OWS around list members",
                vec!["  public ,\tmax-age=5  "],
                CacheControl {
                    public: true,
                    max_age: Some(5),
                    ..d()
                },
            ),
            (
                "9111 5.2 whitespace around '=' is malformed: stale (4.2.1)",
                vec!["max-age = 7"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 5.2 whitespace before '=' is malformed",
                vec!["max-age =100"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 5.2 whitespace after '=' is malformed",
                vec!["max-age= 100"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 invalid max-age (letters) is stale",
                vec!["max-age=abc"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 negative max-age is stale",
                vec!["max-age=-1"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 fractional max-age is stale",
                vec!["max-age=1.5"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 max-age without value is stale",
                vec!["max-age"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 empty max-age is stale",
                vec!["max-age="],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 duplicate max-age: smallest wins",
                vec!["max-age=60, max-age=10"],
                CacheControl {
                    max_age: Some(10),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 duplicate with one invalid: stale",
                vec!["max-age=60", "max-age=x"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
            (
                "9111 1.2.2 delta-seconds overflow clamps",
                vec!["max-age=99999999999999999999999"],
                CacheControl {
                    max_age: Some(DELTA_SECONDS_MAX),
                    ..d()
                },
            ),
            (
                "9111 1.2.2 delta-seconds above 2^31 clamps",
                vec!["max-age=4294967296"],
                CacheControl {
                    max_age: Some(DELTA_SECONDS_MAX),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.10 s-maxage",
                vec!["s-maxage=30, max-age=60"],
                CacheControl {
                    s_maxage: Some(30),
                    max_age: Some(60),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.10 invalid s-maxage is 0",
                vec!["s-maxage=soon"],
                CacheControl {
                    s_maxage: Some(0),
                    ..d()
                },
            ),
            (
                "9110 5.3 several lines combine",
                vec!["max-age=60", "must-revalidate", "public"],
                CacheControl {
                    max_age: Some(60),
                    must_revalidate: true,
                    public: true,
                    ..d()
                },
            ),
            (
                "9111 5.2.2.5 no-store",
                vec!["no-store"],
                CacheControl {
                    no_store: true,
                    ..d()
                },
            ),
            (
                "9111 5.2.2.4 no-cache unqualified",
                vec!["no-cache"],
                CacheControl {
                    no_cache: Some(FieldScope::All),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.4 no-cache with field names",
                vec!["no-cache=\"Set-Cookie, X-Foo\""],
                CacheControl {
                    no_cache: fields(&["set-cookie", "x-foo"]),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.4 no-cache token field name",
                vec!["no-cache=set-cookie"],
                CacheControl {
                    no_cache: fields(&["set-cookie"]),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 no-cache both forms: unqualified wins",
                vec!["no-cache=\"a\", no-cache"],
                CacheControl {
                    no_cache: Some(FieldScope::All),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.4 no-cache field lists merge",
                vec!["no-cache=\"a\"", "no-cache=\"b\""],
                CacheControl {
                    no_cache: fields(&["a", "b"]),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.7 private unqualified",
                vec!["private"],
                CacheControl {
                    private: Some(FieldScope::All),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.7 private with field names",
                vec!["private=\"Authorization-Info\""],
                CacheControl {
                    private: fields(&["authorization-info"]),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.7 private empty list reads as unqualified",
                vec!["private=\"\""],
                CacheControl {
                    private: Some(FieldScope::All),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.9 public",
                vec!["public"],
                CacheControl {
                    public: true,
                    ..d()
                },
            ),
            (
                "9111 4.2.1 public and private conflict both kept",
                vec!["public, private"],
                CacheControl {
                    public: true,
                    private: Some(FieldScope::All),
                    ..d()
                },
            ),
            (
                "9111 5.2.2.2 must-revalidate",
                vec!["must-revalidate"],
                CacheControl {
                    must_revalidate: true,
                    ..d()
                },
            ),
            (
                "9111 5.2.2.8 proxy-revalidate",
                vec!["proxy-revalidate"],
                CacheControl {
                    proxy_revalidate: true,
                    ..d()
                },
            ),
            (
                "9111 5.2.2.3 must-understand",
                vec!["must-understand, no-store"],
                CacheControl {
                    must_understand: true,
                    no_store: true,
                    ..d()
                },
            ),
            (
                "9111 5.2.2.6 no-transform",
                vec!["no-transform"],
                CacheControl {
                    no_transform: true,
                    ..d()
                },
            ),
            (
                "8246 2 immutable",
                vec!["max-age=31536000, immutable"],
                CacheControl {
                    max_age: Some(31_536_000),
                    immutable: true,
                    ..d()
                },
            ),
            (
                "9111 5.2.1.7 only-if-cached",
                vec!["only-if-cached"],
                CacheControl {
                    only_if_cached: true,
                    ..d()
                },
            ),
            (
                "9111 5.2.1.2 max-stale without value",
                vec!["max-stale"],
                CacheControl {
                    max_stale: Some(MaxStale::Any),
                    ..d()
                },
            ),
            (
                "9111 5.2.1.2 max-stale with value",
                vec!["max-stale=120"],
                CacheControl {
                    max_stale: Some(MaxStale::Seconds(120)),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 max-stale bounded beats unbounded",
                vec!["max-stale, max-stale=5"],
                CacheControl {
                    max_stale: Some(MaxStale::Seconds(5)),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 max-stale bounded kept after unbounded",
                vec!["max-stale=5", "max-stale"],
                CacheControl {
                    max_stale: Some(MaxStale::Seconds(5)),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 invalid max-stale allows none",
                vec!["max-stale=lots"],
                CacheControl {
                    max_stale: Some(MaxStale::Seconds(0)),
                    ..d()
                },
            ),
            (
                "9111 5.2.1.3 min-fresh",
                vec!["min-fresh=20"],
                CacheControl {
                    min_fresh: Some(20),
                    ..d()
                },
            ),
            (
                "9111 4.2.1 min-fresh: largest demand wins",
                vec!["min-fresh=20, min-fresh=50"],
                CacheControl {
                    min_fresh: Some(50),
                    ..d()
                },
            ),
            (
                "5861 3 stale-while-revalidate",
                vec!["max-age=1, stale-while-revalidate=30"],
                CacheControl {
                    max_age: Some(1),
                    stale_while_revalidate: Some(30),
                    ..d()
                },
            ),
            (
                "5861 4 stale-if-error",
                vec!["stale-if-error=600"],
                CacheControl {
                    stale_if_error: Some(600),
                    ..d()
                },
            ),
            (
                "5861 4 duplicate stale-if-error: smallest",
                vec!["stale-if-error=600, stale-if-error=60"],
                CacheControl {
                    stale_if_error: Some(60),
                    ..d()
                },
            ),
            (
                "9111 5.2.3 unknown extensions ignored",
                vec!["community=\"UCI\", foo, bar=baz, max-age=3"],
                CacheControl {
                    max_age: Some(3),
                    ..d()
                },
            ),
            (
                "9111 5.2 comma inside quoted extension value",
                vec!["ext=\"a, no-store\", max-age=4"],
                CacheControl {
                    max_age: Some(4),
                    ..d()
                },
            ),
            (
                "9110 5.6.4 escaped quote inside quoted value",
                vec!["ext=\"a\\\"b, no-store\", public"],
                CacheControl {
                    public: true,
                    ..d()
                },
            ),
            (
                "9110 5.6.1 empty list members skipped",
                vec![",, ,no-store,,"],
                CacheControl {
                    no_store: true,
                    ..d()
                },
            ),
            (
                "9110 5.6.1 empty header line",
                vec![""],
                CacheControl { ..d() },
            ),
            (
                "9111 5.2 unterminated quote ends the list",
                vec!["max-age=\"60"],
                CacheControl {
                    max_age: Some(60),
                    ..d()
                },
            ),
            (
                "9111 5.2 garbage after value makes it invalid",
                vec!["max-age=60 seconds"],
                CacheControl {
                    max_age: Some(0),
                    ..d()
                },
            ),
        ];
        for (rule, lines, want) in rows {
            let got = CacheControl::from_headers(&headers(&lines, &[]));
            assert_eq!(got, want, "{rule}: {lines:?}");
        }
    }

    #[test]
    fn non_ascii_line_keeps_directives() {
        // 9111 5.2: a line with obs-text in an extension value still carries its no-store.
        let mut h = HeaderMap::new();
        h.append(
            CACHE_CONTROL,
            HeaderValue::from_bytes(b"no-store, ext=\"caf\xe9\"").unwrap(),
        );
        let cc = CacheControl::from_headers(&h);
        assert!(cc.no_store);
    }

    /// Each row: the RFC rule, the request's Cache-Control lines, its Pragma lines, whether the
    /// request is `no-cache`.
    #[test]
    fn request_no_cache_table() {
        let rows: Vec<(&str, Vec<&str>, Vec<&str>, bool)> = vec![
            ("9111 5.2.1.4 no-cache", vec!["no-cache"], vec![], true),
            (
                "9111 5.2.1.4 No-Cache case-insensitive",
                vec!["No-Cache"],
                vec![],
                true,
            ),
            ("9111 5.4 Pragma alone", vec![], vec!["no-cache"], true),
            (
                "9111 5.4 Pragma case-insensitive, in a list",
                vec![],
                vec!["foo, NO-CACHE"],
                true,
            ),
            (
                "9111 5.4 Pragma ignored when Cache-Control present",
                vec!["max-age=60"],
                vec!["no-cache"],
                false,
            ),
            (
                "9111 5.4 Pragma other token",
                vec![],
                vec!["x-no-cache"],
                false,
            ),
            ("9111 5.2.1 neither", vec![], vec![], false),
            (
                "9111 5.2.1 max-age=0 is not no-cache",
                vec!["max-age=0"],
                vec![],
                false,
            ),
        ];
        for (rule, cc_lines, pragma, want) in rows {
            let h = headers(&cc_lines, &pragma);
            let cc = CacheControl::from_headers(&h);
            assert_eq!(request_no_cache(&h, &cc), want, "{rule}");
        }
    }

    /// Each row: the RFC rule, the argument, the delta-seconds value.
    #[test]
    fn delta_seconds_table() {
        let rows: Vec<(&str, Option<&str>, u64)> = vec![
            ("9111 1.2.2 digits", Some("15"), 15),
            ("9111 1.2.2 leading zeros", Some("007"), 7),
            ("9111 1.2.2 zero", Some("0"), 0),
            ("9111 4.2.1 missing", None, 0),
            ("9111 4.2.1 sign", Some("+5"), 0),
            ("9111 4.2.1 hex", Some("0x10"), 0),
            (
                "9111 1.2.2 exactly 2^31",
                Some("2147483648"),
                DELTA_SECONDS_MAX,
            ),
            (
                "9111 1.2.2 just below 2^31",
                Some("2147483647"),
                2_147_483_647,
            ),
        ];
        for (rule, value, want) in rows {
            assert_eq!(delta_seconds(value), want, "{rule}: {value:?}");
        }
    }
}

//! The `Cache-Status` response header (RFC 9211): what the cache did, and why.

use http::HeaderValue;

/// Why a request was forwarded (RFC 9211 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache was configured or asked not to handle the request (method, `no-store`).
    Bypass,
    /// Nothing was stored for the URL.
    UriMiss,
    /// Responses were stored for the URL, none for this request's Vary values.
    VaryMiss,
    /// Stored and usable as far as the cache could tell, yet forwarded.
    Miss,
    /// A stored response was stale and had to be revalidated.
    Stale,
    /// The request asked for a fresh response (`no-cache`, `max-age`, `min-fresh`).
    Request,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Miss => "miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
        }
    }
}

/// One `Cache-Status` member, built as the request is handled and rendered once at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from the store without going upstream.
    pub hit: bool,
    /// Why the request went upstream.
    pub fwd: Option<Fwd>,
    /// The status the upstream answered with.
    pub fwd_status: Option<u16>,
    /// Seconds of freshness left (negative when stale).
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// The request was collapsed into another one's upstream fetch.
    pub collapsed: bool,
    /// Extra information, such as why a response was not stored.
    pub detail: Option<String>,
}

impl CacheStatus {
    /// The name this cache reports itself by.
    pub const CACHE_NAME: &'static str = "cachet";

    /// A hit with `ttl` seconds left.
    pub fn hit(ttl: i64) -> Self {
        CacheStatus {
            hit: true,
            ttl: Some(ttl),
            ..Default::default()
        }
    }

    /// Forwarded for `fwd`.
    pub fn forward(fwd: Fwd) -> Self {
        CacheStatus {
            fwd: Some(fwd),
            ..Default::default()
        }
    }

    /// Renders the header value, e.g. `cachet; fwd=uri-miss; fwd-status=200; stored`.
    ///
    /// ```
    /// use cachet::policy::{CacheStatus, Fwd};
    /// let mut status = CacheStatus::forward(Fwd::UriMiss);
    /// status.fwd_status = Some(200);
    /// status.stored = true;
    /// assert_eq!(status.render(), "cachet; fwd=uri-miss; fwd-status=200; stored");
    /// ```
    ///
    /// `hit` and `fwd` exclude each other (RFC 9211 2.1, 2.2): when both are set, `fwd` is
    /// rendered. `fwd-status` is rendered only beside `fwd` (2.3). `detail` is a token when it is
    /// one and a structured-field string otherwise (2.8, RFC 8941 3.3.3-4).
    pub fn render(&self) -> String {
        // Sized for the common lines, built without `format!`: a hit renders this on every
        // request.
        let mut s = String::with_capacity(64);
        s.push_str(Self::CACHE_NAME);
        let mut digits = itoa::Buffer::new();
        if self.hit && self.fwd.is_none() {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd.as_str());
            if let Some(status) = self.fwd_status {
                s.push_str("; fwd-status=");
                s.push_str(digits.format(status));
            }
        }
        if let Some(ttl) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(digits.format(ttl));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(detail) = &self.detail {
            s.push_str("; detail=");
            if is_sf_token(detail) {
                s.push_str(detail);
            } else {
                s.push_str(&sf_string(detail));
            }
        }
        s
    }

    /// The rendered value as a header value.
    pub fn header_value(&self) -> HeaderValue {
        // The rendered bytes become the value without a second copy.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(self.render()))
            .unwrap_or_else(|_| HeaderValue::from_static(Self::CACHE_NAME))
    }
}

/// True when `s` is a structured-field token (RFC 8941 3.3.4): ALPHA or `*` first, then tchar,
/// `:` or `/`.
fn is_sf_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
}

/// `s` as a structured-field string (RFC 8941 3.3.3): `"` and `\` escaped, characters outside
/// printable ASCII left out.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: the RFC 9211 rule, the status, its rendering.
    #[test]
    fn render_table() {
        let with = |f: &dyn Fn(&mut CacheStatus), base: CacheStatus| {
            let mut s = base;
            f(&mut s);
            s
        };
        let rows: Vec<(&str, CacheStatus, &str)> = vec![
            (
                "9211 2.1 hit with ttl",
                CacheStatus::hit(42),
                "cachet; hit; ttl=42",
            ),
            (
                "9211 2.4 negative ttl when stale",
                with(
                    &|s| s.detail = Some("stale-while-revalidate".into()),
                    CacheStatus::hit(-5),
                ),
                "cachet; hit; ttl=-5; detail=stale-while-revalidate",
            ),
            (
                "9211 2.2 fwd=uri-miss",
                CacheStatus::forward(Fwd::UriMiss),
                "cachet; fwd=uri-miss",
            ),
            (
                "9211 2.2 fwd=vary-miss",
                CacheStatus::forward(Fwd::VaryMiss),
                "cachet; fwd=vary-miss",
            ),
            (
                "9211 2.2 fwd=miss",
                CacheStatus::forward(Fwd::Miss),
                "cachet; fwd=miss",
            ),
            (
                "9211 2.2 fwd=stale",
                CacheStatus::forward(Fwd::Stale),
                "cachet; fwd=stale",
            ),
            (
                "9211 2.2 fwd=request",
                CacheStatus::forward(Fwd::Request),
                "cachet; fwd=request",
            ),
            (
                "9211 2.2 fwd=bypass with detail",
                with(
                    &|s| s.detail = Some("method".into()),
                    CacheStatus::forward(Fwd::Bypass),
                ),
                "cachet; fwd=bypass; detail=method",
            ),
            (
                "9211 2.3 2.5 fwd-status, ttl, stored",
                with(
                    &|s| {
                        s.fwd_status = Some(200);
                        s.ttl = Some(60);
                        s.stored = true;
                    },
                    CacheStatus::forward(Fwd::UriMiss),
                ),
                "cachet; fwd=uri-miss; fwd-status=200; ttl=60; stored",
            ),
            (
                "9211 2.6 collapsed",
                with(
                    &|s| {
                        s.fwd_status = Some(200);
                        s.collapsed = true;
                    },
                    CacheStatus::forward(Fwd::Miss),
                ),
                "cachet; fwd=miss; fwd-status=200; collapsed",
            ),
            (
                "9211 2.8 detail from NotStorable",
                with(
                    &|s| {
                        s.fwd_status = Some(200);
                        s.detail = Some("no-store".into());
                    },
                    CacheStatus::forward(Fwd::UriMiss),
                ),
                "cachet; fwd=uri-miss; fwd-status=200; detail=no-store",
            ),
            (
                "9211 2.1 2.2 fwd wins over hit",
                with(&|s| s.fwd = Some(Fwd::Stale), CacheStatus::hit(1)),
                "cachet; fwd=stale; ttl=1",
            ),
            (
                "9211 2.3 fwd-status only beside fwd",
                with(&|s| s.fwd_status = Some(200), CacheStatus::hit(1)),
                "cachet; hit; ttl=1",
            ),
            (
                "9211 2.8 only-if-cached: neither hit nor fwd",
                CacheStatus {
                    detail: Some("only-if-cached".into()),
                    ..Default::default()
                },
                "cachet; detail=only-if-cached",
            ),
            (
                "8941 3.3.4 detail starting with a digit is a string",
                CacheStatus {
                    detail: Some("504".into()),
                    ..Default::default()
                },
                "cachet; detail=\"504\"",
            ),
            (
                "8941 3.3.3 detail with spaces and quotes escaped",
                CacheStatus {
                    detail: Some("a \"b\" \\c".into()),
                    ..Default::default()
                },
                "cachet; detail=\"a \\\"b\\\" \\\\c\"",
            ),
            (
                "8941 3.3.3 non-ASCII dropped from strings",
                CacheStatus {
                    detail: Some("caf\u{e9} x".into()),
                    ..Default::default()
                },
                "cachet; detail=\"caf x\"",
            ),
            (
                "8941 3.3.4 token may hold ':' and '/'",
                CacheStatus {
                    detail: Some("upstream/timeout:5s".into()),
                    ..Default::default()
                },
                "cachet; detail=upstream/timeout:5s",
            ),
        ];
        for (rule, status, want) in rows {
            assert_eq!(status.render(), want, "{rule}");
            assert_eq!(
                status.header_value().to_str().unwrap(),
                want,
                "{rule}: header value"
            );
        }
    }
}

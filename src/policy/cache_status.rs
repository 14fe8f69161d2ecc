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
    pub fn render(&self) -> String {
        let mut s = String::from(Self::CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            s.push_str(&format!("; fwd-status={status}"));
        }
        if let Some(ttl) = self.ttl {
            s.push_str(&format!("; ttl={ttl}"));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(detail) = &self.detail {
            // A token when it is one, a quoted string otherwise.
            if detail
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                s.push_str(&format!("; detail={detail}"));
            } else {
                s.push_str(&format!("; detail=\"{}\"", detail.replace(['"', '\\'], "")));
            }
        }
        s
    }

    /// The rendered value as a header value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.render())
            .unwrap_or_else(|_| HeaderValue::from_static(Self::CACHE_NAME))
    }
}

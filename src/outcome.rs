//! What happened to a request: the cache result every response carries (as an extension) to
//! the access log, `/stats` and the metrics.
//!
//! A module of its own so that `metrics` and the request path can both depend on it without
//! depending on each other.

/// What happened to a request, for metrics and the access log; attached to every response as an
/// extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served fresh from the store.
    Hit,
    /// Served fresh from the shared tier (another instance's fetch), and now in the store.
    SharedHit,
    /// Fetched from upstream.
    Miss,
    /// Served stale (stale-while-revalidate, stale-if-error, or max-stale).
    Stale,
    /// Revalidated upstream with a 304.
    Revalidated,
    /// Served from another request's fetch.
    Coalesced,
    /// Not a cacheable request; passed through.
    Bypass,
    /// Answered with an error by the proxy itself.
    Error,
}

impl CacheResult {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::SharedHit => "shared_hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::Revalidated => "revalidated",
            CacheResult::Coalesced => "coalesced",
            CacheResult::Bypass => "bypass",
            CacheResult::Error => "error",
        }
    }
}

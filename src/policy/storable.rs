//! Whether a response may be stored by a shared cache (RFC 9111 section 3).

use std::time::SystemTime;

use http::header::{HeaderMap, AUTHORIZATION, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::{Method, StatusCode};

use super::cache_control::CacheControl;
use super::freshness::{freshness_lifetime, has_explicit_freshness, Heuristics};
use super::vary::{vary_spec, VarySpec};

/// Switches that change what is storable.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreRules {
    /// Store responses that carry `Set-Cookie`. Off by default: RFC 9111 permits it, but sharing
    /// one user's cookie with the next is the classic cache leak.
    pub allow_set_cookie: bool,
    /// Heuristic freshness settings.
    pub heuristics: Heuristics,
}

/// Why a response was not stored; its text goes into `Cache-Status; detail=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    /// Only GET responses are stored.
    #[error("method")]
    Method,
    /// 1xx, 206, 304, or a status not understood under `must-understand`.
    #[error("status")]
    Status,
    /// The request said `no-store`.
    #[error("request-no-store")]
    RequestNoStore,
    /// The response said `no-store`.
    #[error("no-store")]
    NoStore,
    /// The response said `private`.
    #[error("private")]
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it.
    #[error("authorization")]
    Authorization,
    /// The response set a cookie and storing those is off.
    #[error("set-cookie")]
    SetCookie,
    /// `Vary: *` can never be matched, so storing it is pointless.
    #[error("vary-star")]
    VaryStar,
    /// No explicit freshness, no heuristic, and no validator to revalidate with.
    #[error("no-freshness")]
    NoFreshness,
    /// Larger than the largest object the cache keeps.
    #[error("too-large")]
    TooLarge,
    /// The body was cut off by an upstream error.
    #[error("incomplete")]
    Incomplete,
}

/// Status codes whose semantics this cache implements, for `must-understand` (RFC 9111 5.2.2.3).
pub fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// Decides whether the response to `method` with `request` headers may be stored.
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    rules: &StoreRules,
) -> Result<(), NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    // 206 is not stored as if it were a whole body, 304 only ever updates a stored response.
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStorable::Status);
    }
    let req_cc = CacheControl::from_headers(request);
    if req_cc.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    let cc = CacheControl::from_headers(response);
    if cc.must_understand {
        // must-understand: store only a status we implement, and then no-store is overridden.
        if !understood(status) {
            return Err(NotStorable::Status);
        }
    } else if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private_all() {
        return Err(NotStorable::Private);
    }
    if request.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if !rules.allow_set_cookie && response.contains_key(SET_COOKIE) {
        return Err(NotStorable::SetCookie);
    }
    if vary_spec(response) == VarySpec::Star {
        return Err(NotStorable::VaryStar);
    }
    if has_explicit_freshness(response, &cc) {
        return Ok(());
    }
    if freshness_lifetime(status, response, &cc, SystemTime::now(), &rules.heuristics).is_some() {
        return Ok(());
    }
    // `no-cache` with a validator: stored, and revalidated on every use.
    if cc.no_cache.is_some()
        && (heuristically_cacheable_or_public(status, &cc))
        && (response.contains_key(ETAG) || response.contains_key(LAST_MODIFIED))
    {
        return Ok(());
    }
    Err(NotStorable::NoFreshness)
}

fn heuristically_cacheable_or_public(status: StatusCode, cc: &CacheControl) -> bool {
    super::freshness::heuristically_cacheable(status) || cc.public
}

//! Whether a response may be stored by a shared cache (RFC 9111 section 3).

use http::header::{HeaderMap, AUTHORIZATION, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::{Method, StatusCode};

use super::cache_control::CacheControl;
use super::freshness::{has_explicit_freshness, header_date, heuristically_cacheable, Heuristics};
use super::vary::{vary_spec, VarySpec};

/// Switches that change what is storable.
#[derive(Debug, Clone, Default)]
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

impl NotStorable {
    /// True when the reason lies in the response, so that the next response for the URL will
    /// most likely not be storable either: such URLs are remembered as hit-for-miss and their
    /// requests are not coalesced. A reason in the request (its method, its `no-store`, its
    /// `Authorization`) says nothing about the next request, and a cut-off body nothing about
    /// the next response.
    pub fn is_response_caused(self) -> bool {
        match self {
            NotStorable::Status
            | NotStorable::NoStore
            | NotStorable::Private
            | NotStorable::SetCookie
            | NotStorable::VaryStar
            | NotStorable::NoFreshness
            | NotStorable::TooLarge => true,
            NotStorable::Method
            | NotStorable::RequestNoStore
            | NotStorable::Authorization
            | NotStorable::Incomplete => false,
        }
    }
}

/// Status codes whose semantics this cache implements, for `must-understand` (RFC 9111 5.2.2.3).
pub fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// Decides whether the response to `method` with `request` headers may be stored by a shared
/// cache (RFC 9111 3): checks run in the order of the `NotStorable` variants, so the reason
/// reported is the first rule the response breaks. Reads no clock.
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
    // A lifetime the operator gave this status (a site's `cache_valid`).
    if rules.heuristics.by_status.lookup(status).is_some() {
        return Ok(());
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return Err(NotStorable::NoFreshness);
    }
    // A heuristic lifetime needs a valid Last-Modified (RFC 9111 4.2.2).
    if header_date(response, LAST_MODIFIED).is_some() {
        return Ok(());
    }
    // `no-cache` with an entity tag: stored, and revalidated on every use.
    if cc.no_cache.is_some() && response.contains_key(ETAG) {
        return Ok(());
    }
    Err(NotStorable::NoFreshness)
}

#[cfg(test)]
mod tests {
    #[test]
    fn response_caused_reasons_table() {
        use super::NotStorable::*;
        let rows = [
            (Method, false),
            (Status, true),
            (RequestNoStore, false),
            (NoStore, true),
            (Private, true),
            (Authorization, false),
            (SetCookie, true),
            (VaryStar, true),
            (NoFreshness, true),
            (TooLarge, true),
            (Incomplete, false),
        ];
        for (reason, want) in rows {
            assert_eq!(reason.is_response_caused(), want, "{reason}");
        }
    }

    use super::*;

    use super::super::test_support::headers;

    const LM: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

    /// Each row: the RFC rule, method, request fields, status, response fields, the verdict
    /// under the default rules.
    #[test]
    fn storable_table() {
        use NotStorable as N;
        type Row<'a> = (
            &'a str,
            Method,
            Vec<(&'a str, &'a str)>,
            u16,
            Vec<(&'a str, &'a str)>,
            Result<(), NotStorable>,
        );
        let ok = Ok(());
        let rows: Vec<Row> = vec![
            (
                "9111 3 max-age 200",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60")],
                ok,
            ),
            (
                "9111 3 only GET responses are stored here",
                Method::POST,
                vec![],
                200,
                vec![("cache-control", "max-age=60")],
                Err(N::Method),
            ),
            (
                "9111 3 HEAD is not stored",
                Method::HEAD,
                vec![],
                200,
                vec![("cache-control", "max-age=60")],
                Err(N::Method),
            ),
            (
                "9111 3 final status only: 1xx",
                Method::GET,
                vec![],
                103,
                vec![("cache-control", "max-age=60")],
                Err(N::Status),
            ),
            (
                "9111 3 206 not stored as a whole",
                Method::GET,
                vec![],
                206,
                vec![("cache-control", "max-age=60")],
                Err(N::Status),
            ),
            (
                "9111 3 304 not stored",
                Method::GET,
                vec![],
                304,
                vec![("cache-control", "max-age=60")],
                Err(N::Status),
            ),
            (
                "9111 5.2.1.5 request no-store",
                Method::GET,
                vec![("cache-control", "no-store")],
                200,
                vec![("cache-control", "max-age=60")],
                Err(N::RequestNoStore),
            ),
            (
                "9111 5.2.1.5 request NO-STORE any case",
                Method::GET,
                vec![("cache-control", "max-age=0, NO-STORE")],
                200,
                vec![("cache-control", "max-age=60")],
                Err(N::RequestNoStore),
            ),
            (
                "9111 5.2.2.5 response no-store",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60, no-store")],
                Err(N::NoStore),
            ),
            (
                "9111 5.2.2.5 no-store on a second line",
                Method::GET,
                vec![],
                200,
                vec![
                    ("cache-control", "max-age=60"),
                    ("cache-control", "no-store"),
                ],
                Err(N::NoStore),
            ),
            (
                "9111 5.2.2.3 must-understand overrides no-store for a known status",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60, must-understand, no-store")],
                ok,
            ),
            (
                "9111 5.2.2.3 must-understand with an unknown status",
                Method::GET,
                vec![],
                299,
                vec![("cache-control", "max-age=60, must-understand, no-store")],
                Err(N::Status),
            ),
            (
                "9111 5.2.2.3 must-understand, unknown status, no no-store",
                Method::GET,
                vec![],
                299,
                vec![("cache-control", "max-age=60, must-understand")],
                Err(N::Status),
            ),
            (
                "9111 3 unknown status with explicit freshness",
                Method::GET,
                vec![],
                299,
                vec![("cache-control", "max-age=60")],
                ok,
            ),
            (
                "9111 5.2.2.7 private",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60, private")],
                Err(N::Private),
            ),
            (
                "9111 5.2.2.7 private beats public",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "public, private, max-age=60")],
                Err(N::Private),
            ),
            (
                "9111 5.2.2.7 private with field names is stored",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60, private=\"x-user\"")],
                ok,
            ),
            (
                "9111 3.5 Authorization without permission",
                Method::GET,
                vec![("authorization", "Basic Zm9vOmJhcg==")],
                200,
                vec![("cache-control", "max-age=60")],
                Err(N::Authorization),
            ),
            (
                "9111 3.5 Authorization with public",
                Method::GET,
                vec![("authorization", "Bearer t")],
                200,
                vec![("cache-control", "public, max-age=60")],
                ok,
            ),
            (
                "9111 3.5 Authorization with s-maxage",
                Method::GET,
                vec![("authorization", "Bearer t")],
                200,
                vec![("cache-control", "s-maxage=60")],
                ok,
            ),
            (
                "9111 3.5 Authorization with must-revalidate",
                Method::GET,
                vec![("authorization", "Bearer t")],
                200,
                vec![("cache-control", "max-age=60, must-revalidate")],
                ok,
            ),
            (
                "9111 3.5 Authorization with proxy-revalidate is not enough",
                Method::GET,
                vec![("authorization", "Bearer t")],
                200,
                vec![("cache-control", "max-age=60, proxy-revalidate")],
                Err(N::Authorization),
            ),
            (
                "cachet: Set-Cookie not stored by default",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60"), ("set-cookie", "id=1")],
                Err(N::SetCookie),
            ),
            (
                "9111 4.1 Vary: * is never matched",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60"), ("vary", "*")],
                Err(N::VaryStar),
            ),
            (
                "9111 4.1 Vary list holding *",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60"), ("vary", "accept, *")],
                Err(N::VaryStar),
            ),
            (
                "9111 4.1 Vary with names is stored",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
                ok,
            ),
            (
                "9111 3 Expires is explicit freshness",
                Method::GET,
                vec![],
                302,
                vec![("expires", LM)],
                ok,
            ),
            (
                "9111 5.3 invalid Expires still explicit (stale)",
                Method::GET,
                vec![],
                200,
                vec![("expires", "0")],
                ok,
            ),
            (
                "9111 3 s-maxage alone",
                Method::GET,
                vec![],
                307,
                vec![("cache-control", "s-maxage=10")],
                ok,
            ),
            (
                "9111 4.2.2 heuristic: 200 with Last-Modified",
                Method::GET,
                vec![],
                200,
                vec![("last-modified", LM)],
                ok,
            ),
            (
                "9111 4.2.2 heuristic: 404 with Last-Modified",
                Method::GET,
                vec![],
                404,
                vec![("last-modified", LM)],
                ok,
            ),
            (
                "9111 4.2.2 heuristic: 302 is not heuristically cacheable",
                Method::GET,
                vec![],
                302,
                vec![("last-modified", LM)],
                Err(N::NoFreshness),
            ),
            (
                "9111 4.2.2 public makes 302 heuristically cacheable",
                Method::GET,
                vec![],
                302,
                vec![("cache-control", "public"), ("last-modified", LM)],
                ok,
            ),
            (
                "cachet: neither freshness nor Last-Modified",
                Method::GET,
                vec![],
                200,
                vec![],
                Err(N::NoFreshness),
            ),
            (
                "cachet: an ETag alone gives no freshness",
                Method::GET,
                vec![],
                200,
                vec![("etag", "\"a\"")],
                Err(N::NoFreshness),
            ),
            (
                "9111 4.2.2 invalid Last-Modified gives no heuristic",
                Method::GET,
                vec![],
                200,
                vec![("last-modified", "recently")],
                Err(N::NoFreshness),
            ),
            (
                "9111 5.2.2.4 no-cache with an ETag is stored to revalidate",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "no-cache"), ("etag", "\"a\"")],
                ok,
            ),
            (
                "9111 5.2.2.4 no-cache with max-age is stored",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "no-cache, max-age=60")],
                ok,
            ),
            (
                "9111 5.2.2.4 no-cache without validator or freshness",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "no-cache")],
                Err(N::NoFreshness),
            ),
            (
                "9111 3 no-cache + ETag on a 302 is not storable",
                Method::GET,
                vec![],
                302,
                vec![("cache-control", "no-cache"), ("etag", "\"a\"")],
                Err(N::NoFreshness),
            ),
            (
                "9111 4.2.1 invalid max-age is explicit (stale) and storable",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "max-age=never")],
                ok,
            ),
            (
                "9111 5.2.3 unknown extension alone gives no freshness",
                Method::GET,
                vec![],
                200,
                vec![("cache-control", "x-cache-forever")],
                Err(N::NoFreshness),
            ),
            (
                "9111 5.4 response Pragma: no-cache has no effect",
                Method::GET,
                vec![],
                200,
                vec![("pragma", "no-cache"), ("cache-control", "max-age=60")],
                ok,
            ),
        ];
        for (rule, method, req, status, resp, want) in rows {
            let got = storable(
                &method,
                &headers(&req),
                StatusCode::from_u16(status).unwrap(),
                &headers(&resp),
                &StoreRules::default(),
            );
            assert_eq!(got, want, "{rule}");
        }
    }

    #[test]
    fn set_cookie_allowed_by_rule() {
        // cachet option: Set-Cookie responses may be stored when configured.
        let rules = StoreRules {
            allow_set_cookie: true,
            ..StoreRules::default()
        };
        let resp = headers(&[("cache-control", "max-age=60"), ("set-cookie", "id=1")]);
        let got = storable(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &resp,
            &rules,
        );
        assert_eq!(got, Ok(()));
    }

    #[test]
    fn a_status_with_a_default_lifetime_is_storable_without_freshness_or_validators() {
        use crate::policy::site_rules::{DefaultLifetimes, StatusMatch};
        let mut rules = StoreRules::default();
        rules.heuristics.by_status = DefaultLifetimes::new(vec![(StatusMatch::Code(302), 60)]);
        let none = HeaderMap::new();
        let check = |status: u16, resp: &[(&str, &str)], rules: &StoreRules| {
            storable(
                &Method::GET,
                &none,
                StatusCode::from_u16(status).unwrap(),
                &headers(resp),
                rules,
            )
        };
        assert_eq!(check(302, &[], &rules), Ok(()));
        assert_eq!(
            check(302, &[], &StoreRules::default()),
            Err(NotStorable::NoFreshness)
        );
        // The default lifetime never overrides what the response forbids.
        assert_eq!(
            check(302, &[("cache-control", "no-store")], &rules),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(302, &[("cache-control", "private")], &rules),
            Err(NotStorable::Private)
        );
        assert_eq!(
            check(302, &[("set-cookie", "a=1")], &rules),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(check(404, &[], &rules), Err(NotStorable::NoFreshness));
    }

    /// Each row: the variant, the `detail` text it renders as in `Cache-Status`.
    #[test]
    fn detail_text_table() {
        use NotStorable::*;
        let rows = [
            (Method, "method"),
            (Status, "status"),
            (RequestNoStore, "request-no-store"),
            (NoStore, "no-store"),
            (Private, "private"),
            (Authorization, "authorization"),
            (SetCookie, "set-cookie"),
            (VaryStar, "vary-star"),
            (NoFreshness, "no-freshness"),
            (TooLarge, "too-large"),
            (Incomplete, "incomplete"),
        ];
        for (reason, text) in rows {
            assert_eq!(reason.to_string(), text, "9211 2.8 detail");
        }
    }

    /// Each row: status, whether `must-understand` may store it (RFC 9111 5.2.2.3).
    #[test]
    fn understood_table() {
        let rows = [
            (200, true),
            (301, true),
            (302, true),
            (404, true),
            (451, true),
            (206, false),
            (299, false),
            (418, false),
            (500, false),
        ];
        for (status, want) in rows {
            assert_eq!(
                understood(StatusCode::from_u16(status).unwrap()),
                want,
                "9111 5.2.2.3: {status}"
            );
        }
    }
}

//! HTTP caching decisions as pure functions over `http` types: no I/O, no clocks read inside
//! (callers pass `now`), so every rule is tested by table without a socket.
//!
//! RFC 9111 (caching), RFC 5861 (stale content), RFC 9211 (`Cache-Status`), and the parts of
//! RFC 9110 a cache answers for (conditional and range requests).

pub mod authority;
pub mod cache_control;
pub mod cache_status;
pub mod conditional;
pub mod freshness;
pub mod headers;
pub mod key;
pub mod purge;
pub mod range;
pub mod site_rules;
pub mod storable;
pub mod targeted;
#[cfg(test)]
mod test_support;
pub mod vary;

pub use cache_control::CacheControl;
pub use cache_status::{CacheStatus, Fwd};
pub use freshness::{Decision, Heuristics};
pub use storable::{NotStorable, StoreRules};

use http::{Method, StatusCode};

/// Methods whose responses a cache looks up and may serve.
pub fn is_cacheable_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// True when a response to `method` invalidates stored responses for the target URI and its
/// same-origin `Location` / `Content-Location` (RFC 9111 4.4): an unsafe method and a non-error
/// status.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let unsafe_method = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    unsafe_method && (status.is_success() || status.is_redirection())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: the RFC 9111 4.4 rule, the method, the status, whether the response invalidates.
    #[test]
    fn invalidates_table() {
        let ext = Method::from_bytes(b"PURGEX").unwrap();
        let rows: Vec<(&str, Method, u16, bool)> = vec![
            ("9111 4.4 POST 200", Method::POST, 200, true),
            ("9111 4.4 PUT 201", Method::PUT, 201, true),
            ("9111 4.4 DELETE 204", Method::DELETE, 204, true),
            ("9111 4.4 PATCH 200", Method::PATCH, 200, true),
            (
                "9111 4.4 POST 303 redirect is non-error",
                Method::POST,
                303,
                true,
            ),
            ("9111 4.4 POST 302", Method::POST, 302, true),
            ("9111 4.4 POST 400 is an error", Method::POST, 400, false),
            (
                "9111 4.4 DELETE 404 is an error",
                Method::DELETE,
                404,
                false,
            ),
            ("9111 4.4 PUT 500 is an error", Method::PUT, 500, false),
            ("9111 4.4 POST 100 is not final", Method::POST, 100, false),
            ("9111 4.4 unknown method counts as unsafe", ext, 200, true),
            ("9110 9.2.1 GET is safe", Method::GET, 200, false),
            ("9110 9.2.1 HEAD is safe", Method::HEAD, 200, false),
            ("9110 9.2.1 OPTIONS is safe", Method::OPTIONS, 200, false),
            ("9110 9.2.1 TRACE is safe", Method::TRACE, 200, false),
        ];
        for (rule, method, status, want) in rows {
            let got = invalidates(&method, StatusCode::from_u16(status).unwrap());
            assert_eq!(got, want, "{rule}");
        }
    }

    /// Each row: the method, whether the cache looks it up (RFC 9111 2: GET and HEAD here).
    #[test]
    fn cacheable_method_table() {
        let rows = [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::POST, false),
            (Method::PUT, false),
            (Method::OPTIONS, false),
            (Method::DELETE, false),
        ];
        for (method, want) in rows {
            assert_eq!(is_cacheable_method(&method), want, "9111 2: {method}");
        }
    }
}
